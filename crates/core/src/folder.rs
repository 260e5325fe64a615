//! Folder names and the mapping from source folders to destination folders.
//!
//! Servers name folders in modified UTF-7 (RFC 3501 §5.1.3) joined by their own hierarchy
//! delimiter (`.` or `/`). mailshift works on [`FolderPath`], a list of Unicode components,
//! so a `.`-delimited source maps onto a `/`-delimited destination without guessing. The
//! mapping rules, in order: `--exclude` regexes, `--map` rules (longest prefix wins),
//! special-use folders (the source's `\Sent` goes to the destination's `\Sent`, whatever
//! either is called), and otherwise the same path.

use crate::{Error, Result};
use regex::Regex;
use std::collections::BTreeMap;
use std::fmt;

/// RFC 6154 special-use roles that matter for mapping.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
pub enum SpecialUse {
    All,
    Archive,
    Drafts,
    Flagged,
    Junk,
    Sent,
    Trash,
    Important,
}

impl SpecialUse {
    /// From a LIST attribute such as `\Sent` (case-insensitive).
    pub fn from_attribute(attr: &str) -> Option<Self> {
        let a = attr.strip_prefix('\\')?.to_ascii_lowercase();
        Some(match a.as_str() {
            "all" | "allmail" => SpecialUse::All,
            "archive" => SpecialUse::Archive,
            "drafts" => SpecialUse::Drafts,
            "flagged" | "starred" => SpecialUse::Flagged,
            "junk" | "spam" => SpecialUse::Junk,
            "sent" => SpecialUse::Sent,
            "trash" => SpecialUse::Trash,
            "important" => SpecialUse::Important,
            _ => return None,
        })
    }

    pub fn attribute(&self) -> &'static str {
        match self {
            SpecialUse::All => "\\All",
            SpecialUse::Archive => "\\Archive",
            SpecialUse::Drafts => "\\Drafts",
            SpecialUse::Flagged => "\\Flagged",
            SpecialUse::Junk => "\\Junk",
            SpecialUse::Sent => "\\Sent",
            SpecialUse::Trash => "\\Trash",
            SpecialUse::Important => "\\Important",
        }
    }

    /// Well-known names used by servers that do not announce SPECIAL-USE.
    pub fn guess_from_name(name: &str) -> Option<Self> {
        let n = name.to_lowercase();
        Some(match n.as_str() {
            "sent"
            | "sent items"
            | "sent messages"
            | "sent mail"
            | "gesendet"
            | "gesendete elemente"
            | "envoyés"
            | "éléments envoyés"
            | "enviados" => SpecialUse::Sent,
            "drafts" | "draft" | "entwürfe" | "brouillons" | "borradores" => SpecialUse::Drafts,
            "trash" | "deleted items" | "deleted messages" | "bin" | "papierkorb" | "corbeille"
            | "papelera" => SpecialUse::Trash,
            "junk" | "spam" | "junk e-mail" | "junk email" | "bulk mail" => SpecialUse::Junk,
            "archive" | "archives" | "archiv" => SpecialUse::Archive,
            _ => return None,
        })
    }
}

impl fmt::Display for SpecialUse {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.attribute())
    }
}

/// A folder path independent of any server's delimiter and encoding.
#[derive(
    Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
pub struct FolderPath(pub Vec<String>);

impl FolderPath {
    /// Decodes a name as a server sent it (modified UTF-7, joined by `delimiter`).
    pub fn from_server(raw: &str, delimiter: Option<char>) -> Self {
        let parts: Vec<&str> = match delimiter {
            Some(d) => raw.split(d).collect(),
            None => vec![raw],
        };
        let mut comps: Vec<String> = parts
            .into_iter()
            .map(|p| {
                if p.contains('&') {
                    utf7_imap::decode_utf7_imap(p.to_string())
                } else {
                    p.to_string()
                }
            })
            .collect();
        if let Some(first) = comps.first_mut()
            && first.eq_ignore_ascii_case("INBOX")
        {
            *first = "INBOX".to_string();
        }
        FolderPath(comps)
    }

