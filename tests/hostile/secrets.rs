//! `--secret` values (design invariant 3): used by `RUN --mount=type=secret`, they never land in
//! a layer, the image config or history, the store (cache keys and records included), the
//! progress output or an error message; nor do they stay behind in the runtime directory.

use std::path::Path;

use crate::support_ext::{self, sha256, tree_containing, unique, Case, Run};

fn ready(test: &str) -> bool {
    support_ext::ready(test)
}

/// A secret file beside the context (not in it) holding a fresh value; returns the value and
/// the `--secret` flag's argument.
fn secret_file(c: &Case, id: &str) -> (String, String) {
    let value = unique("S3CRET-VALUE");
    let path = c.dir().join(format!("{id}.secret"));
    std::fs::write(&path, &value).unwrap();
    (value, format!("id={id},src={}", path.display()))
}

/// Asserts `value` is nowhere: output, archive (layers decompressed, config, manifest), store,
/// and `/dev/shm`, where the runtime directories secrets are staged in live.
#[track_caller]
fn assert_secret_nowhere(c: &Case, run: &Run, value: &str) {
    run.assert_never_shows(value);
    c.assert_never_written("the secret value", value);
    let staged = tree_containing(Path::new("/dev/shm"), value.as_bytes());
    assert!(staged.is_empty(), "the secret stayed in a runtime directory: {staged:#?}");
}

#[test]
fn secret_value_never_reaches_layers_config_history_store_or_output() {
    let test = "secret_value_never_reaches_layers_config_history_store_or_output";
    if !ready(test) {
        return;
    }
    let c = Case::new(
        test,
        "FROM {BASE}\n\
         RUN --mount=type=secret,id=tok test -s /run/secrets/tok && wc -c < /run/secrets/tok > /secret-len\n\
         RUN --mount=type=secret,id=tok --mount=type=secret,id=tok,env=TOK test -n \"$TOK\" \
         && test \"$TOK\" = \"$(cat /run/secrets/tok)\"\n\
         RUN --mount=type=secret,id=tok,target=/etc/app/token,mode=0400,uid=1000 test \"$(stat -c %a:%u /etc/app/token)\" = 400:1000\n\
         RUN test ! -s /run/secrets/tok && test ! -s /etc/app/token && test -z \"$TOK\" && test \"$(cat /secret-len)\" -gt 20\n",
    );
    let (value, arg) = secret_file(&c, "tok");
    let run = c.build_oci(&["--secret", &arg, "--debug"]);
    run.assert_ok();
    assert_secret_nowhere(&c, &run, &value);
}

#[test]
fn secret_value_and_its_digest_never_enter_cache_keys() {
    let test = "secret_value_and_its_digest_never_enter_cache_keys";
    if !ready(test) {
        return;
    }
    let c = Case::new(test, "FROM {BASE}\nRUN --mount=type=secret,id=tok,env=TOK test -n \"$TOK\" && touch /used\n");
    let (value, arg) = secret_file(&c, "tok");
    let run = c.build_oci(&["--secret", &arg]);
    run.assert_ok();
    assert_secret_nowhere(&c, &run, &value);
    let digest = sha256(value.as_bytes());
    c.assert_never_written("the secret's sha256", digest.trim_start_matches("sha256:"));

    // As BuildKit: only the id is part of the key, so another value is a cache hit.
    let (other, arg) = secret_file(&c, "tok");
    let run = c.build_oci(&["--secret", &arg]);
    run.assert_ok();
    assert!(run.text.lines().any(|l| l.ends_with(" CACHED")), "{}", run.text);
    assert_secret_nowhere(&c, &run, &other);
}

#[test]
fn secret_value_not_in_the_error_when_a_step_fails_after_reading_it() {
    let test = "secret_value_not_in_the_error_when_a_step_fails_after_reading_it";
    if !ready(test) {
        return;
    }
    let c = Case::new(
        test,
        "FROM {BASE}\nRUN --mount=type=secret,id=tok --mount=type=secret,id=tok,env=TOK cat /run/secrets/tok > /copy \
         && test -n \"$TOK\" && echo reading done && exit 3\n",
    );
    let (value, arg) = secret_file(&c, "tok");
    let run = c.build_oci(&["--secret", &arg]);
    run.assert_user_error(&["did not complete successfully: exit code: 3", "reading done", "Dockerfile:2"]);
    assert_secret_nowhere(&c, &run, &value);
}

#[test]
fn secret_missing_is_refused_naming_the_id() {
    let test = "secret_missing_is_refused_naming_the_id";
    if !ready(test) {
        return;
    }
    let c = Case::new(test, "FROM {BASE}\nRUN --mount=type=secret,id=npm,required cat /run/secrets/npm\n");
    let run = c.build_oci(&[]);
    run.assert_user_error(&["secret npm not found", "hint: pass it with --secret id=npm,src=FILE"]);
}

#[test]
fn secret_in_a_build_arg_warns_secrets_used_in_arg_or_env() {
    let test = "secret_in_a_build_arg_warns_secrets_used_in_arg_or_env";
    if !ready(test) {
        return;
    }
    let c = Case::new(test, "FROM {BASE}\nARG GITHUB_TOKEN\nENV DB_PASSWORD=x\nRUN true\n");
    let value = unique("ARG-VALUE");
    let run = c.build_oci(&["--build-arg", &format!("GITHUB_TOKEN={value}")]);
    run.assert_ok();
    // BuildKit's wording: `SecretsUsedInArgOrEnv: Do not use ARG or ENV instructions for
    // sensitive data (ARG "GITHUB_TOKEN")`.
    assert!(run.text.contains("SecretsUsedInArgOrEnv"), "{}", run.text);
    assert!(run.text.contains("(ARG \"GITHUB_TOKEN\")"), "{}", run.text);
    assert!(run.text.contains("(ENV \"DB_PASSWORD\")"), "{}", run.text);
}
