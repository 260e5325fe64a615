//! The aliases file of `mailshift provision --aliases`: `address,target[,keep_copy]`,
//! one row per delivery, validated row by row with the file's line numbers. Pure: the
//! caller reads the file and applies the result only when no row is bad.
//!
//! An `address` that is a mailbox of the batch is a **forward** (redirection) of that
//! mailbox: its targets may be anywhere, and `keep_copy` (yes/no) also keeps the mail in
//! the mailbox, which PostfixAdmin writes as the mailbox itself among the targets. Any
//! other address is an **alias**: it must be in the batch's domains and deliver only
//! within them. Several rows with one address deliver to all their targets.
//!
//! Bad rows: malformed addresses, addresses or alias targets outside the batch's
//! domains, duplicate rows, `keep_copy` on an alias or differing between rows of one
//! address, and loops (`a -> b -> a`, longer chains, an address to itself).

use crate::import::RowError;
use crate::provision::Address;
use std::collections::{BTreeMap, BTreeSet, HashMap};

/// What an address of the file is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum AliasKind {
    /// Not a mailbox: mail to it goes to its targets.
    Alias,
    /// A mailbox of the batch redirected to its targets, keeping a copy or not.
    Forward { keep_copy: bool },
}

/// One address of the file with all its targets.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct AliasEntry {
    pub address: Address,
    /// Lower-case, sorted, without duplicates.
    pub targets: Vec<String>,
    #[serde(flatten)]
    pub kind: AliasKind,
    /// Lines of the file that make it.
    pub lines: Vec<usize>,
}

impl AliasEntry {
    /// Where mail to the address goes, as an alias table holds it (PostfixAdmin's
    /// `goto`): the targets, plus the mailbox itself for a forward that keeps a copy.
    pub fn goto(&self) -> BTreeSet<String> {
        let mut g: BTreeSet<String> = self.targets.iter().cloned().collect();
        if let AliasKind::Forward { keep_copy: true } = self.kind {
            g.insert(self.address.to_string());
        }
        g
    }

    pub fn is_forward(&self) -> bool {
        matches!(self.kind, AliasKind::Forward { .. })
    }
}

/// What the rows are checked against.
#[derive(Clone, Debug, Default)]
pub struct AliasContext {
    /// The batch's mail domains (lower-case).
    pub domains: BTreeSet<String>,
    /// The batch's destination mailboxes (lower-case addresses).
    pub mailboxes: BTreeSet<String>,
}

struct Row {
    line: usize,
    address: Address,
    /// `address` as text.
    key: String,
    target: String,
    keep_copy: Option<bool>,
}

fn line_of(text: &str, byte: usize) -> usize {
    let bytes = text.as_bytes();
    let mut byte = byte.min(bytes.len());
    while byte < bytes.len() && matches!(bytes[byte], b'\n' | b'\r') {
        byte += 1;
    }
    bytes[..byte].iter().filter(|b| **b == b'\n').count() + 1
}

fn keep_copy(v: &str) -> Result<Option<bool>, String> {
    match v.to_ascii_lowercase().as_str() {
        "" => Ok(None),
        "yes" | "y" | "true" | "1" | "keep" => Ok(Some(true)),
        "no" | "n" | "false" | "0" => Ok(Some(false)),
        other => Err(format!("keep_copy '{other}' is not yes or no")),
    }
}

