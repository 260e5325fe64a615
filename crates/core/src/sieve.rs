//! Sieve filters (RFC 5228) and the accounts that hold them (ManageSieve, RFC 5804): a
//! user's scripts, what a server can run, the plan that copies the scripts to the new
//! server, the comparison `verify` makes, and the ports a ManageSieve adapter implements.
//!
//! The plan never deletes or overwrites a destination script that mailshift did not put
//! there: a destination script with a source script's name but other content is kept,
//! and the source's version goes beside it under a derived name (`NAME-migrated`). What
//! mailshift put where is the caller's [`CopyRecord`]; with it, a script changed on the
//! source replaces mailshift's own earlier copy in place. The old server is only read:
//! the source side is a [`SieveSource`], which has no writing method.

use crate::endpoint::{Endpoint, Security};
use crate::fingerprint::Fingerprint;
use crate::{Error, Result};
use async_trait::async_trait;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::str::FromStr;

/// The ManageSieve port (RFC 5804).
pub const DEFAULT_PORT: u16 = 4190;

// ---------------------------------------------------------------------------------------
// Where scripts live

/// A ManageSieve server and the user to log in as: `sieve://USER@HOST[:PORT]` (STARTTLS,
/// RFC 5804) or `sieves://USER@HOST[:PORT]` (implicit TLS, a mailshift convention for
/// servers that offer it). Like [`Endpoint`], never holds a password.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SieveEndpoint {
    pub security: Security,
    pub host: String,
    pub port: u16,
    pub user: String,
}

impl SieveEndpoint {
    /// The ManageSieve service next to an IMAP server: same host and user, STARTTLS on
    /// port 4190 (where Dovecot, Cyrus and Stalwart listen by default).
    pub fn beside(imap: &Endpoint) -> SieveEndpoint {
        SieveEndpoint {
            security: Security::StartTls,
            host: imap.host.clone(),
            port: DEFAULT_PORT,
            user: imap.user.clone(),
        }
    }

    /// `host:port`.
    pub fn host_port(&self) -> String {
        format!("{}:{}", self.host, self.port)
    }
}

impl fmt::Display for SieveEndpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let scheme = match self.security {
            Security::Tls => "sieves",
            Security::StartTls => "sieve",
        };
        write!(f, "{scheme}://{}@{}:{}", self.user, self.host, self.port)
    }
}

impl FromStr for SieveEndpoint {
    type Err = Error;

    /// Parsed like an IMAP endpoint (the user may be an address, IPv6 hosts in brackets,
    /// a password in the address is refused without echoing it).
    fn from_str(s: &str) -> Result<Self> {
        let (security, rest) = if let Some(rest) = s.strip_prefix("sieves://") {
            (Security::Tls, rest)
        } else if let Some(rest) = s.strip_prefix("sieve://") {
            (Security::StartTls, rest)
        } else {
            return Err(Error::usage(
                "unsupported ManageSieve address (expected sieve://USER@HOST[:PORT] or \
                 sieves://USER@HOST[:PORT])",
            ));
        };
        if rest
            .rsplit_once('@')
            .is_some_and(|(userinfo, _)| userinfo.contains(':'))
        {
            // Never echo the string: it holds a password.
            return Err(Error::usage(
                "a password was given inside the ManageSieve address; pass it separately",
            ));
        }
        let parse = |scheme: &str| {
            format!("{scheme}://{rest}")
                .parse::<Endpoint>()
                .map_err(|e| {
                    Error::usage(e.message.replace(
                        "imap://USER@HOST[:PORT] or imaps://",
                        "sieve://USER@HOST[:PORT] or sieves://",
                    ))
                })
        };
        let imap = parse("imap")?;
        // Both schemes agree on the port only when the address names one.
        let explicit_port = parse("imaps")?.port == imap.port;
        Ok(SieveEndpoint {
            security,
            host: imap.host,
            port: if explicit_port {
                imap.port
            } else {
                DEFAULT_PORT
            },
            user: imap.user,
        })
    }
}

// ---------------------------------------------------------------------------------------
// Scripts and capabilities

