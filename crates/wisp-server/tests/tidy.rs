//! Tidy checks that keep the repository honest: crate dependencies only point the documented way
//! (ARCHITECTURE.md, "Dependency direction"), and every Rust source file opens with a `//!` doc.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .nth(2)
        .expect("workspace root")
        .to_path_buf()
}

/// Direct dependencies of each `crates/wisp-*` package on other `wisp-*` packages, read from its Cargo.toml.
fn internal_dependencies() -> BTreeMap<String, Vec<String>> {
    let mut graph = BTreeMap::new();
    for entry in std::fs::read_dir(workspace_root().join("crates")).expect("crates dir") {
        let dir = entry.expect("entry").path();
        let Ok(manifest) = std::fs::read_to_string(dir.join("Cargo.toml")) else {
            continue;
        };
        let name = dir.file_name().unwrap().to_string_lossy().into_owned();
        let mut section = String::new();
        let mut dependencies = Vec::new();
        for line in manifest.lines() {
            let line = line.trim();
            if line.starts_with('[') {
                section = line.to_string();
            } else if section == "[dependencies]" && line.starts_with("wisp-") {
                dependencies.push(line.split(['.', ' ', '=']).next().unwrap().to_string());
            }
        }
        graph.insert(name, dependencies);
    }
    graph
}

#[test]
fn crate_dependencies_follow_the_documented_direction() {
    // Each crate with the crates it may depend on (directly). Anything not listed here is a new crate:
    // add it to this table and to ARCHITECTURE.md together.
    let allowed: BTreeMap<&str, &[&str]> = BTreeMap::from([
        ("wisp-types", &[][..]),
        ("wisp-store", &["wisp-types"][..]),
        ("wisp-sandbox", &["wisp-types"][..]),
        ("wisp-runtime-api", &["wisp-types"][..]),
        (
            "wisp-control",
            &["wisp-types", "wisp-store", "wisp-sandbox"][..],
        ),
        (
            "wisp-engine",
            &[
                "wisp-types",
                "wisp-store",
                "wisp-sandbox",
                "wisp-runtime-api",
                "wisp-control",
            ][..],
        ),
        (
            "wisp-api",
            &[
                "wisp-types",
                "wisp-store",
                "wisp-sandbox",
                "wisp-control",
                "wisp-engine",
            ][..],
        ),
        (
            "wisp-server",
            &[
                "wisp-types",
                "wisp-store",
                "wisp-sandbox",
                "wisp-runtime-api",
                "wisp-control",
                "wisp-engine",
                "wisp-api",
            ][..],
        ),
        (
            "wisp-cli",
            &["wisp-types", "wisp-server", "wisp-sandbox"][..],
        ),
        ("wisp-e2e", &["wisp-types"][..]),
        // The benchmark times the signature check in process, beside its end-to-end figures.
        ("wisp-bench", &["wisp-types", "wisp-control"][..]),
    ]);
    for (name, dependencies) in internal_dependencies() {
        let Some(permitted) = allowed.get(name.as_str()) else {
            panic!(
                "crate {name} is not in the dependency table of this test; add it here and in ARCHITECTURE.md"
            );
        };
        for dependency in dependencies {
            assert!(
                permitted.contains(&dependency.as_str()),
                "{name} must not depend on {dependency} (see ARCHITECTURE.md)"
            );
        }
    }
}

#[test]
fn every_rust_source_file_starts_with_a_module_doc() {
    let mut missing = Vec::new();
    let mut pending = vec![
        workspace_root().join("crates"),
        workspace_root().join("fixtures"),
    ];
    while let Some(dir) = pending.pop() {
        for entry in std::fs::read_dir(&dir).expect("readable dir") {
            let path = entry.expect("entry").path();
            if path.is_dir() {
                pending.push(path);
            } else if path.extension().is_some_and(|extension| extension == "rs") {
                let text = std::fs::read_to_string(&path).expect("readable source");
                let first = text
                    .lines()
                    .find(|line| !line.trim().is_empty())
                    .unwrap_or("");
                if !first.starts_with("//!") {
                    missing.push(path.display().to_string());
                }
            }
        }
    }
    assert!(
        missing.is_empty(),
        "files without a //! module doc: {missing:#?}"
    );
}
