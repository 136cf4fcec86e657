//! The `wisp-launcher` binary: the sandbox launcher on its own, for tests and for installations
//! that prefer a separate privileged executable. It must stay a thin call into the library.

fn main() {
    wisp_sandbox::launcher::main()
}
