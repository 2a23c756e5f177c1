//! Parsing of instruction values BuildKit validates: platforms, `EXPOSE` port specs, stop
//! signals, `--chmod` modes, `--chown` owners.

use rbuild_solver::ir::{Chown, Platform};

/// containerd's `platforms.Parse` + `Normalize` for the forms Dockerfiles use:
/// `os`, `os/arch`, `os/arch/variant`, with architecture aliases normalized.
pub(crate) fn parse_platform(s: &str, host: &Platform) -> Result<Platform, String> {
    let lower = s.to_lowercase();
    let parts: Vec<&str> = lower.split('/').collect();
    if parts.iter().any(|p| p.is_empty() || !p.chars().all(|c| c.is_ascii_alphanumeric() || "_-.".contains(c))) {
        return Err(format!("{s:?}: invalid platform format"));
    }
    let (os, arch, variant) = match parts.as_slice() {
        [one] if is_known_os(one) => ((*one).to_owned(), host.architecture.clone(), host.variant.clone()),
        [one] => ("linux".to_owned(), (*one).to_owned(), None),
        [os, arch] => ((*os).to_owned(), (*arch).to_owned(), None),
        [os, arch, variant] => ((*os).to_owned(), (*arch).to_owned(), Some((*variant).to_owned())),
        _ => return Err(format!("{s:?}: cannot parse platform with more than three parts")),
    };
    let (architecture, variant) = normalize_arch(&arch, variant);
    Ok(Platform { os: if os == "macos" { "darwin".to_owned() } else { os }, architecture, variant })
}

fn is_known_os(s: &str) -> bool {
    [
        "linux", "windows", "darwin", "macos", "freebsd", "netbsd", "openbsd", "solaris", "illumos", "aix", "android",
        "ios", "plan9", "js", "wasip1",
    ]
    .contains(&s)
}

fn normalize_arch(arch: &str, variant: Option<String>) -> (String, Option<String>) {
    let v = variant.as_deref();
    let (a, v): (&str, Option<&str>) = match arch {
        "i386" => ("386", None),
        "x86_64" | "x86-64" | "amd64" => ("amd64", if v == Some("v1") { None } else { v }),
        "aarch64" | "arm64" => ("arm64", if matches!(v, Some("8" | "v8")) { None } else { v }),
        "armhf" => ("arm", Some("v7")),
        "armel" => ("arm", Some("v6")),
        "arm" => ("arm", if v.is_none() { Some("v7") } else { v }),
        other => (other, v),
    };
    let v =
        v.map(|x| if x.len() == 1 && x.chars().all(|c| c.is_ascii_digit()) { format!("v{x}") } else { x.to_owned() });
    (a.to_owned(), v)
}

/// BuildKit's `parsePort`: `[ip:][hostPort:]port[-end][/proto]` → `"port/proto"` for each port.
pub(crate) fn parse_port_spec(raw: &str) -> Result<Vec<String>, String> {
    let parts: Vec<&str> = raw.split(':').collect();
    let (host_port, container) = match parts.as_slice() {
        [c] => ("", *c),
        [h, c] => (*h, *c),
        [.., h, c] => (*h, *c),
        [] => ("", ""),
    };
    let (port, proto) = container.split_once('/').unwrap_or((container, ""));
    if port.is_empty() {
        return Err(format!("invalid port: {raw:?}: no port specified"));
    }
    let proto = match proto.to_lowercase().as_str() {
        "" => "tcp".to_owned(),
        p @ ("tcp" | "udp" | "sctp") => p.to_owned(),
        _ => return Err(format!("invalid port: {raw:?}: invalid proto: {proto}")),
    };
    let (start, end) = port_range(port).map_err(|_| format!("invalid containerPort: {port}"))?;
    if !host_port.is_empty() {
        let (hs, he) = port_range(host_port).map_err(|_| format!("invalid hostPort: {host_port}"))?;
        if end - start != he - hs && end != start {
            return Err(format!("invalid ranges specified for container and host Ports: {port} and {host_port}"));
        }
    }
    Ok((start..=end).map(|p| format!("{p}/{proto}")).collect())
}

fn port_range(s: &str) -> Result<(u32, u32), ()> {
    let (start, end) = s.split_once('-').unwrap_or((s, s));
    let parse = |p: &str| -> Result<u32, ()> {
        let n: u32 = p.parse().map_err(|_| ())?;
        if n > 65535 {
            return Err(());
        }
        Ok(n)
    };
    let a = parse(start)?;
    let b = if end == start { a } else { parse(end)? };
    if b < a {
        return Err(());
    }
    Ok((a, b))
}

const SIGNALS: [&str; 33] = [
    "ABRT", "ALRM", "BUS", "CHLD", "CLD", "CONT", "FPE", "HUP", "ILL", "INT", "IO", "IOT", "KILL", "PIPE", "POLL",
    "PROF", "PWR", "QUIT", "SEGV", "STKFLT", "STOP", "SYS", "TERM", "TRAP", "TSTP", "TTIN", "TTOU", "URG", "USR1",
    "USR2", "VTALRM", "WINCH", "XCPU",
];

