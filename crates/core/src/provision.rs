//! Provisioning the new server before any mail is copied (`mailshift provision`): the
//! destination mailboxes with their users' passwords and a quota, plus aliases and
//! forwards (see [`crate::aliases`]).
//!
//! This module owns the decisions, all pure: which password a new mailbox gets (the old
//! one carried as a hash, the old one hashed from its plaintext, or a temporary one), how
//! big its quota is, what must be done to reach the desired state from what the backend
//! already holds ([`plan`], so a second run does nothing), and the two ports:
//! [`Provisioner`] (a backend that creates mailboxes: SQL tables, an operator's program)
//! and [`ProvisionStore`] (what mailshift records about it).

use crate::Result;
use crate::aliases::AliasEntry;
use async_trait::async_trait;
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use uuid::Uuid;

// ---------------------------------------------------------------------------------------
// Addresses

/// A mail address, lower-cased: `local@domain`.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Address {
    pub local: String,
    pub domain: String,
}

impl Address {
    /// Parses `local@domain` (RFC 5321's dot-atom local parts, DNS names with at least
    /// one dot); the reason names what is wrong, never more than the value itself.
    pub fn parse(s: &str) -> std::result::Result<Address, String> {
        let s = s.trim();
        let Some((local, domain)) = s.rsplit_once('@') else {
            return Err(format!("'{s}' is not a mail address (local@domain)"));
        };
        let atext = |c: char| c.is_ascii_alphanumeric() || "!#$%&'*+/=?^_`{|}~-".contains(c);
        if local.is_empty()
            || local.len() > 64
            || local.starts_with('.')
            || local.ends_with('.')
            || local.contains("..")
            || !local.chars().all(|c| atext(c) || c == '.')
        {
            return Err(format!("'{s}' has no valid local part before the @"));
        }
        let domain = domain.trim_end_matches('.');
        let label_ok = |l: &str| {
            !l.is_empty()
                && l.len() <= 63
                && !l.starts_with('-')
                && !l.ends_with('-')
                && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        };
        if domain.len() > 253 || !domain.contains('.') || !domain.split('.').all(label_ok) {
            return Err(format!("'{s}' has no valid domain after the @"));
        }
        Ok(Address {
            local: local.to_ascii_lowercase(),
            domain: domain.to_ascii_lowercase(),
        })
    }
}

impl std::fmt::Display for Address {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}@{}", self.local, self.domain)
    }
}

// ---------------------------------------------------------------------------------------
// Passwords

/// Schemes a carried hash may use, as Dovecot names them (PostfixAdmin stores the same
/// `{SCHEME}` prefix).
pub const HASH_SCHEMES: [&str; 13] = [
    "SHA512-CRYPT",
    "SHA256-CRYPT",
    "BLF-CRYPT",
    "ARGON2ID",
    "ARGON2I",
    "MD5-CRYPT",
    "CRYPT",
    "SSHA512",
    "SSHA256",
    "SSHA",
    "SHA512",
    "SHA256",
    "SHA",
];

/// A password hash carried from the old server, `{SCHEME}value`, checked for its scheme
/// and shape. A secret: `Debug` shows the scheme only, and no error quotes it.
#[derive(Clone, PartialEq, Eq)]
pub struct PasswordHash {
    scheme: String,
    /// The whole `{SCHEME}value`, scheme upper-cased.
    full: String,
}

impl std::fmt::Debug for PasswordHash {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PasswordHash({{{}}} [redacted])", self.scheme)
    }
}

const CRYPT64: &str = "./0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

fn crypt64(s: &str, len: usize) -> bool {
    s.len() == len && s.chars().all(|c| CRYPT64.contains(c))
}

/// Bytes decoded from standard base64 with padding, or None when it is not base64.
fn base64_len(s: &str) -> Option<usize> {
    if s.is_empty() || !s.len().is_multiple_of(4) {
        return None;
    }
    let body = s.trim_end_matches('=');
    let pad = s.len() - body.len();
    if pad > 2
        || !body
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '+' || c == '/')
    {
        return None;
    }
    Some(s.len() / 4 * 3 - pad)
}

/// `$N$[rounds=R$]salt$hash` with a hash of `hash_len` crypt64 characters.
fn sha_crypt_shape(v: &str, id: &str, hash_len: usize, max_salt: usize) -> bool {
    let Some(rest) = v.strip_prefix(id) else {
        return false;
    };
    let rest = match rest.strip_prefix("rounds=") {
        Some(r) => match r.split_once('$') {
            Some((n, after)) if n.parse::<u32>().is_ok_and(|n| n >= 1000) => after,
            _ => return false,
        },
        None => rest,
    };
    match rest.split_once('$') {
        Some((salt, hash)) => {
            salt.len() <= max_salt
                && !salt.contains(|c: char| c.is_whitespace() || c == ':')
                && crypt64(hash, hash_len)
        }
        None => false,
    }
}

