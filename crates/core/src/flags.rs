//! Message flags as mailshift carries them from one server to the other.
//!
//! Policy: system flags (`\Seen`, `\Answered`, `\Flagged`, `\Draft`, `\Deleted`) and
//! keywords (`$Forwarded`, `$Label1`, `Work`, ...) are copied as they are. `\Recent` is
//! session state the server owns and is never copied. A message flagged `\Deleted` but not
//! expunged on the source is copied *with* `\Deleted`: the user's mail client decides, as it
//! would have on the old server, whether to expunge it.

use std::collections::BTreeSet;
use std::fmt;

/// A normalised, ordered set of flags (no `\Recent`, system flags in canonical case).
///
/// A sorted boxed-slice-per-flag vector rather than a `BTreeSet`: a folder listing holds
/// one per message, and a B-tree node costs ~300 bytes even for a single `\Seen` (a
/// 100,000-message folder would spend ~30 MB on flag sets alone).
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct FlagSet(Vec<Box<str>>);

const SYSTEM: [&str; 5] = ["\\Answered", "\\Deleted", "\\Draft", "\\Flagged", "\\Seen"];

impl FlagSet {
    pub fn new() -> Self {
        FlagSet::default()
    }

    /// Adds one flag as a server spelled it; ignores `\Recent` and anything that is not a
    /// valid flag atom (which no server could store anyway).
    pub fn insert(&mut self, flag: &str) {
        if let Some(name) = flag.strip_prefix('\\') {
            if name.eq_ignore_ascii_case("recent") || name == "*" {
                return;
            }
            if let Some(sys) = SYSTEM.iter().find(|s| s[1..].eq_ignore_ascii_case(name)) {
                self.add(sys);
            }
            // Unknown backslash flags are server extensions; they cannot be APPENDed.
            return;
        }
        if is_atom(flag) {
            self.add(flag);
        }
    }

    fn add(&mut self, flag: &str) {
        if let Err(at) = self.0.binary_search_by(|f| (**f).cmp(flag)) {
            self.0.insert(at, flag.into());
        }
    }

    pub fn contains(&self, flag: &str) -> bool {
        self.0.binary_search_by(|f| (**f).cmp(flag)).is_ok()
    }

    pub fn iter(&self) -> impl Iterator<Item = &str> {
        self.0.iter().map(|f| &**f)
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// The keywords (non-system flags).
    pub fn keywords(&self) -> impl Iterator<Item = &str> {
        self.iter().filter(|f| !f.starts_with('\\'))
    }

    /// Drops keywords a destination cannot store (its PERMANENTFLAGS lack `\*` and do not
    /// list the keyword); returns the dropped ones so they can be reported.
    pub fn restrict_to(&mut self, permanent: &PermanentFlags) -> Vec<String> {
        if permanent.any_keyword {
            return Vec::new();
        }
        let dropped: Vec<String> = self
            .keywords()
            .filter(|k| !permanent.keywords.contains(*k))
            .map(str::to_string)
            .collect();
        self.0.retain(|f| !dropped.iter().any(|d| **d == **f));
        dropped
    }

    /// `(\Seen $Forwarded)`, the form APPEND and STORE take.
    pub fn to_imap_list(&self) -> String {
        let mut s = String::from("(");
        for (i, f) in self.0.iter().enumerate() {
            if i > 0 {
                s.push(' ');
            }
            s.push_str(f);
        }
        s.push(')');
        s
    }

    /// Space-separated, for storage.
    pub fn to_storage(&self) -> String {
        self.iter().collect::<Vec<_>>().join(" ")
    }

    pub fn from_storage(s: &str) -> Self {
        s.split_ascii_whitespace().collect()
    }
}

impl<'a> FromIterator<&'a str> for FlagSet {
    fn from_iter<T: IntoIterator<Item = &'a str>>(iter: T) -> Self {
        let mut set = FlagSet::new();
        for f in iter {
            set.insert(f);
        }
        set
    }
}

impl fmt::Display for FlagSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_imap_list())
    }
}

/// What a selected destination folder says it can store (`PERMANENTFLAGS`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PermanentFlags {
    /// `\*`: any new keyword may be created.
    pub any_keyword: bool,
    pub keywords: BTreeSet<String>,
}

impl PermanentFlags {
    /// A server that did not send PERMANENTFLAGS is assumed to store everything.
    pub fn unrestricted() -> Self {
        PermanentFlags {
            any_keyword: true,
            keywords: BTreeSet::new(),
        }
    }
}

/// RFC 3501 atom: no specials, no controls, no space.
fn is_atom(s: &str) -> bool {
    !s.is_empty()
        && s.bytes().all(|b| {
            b > 0x20
                && b < 0x7f
                && !matches!(b, b'(' | b')' | b'{' | b'%' | b'*' | b'"' | b'\\' | b']')
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalises_and_drops_recent() {
        let f: FlagSet = [
            "\\seen",
            "\\Recent",
            "$Forwarded",
            "Work",
            "\\SEEN",
            "\\X-Odd",
            "bad word",
        ]
        .into_iter()
        .collect();
        assert_eq!(f.to_imap_list(), "($Forwarded Work \\Seen)");
        assert_eq!(FlagSet::from_storage(&f.to_storage()), f);
    }

    #[test]
    fn restricts_keywords() {
        let mut f: FlagSet = ["\\Seen", "$Label1", "Work"].into_iter().collect();
        let perm = PermanentFlags {
            any_keyword: false,
            keywords: ["Work".to_string()].into_iter().collect(),
        };
        assert_eq!(f.restrict_to(&perm), vec!["$Label1".to_string()]);
        assert_eq!(f.to_imap_list(), "(Work \\Seen)");
    }
}
