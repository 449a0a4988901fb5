//! The XDP side of the datapath: the steering program and its loader
//! ([`program`]), the metadata it leaves in front of each frame ([`meta`]),
//! and the AF_XDP sockets whose rings the workers drive ([`socket`]); the
//! load generator's receive and sink programs ([`client`]).

pub mod client;
pub mod meta;
pub mod pass;
pub mod program;
pub mod socket;