/// A script as LISTSCRIPTS names it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ListedScript {
    pub name: String,
    /// The one script the server runs on delivery (at most one per account).
    pub active: bool,
}

/// A script with its content, byte for byte as GETSCRIPT returned it.
#[derive(Clone, PartialEq, Eq)]
pub struct Script {
    pub name: String,
    pub content: Vec<u8>,
    pub active: bool,
}

impl Script {
    pub fn fingerprint(&self) -> Fingerprint {
        Fingerprint::of(&self.content)
    }
}

impl fmt::Debug for Script {
    // Scripts hold addresses and vacation texts: Debug shows their size, not their words.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Script")
            .field("name", &self.name)
            .field("bytes", &self.content.len())
            .field("active", &self.active)
            .finish()
    }
}

/// What a ManageSieve server announces, reduced to what matters for copying scripts.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SieveCapabilities {
    /// IMPLEMENTATION, e.g. "Dovecot Pigeonhole".
    pub implementation: Option<String>,
    /// SIEVE: the extensions scripts may `require`, lower case.
    pub extensions: Vec<String>,
    /// SASL mechanisms, upper case (before login; servers may omit them afterwards).
    pub sasl: Vec<String>,
    pub starttls: bool,
    /// MAXREDIRECTS: how many `redirect` actions one script may run.
    pub max_redirects: Option<u32>,
    /// NOTIFY: the `enotify` methods (e.g. "mailto").
    pub notify: Vec<String>,
    /// VERSION ("1.0" for RFC 5804): without it the server predates CHECKSCRIPT.
    pub version: Option<String>,
    /// OWNER: the logged-in user, as the server sees it.
    pub owner: Option<String>,
}

impl SieveCapabilities {
    pub fn supports(&self, extension: &str) -> bool {
        self.extensions
            .iter()
            .any(|e| e.eq_ignore_ascii_case(extension))
    }

    /// Whether CHECKSCRIPT exists (RFC 5804 servers announce VERSION).
    pub fn has_checkscript(&self) -> bool {
        self.version.is_some()
    }

    /// Of the extensions a script requires, those this server does not announce.
    pub fn missing_for(&self, script: &[u8]) -> Vec<String> {
        required_extensions(script)
            .into_iter()
            .filter(|e| !self.supports(e))
            .collect()
    }
}

/// The extensions a script names in its `require` commands, lower case, deduplicated,
/// in order of appearance. A lexical scan (comments, strings, string lists), not a Sieve
/// parser: it explains a refusal, the server's CHECKSCRIPT decides.
pub fn required_extensions(script: &[u8]) -> Vec<String> {
    #[derive(PartialEq)]
    enum Tok {
        Word(String),
        Str(String),
        Other(u8),
    }
    let mut toks = Vec::new();
    let s = script;
    let mut i = 0;
    while i < s.len() {
        let c = s[i];
        if c.is_ascii_whitespace() {
            i += 1;
        } else if c == b'#' {
            while i < s.len() && s[i] != b'\n' {
                i += 1;
            }
        } else if s[i..].starts_with(b"/*") {
            i = s[i + 2..]
                .windows(2)
                .position(|w| w == b"*/")
                .map_or(s.len(), |p| i + 2 + p + 2);
        } else if c == b'"' {
            let mut out = Vec::new();
            i += 1;
            while i < s.len() && s[i] != b'"' {
                if s[i] == b'\\' && i + 1 < s.len() {
                    i += 1;
                }
                out.push(s[i]);
                i += 1;
            }
            i += 1;
            toks.push(Tok::Str(String::from_utf8_lossy(&out).into_owned()));
        } else if s[i..].len() >= 5 && s[i..i + 5].eq_ignore_ascii_case(b"text:") {
            // A multi-line string runs to a line holding a single dot.
            let body_start = s[i..]
                .iter()
                .position(|&b| b == b'\n')
                .map_or(s.len(), |p| i + p + 1);
            let mut j = body_start;
            loop {
                let end = s[j..]
                    .iter()
                    .position(|&b| b == b'\n')
                    .map_or(s.len(), |p| j + p);
                let line = &s[j..end];
                let line = line.strip_suffix(b"\r").unwrap_or(line);
                if line == b"." || end >= s.len() {
                    i = (end + 1).min(s.len());
                    break;
                }
                j = end + 1;
            }
            toks.push(Tok::Str(String::new()));
        } else if c.is_ascii_alphabetic() || c == b'_' {
            let start = i;
            while i < s.len() && (s[i].is_ascii_alphanumeric() || s[i] == b'_') {
                i += 1;
            }
            toks.push(Tok::Word(
                String::from_utf8_lossy(&s[start..i]).to_ascii_lowercase(),
            ));
        } else {
            toks.push(Tok::Other(c));
            i += 1;
        }
    }
    let mut out: Vec<String> = Vec::new();
    let mut k = 0;
    while k < toks.len() {
        // `require` is a command: it starts the script or follows `;`, `{` or `}`.
        let at_command = k == 0 || matches!(toks[k - 1], Tok::Other(b';' | b'{' | b'}'));
        if at_command && toks[k] == Tok::Word("require".into()) {
            k += 1;
            while k < toks.len() && toks[k] != Tok::Other(b';') {
                if let Tok::Str(e) = &toks[k] {
                    let e = e.to_ascii_lowercase();
                    if !e.is_empty() && !out.contains(&e) {
                        out.push(e);
                    }
                }
                k += 1;
            }
        }
        k += 1;
    }
    out
}