    /// Parses a name as a user wrote it (UTF-8, joined by `delimiter`).
    pub fn from_display(name: &str, delimiter: Option<char>) -> Self {
        let comps: Vec<String> = match delimiter {
            Some(d) => name.split(d).map(str::to_string).collect(),
            None => vec![name.to_string()],
        };
        let mut p = FolderPath(comps);
        if let Some(first) = p.0.first_mut()
            && first.eq_ignore_ascii_case("INBOX")
        {
            *first = "INBOX".to_string();
        }
        p
    }

    /// The name to send to a server with this delimiter (modified UTF-7).
    pub fn to_server(&self, delimiter: Option<char>) -> String {
        let sep = delimiter.map(String::from).unwrap_or_default();
        self.0
            .iter()
            .map(|c| {
                if c.is_ascii() && !c.contains('&') {
                    c.clone()
                } else {
                    utf7_imap::encode_utf7_imap(c.clone())
                }
            })
            .collect::<Vec<_>>()
            .join(&sep)
    }

    /// The name as a person reads it (UTF-8) with this delimiter.
    pub fn display(&self, delimiter: Option<char>) -> String {
        let sep = delimiter.map(String::from).unwrap_or_default();
        self.0.join(&sep)
    }

    pub fn is_inbox(&self) -> bool {
        self.0.len() == 1 && self.0[0] == "INBOX"
    }

    pub fn components(&self) -> &[String] {
        &self.0
    }

    /// Proper ancestors, outermost first (`a/b/c` -> `a`, `a/b`).
    pub fn ancestors(&self) -> Vec<FolderPath> {
        (1..self.0.len())
            .map(|n| FolderPath(self.0[..n].to_vec()))
            .collect()
    }

    pub fn starts_with(&self, prefix: &FolderPath) -> bool {
        self.0.len() >= prefix.0.len() && self.0[..prefix.0.len()] == prefix.0[..]
    }
}

/// One folder as a server listed it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ListedFolder {
    /// The name exactly as the server sent it (modified UTF-7).
    pub raw: String,
    pub delimiter: Option<char>,
    pub special_use: Option<SpecialUse>,
    /// False for `\Noselect` / `\NonExistent` containers, which hold no messages.
    pub selectable: bool,
}

impl ListedFolder {
    pub fn path(&self) -> FolderPath {
        FolderPath::from_server(&self.raw, self.delimiter)
    }
}

/// The rules a user gave on the command line.
#[derive(Clone, Debug)]
pub struct FolderRules {
    maps: Vec<(String, String)>,
    excludes: Vec<Regex>,
    /// Characters replaced in a folder name the destination refuses (`[CANNOT]`), e.g.
    /// `.` on Dovecot's Maildir++ layout.
    renames: Vec<(char, char)>,
}

impl Default for FolderRules {
    fn default() -> Self {
        FolderRules {
            maps: Vec::new(),
            excludes: Vec::new(),
            renames: DEFAULT_RENAMES.to_vec(),
        }
    }
}

/// The documented default of `--rename-char`: `.` becomes `_`.
pub const DEFAULT_RENAMES: [(char, char); 1] = [('.', '_')];

/// Parses `--rename-char FROM=TO` (one character each).
pub fn parse_rename(s: &str) -> Result<(char, char)> {
    let mut parts = s.splitn(2, '=');
    let (a, b) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let (mut ca, mut cb) = (a.chars(), b.chars());
    match (ca.next(), ca.next(), cb.next(), cb.next()) {
        (Some(f), None, Some(t), None) if f != t && !t.is_control() => Ok((f, t)),
        _ => Err(Error::usage(format!(
            "--rename-char '{s}' is not of the form FROM=TO with one character each, e.g. '.=_'"
        ))),
    }
}

