//! `docker login`'s check: whether a registry accepts the credentials we have for it.

use reqwest::Url;

use crate::auth::Access;
use crate::client::{status_error, Client};
use crate::error::{Error, Result};
use crate::reference::Reference;

impl Client {
    /// Asks `registry` (`host[:port]`, `docker.io` for Docker Hub) for its API root with the
    /// credentials this client has for it, answering its challenge as for any request: Basic
    /// credentials, or a token without scopes from its token service (what `docker login`
    /// does). `Ok` when it accepts them.
    ///
    /// # Errors
    ///
    /// [`Error::Unauthorized`] when it refuses them; transport, TLS and status errors.
    pub async fn check_login(&self, registry: &str) -> Result<()> {
        // Any repository gives the registry's host; Login asks for no scope in it.
        let text = format!("{registry}/login-check:latest");
        let reference: Reference = text.parse()?;
        let scheme = self.scheme(reference.registry());
        let text = format!("{scheme}://{}/v2/", reference.api_host());
        let url = Url::parse(&text).map_err(|source| Error::InvalidUrl { url: text, source })?;
        let response = self.send(&reference, Access::Login, &url, |http| http.get(url.clone())).await?;
        if response.status().is_success() {
            Ok(())
        } else {
            Err(status_error(response, &url).await)
        }
    }
}