// ---------------------------------------------------------------------------------------
// What mailshift put on the destination

/// Where mailshift put each source script and what it put there, so that the next pass
/// can tell its own copies (which it may update) from the user's scripts (which it never
/// touches). Serialisable: the caller keeps it between passes (empty on the first pass,
/// or when the caller keeps no state: nothing is then overwritten, see [`plan`]).
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct CopyRecord {
    /// Source script name -> the copy on the destination.
    pub scripts: BTreeMap<String, CopiedScript>,
}

/// One script mailshift put on the destination.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct CopiedScript {
    /// Its name on the destination (the source name, or a derived one on a collision).
    pub dest_name: String,
    /// SHA-256 (hex) of the content mailshift put (or found) there.
    pub sha256: String,
}

impl CopyRecord {
    /// Notes that `source_name` now sits on the destination as `dest_name` with `content`.
    pub fn placed(&mut self, source_name: &str, dest_name: &str, content: &[u8]) {
        self.scripts.insert(
            source_name.to_string(),
            CopiedScript {
                dest_name: dest_name.to_string(),
                sha256: Fingerprint::of(content).to_hex(),
            },
        );
    }
}

/// The name a source script gets on the destination when its own name is taken by a
/// script that is not mailshift's: `NAME-migrated`, then `NAME-migrated-2`, ...
pub fn derived_name(name: &str, n: usize) -> String {
    if n <= 1 {
        format!("{name}-migrated")
    } else {
        format!("{name}-migrated-{n}")
    }
}

// ---------------------------------------------------------------------------------------
// The plan

/// What happens to one source script.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Step {
    /// The destination already holds the same content under `dest_name`: nothing to do.
    Unchanged,
    /// `dest_name` is free: upload.
    Create,
    /// `dest_name` holds mailshift's own earlier copy, untouched since, of older content:
    /// upload over it.
    Update,
    /// The source name is taken on the destination by a script that is not mailshift's
    /// (or that someone changed there): upload beside it as `dest_name`.
    Beside,
}

/// One source script in the plan.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct PlannedScript {
    pub source_name: String,
    pub dest_name: String,
    pub step: Step,
}

/// What to do about the destination's active script.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case", tag = "action")]
pub enum Activation {
    /// Already right (or nothing to mirror): leave it.
    Keep,
    /// Make the copy of the source's active script active (only once that copy is on the
    /// destination: if it is refused, the destination's active script stays).
    Activate {
        source_name: String,
        dest_name: String,
    },
    /// The source has no active script and the destination's active one is a copy of a
    /// source script: switch it off (a vacation the user ended on the old server must not
    /// answer from the new one).
    Deactivate { dest_name: String },
}

