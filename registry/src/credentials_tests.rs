use std::sync::OnceLock;

use super::*;
use crate::error::Error;

const SECRET: &str = "hunter2";

/// A config dir holding `config.json` with `json`.
fn config(json: &str) -> (tempfile::TempDir, DockerConfig) {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("config.json");
    fs::write(&path, json).expect("write config");
    let config = DockerConfig::load(&path).expect("load");
    (dir, config)
}

fn b64(s: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(s)
}

/// `(kind, user, secret)` for comparisons.
fn parts(c: Option<Credentials>) -> Option<(&'static str, String, String)> {
    c.map(|c| match c {
        Credentials::UsernamePassword { username, password } => ("basic", username, password.expose().clone()),
        Credentials::IdentityToken { token } => ("token", String::new(), token.expose().clone()),
    })
}

/// `finds!(config json, registry => expected parts)`
macro_rules! finds {
    ($json:expr, $registry:expr => $expected:expr) => {
        let (_dir, config) = config(&$json);
        let found = config.credentials($registry).expect("lookup");
        let expected: Option<(&str, &str, &str)> = $expected;
        assert_eq!(
            parts(found),
            expected.map(|(k, u, s)| (k, u.to_owned(), s.to_owned())),
            "{} in {}",
            $registry,
            $json
        );
    };
}

