//! Keeps the crate's layers as `src/lib.rs` describes them: every
//! `crate::…` and `super::…` path in `src/` (code, tests and docs alike) is
//! resolved to the module it names, and
//!
//! - a layer names only itself and the layers below it: `proto` nothing
//!   else; `sys` the protocol layer; `report` the protocol layer; `server`
//!   and `load` those three, never each other;
//! - `unsafe` appears only in `sys`, and the other layers' roots forbid it;
//! - the modules inside a layer import each other without cycles.
//!
//! Source scanning rather than a compiler plug-in: crude, but it reads
//! docs and `#[cfg(test)]` code too, which the compiler would not flag.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// The layers and what each may name.
const ALLOWED: &[(&str, &[&str])] = &[
    ("proto", &["proto"]),
    ("sys", &["proto", "sys"]),
    ("report", &["proto", "report"]),
    ("server", &["proto", "sys", "report", "server"]),
    ("load", &["proto", "sys", "report", "load"]),
];

fn src_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).expect("read src") {
        let p = e.expect("dir entry").path();
        if p.is_dir() {
            src_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// The module path of a source file: `src/server/worker/xsk.rs` →
/// `[server, worker, xsk]`; `mod.rs` names its directory.
fn module_of(src: &Path, file: &Path) -> Vec<String> {
    let rel = file.strip_prefix(src).expect("under src");
    let mut parts: Vec<String> = rel
        .iter()
        .map(|c| c.to_string_lossy().trim_end_matches(".rs").to_string())
        .collect();
    if parts.last().is_some_and(|l| l == "mod" || l == "lib") {
        parts.pop();
    }
    parts
}

fn ident_at(s: &str) -> &str {
    let end = s
        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .unwrap_or(s.len());
    &s[..end]
}

/// Every module path the text names, resolved from module `here`:
/// `crate::a::b` and `super::…::a::b`, as absolute paths (first two
/// segments kept: layer and module).
fn named_paths(text: &str, here: &[String]) -> Vec<(usize, Vec<String>)> {
    let mut out = Vec::new();
    for (lineno, line) in text.lines().enumerate() {
        let mut rest = line;
        while let Some(i) = rest
            .find("crate::")
            .into_iter()
            .chain(rest.find("super::"))
            .min()
        {
            let before_ok = i == 0 || {
                let c = rest.as_bytes()[i - 1];
                !(c.is_ascii_alphanumeric() || c == b'_')
            };
            let tail = &rest[i..];
            let mut path: Vec<String>;
            let mut s;
            if let Some(t) = tail.strip_prefix("crate::") {
                path = Vec::new();
                s = t;
            } else {
                path = here.to_vec();
                s = tail;
                while let Some(t) = s.strip_prefix("super::") {
                    path.pop();
                    s = t;
                }
            }
            for _ in 0..2 {
                let id = ident_at(s);
                if id.is_empty() || id == "self" || id == "super" {
                    break;
                }
                path.push(id.to_string());
                match s[id.len()..].strip_prefix("::") {
                    Some(t) => s = t,
                    None => break,
                }
            }
            if before_ok {
                path.truncate(2);
                out.push((lineno + 1, path));
            }
            let consumed = tail.len() - s.len();
            rest = &rest[i + consumed.max(6)..];
        }
    }
    out
}

fn allowed(layer: &str) -> Option<&'static [&'static str]> {
    ALLOWED.iter().find(|(l, _)| *l == layer).map(|(_, a)| *a)
}

/// Lines that use `unsafe` as code (not in a comment or an attribute).
fn unsafe_lines(text: &str) -> Vec<usize> {
    text.lines()
        .enumerate()
        .filter(|(_, l)| {
            let code = l.split("//").next().unwrap_or("");
            let t = code.trim_start();
            !t.starts_with("#!") && !t.starts_with("#[") && {
                let mut words = code.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'));
                words.any(|w| w == "unsafe")
            }
        })
        .map(|(i, _)| i + 1)
        .collect()
}

#[test]
fn layers_name_only_what_is_below_them() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    src_files(&src, &mut files);
    files.sort();
    let mut wrong = Vec::new();
    let mut edges: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut layers_seen = BTreeSet::new();
    for file in &files {
        let here = module_of(&src, file);
        let Some(layer) = here.first() else { continue };
        if layer == "main" {
            continue; // the binary sits on top of everything
        }
        let Some(ok) = allowed(layer) else {
            wrong.push(format!(
                "{}: module `{layer}` is in no layer (tests/layers.rs lists them)",
                file.display()
            ));
            continue;
        };
        layers_seen.insert(layer.clone());
        let text = std::fs::read_to_string(file).expect("read");
        let from = here.iter().take(2).cloned().collect::<Vec<_>>().join("::");
        for (line, path) in named_paths(&text, &here) {
            let Some(target) = path.first() else { continue };
            if allowed(target).is_none() {
                continue; // e.g. `crate::` followed by a macro or nothing
            }
            if !ok.contains(&target.as_str()) {
                wrong.push(format!(
                    "{}:{line}: layer `{layer}` names `{}`",
                    file.display(),
                    path.join("::")
                ));
            }
            if path.len() == 2 && here.len() >= 2 && target == layer {
                let to = path.join("::");
                if to != from {
                    edges.entry(from.clone()).or_default().insert(to);
                }
            }
        }
        if layer != "sys" {
            for line in unsafe_lines(&text) {
                wrong.push(format!(
                    "{}:{line}: `unsafe` outside the system layer",
                    file.display()
                ));
            }
        }
    }
    for layer in ["proto", "report", "server", "load"] {
        let root = src.join(layer).join("mod.rs");
        let text = std::fs::read_to_string(&root).unwrap_or_default();
        if !text.contains("#![forbid(unsafe_code)]") {
            wrong.push(format!("{}: must forbid(unsafe_code)", root.display()));
        }
    }
    assert_eq!(
        layers_seen,
        ALLOWED.iter().map(|(l, _)| l.to_string()).collect(),
        "every layer has code"
    );
    if let Some(cycle) = find_cycle(&edges) {
        wrong.push(format!("import cycle: {}", cycle.join(" -> ")));
    }
    assert!(
        wrong.is_empty(),
        "layer rules broken:\n{}",
        wrong.join("\n")
    );
}