/// Everything a pass does to the destination's scripts. Nothing in it deletes.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct SievePlan {
    /// One entry per source script, in name order.
    pub scripts: Vec<PlannedScript>,
    pub activation: Activation,
}

impl SievePlan {
    /// Scripts to upload (after CHECKSCRIPT).
    pub fn uploads(&self) -> impl Iterator<Item = &PlannedScript> {
        self.scripts.iter().filter(|p| p.step != Step::Unchanged)
    }
}

/// Plans a pass from the scripts of both sides (with content) and the record of earlier
/// passes. Rules, per source script `N` (in name order):
///
/// 1. if `N`, mailshift's recorded copy of `N`, or an earlier derived copy (`N-migrated`,
///    ...) on the destination has the same content: nothing;
/// 2. else if the record names a copy that is still as mailshift left it: update it;
/// 3. else if the destination has no `N`: create `N`;
/// 4. else (`N` is the user's, or was changed on the destination): create the first free
///    derived name beside it.
///
/// Destination scripts that match no source script are never touched. Derived names
/// never take the name of another source script, and no two source scripts get the same
/// destination name.
pub fn plan(source: &[Script], dest: &[Script], record: &CopyRecord) -> SievePlan {
    let dest_by: BTreeMap<&str, &Script> = dest.iter().map(|s| (s.name.as_str(), s)).collect();
    let source_names: BTreeSet<&str> = source.iter().map(|s| s.name.as_str()).collect();
    let mut sorted: Vec<&Script> = source.iter().collect();
    sorted.sort_by(|a, b| a.name.cmp(&b.name));

    let mut claimed: BTreeSet<String> = BTreeSet::new();
    let mut scripts = Vec::with_capacity(sorted.len());
    for s in &sorted {
        let fp = s.fingerprint();
        // A recorded destination name that became another source script's name is no
        // longer this script's to use.
        let recorded = record
            .scripts
            .get(&s.name)
            .filter(|r| r.dest_name == s.name || !source_names.contains(r.dest_name.as_str()));
        let usable = |name: &str, claimed: &BTreeSet<String>| {
            !claimed.contains(name) && (name == s.name || !source_names.contains(name))
        };
        let same_content = |name: &str| dest_by.get(name).is_some_and(|d| d.fingerprint() == fp);

        let mut candidates = vec![s.name.clone()];
        if let Some(r) = recorded {
            candidates.push(r.dest_name.clone());
        }
        candidates.extend(
            (1..=dest.len() + 1)
                .map(|n| derived_name(&s.name, n))
                .filter(|n| dest_by.contains_key(n.as_str())),
        );
        let found = candidates
            .into_iter()
            .find(|c| usable(c, &claimed) && same_content(c));

        let (dest_name, step) = if let Some(c) = found {
            (c, Step::Unchanged)
        } else if let Some(r) = recorded.filter(|r| {
            usable(&r.dest_name, &claimed)
                && dest_by
                    .get(r.dest_name.as_str())
                    .is_some_and(|d| d.fingerprint().to_hex() == r.sha256)
        }) {
            (r.dest_name.clone(), Step::Update)
        } else if !dest_by.contains_key(s.name.as_str()) && usable(&s.name, &claimed) {
            (s.name.clone(), Step::Create)
        } else {
            let free = (1..)
                .map(|n| derived_name(&s.name, n))
                .find(|n| !dest_by.contains_key(n.as_str()) && usable(n, &claimed))
                .unwrap_or_else(|| derived_name(&s.name, 1));
            (free, Step::Beside)
        };
        claimed.insert(dest_name.clone());
        scripts.push(PlannedScript {
            source_name: s.name.clone(),
            dest_name,
            step,
        });
    }

    let dest_active = dest.iter().find(|d| d.active).map(|d| d.name.as_str());
    let activation = match sorted.iter().find(|s| s.active) {
        Some(active) => {
            let target = scripts
                .iter()
                .find(|p| p.source_name == active.name)
                .map(|p| p.dest_name.clone())
                .unwrap_or_else(|| active.name.clone());
            if dest_active == Some(target.as_str()) {
                Activation::Keep
            } else {
                Activation::Activate {
                    source_name: active.name.clone(),
                    dest_name: target,
                }
            }
        }
        None => match dest_active {
            Some(d) if scripts.iter().any(|p| p.dest_name == d) => Activation::Deactivate {
                dest_name: d.to_string(),
            },
            _ => Activation::Keep,
        },
    };
    SievePlan {
        scripts,
        activation,
    }
}