#[test]
fn auths_forms_table() {
    let auth = |key: &str, user_pass: &str| format!(r#"{{"auths":{{"{key}":{{"auth":"{}"}}}}}}"#, b64(user_pass));
    finds!(auth("reg.io:5000", "alice:pw:with:colons"), "reg.io:5000" => Some(("basic", "alice", "pw:with:colons")));
    finds!(auth("https://reg.io:5000/v1/", "alice:pw"), "reg.io:5000" => Some(("basic", "alice", "pw")));
    finds!(auth("http://reg.io", "alice:pw"), "reg.io" => Some(("basic", "alice", "pw")));
    finds!(auth("reg.io:5000", "alice:pw"), "reg.io" => None);
    finds!(auth("reg.io", "alice:pw"), "reg.io:5000" => None);
    finds!(auth(DOCKER_HUB_CONFIG_KEY, "hub:pw"), "docker.io" => Some(("basic", "hub", "pw")));
    finds!(auth("docker.io", "hub:pw"), "docker.io" => Some(("basic", "hub", "pw")));
    finds!(auth("index.docker.io", "hub:pw"), "docker.io" => Some(("basic", "hub", "pw")));
    // Without padding, with whitespace.
    let unpadded = b64("ab:c").trim_end_matches('=').to_owned();
    finds!(format!(r#"{{"auths":{{"r":{{"auth":" {unpadded} "}}}}}}"#), "r" => Some(("basic", "ab", "c")));
    finds!(r#"{"auths":{"r":{"username":"bob","password":"pw"}}}"#, "r" => Some(("basic", "bob", "pw")));
    finds!(r#"{"auths":{"r":{"username":"bob"}}}"#, "r" => None);
    finds!(
        format!(r#"{{"auths":{{"r":{{"auth":"{}","identitytoken":"refresh"}}}}}}"#, b64("u:p")),
        "r" => Some(("token", "", "refresh"))
    );
    finds!(r#"{"auths":{"r":{}}}"#, "r" => None);
    finds!(r#"{"auths":{"r":{"auth":""}}}"#, "r" => None);
    finds!("{}", "r" => None);
    finds!(r#"{"auths":{},"HttpHeaders":{"X":"y"},"psFormat":"x"}"#, "r" => None);
    // Exact key wins over a URL form of the same host.
    finds!(
        format!(r#"{{"auths":{{"https://r/v1/":{{"auth":"{}"}},"r":{{"auth":"{}"}}}}}}"#, b64("url:1"), b64("exact:2")),
        "r" => Some(("basic", "exact", "2"))
    );
}

#[test]
fn missing_file_is_empty_and_bad_files_are_errors_without_secrets() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = DockerConfig::load(&dir.path().join("absent.json")).expect("missing is fine");
    assert!(config.credentials("r").expect("lookup").is_none());

    let bad_auth = format!(r#"{{"auths":{{"r":{{"auth":"{SECRET}!!"}}}}}}"#);
    let (_d, config) = self::config(&bad_auth);
    let err = config.credentials("r").expect_err("not base64");
    assert!(matches!(&err, Error::Credentials(CredentialsError::InvalidAuth { key, .. }) if key == "r"));
    let no_colon = format!(r#"{{"auths":{{"r":{{"auth":"{}"}}}}}}"#, b64(SECRET));
    let (_d, config) = self::config(&no_colon);
    let err2 = config.credentials("r").expect_err("no colon");

    // A type error whose serde message would quote the secret.
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("config.json");
    fs::write(&path, format!(r#"{{"auths":{{"r":"{SECRET}"}}}}"#)).expect("write");
    let err3 = DockerConfig::load(&path).expect_err("shape");
    fs::write(&path, format!(r#"{{"auths":{{"r":{{"auth":"{SECRET}"#)).expect("write");
    let err4 = DockerConfig::load(&path).expect_err("truncated");
    for err in [&err, &err2, &err3, &err4] {
        let shown = format!("{err} {err:?} {:?}", std::error::Error::source(err));
        assert!(!shown.contains(SECRET), "secret in {shown}");
    }
    assert!(err3.to_string().contains("unexpected JSON shape at line 1"), "{err3}");
    assert!(err4.to_string().contains("truncated JSON"), "{err4}");
}

/// A fake `docker-credential-test` in its own directory, written once per test process (see
/// the note in `fake_helper_dir`). It logs each stdin to `<dir>/calls`.
fn fake_helper_dir() -> &'static Path {
    // Written once, before any test runs it: a script being written while another thread forks
    // could be inherited open for writing and fail to exec with ETXTBSY.
    static DIR: OnceLock<tempfile::TempDir> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = tempfile::tempdir().expect("tempdir");
        let script = r#"#!/bin/sh
[ "$1" = get ] || { echo "unexpected args: $*"; exit 9; }
server=$(cat)
printf '%s\n' "$server" >>"$(dirname "$0")/calls"
case $server in
reg.example:5000) echo '{"ServerURL":"reg.example:5000","Username":"helper-user","Secret":"hunter2"}' ;;
https://index.docker.io/v1/) echo '{"ServerURL":"x","Username":"hub-user","Secret":"hub-pw"}' ;;
token.example) echo '{"Username":"<token>","Secret":"refresh-hunter2"}' ;;
garbage.example) echo '{"Username": hunter2' ;;
slow.example) exec sleep 5 ;;
broken.example) echo "keychain locked" >&2; exit 3 ;;
*) echo "credentials not found in native keychain"; exit 1 ;;
esac
"#;
        let path = dir.path().join("docker-credential-test");
        fs::write(&path, script).expect("write helper");
        fs::set_permissions(&path, fs::Permissions::from_mode(0o755)).expect("chmod");
        dir
    })
    .path()
}

fn with_helper(json: &str) -> (tempfile::TempDir, DockerConfig) {
    let (dir, config) = config(json);
    (dir, config.with_helper_path(fake_helper_dir()))
}

#[test]
fn cred_helpers_and_store_are_run() {
    let json = format!(
        r#"{{"credHelpers":{{"reg.example:5000":"test","token.example":"test","broken.example":"test","garbage.example":"test"}},
            "auths":{{"other.example":{{"auth":"{}"}}}}}}"#,
        b64("file:pw")
    );
    let (_d, config) = with_helper(&json);
    assert_eq!(
        parts(config.credentials("reg.example:5000").expect("helper")),
        Some(("basic", "helper-user".into(), "hunter2".into()))
    );
    assert_eq!(
        parts(config.credentials("token.example").expect("helper")),
        Some(("token", String::new(), "refresh-hunter2".into()))
    );
    // No helper configured for it: the file.
    assert_eq!(parts(config.credentials("other.example").expect("file")), Some(("basic", "file".into(), "pw".into())));
    match config.credentials("broken.example") {
        Err(Error::Credentials(CredentialsError::HelperFailed { message, .. })) => {
            assert_eq!(message, "keychain locked");
        }
        other => panic!("expected HelperFailed, got {other:?}"),
    }
    let err = config.credentials("garbage.example").expect_err("garbage");
    assert!(matches!(err, Error::Credentials(CredentialsError::HelperOutput { .. })));
    assert!(!format!("{err} {err:?}").contains(SECRET));

    // credsStore for everything; "not found" falls through to auths.
    let json = format!(
        r#"{{"credsStore":"test","auths":{{"https://index.docker.io/v1/":{{}},"fallback.example":{{"auth":"{}"}}}}}}"#,
        b64("fb:pw")
    );
    let (_d, config) = with_helper(&json);
    assert_eq!(
        parts(config.credentials("docker.io").expect("hub")),
        Some(("basic", "hub-user".into(), "hub-pw".into()))
    );
    assert_eq!(
        parts(config.credentials("fallback.example").expect("fallback")),
        Some(("basic", "fb".into(), "pw".into()))
    );
    assert!(config.credentials("nothing.example").expect("none").is_none());

    let calls = fs::read_to_string(fake_helper_dir().join("calls")).expect("calls log");
    for server in ["reg.example:5000", "https://index.docker.io/v1/", "nothing.example"] {
        assert!(calls.lines().any(|l| l == server), "{server} not in {calls:?}");
    }
}

#[test]
fn missing_or_slow_helper() {
    let (_d, config) = with_helper(r#"{"credsStore":"nonexistent"}"#);
    match config.credentials("r") {
        Err(Error::Credentials(CredentialsError::HelperNotFound { program, .. })) => {
            assert_eq!(program, "docker-credential-nonexistent");
        }
        other => panic!("expected HelperNotFound, got {other:?}"),
    }
    let (_d, mut config) = with_helper(r#"{"credsStore":"test"}"#);
    config.helper_timeout = Duration::from_millis(200);
    let started = Instant::now();
    let err = config.credentials("slow.example").expect_err("timeout");
    assert!(matches!(err, Error::Credentials(CredentialsError::HelperTimeout { .. })), "{err:?}");
    assert!(started.elapsed() < Duration::from_secs(4), "the helper was killed");
}

#[test]
fn store_login_round_trips_atomically_with_private_mode() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("new-dir/config.json");
    let password = Secret::new(SECRET.to_owned());
    store_login_at(&path, "reg.io:5000", "alice", &password).expect("store");
    store_login_at(&path, "docker.io", "hub", &password).expect("store hub");
    let mode = |p: &Path| fs::metadata(p).expect("stat").permissions().mode() & 0o777;
    assert_eq!(mode(&path), 0o600);
    assert_eq!(mode(path.parent().expect("dir")), 0o700);
    let config = DockerConfig::load(&path).expect("load");
    assert_eq!(
        parts(config.credentials("reg.io:5000").expect("lookup")),
        Some(("basic", "alice".into(), SECRET.into()))
    );
    let raw: serde_json::Value = serde_json::from_slice(&fs::read(&path).expect("read")).expect("json");
    assert!(raw["auths"][DOCKER_HUB_CONFIG_KEY]["auth"].is_string(), "{raw}");

    // Other settings survive; an entry is replaced; no temporary file is left behind.
    fs::write(&path, r#"{"psFormat":"x","auths":{"reg.io:5000":{"identitytoken":"old"}}}"#).expect("write");
    store_login_at(&path, "reg.io:5000", "bob", &password).expect("store again");
    let raw: serde_json::Value = serde_json::from_slice(&fs::read(&path).expect("read")).expect("json");
    assert_eq!(raw["psFormat"], "x");
    assert!(raw["auths"]["reg.io:5000"].get("identitytoken").is_none());
    let names: Vec<_> =
        fs::read_dir(path.parent().expect("dir")).expect("ls").map(|e| e.expect("entry").file_name()).collect();
    assert_eq!(names, ["config.json"]);

    // A config that does not parse is left alone.
    fs::write(&path, "{not json").expect("write");
    assert!(store_login_at(&path, "r", "u", &password).is_err());
    assert_eq!(fs::read_to_string(&path).expect("read"), "{not json");
}

#[test]
fn debug_output_never_shows_secrets() {
    let creds = [Credentials::basic("alice", SECRET), Credentials::identity_token(SECRET)];
    let shown = format!("{creds:?}");
    assert!(!shown.contains(SECRET), "{shown}");
    assert!(shown.contains("alice"), "{shown}");
    let json = format!(r#"{{"auths":{{"r":{{"auth":"{}","password":"{SECRET}"}}}}}}"#, b64(&format!("u:{SECRET}")));
    let (_d, config) = config(&json);
    let shown = format!("{config:?}");
    assert!(!shown.contains(SECRET) && !shown.contains(&b64(&format!("u:{SECRET}"))), "{shown}");
}