/// A cycle in the module graph, if there is one.
fn find_cycle(edges: &BTreeMap<String, BTreeSet<String>>) -> Option<Vec<String>> {
    fn visit(
        n: &str,
        edges: &BTreeMap<String, BTreeSet<String>>,
        state: &mut BTreeMap<String, u8>,
        stack: &mut Vec<String>,
    ) -> Option<Vec<String>> {
        state.insert(n.to_string(), 1);
        stack.push(n.to_string());
        for m in edges.get(n).into_iter().flatten() {
            match state.get(m.as_str()) {
                Some(1) => {
                    let at = stack.iter().position(|s| s == m).unwrap_or(0);
                    let mut c = stack[at..].to_vec();
                    c.push(m.clone());
                    return Some(c);
                }
                Some(_) => {}
                None => {
                    if let Some(c) = visit(m, edges, state, stack) {
                        return Some(c);
                    }
                }
            }
        }
        stack.pop();
        state.insert(n.to_string(), 2);
        None
    }
    let mut state = BTreeMap::new();
    for n in edges.keys() {
        if !state.contains_key(n.as_str())
            && let Some(c) = visit(n, edges, &mut state, &mut Vec::new())
        {
            return Some(c);
        }
    }
    None
}

/// The checker itself finds what it must.
#[test]
fn the_checker_sees_paths_unsafe_and_cycles() {
    let here = ["load".to_string(), "udp".to_string()];
    let text = "use crate::server::stats::X;\n/// see [`super::super::server::config`]\nfn f() { super::engine::g() }";
    let got: Vec<_> = named_paths(text, &here)
        .into_iter()
        .map(|(_, p)| p.join("::"))
        .collect();
    assert_eq!(got, ["server::stats", "server::config", "load::engine"]);
    assert_eq!(
        unsafe_lines("#![forbid(unsafe_code)]\n// unsafe\nlet x = unsafe { 1 };"),
        [3]
    );
    let mut e = BTreeMap::new();
    e.insert("a::x".to_string(), BTreeSet::from(["a::y".to_string()]));
    e.insert("a::y".to_string(), BTreeSet::from(["a::x".to_string()]));
    assert!(find_cycle(&e).is_some());
    e.remove("a::y");
    assert!(find_cycle(&e).is_none());
}