// ---------------------------------------------------------------------------------------
// Verification

/// How one source script looks on the destination.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case", tag = "state", content = "dest_name")]
pub enum ScriptState {
    /// Same name, same content.
    Same,
    /// Same content under another name (a derived name after a collision).
    SameAs(String),
    /// A script of that name exists with other content, and no copy has this content.
    Differs,
    /// Nothing on the destination has this name or content.
    Missing,
}

/// One source script compared.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct ScriptComparison {
    pub name: String,
    pub state: ScriptState,
}

/// The comparison `verify` reports: by name and content, and which script is active.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct SieveComparison {
    /// One entry per source script, in name order.
    pub scripts: Vec<ScriptComparison>,
    /// Destination scripts that are no source script's copy (left alone by copying),
    /// including a user's script that shares a source script's name.
    pub extra: Vec<String>,
    pub source_active: Option<String>,
    pub dest_active: Option<String>,
    /// Whether the destination runs the copy of the source's active script (or, when the
    /// source runs none, no copy of a source script).
    pub active_matches: bool,
}

impl SieveComparison {
    /// Every source script is on the destination with its content, and activation matches.
    pub fn is_complete(&self) -> bool {
        self.active_matches
            && self
                .scripts
                .iter()
                .all(|s| matches!(s.state, ScriptState::Same | ScriptState::SameAs(_)))
    }
}

/// Compares both sides by name and content; a copy beside a colliding name (as [`plan`]
/// makes them) counts as present. `record` may be empty.
pub fn compare(source: &[Script], dest: &[Script], record: &CopyRecord) -> SieveComparison {
    let dest_by: BTreeMap<&str, &Script> = dest.iter().map(|s| (s.name.as_str(), s)).collect();
    let mut sorted: Vec<&Script> = source.iter().collect();
    sorted.sort_by(|a, b| a.name.cmp(&b.name));
    let mut matched: BTreeMap<String, String> = BTreeMap::new(); // source -> dest name
    let mut scripts = Vec::new();
    for s in &sorted {
        let fp = s.fingerprint();
        let same = |n: &str| dest_by.get(n).is_some_and(|d| d.fingerprint() == fp);
        let state = if same(&s.name) {
            matched.insert(s.name.clone(), s.name.clone());
            ScriptState::Same
        } else {
            let mut names: Vec<String> = record
                .scripts
                .get(&s.name)
                .map(|r| r.dest_name.clone())
                .into_iter()
                .collect();
            names.extend((1..=dest.len() + 1).map(|n| derived_name(&s.name, n)));
            match names.into_iter().find(|n| same(n)) {
                Some(n) => {
                    matched.insert(s.name.clone(), n.clone());
                    ScriptState::SameAs(n)
                }
                None if dest_by.contains_key(s.name.as_str()) => ScriptState::Differs,
                None => ScriptState::Missing,
            }
        };
        scripts.push(ScriptComparison {
            name: s.name.clone(),
            state,
        });
    }
    let copies: BTreeSet<&str> = matched.values().map(String::as_str).collect();
    let mut extra: Vec<String> = dest
        .iter()
        .map(|d| d.name.clone())
        .filter(|n| !copies.contains(n.as_str()))
        .collect();
    extra.sort();
    let source_active = sorted.iter().find(|s| s.active).map(|s| s.name.clone());
    let dest_active = dest.iter().find(|d| d.active).map(|d| d.name.clone());
    let active_matches = match (&source_active, &dest_active) {
        (Some(s), Some(d)) => matched.get(s) == Some(d),
        (Some(_), None) => false,
        (None, Some(d)) => !copies.contains(d.as_str()),
        (None, None) => true,
    };
    SieveComparison {
        scripts,
        extra,
        source_active,
        dest_active,
        active_matches,
    }
}

