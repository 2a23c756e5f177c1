//! The hostile-inputs suite (issue "Hardening"): every case is an attack on the builder,
//! named after it, run against the real `rbuild` binary, and asserts the exact outcome: a clear
//! error, or confinement (nothing outside the context read, nothing outside the rootfs
//! written, nothing of the host reachable from RUN, no secret value anywhere it could persist).
//!
//! - `context`: COPY/ADD and bind mounts against the build context (symlinks out of it, `..`,
//!   `.dockerignore`d files); a canary file beside the context must never reach a layer.
//! - `archives`: `ADD x.tar` with escaping entries, links, devices, setuid files, bombs.
//! - `layers`: base images whose layers try to escape the snapshot they are unpacked into.
//! - `run`: what a RUN step can see and do on the host, and the `--allow security.insecure` gate.
//! - `secrets`: `--secret` values never land in a layer, the config, the store, or the output.
//!
//! Needs root and the Debian packages `scripts/install-deps.sh` installs (busybox-static, jq,
//! docker-registry, skopeo, umoci); without them each case says why it skips. Run it with
//! `cargo test --test hostile`.

#[path = "../support/mod.rs"]
mod support;

mod archives;
mod context;
mod layers;
mod run;
mod secrets;
mod support_ext;
