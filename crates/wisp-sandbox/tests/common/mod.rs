//! Helpers shared by the sandbox process tests: the launcher under test, the root check, and code
//! directories holding a `bootstrap` script.

#![allow(dead_code)]

use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;

use wisp_sandbox::LauncherCommand;

/// The `wisp-launcher` binary built with these tests.
pub fn launcher() -> LauncherCommand {
    LauncherCommand {
        program: PathBuf::from(env!("CARGO_BIN_EXE_wisp-launcher")),
        args: Vec::new(),
    }
}

/// Sandboxes need root. Off CI a test skips with a loud line when it is not root; in CI
/// (`CI=true`) that is a failure, so a missing privilege never passes silently.
pub fn have_root() -> bool {
    if nix::unistd::geteuid().is_root() {
        return true;
    }
    assert!(
        std::env::var("CI").as_deref() != Ok("true"),
        "sandbox process tests need root, and CI must run them"
    );
    eprintln!("SKIPPED: sandbox process tests need root");
    false
}

/// A code directory with an executable `bootstrap` holding `script`.
pub fn code_dir(script: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let bootstrap = dir.path().join("bootstrap");
    std::fs::write(&bootstrap, script).unwrap();
    std::fs::set_permissions(&bootstrap, std::fs::Permissions::from_mode(0o755)).unwrap();
    dir
}