// ---------------------------------------------------------------------------------------
// Ports

/// What CHECKSCRIPT or PUTSCRIPT said about an accepted script.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Checked {
    /// The server's warnings (`OK (WARNINGS) "..."`), if any.
    pub warnings: Option<String>,
}

/// The read-only side: a Sieve account mailshift only reads (LISTSCRIPTS, GETSCRIPT). The
/// old server is always one of these, so nothing that copies scripts can change it.
///
/// Errors: [`crate::ErrorKind::Auth`] for refused credentials, `Network`/`Tls`/`Insecure`
/// for the connection, `Refused` for a NO about one script (e.g. it vanished).
#[async_trait]
pub trait SieveSource: Send {
    fn capabilities(&self) -> &SieveCapabilities;
    /// `server` in messages: "source sieve://alice@old.example:4190".
    fn label(&self) -> String;
    async fn list_scripts(&mut self) -> Result<Vec<ListedScript>>;
    async fn get_script(&mut self, name: &str) -> Result<Vec<u8>>;
}

/// The written side: the new server's Sieve account.
///
/// A refusal of one script (CHECKSCRIPT or PUTSCRIPT answering NO) is an error whose kind
/// answers `is_per_message()`: `Refused` (invalid script, missing extension), `Quota`
/// (too many scripts, storage) or `TooLarge` (script size). Any other kind concerns the
/// session, not the script.
#[async_trait]
pub trait SieveTarget: SieveSource {
    /// CHECKSCRIPT: whether the server would accept `content` (nothing is stored). Servers
    /// older than RFC 5804 have no CHECKSCRIPT: then this accepts and PUTSCRIPT decides.
    async fn check_script(&mut self, name: &str, content: &[u8]) -> Result<Checked>;
    /// PUTSCRIPT: stores `content` as `name`, replacing a script of that name.
    async fn put_script(&mut self, name: &str, content: &[u8]) -> Result<Checked>;
    /// SETACTIVE: makes `name` the active script, or none with `None`.
    async fn set_active(&mut self, name: Option<&str>) -> Result<()>;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(name: &str, content: &str, active: bool) -> Script {
        Script {
            name: name.into(),
            content: content.as_bytes().to_vec(),
            active,
        }
    }

    fn steps(p: &SievePlan) -> Vec<(&str, &str, Step)> {
        p.scripts
            .iter()
            .map(|x| (x.source_name.as_str(), x.dest_name.as_str(), x.step.clone()))
            .collect()
    }

    #[test]
    fn endpoints_parse_with_the_managesieve_port() {
        let e: SieveEndpoint = "sieve://alice@example.com@mail.example".parse().unwrap();
        assert_eq!(e.security, Security::StartTls);
        assert_eq!((e.host.as_str(), e.port), ("mail.example", 4190));
        assert_eq!(e.user, "alice@example.com");
        assert_eq!(e.to_string(), "sieve://alice@example.com@mail.example:4190");
        let e: SieveEndpoint = "sieves://bob@[::1]:5190".parse().unwrap();
        assert_eq!(
            (e.security, e.host.as_str(), e.port),
            (Security::Tls, "::1", 5190)
        );
        let e: SieveEndpoint = "sieve://bob@[::1]".parse().unwrap();
        assert_eq!(e.port, 4190);
        let err = "sieve://bob:hunter2@host"
            .parse::<SieveEndpoint>()
            .unwrap_err();
        assert!(!err.message.contains("hunter2"), "{err}");
        let err = "imap://bob@host".parse::<SieveEndpoint>().unwrap_err();
        assert!(err.message.contains("sieve://"), "{err}");
        let imap: Endpoint = "imaps://carol@imap.example".parse().unwrap();
        assert_eq!(
            SieveEndpoint::beside(&imap).to_string(),
            "sieve://carol@imap.example:4190"
        );
    }

