//! Where the lexer looks variables up.

use std::collections::{BTreeMap, HashMap};
use std::hash::BuildHasher;

/// A set of variables the lexer can expand.
///
/// Names are compared exactly (case-sensitively), as BuildKit does on Unix. A variable that
/// is present with an empty value is *set*: `${V-x}` gives `""`, `${V:-x}` gives `x`.
///
/// Implemented for maps, for `(name, value)` pairs and for `"NAME=VALUE"` strings (an entry
/// without `=` sets NAME to the empty string, like BuildKit's `EnvsFromSlice`). For the
/// list forms the last entry for a name wins.
pub trait Env {
    /// The value of `name`, or `None` if it is not set.
    fn get(&self, name: &str) -> Option<&str>;
}

impl<E: Env + ?Sized> Env for &E {
    fn get(&self, name: &str) -> Option<&str> {
        (**self).get(name)
    }
}

impl Env for BTreeMap<String, String> {
    fn get(&self, name: &str) -> Option<&str> {
        BTreeMap::get(self, name).map(String::as_str)
    }
}

impl<S: BuildHasher> Env for HashMap<String, String, S> {
    fn get(&self, name: &str) -> Option<&str> {
        HashMap::get(self, name).map(String::as_str)
    }
}

/// Looks `name` up in `NAME=VALUE` entries, last one winning.
fn lookup_assignments<'a, I>(entries: I, name: &str) -> Option<&'a str>
where
    I: DoubleEndedIterator<Item = &'a str>,
{
    entries.rev().find_map(|entry| {
        let (key, value) = entry.split_once('=').unwrap_or((entry, ""));
        (key == name).then_some(value)
    })
}

impl Env for [String] {
    fn get(&self, name: &str) -> Option<&str> {
        lookup_assignments(self.iter().map(String::as_str), name)
    }
}

impl Env for Vec<String> {
    fn get(&self, name: &str) -> Option<&str> {
        Env::get(self.as_slice(), name)
    }
}

impl Env for [&str] {
    fn get(&self, name: &str) -> Option<&str> {
        lookup_assignments(self.iter().copied(), name)
    }
}

impl Env for Vec<&str> {
    fn get(&self, name: &str) -> Option<&str> {
        Env::get(self.as_slice(), name)
    }
}

impl Env for [(String, String)] {
    fn get(&self, name: &str) -> Option<&str> {
        self.iter().rev().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }
}

impl Env for Vec<(String, String)> {
    fn get(&self, name: &str) -> Option<&str> {
        Env::get(self.as_slice(), name)
    }
}

impl Env for [(&str, &str)] {
    fn get(&self, name: &str) -> Option<&str> {
        self.iter().rev().find(|(k, _)| *k == name).map(|(_, v)| *v)
    }
}

impl Env for Vec<(&str, &str)> {
    fn get(&self, name: &str) -> Option<&str> {
        Env::get(self.as_slice(), name)
    }
}

#[cfg(test)]
mod tests {
    use super::Env;
    use std::collections::{BTreeMap, HashMap};

    #[test]
    fn assignment_lists() {
        let env: Vec<String> =
            ["foo=bar", "car=hat", "car=bike", "bare", "eq=a=b"].iter().map(|s| s.to_string()).collect();
        assert_eq!(Env::get(&env, "foo"), Some("bar"));
        assert_eq!(Env::get(&env, "car"), Some("bike"));
        assert_eq!(Env::get(&env, "bare"), Some(""));
        assert_eq!(Env::get(&env, "eq"), Some("a=b"));
        assert_eq!(Env::get(&env, "nope"), None);
        assert_eq!(Env::get(&env, ""), None);
        let slice: &[&str] = &["A=1", "A=2"];
        assert_eq!(Env::get(slice, "A"), Some("2"));
    }

    #[test]
    fn pairs_and_maps() {
        let pairs = vec![("A".to_string(), "1".to_string()), ("A".to_string(), "2".to_string())];
        assert_eq!(Env::get(&pairs, "A"), Some("2"));
        let borrowed: &[(String, String)] = &pairs;
        assert_eq!(Env::get(&borrowed, "A"), Some("2"));
        let strs = vec![("B", ""), ("C", "x")];
        assert_eq!(Env::get(&strs, "B"), Some(""));
        let map: BTreeMap<String, String> = [("K".into(), "v".into())].into();
        assert_eq!(Env::get(&map, "K"), Some("v"));
        assert_eq!(Env::get(&map, "k"), None);
        let hmap: HashMap<String, String> = [("K".into(), "v".into())].into();
        assert_eq!(Env::get(&hmap, "K"), Some("v"));
    }
}
