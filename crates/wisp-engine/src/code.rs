//! The local cache of unpacked function code and of Wisp's managed runtime bootstraps.
//!
//! Code is unpacked once per package digest into `<data>/code/<sha256>/` (the archive module writes
//! to a temporary directory and renames it into place, so a half-unpacked tree is never used) and
//! mounted read-only into sandboxes. Nothing here ever writes into a directory a sandbox can see
//! while it runs.

use std::path::{Path, PathBuf};

use wisp_control::ControlPlane;
use wisp_types::ApiError;

const PYTHON_BOOTSTRAP: &str = include_str!("../../../runtimes/python/bootstrap.py");
const NODE_BOOTSTRAP: &str = include_str!("../../../runtimes/nodejs/bootstrap.js");

/// Writes the managed runtimes' bootstraps under `<data>/runtimes/{python,nodejs}`.
pub fn install_runtimes(data_dir: &Path) -> std::io::Result<(PathBuf, PathBuf)> {
    let python = data_dir.join("runtimes/python");
    let node = data_dir.join("runtimes/nodejs");
    for (dir, file, text) in [
        (&python, "bootstrap.py", PYTHON_BOOTSTRAP),
        (&node, "bootstrap.js", NODE_BOOTSTRAP),
    ] {
        std::fs::create_dir_all(dir)?;
        let path = dir.join(file);
        if std::fs::read_to_string(&path).ok().as_deref() != Some(text) {
            let temporary = dir.join(format!(".{file}.tmp"));
            std::fs::write(&temporary, text)?;
            std::fs::rename(&temporary, &path)?;
        }
    }
    Ok((python, node))
}

/// Returns the directory holding the unpacked package `digest`, unpacking it first if needed.
pub async fn unpacked(
    control: &ControlPlane,
    data_dir: &Path,
    digest: &str,
    max_unzipped_bytes: u64,
) -> Result<PathBuf, ApiError> {
    let dir = data_dir.join("code").join(digest);
    if tokio::fs::try_exists(&dir).await.unwrap_or(false) {
        return Ok(dir);
    }
    let zip = control.code(digest).await?;
    let target = dir.clone();
    tokio::task::spawn_blocking(move || {
        let limits = wisp_sandbox::archive::ArchiveLimits {
            max_total_bytes: max_unzipped_bytes,
            ..Default::default()
        };
        match wisp_sandbox::archive::extract(&zip, &target, &limits) {
            Ok(()) => Ok(()),
            // Another invocation unpacked the same package first.
            Err(_) if target.is_dir() => Ok(()),
            Err(error) => Err(ApiError::internal(format!(
                "cannot unpack code package {}: {error}",
                target.display()
            ))),
        }
    })
    .await
    .map_err(|error| ApiError::internal(format!("unpacking task failed: {error}")))??;
    Ok(dir)
}