fn bcrypt_shape(v: &str) -> bool {
    let mut parts = v.splitn(4, '$');
    matches!(
        (parts.next(), parts.next(), parts.next(), parts.next()),
        (Some(""), Some("2a" | "2b" | "2x" | "2y"), Some(cost), Some(rest))
            if cost.len() == 2
                && cost.parse::<u8>().is_ok_and(|c| (4..=31).contains(&c))
                && crypt64(rest, 53)
    )
}

fn argon2_shape(v: &str, variant: &str) -> bool {
    let Some(rest) = v.strip_prefix(&format!("${variant}$")) else {
        return false;
    };
    let rest = match rest.strip_prefix("v=") {
        Some(r) => match r.split_once('$') {
            Some((n, after)) if n.parse::<u32>().is_ok() => after,
            _ => return false,
        },
        None => rest,
    };
    let b64 = |s: &str| {
        s.len() >= 8
            && s.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '+' || c == '/')
    };
    let mut parts = rest.split('$');
    let (Some(params), Some(salt), Some(hash), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return false;
    };
    let params_ok = params.split(',').count() == 3
        && params.split(',').zip(["m=", "t=", "p="]).all(|(p, k)| {
            p.strip_prefix(k)
                .is_some_and(|n| !n.is_empty() && n.parse::<u32>().is_ok())
        });
    params_ok && b64(salt) && b64(hash)
}

impl PasswordHash {
    /// Checks a `{SCHEME}value` from the import file. The error names the scheme and the
    /// expected shape, never the value.
    pub fn parse(s: &str) -> std::result::Result<PasswordHash, String> {
        let s = s.trim();
        let Some((scheme, value)) = s
            .strip_prefix('{')
            .and_then(|r| r.split_once('}'))
            .filter(|(scheme, _)| !scheme.is_empty())
        else {
            return Err(
                "source_password_hash needs its scheme prefix as Dovecot and PostfixAdmin \
                 store it, e.g. {SHA512-CRYPT}$6$..."
                    .into(),
            );
        };
        let scheme = scheme.to_ascii_uppercase();
        if matches!(
            scheme.as_str(),
            "PLAIN" | "CLEARTEXT" | "CLEAR" | "PLAIN-TRUNC"
        ) {
            return Err(format!(
                "source_password_hash holds a {{{scheme}}} password, which is not a hash: put a \
                 cleartext password in source_password instead"
            ));
        }
        if !HASH_SCHEMES.contains(&scheme.as_str()) {
            return Err(format!(
                "source_password_hash scheme {{{scheme}}} is not supported (supported: {})",
                HASH_SCHEMES.join(", ")
            ));
        }
        let shape = match scheme.as_str() {
            "SHA512-CRYPT" => sha_crypt_shape(value, "$6$", 86, 16)
                .then_some(())
                .ok_or("$6$, an optional rounds=N$, a salt, $ and 86 characters of [./0-9A-Za-z]"),
            "SHA256-CRYPT" => sha_crypt_shape(value, "$5$", 43, 16)
                .then_some(())
                .ok_or("$5$, an optional rounds=N$, a salt, $ and 43 characters of [./0-9A-Za-z]"),
            "MD5-CRYPT" => sha_crypt_shape(value, "$1$", 22, 8)
                .then_some(())
                .ok_or("$1$, a salt of up to 8 characters, $ and 22 characters of [./0-9A-Za-z]"),
            "BLF-CRYPT" => bcrypt_shape(value).then_some(()).ok_or(
                "$2y$ (or $2a$, $2b$), a two-digit cost, $ and 53 characters of [./0-9A-Za-z]",
            ),
            "CRYPT" => (crypt64(value, 13)
                || bcrypt_shape(value)
                || sha_crypt_shape(value, "$6$", 86, 16)
                || sha_crypt_shape(value, "$5$", 43, 16)
                || sha_crypt_shape(value, "$1$", 22, 8))
            .then_some(())
            .ok_or("a crypt(3) string: 13 characters of DES crypt, or $1$, $2y$, $5$, $6$ crypt"),
            "ARGON2ID" => argon2_shape(value, "argon2id")
                .then_some(())
                .ok_or("$argon2id$v=19$m=N,t=N,p=N$ then a base64 salt, $ and a base64 hash"),
            "ARGON2I" => argon2_shape(value, "argon2i")
                .then_some(())
                .ok_or("$argon2i$v=19$m=N,t=N,p=N$ then a base64 salt, $ and a base64 hash"),
            salted @ ("SSHA" | "SSHA256" | "SSHA512") => {
                let digest = match salted {
                    "SSHA" => 20,
                    "SSHA256" => 32,
                    _ => 64,
                };
                base64_len(value)
                    .filter(|n| *n > digest)
                    .map(|_| ())
                    .ok_or(match salted {
                        "SSHA" => "base64 of a 20-byte SHA-1 digest followed by its salt",
                        "SSHA256" => "base64 of a 32-byte SHA-256 digest followed by its salt",
                        _ => "base64 of a 64-byte SHA-512 digest followed by its salt",
                    })
            }
            plain => {
                let (digest, what) = match plain {
                    "SHA" => (20, "base64 of a 20-byte SHA-1 digest"),
                    "SHA256" => (32, "base64 of a 32-byte SHA-256 digest"),
                    _ => (64, "base64 of a 64-byte SHA-512 digest"),
                };
                base64_len(value)
                    .filter(|n| *n == digest)
                    .map(|_| ())
                    .ok_or(what)
            }
        };
        match shape {
            Ok(()) => Ok(PasswordHash {
                full: format!("{{{scheme}}}{value}"),
                scheme,
            }),
            Err(expected) => Err(format!(
                "source_password_hash is not a valid {{{scheme}}} hash (expected {expected})"
            )),
        }
    }

