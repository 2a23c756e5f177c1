//! Build contexts that are not a local directory (the main context or a `--build-context`): a
//! tar archive (plain, gzip, bzip2 or xz) from stdin, a file or a URL, or a git repository.
//! Each is materialised into a directory, which then serves as a local context.
//!
//! Nothing here is new machinery: archives go through `ADD`'s confined extraction (no `..`,
//! absolute names kept inside, never through a symlink the archive planted, hardlinks only to
//! its own files, decompression-bomb limits), repositories through `ADD <git url>`'s shallow
//! checkout (`.git` left out), downloads through the same HTTP client settings (with the
//! registry auth store's credentials for a host that answers `401`).

use std::path::Path;

use tokio::io::AsyncWriteExt;

use crate::archive::{self, ArchiveLimits};
use crate::copy::FileWriter;
use crate::error::WorkerError;
use crate::git;
use crate::http::redact_url;
use crate::merged::MergedView;

/// Whether the file at `path` is a tar archive, plain or compressed (sniffed by content, as
/// `docker build -` does); `false` means a text file such as a Dockerfile.
pub fn is_archive(path: &Path) -> Result<bool, WorkerError> {
    let shown = path.display().to_string();
    Ok(archive::detect(path).map_err(|source| WorkerError::Archive { archive: shown, source })?.is_some())
}

/// Extracts the archive at `path` into the existing directory `dest`, confined to it; `name`
/// is how messages call the archive.
pub fn extract_archive(path: &Path, name: &str, dest: &Path, limits: ArchiveLimits) -> Result<(), WorkerError> {
    let shown = name.to_owned();
    let wrap = |source| WorkerError::Archive { archive: shown.clone(), source };
    let format = archive::detect(path).map_err(wrap)?.ok_or_else(|| WorkerError::BadContext {
        context: shown.clone(),
        reason: "not a tar archive (plain, gzip, bzip2 or xz)".to_owned(),
    })?;
    let base = MergedView::new(Vec::new());
    let writer = FileWriter { base: &base, diff: dest, limits };
    archive::extract(path, format, &writer, Path::new(""), &limits).map_err(wrap)
}

/// Checks out `reference` (a branch, tag or commit; `None`: the remote's HEAD) of `remote`
/// shallowly and moves its tree, or `subdir` of it, into the empty directory `dest`, without
/// `.git`. `scratch` (a path that does not exist yet, on `dest`'s filesystem) holds the clone
/// meanwhile and is removed. Returns the commit checked out. Blocking.
pub fn checkout_git(
    remote: &str,
    reference: Option<&str>,
    subdir: Option<&str>,
    dest: &Path,
    scratch: &Path,
) -> Result<String, WorkerError> {
    let commit = git::resolve_commit(remote, reference)?;
    let result = git::checkout_tree(remote, reference, &commit, subdir, false, scratch, dest);
    let _ = std::fs::remove_dir_all(scratch);
    result.map(|()| commit)
}

/// Downloads `url` into the new file `file` (credentials as for `ADD <url>`).
pub async fn download(url: &str, file: &Path) -> Result<(), WorkerError> {
    let shown = redact_url(url);
    let err = |source| WorkerError::Download { url: shown.clone(), source };
    let client = reqwest::Client::builder()
        .user_agent(concat!("rbuild/", env!("CARGO_PKG_VERSION")))
        .connect_timeout(std::time::Duration::from_secs(30))
        .read_timeout(std::time::Duration::from_secs(120))
        .build()
        .map_err(err)?;
    let mut resp = crate::http::get_with_credentials(&client, url).await?;
    if !resp.status().is_success() {
        return Err(WorkerError::HttpStatus { url: shown, status: resp.status().as_u16() });
    }
    let io = |source| WorkerError::Io { path: file.to_owned(), source };
    let mut out = tokio::fs::File::create_new(file).await.map_err(io)?;
    while let Some(chunk) = resp.chunk().await.map_err(err)? {
        out.write_all(&chunk).await.map_err(io)?;
    }
    out.flush().await.map_err(io)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Name, type, content, link target.
    type Entry<'a> = (&'a str, tar::EntryType, &'a [u8], Option<&'a str>);

    fn tar_with(entries: &[Entry<'_>]) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        for (name, kind, data, link) in entries {
            let mut h = tar::Header::new_gnu();
            h.set_entry_type(*kind);
            h.set_size(data.len() as u64);
            h.set_mode(0o644);
            // Raw names: the tar crate refuses to write `..` itself.
            let bytes = name.as_bytes();
            h.as_old_mut().name[..bytes.len()].copy_from_slice(bytes);
            if let Some(l) = link {
                h.set_link_name(l).unwrap();
            }
            h.set_cksum();
            b.append(&h, *data).unwrap();
        }
        b.into_inner().unwrap()
    }

    #[test]
    fn extracts_a_context_and_refuses_escapes() {
        let t = tempfile::tempdir().unwrap();
        let good = t.path().join("good.tar");
        std::fs::write(&good, tar_with(&[("Dockerfile", tar::EntryType::Regular, b"FROM scratch\n", None)])).unwrap();
        assert!(is_archive(&good).unwrap());
        let dest = t.path().join("ctx");
        std::fs::create_dir(&dest).unwrap();
        extract_archive(&good, "good.tar", &dest, ArchiveLimits::default()).unwrap();
        assert_eq!(std::fs::read(dest.join("Dockerfile")).unwrap(), b"FROM scratch\n");

        let outside = t.path().join("outside");
        std::fs::create_dir(&outside).unwrap();
        let cases: [&[Entry<'_>]; 2] = [
            &[("../outside/evil", tar::EntryType::Regular, b"x", None)],
            &[
                ("link", tar::EntryType::Symlink, b"", Some(outside.to_str().unwrap())),
                ("link/evil", tar::EntryType::Regular, b"x", None),
            ],
        ];
        for (i, entries) in cases.iter().enumerate() {
            let path = t.path().join(format!("bad{i}.tar"));
            std::fs::write(&path, tar_with(entries)).unwrap();
            let dest = t.path().join(format!("bad{i}"));
            std::fs::create_dir(&dest).unwrap();
            let err = extract_archive(&path, "bad.tar", &dest, ArchiveLimits::default()).unwrap_err();
            assert!(matches!(err, WorkerError::Archive { .. }), "{err}");
        }
        assert_eq!(std::fs::read_dir(&outside).unwrap().count(), 0, "nothing written outside");

        let text = t.path().join("Dockerfile");
        std::fs::write(&text, "FROM scratch\n").unwrap();
        assert!(!is_archive(&text).unwrap());
        assert!(matches!(
            extract_archive(&text, "Dockerfile", &dest, ArchiveLimits::default()),
            Err(WorkerError::BadContext { .. })
        ));
    }
}
