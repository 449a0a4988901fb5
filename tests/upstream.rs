//! The header follows the time daemon of the host, which follows its own
//! upstream: two real chronyds chained across the veth link. The upper
//! one (client namespace) is a free-running `local stratum` server; the
//! lower one (server namespace, `-x`: it never touches the clock) syncs to
//! it and is what ntpx follows through its command socket. ntpx's replies
//! must carry the lower chronyd's view: the upper's stratum + 1 and its
//! address as reference ID; a new upper stratum must propagate; with the
//! lower one stopped, the kernel's state (unsynchronised here: LI 3); back
//! again, chronyd's. Deadlines are generous; the times are printed.

mod common;

use common::*;

#[test]
fn the_header_follows_a_chain_of_two_chronyds() {
    let test = "the_header_follows_a_chain_of_two_chronyds";
    if !require_root(test) || !require_tool(test, "python3") || !require_tool(test, "chronyd") {
        return;
    }
    let base = std::env::temp_dir().join(format!("ntpx-chain-{}", std::process::id()));
    let (upper_dir, lower_dir) = (base.join("upper"), base.join("lower"));
    let topo = Topology::up();
    peer_pass(&topo);
    let upper_at = topo.cli_v4.to_string();
    let upper = |stratum: u8| {
        Chronyd::start(
            topo.cli_cmd("chronyd"),
            &upper_dir,
            &format!("local stratum {stratum}\nallow all\nbindaddress {upper_at}\nport 123"),
        )
    };
    let lower = || {
        Chronyd::start(
            topo.srv_cmd("chronyd"),
            &lower_dir,
            &format!(
                "server {upper_at} iburst minpoll -2 maxpoll -2\nport 0\nbindcmdaddress {}/chronyd.sock",
                lower_dir.display()
            ),
        )
    };
    let mut up = Some(upper(5));
    let mut low = Some(lower());
    let sock = lower_dir.join("chronyd.sock").display().to_string();
    let mut server = Server::start(
        &topo,
        &[
            "--iface",
            topo.srv_if.as_str(),
            "--clock",
            "chrony",
            "--chrony-socket",
            &sock,
        ],
    );
    let v4 = topo.srv_v4.to_string();
    let upper_ref = u32::from(topo.cli_v4);
    let until = |what: &str, want: &dyn Fn((u8, u8, u32)) -> bool| {
        until_header(&topo, &v4, what, 40, |(li, st, _, r)| want((li, st, r)));
    };
    until(
        "the lower chronyd synchronised to the upper (stratum 6)",
        &|(li, st, r)| li == 0 && st == 6 && r == upper_ref,
    );
    // The upper one changes its stratum: it propagates.
    up.take();
    up = Some(upper(8));
    until("the upper's new stratum propagated (9)", &|(li, st, r)| {
        li == 0 && st == 9 && r == upper_ref
    });
    // The lower one stops: the kernel's state (unsynchronised here).
    low.take();
    until("the kernel's state (LI 3)", &|(li, st, _)| {
        li == 3 && st == 0
    });
    low = Some(lower());
    until("the lower chronyd again", &|(li, st, r)| {
        li == 0 && st == 9 && r == upper_ref
    });
    let out = server.stop();
    drop(low);
    drop(up);
    let _ = std::fs::remove_dir_all(&base);
    assert!(out.contains("reports from chronyd"), "{out}");
}