    /// The scheme, upper-case, without braces: `SHA512-CRYPT`.
    pub fn scheme(&self) -> &str {
        &self.scheme
    }

    /// The whole `{SCHEME}value`, as a Dovecot passdb reads it.
    pub fn expose(&self) -> &str {
        &self.full
    }

    /// The value without its `{SCHEME}` prefix (`$6$...`).
    pub fn value(&self) -> &str {
        &self.full[self.scheme.len() + 2..]
    }
}

/// How a new mailbox got its password.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PasswordCarry {
    /// The old server's hash, as is: the user keeps their password.
    Hash,
    /// The old password's plaintext (from the import), hashed: the user keeps it.
    Plaintext,
    /// A new random password, exported once for the letter to the user.
    Temporary,
}

impl PasswordCarry {
    pub fn as_str(self) -> &'static str {
        match self {
            PasswordCarry::Hash => "hash",
            PasswordCarry::Plaintext => "plaintext",
            PasswordCarry::Temporary => "temporary",
        }
    }

    pub fn parse(s: &str) -> Option<PasswordCarry> {
        Some(match s {
            "hash" => PasswordCarry::Hash,
            "plaintext" => PasswordCarry::Plaintext,
            "temporary" => PasswordCarry::Temporary,
            _ => return None,
        })
    }

    /// How an operator reads it: "carried as hash".
    pub fn describe(self) -> &'static str {
        match self {
            PasswordCarry::Hash => "password carried as hash",
            PasswordCarry::Plaintext => "password hashed from plaintext",
            PasswordCarry::Temporary => "temporary password",
        }
    }
}

/// Which carried hashes a backend can store as they are.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PasswordSupport {
    /// Upper-case scheme names; `*` accepts every scheme of [`HASH_SCHEMES`].
    pub hash_schemes: Vec<String>,
}

impl PasswordSupport {
    pub fn any_hash() -> PasswordSupport {
        PasswordSupport {
            hash_schemes: vec!["*".into()],
        }
    }

    pub fn accepts(&self, scheme: &str) -> bool {
        self.hash_schemes
            .iter()
            .any(|s| s == "*" || s.eq_ignore_ascii_case(scheme))
    }
}

/// A password decision and, when it is not the first choice, why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PasswordDecision {
    pub carry: PasswordCarry,
    pub note: Option<String>,
}

/// Which password a new mailbox gets.
///
/// 1. The imported hash, if the backend takes its scheme: the user keeps their password.
/// 2. Otherwise the imported plaintext, when the row gives the same password for both
///    servers (the spreadsheet says the user keeps it; the Exchange layout always does).
/// 3. Otherwise a temporary password: the row's source password is an application
///    password or an administrator's reset, not one to hand on to the new server.
pub fn decide_password(
    hash: Option<&PasswordHash>,
    source_password: &SecretString,
    dest_password: &SecretString,
    support: &PasswordSupport,
) -> PasswordDecision {
    let refused = match hash {
        Some(h) if support.accepts(h.scheme()) => {
            return PasswordDecision {
                carry: PasswordCarry::Hash,
                note: None,
            };
        }
        Some(h) => Some(h.scheme().to_string()),
        None => None,
    };
    let same = source_password.expose_secret() == dest_password.expose_secret()
        && !source_password.expose_secret().is_empty();
    let carry = if same {
        PasswordCarry::Plaintext
    } else {
        PasswordCarry::Temporary
    };
    let note = match (&refused, carry) {
        (Some(s), PasswordCarry::Plaintext) => Some(format!(
            "the backend does not take {{{s}}} hashes: the imported plaintext password is hashed instead"
        )),
        (Some(s), _) => Some(format!(
            "the backend does not take {{{s}}} hashes and the row gives different passwords \
             for the two servers: the user gets a temporary password"
        )),
        (None, PasswordCarry::Temporary) => Some(
            "no hash imported and the row gives different passwords for the two servers: the \
             user gets a temporary password"
                .into(),
        ),
        _ => None,
    };
    PasswordDecision { carry, note }
}