impl FolderRules {
    /// `maps` are `SOURCE=DEST` (each written with its own server's delimiter, UTF-8);
    /// `excludes` are regexes matched against the source folder's display name.
    pub fn new(maps: &[String], excludes: &[String]) -> Result<Self> {
        let mut parsed = Vec::new();
        for m in maps {
            let Some((src, dst)) = m.split_once('=') else {
                return Err(Error::usage(format!(
                    "--map '{m}' is not of the form 'SOURCE FOLDER=DESTINATION FOLDER'"
                )));
            };
            let (src, dst) = (src.trim(), dst.trim());
            if src.is_empty() || dst.is_empty() {
                return Err(Error::usage(format!(
                    "--map '{m}' has an empty side; write e.g. --map 'Sent Items=Sent'"
                )));
            }
            parsed.push((src.to_string(), dst.to_string()));
        }
        let mut res = Vec::new();
        for e in excludes {
            res.push(Regex::new(e).map_err(|err| {
                Error::usage(format!(
                    "--exclude '{e}' is not a valid regular expression: {err}"
                ))
            })?);
        }
        Ok(FolderRules {
            maps: parsed,
            excludes: res,
            renames: DEFAULT_RENAMES.to_vec(),
        })
    }

    /// Replaces the characters substituted in refused names (default: `.` -> `_`).
    pub fn with_renames(mut self, renames: Vec<(char, char)>) -> Self {
        self.renames = renames;
        self
    }

    /// The name a folder gets when the destination refuses `path`: every configured
    /// character replaced (INBOX kept); None when nothing would change.
    pub fn substitute(&self, path: &FolderPath) -> Option<FolderPath> {
        let out = FolderPath(
            path.0
                .iter()
                .enumerate()
                .map(|(i, c)| {
                    if i == 0 && c == "INBOX" {
                        return c.clone();
                    }
                    c.chars()
                        .map(|ch| {
                            self.renames
                                .iter()
                                .find(|(f, _)| *f == ch)
                                .map(|(_, t)| *t)
                                .unwrap_or(ch)
                        })
                        .collect()
                })
                .collect(),
        );
        (out != *path).then_some(out)
    }
}

impl FolderMapping {
    /// Sends `plan` (by source name) to `to` instead: the destination refused its name.
    pub fn rename(&mut self, source_raw: &str, to: FolderPath, dest_delim: Option<char>) {
        if let Some(p) = self.folders.iter_mut().find(|p| p.source_raw == source_raw) {
            self.notes.push(format!(
                "destination folder '{}' is kept as '{}' (the destination does not allow that \
                 name; see --rename-char)",
                p.dest_display,
                to.display(dest_delim)
            ));
            p.dest_raw = to.to_server(dest_delim);
            p.dest_display = to.display(dest_delim);
            p.dest_path = to;
        }
    }
}

/// Why a folder goes where it goes (shown to the user).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum MapReason {
    SamePath,
    SpecialUse(SpecialUse),
    UserMap,
}

/// One source folder and where its messages go.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FolderPlan {
    pub source_raw: String,
    pub source_display: String,
    pub dest_path: FolderPath,
    pub dest_raw: String,
    pub dest_display: String,
    pub reason: MapReason,
    pub special_use: Option<SpecialUse>,
    /// Gmail's All Mail: a label view holding every message. Only the messages found in
    /// no label folder (archived mail) are copied, into the destination's archive; the
    /// label folders are listed here (source names) so the pass can tell them apart.
    pub label_folders: Vec<String>,
}

/// The whole folder mapping of one mailbox.
#[derive(Clone, Debug, Default)]
pub struct FolderMapping {
    pub folders: Vec<FolderPlan>,
    /// Source folders left out by `--exclude`, by display name.
    pub excluded: Vec<String>,
    /// Things the user should know (renamed components, merged folders).
    pub notes: Vec<String>,
}

