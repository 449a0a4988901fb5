//! The Debian package (`scripts/package`), built from the binary under
//! test and installed with dpkg into a throwaway root (`dpkg --root`, the
//! maintainer scripts run outside it with `DPKG_ROOT` set, as they must
//! for such a root): its control fields, its files, the man page, the
//! conffile kept on remove and gone on purge, and the installed binary
//! running.
//!
//! Needs dpkg-deb and dpkg (Debian); root only for the files' ownership,
//! which `--root-owner-group` already sets, so it runs as anyone.

mod common;

use common::*;
use std::path::Path;
use std::process::Command;

#[test]
fn the_package_builds_installs_and_purges() {
    let test = "the_package_builds_installs_and_purges";
    if !require_tool(test, "dpkg-deb") || !require_tool(test, "dpkg") {
        return;
    }
    let dir = TempDir::new("ntpx-package");
    let out = dir.path().join("out");
    let deb = run_ok(
        Command::new(repo_root().join("scripts/package"))
            .args(["--binary", NTPX, "--out"])
            .arg(&out),
    );
    let deb = deb.trim();
    println!("{test}: built {deb}");

    let info = run_ok(Command::new("dpkg-deb").args(["--info", deb]));
    for field in [
        "Package: ntpx",
        "Version: ",
        "Depends: ",
        "libc6 (>= ",
        "libelf1 (>= ",
        "Section: net",
    ] {
        assert!(info.contains(field), "no {field:?} in\n{info}");
    }
    let contents = run_ok(Command::new("dpkg-deb").args(["--contents", deb]));
    for path in [
        "./usr/sbin/ntpx",
        "./usr/lib/systemd/system/ntpx.service",
        "./etc/ntpx/ntpx.toml",
        "./usr/share/man/man8/ntpx.8.gz",
        "./usr/share/man/man8/ntpx-serve.8.gz",
        "./usr/share/man/man8/ntpx-drain.8.gz",
        "./usr/share/doc/ntpx/copyright",
        "./usr/share/doc/ntpx/grafana-ntpx.json",
    ] {
        assert!(contents.contains(path), "no {path} in\n{contents}");
    }
    assert!(
        contents.lines().all(|l| l.contains("root/root")),
        "{contents}"
    );

    // A throwaway root with an empty dpkg database.
    let root = dir.path().join("root");
    for d in [
        "var/lib/dpkg/info",
        "var/lib/dpkg/updates",
        "var/lib/dpkg/triggers",
    ] {
        std::fs::create_dir_all(root.join(d)).unwrap();
    }
    for f in ["var/lib/dpkg/status", "var/lib/dpkg/available"] {
        std::fs::write(root.join(f), "").unwrap();
    }
    let dpkg = |args: &[&str]| {
        let mut c = Command::new("dpkg");
        c.arg(format!("--root={}", root.display()))
            .args([
                "--force-script-chrootless",
                "--force-depends",
                "--force-not-root",
                "--log=/dev/null",
            ])
            .args(args);
        c
    };
    run_ok(&mut dpkg(&["-i", deb]));
    let installed = |p: &str| root.join(p.trim_start_matches('/')).exists();
    assert!(installed("/usr/sbin/ntpx"));
    assert!(installed("/usr/lib/systemd/system/ntpx.service"));
    let status = run_ok(&mut dpkg(&["-s", "ntpx"]));
    assert!(status.contains("Status: install ok installed"), "{status}");
    assert!(
        status.contains("/etc/ntpx/ntpx.toml"),
        "a conffile: {status}"
    );

    // The installed binary runs, and its config is valid as shipped.
    let bin = root.join("usr/sbin/ntpx");
    let version = run_ok(Command::new(&bin).arg("--version"));
    assert!(version.starts_with("ntpx "), "{version}");
    run_ok(
        Command::new(&bin)
            .arg("check-config")
            .arg(root.join("etc/ntpx/ntpx.toml")),
    );
    // The manual: ntpx(8) names the subcommands, each has its page, and
    // ntpx-serve(8) has every option of `ntpx serve --help`.
    let page = |name: &str| {
        run_ok(Command::new("sh").arg("-c").arg(format!(
            "gzip -dc {}",
            root.join(format!("usr/share/man/man8/{name}.8.gz")).display()
        )))
    };
    let top = page("ntpx");
    assert!(top.contains(".TH ntpx 8"), "{}", &top[..top.len().min(300)]);
    for sub in ["serve", "stats", "drain", "load"] {
        assert!(
            top.contains(&format!("ntpx\\-{sub}(8)")),
            "ntpx(8) does not name {sub}"
        );
        assert!(page(&format!("ntpx-{sub}")).contains(&format!(".TH ntpx-{sub} 8")));
    }
    let serve = page("ntpx-serve");
    let help = run_ok(Command::new(NTPX).args(["serve", "--help"]));
    for flag in help.split_whitespace().filter(|w| w.starts_with("--")) {
        let flag = flag.trim_end_matches([',', '.', ')']);
        let roff = flag.replace('-', "\\-");
        assert!(serve.contains(&roff), "ntpx-serve(8) lacks {flag}");
    }
    if Path::new("/usr/bin/man").exists() {
        let rendered = run_with_timeout(
            Command::new("man")
                .arg("-l")
                .arg(root.join("usr/share/man/man8/ntpx-serve.8.gz"))
                .env("MANPAGER", "cat")
                .env("MANWIDTH", "80"),
            30,
        );
        let text = String::from_utf8_lossy(&rendered.stdout);
        assert!(text.contains("--reverse-path"), "man -l: {text}");
    }

    // Remove keeps the edited conffile; purge takes it.
    run_ok(&mut dpkg(&["-r", "ntpx"]));
    assert!(!installed("/usr/sbin/ntpx"));
    assert!(
        installed("/etc/ntpx/ntpx.toml"),
        "a conffile stays on remove"
    );
    run_ok(&mut dpkg(&["-P", "ntpx"]));
    assert!(
        !installed("/etc/ntpx/ntpx.toml"),
        "purge takes the conffile"
    );
    println!(
        "{test}: installed, ran, removed and purged in {}",
        root.display()
    );
}
