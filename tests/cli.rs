//! Every number the command line and the config file take, given as a
//! typo or an attacker would give it: each run ends with a clear error or
//! a valid setting, never a panic or a signal.
//!
//! The runs cannot reach the network: `serve`, `load` and `sink` name an
//! interface that does not exist (the first thing they look up after
//! their arguments), and `load` targets loopback.

mod common;

use common::{NTPX, TempDir, run_with_timeout};
use std::process::Command;

/// Numbers that are too big, too small, not numbers, or not finite.
const HOSTILE: &[&str] = &[
    "0",
    "-1",
    "-0",
    "1e300",
    "-1e300",
    "NaN",
    "inf",
    "-inf",
    "1e-300",
    "0.0000001",
    "4294967296",
    "18446744073709551616",
    "99999999999999999999999999999",
    "0x10",
    "",
    " ",
    "1,",
    ",",
    "1,,2",
];

/// Runs `ntpx ARGS` and checks that it stopped by itself with `allowed`
/// status and no panic.
fn check(args: &[&str], allowed: &[i32], failures: &mut Vec<String>) {
    let out = run_with_timeout(Command::new(NTPX).args(args), 20);
    let err = String::from_utf8_lossy(&out.stderr);
    let ok = out.status.code().is_some_and(|c| allowed.contains(&c))
        && !err.contains("panicked")
        && (out.status.success() || !err.trim().is_empty());
    if !ok {
        failures.push(format!("ntpx {args:?}: {}\n{err}", out.status));
    }
}

#[test]
fn hostile_numbers_on_the_command_line() {
    let commands: &[(&[&str], &[&str])] = &[
        (
            &[
                "serve",
                "--iface",
                "no-such-if0",
                "--clock",
                "local",
                "--no-stats-socket",
            ],
            &[
                "--port",
                "--queues",
                "--cpus",
                "--workers",
                "--frames",
                "--ring-size",
                "--busy-poll",
                "--stratum",
                "--stats-interval",
                "--duration",
            ],
        ),
        (
            &[
                "serve",
                "--datapath",
                "socket",
                "--iface",
                "no-such-if0",
                "--no-stats-socket",
            ],
            &["--workers", "--port", "--duration"],
        ),
        (
            &["load", "127.0.0.1", "--iface", "no-such-if0", "--quiet"],
            &[
                "--port",
                "--rate",
                "--ramp",
                "--ping",
                "--interval",
                "--duration",
                "--step",
                "--timeout",
                "--queues",
                "--cpus",
                "--ntp-version",
            ],
        ),
        (
            &["sink", "--iface", "no-such-if0"],
            &["--port", "--duration"],
        ),
    ];
    let mut failures = Vec::new();
    for (base, options) in commands {
        for opt in *options {
            for value in HOSTILE {
                let mut args = base.to_vec();
                args.extend([*opt, *value]);
                // Valid values get as far as the missing interface: 1.
                // Invalid ones stop at the arguments: 1 (ours) or 2 (clap).
                check(&args, &[1, 2], &mut failures);
            }
        }
    }
    for ramp in [
        "1e300..1e301 x2",
        "1..NaN x2",
        "NaN..1 x2",
        "1..2 x1e300",
        "1..2 xNaN",
        "1..2 xinf",
        "10..1 x2",
        "1..1e8 x1.0000001",
        "..x",
    ] {
        check(
            &["load", "127.0.0.1", "-i", "no-such-if0", "--ramp", ramp],
            &[1, 2],
            &mut failures,
        );
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn duration_too_long_is_an_error_not_a_panic() {
    // The case that aborted ntpx (rc 134) before.
    let out = run_with_timeout(
        Command::new(NTPX).args(["serve", "--iface", "no-such-if0", "--duration", "1e300"]),
        20,
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("--duration"), "{err}");
    assert!(err.contains("at most 31622400 seconds"), "{err}");
}

#[test]
fn hostile_numbers_in_the_config_file() {
    let keys = [
        ("server", "port"),
        ("server", "queues"),
        ("server", "cpus"),
        ("server", "workers"),
        ("server", "frames"),
        ("server", "ring_size"),
        ("server", "busy_poll"),
        ("server", "min_poll"),
        ("server", "stats_interval"),
        ("server", "metrics"),
        ("server", "drain_file"),
        ("server", "log_level"),
        ("clock", "stratum"),
        ("clock", "root_delay_ms"),
        ("clock", "root_dispersion_ms"),
        ("server", "kernel_modes"),
        ("rate_limit", "interval"),
        ("rate_limit", "burst"),
        ("rate_limit", "prefix_v4"),
        ("rate_limit", "prefix_v6"),
        ("rate_limit", "leak"),
        ("rate_limit", "kod"),
        ("rate_limit", "kod_interval"),
        ("rate_limit", "clients"),
        ("rate_limit", "ceiling"),
        ("access", "deny"),
        ("access", "allow"),
        ("access", "action"),
        ("access", "reverse_path"),
    ];
    let values = [
        "0",
        "-1",
        "1e300",
        "nan",
        "inf",
        "-inf",
        "1.5",
        "9223372036854775807",
        "-9223372036854775808",
        "[0, 0]",
        "[4294967296]",
        "[-1]",
        "\"12\"",
    ];
    let dir = TempDir::new("ntpx-cli-config");
    let mut failures = Vec::new();
    for (table, key) in keys {
        for value in values {
            let file = dir.path().join("c.toml");
            let other = if table == "server" { "clock" } else { "server" };
            std::fs::write(
                &file,
                format!("[{table}]\n{key} = {value}\n[{other}]\n")
                    .replace("[server]\n", "[server]\ndatapath = \"socket\"\n"),
            )
            .expect("write config");
            let path = file.to_string_lossy().into_owned();
            // 0: a valid setting, printed; 1: a clear error.
            check(&["check-config", &path], &[0, 1], &mut failures);
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn configuration_mistakes_are_named() {
    let cases: &[(&[&str], &str)] = &[
        (&["--port", "0"], "port must be 1 to 65535"),
        (&["--address", "127.0.0.1"], "loopback"),
        (&["--address", "::1"], "loopback"),
        (&["--queues", "0,0"], "queue 0 is listed twice"),
        (&["--queues", "300"], "queue 300 is out of range"),
        (&["--kernel-modes", "7"], "kernel_modes may hold 1"),
        (&["--metrics", "nonsense"], "metrics must be ADDRESS:PORT"),
        (
            &["--datapath", "socket", "--reverse-path", "loose"],
            "reverse_path needs the xdp datapath",
        ),
        (&["--rate-interval=-1"], "interval must be 0 (off)"),
        (&["--rate-clients", "5"], "clients must be 1024"),
    ];
    let mut failures = Vec::new();
    for (extra, want) in cases {
        let mut args = vec!["serve", "--iface", "no-such-if0", "--no-stats-socket"];
        args.extend_from_slice(extra);
        let out = run_with_timeout(Command::new(NTPX).args(&args), 20);
        let err = String::from_utf8_lossy(&out.stderr);
        if out.status.code() != Some(1) || !err.contains(want) {
            failures.push(format!(
                "{extra:?}: want {want:?}, got {}: {err}",
                out.status
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