/// Parses and checks a whole file; the entries only when every row is good, otherwise
/// every bad row with its line and reason.
pub fn parse(bytes: &[u8], ctx: &AliasContext) -> Result<Vec<AliasEntry>, Vec<RowError>> {
    let text = match std::str::from_utf8(bytes) {
        Ok(t) => t.strip_prefix('\u{feff}').unwrap_or(t),
        Err(e) => {
            let line = bytes[..e.valid_up_to()]
                .iter()
                .filter(|b| **b == b'\n')
                .count()
                + 1;
            return Err(vec![RowError {
                line,
                reason: "not UTF-8 text (save the spreadsheet as \"CSV UTF-8\")".into(),
            }]);
        }
    };
    let first = text
        .lines()
        .find(|l| !l.trim().is_empty() && !l.trim_start().starts_with('#'))
        .unwrap_or("");
    let delimiter = if first.contains(';') && !first.contains(',') {
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
    let domains_text = || ctx.domains.iter().cloned().collect::<Vec<_>>().join(", ");
    let mut errors = Vec::new();
    let mut rows: Vec<Row> = Vec::new();
    let mut seen: HashMap<(String, String), usize> = HashMap::new();
    let mut header_done = false;
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
        let line = record
            .position()
            .map(|p| line_of(text, p.byte() as usize))
            .unwrap_or(0);
        if record.iter().all(str::is_empty) || record.get(0).is_some_and(|c| c.starts_with('#')) {
            continue;
        }
        if !header_done {
            header_done = true;
            if record
                .get(0)
                .is_some_and(|c| c.eq_ignore_ascii_case("address"))
            {
                continue;
            }
        }
        if !(2..=3).contains(&record.len()) {
            errors.push(RowError {
                line,
                reason: format!(
                    "{} field(s) where address,target[,keep_copy] were expected",
                    record.len()
                ),
            });
            continue;
        }
        let checked = (|| -> Result<Row, String> {
            let address =
                Address::parse(record.get(0).unwrap_or("")).map_err(|e| format!("address {e}"))?;
            let target =
                Address::parse(record.get(1).unwrap_or("")).map_err(|e| format!("target {e}"))?;
            let keep = keep_copy(record.get(2).unwrap_or(""))?;
            if !ctx.domains.contains(&address.domain) {
                return Err(format!(
                    "address {address} is outside the batch's domains ({})",
                    domains_text()
                ));
            }
            let is_mailbox = ctx.mailboxes.contains(&address.to_string());
            if !is_mailbox && keep == Some(true) {
                return Err(format!(
                    "keep_copy applies to a forward of a mailbox, and {address} is not a mailbox of the batch"
                ));
            }
            if !is_mailbox && !ctx.domains.contains(&target.domain) {
                return Err(format!(
                    "alias {address} delivers to {target}, outside the batch's domains ({}); \
                     only a mailbox's forward may point elsewhere",
                    domains_text()
                ));
            }
            Ok(Row {
                line,
                key: address.to_string(),
                target: target.to_string(),
                address,
                keep_copy: keep,
            })
        })();
        match checked {
            Ok(r) => {
                let key = (r.address.to_string(), r.target.clone());
                if let Some(first) = seen.get(&key) {
                    errors.push(RowError {
                        line,
                        reason: format!(
                            "duplicate of line {first} ({} -> {})",
                            r.address, r.target
                        ),
                    });
                    continue;
                }
                seen.insert(key, line);
                rows.push(r);
            }
            Err(reason) => errors.push(RowError { line, reason }),
        }
    }

    // One keep_copy per address.
    let mut keep_of: BTreeMap<String, (bool, usize)> = BTreeMap::new();
    let mut consistent = Vec::new();
    for r in rows {
        let k = r.address.to_string();
        match (keep_of.get(&k), r.keep_copy) {
            (Some((was, first)), Some(now)) if *was != now => {
                errors.push(RowError {
                    line: r.line,
                    reason: format!(
                        "keep_copy for {k} differs from line {first}: give one value for all its rows"
                    ),
                });
                continue;
            }
            (None, now) => {
                keep_of.insert(k, (now.unwrap_or(false), r.line));
            }
            (Some(_), None) => {}
            (Some((_, first)), Some(now)) => {
                keep_of.insert(k, (now, *first));
            }
        }
        consistent.push(r);
    }

    for (line, cycle) in loops(&consistent) {
        errors.push(RowError {
            line,
            reason: format!("loop: {}", cycle.join(" -> ")),
        });
    }
    if !errors.is_empty() {
        errors.sort_by_key(|e| e.line);
        return Err(errors);
    }

    let mut entries: BTreeMap<String, AliasEntry> = BTreeMap::new();
    for r in consistent {
        let key = r.address.to_string();
        let kind = if ctx.mailboxes.contains(&key) {
            AliasKind::Forward {
                keep_copy: keep_of.get(&key).is_some_and(|(k, _)| *k),
            }
        } else {
            AliasKind::Alias
        };
        let e = entries.entry(key).or_insert_with(|| AliasEntry {
            address: r.address.clone(),
            targets: Vec::new(),
            kind,
            lines: Vec::new(),
        });
        e.targets.push(r.target);
        e.lines.push(r.line);
    }
    Ok(entries
        .into_values()
        .map(|mut e| {
            e.targets.sort();
            e.targets.dedup();
            e
        })
        .collect())
}