// ---------------------------------------------------------------------------------------
// Quotas

pub const MIB: u64 = 1 << 20;
pub const GIB: u64 = 1 << 30;

/// How big a new mailbox's quota is.
#[derive(Clone, Debug, PartialEq)]
pub struct QuotaPolicy {
    /// Headroom over the source's size (1.5: half as much again for new mail).
    pub factor: f64,
    /// Small mailboxes get at least this.
    pub min_bytes: u64,
    /// One quota for every mailbox, whatever its size.
    pub fixed_bytes: Option<u64>,
}

impl Default for QuotaPolicy {
    fn default() -> Self {
        QuotaPolicy {
            factor: 1.5,
            min_bytes: GIB,
            fixed_bytes: None,
        }
    }
}

impl QuotaPolicy {
    pub fn check(&self) -> std::result::Result<(), String> {
        if !self.factor.is_finite() || self.factor < 1.0 || self.factor > 100.0 {
            return Err(format!(
                "a quota factor of {} would not hold the source's mail: use 1 or more (1.5 leaves half as much again for new mail)",
                self.factor
            ));
        }
        Ok(())
    }
}

/// The quota for a mailbox whose source holds `source_bytes`: that times the factor,
/// rounded up to a whole MiB, at least the minimum. None when the size is unknown and no
/// fixed quota is set.
pub fn quota_for(source_bytes: Option<u64>, p: &QuotaPolicy) -> Option<u64> {
    if let Some(fixed) = p.fixed_bytes {
        return Some(fixed);
    }
    let bytes = source_bytes?;
    let wanted = (bytes as f64 * p.factor).ceil();
    let wanted = if wanted >= u64::MAX as f64 {
        u64::MAX
    } else {
        wanted as u64
    };
    let rounded = wanted.div_ceil(MIB).saturating_mul(MIB);
    Some(rounded.max(p.min_bytes))
}

/// Parses a size: `1073741824`, `500M`, `1.5G`, `2GiB`, `100MB` (K, M, G, T are powers
/// of 1024).
pub fn parse_size(s: &str) -> std::result::Result<u64, String> {
    let t = s.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let mult: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1 << 10,
        "m" | "mb" | "mib" => MIB,
        "g" | "gb" | "gib" => GIB,
        "t" | "tb" | "tib" => 1 << 40,
        _ => return Err(format!("'{s}' is not a size (e.g. 500M, 2G, 1.5GiB)")),
    };
    let n: f64 = num
        .parse()
        .map_err(|_| format!("'{s}' is not a size (e.g. 500M, 2G, 1.5GiB)"))?;
    let bytes = (n * mult as f64).ceil();
    if !bytes.is_finite() || bytes >= u64::MAX as f64 {
        return Err(format!("'{s}' is too large"));
    }
    Ok(bytes as u64)
}

/// `1.5 GiB`, `300 MiB`, `512 KiB`, `12 B`.
pub fn format_size(bytes: u64) -> String {
    let units = [
        (1u64 << 40, "TiB"),
        (GIB, "GiB"),
        (MIB, "MiB"),
        (1 << 10, "KiB"),
    ];
    for (size, name) in units {
        if bytes >= size {
            let v = bytes as f64 / size as f64;
            return if (v - v.round()).abs() < 0.05 {
                format!("{} {name}", v.round())
            } else {
                format!("{v:.1} {name}")
            };
        }
    }
    format!("{bytes} B")
}

// ---------------------------------------------------------------------------------------
// The plan

/// A destination mailbox as it should be.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MailboxSpec {
    /// The fleet's mailbox row this provisions.
    pub mailbox_id: Uuid,
    pub address: Address,
    pub quota_bytes: u64,
    pub carry: PasswordCarry,
    /// Why the password is not the first choice, if it is not.
    pub note: Option<String>,
}