/// Decides where each selectable source folder goes.
pub fn map_folders(
    source: &[ListedFolder],
    source_delim: Option<char>,
    dest: &[ListedFolder],
    dest_delim: Option<char>,
    rules: &FolderRules,
) -> Result<FolderMapping> {
    let mut out = FolderMapping::default();
    let src_roles = roles(source);
    let dst_roles = roles(dest);
    // Personal namespace prefixes (INBOX.): folders are compared below the prefix, so
    // `INBOX.Sent` on one server is `Sent` on the other, and back.
    let inbox = FolderPath(vec!["INBOX".to_string()]);
    let (src_prefixed, dst_prefixed) = (inbox_prefixed(source), inbox_prefixed(dest));
    // A Gmail-style label store: one folder holds all mail (\All).
    let gmail = src_roles.iter().any(|(r, _)| *r == SpecialUse::All);
    let maps: Vec<(FolderPath, FolderPath)> = rules
        .maps
        .iter()
        .map(|(s, d)| {
            (
                FolderPath::from_display(s, source_delim),
                FolderPath::from_display(d, dest_delim),
            )
        })
        .collect();
    for (src, _) in &maps {
        if !source.iter().any(|f| f.path().starts_with(src)) {
            out.notes.push(format!(
                "--map source '{}' matches no folder on the source server",
                src.display(source_delim)
            ));
        }
    }

    for folder in source.iter().filter(|f| f.selectable) {
        let path = folder.path();
        let display = path.display(source_delim);
        if rules.excludes.iter().any(|r| r.is_match(&display)) {
            out.excluded.push(display);
            continue;
        }
        let role = src_roles
            .iter()
            .find(|(_, f)| f.raw == folder.raw)
            .map(|(r, _)| *r);
        let user_map = maps
            .iter()
            .filter(|(s, _)| path.starts_with(s))
            .max_by_key(|(s, _)| s.0.len());
        // Other users' and public folders (shared namespaces) are not this mailbox's
        // mail: left alone unless a --map names them.
        if user_map.is_none() && is_shared_namespace(&path) {
            out.notes.push(format!(
                "'{display}' is in a shared or public namespace: not copied (map it with \
                 --map to copy it)"
            ));
            out.excluded.push(display);
            continue;
        }
        // Gmail label views (a label store has an All Mail): Starred and Important only
        // show messages that live in label folders; copying them would duplicate mail.
        if gmail
            && user_map.is_none()
            && matches!(role, Some(SpecialUse::Flagged | SpecialUse::Important))
        {
            out.notes.push(format!(
                "'{display}' is a Gmail label view: not copied (its messages are copied from \
                 their label folders; starred ones keep their \\Flagged flag)"
            ));
            out.excluded.push(display);
            continue;
        }
        let all_mail = gmail && role == Some(SpecialUse::All);
        // The folder's path below the source's personal prefix.
        let rel = if src_prefixed && !path.is_inbox() && path.starts_with(&inbox) {
            FolderPath(path.0[1..].to_vec())
        } else {
            path.clone()
        };
        let under_dest_prefix = |p: FolderPath| {
            if dst_prefixed && !p.is_inbox() && !p.starts_with(&inbox) {
                let mut c = vec!["INBOX".to_string()];
                c.extend(p.0);
                FolderPath(c)
            } else {
                p
            }
        };
        let (mut dest_path, reason) = if let Some((s, d)) = user_map {
            let mut comps = d.0.clone();
            comps.extend_from_slice(&path.0[s.0.len()..]);
            (FolderPath(comps), MapReason::UserMap)
        } else if all_mail {
            // Archived Gmail mail goes to the destination's archive.
            match dst_roles.iter().find(|(r, _)| *r == SpecialUse::Archive) {
                Some((_, d)) => (d.path(), MapReason::SpecialUse(SpecialUse::Archive)),
                None => (
                    under_dest_prefix(FolderPath(vec!["Archive".to_string()])),
                    MapReason::SamePath,
                ),
            }
        } else if let Some(role) = role {
            match dst_roles.iter().find(|(r, _)| *r == role) {
                Some((_, d)) => (d.path(), MapReason::SpecialUse(role)),
                None => (under_dest_prefix(rel.clone()), MapReason::SamePath),
            }
        } else {
            (under_dest_prefix(rel.clone()), MapReason::SamePath)
        };
        // A component may contain the destination's delimiter ("a.b" going to a '.'
        // server): it would silently become a hierarchy level, so replace it.
        if let Some(d) = dest_delim {
            for c in dest_path.0.iter_mut() {
                if c.contains(d) {
                    let fixed = c.replace(d, "_");
                    out.notes.push(format!(
                        "folder component '{c}' contains the destination delimiter '{d}'; \
                         it is created as '{fixed}'"
                    ));
                    *c = fixed;
                }
            }
        }
        out.folders.push(FolderPlan {
            source_raw: folder.raw.clone(),
            source_display: display,
            dest_raw: dest_path.to_server(dest_delim),
            dest_display: dest_path.display(dest_delim),
            dest_path,
            reason,
            special_use: role,
            label_folders: Vec::new(),
        });
    }
    // All Mail knows its label folders: every other folder copied from this mailbox
    // except the ones Gmail keeps out of All Mail (Trash, Spam).
    if gmail {
        let labels: Vec<String> = out
            .folders
            .iter()
            .filter(|f| {
                !matches!(
                    f.special_use,
                    Some(SpecialUse::All | SpecialUse::Trash | SpecialUse::Junk)
                )
            })
            .map(|f| f.source_raw.clone())
            .collect();
        for f in out.folders.iter_mut() {
            if f.special_use == Some(SpecialUse::All) {
                f.label_folders = labels.clone();
                out.notes.push(format!(
                    "'{}' is Gmail's All Mail: only messages in no label folder (archived \
                     mail) are copied, into '{}'",
                    f.source_display, f.dest_display
                ));
            }
        }
    }

    // Folders an earlier pass had to rename (the destination refused the name): the
    // destination holds the substitute and not the original.
    let dest_names: std::collections::HashSet<&str> = dest.iter().map(|f| f.raw.as_str()).collect();
    let renamed: Vec<(String, FolderPath)> = out
        .folders
        .iter()
        .filter(|p| !p.dest_path.is_inbox() && !dest_names.contains(p.dest_raw.as_str()))
        .filter_map(|p| {
            rules
                .substitute(&p.dest_path)
                .filter(|s| dest_names.contains(s.to_server(dest_delim).as_str()))
                .map(|s| (p.source_raw.clone(), s))
        })
        .collect();
    for (src, to) in renamed {
        out.rename(&src, to, dest_delim);
    }

    let mut by_dest: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for f in &out.folders {
        by_dest
            .entry(&f.dest_raw)
            .or_default()
            .push(&f.source_display);
    }
    for (dest, sources) in by_dest.iter().filter(|(_, s)| s.len() > 1) {
        out.notes.push(format!(
            "source folders {} are merged into destination folder '{}'",
            sources
                .iter()
                .map(|s| format!("'{s}'"))
                .collect::<Vec<_>>()
                .join(", "),
            FolderPath::from_server(dest, dest_delim).display(dest_delim)
        ));
    }
    // INBOX first (users look there first), then parents before children.
    out.folders.sort_by(|a, b| {
        (!a.dest_path.is_inbox(), &a.dest_path, &a.source_raw).cmp(&(
            !b.dest_path.is_inbox(),
            &b.dest_path,
            &b.source_raw,
        ))
    });
    Ok(out)
}

