//! Whether a string is an image reference Docker accepts (`distribution/reference`'s
//! `ParseNormalizedNamed` grammar), for `InvalidDefaultArgInFrom`.
//!
//! ```text
//! reference  := name [ ":" tag ] [ "@" digest ]
//! name       := [ domain "/" ] path-component [ "/" path-component ]*
//! domain     := host [ ":" port ]          (the first component, when it has '.' or ':',
//!                                           is "localhost", or has uppercase letters)
//! path-component := [a-z0-9]+ ( ( "." | "_" | "__" | "-"+ ) [a-z0-9]+ )*
//! tag        := [A-Za-z0-9_] [A-Za-z0-9_.-]{0,127}
//! digest     := algorithm ":" hex{32,}
//! ```

const NAME_TOTAL_MAX: usize = 255;

/// True when `s` parses as a normalized image reference.
pub(crate) fn is_valid_reference(s: &str) -> bool {
    if s.is_empty() || (s.len() == 64 && s.chars().all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase())) {
        return false;
    }
    let (rest, digest) = match s.split_once('@') {
        Some((r, d)) => (r, Some(d)),
        None => (s, None),
    };
    if digest.is_some_and(|d| !is_digest(d)) {
        return false;
    }
    // A tag is after the last ':' that comes after the last '/'.
    let slash = rest.rfind('/').map_or(0, |i| i + 1);
    let (name, tag) = match rest[slash..].rfind(':') {
        Some(i) => (&rest[..slash + i], Some(&rest[slash + i + 1..])),
        None => (rest, None),
    };
    if tag.is_some_and(|t| !is_tag(t)) {
        return false;
    }
    if name.is_empty() || name.len() > NAME_TOTAL_MAX {
        return false;
    }
    let (domain, path) = match name.split_once('/') {
        Some((d, p)) if d.contains(['.', ':']) || d == "localhost" || d.chars().any(|c| c.is_ascii_uppercase()) => {
            (Some(d), p)
        }
        _ => (None, name),
    };
    if domain.is_some_and(|d| !is_domain(d)) {
        return false;
    }
    !path.is_empty() && path.split('/').all(is_path_component)
}

fn is_alnum_lower(c: char) -> bool {
    c.is_ascii_lowercase() || c.is_ascii_digit()
}

fn is_path_component(p: &str) -> bool {
    let b = p.as_bytes();
    let mut i = 0;
    let run = |i: &mut usize| {
        let start = *i;
        while b.get(*i).is_some_and(|c| is_alnum_lower(char::from(*c))) {
            *i += 1;
        }
        *i > start
    };
    if !run(&mut i) {
        return false;
    }
    while i < b.len() {
        match b.get(i) {
            Some(b'.') => i += 1,
            Some(b'_') => {
                i += 1;
                if b.get(i) == Some(&b'_') {
                    i += 1;
                }
            }
            Some(b'-') => {
                while b.get(i) == Some(&b'-') {
                    i += 1;
                }
            }
            _ => return false,
        }
        if !run(&mut i) {
            return false;
        }
    }
    true
}

fn is_tag(t: &str) -> bool {
    let mut chars = t.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphanumeric() || c == '_')
        && t.len() <= 128
        && chars.all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c))
}

fn is_domain(d: &str) -> bool {
    let (host, port) = match d.strip_prefix('[') {
        Some(v6) => match v6.split_once(']') {
            Some((addr, "")) => return is_ipv6(addr),
            Some((addr, rest)) => match rest.strip_prefix(':') {
                Some(p) if is_ipv6(addr) => ("", Some(p)),
                _ => return false,
            },
            None => return false,
        },
        None => match d.split_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (d, None),
        },
    };
    if port.is_some_and(|p| p.is_empty() || !p.chars().all(|c| c.is_ascii_digit())) {
        return false;
    }
    if d.starts_with('[') {
        return true;
    }
    !host.is_empty()
        && host.split('.').all(|part| {
            let b = part.as_bytes();
            !b.is_empty()
                && b.iter().all(|c| c.is_ascii_alphanumeric() || *c == b'-')
                && b.first().is_some_and(u8::is_ascii_alphanumeric)
                && b.last().is_some_and(u8::is_ascii_alphanumeric)
        })
}

fn is_ipv6(addr: &str) -> bool {
    !addr.is_empty() && addr.chars().all(|c| c.is_ascii_hexdigit() || c == ':')
}

fn is_digest(d: &str) -> bool {
    let Some((alg, hex)) = d.split_once(':') else { return false };
    let alg_ok = alg.split(['+', '.', '_', '-']).all(|part| {
        let mut c = part.chars();
        c.next().is_some_and(|f| f.is_ascii_alphabetic()) && c.all(|x| x.is_ascii_alphanumeric())
    });
    alg_ok && hex.len() >= 32 && hex.chars().all(|c| c.is_ascii_hexdigit())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references() {
        for ok in [
            "busybox",
            "scratch",
            "busybox:latest",
            "busybox:stable-musl",
            "library/busybox",
            "docker.io/library/busybox:1.36",
            "localhost:5000/a/b_c__d-e.f:tag",
            "127.0.0.1:5000/x@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
            "Registry.Example/x",
            "[::1]:5000/x",
            "[::1]/x",
        ] {
            assert!(is_valid_reference(ok), "{ok}");
        }
        for bad in [
            "",
            "busybox:",
            ":latest",
            "Busybox",
            "busy box",
            "a//b",
            "a/",
            "-a",
            "a-",
            "a..b",
            "a___b",
            "x@sha256:short",
            "x:-tag",
            "host:port/x",
            "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
        ] {
            assert!(!is_valid_reference(bad), "{bad}");
        }
    }
}