/// Rows whose delivery lies on a cycle, each with one cycle through it
/// (`a -> b -> a`), found through the strongly connected components of the graph.
fn loops(rows: &[Row]) -> Vec<(usize, Vec<String>)> {
    let mut edges: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
    for r in rows {
        edges
            .entry(r.key.as_str())
            .or_default()
            .insert(r.target.as_str());
    }
    let component = components(&edges);
    let mut out = Vec::new();
    for r in rows {
        let (u, v) = (r.key.as_str(), r.target.as_str());
        let cyclic = u == v || (component.contains_key(u) && component.get(u) == component.get(v));
        if !cyclic {
            continue;
        }
        // Shortest way back from v to u inside the component.
        let mut path = vec![u.to_string()];
        if u != v {
            let c = component.get(u);
            let mut prev: HashMap<&str, &str> = HashMap::new();
            let mut queue = std::collections::VecDeque::from([v]);
            let mut found = false;
            while let Some(n) = queue.pop_front() {
                if n == u {
                    found = true;
                    break;
                }
                for m in edges.get(n).into_iter().flatten() {
                    if component.get(m) == c && !prev.contains_key(m) && *m != v {
                        prev.insert(m, n);
                        queue.push_back(m);
                    }
                }
            }
            let mut back = Vec::new();
            if found {
                let mut n = u;
                while let Some(p) = prev.get(n) {
                    back.push(p.to_string());
                    n = p;
                }
            }
            back.reverse();
            if back.is_empty() {
                back.push(v.to_string());
            }
            path.extend(back);
        }
        path.push(u.to_string());
        out.push((r.line, path));
    }
    out
}

