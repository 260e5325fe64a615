//! Reading a spreadsheet of mailboxes (`mailshift batch import`): three layouts, every
//! row validated on its own, errors with the file's line numbers. Pure: the caller reads
//! the file and stores the good rows.
//!
//! Layouts:
//! - a CSV with a header naming `source_host, source_user, source_password, dest_host,
//!   dest_user, dest_password` (and optionally `source_port, dest_port, tls, folder_map,
//!   exclude, source_password_hash`), in any order;
//! - imapsync's `host1;user1;password1;host2;user2;password2` lines (no header);
//! - Exchange's header-less `EmailAddress,UserName,Password` lines, with the servers
//!   given on the command line (the old server is logged into as `UserName`, the new one
//!   as `EmailAddress`, both with `Password`).

use crate::endpoint::{Endpoint, Security};
use crate::folder::FolderRules;
use crate::provision::PasswordHash;
use secrecy::SecretString;
use std::collections::HashSet;

/// One mailbox of the file, ready to register.
#[derive(Clone, Debug)]
pub struct ImportRow {
    /// 1-based line of the file.
    pub line: usize,
    pub source: Endpoint,
    pub dest: Endpoint,
    pub source_password: SecretString,
    pub dest_password: SecretString,
    pub maps: Vec<String>,
    pub excludes: Vec<String>,
    /// The old server's hash of the user's password (`{SCHEME}...`), carried to the new
    /// server by `mailshift provision`.
    pub source_password_hash: Option<PasswordHash>,
}

/// A row that cannot be imported, and why.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct RowError {
    pub line: usize,
    pub reason: String,
}

