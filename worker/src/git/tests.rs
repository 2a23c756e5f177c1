use super::*;
use crate::testutil::worker;

fn run(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(["-c", "user.name=t", "-c", "user.email=t@example.com", "-c", "init.defaultBranch=main"])
        .args(args)
        .output()
        .unwrap();
    assert!(out.status.success(), "git {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// A repository with two commits on `main` (tagged `v1` annotated, and `main`'s head) and a
/// branch `dev`; returns (dir, first commit, second commit).
fn repo(root: &Path) -> (PathBuf, String, String) {
    let dir = root.join("repo");
    std::fs::create_dir_all(dir.join("sub/deeper")).unwrap();
    run(&dir, &["init", "-q"]);
    std::fs::write(dir.join("README"), "v1\n").unwrap();
    std::fs::write(dir.join("sub/deeper/file"), "in sub\n").unwrap();
    std::os::unix::fs::symlink("/etc", dir.join("sub/escape")).unwrap();
    run(&dir, &["add", "-A"]);
    run(&dir, &["commit", "-q", "-m", "one"]);
    let first = run(&dir, &["rev-parse", "HEAD"]);
    run(&dir, &["tag", "-a", "v1", "-m", "release"]);
    run(&dir, &["branch", "dev"]);
    std::fs::write(dir.join("README"), "v2\n").unwrap();
    run(&dir, &["commit", "-q", "-am", "two"]);
    let second = run(&dir, &["rev-parse", "HEAD"]);
    (dir, first, second)
}

#[test]
fn references_resolve_to_commits() {
    let t = tempfile::tempdir().unwrap();
    let (dir, first, second) = repo(t.path());
    let remote = dir.to_string_lossy().into_owned();
    let file_url = format!("file://{remote}");
    assert_eq!(resolve_commit(&remote, None).unwrap(), second);
    assert_eq!(resolve_commit(&file_url, Some("main")).unwrap(), second);
    assert_eq!(resolve_commit(&remote, Some("v1")).unwrap(), first, "annotated tags are peeled");
    assert_eq!(resolve_commit(&remote, Some("dev")).unwrap(), first);
    assert_eq!(resolve_commit(&remote, Some(&first)).unwrap(), first);
    assert!(matches!(resolve_commit(&remote, Some("nope")), Err(WorkerError::GitRefNotFound { .. })));
    assert!(matches!(resolve_commit("--upload-pack=evil", None), Err(WorkerError::BadGitSource { .. })));
    assert!(matches!(resolve_commit(&t.path().join("missing").to_string_lossy(), None), Err(WorkerError::Git { .. })));
}

#[tokio::test]
async fn checkout_subdir_and_git_dir() {
    let t = tempfile::tempdir().unwrap();
    let (dir, first, second) = repo(t.path());
    let w = worker(t.path());
    let remote = format!("file://{}", dir.display());
    let exec = |n: u8, reference: Option<&str>, subdir: Option<&'static str>, keep: bool| {
        let (w, remote, reference) = (&w, remote.clone(), reference.map(str::to_owned));
        async move {
            let id = OpId([n; 32]);
            let content = w.git_content_key(id, &remote, reference.as_deref()).await.unwrap();
            let key = CacheKey::derive(&id, &[], Some(&content));
            let snap = w.git_exec(id, &key, &remote, reference.as_deref(), subdir, keep).await.unwrap();
            (content, w.store.snapshot_diff(&snap.chain[0].id))
        }
    };
    let (k_main, root) = exec(1, None, None, false).await;
    assert_eq!(std::fs::read_to_string(root.join("README")).unwrap(), "v2\n");
    assert!(!root.join(".git").exists(), ".git is removed by default");
    assert_eq!(k_main, content_key(&second));

    let (k_tag, tagged) = exec(2, Some("v1"), None, true).await;
    assert_eq!(std::fs::read_to_string(tagged.join("README")).unwrap(), "v1\n");
    assert!(tagged.join(".git/HEAD").is_file(), "--keep-git-dir keeps it");
    assert_eq!(k_tag, content_key(&first));

    let (_, sub) = exec(3, Some("main"), Some("sub"), false).await;
    let mut names: Vec<String> =
        std::fs::read_dir(&sub).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    names.sort();
    assert_eq!(names, ["deeper", "escape"]);
    assert_eq!(std::fs::read_link(sub.join("escape")).unwrap(), Path::new("/etc"), "symlinks stay symlinks");

    // A commit id works even when it is no branch head (full fetch fallback or by-id fetch).
    let (_, by_id) = exec(4, Some(&first), None, false).await;
    assert_eq!(std::fs::read_to_string(by_id.join("README")).unwrap(), "v1\n");

    // A subdirectory reached through a symlink cannot leave the checkout.
    let id = OpId([5; 32]);
    let key = CacheKey::derive(&id, &[], None);
    let err = w.git_exec(id, &key, &remote, None, Some("sub/escape"), false).await.unwrap_err();
    assert!(matches!(err, WorkerError::BadGitSource { what: "subdirectory", .. }), "{err:?}");
    // Clones never linger in the store's temp area.
    w.lock_commits().clear();
    assert_eq!(std::fs::read_dir(w.store.tmp_dir()).unwrap().count(), 0);
}
