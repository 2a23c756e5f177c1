//! `/etc/hostname`, `/etc/hosts` and `/etc/resolv.conf` inside the sandbox.
//!
//! The files are written to a small tmpfs staged at `/dev/.rbuild-etc` before `pivot_root`
//! (the host's `/etc/resolv.conf` is read while the host root is still reachable), then
//! bind-mounted after `pivot_root`, when paths (and symlinks) resolve inside the rootfs.
//! Writes by the command go to the tmpfs copy, never to the host's files. The staging tmpfs is
//! then detached; the binds keep it alive.
//!
//! `hosts` and `resolv.conf` are there in every RUN, as BuildKit binds them: an image without
//! them gets an empty stub (and `/etc` if it has none) to bind over, recorded in [`Stubs`] so
//! that the host removes it from the upper dir afterwards and nothing lands in the layer.
//! `hostname`, which BuildKit does not bind, is bound only over a file the image has. Where a
//! stub cannot be made (`/etc` a dangling symlink or not a directory), the file is left out.
//!
//! - `hostname`: the spec's hostname;
//! - `hosts`: `127.0.0.1 localhost <hostname>`, the IPv6 loopback names and the spec's extra
//!   hosts (`--add-host`);
//! - `resolv.conf`: a copy of the host's, with `Network::Host` only (there is nothing to
//!   resolve with `Network::None`, so the image's file stays).

use std::io::Read;
use std::path::Path;

use nix::mount::{MntFlags, MsFlags};

use super::mounts::{mkdir, mount, MountError};
use super::stubs::Stubs;
use crate::spec::{Network, SandboxSpec};

/// The staging directory, relative to the rootfs.
const STAGING: &str = "dev/.rbuild-etc";

/// Largest host resolv.conf copied.
const MAX_RESOLV_CONF: u64 = 1 << 20;

/// The content of the sandbox's `/etc/hosts`: the loopback names, then `extra` (`--add-host`)
/// as BuildKit writes them.
pub(crate) fn hosts_content(hostname: &str, extra: &[(String, String)]) -> String {
    let mut out = format!("127.0.0.1\tlocalhost {hostname}\n::1\tlocalhost ip6-localhost ip6-loopback\n");
    for (host, ip) in extra {
        out.push_str(&format!("{ip}\t{host}\n"));
    }
    out
}

/// Writes the files to bind into the staging tmpfs (inside the already mounted `/dev` of the
/// merged rootfs) and returns their names.
pub(crate) fn stage(merged: &Path, spec: &SandboxSpec) -> Result<Vec<&'static str>, MountError> {
    let dir = merged.join(STAGING);
    mkdir(&dir, 0o755)?;
    let secure = MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC;
    mount("tmpfs", &dir, Some("tmpfs"), secure, Some("mode=755,size=1m"))?;
    let mut files = vec![
        ("hostname", format!("{}\n", spec.hostname).into_bytes()),
        ("hosts", hosts_content(&spec.hostname, &spec.extra_hosts).into_bytes()),
    ];
    if spec.network == Network::Host {
        if let Some(resolv) = read_host_file(Path::new("/etc/resolv.conf"))? {
            files.push(("resolv.conf", resolv));
        }
    }
    let mut names = Vec::new();
    for (name, content) in files {
        let path = dir.join(name);
        std::fs::write(&path, content).map_err(|e| MountError::Create { path, source: e.into() })?;
        names.push(name);
    }
    Ok(names)
}

fn read_host_file(path: &Path) -> Result<Option<Vec<u8>>, MountError> {
    let fail = |e: std::io::Error| MountError::ReadHostFile { path: path.to_owned(), source: e.into() };
    let file = match std::fs::File::open(path) {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(fail(e)),
    };
    let mut content = Vec::new();
    file.take(MAX_RESOLV_CONF).read_to_end(&mut content).map_err(fail)?;
    Ok(Some(content))
}

/// Whether the sandbox gets `/etc/<name>` even when the image has none (BuildKit's binds).
fn always_present(name: &str) -> bool {
    matches!(name, "hosts" | "resolv.conf")
}

/// After `pivot_root`: binds each staged file over `/etc/<name>` (a regular file of the image,
/// or a stub made in `stubs` for those [`always_present`]), then detaches and removes the
/// staging directory.
pub(crate) fn bind_staged(names: &[&str], stubs: &mut Stubs) -> Result<(), MountError> {
    let staging = Path::new("/").join(STAGING);
    for name in names {
        let target = Path::new("/etc").join(name);
        let present = match std::fs::symlink_metadata(&target) {
            Ok(_) => std::fs::metadata(&target).is_ok_and(|meta| meta.is_file()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && always_present(name) => {
                match stubs.create(Path::new("/"), &target, false) {
                    Ok(()) => true,
                    Err(MountError::DanglingSymlink { .. } | MountError::NotADirectory { .. }) => false,
                    Err(e) => return Err(e),
                }
            }
            Err(_) => false,
        };
        if !present {
            continue;
        }
        let source = staging.join(name);
        mount(&source.to_string_lossy(), &target, None, MsFlags::MS_BIND, None)?;
    }
    nix::mount::umount2(&staging, MntFlags::MNT_DETACH)
        .map_err(|e| MountError::Unmount { target: staging.clone(), source: e.into() })?;
    std::fs::remove_dir(&staging).map_err(|e| MountError::Remove { path: staging, source: e.into() })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_lists_the_hostname() {
        assert_eq!(
            hosts_content("buildkitsandbox", &[]),
            "127.0.0.1\tlocalhost buildkitsandbox\n::1\tlocalhost ip6-localhost ip6-loopback\n"
        );
        let extra = [("db".to_owned(), "10.1.2.3".to_owned()), ("v6".to_owned(), "fd00::1".to_owned())];
        assert!(hosts_content("h", &extra).ends_with("ip6-loopback\n10.1.2.3\tdb\nfd00::1\tv6\n"));
    }
}
