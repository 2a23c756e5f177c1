//! Types that keep credentials out of logs and error messages.

use std::fmt;

use reqwest::Url;
use serde::Deserialize;

/// A value that must never be printed: `Debug` and `Display` show `<redacted>`.
///
/// Anything holding a `Secret` (a token cache, an options struct, an error) is therefore safe to
/// `{:?}` without a hand-written `Debug` impl. Read the value with [`Secret::expose`].
#[derive(Clone, Default, Deserialize)]
#[serde(transparent)]
pub struct Secret<T>(T);

impl<T> Secret<T> {
    /// Wraps a value.
    pub fn new(value: T) -> Self {
        Self(value)
    }

    /// The wrapped value; call only where it is sent (a header), never where it is shown.
    pub fn expose(&self) -> &T {
        &self.0
    }
}

impl<T> From<T> for Secret<T> {
    fn from(value: T) -> Self {
        Self(value)
    }
}

impl<T> fmt::Debug for Secret<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

impl<T> fmt::Display for Secret<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

/// A URL whose `Display` and `Debug` mask the password (or a lone user name, which is often a
/// token) so it can go into errors.
#[derive(Clone, PartialEq, Eq)]
pub struct RedactedUrl(Box<Url>);

impl RedactedUrl {
    /// The full URL, credentials included.
    pub fn expose(&self) -> &Url {
        &self.0
    }

    fn masked(&self) -> Url {
        let mut url = (*self.0).clone();
        // set_username/set_password only fail for URLs that cannot have credentials, which
        // therefore have none to hide.
        if url.password().is_some() {
            let _ = url.set_password(Some("****"));
        } else if !url.username().is_empty() {
            let _ = url.set_username("****");
        }
        url
    }
}

impl From<Url> for RedactedUrl {
    fn from(url: Url) -> Self {
        Self(Box::new(url))
    }
}

impl From<&Url> for RedactedUrl {
    fn from(url: &Url) -> Self {
        Self(Box::new(url.clone()))
    }
}

impl fmt::Display for RedactedUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.masked(), f)
    }
}

impl fmt::Debug for RedactedUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RedactedUrl({:?})", self.masked().as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    macro_rules! masks {
        ($input:expr, $shown:expr) => {
            let url = RedactedUrl::from(Url::parse($input).expect("test URL"));
            assert_eq!(url.to_string(), $shown);
            assert!(!format!("{url:?}").contains("hunter2"));
        };
    }

    #[test]
    fn secret_redacts() {
        let s = Secret::new(String::from("hunter2"));
        assert_eq!(format!("{s} {s:?} {:?}", Some(&s)), "<redacted> <redacted> Some(<redacted>)");
        assert_eq!(s.expose(), "hunter2");
    }

    #[test]
    fn url_redacts() {
        masks!("https://user:hunter2@r.io/v2/", "https://user:****@r.io/v2/");
        masks!("https://hunter2@r.io/v2/", "https://****@r.io/v2/");
        masks!("http://127.0.0.1:5000/v2/a/blobs/x", "http://127.0.0.1:5000/v2/a/blobs/x");
    }
}
