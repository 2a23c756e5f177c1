//! Go's `time.Duration` text forms, which `HEALTHCHECK` flags use: parsing (`time.ParseDuration`)
//! and printing (`Duration.String`, shown in image history).

const NS: u128 = 1;
const US: u128 = 1_000;
const MS: u128 = 1_000_000;
const S: u128 = 1_000_000_000;

fn unit(u: &str) -> Option<u128> {
    Some(match u {
        "ns" => NS,
        "us" | "\u{b5}s" | "\u{3bc}s" => US,
        "ms" => MS,
        "s" => S,
        "m" => 60 * S,
        "h" => 3600 * S,
        _ => return None,
    })
}

/// `time.ParseDuration`: `[-+]?([0-9]*(\.[0-9]*)?[a-z]+)+`, or `0`. Nanoseconds.
pub(crate) fn parse_go_duration(orig: &str) -> Result<i64, String> {
    let invalid = || format!("time: invalid duration {}", crate::parser::go_quote(orig));
    let (neg, mut s) = match orig.as_bytes().first() {
        Some(b'-') => (true, &orig[1..]),
        Some(b'+') => (false, &orig[1..]),
        _ => (false, orig),
    };
    if s == "0" {
        return Ok(0);
    }
    if s.is_empty() {
        return Err(invalid());
    }
    let mut total: u128 = 0;
    while !s.is_empty() {
        if !s.starts_with(|c: char| c == '.' || c.is_ascii_digit()) {
            return Err(invalid());
        }
        let int_len = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
        let (int_digits, rest) = s.split_at(int_len);
        s = rest;
        let mut frac_digits = "";
        if let Some(rest) = s.strip_prefix('.') {
            let n = rest.find(|c: char| !c.is_ascii_digit()).unwrap_or(rest.len());
            frac_digits = &rest[..n];
            s = &rest[n..];
            if int_digits.is_empty() && frac_digits.is_empty() {
                return Err(invalid());
            }
        } else if int_digits.is_empty() {
            return Err(invalid());
        }
        let unit_len = s.find(|c: char| c == '.' || c.is_ascii_digit()).unwrap_or(s.len());
        if unit_len == 0 {
            return Err(format!("time: missing unit in duration {}", crate::parser::go_quote(orig)));
        }
        let (u, rest) = s.split_at(unit_len);
        s = rest;
        let Some(mult) = unit(u) else {
            return Err(format!(
                "time: unknown unit {} in duration {}",
                crate::parser::go_quote(u),
                crate::parser::go_quote(orig)
            ));
        };
        // Integer part; more than 2^63 overflows (as in Go).
        let mut v: u128 = 0;
        for d in int_digits.bytes() {
            v = v * 10 + u128::from(d - b'0');
            if v > 1 << 63 {
                return Err(invalid());
            }
        }
        let mut amount = v.checked_mul(mult).ok_or_else(invalid)?;
        // Fraction: Go keeps at most the digits that fit, then scales by the unit.
        let (mut f, mut scale) = (0u128, 1u128);
        for d in frac_digits.bytes() {
            if f > (1 << 63) / 10 {
                break;
            }
            f = f * 10 + u128::from(d - b'0');
            scale *= 10;
        }
        amount += f * mult / scale;
        total += amount;
        if total > 1 << 63 {
            return Err(invalid());
        }
    }
    if neg {
        Ok(i64::try_from(total).map_or(i64::MIN, |t| -t))
    } else {
        i64::try_from(total).map_err(|_| invalid())
    }
}

/// `fmtFrac`: `v / 10^prec` as the integer part and a `.123` fraction without trailing zeros.
fn frac(v: u128, prec: u32) -> (u128, String) {
    let p = 10u128.pow(prec);
    let f = v % p;
    if f == 0 {
        return (v / p, String::new());
    }
    let digits = format!("{f:0width$}", width = prec as usize);
    (v / p, format!(".{}", digits.trim_end_matches('0')))
}

/// `Duration.String`: `1h2m3.5s`, `1.5ms`, `500µs`, `0s`.
pub(crate) fn format_go_duration(d: i64) -> String {
    let neg = d < 0;
    let u = u128::from(d.unsigned_abs());
    let body = if u == 0 {
        return "0s".to_owned();
    } else if u < S {
        let (prec, unit) = if u < US {
            (0, "ns")
        } else if u < MS {
            (3, "\u{b5}s")
        } else {
            (6, "ms")
        };
        let (int, f) = frac(u, prec);
        format!("{int}{f}{unit}")
    } else {
        let (secs, f) = frac(u, 9);
        let (h, m, s) = (secs / 3600, secs / 60 % 60, secs % 60);
        match (h, m) {
            (0, 0) => format!("{s}{f}s"),
            (0, _) => format!("{m}m{s}{f}s"),
            _ => format!("{h}h{m}m{s}{f}s"),
        }
    };
    if neg {
        format!("-{body}")
    } else {
        body
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    macro_rules! parses {
        ($s:expr, $ns:expr) => {
            assert_eq!(parse_go_duration($s), Ok($ns), "{:?}", $s);
        };
    }

    #[test]
    fn parse() {
        parses!("0", 0);
        parses!("30s", 30_000_000_000);
        parses!("1m30s", 90_000_000_000);
        parses!("1.5h", 5_400_000_000_000);
        parses!(".5s", 500_000_000);
        parses!("5.s", 5_000_000_000);
        parses!("1ms", 1_000_000);
        parses!("100us", 100_000);
        parses!("100\u{b5}s", 100_000);
        parses!("-2s", -2_000_000_000);
        parses!("2h45m0.5s", 9_900_500_000_000);
        assert_eq!(parse_go_duration("").unwrap_err(), "time: invalid duration \"\"");
        assert_eq!(parse_go_duration("1").unwrap_err(), "time: missing unit in duration \"1\"");
        assert_eq!(parse_go_duration("1x").unwrap_err(), "time: unknown unit \"x\" in duration \"1x\"");
        assert!(parse_go_duration(".s").is_err());
        assert!(parse_go_duration("s").is_err());
        assert!(parse_go_duration("99999999999h").is_err());
    }

    #[test]
    fn format() {
        let cases: &[(i64, &str)] = &[
            (0, "0s"),
            (1, "1ns"),
            (1_100, "1.1\u{b5}s"),
            (2_200_000, "2.2ms"),
            (3_000_000_000, "3s"),
            (90_000_000_000, "1m30s"),
            (3_600_000_000_000, "1h0m0s"),
            (9_900_500_000_000, "2h45m0.5s"),
            (-1_500_000_000, "-1.5s"),
        ];
        for (ns, want) in cases {
            assert_eq!(format_go_duration(*ns), *want);
        }
    }
}
