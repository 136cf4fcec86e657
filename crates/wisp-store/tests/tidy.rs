//! Rules of this crate that are easier to check than to remember: it never depends on a remote backend,
//! and every file of it starts with a `//!` paragraph saying what it is for.

use std::path::Path;

const CRATE_DIR: &str = env!("CARGO_MANIFEST_DIR");

#[test]
fn store_crate_never_depends_on_a_remote_backend() {
    let manifest =
        std::fs::read_to_string(Path::new(CRATE_DIR).join("Cargo.toml")).expect("read Cargo.toml");
    for forbidden in ["nats", "async-nats", "wisp-store-nats"] {
        let found = manifest
            .lines()
            .any(|line| line.trim_start().starts_with(forbidden));
        assert!(
            !found,
            "wisp-store must not depend on {forbidden}: backends for remote services live in their own crates"
        );
    }
}

#[test]
fn every_source_file_starts_with_a_module_doc() {
    let mut missing = Vec::new();
    for folder in ["src", "tests", "benches"] {
        let Ok(entries) = std::fs::read_dir(Path::new(CRATE_DIR).join(folder)) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.extension().is_some_and(|extension| extension == "rs") {
                let text = std::fs::read_to_string(&path).expect("read source file");
                if !text.starts_with("//!") {
                    missing.push(path.display().to_string());
                }
            }
        }
    }
    assert!(
        missing.is_empty(),
        "files without a leading //! module doc: {missing:?}"
    );
}