/// What a backend already holds of what a batch needs (addresses lower-case).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Existing {
    pub mailboxes: BTreeSet<String>,
    /// Alias or forward address -> where it delivers.
    pub aliases: BTreeMap<String, BTreeSet<String>>,
    /// Domains the backend knows; None when it does not manage domains.
    pub domains: Option<BTreeSet<String>>,
}

/// What a backend is asked about (lower-case).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Lookup {
    pub mailboxes: Vec<String>,
    pub aliases: Vec<String>,
    pub domains: Vec<String>,
}

/// One change to the destination.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Step {
    CreateDomain(String),
    CreateMailbox(MailboxSpec),
    /// Create an alias or forward, or change where it delivers (`previous`).
    SetAlias {
        entry: AliasEntry,
        previous: Option<BTreeSet<String>>,
    },
}

/// The changes that bring the destination to the desired state, in order (domains,
/// mailboxes, then aliases, so targets exist first), and what is already there.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Plan {
    pub steps: Vec<Step>,
    /// Mailboxes that exist already (left exactly as they are).
    pub existing: Vec<MailboxSpec>,
    /// Aliases and forwards that already deliver where they should.
    pub aliases_unchanged: Vec<String>,
}

impl Plan {
    pub fn mailboxes_to_create(&self) -> impl Iterator<Item = &MailboxSpec> {
        self.steps.iter().filter_map(|s| match s {
            Step::CreateMailbox(m) => Some(m),
            _ => None,
        })
    }

    pub fn aliases_to_set(&self) -> impl Iterator<Item = (&AliasEntry, Option<&BTreeSet<String>>)> {
        self.steps.iter().filter_map(|s| match s {
            Step::SetAlias { entry, previous } => Some((entry, previous.as_ref())),
            _ => None,
        })
    }

    pub fn domains_to_create(&self) -> impl Iterator<Item = &str> {
        self.steps.iter().filter_map(|s| match s {
            Step::CreateDomain(d) => Some(d.as_str()),
            _ => None,
        })
    }
}

/// Desired state minus existing state. A mailbox that exists is never touched (its
/// password and quota are the owner's now); an alias is set only when it delivers
/// elsewhere than the file says.
pub fn plan(mailboxes: Vec<MailboxSpec>, aliases: &[AliasEntry], existing: &Existing) -> Plan {
    let mut out = Plan::default();
    let mut creates = Vec::new();
    let mut domains: BTreeSet<String> = BTreeSet::new();
    for m in mailboxes {
        if existing.mailboxes.contains(&m.address.to_string()) {
            out.existing.push(m);
        } else {
            domains.insert(m.address.domain.clone());
            creates.push(Step::CreateMailbox(m));
        }
    }
    let mut alias_steps = Vec::new();
    for a in aliases {
        let key = a.address.to_string();
        let goto = a.goto();
        match existing.aliases.get(&key) {
            Some(have) if *have == goto => out.aliases_unchanged.push(key),
            previous => {
                domains.insert(a.address.domain.clone());
                alias_steps.push(Step::SetAlias {
                    entry: a.clone(),
                    previous: previous.cloned(),
                });
            }
        }
    }
    if let Some(known) = &existing.domains {
        for d in domains.into_iter().filter(|d| !known.contains(d)) {
            out.steps.push(Step::CreateDomain(d));
        }
    }
    out.steps.extend(creates);
    out.steps.extend(alias_steps);
    out
}

// ---------------------------------------------------------------------------------------
// Ports

/// The password a backend stores for a new mailbox. A secret: `Debug` is redacted.
#[derive(Clone)]
pub enum NewPassword {
    /// Store as is.
    Hash(PasswordHash),
    /// Hash it (or hand it to a program that wants plaintext): the imported password or
    /// a temporary one.
    Plaintext(SecretString),
}

impl std::fmt::Debug for NewPassword {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            NewPassword::Hash(h) => write!(f, "NewPassword::Hash({h:?})"),
            NewPassword::Plaintext(_) => f.write_str("NewPassword::Plaintext([redacted])"),
        }
    }
}

/// A backend that creates mailboxes, aliases and forwards on the new server (SQL
/// tables of a Postfix + Dovecot stack, an operator's program for a hosting panel...).
/// Each call is one change; a failed call changes nothing of its own.
#[async_trait]
pub trait Provisioner: Send + Sync {
    /// How messages name the backend (`sql postgres://postfix@db/postfix`), no secret.
    fn describe(&self) -> String;
    fn password_support(&self) -> PasswordSupport;
    /// What exists of `lookup`; None when the backend cannot tell (then mailshift's own
    /// records of what it did stand in).
    async fn existing(&self, lookup: &Lookup) -> Result<Option<Existing>>;
    async fn create_domain(&self, domain: &str) -> Result<()>;
    async fn create_mailbox(&self, mailbox: &MailboxSpec, password: &NewPassword) -> Result<()>;
    /// Creates the alias or forward, or replaces where it delivers.
    async fn set_alias(&self, entry: &AliasEntry) -> Result<()>;
}

