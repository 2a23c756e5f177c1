//! Credentials found the way a user's machine has them: `$DOCKER_CONFIG/config.json` naming a
//! `docker-credential-*` helper on `$PATH`. This process's environment is changed for that, so
//! this file holds one test (its own process, no other test threads).

mod image;
#[path = "../../tests/support/mod.rs"]
mod support;

use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use image::{Blob, Image};
use rbuild_registry::oci_spec::image::MediaType;
use rbuild_registry::{Client, ClientOptions, Credentials, PushBlobOptions, PushOutcome, Reference};
use support::{Registry, RegistryOptions};

#[tokio::test]
async fn docker_config_env_and_credential_helper_on_path() {
    let opts = RegistryOptions { tls: false, htpasswd: Some(("bob".into(), "helper-hunter2".into())) };
    if !support::require_registry_with("docker_config_env_and_credential_helper_on_path", &opts) {
        return;
    }
    let registry = Registry::start_with(opts);
    let host = registry.host();
    let dir = tempfile::tempdir().expect("tempdir");
    let bin = dir.path().join("bin");
    std::fs::create_dir(&bin).expect("mkdir bin");
    let helper = bin.join("docker-credential-rbuildtest");
    std::fs::write(
        &helper,
        format!(
            "#!/bin/sh\nserver=$(cat)\necho \"$1 $server\" >>\"$(dirname \"$0\")/calls\"\n\
             if [ \"$server\" = '{host}' ]; then\n\
             echo '{{\"ServerURL\":\"{host}\",\"Username\":\"bob\",\"Secret\":\"helper-hunter2\"}}'\n\
             else echo 'credentials not found in native keychain'; exit 1; fi\n"
        ),
    )
    .expect("write helper");
    std::fs::set_permissions(&helper, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let config_dir = dir.path().join("docker");
    std::fs::create_dir(&config_dir).expect("mkdir docker");
    std::fs::write(config_dir.join("config.json"), format!(r#"{{"credHelpers":{{"{host}":"rbuildtest"}}}}"#))
        .expect("write config");
    let path = std::env::var_os("PATH").unwrap_or_default();
    let mut dirs = vec![bin.clone()];
    dirs.extend(std::env::split_paths(&path));
    std::env::set_var("PATH", std::env::join_paths(dirs).expect("PATH"));
    std::env::set_var("DOCKER_CONFIG", &config_dir);

    match rbuild_registry::docker_config_credentials(&host).expect("lookup") {
        Some(Credentials::UsernamePassword { username, .. }) => assert_eq!(username, "bob"),
        other => panic!("expected bob's credentials, got {other:?}"),
    }
    assert!(rbuild_registry::docker_config_credentials("elsewhere.example").expect("lookup").is_none());

    let mut options = ClientOptions::default(); // the docker config is used by default
    options.retry_delay = Duration::from_millis(50);
    let client = Client::new(options).expect("client");
    let image = Image::new(vec![Blob::layer(1000, 11)]);
    let r: Reference = registry.reference("helped:1").parse().expect("reference");
    for blob in image.blobs() {
        let outcome = client
            .push_blob(&r, &blob.desc, blob.bytes.clone(), &PushBlobOptions::default())
            .await
            .expect("push with the helper's credentials");
        assert_eq!(outcome, PushOutcome::Uploaded);
    }
    client.push_manifest(&r, &MediaType::ImageManifest, image.manifest.clone()).await.expect("push manifest");
    let inspect = registry.skopeo_inspect("helped:1", false).expect("skopeo --creds");
    assert_eq!(inspect["Digest"], image.manifest_digest().to_string());
    let calls = std::fs::read_to_string(bin.join("calls")).expect("helper calls");
    // Two lookups above, then one for the client: it caches per registry.
    assert_eq!(calls.lines().filter(|l| *l == format!("get {host}")).count(), 2, "{calls}");
}
