//! `mailshift verify`: compares both servers folder by folder, independently of any
//! stored state. Messages are matched as multisets by size + header fingerprint (or the
//! full-content fingerprint with `deep`), then their flags and internal dates compared.
//! Both sides are only read (EXAMINE, BODY.PEEK).

use mailshift_core::Result;
use mailshift_core::fingerprint::Fingerprint;
use mailshift_core::flags::FlagSet;
use mailshift_core::folder::{FolderRules, map_folders};
use mailshift_core::ports::MailSource;
use std::collections::HashMap;

/// Header sections (or bodies, when deep) asked for at once.
const CHUNK: usize = 500;
const DEEP_CHUNK: usize = 50;

/// A message named as a person finds it in a mail client.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct MessageRef {
    pub uid: u32,
    pub size: u32,
    pub date: Option<String>,
    pub from: Option<String>,
    pub subject: Option<String>,
}

/// What differs in one folder pair.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct FolderCheck {
    pub source: String,
    pub dest: String,
    pub source_messages: usize,
    pub dest_messages: usize,
    /// The destination folder does not exist.
    pub dest_folder_missing: bool,
    /// On the source, not on the destination.
    pub missing: Vec<MessageRef>,
    /// On the destination, not on the source.
    pub extra: Vec<MessageRef>,
    /// On both, with different flags or internal date: (source message, what differs).
    pub different: Vec<(MessageRef, String)>,
}

impl FolderCheck {
    pub fn in_sync(&self) -> bool {
        !self.dest_folder_missing
            && self.missing.is_empty()
            && self.extra.is_empty()
            && self.different.is_empty()
    }
}

#[derive(Clone)]
struct Entry {
    uid: u32,
    size: u32,
    flags: FlagSet,
    date: Option<i64>,
}

/// Seconds since the epoch of an IMAP date-time (`dd-Mon-yyyy hh:mm:ss +zzzz`): servers
/// may store the instant but not the zone, so instants are compared.
fn instant(s: &str) -> Option<i64> {
    let s = s.trim();
    let (date, rest) = s.split_once(' ')?;
    let (time, zone) = rest.trim().split_once(' ')?;
    let mut d = date.split('-');
    let day: i64 = d.next()?.trim().parse().ok()?;
    let month_name = d.next()?;
    let month = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ]
    .iter()
    .position(|m| m.eq_ignore_ascii_case(month_name))? as i64
        + 1;
    let year: i64 = d.next()?.parse().ok()?;
    let mut t = time.split(':').map(|x| x.parse::<i64>().ok());
    let (h, m, sec) = (t.next()??, t.next()??, t.next()??);
    let sign = if zone.starts_with('-') { -1 } else { 1 };
    let z: i64 = zone.get(1..)?.parse().ok()?;
    let offset = sign * ((z / 100) * 3600 + (z % 100) * 60);
    // Days from civil (Howard Hinnant's algorithm).
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some(days * 86_400 + h * 3600 + m * 60 + sec - offset)
}

/// Lists an examined folder as (key -> entries).
async fn index(
    side: &mut dyn MailSource,
    deep: bool,
) -> Result<(HashMap<(u32, Fingerprint), Vec<Entry>>, usize)> {
    let uids = side.uids().await?;
    let mut out: HashMap<(u32, Fingerprint), Vec<Entry>> = HashMap::new();
    if deep {
        let meta: HashMap<u32, _> = side
            .list_messages(1)
            .await?
            .into_iter()
            .map(|m| (m.uid, m))
            .collect();
        for chunk in uids.chunks(DEEP_CHUNK) {
            for m in side.fetch_messages(chunk).await? {
                let size = m.raw.len() as u32;
                let date = meta.get(&m.uid).and_then(|x| instant(&x.internal_date));
                out.entry((size, Fingerprint::of(&m.raw)))
                    .or_default()
                    .push(Entry {
                        uid: m.uid,
                        size,
                        flags: m.flags,
                        date,
                    });
            }
        }
    } else {
        for chunk in uids.chunks(CHUNK) {
            for h in side.fetch_headers(chunk).await? {
                out.entry((h.size, Fingerprint::of(&h.header)))
                    .or_default()
                    .push(Entry {
                        uid: h.uid,
                        size: h.size,
                        flags: h.flags,
                        date: instant(&h.internal_date),
                    });
            }
        }
    }
    Ok((out, uids.len()))
}

