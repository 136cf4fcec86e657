//! The launcher (in progress).

/// Entry point of the launcher process.
pub fn main() -> ! {
    std::process::exit(127)
}
