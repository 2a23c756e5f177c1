//! A stand-alone sandbox helper: `rbuild-sandbox __sandbox` runs
//! [`rbuild_executor::sandbox_main`]. It exists so the crate's integration tests have an
//! executable to pass to `run`; the `rbuild` binary dispatches the same way.

fn main() {
    if std::env::args_os().nth(1).is_some_and(|arg| arg == rbuild_executor::HELPER_ARG) {
        rbuild_executor::sandbox_main();
    }
    eprintln!("usage: rbuild-sandbox {} (spawned by rbuild_executor::run)", rbuild_executor::HELPER_ARG);
    std::process::exit(2);
}