    #[test]
    fn required_extensions_skip_comments_and_strings() {
        let script = br#"# require "nope";
/* require "nope2"; */
require ["fileinto", "Vacation"];
require "envelope";
if header :contains "subject" "require \"x\"" { fileinto "require"; }
vacation :subject "hi" text:
require "inside-text";
.
;
if true { require "copy"; }
"#;
        assert_eq!(
            required_extensions(script),
            vec!["fileinto", "vacation", "envelope", "copy"]
        );
        assert!(required_extensions(b"").is_empty());
        assert_eq!(required_extensions(b"require \"body\""), vec!["body"]);
        let caps = SieveCapabilities {
            extensions: vec!["fileinto".into(), "envelope".into()],
            ..Default::default()
        };
        assert_eq!(caps.missing_for(script), vec!["vacation", "copy"]);
    }

    #[test]
    fn first_pass_creates_everything_and_activates_the_active_one() {
        let src = [s("main", "keep;", true), s("vacation", "discard;", false)];
        let p = plan(&src, &[], &CopyRecord::default());
        assert_eq!(
            steps(&p),
            vec![
                ("main", "main", Step::Create),
                ("vacation", "vacation", Step::Create)
            ]
        );
        assert_eq!(
            p.activation,
            Activation::Activate {
                source_name: "main".into(),
                dest_name: "main".into()
            }
        );
    }

    #[test]
    fn equal_scripts_are_left_alone_and_user_scripts_are_never_touched() {
        let src = [s("main", "keep;", true)];
        let dst = [s("main", "keep;", true), s("mine", "stop;", false)];
        let p = plan(&src, &dst, &CopyRecord::default());
        assert_eq!(steps(&p), vec![("main", "main", Step::Unchanged)]);
        assert_eq!(p.activation, Activation::Keep);
        assert_eq!(p.uploads().count(), 0);
        let c = compare(&src, &dst, &CopyRecord::default());
        assert!(c.is_complete());
        assert_eq!(c.extra, vec!["mine"]);
    }

    #[test]
    fn a_collision_with_a_user_script_goes_beside_it_and_stays_idempotent() {
        let src = [s("main", "keep;", true), s("main-migrated-2", "x;", false)];
        let dst = [
            s("main", "theirs;", true),
            s("main-migrated", "other;", false),
        ];
        let p = plan(&src, &dst, &CopyRecord::default());
        // main-migrated is taken, main-migrated-2 is another source script's name.
        assert_eq!(
            steps(&p),
            vec![
                ("main", "main-migrated-3", Step::Beside),
                ("main-migrated-2", "main-migrated-2", Step::Create),
            ]
        );
        assert_eq!(
            p.activation,
            Activation::Activate {
                source_name: "main".into(),
                dest_name: "main-migrated-3".into()
            }
        );
        // The next pass, without any record, finds the copy by content.
        let dst2 = [
            s("main", "theirs;", false),
            s("main-migrated", "other;", false),
            s("main-migrated-3", "keep;", true),
            s("main-migrated-2", "x;", false),
        ];
        let p = plan(&src, &dst2, &CopyRecord::default());
        assert_eq!(p.uploads().count(), 0);
        assert_eq!(p.activation, Activation::Keep);
        let c = compare(&src, &dst2, &CopyRecord::default());
        assert_eq!(
            c.scripts[0].state,
            ScriptState::SameAs("main-migrated-3".into())
        );
        assert!(c.is_complete());
        assert_eq!(c.extra, vec!["main", "main-migrated"]);
    }

    #[test]
    fn a_changed_source_script_updates_mailshifts_own_copy_only() {
        let mut record = CopyRecord::default();
        record.placed("main", "main", b"keep;");
        let src = [s("main", "discard;", true)];
        let dst = [s("main", "keep;", true)];
        let p = plan(&src, &dst, &record);
        assert_eq!(steps(&p), vec![("main", "main", Step::Update)]);
        assert_eq!(p.activation, Activation::Keep);
        // Changed on the destination since mailshift put it there: kept, copy beside.
        let dst = [s("main", "edited by the user;", true)];
        let p = plan(&src, &dst, &record);
        assert_eq!(steps(&p), vec![("main", "main-migrated", Step::Beside)]);
        // Without a record the same name with other content is not mailshift's.
        let p = plan(&src, &[s("main", "keep;", false)], &CopyRecord::default());
        assert_eq!(steps(&p), vec![("main", "main-migrated", Step::Beside)]);
        let c = compare(&src, &[s("main", "keep;", false)], &record);
        assert_eq!(c.scripts[0].state, ScriptState::Differs);
        assert!(!c.is_complete());
    }