/// Whether a server keeps every folder under INBOX (a personal namespace prefix such as
/// `INBOX.`, as Courier and cPanel servers do): some folder lives under INBOX and none
/// but INBOX at the top. async-imap cannot parse NAMESPACE responses, so the folder list
/// tells instead.
pub fn inbox_prefixed(folders: &[ListedFolder]) -> bool {
    let paths: Vec<FolderPath> = folders.iter().map(ListedFolder::path).collect();
    paths.iter().any(|p| p.0.len() > 1 && p.0[0] == "INBOX")
        && paths
            .iter()
            .all(|p| p.0.first().is_some_and(|c| c == "INBOX"))
}

/// The usual roots of shared and public namespaces (Dovecot, Cyrus, Courier, Exchange).
fn is_shared_namespace(path: &FolderPath) -> bool {
    const ROOTS: [&str; 7] = [
        "#shared",
        "#public",
        "shared",
        "Shared Folders",
        "Public Folders",
        "Other Users",
        "#users",
    ];
    path.0
        .first()
        .is_some_and(|c| ROOTS.iter().any(|r| r.eq_ignore_ascii_case(c)))
}

/// Gmail's system folders by name, for servers (or simulations) without SPECIAL-USE.
fn gmail_role(path: &FolderPath) -> Option<SpecialUse> {
    match path.0.as_slice() {
        [g, name] if g == "[Gmail]" || g == "[Google Mail]" => match name.as_str() {
            "All Mail" => Some(SpecialUse::All),
            "Starred" => Some(SpecialUse::Flagged),
            "Important" => Some(SpecialUse::Important),
            _ => None,
        },
        _ => None,
    }
}

