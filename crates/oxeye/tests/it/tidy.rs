//! Style checks as plain tests: the architecture document lists every crate, crates depend only
//! on what ARCHITECTURE.md allows, no unexplained `unwrap()` in library code, vendored files keep
//! their licence.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .unwrap()
}

fn crates() -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(root().join("crates"))
        .unwrap()
        .flatten()
        .filter(|e| e.path().join("Cargo.toml").exists())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

fn files(dir: &Path, ext: &str, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        if p.is_dir() {
            files(&p, ext, out);
        } else if p.extension().is_some_and(|x| x == ext) {
            out.push(p);
        }
    }
}

#[test]
fn architecture_md_has_a_section_per_crate() {
    let arch = std::fs::read_to_string(root().join("ARCHITECTURE.md")).unwrap();
    for c in crates() {
        assert!(
            arch.contains(&format!("### `{c}`")),
            "ARCHITECTURE.md has no `### `{c}`` section"
        );
    }
}

/// Which workspace crates each crate may depend on (normal dependencies).
fn allowed() -> BTreeMap<&'static str, &'static [&'static str]> {
    BTreeMap::from([
        ("model", &[][..]),
        ("store", &["model"][..]),
        ("pipeline", &["model"][..]),
        ("ingest", &["model", "pipeline"][..]),
        (
            "server",
            &["model", "store", "pipeline", "profile", "insight"][..],
        ),
        ("lab", &[][..]),
        ("ebpf", &[][..]),
        ("profile", &["model"][..]),
        ("insight", &[][..]),
        ("sensor", &["model"][..]),
        (
            "oxeye",
            &[
                "model", "ingest", "pipeline", "store", "server", "lab", "ebpf", "profile",
                "insight", "sensor",
            ][..],
        ),
    ])
}

#[test]
fn crates_depend_only_on_what_the_architecture_allows() {
    let all = crates();
    let rules = allowed();
    for c in &all {
        let allowed = rules
            .get(c.as_str())
            .unwrap_or_else(|| panic!("crate {c} has no dependency rule in tidy.rs"));
        let toml =
            std::fs::read_to_string(root().join("crates").join(c).join("Cargo.toml")).unwrap();
        let mut section = String::new();
        for line in toml.lines() {
            let l = line.trim();
            if l.starts_with('[') {
                section = l.to_string();
                continue;
            }
            if section != "[dependencies]" {
                continue;
            }
            let name = l.split(['=', '.']).next().unwrap_or("").trim();
            if all.iter().any(|x| x == name) {
                assert!(
                    allowed.contains(&name),
                    "crate {c} must not depend on {name}"
                );
            }
        }
    }
}

#[test]
fn no_unexplained_unwrap_in_library_code() {
    let mut bad = Vec::new();
    for c in crates() {
        let mut fs = Vec::new();
        files(&root().join("crates").join(&c).join("src"), "rs", &mut fs);
        for f in fs {
            let text = std::fs::read_to_string(&f).unwrap();
            let mut prev = "";
            for (i, line) in text.lines().enumerate() {
                // Test modules, inline or whole files (`#![cfg(test)]`), may unwrap.
                if line.trim_start().starts_with("#[cfg(test)]")
                    || line.trim_start().starts_with("#![cfg(test)]")
                {
                    break;
                }
                if line.contains(".unwrap()")
                    && !line.contains("//")
                    && !prev.trim_start().starts_with("//")
                {
                    bad.push(format!("{}:{}", f.display(), i + 1));
                }
                prev = line;
            }
        }
    }
    assert!(
        bad.is_empty(),
        "unwrap() without a comment saying why it cannot fail:\n{}",
        bad.join("\n")
    );
}

#[test]
fn vendored_files_keep_their_licence() {
    let vendor = root().join("web/vendor");
    for e in std::fs::read_dir(&vendor).into_iter().flatten().flatten() {
        if e.path().is_dir() {
            let has = std::fs::read_dir(e.path()).unwrap().flatten().any(|f| {
                f.file_name()
                    .to_string_lossy()
                    .to_uppercase()
                    .starts_with("LICENSE")
            });
            assert!(has, "{} has no LICENSE file", e.path().display());
        }
    }
}
