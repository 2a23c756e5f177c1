//! "Did you mean ...?" suggestions (BuildKit's `util/suggest`): the closest option within an
//! edit distance of 2.

/// Levenshtein distance over chars.
fn distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    let mut cur = vec![0; b.len() + 1];
    for (i, ca) in a.chars().enumerate() {
        cur[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let cost = usize::from(ca != *cb);
            cur[j + 1] = (prev[j] + cost).min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        std::mem::swap(&mut prev, &mut cur);
    }
    prev[b.len()]
}

/// The option closest to `value` (distance < 3), in `value`'s case when comparing
/// case-insensitively. `None` on an exact match or when nothing is close.
pub(crate) fn did_you_mean(value: &str, options: &[&str], case_sensitive: bool) -> Option<String> {
    let norm = |s: &str| if case_sensitive { s.to_owned() } else { s.to_lowercase() };
    let v = norm(value);
    let mut best: Option<(usize, String)> = None;
    for opt in options {
        let o = norm(opt);
        if o == v {
            return None;
        }
        let d = distance(&v, &o);
        if d < 3 && best.as_ref().is_none_or(|(bd, _)| d < *bd) {
            best = Some((d, o));
        }
    }
    let (_, m) = best?;
    if case_sensitive || value == value.to_lowercase() {
        Some(m)
    } else if value == value.to_uppercase() {
        Some(m.to_uppercase())
    } else {
        Some(m)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suggestions() {
        assert_eq!(did_you_mean("COPPY", &["copy", "cmd"], false).as_deref(), Some("COPY"));
        assert_eq!(did_you_mean("coppy", &["copy"], false).as_deref(), Some("copy"));
        assert_eq!(did_you_mean("xyzzy", &["copy"], false), None);
        assert_eq!(did_you_mean("copy", &["copy"], false), None);
        assert_eq!(distance("kitten", "sitting"), 3);
    }
}