/// Special-use roles of a server's folders: announced attributes win; names are a
/// fallback only for roles no folder announces, and only at the top level (or under INBOX).
fn roles(folders: &[ListedFolder]) -> Vec<(SpecialUse, &ListedFolder)> {
    let mut out: Vec<(SpecialUse, &ListedFolder)> = folders
        .iter()
        .filter_map(|f| f.special_use.map(|r| (r, f)))
        .collect();
    for f in folders.iter().filter(|f| f.special_use.is_none()) {
        if let Some(role) = gmail_role(&f.path())
            && !out.iter().any(|(r, _)| *r == role)
        {
            out.push((role, f));
        }
    }
    for f in folders
        .iter()
        .filter(|f| f.selectable && f.special_use.is_none())
    {
        let path = f.path();
        let name = match path.0.as_slice() {
            [one] => one,
            [inbox, one] if inbox == "INBOX" => one,
            _ => continue,
        };
        if let Some(role) = SpecialUse::guess_from_name(name)
            && !out.iter().any(|(r, _)| *r == role)
        {
            out.push((role, f));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lf(raw: &str, delim: char, su: Option<SpecialUse>) -> ListedFolder {
        ListedFolder {
            raw: raw.to_string(),
            delimiter: Some(delim),
            special_use: su,
            selectable: true,
        }
    }

    #[test]
    fn shared_namespaces_are_left_out_unless_mapped() {
        let src = vec![
            lf("INBOX", '/', None),
            lf("shared/bob/INBOX", '/', None),
            lf("Public Folders/News", '/', None),
            lf("Shareholders", '/', None),
        ];
        let m = map_folders(&src, Some('/'), &[], Some('/'), &FolderRules::default()).unwrap();
        let copied: Vec<&str> = m.folders.iter().map(|f| f.source_raw.as_str()).collect();
        assert_eq!(copied, vec!["INBOX", "Shareholders"]);
        assert_eq!(m.excluded.len(), 2);
        let rules = FolderRules::new(&["Public Folders/News=News".to_string()], &[]).unwrap();
        let m = map_folders(&src, Some('/'), &[], Some('/'), &rules).unwrap();
        assert!(m.folders.iter().any(|f| f.dest_raw == "News"));
    }

    #[test]
    fn personal_inbox_prefixes_are_translated_both_ways() {
        let prefixed = vec![
            lf("INBOX", '.', None),
            lf("INBOX.Sent", '.', Some(SpecialUse::Sent)),
            lf("INBOX.Work", '.', None),
            lf("INBOX.Work.2024", '.', None),
        ];
        let plain = vec![
            lf("INBOX", '/', None),
            lf("Sent", '/', Some(SpecialUse::Sent)),
        ];
        assert!(inbox_prefixed(&prefixed) && !inbox_prefixed(&plain));
        let rules = FolderRules::default();
        let m = map_folders(&prefixed, Some('.'), &plain, Some('/'), &rules).unwrap();
        let dest = |m: &FolderMapping, s: &str| {
            m.folders
                .iter()
                .find(|f| f.source_raw == s)
                .unwrap()
                .dest_raw
                .clone()
        };
        assert_eq!(dest(&m, "INBOX"), "INBOX");
        assert_eq!(dest(&m, "INBOX.Sent"), "Sent");
        assert_eq!(dest(&m, "INBOX.Work.2024"), "Work/2024");
        let back = map_folders(
            &[
                lf("INBOX", '/', None),
                lf("Work", '/', None),
                lf("Work/2024", '/', None),
            ],
            Some('/'),
            &prefixed,
            Some('.'),
            &rules,
        )
        .unwrap();
        assert_eq!(dest(&back, "Work/2024"), "INBOX.Work.2024");
        assert_eq!(dest(&back, "INBOX"), "INBOX");
    }

    #[test]
    fn utf7_round_trip_and_delimiter_translation() {
        let p = FolderPath::from_server("R&AOk-unions.&ZeVnLIqe-", Some('.'));
        assert_eq!(p.0, vec!["Réunions", "日本語"]);
        assert_eq!(p.to_server(Some('/')), "R&AOk-unions/&ZeVnLIqe-");
        assert_eq!(p.display(Some('/')), "Réunions/日本語");
        let amp = FolderPath::from_server("Q&-A [internal]", Some('/'));
        assert_eq!(amp.0, vec!["Q&A [internal]"]);
        assert_eq!(amp.to_server(Some('/')), "Q&-A [internal]");
        assert!(FolderPath::from_server("inbox", Some('/')).is_inbox());
    }

    #[test]
    fn maps_special_use_across_names_and_delimiters() {
        let src = vec![
            lf("INBOX", '.', None),
            lf("Sent Items", '.', Some(SpecialUse::Sent)),
            lf("Archive.2023", '.', None),
            lf("Junk", '.', None),
        ];
        let dst = vec![
            lf("INBOX", '/', None),
            lf("Sent", '/', Some(SpecialUse::Sent)),
            lf("Spam", '/', Some(SpecialUse::Junk)),
        ];
        let m = map_folders(&src, Some('.'), &dst, Some('/'), &FolderRules::default()).unwrap();
        let get = |s: &str| m.folders.iter().find(|f| f.source_display == s).unwrap();
        assert_eq!(m.folders[0].dest_raw, "INBOX");
        assert_eq!(get("Sent Items").dest_raw, "Sent");
        assert_eq!(get("Archive.2023").dest_raw, "Archive/2023");
        // Junk has no attribute on the source: guessed by name, mapped to the \Junk folder.
        assert_eq!(get("Junk").dest_raw, "Spam");
    }

    #[test]
    fn user_map_and_exclude_win() {
        let src = vec![
            lf("INBOX", '/', None),
            lf("Sent Items", '/', Some(SpecialUse::Sent)),
            lf("Old", '/', None),
            lf("Old/2019", '/', None),
            lf("Trash", '/', None),
        ];
        let dst = vec![lf("Sent", '/', Some(SpecialUse::Sent))];
        let rules = FolderRules::new(
            &[
                "Sent Items=Sent Archive".to_string(),
                "Old=Archive/Old".to_string(),
            ],
            &["^Trash$".to_string()],
        )
        .unwrap();
        let m = map_folders(&src, Some('/'), &dst, Some('/'), &rules).unwrap();
        let get = |s: &str| m.folders.iter().find(|f| f.source_display == s).unwrap();
        assert_eq!(get("Sent Items").dest_raw, "Sent Archive");
        assert_eq!(get("Old/2019").dest_raw, "Archive/Old/2019");
        assert_eq!(m.excluded, vec!["Trash".to_string()]);
    }

    #[test]
    fn delimiter_inside_a_component_is_replaced_and_noted() {
        let src = vec![lf("v1.2", '/', None)];
        let m = map_folders(&src, Some('/'), &[], Some('.'), &FolderRules::default()).unwrap();
        assert_eq!(m.folders[0].dest_raw, "v1_2");
        assert_eq!(m.notes.len(), 1);
    }

    #[test]
    fn bad_rules_are_usage_errors() {
        assert!(FolderRules::new(&["nope".to_string()], &[]).is_err());
        assert!(FolderRules::new(&[], &["(".to_string()]).is_err());
    }
}
