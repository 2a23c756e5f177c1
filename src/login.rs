//! `rbuild login` / `rbuild logout`: credentials in docker's config.json, checked with the
//! registry first, as `docker login` does.

use std::io::{BufRead, IsTerminal, Read, Write};

use anyhow::{Context, Result};
use rbuild_registry::{Client, ClientOptions, Credentials, DockerConfig, Secret};

use crate::cli::LoginArgs;
use crate::render::UserError;

/// `https://index.docker.io/v1/`, `index.docker.io`, `registry-1.docker.io`, none → `docker.io`;
/// `https://reg.example:5000/` → `reg.example:5000`.
pub fn registry_name(server: Option<&str>) -> Result<String> {
    let Some(server) = server.map(str::trim).filter(|s| !s.is_empty()) else {
        return Ok(rbuild_registry::DOCKER_HUB.to_owned());
    };
    let bare = server.strip_prefix("https://").or_else(|| server.strip_prefix("http://")).unwrap_or(server);
    let host = bare.split('/').next().unwrap_or(bare).to_ascii_lowercase();
    if host.is_empty() || host.contains(|c: char| c.is_whitespace() || c == '@') {
        return Err(
            UserError(format!("invalid registry {server:?}: give host[:port], e.g. registry.example:5000")).into()
        );
    }
    Ok(match host.as_str() {
        "index.docker.io" | "registry-1.docker.io" | "docker.io" => rbuild_registry::DOCKER_HUB.to_owned(),
        _ => host,
    })
}

/// One line from `input`, without its line ending.
fn read_line(input: &mut impl BufRead) -> Result<String> {
    let mut line = String::new();
    input.read_line(&mut line).context("reading standard input")?;
    Ok(line.trim_end_matches(['\n', '\r']).to_owned())
}

/// Asks for the password on the terminal with echo off.
fn prompt_password() -> Result<String> {
    use nix::sys::termios::{tcgetattr, tcsetattr, LocalFlags, SetArg};
    let stdin = std::io::stdin();
    eprint!("Password: ");
    let _ = std::io::stderr().flush();
    let saved = tcgetattr(&stdin).context("reading the terminal's settings")?;
    let mut quiet = saved.clone();
    quiet.local_flags.remove(LocalFlags::ECHO);
    tcsetattr(&stdin, SetArg::TCSANOW, &quiet).context("turning terminal echo off")?;
    let line = read_line(&mut stdin.lock());
    let _ = tcsetattr(&stdin, SetArg::TCSANOW, &saved);
    eprintln!();
    line
}

/// `rbuild login`.
#[allow(clippy::print_stdout)]
pub async fn login(args: LoginArgs) -> Result<()> {
    let registry = registry_name(args.server.as_deref())?;
    let stdin = std::io::stdin();
    let interactive = stdin.is_terminal();
    let username = match args.username.filter(|u| !u.is_empty()) {
        Some(u) => u,
        None if interactive && !args.password_stdin => {
            eprint!("Username: ");
            let _ = std::io::stderr().flush();
            read_line(&mut stdin.lock())?
        }
        None => return Err(UserError("rbuild login needs a user name: pass --username".into()).into()),
    };
    let password = match (args.password, args.password_stdin) {
        (Some(_), true) => {
            return Err(UserError("--password and --password-stdin are mutually exclusive".into()).into());
        }
        (Some(p), false) => {
            eprintln!("WARNING! Using --password via the CLI is insecure. Use --password-stdin.");
            p
        }
        (None, true) => {
            let mut all = String::new();
            stdin.lock().read_to_string(&mut all).context("reading the password from standard input")?;
            all.trim_end_matches(['\n', '\r']).to_owned()
        }
        (None, false) if interactive => prompt_password()?,
        (None, false) => {
            return Err(UserError("rbuild login needs a password: pipe it to --password-stdin".into()).into())
        }
    };
    if username.is_empty() || password.is_empty() {
        return Err(UserError("rbuild login: the user name and password must not be empty".into()).into());
    }
    let password = Secret::new(password);

    let mut options = ClientOptions::default();
    options.insecure_hosts.extend(args.insecure_registries.iter().cloned());
    options.use_docker_config = false;
    options.credentials.insert(registry.clone(), Credentials::basic(username.clone(), password.expose().clone()));
    let client = Client::new(options).context("creating the registry client")?;
    client.check_login(&registry).await.map_err(|e| match e {
        rbuild_registry::Error::Unauthorized { .. } => anyhow::Error::new(UserError(format!(
            "login to {registry} failed: {e} (check the user name and password or token)"
        ))),
        other => anyhow::Error::new(other).context(format!("logging in to {registry}")),
    })?;
    let path = rbuild_registry::store_login(&registry, &username, &password)
        .with_context(|| format!("keeping the credentials for {registry}"))?;
    eprintln!("credentials for {registry} kept in {} (unencrypted)", path.display());
    println!("Login Succeeded");
    Ok(())
}

/// `rbuild logout`.
#[allow(clippy::print_stdout)]
pub fn logout(server: Option<&str>) -> Result<()> {
    let registry = registry_name(server)?;
    let path = DockerConfig::default_path()
        .ok_or_else(|| UserError("no docker config location: set DOCKER_CONFIG or HOME".into()))?;
    if rbuild_registry::remove_login_at(&path, &registry).with_context(|| format!("updating {}", path.display()))? {
        println!("Removing login credentials for {registry}");
    } else {
        println!("Not logged in to {registry}");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registry_names_like_docker_login() {
        let n = |s: Option<&str>| registry_name(s).unwrap();
        assert_eq!(n(None), "docker.io");
        assert_eq!(n(Some("https://index.docker.io/v1/")), "docker.io");
        assert_eq!(n(Some("registry-1.docker.io")), "docker.io");
        assert_eq!(n(Some("https://Reg.Example:5000/")), "reg.example:5000");
        assert_eq!(n(Some("127.0.0.1:5000")), "127.0.0.1:5000");
        assert!(registry_name(Some("bad host")).is_err());
        assert!(registry_name(Some("user@host")).is_err());
    }
}
