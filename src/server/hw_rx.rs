//! Whether the XDP program asks the NIC for hardware receive stamps,
//! decided once at start (`hw_timestamps`): the driver must offer them to
//! XDP (netdev netlink), the program must attach natively (a device-bound
//! program cannot run in generic mode), and where the NIC has a clock
//! (`ETHTOOL_GET_TS_INFO` → `/dev/ptpN`) its receive stamping is switched
//! on (only widened: see `sys::ethtool::enable_rx_hw_timestamps`) and the
//! clock is followed against the system clock (`control::PhcFollower`).
//! A NIC that offers the kfunc but has no clock (a veth: its stamp is
//! always 0) gets the device-bound program only with `on`: every request
//! then falls back to the software stamp, counted as `hw_rx_missing`.

use super::config::{HwTimestamps, Settings};
use crate::sys::bpf::AttachMode;
use crate::sys::clock::phc::SystemPtp;
use crate::sys::{ethtool, netif};
use anyhow::bail;

/// Hardware receive stamps are on; the NIC's clock, if it has one.
pub(super) struct Plan {
    pub(super) ptp: Option<SystemPtp>,
}

/// The decision for `iface`, or an error if `hw_timestamps = on` cannot
/// be had.
pub(super) fn choose(settings: &Settings, iface: &str, index: u32) -> anyhow::Result<Option<Plan>> {
    let want = settings.hw_timestamps;
    let no = |why: String| -> anyhow::Result<Option<Plan>> {
        if want == HwTimestamps::On {
            bail!("hw_timestamps = on, but {why}");
        }
        tracing::info!("no hardware receive stamps: {why}");
        Ok(None)
    };
    match want {
        HwTimestamps::Off => return Ok(None),
        _ if settings.xdp_mode == AttachMode::Generic => {
            return no("a device-bound program cannot attach in generic mode".to_owned());
        }
        _ => {}
    }
    match netif::xdp_rx_timestamp_offered(index) {
        Ok(true) => {}
        Ok(false) => return no(format!("{iface}'s driver offers no receive stamps to XDP")),
        Err(e) => return no(format!("cannot ask {iface}'s driver ({e})")),
    }
    let ptp = match ethtool::ts_info(iface) {
        Ok(info) => match info.phc_index {
            Some(n) => {
                match ethtool::enable_rx_hw_timestamps(iface, &info) {
                    Ok(filter) => {
                        tracing::info!(interface = iface, filter, "hardware receive stamping on")
                    }
                    Err(e) => {
                        tracing::warn!(interface = iface, error = %e, "cannot switch hardware receive stamping on")
                    }
                }
                match SystemPtp::open(n) {
                    Ok(p) => Some(p),
                    Err(e) => {
                        tracing::warn!(error = %e, "cannot open /dev/ptp{n}: hardware stamps cannot be converted");
                        None
                    }
                }
            }
            None => None,
        },
        Err(_) => None,
    };
    if ptp.is_none() {
        // Stamps nothing can convert: `auto` does not pay for them.
        if want == HwTimestamps::Auto {
            return no(format!(
                "{iface}'s driver offers receive stamps to XDP, but it has no clock (PHC) to convert them"
            ));
        }
        tracing::info!(
            interface = iface,
            "{iface} has no clock (PHC) to convert hardware stamps: the software stamp serves (counted as hw_rx_missing / hw_rx_unmapped)"
        );
    }
    Ok(Some(Plan { ptp }))
}