/// Tarjan's strongly connected components: node -> component id, for nodes in a
/// component of more than one node.
fn components<'a>(edges: &BTreeMap<&'a str, BTreeSet<&'a str>>) -> HashMap<&'a str, usize> {
    struct State<'a> {
        index: usize,
        indices: HashMap<&'a str, usize>,
        low: HashMap<&'a str, usize>,
        stack: Vec<&'a str>,
        on_stack: BTreeSet<&'a str>,
        out: HashMap<&'a str, usize>,
        next_id: usize,
    }
    fn visit<'a>(n: &'a str, edges: &BTreeMap<&'a str, BTreeSet<&'a str>>, s: &mut State<'a>) {
        s.indices.insert(n, s.index);
        s.low.insert(n, s.index);
        s.index += 1;
        s.stack.push(n);
        s.on_stack.insert(n);
        for m in edges.get(n).into_iter().flatten() {
            if !s.indices.contains_key(m) {
                visit(m, edges, s);
                let lm = s.low[m];
                if let Some(l) = s.low.get_mut(n) {
                    *l = (*l).min(lm);
                }
            } else if s.on_stack.contains(m) {
                let im = s.indices[m];
                if let Some(l) = s.low.get_mut(n) {
                    *l = (*l).min(im);
                }
            }
        }
        if s.low[n] == s.indices[n] {
            let mut members = Vec::new();
            while let Some(m) = s.stack.pop() {
                s.on_stack.remove(m);
                members.push(m);
                if m == n {
                    break;
                }
            }
            if members.len() > 1 {
                for m in members {
                    s.out.insert(m, s.next_id);
                }
                s.next_id += 1;
            }
        }
    }
    let mut s = State {
        index: 0,
        indices: HashMap::new(),
        low: HashMap::new(),
        stack: Vec::new(),
        on_stack: BTreeSet::new(),
        out: HashMap::new(),
        next_id: 0,
    };
    for n in edges.keys() {
        if !s.indices.contains_key(n) {
            visit(n, edges, &mut s);
        }
    }
    s.out
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn ctx() -> AliasContext {
        AliasContext {
            domains: ["acme.example", "acme.test"]
                .iter()
                .map(|s| s.to_string())
                .collect(),
            mailboxes: ["ann@acme.example", "bob@acme.example", "cat@acme.test"]
                .iter()
                .map(|s| s.to_string())
                .collect(),
        }
    }

    #[test]
    fn aliases_and_forwards() {
        let file = "address,target,keep_copy\n\
                    # sales goes to two people\n\
                    sales@acme.example,ann@acme.example\n\
                    Sales@Acme.Example,bob@acme.example,\n\
                    \n\
                    bob@acme.example,bob@gmail.example,yes\n\
                    cat@acme.test,cat@elsewhere.example,no\n\
                    info@acme.test,sales@acme.example\n";
        let entries = parse(file.as_bytes(), &ctx()).unwrap();
        let by: BTreeMap<String, &AliasEntry> =
            entries.iter().map(|e| (e.address.to_string(), e)).collect();
        assert_eq!(by.len(), 4);
        let sales = by["sales@acme.example"];
        assert_eq!(sales.kind, AliasKind::Alias);
        assert_eq!(sales.targets, ["ann@acme.example", "bob@acme.example"]);
        assert_eq!(sales.lines, [3, 4]);
        let bob = by["bob@acme.example"];
        assert_eq!(bob.kind, AliasKind::Forward { keep_copy: true });
        assert_eq!(
            bob.goto().into_iter().collect::<Vec<_>>(),
            ["bob@acme.example", "bob@gmail.example"]
        );
        let cat = by["cat@acme.test"];
        assert_eq!(cat.kind, AliasKind::Forward { keep_copy: false });
        assert_eq!(
            cat.goto().into_iter().collect::<Vec<_>>(),
            ["cat@elsewhere.example"]
        );
        // No header, semicolons.
        let e = parse(b"sales@acme.example;ann@acme.example\n", &ctx()).unwrap();
        assert_eq!(e.len(), 1);
    }

    #[test]
    fn every_bad_row_is_named_by_line() {
        let file = "address,target,keep_copy\n\
                    a@acme.example,b@acme.example\n\
                    b@acme.example,c@acme.example\n\
                    c@acme.example,a@acme.example\n\
                    x@acme.example,someone@gmail.example\n\
                    not-an-address,ann@acme.example\n\
                    sales@acme.example,ann@acme.example\n\
                    sales@acme.example,ANN@acme.example\n\
                    x@other.example,ann@acme.example\n\
                    me@acme.example,me@acme.example\n\
                    sales@acme.example,bob@acme.example,yes\n\
                    bob@acme.example,bob@gmail.example,yes\n\
                    bob@acme.example,bob@yahoo.example,no\n\
                    ann@acme.example,ann@gmail.example,maybe\n\
                    ann@acme.example\n\
                    ok@acme.example,ann@acme.example\n";
        let errors = parse(file.as_bytes(), &ctx()).unwrap_err();
        let lines: Vec<usize> = errors.iter().map(|e| e.line).collect();
        assert_eq!(
            lines,
            [2, 3, 4, 5, 6, 8, 9, 10, 11, 13, 14, 15],
            "{errors:#?}"
        );
        let reason = |line: usize| {
            errors
                .iter()
                .find(|e| e.line == line)
                .map(|e| e.reason.clone())
                .unwrap()
        };
        assert_eq!(
            reason(2),
            "loop: a@acme.example -> b@acme.example -> c@acme.example -> a@acme.example"
        );
        assert!(reason(4).starts_with("loop: c@acme.example -> a@acme.example"));
        assert!(
            reason(5).contains("outside the batch's domains"),
            "{}",
            reason(5)
        );
        assert!(reason(6).contains("'not-an-address' is not a mail address"));
        assert_eq!(
            reason(8),
            "duplicate of line 7 (sales@acme.example -> ann@acme.example)"
        );
        assert!(reason(9).contains("address x@other.example is outside"));
        assert_eq!(reason(10), "loop: me@acme.example -> me@acme.example");
        assert!(reason(11).contains("keep_copy applies to a forward"));
        assert!(reason(13).contains("differs from line 12"));
        assert!(reason(14).contains("keep_copy 'maybe'"));
        assert!(reason(15).contains("1 field(s)"));
    }

    #[test]
    fn a_forward_chain_through_mailboxes_is_a_loop_too() {
        let file = "ann@acme.example,bob@acme.example,yes\nbob@acme.example,ann@acme.example,yes\n";
        let errors = parse(file.as_bytes(), &ctx()).unwrap_err();
        assert_eq!(errors.len(), 2);
        assert_eq!(
            errors[0].reason,
            "loop: ann@acme.example -> bob@acme.example -> ann@acme.example"
        );
        let e = parse(b"\xff,x\n", &ctx()).unwrap_err();
        assert!(e[0].reason.contains("UTF-8"));
    }
}