/// Servers for layouts that do not name them (Exchange's).
#[derive(Clone, Debug, Default)]
pub struct Defaults {
    pub source_host: Option<String>,
    pub dest_host: Option<String>,
    pub source_port: Option<u16>,
    pub dest_port: Option<u16>,
    /// `imaps` (TLS, the default) or `starttls`.
    pub security: Option<Security>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Layout {
    Header,
    Imapsync,
    Exchange,
}

const REQUIRED: [&str; 6] = [
    "source_host",
    "source_user",
    "source_password",
    "dest_host",
    "dest_user",
    "dest_password",
];
const OPTIONAL: [&str; 6] = [
    "source_port",
    "dest_port",
    "tls",
    "folder_map",
    "exclude",
    "source_password_hash",
];

/// Parses a whole file. Good rows come back with the bad ones' errors; a file that is
/// not text or has no recognisable layout is one error for line 1.
/// Why no row of this file can be imported, whatever its rows say (the layout itself
/// lacks what it needs): to refuse the file before anything is made for it.
pub fn layout_problem(bytes: &[u8], defaults: &Defaults) -> Option<RowError> {
    let text = std::str::from_utf8(bytes).ok()?;
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let first = text.lines().find(|l| !l.trim().is_empty())?;
    exchange_without_servers(text, layout_of(first), defaults)
}

fn layout_of(first: &str) -> Layout {
    let header_cells: Vec<String> = first
        .split([',', ';'])
        .map(|c| c.trim().trim_matches('"').to_ascii_lowercase())
        .collect();
    if header_cells.iter().any(|c| c == "source_host") {
        Layout::Header
    } else if first.contains(';') {
        Layout::Imapsync
    } else {
        Layout::Exchange
    }
}

/// Exchange's layout names no server: without both on the command line every row would
/// fail for the same reason, said once instead.
fn exchange_without_servers(text: &str, layout: Layout, d: &Defaults) -> Option<RowError> {
    if layout != Layout::Exchange || (d.source_host.is_some() && d.dest_host.is_some()) {
        return None;
    }
    let line = text
        .lines()
        .position(|l| !l.trim().is_empty())
        .map_or(1, |i| i + 1);
    Some(RowError {
        line,
        reason: "this file has no header naming source_host, source_user, ... and no ';' \
                 (imapsync), so it is read as Exchange's EmailAddress,UserName,Password, \
                 which needs --source-host and --dest-host: give both, or add a header row \
                 (see mailshift batch import --help)"
            .into(),
    })
}

pub fn parse(bytes: &[u8], defaults: &Defaults) -> (Vec<ImportRow>, Vec<RowError>) {
    let text = match std::str::from_utf8(bytes) {
        Ok(t) => t.strip_prefix('\u{feff}').unwrap_or(t),
        Err(e) => {
            let line = bytes[..e.valid_up_to()]
                .iter()
                .filter(|b| **b == b'\n')
                .count()
                + 1;
            return (
                Vec::new(),
                vec![RowError {
                    line,
                    reason: "not UTF-8 text (save the spreadsheet as \"CSV UTF-8\")".into(),
                }],
            );
        }
    };
    let first = text.lines().find(|l| !l.trim().is_empty()).unwrap_or("");
    let layout = layout_of(first);
    if let Some(e) = exchange_without_servers(text, layout, defaults) {
        return (Vec::new(), vec![e]);
    }
    let delimiter =
        if layout == Layout::Imapsync || (layout == Layout::Header && !first.contains(',')) {
            b';'
        } else {
            b','
        };
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(false)
        .delimiter(delimiter)
        .flexible(true)
        .trim(csv::Trim::All)
        .from_reader(text.as_bytes());
    let mut rows = Vec::new();
    let mut errors = Vec::new();
    let mut columns: Option<Vec<String>> = None;
    let mut seen: HashSet<(String, String)> = HashSet::new();
    for record in reader.records() {
        let record = match record {
            Ok(r) => r,
            Err(e) => {
                let line = e
                    .position()
                    .map(|p| line_of(text, p.byte() as usize))
                    .unwrap_or(0);
                errors.push(RowError {
                    line,
                    reason: format!("unreadable CSV: {e}"),
                });
                continue;
            }
        };
        // From the byte offset: csv's own line count skips blank lines.
        let line = record
            .position()
            .map(|p| line_of(text, p.byte() as usize))
            .unwrap_or(0);
        if record.iter().all(str::is_empty) || record.get(0).is_some_and(|c| c.starts_with('#')) {
            continue;
        }
        if layout == Layout::Header && columns.is_none() {
            let names: Vec<String> = record.iter().map(|c| c.to_ascii_lowercase()).collect();
            let missing: Vec<&str> = REQUIRED
                .iter()
                .filter(|r| !names.iter().any(|n| n == *r))
                .copied()
                .collect();
            if !missing.is_empty() {
                return (
                    Vec::new(),
                    vec![RowError {
                        line,
                        reason: format!("the header lacks column(s) {}", missing.join(", ")),
                    }],
                );
            }
            if let Some(unknown) = names
                .iter()
                .find(|n| !REQUIRED.contains(&n.as_str()) && !OPTIONAL.contains(&n.as_str()))
            {
                errors.push(RowError {
                    line,
                    reason: format!(
                        "unknown column '{unknown}' is ignored (known: {}, {})",
                        REQUIRED.join(", "),
                        OPTIONAL.join(", ")
                    ),
                });
            }
            columns = Some(names);
            continue;
        }
        let get = |name: &str| -> Option<String> {
            match layout {
                Layout::Header => {
                    let i = columns.as_ref()?.iter().position(|c| c == name)?;
                    record.get(i).map(str::to_string).filter(|v| !v.is_empty())
                }
                Layout::Imapsync => {
                    let i = [
                        "source_host",
                        "source_user",
                        "source_password",
                        "dest_host",
                        "dest_user",
                        "dest_password",
                    ]
                    .iter()
                    .position(|c| *c == name)?;
                    record.get(i).map(str::to_string).filter(|v| !v.is_empty())
                }
                Layout::Exchange => match name {
                    "dest_user" => record.get(0).map(str::to_string),
                    "source_user" => record.get(1).map(str::to_string),
                    "source_password" | "dest_password" => record.get(2).map(str::to_string),
                    "source_host" => defaults.source_host.clone(),
                    "dest_host" => defaults.dest_host.clone(),
                    _ => None,
                }
                .filter(|v| !v.is_empty()),
            }
        };
        let expected = match layout {
            Layout::Header => columns.as_ref().map_or(0, Vec::len),
            Layout::Imapsync => 6,
            Layout::Exchange => 3,
        };
        if record.len() < expected {
            errors.push(RowError {
                line,
                reason: format!("{} field(s) where {expected} were expected", record.len()),
            });
            continue;
        }
        match row(line, &get, defaults) {
            Ok(r) => {
                let key = (
                    r.source.host_port().to_ascii_lowercase(),
                    r.source.user.to_ascii_lowercase(),
                );
                if !seen.insert(key) {
                    errors.push(RowError {
                        line,
                        reason: format!(
                            "mailbox {} on {} appears twice in the file",
                            r.source.user,
                            r.source.host_port()
                        ),
                    });
                    continue;
                }
                rows.push(r);
            }
            Err(reason) => errors.push(RowError { line, reason }),
        }
    }
    (rows, errors)
}

/// 1-based line of a byte offset.
fn line_of(text: &str, byte: usize) -> usize {
    // csv reports a record after blank lines from the start of those lines.
    let bytes = text.as_bytes();
    let mut byte = byte.min(bytes.len());
    while byte < bytes.len() && matches!(bytes[byte], b'\n' | b'\r') {
        byte += 1;
    }
    bytes[..byte].iter().filter(|b| **b == b'\n').count() + 1
}

fn port(value: Option<String>, what: &str) -> Result<Option<u16>, String> {
    match value {
        None => Ok(None),
        Some(v) => match v.parse::<u16>() {
            Ok(p) if p > 0 => Ok(Some(p)),
            _ => Err(format!("{what} '{v}' is not a port number (1-65535)")),
        },
    }
}

fn row(
    line: usize,
    get: &dyn Fn(&str) -> Option<String>,
    d: &Defaults,
) -> Result<ImportRow, String> {
    let need = |name: &str| get(name).ok_or_else(|| format!("{name} is empty"));
    let security = match get("tls").map(|v| v.to_ascii_lowercase()) {
        None => d.security.unwrap_or(Security::Tls),
        Some(v) => match v.as_str() {
            "imaps" | "tls" | "ssl" | "yes" | "true" | "1" => Security::Tls,
            "starttls" | "imap" | "no" | "false" | "0" => Security::StartTls,
            other => return Err(format!("tls '{other}' is not one of imaps, starttls")),
        },
    };
    let default_port = match security {
        Security::Tls => 993,
        Security::StartTls => 143,
    };
    let endpoint = |host: String, user: String, port: Option<u16>| -> Result<Endpoint, String> {
        if host.contains(['/', ' ', '@']) {
            return Err(format!("host '{host}' is not a host name"));
        }
        if host.contains(char::is_control) || user.contains(char::is_control) {
            // No server accepts them in a login, and CR/LF would end the LOGIN line.
            return Err(format!(
                "user {user:?} at {host:?} contains a control character, which no server \
                 accepts in a login; check the spreadsheet's cell"
            ));
        }
        if user.contains(char::is_whitespace) {
            return Err(format!("user '{user}' contains spaces"));
        }
        Ok(Endpoint {
            security,
            host,
            port: port.unwrap_or(default_port),
            user,
        })
    };
    let source = endpoint(
        need("source_host")?,
        need("source_user")?,
        port(get("source_port"), "source_port")?.or(d.source_port),
    )?;
    let dest = endpoint(
        need("dest_host")?,
        need("dest_user")?,
        port(get("dest_port"), "dest_port")?.or(d.dest_port),
    )?;
    let split = |v: Option<String>| -> Vec<String> {
        v.map(|v| {
            v.split('|')
                .map(|s| s.trim().to_string())
                .filter(|s| !s.is_empty())
                .collect()
        })
        .unwrap_or_default()
    };
    let maps = split(get("folder_map"));
    let excludes = split(get("exclude"));
    FolderRules::new(&maps, &excludes).map_err(|e| e.message)?;
    let source_password_hash = get("source_password_hash")
        .map(|h| PasswordHash::parse(&h))
        .transpose()?;
    if crate::account::same_address(&source, &dest) {
        return Err(format!(
            "the source and the destination are the same account ({source}); mailshift \
             only reads the old server and will not copy a mailbox into itself"
        ));
    }
    Ok(ImportRow {
        line,
        source,
        dest,
        source_password: SecretString::from(need("source_password")?),
        dest_password: SecretString::from(need("dest_password")?),
        maps,
        excludes,
        source_password_hash,
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use secrecy::ExposeSecret;

    #[test]
    fn an_exchange_file_without_servers_is_refused_as_a_whole() {
        let (rows, errors) = parse(
            b"\nann@acme.example,ACME\\ann,Secret-1\nbob@acme.example,ACME\\bob,Secret-2\n",
            &Defaults::default(),
        );
        assert!(rows.is_empty());
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert_eq!(errors[0].line, 2);
        assert!(errors[0].reason.contains("--source-host and --dest-host"));
    }

    #[test]
    fn control_characters_in_a_user_are_refused_with_the_line() {
        let csv = "source_host,source_user,source_password,dest_host,dest_user,dest_password\n\
                   old.example,ev\u{1b}[2Jil,pw1,new.example,evil@new.example,pw2\n\
                   old.example,ann,pw1,new.example,ann@new.example,pw2\n";
        let (rows, errors) = parse(csv.as_bytes(), &Defaults::default());
        assert_eq!(rows.len(), 1);
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert_eq!(errors[0].line, 2);
        assert!(
            errors[0].reason.contains("\"ev\\u{1b}[2Jil\""),
            "{:?}",
            errors[0]
        );
    }

    #[test]
    fn a_row_whose_two_sides_are_one_account_is_refused() {
        let csv = "source_host,source_user,source_password,dest_host,dest_user,dest_password\n\
                   mail.example,alice,pw1,MAIL.example.,alice,pw1\n";
        let (rows, errors) = parse(csv.as_bytes(), &Defaults::default());
        assert!(rows.is_empty());
        assert_eq!(errors.len(), 1);
        assert!(errors[0].reason.contains("same account"), "{:?}", errors[0]);
    }

    #[test]
    fn a_header_file_with_good_and_bad_rows() {
        let csv = "source_host,source_user,source_password,dest_host,dest_user,dest_password,source_port,tls,folder_map\n\
                   old.example,alice,pw1,new.example,alice@new.example,pw2,143,starttls,Sent Items=Sent\n\
                   old.example,bob,pw3,new.example,bob@new.example,,,,\n\
                   old.example,carol,pw4,new.example,carol@new.example,pw5,99999,,\n\
                   old.example,ALICE,pw6,new.example,x@new.example,pw7,143,starttls,\n\
                   \n\
                   old.example,dave,\"p,w\",new.example,dave@new.example,pw8,,imaps,\n";
        let (rows, errors) = parse(csv.as_bytes(), &Defaults::default());
        assert_eq!(
            errors,
            vec![
                RowError {
                    line: 3,
                    reason: "dest_password is empty".into()
                },
                RowError {
                    line: 4,
                    reason: "source_port '99999' is not a port number (1-65535)".into()
                },
                RowError {
                    line: 5,
                    reason: "mailbox ALICE on old.example:143 appears twice in the file".into()
                },
            ]
        );
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[0].source.to_string(), "imap://alice@old.example:143");
        assert_eq!(rows[0].maps, vec!["Sent Items=Sent"]);
        assert_eq!(rows[1].line, 7);
        assert_eq!(rows[1].source_password.expose_secret(), "p,w");
    }

    #[test]
    fn imapsync_and_exchange_layouts() {
        let (rows, errors) = parse(
            b"old.example;alice;pw1;new.example;alice;pw2\nold.example;bob;pw3\n",
            &Defaults::default(),
        );
        assert_eq!(rows.len(), 1);
        assert_eq!(
            errors,
            vec![RowError {
                line: 2,
                reason: "3 field(s) where 6 were expected".into()
            }]
        );
        let d = Defaults {
            source_host: Some("exch.example".into()),
            dest_host: Some("new.example".into()),
            ..Default::default()
        };
        let (rows, errors) = parse(b"alice@corp.example,CORP\\alice,pw1\n", &d);
        assert!(errors.is_empty(), "{errors:?}");
        assert_eq!(rows[0].source.user, "CORP\\alice");
        assert_eq!(rows[0].dest.user, "alice@corp.example");
        assert_eq!(rows[0].dest.host, "new.example");
        let (rows, errors) = parse(b"alice@corp.example,alice,pw1\n", &Defaults::default());
        assert!(rows.is_empty());
        assert!(errors[0].reason.contains("--source-host"), "{errors:?}");
    }

    #[test]
    fn an_optional_hash_column() {
        let csv = "source_host,source_user,source_password,dest_host,dest_user,dest_password,source_password_hash\n\
                   old.example,ann,pw1,new.example,ann@new.example,pw1,{SHA512-CRYPT}$6$37iK/C/QOI.sOIBV$5y50eSP84mBy54JWznjJ30X2VMmksaJ4d8uU3Fo6kia5l.cVSbOKI/40QfSBpNcxMpI1cmVaGuhesqvc4GBOH0\n\
                   old.example,bob,pw2,new.example,bob@new.example,pw2,\n\
                   old.example,cat,pw3,new.example,cat@new.example,pw3,$6$nope\n";
        let (rows, errors) = parse(csv.as_bytes(), &Defaults::default());
        assert_eq!(rows.len(), 2, "{errors:?}");
        assert_eq!(
            rows[0].source_password_hash.as_ref().map(|h| h.scheme()),
            Some("SHA512-CRYPT")
        );
        assert!(rows[1].source_password_hash.is_none());
        assert_eq!(errors.len(), 1);
        assert_eq!(errors[0].line, 4);
        assert!(errors[0].reason.contains("scheme prefix"), "{errors:?}");
        assert!(!errors[0].reason.contains("nope"));
    }

    #[test]
    fn bad_files_are_one_clear_error() {
        let (_, e) = parse(b"source_host,source_user\nx,y\n", &Defaults::default());
        assert!(
            e[0].reason.contains("lacks column(s) source_password"),
            "{e:?}"
        );
        let (_, e) = parse(
            b"source_host,source_user\n\xff\xfe,x\n",
            &Defaults::default(),
        );
        assert_eq!(e[0].line, 2);
        assert!(e[0].reason.contains("not UTF-8"));
    }
}