/// What provisioning did to one mailbox, as the fleet records it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct ProvisionRecord {
    pub mailbox_id: Uuid,
    /// A hash was imported with the mailbox (`source_password_hash`).
    pub imported_hash: bool,
    /// Unix seconds; None until mailshift created the mailbox.
    #[serde(default, with = "crate::time::unix_opt")]
    pub provisioned_at: Option<i64>,
    pub carry: Option<PasswordCarry>,
    pub quota_bytes: Option<u64>,
    /// Aliases that deliver to this mailbox and where it forwards to, as last set.
    pub aliases: Vec<String>,
    #[serde(default, with = "crate::time::unix_opt")]
    pub aliases_at: Option<i64>,
    /// A temporary password is sealed for it.
    pub temporary: bool,
    /// When the temporary password went into an export file (once).
    #[serde(default, with = "crate::time::unix_opt")]
    pub temporary_exported_at: Option<i64>,
}

/// The fleet's record of provisioning: imported hashes and temporary passwords (sealed),
/// each batch's backend (its configuration sealed: it may hold a database password),
/// and what was done.
#[async_trait]
pub trait ProvisionStore: Send + Sync {
    /// Records (or, with None, forgets) the hash imported for a mailbox.
    async fn set_imported_hash(&self, mailbox: Uuid, hash: Option<&PasswordHash>) -> Result<()>;
    async fn imported_hash(&self, mailbox: Uuid) -> Result<Option<PasswordHash>>;
    /// One record per mailbox of the batch that has any.
    async fn provision_records(&self, batch: &str) -> Result<Vec<ProvisionRecord>>;
    async fn set_provision_backend(
        &self,
        batch: &str,
        kind: &str,
        config: &SecretString,
        described: &str,
    ) -> Result<()>;
    /// The batch's backend kind and configuration.
    async fn provision_backend(&self, batch: &str) -> Result<Option<(String, SecretString)>>;
    /// Seals a temporary password for the mailbox and makes it the password the copy
    /// logs in to the new server with.
    async fn set_temporary_password(&self, mailbox: Uuid, password: &SecretString) -> Result<()>;
    async fn temporary_password(&self, mailbox: Uuid) -> Result<Option<SecretString>>;
    async fn record_provisioned(
        &self,
        mailbox: Uuid,
        carry: PasswordCarry,
        quota_bytes: u64,
        at: i64,
    ) -> Result<()>;
    /// Records the aliases and forwards that were set (all of the batch's, after a run),
    /// and per mailbox the addresses concerning it.
    async fn record_aliases(
        &self,
        batch: &str,
        entries: &[AliasEntry],
        per_mailbox: &BTreeMap<Uuid, Vec<String>>,
        at: i64,
    ) -> Result<()>;
    /// The aliases recorded for the batch: address -> where it delivers.
    async fn recorded_aliases(&self, batch: &str) -> Result<BTreeMap<String, BTreeSet<String>>>;
    async fn mark_exported(&self, mailboxes: &[Uuid], at: i64) -> Result<()>;
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::aliases::AliasKind;

    const SHA512: &str = "{SHA512-CRYPT}$6$37iK/C/QOI.sOIBV$5y50eSP84mBy54JWznjJ30X2VMmksaJ4d8uU3Fo6kia5l.cVSbOKI/40QfSBpNcxMpI1cmVaGuhesqvc4GBOH0";

