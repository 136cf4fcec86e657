//! The local cache of unpacked function code and of Wisp's managed runtime bootstraps.
//!
//! Code is unpacked once per package digest into `<data>/code/<sha256>/` (the archive module writes
//! to a temporary directory and renames it into place, so a half-unpacked tree is never used) and
//! mounted read-only into sandboxes. A function's layers are unpacked the same way and merged
//! into one tree per layer list, mounted read-only at `/opt` ([`merged_layers`]). Nothing here
//! ever writes into a directory a sandbox can see while it runs.

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

/// Returns the directory mounted at `/opt` for a function whose layers are the packages `digests`
/// (in order), building it first if needed; `None` when the function has no layers.
///
/// Each layer is unpacked once like function code; their trees are then merged, later layers
/// replacing earlier ones' files as Lambda's extraction order does, into
/// `<data>/opt/<sha256 of the digest list>/`. The merge is built in a temporary directory and
/// renamed into place, so every function with the same layer list shares one complete tree.
/// Files are hard links to the unpacked layers (copies where a link is refused).
pub async fn merged_layers(
    control: &ControlPlane,
    data_dir: &Path,
    digests: &[String],
    max_unzipped_bytes: u64,
) -> Result<Option<PathBuf>, ApiError> {
    if digests.is_empty() {
        return Ok(None);
    }
    let mut layers = Vec::with_capacity(digests.len());
    for digest in digests {
        layers.push(unpacked(control, data_dir, digest, max_unzipped_bytes).await?);
    }
    let name = {
        use sha2::Digest as _;
        let hash = sha2::Sha256::digest(digests.join("\n").as_bytes());
        hash.iter()
            .map(|byte| format!("{byte:02x}"))
            .collect::<String>()
    };
    let opt_root = data_dir.join("opt");
    let target = opt_root.join(name);
    if tokio::fs::try_exists(&target).await.unwrap_or(false) {
        return Ok(Some(target));
    }
    let result = target.clone();
    tokio::task::spawn_blocking(move || -> Result<(), ApiError> {
        let failed = |what: &str, error: std::io::Error| {
            ApiError::internal(format!(
                "cannot merge layers into {}: {what}: {error}",
                target.display()
            ))
        };
        std::fs::create_dir_all(&opt_root).map_err(|error| failed("mkdir", error))?;
        let temporary = opt_root.join(format!(".tmp-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir(&temporary).map_err(|error| failed("mkdir", error))?;
        for layer in &layers {
            if let Err(error) = merge_tree(layer, &temporary) {
                let _ = std::fs::remove_dir_all(&temporary);
                return Err(failed(&layer.display().to_string(), error));
            }
        }
        set_mode(&temporary, 0o755).map_err(|error| failed("chmod", error))?;
        if let Err(error) = std::fs::rename(&temporary, &target) {
            let _ = std::fs::remove_dir_all(&temporary);
            // Another instance start merged the same layers first.
            if !target.is_dir() {
                return Err(failed("rename", error));
            }
        }
        Ok(())
    })
    .await
    .map_err(|error| ApiError::internal(format!("merging task failed: {error}")))??;
    Ok(Some(result))
}

fn set_mode(path: &Path, mode: u32) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
}

/// Copies the tree `source` over `target`: what `source` has replaces what `target` had.
fn merge_tree(source: &Path, target: &Path) -> std::io::Result<()> {
    for entry in std::fs::read_dir(source)? {
        let entry = entry?;
        let from = entry.path();
        let to = target.join(entry.file_name());
        let kind = entry.file_type()?;
        let existing = std::fs::symlink_metadata(&to).ok();
        if kind.is_dir() {
            match existing {
                Some(metadata) if metadata.is_dir() => {}
                Some(_) => {
                    std::fs::remove_file(&to)?;
                    std::fs::create_dir(&to)?;
                }
                None => std::fs::create_dir(&to)?,
            }
            use std::os::unix::fs::PermissionsExt as _;
            let mode = std::fs::metadata(&from)?.permissions().mode() & 0o7777;
            set_mode(&to, mode | 0o755)?;
            merge_tree(&from, &to)?;
            continue;
        }
        match existing {
            Some(metadata) if metadata.is_dir() => std::fs::remove_dir_all(&to)?,
            Some(_) => std::fs::remove_file(&to)?,
            None => {}
        }
        if kind.is_symlink() {
            std::os::unix::fs::symlink(std::fs::read_link(&from)?, &to)?;
        } else if kind.is_file() && std::fs::hard_link(&from, &to).is_err() {
            std::fs::copy(&from, &to)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn later_layers_replace_earlier_files() {
        let dir =
            std::env::temp_dir().join(format!("wisp-merge-test-{}", uuid::Uuid::new_v4().simple()));
        let (first, second, merged) = (dir.join("a"), dir.join("b"), dir.join("m"));
        std::fs::create_dir_all(first.join("python/pkg")).unwrap();
        std::fs::write(first.join("python/pkg/mod.py"), "first").unwrap();
        std::fs::write(first.join("python/only_first.py"), "1").unwrap();
        std::fs::write(first.join("conflict"), "file").unwrap();
        std::fs::create_dir_all(second.join("python/pkg")).unwrap();
        std::fs::write(second.join("python/pkg/mod.py"), "second").unwrap();
        std::fs::create_dir_all(second.join("conflict")).unwrap();
        std::fs::write(second.join("conflict/inner"), "dir").unwrap();
        std::os::unix::fs::symlink("python/pkg/mod.py", second.join("link")).unwrap();
        std::fs::create_dir(&merged).unwrap();
        merge_tree(&first, &merged).unwrap();
        merge_tree(&second, &merged).unwrap();
        let read = |path: &str| std::fs::read_to_string(merged.join(path)).unwrap();
        assert_eq!(read("python/pkg/mod.py"), "second");
        assert_eq!(read("python/only_first.py"), "1");
        assert_eq!(read("conflict/inner"), "dir");
        assert_eq!(read("link"), "second");
        // The layers themselves are untouched.
        assert_eq!(
            std::fs::read_to_string(first.join("python/pkg/mod.py")).unwrap(),
            "first"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