    #[test]
    fn a_recorded_copy_beside_is_updated_in_place() {
        let mut record = CopyRecord::default();
        record.placed("main", "main-migrated", b"v1;");
        let src = [s("main", "v2;", false)];
        let dst = [s("main", "theirs;", true), s("main-migrated", "v1;", false)];
        let p = plan(&src, &dst, &record);
        assert_eq!(steps(&p), vec![("main", "main-migrated", Step::Update)]);
        // The user's active script is theirs, not a copy: not switched off.
        assert_eq!(p.activation, Activation::Keep);
    }

    #[test]
    fn activation_follows_the_source() {
        // Source switched its vacation off: the destination's copy is switched off too.
        let src = [s("vacation", "v;", false)];
        let dst = [s("vacation", "v;", true)];
        let p = plan(&src, &dst, &CopyRecord::default());
        assert_eq!(
            p.activation,
            Activation::Deactivate {
                dest_name: "vacation".into()
            }
        );
        let c = compare(&src, &dst, &CopyRecord::default());
        assert!(!c.active_matches);
        // The source's active script moved to another one.
        let src = [s("a", "a;", false), s("b", "b;", true)];
        let dst = [s("a", "a;", true), s("b", "b;", false)];
        assert_eq!(
            plan(&src, &dst, &CopyRecord::default()).activation,
            Activation::Activate {
                source_name: "b".into(),
                dest_name: "b".into()
            }
        );
        let c = compare(&src, &dst, &CopyRecord::default());
        assert!(!c.active_matches && !c.is_complete());
        assert_eq!(c.source_active.as_deref(), Some("b"));
        assert_eq!(c.dest_active.as_deref(), Some("a"));
        // No active script anywhere, or the user's own one on the destination: fine.
        let c = compare(
            &[s("a", "a;", false)],
            &[s("mine", "m;", true)],
            &CopyRecord::default(),
        );
        assert!(c.active_matches);
        assert_eq!(c.scripts[0].state, ScriptState::Missing);
    }

    #[test]
    fn a_recorded_name_taken_by_a_new_source_script_is_not_reused() {
        let mut record = CopyRecord::default();
        record.placed("a", "a-migrated", b"old;");
        // The user later made a source script literally called "a-migrated".
        let src = [s("a", "new;", false), s("a-migrated", "mine;", false)];
        let dst = [s("a", "theirs;", false), s("a-migrated", "old;", false)];
        let p = plan(&src, &dst, &record);
        let st = steps(&p);
        assert_eq!(st[0], ("a", "a-migrated-2", Step::Beside));
        // "a-migrated" on the destination is not a's any more, nor the new script's.
        assert_eq!(st[1], ("a-migrated", "a-migrated-migrated", Step::Beside));
        let names: BTreeSet<_> = p.scripts.iter().map(|x| &x.dest_name).collect();
        assert_eq!(names.len(), 2);
    }

    #[test]
    fn the_record_round_trips_as_json() {
        let mut r = CopyRecord::default();
        r.placed("main", "main", b"keep;");
        let json = serde_json::to_string(&r).unwrap();
        assert_eq!(serde_json::from_str::<CopyRecord>(&json).unwrap(), r);
        assert!(json.contains(&Fingerprint::of(b"keep;").to_hex()));
    }

    #[test]
    fn debug_output_hides_script_content() {
        let d = format!("{:?}", s("v", "vacation \"I am in Bali\";", true));
        assert!(!d.contains("Bali") && d.contains("bytes"), "{d}");
    }
}
