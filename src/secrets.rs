//! `--secret` and `--ssh` flags (docker buildx syntax). Secret values are read here and handed to
//! the worker wrapped in a redacting type; they never reach the graph, a key or a log.

use std::collections::HashMap;
use std::path::PathBuf;

use anyhow::{Context, Result};
use rbuild_worker::Secret;

use crate::render::UserError;

fn fields(spec: &str) -> HashMap<String, String> {
    spec.split(',')
        .map(|f| {
            let (k, v) = f.split_once('=').unwrap_or((f, ""));
            (k.trim().to_owned(), v.trim().to_owned())
        })
        .collect()
}

/// Parses `--secret` values: `id=X,src=FILE` (also `source=`), `id=X,env=VAR`, or `id=X` alone,
/// which takes the environment variable X when set and else a file named X (as BuildKit does).
pub fn parse_secrets(specs: &[String]) -> Result<HashMap<String, Secret>> {
    let mut out = HashMap::new();
    for spec in specs {
        let f = fields(spec);
        if let Some(key) = f.keys().find(|k| !["id", "src", "source", "env", "type"].contains(&k.as_str())) {
            return Err(UserError(format!(
                "--secret {spec:?}: unknown key {key:?} (use id=, src= or env=, e.g. id=mytoken,src=token.txt)"
            ))
            .into());
        }
        let id = f
            .get("id")
            .filter(|v| !v.is_empty())
            .cloned()
            .ok_or_else(|| UserError(format!("--secret {spec:?} has no id= (e.g. id=mytoken,src=token.txt)")))?;
        let src = f.get("src").or_else(|| f.get("source")).filter(|v| !v.is_empty());
        let env = f.get("env").filter(|v| !v.is_empty());
        let value = match (src, env) {
            (Some(path), _) => std::fs::read(path).with_context(|| format!("reading secret {id:?} from {path}"))?,
            (None, Some(var)) => std::env::var_os(var)
                .ok_or_else(|| UserError(format!("secret {id:?}: environment variable {var} is not set")))?
                .into_encoded_bytes(),
            (None, None) => match std::env::var_os(&id) {
                Some(v) => v.into_encoded_bytes(),
                None => std::fs::read(&id).map_err(|e| {
                    UserError(format!("secret {id:?}: no environment variable {id} and no file {id} ({e})"))
                })?,
            },
        };
        out.insert(id, Secret::new(value));
    }
    Ok(out)
}

/// Parses `--ssh` values: `default` (from `$SSH_AUTH_SOCK`) or `ID=SOCKET`.
pub fn parse_ssh(specs: &[String]) -> Result<HashMap<String, PathBuf>> {
    let mut out = HashMap::new();
    for spec in specs {
        let (id, sock) = match spec.split_once('=') {
            Some((id, path)) => (id.to_owned(), PathBuf::from(path)),
            None => {
                let sock = std::env::var_os("SSH_AUTH_SOCK").ok_or_else(|| {
                    UserError(format!("--ssh {spec}: SSH_AUTH_SOCK is not set; pass {spec}=/path/to/agent.sock"))
                })?;
                (spec.clone(), PathBuf::from(sock))
            }
        };
        // Checked now, as docker buildx does, rather than when a step first asks for it.
        if let Err(e) = std::fs::metadata(&sock) {
            return Err(UserError(format!("--ssh {spec}: cannot use {}: {e}", sock.display())).into());
        }
        out.insert(id, sock);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_sources() {
        let t = tempfile::tempdir().unwrap();
        let file = t.path().join("tok");
        std::fs::write(&file, "s3cr3t").unwrap();
        let s = parse_secrets(&[format!("id=a,src={}", file.display())]).unwrap();
        assert_eq!(s["a"].expose(), b"s3cr3t");
        std::env::set_var("RBUILD_TEST_SECRET_ENV", "fromenv");
        let s = parse_secrets(&["id=b,env=RBUILD_TEST_SECRET_ENV".into(), "id=RBUILD_TEST_SECRET_ENV".into()]).unwrap();
        assert_eq!(s["b"].expose(), b"fromenv");
        assert_eq!(s["RBUILD_TEST_SECRET_ENV"].expose(), b"fromenv");
        assert!(parse_secrets(&["src=x".into()]).is_err());
        let unknown = parse_secrets(&[format!("id=a,src={},colour=red", file.display())]).unwrap_err();
        assert!(unknown.to_string().contains("\"colour\""), "{unknown}");
        let typed = parse_secrets(&[format!("type=file,id=a,source={}", file.display())]).unwrap();
        assert_eq!(typed["a"].expose(), b"s3cr3t");
        assert!(!format!("{:?}", s["b"]).contains("fromenv"));
    }

    #[test]
    fn ssh_specs() {
        let t = tempfile::tempdir().unwrap();
        let sock = t.path().join("agent.sock");
        std::fs::write(&sock, "").unwrap();
        let s = parse_ssh(&[format!("default={}", sock.display())]).unwrap();
        assert_eq!(s["default"], sock);
        let missing = parse_ssh(&["default=/no/such/agent.sock".into()]).unwrap_err();
        assert!(missing.to_string().contains("/no/such/agent.sock"), "{missing}");
    }
}