    #[test]
    fn addresses() {
        let a = Address::parse(" Alice.B+x@Acme.Example. ").unwrap();
        assert_eq!(a.to_string(), "alice.b+x@acme.example");
        for bad in [
            "alice",
            "@acme.example",
            "alice@",
            "alice@localhost",
            "a..b@x.example",
            "a b@x.example",
            "a@-x.example",
            "a@x_y.example",
        ] {
            assert!(Address::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn hashes_of_every_scheme_dovecot_makes() {
        // Made with `doveadm pw -s SCHEME -p x` (Dovecot 2.3).
        for h in [
            SHA512,
            "{SHA256-CRYPT}$5$W2/0.LQ6k8y1xyDg$QYM0CgcBAEmj/Q6ZL.MqMVgRx1SjTGK1YbpaL5NC3d/",
            "{SHA512-CRYPT}$6$rounds=10000$salt$5y50eSP84mBy54JWznjJ30X2VMmksaJ4d8uU3Fo6kia5l.cVSbOKI/40QfSBpNcxMpI1cmVaGuhesqvc4GBOH0",
            "{BLF-CRYPT}$2y$05$7gE74aq3A/vc4c2zikWLP.yEbAKNspErwp5YiiBYRSgdIoTuIpbue",
            "{ssha}NOZQKNJ2zopl4rq7elVS6ElSak0ltPrB",
            "{ARGON2ID}$argon2id$v=19$m=65536,t=3,p=1$DiA7oXI+Dc8sgpcH36TjUg$wAyf7HCHi5bUPf6tald8l9ZjdubnbcQBGzQF0oEhTms",
            "{ARGON2I}$argon2i$v=19$m=32768,t=4,p=1$w6DNHbaFX5H19S2G/AZYRA$nCT1gO3MsCUnDX41wDnJ5XOQwCEVIZHfI34XIlS1lx8",
            "{MD5-CRYPT}$1$m4teA3Ss$o9rUyn5FUR2fArokGCWts.",
            "{CRYPT}$2y$05$ptC6hLCJ.YmERqHB3Al33etqdvV6OWDygiF6pqz2IPc9rri.XPnPe",
            "{SSHA512}NlI918UIHhg8X8iPfnK9WMkjOO3y9PeQYKga1N1/daVMDmVUETR/xOgJOnf5mE0gKGm98K7IhHcg85HEBviMW+eDzUY=",
            "{SSHA256}FJcDzUkTwqTQXDOJBGdxIhZuw56gGuNxwGJ7Il01K02PB6AH",
            "{SHA512}pKvURIxJVi2CgRXROh/M6pJ/UrTVRZKX+LQ+QtqJI4vBNibkPcs43bCCSIkn7JBPtCBXRDmD6IWFF51QVRr+Yg==",
        ] {
            let p = PasswordHash::parse(h).unwrap_or_else(|e| panic!("{h}: {e}"));
            assert!(p.expose().starts_with(&format!("{{{}}}", p.scheme())));
            assert!(!format!("{p:?}").contains('$'), "{p:?}");
        }
        let p = PasswordHash::parse(SHA512).unwrap();
        assert_eq!(p.scheme(), "SHA512-CRYPT");
        assert!(p.value().starts_with("$6$37iK"));
    }

    #[test]
    fn bad_hashes_are_named_without_their_value() {
        let cases = [
            ("$6$abc$def", "needs its scheme prefix"),
            ("{PLAIN}hunter2", "not a hash"),
            ("{NTLM}0CB6948805F797BF2A82807973B89537", "not supported"),
            ("{SHA512-CRYPT}$6$salt$tooshort", "{SHA512-CRYPT}"),
            (
                "{SHA512-CRYPT}$5$W2/0.LQ6k8y1xyDg$QYM0CgcBAEmj/Q6ZL.MqMVgRx1SjTGK1YbpaL5NC3d/",
                "$6$",
            ),
            (
                "{BLF-CRYPT}$2y$99$7gE74aq3A/vc4c2zikWLP.yEbAKNspErwp5YiiBYRSgdIoTuIpbue",
                "cost",
            ),
            ("{SSHA}c2hvcnQ=", "20-byte"),
            ("{ARGON2ID}$argon2id$m=1$x$y", "argon2id"),
        ];
        for (value, want) in cases {
            let e = PasswordHash::parse(value).unwrap_err();
            assert!(e.contains(want), "{value}: {e}");
            let secret = value.split_once('}').map(|(_, v)| v).unwrap_or(value);
            assert!(!e.contains(secret), "the error quotes the value: {e}");
        }
    }

    #[test]
    fn password_decisions() {
        let h = PasswordHash::parse(SHA512).unwrap();
        let pw = |s: &str| SecretString::from(s.to_string());
        let any = PasswordSupport::any_hash();
        let none = PasswordSupport::default();
        let d = decide_password(Some(&h), &pw("a"), &pw("b"), &any);
        assert_eq!((d.carry, d.note), (PasswordCarry::Hash, None));
        let d = decide_password(None, &pw("same"), &pw("same"), &any);
        assert_eq!((d.carry, d.note), (PasswordCarry::Plaintext, None));
        let d = decide_password(None, &pw("app-pw"), &pw("other"), &any);
        assert_eq!(d.carry, PasswordCarry::Temporary);
        assert!(d.note.unwrap().contains("different passwords"));
        let d = decide_password(Some(&h), &pw("same"), &pw("same"), &none);
        assert_eq!(d.carry, PasswordCarry::Plaintext);
        assert!(d.note.unwrap().contains("{SHA512-CRYPT}"));
        let only_blf = PasswordSupport {
            hash_schemes: vec!["BLF-CRYPT".into()],
        };
        assert_eq!(
            decide_password(Some(&h), &pw("x"), &pw("y"), &only_blf).carry,
            PasswordCarry::Temporary
        );
    }

    #[test]
    fn quotas() {
        let p = QuotaPolicy {
            min_bytes: 0,
            ..Default::default()
        };
        assert_eq!(quota_for(Some(0), &p), Some(0));
        assert_eq!(quota_for(Some(1), &p), Some(MIB));
        assert_eq!(quota_for(Some(2 * GIB), &p), Some(3 * GIB));
        assert_eq!(quota_for(Some(10 * MIB + 1), &p), Some(16 * MIB));
        assert_eq!(quota_for(None, &p), None);
        let d = QuotaPolicy::default();
        assert_eq!(quota_for(Some(5 * MIB), &d), Some(GIB));
        let fixed = QuotaPolicy {
            fixed_bytes: Some(5 * GIB),
            ..Default::default()
        };
        assert_eq!(quota_for(None, &fixed), Some(5 * GIB));
        assert!(
            QuotaPolicy {
                factor: 0.5,
                ..Default::default()
            }
            .check()
            .is_err()
        );
        assert_eq!(parse_size("2G"), Ok(2 * GIB));
        assert_eq!(parse_size("1.5GiB"), Ok(3 * GIB / 2));
        assert_eq!(parse_size("500 MB"), Ok(500 * MIB));
        assert_eq!(parse_size("1234"), Ok(1234));
        assert!(parse_size("lots").is_err());
        assert_eq!(format_size(3 * GIB / 2), "1.5 GiB");
        assert_eq!(format_size(16 * MIB), "16 MiB");
        assert_eq!(format_size(12), "12 B");
    }

    fn spec(addr: &str) -> MailboxSpec {
        MailboxSpec {
            mailbox_id: Uuid::nil(),
            address: Address::parse(addr).unwrap(),
            quota_bytes: GIB,
            carry: PasswordCarry::Plaintext,
            note: None,
        }
    }

    fn alias(addr: &str, targets: &[&str], kind: AliasKind) -> AliasEntry {
        AliasEntry {
            address: Address::parse(addr).unwrap(),
            targets: targets.iter().map(|t| t.to_string()).collect(),
            kind,
            lines: vec![2],
        }
    }

    #[test]
    fn plan_from_nothing_then_nothing_to_do() {
        let mailboxes = vec![spec("ann@a.example"), spec("bob@b.example")];
        let aliases = vec![
            alias("sales@a.example", &["ann@a.example"], AliasKind::Alias),
            alias(
                "bob@b.example",
                &["bob@elsewhere.example"],
                AliasKind::Forward { keep_copy: true },
            ),
        ];
        let empty = Existing {
            domains: Some(["b.example".to_string()].into()),
            ..Default::default()
        };
        let p = plan(mailboxes.clone(), &aliases, &empty);
        assert_eq!(p.domains_to_create().collect::<Vec<_>>(), ["a.example"]);
        assert_eq!(p.mailboxes_to_create().count(), 2);
        assert_eq!(p.aliases_to_set().count(), 2);
        assert!(matches!(p.steps[0], Step::CreateDomain(_)));
        assert!(matches!(p.steps.last(), Some(Step::SetAlias { .. })));

        // What a backend holds after applying it.
        let after = Existing {
            mailboxes: ["ann@a.example", "bob@b.example"]
                .iter()
                .map(|s| s.to_string())
                .collect(),
            aliases: aliases
                .iter()
                .map(|a| (a.address.to_string(), a.goto()))
                .chain([(
                    "ann@a.example".to_string(),
                    ["ann@a.example".to_string()].into(),
                )])
                .collect(),
            domains: Some(
                ["a.example", "b.example"]
                    .iter()
                    .map(|s| s.to_string())
                    .collect(),
            ),
        };
        let p = plan(mailboxes, &aliases, &after);
        assert!(p.steps.is_empty(), "{p:?}");
        assert_eq!(p.existing.len(), 2);
        assert_eq!(p.aliases_unchanged.len(), 2);

        // A forward whose targets changed is set again, with what it had.
        let changed = vec![alias(
            "bob@b.example",
            &["bob@new.example"],
            AliasKind::Forward { keep_copy: true },
        )];
        let p = plan(vec![], &changed, &after);
        let (entry, previous) = p.aliases_to_set().next().unwrap();
        assert_eq!(entry.address.to_string(), "bob@b.example");
        assert!(previous.unwrap().contains("bob@elsewhere.example"));
    }
}