/// Fills in date, sender and subject of the named messages (few: only problems).
async fn describe(side: &mut dyn MailSource, refs: &mut [MessageRef]) -> Result<()> {
    if refs.is_empty() {
        return Ok(());
    }
    let uids: Vec<u32> = refs.iter().map(|r| r.uid).collect();
    let headers: HashMap<u32, Vec<u8>> = side
        .fetch_headers(&uids)
        .await?
        .into_iter()
        .map(|h| (h.uid, h.header))
        .collect();
    for r in refs.iter_mut() {
        if let Some(p) = headers
            .get(&r.uid)
            .and_then(|h| mail_parser::MessageParser::default().parse_headers(h))
        {
            r.date = p.date().map(|d| d.to_rfc3339());
            r.from = p.from().and_then(|a| a.first()).and_then(|a| {
                a.address()
                    .map(str::to_string)
                    .or_else(|| a.name().map(str::to_string))
            });
            r.subject = p.subject().map(str::to_string);
        }
    }
    Ok(())
}

fn reference(e: &Entry) -> MessageRef {
    MessageRef {
        uid: e.uid,
        size: e.size,
        ..Default::default()
    }
}

/// Compares every mapped folder pair.
pub async fn verify(
    src: &mut dyn MailSource,
    dst: &mut dyn MailSource,
    rules: &FolderRules,
    deep: bool,
) -> Result<Vec<FolderCheck>> {
    let (src_folders, src_delim) = src.list_folders().await?;
    let (dst_folders, dst_delim) = dst.list_folders().await?;
    let mapping = map_folders(&src_folders, src_delim, &dst_folders, dst_delim, rules)?;
    let mut checks = Vec::new();
    for plan in &mapping.folders {
        let mut check = FolderCheck {
            source: plan.source_display.clone(),
            dest: plan.dest_display.clone(),
            ..Default::default()
        };
        src.examine(&plan.source_raw).await?;
        let (mut s_idx, s_count) = index(src, deep).await?;
        check.source_messages = s_count;
        let exists = plan.dest_raw.eq_ignore_ascii_case("INBOX")
            || dst_folders.iter().any(|f| f.raw == plan.dest_raw);
        let mut d_idx = HashMap::new();
        if exists {
            dst.examine(&plan.dest_raw).await?;
            let (idx, n) = index(dst, deep).await?;
            d_idx = idx;
            check.dest_messages = n;
        } else {
            check.dest_folder_missing = true;
        }
        let mut missing = Vec::new();
        for (key, s_entries) in s_idx.drain() {
            let mut d_entries = d_idx.remove(&key).unwrap_or_default();
            for s in s_entries {
                // Prefer a copy with the same flags, so swapped duplicates don't count.
                let pos = d_entries
                    .iter()
                    .position(|d| d.flags == s.flags)
                    .or(if d_entries.is_empty() { None } else { Some(0) });
                match pos {
                    Some(i) => {
                        let d = d_entries.swap_remove(i);
                        let mut what = Vec::new();
                        if d.flags != s.flags {
                            what.push(format!(
                                "flags {} on the source, {} on the destination",
                                s.flags.to_imap_list(),
                                d.flags.to_imap_list()
                            ));
                        }
                        if d.date != s.date {
                            what.push("internal date differs".to_string());
                        }
                        if !what.is_empty() {
                            check.different.push((reference(&s), what.join("; ")));
                        }
                    }
                    None => missing.push(reference(&s)),
                }
            }
            if !d_entries.is_empty() {
                d_idx.insert(key, d_entries);
            }
        }
        check.missing = missing;
        check.extra = d_idx.values().flatten().map(reference).collect();
        check.missing.sort_by_key(|r| r.uid);
        check.extra.sort_by_key(|r| r.uid);
        check.different.sort_by_key(|(r, _)| r.uid);
        describe(src, &mut check.missing).await?;
        let mut diff_refs: Vec<MessageRef> =
            check.different.iter().map(|(r, _)| r.clone()).collect();
        describe(src, &mut diff_refs).await?;
        for ((r, _), described) in check.different.iter_mut().zip(diff_refs) {
            *r = described;
        }
        if exists {
            describe(dst, &mut check.extra).await?;
        }
        checks.push(check);
    }
    Ok(checks)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn instants_ignore_the_zone_spelling() {
        let a = instant("17-Jul-2023 02:44:25 -0700").unwrap();
        let b = instant("17-Jul-2023 09:44:25 +0000").unwrap();
        assert_eq!(a, b);
        assert_eq!(instant(" 1-Jan-1970 00:00:00 +0000"), Some(0));
        assert_eq!(instant("garbage"), None);
    }
}
