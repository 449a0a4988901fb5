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

/// The module path of a source file: `src/server/worker/xsk_loop.rs` →
/// `[server, worker, xsk_loop]`; `mod.rs` names its directory.
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

/// Reads a path's segments after its start (`crate::` or `super::`s),
/// given the segments so far: plain `a::b::…`, or a group `{a::b, c}` (any
/// depth, across lines), each item giving one path. Returns the paths
/// (first two segments kept: layer and module) and how much text was read.
fn read_path(s: &str, prefix: &[String], out: &mut Vec<Vec<String>>) -> usize {
    let t = s.trim_start();
    let skipped = s.len() - t.len();
    if let Some(inner) = t.strip_prefix('{') {
        let mut at = 1;
        let mut rest = inner;
        loop {
            // Items may sit on lines of their own, also in doc comments.
            let item = rest
                .trim_start_matches(|c: char| c.is_whitespace() || matches!(c, ',' | '/' | '!'));
            at += rest.len() - item.len();
            rest = item;
            if rest.is_empty() {
                break;
            }
            if rest.starts_with('}') {
                at += 1;
                break;
            }
            let n = read_path(rest, prefix, out).max(1);
            at += n;
            rest = &rest[n.min(rest.len())..];
            // Skip what follows the item (`as x`, `*`) up to its end.
            let end = rest.find([',', '}']).unwrap_or(rest.len());
            at += end;
            rest = &rest[end..];
        }
        return skipped + at;
    }
    let id = ident_at(t);
    if id.is_empty() || id == "self" || id == "super" {
        if !prefix.is_empty() {
            out.push(prefix.iter().take(2).cloned().collect());
        }
        return skipped + id.len();
    }
    let mut path = prefix.to_vec();
    path.push(id.to_string());
    let after = &t[id.len()..];
    match after.strip_prefix("::") {
        Some(more) => skipped + id.len() + 2 + read_path(more, &path, out),
        None => {
            path.truncate(2);
            out.push(path);
            skipped + id.len()
        }
    }
}

/// Every module path the text names, resolved from module `here`:
/// `crate::a::b`, `crate::{a::b, c}` and `super::…::a::b`, as absolute
/// paths (first two segments kept: layer and module), with their lines.
fn named_paths(text: &str, here: &[String]) -> Vec<(usize, Vec<String>)> {
    let mut out = Vec::new();
    let mut at = 0;
    while let Some(i) = [text[at..].find("crate::"), text[at..].find("super::")]
        .into_iter()
        .flatten()
        .min()
    {
        let i = at + i;
        let before_ok = i == 0 || {
            let c = text.as_bytes()[i - 1];
            !(c.is_ascii_alphanumeric() || c == b'_')
        };
        let line = text[..i].matches('\n').count() + 1;
        let mut prefix: Vec<String>;
        let mut s = &text[i..];
        if let Some(t) = s.strip_prefix("crate::") {
            prefix = Vec::new();
            s = t;
        } else {
            prefix = here.to_vec();
            while let Some(t) = s.strip_prefix("super::") {
                prefix.pop();
                s = t;
            }
        }
        let mut paths = Vec::new();
        let n = read_path(s, &prefix, &mut paths);
        if before_ok {
            out.extend(paths.into_iter().map(|p| (line, p)));
        }
        at = i + (text[i..].len() - s.len()) + n.max(1);
    }
    out
}

fn allowed(layer: &str) -> Option<&'static [&'static str]> {
    ALLOWED.iter().find(|(l, _)| *l == layer).map(|(_, a)| *a)
}

/// The text with comments, string and char literals blanked out (lines
/// kept), so that a word found in it is code.
fn code_only(text: &str) -> String {
    let b = text.as_bytes();
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    let blank = |out: &mut String, s: &[u8]| {
        for &c in s {
            out.push(if c == b'\n' { '\n' } else { ' ' });
        }
    };
    while i < b.len() {
        let rest = &b[i..];
        let end = if rest.starts_with(b"//") {
            rest.iter().position(|&c| c == b'\n').unwrap_or(rest.len())
        } else if rest.starts_with(b"/*") {
            // Nested, as Rust's are.
            let (mut depth, mut j) = (0, 0);
            while j < rest.len() {
                if rest[j..].starts_with(b"/*") {
                    depth += 1;
                    j += 2;
                } else if rest[j..].starts_with(b"*/") {
                    depth -= 1;
                    j += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    j += 1;
                }
            }
            j
        } else if rest.starts_with(b"r#\"") || rest.starts_with(b"r\"") {
            let hashes = rest[1..].iter().take_while(|&&c| c == b'#').count();
            let close: Vec<u8> = std::iter::once(b'"')
                .chain(std::iter::repeat_n(b'#', hashes))
                .collect();
            let body = 2 + hashes;
            rest[body..]
                .windows(close.len())
                .position(|w| w == close.as_slice())
                .map_or(rest.len(), |p| body + p + close.len())
        } else if rest[0] == b'"' {
            let mut j = 1;
            while j < rest.len() && rest[j] != b'"' {
                j += if rest[j] == b'\\' { 2 } else { 1 };
            }
            (j + 1).min(rest.len())
        } else if rest[0] == b'\'' && rest.len() > 2 && (rest[2] == b'\'' || rest[1] == b'\\') {
            // A char literal ('a', '\n', '\''); a lifetime has no closing quote.
            let mut j = 1;
            while j < rest.len() && rest[j] != b'\'' {
                j += if rest[j] == b'\\' { 2 } else { 1 };
            }
            (j + 1).min(rest.len())
        } else {
            out.push(rest[0] as char);
            i += 1;
            continue;
        };
        blank(&mut out, &rest[..end]);
        i += end;
    }
    out
}

/// Lines that use `unsafe` in code: not in a comment or a literal, and not
/// the lint names of attributes (`unsafe_code`, `unsafe_op_in_unsafe_fn`).
fn unsafe_lines(text: &str) -> Vec<usize> {
    code_only(text)
        .lines()
        .enumerate()
        .filter(|(_, l)| {
            l.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .any(|w| w == "unsafe")
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
        let Some(layer) = here.first().filter(|l| *l != "main") else {
            // The crate roots sit on top of everything: they may name any
            // layer, but hold no `unsafe` themselves.
            let text = std::fs::read_to_string(file).expect("read");
            for line in unsafe_lines(&text) {
                wrong.push(format!(
                    "{}:{line}: `unsafe` in a crate root",
                    file.display()
                ));
            }
            continue;
        };
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
    for root in [
        "proto/mod.rs",
        "report/mod.rs",
        "server/mod.rs",
        "load/mod.rs",
        "main.rs",
    ] {
        let root = src.join(root);
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
