//! The managed runtimes this machine can run, and the interpreter each one uses.
//!
//! Runtime ids follow Lambda's (`python3.12`, `nodejs20.x`, `provided.al2023`). Wisp runs the
//! interpreter the machine has for any `python3.x` or `nodejsNN.x` id; an id whose interpreter is
//! missing is refused when the function is created, not when it is first invoked.

use std::path::PathBuf;
use std::process::Command;
use std::sync::OnceLock;

use wisp_types::ApiError;

/// Which family a runtime id belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RuntimeFamily {
    Python,
    Node,
    /// `provided`, `provided.al2`, `provided.al2023`: the package's own `bootstrap` executable.
    Provided,
}

/// An interpreter found on this machine.
#[derive(Debug, Clone)]
pub struct Interpreter {
    /// The real executable (symlinks and shims resolved).
    pub executable: PathBuf,
    /// Directories the interpreter needs to see inside a sandbox (its installation prefix).
    pub prefixes: Vec<PathBuf>,
    /// The version it reports, e.g. `3.11.7` or `v20.20.2`.
    pub version: String,
}

/// Finds interpreters once, on first use, and answers for runtime ids.
#[derive(Default)]
pub struct RuntimeCatalog {
    python: OnceLock<Option<Interpreter>>,
    node: OnceLock<Option<Interpreter>>,
}

impl RuntimeCatalog {
    pub fn family(runtime: &str) -> Result<RuntimeFamily, ApiError> {
        let family = if let Some(minor) = runtime.strip_prefix("python3.") {
            (!minor.is_empty() && minor.bytes().all(|b| b.is_ascii_digit()))
                .then_some(RuntimeFamily::Python)
        } else if let Some(major) = runtime
            .strip_prefix("nodejs")
            .and_then(|rest| rest.strip_suffix(".x"))
        {
            (!major.is_empty() && major.bytes().all(|b| b.is_ascii_digit()))
                .then_some(RuntimeFamily::Node)
        } else if matches!(runtime, "provided" | "provided.al2" | "provided.al2023") {
            Some(RuntimeFamily::Provided)
        } else {
            None
        };
        family.ok_or_else(|| {
            ApiError::invalid(format!(
                "runtime {runtime:?} is not supported: use python3.x, nodejsNN.x, provided or provided.al2023"
            ))
        })
    }

    /// Checks that `runtime` is known and that this machine has its interpreter.
    pub fn check(&self, runtime: &str) -> Result<RuntimeFamily, ApiError> {
        let family = Self::family(runtime)?;
        match family {
            RuntimeFamily::Provided => {}
            RuntimeFamily::Python | RuntimeFamily::Node => {
                if self.interpreter(family).is_none() {
                    let program = if family == RuntimeFamily::Python {
                        "python3"
                    } else {
                        "node"
                    };
                    return Err(ApiError::invalid(format!(
                        "runtime {runtime:?} needs {program}, which this machine does not have; hint: install it and restart wisp"
                    )));
                }
            }
        }
        Ok(family)
    }

    pub fn interpreter(&self, family: RuntimeFamily) -> Option<&Interpreter> {
        match family {
            RuntimeFamily::Python => self.python.get_or_init(probe_python).as_ref(),
            RuntimeFamily::Node => self.node.get_or_init(probe_node).as_ref(),
            RuntimeFamily::Provided => None,
        }
    }
}

/// Asks `python3` itself where it lives, because the one on PATH may be a shim (pyenv) or a symlink.
fn probe_python() -> Option<Interpreter> {
    let output = Command::new("python3")
        .args(["-c", "import sys,platform; print(sys.executable); print(sys.prefix); print(sys.base_prefix); print(platform.python_version())"])
        .output()
        .ok()?;
    if !output.status.success() {
        return None;
    }
    let text = String::from_utf8(output.stdout).ok()?;
    let lines: Vec<&str> = text.lines().collect();
    let [executable, prefix, base_prefix, version] = lines.as_slice() else {
        return None;
    };
    let executable = std::fs::canonicalize(executable).ok()?;
    let mut prefixes = vec![PathBuf::from(prefix)];
    if base_prefix != prefix {
        prefixes.push(PathBuf::from(base_prefix));
    }
    Some(Interpreter {
        executable,
        prefixes: outside_usr(prefixes),
        version: version.to_string(),
    })
}

fn probe_node() -> Option<Interpreter> {
    let output = Command::new("node")
        .args([
            "-e",
            "console.log(process.execPath); console.log(process.version)",
        ])
        .output()
        .ok()?;
    if !output.status.success() {
        return None;
    }
    let text = String::from_utf8(output.stdout).ok()?;
    let mut lines = text.lines();
    let executable = std::fs::canonicalize(lines.next()?).ok()?;
    let version = lines.next()?.to_string();
    let prefix = executable.parent()?.parent()?.to_path_buf();
    Some(Interpreter {
        executable,
        prefixes: outside_usr(vec![prefix]),
        version,
    })
}

/// System directories are mounted into every sandbox already; only other prefixes need their own mount.
fn outside_usr(prefixes: Vec<PathBuf>) -> Vec<PathBuf> {
    prefixes
        .into_iter()
        .filter(|prefix| !(prefix.starts_with("/usr") || prefix == &PathBuf::from("/")))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runtime_ids_map_to_families() {
        let cases = [
            ("python3.12", Some(RuntimeFamily::Python)),
            ("python3.9", Some(RuntimeFamily::Python)),
            ("nodejs20.x", Some(RuntimeFamily::Node)),
            ("provided.al2023", Some(RuntimeFamily::Provided)),
            ("provided", Some(RuntimeFamily::Provided)),
            ("python2.7", None),
            ("python3.", None),
            ("nodejs.x", None),
            ("java21", None),
            ("", None),
        ];
        for (runtime, expected) in cases {
            assert_eq!(RuntimeCatalog::family(runtime).ok(), expected, "{runtime}");
        }
    }
}