/// moby's `signal.ParseSignal` on Linux: a non-zero number, a name with or without `SIG`, or
/// `RTMIN[+n]`/`RTMAX[-n]`.
pub(crate) fn check_signal(raw: &str) -> Result<(), String> {
    if let Ok(n) = raw.parse::<i64>() {
        return if n == 0 { Err(format!("Invalid signal: {raw}")) } else { Ok(()) };
    }
    let upper = raw.to_uppercase();
    let name = upper.strip_prefix("SIG").unwrap_or(&upper);
    let rt = |prefix: &str, sep: char| {
        name.strip_prefix(prefix).is_some_and(|rest| {
            rest.is_empty()
                || rest.strip_prefix(sep).and_then(|n| n.parse::<u8>().ok()).is_some_and(|n| (1..=15).contains(&n))
        })
    };
    if SIGNALS.contains(&name) || name == "XFSZ" || rt("RTMIN", '+') || rt("RTMAX", '-') {
        Ok(())
    } else {
        Err(format!("Invalid signal: {raw}"))
    }
}

/// `--chmod`: an octal mode up to 07777.
pub(crate) enum Mode {
    /// Numeric permission bits.
    Octal(u32),
    /// `u+x`-style mode, which the IR cannot express yet.
    Symbolic,
}

pub(crate) fn parse_chmod(raw: &str) -> Result<Mode, String> {
    let bad = || format!("invalid chmod parameter: '{raw}'. it should be octal string and between 0 and 07777");
    if !raw.is_empty() && raw.chars().all(|c| c.is_ascii_digit()) {
        let n = u32::from_str_radix(raw, 8).map_err(|_| bad())?;
        return if n > 0o7777 { Err(bad()) } else { Ok(Mode::Octal(n)) };
    }
    let symbolic = raw.split(',').all(|clause| {
        let who_end = clause.find(|c: char| !"ugoa".contains(c)).unwrap_or(clause.len());
        let ops = &clause[who_end..];
        !ops.is_empty() && ops.starts_with(['+', '-', '=']) && ops.chars().all(|c| "+-=rwxXstugo".contains(c))
    });
    if symbolic {
        Ok(Mode::Symbolic)
    } else {
        Err(bad())
    }
}

/// `user[:group]` as the IR's owner.
pub(crate) fn parse_chown(raw: &str) -> Chown {
    match raw.split_once(':') {
        Some((u, g)) => Chown { user: u.to_owned(), group: Some(g.to_owned()) },
        None => Chown { user: raw.to_owned(), group: None },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn host() -> Platform {
        Platform { os: "linux".into(), architecture: "amd64".into(), variant: None }
    }

    fn plat(s: &str) -> String {
        parse_platform(s, &host()).map(|p| p.to_string()).unwrap_or_else(|e| format!("error {e}"))
    }

    #[test]
    fn platforms() {
        assert_eq!(plat("linux/amd64"), "linux/amd64");
        assert_eq!(plat("linux/arm64/v8"), "linux/arm64");
        assert_eq!(plat("Linux/AArch64"), "linux/arm64");
        assert_eq!(plat("linux/arm"), "linux/arm/v7");
        assert_eq!(plat("linux/armhf"), "linux/arm/v7");
        assert_eq!(plat("linux/arm/6"), "linux/arm/v6");
        assert_eq!(plat("linux"), "linux/amd64");
        assert_eq!(plat("arm64"), "linux/arm64");
        assert!(plat("linux//x").starts_with("error"));
        assert!(plat("a/b/c/d").starts_with("error"));
    }

    #[test]
    fn ports() {
        assert_eq!(parse_port_spec("80").unwrap(), ["80/tcp"]);
        assert_eq!(parse_port_spec("53/UDP").unwrap(), ["53/udp"]);
        assert_eq!(parse_port_spec("8000-8002").unwrap(), ["8000/tcp", "8001/tcp", "8002/tcp"]);
        assert_eq!(parse_port_spec("127.0.0.1:80:8080").unwrap(), ["8080/tcp"]);
        assert!(parse_port_spec("x").is_err());
        assert!(parse_port_spec("70000").is_err());
        assert!(parse_port_spec("80/foo").is_err());
        assert!(parse_port_spec("9-8").is_err());
    }

    #[test]
    fn signals_and_modes() {
        assert!(check_signal("SIGTERM").is_ok());
        assert!(check_signal("kill").is_ok());
        assert!(check_signal("9").is_ok());
        assert!(check_signal("SIGRTMIN+3").is_ok());
        assert!(check_signal("0").is_err());
        assert!(check_signal("SIGFOO").is_err());
        assert!(matches!(parse_chmod("755"), Ok(Mode::Octal(0o755))));
        assert!(matches!(parse_chmod("0644"), Ok(Mode::Octal(0o644))));
        assert!(matches!(parse_chmod("u+x,g-w"), Ok(Mode::Symbolic)));
        assert!(parse_chmod("17777").is_err());
        assert!(parse_chmod("789").is_err());
        assert!(parse_chmod("+755").is_err());
        assert_eq!(parse_chown("a:b"), Chown { user: "a".into(), group: Some("b".into()) });
    }
}
