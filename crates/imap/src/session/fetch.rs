//! UID FETCH and UID SEARCH: listings, bodies (BODY.PEEK, never setting \Seen), header
//! sections, CONDSTORE changes and content fingerprints; each streamed as it arrives.

use super::{ImapSession, sorted_set};
use crate::error::ImapError;
use crate::raw::{self};
use imap_proto::{AttributeValue, MailboxDatum, Response};
use mailshift_core::fingerprint::Fingerprint;
use mailshift_core::flags::FlagSet;
use mailshift_core::plan::MessageMeta;
use mailshift_core::ports::{FetchedHeader, FetchedMessage, LocatedMessage};
use mailshift_core::uidset;

impl ImapSession {
    pub(super) async fn list_messages_inner(
        &mut self,
        from_uid: u32,
    ) -> Result<Vec<MessageMeta>, ImapError> {
        let from = from_uid.max(1);
        self.list_set(&format!("{from}:*"), from).await
    }

    /// UID, size, flags and date of the messages in a UID set, ascending; UIDs below
    /// `min_uid` are dropped (`N:*` returns the highest message even below N).
    pub(super) async fn list_set(
        &mut self,
        set: &str,
        min_uid: u32,
    ) -> Result<Vec<MessageMeta>, ImapError> {
        let folder = self.require_selected("UID FETCH")?.to_string();
        if self.exists == 0 || set.is_empty() {
            return Ok(Vec::new());
        }
        let from = min_uid;
        let cmd = format!("UID FETCH {set} (UID RFC822.SIZE FLAGS INTERNALDATE)");
        let mut out = Vec::with_capacity(self.exists as usize);
        let r = raw::command(
            &mut self.sess,
            &cmd,
            &format!("listing messages of {folder}"),
            |r| {
                if let Response::Fetch(_, attrs) = r {
                    let mut m = MessageMeta {
                        uid: 0,
                        size: 0,
                        flags: FlagSet::new(),
                        internal_date: String::new(),
                    };
                    for a in attrs {
                        match a {
                            AttributeValue::Uid(u) => m.uid = *u,
                            AttributeValue::Rfc822Size(s) => m.size = *s,
                            AttributeValue::Flags(f) => {
                                m.flags = f.iter().map(|s| s.as_ref()).collect()
                            }
                            AttributeValue::InternalDate(d) => m.internal_date = d.to_string(),
                            _ => {}
                        }
                    }
                    // `N:*` also returns the highest message when N is above it.
                    if m.uid >= from && !m.internal_date.is_empty() {
                        out.push(m);
                    }
                }
                Ok(())
            },
        )
        .await;
        r.map_err(|e| self.note_error(e))?;
        out.sort_by_key(|m| m.uid);
        out.dedup_by_key(|m| m.uid);
        Ok(out)
    }

    pub(super) async fn fetch_inner(
        &mut self,
        uids: &[u32],
        largest: u64,
    ) -> Result<Vec<FetchedMessage>, ImapError> {
        let folder = self.require_selected("UID FETCH")?.to_string();
        if uids.is_empty() {
            return Ok(Vec::new());
        }
        // The listing said how big these are; a literal far beyond that (some servers'
        // sizes are estimates, hence the slack) is refused before it is allocated.
        self.guard.expect_at_most(
            largest
                .saturating_mul(2)
                .max(largest.saturating_add(1 << 20)),
        );
        let r = self.fetch_bodies(uids, &folder).await;
        self.guard.reset();
        r
    }

    async fn fetch_bodies(
        &mut self,
        uids: &[u32],
        folder: &str,
    ) -> Result<Vec<FetchedMessage>, ImapError> {
        let cmd = format!(
            "UID FETCH {} (UID FLAGS INTERNALDATE BODY.PEEK[])",
            uidset::compress(uids)
        );
        let mut out: Vec<FetchedMessage> = Vec::with_capacity(uids.len());
        let r = raw::command(
            &mut self.sess,
            &cmd,
            &format!("fetching messages of {folder}"),
            |r| {
                if let Response::Fetch(_, attrs) = r {
                    let mut uid = None;
                    let mut flags = FlagSet::new();
                    let mut date = None;
                    let mut body = None;
                    for a in attrs {
                        match a {
                            AttributeValue::Uid(u) => uid = Some(*u),
                            AttributeValue::Flags(f) => {
                                flags = f.iter().map(|s| s.as_ref()).collect()
                            }
                            AttributeValue::InternalDate(d) => date = Some(d.to_string()),
                            AttributeValue::BodySection {
                                section: None,
                                data: Some(d),
                                ..
                            } => body = Some(d.to_vec()),
                            AttributeValue::Rfc822(Some(d)) => body = Some(d.to_vec()),
                            _ => {}
                        }
                    }
                    // Unsolicited FETCH (flag updates of other messages) carries no body.
                    if let (Some(uid), Some(internal_date), Some(raw)) = (uid, date, body) {
                        out.push(FetchedMessage {
                            uid,
                            flags,
                            internal_date,
                            raw,
                        });
                    }
                }
                Ok(())
            },
        )
        .await;
        r.map_err(|e| self.note_error(e))?;
        out.sort_by_key(|m| m.uid);
        out.dedup_by_key(|m| m.uid);
        Ok(out)
    }

    pub(super) async fn fetch_headers_inner(
        &mut self,
        uids: &[u32],
    ) -> Result<Vec<FetchedHeader>, ImapError> {
        let folder = self.require_selected("UID FETCH")?.to_string();
        if uids.is_empty() {
            return Ok(Vec::new());
        }
        let cmd = format!(
            "UID FETCH {} (UID RFC822.SIZE FLAGS INTERNALDATE BODY.PEEK[HEADER])",
            sorted_set(uids)
        );
        let mut out = Vec::with_capacity(uids.len());
        let r = raw::command(
            &mut self.sess,
            &cmd,
            &format!("fetching headers of {folder}"),
            |r| {
                if let Response::Fetch(_, attrs) = r {
                    let mut uid = None;
                    let mut size = 0;
                    let mut flags = FlagSet::new();
                    let mut date = None;
                    let mut header = None;
                    for a in attrs {
                        match a {
                            AttributeValue::Uid(u) => uid = Some(*u),
                            AttributeValue::Rfc822Size(n) => size = *n,
                            AttributeValue::Flags(f) => {
                                flags = f.iter().map(|s| s.as_ref()).collect()
                            }
                            AttributeValue::InternalDate(d) => date = Some(d.to_string()),
                            AttributeValue::BodySection { data: Some(d), .. } => {
                                header = Some(d.to_vec())
                            }
                            AttributeValue::BodySection { data: None, .. } => {
                                header = Some(Vec::new())
                            }
                            _ => {}
                        }
                    }
                    if let (Some(uid), Some(internal_date), Some(header)) = (uid, date, header) {
                        out.push(FetchedHeader {
                            uid,
                            size,
                            flags,
                            internal_date,
                            header,
                        });
                    }
                }
                Ok(())
            },
        )
        .await;
        r.map_err(|e| self.note_error(e))?;
        out.sort_by_key(|m| m.uid);
        out.dedup_by_key(|m| m.uid);
        Ok(out)
    }

    pub(super) async fn uids_inner(&mut self) -> Result<Vec<u32>, ImapError> {
        let folder = self.require_selected("UID SEARCH")?.to_string();
        if self.exists == 0 {
            return Ok(Vec::new());
        }
        let mut out = Vec::with_capacity(self.exists as usize);
        raw::command(
            &mut self.sess,
            "UID SEARCH ALL",
            &format!("listing UIDs of {folder}"),
            |r| {
                if let Response::MailboxData(MailboxDatum::Search(ids)) = r {
                    out.extend_from_slice(ids);
                }
                Ok(())
            },
        )
        .await
        .map_err(|e| self.note_error(e))?;
        out.sort_unstable();
        out.dedup();
        Ok(out)
    }

    pub(super) async fn changed_since_inner(
        &mut self,
        modseq: u64,
    ) -> Result<Vec<(u32, FlagSet)>, ImapError> {
        let folder = self.require_selected("UID FETCH")?.to_string();
        if self.exists == 0 {
            return Ok(Vec::new());
        }
        let cmd = format!("UID FETCH 1:* (UID FLAGS) (CHANGEDSINCE {modseq})");
        let mut out = Vec::new();
        raw::command(
            &mut self.sess,
            &cmd,
            &format!("listing flag changes of {folder}"),
            |r| {
                if let Response::Fetch(_, attrs) = r {
                    let mut uid = None;
                    let mut flags = None;
                    for a in attrs {
                        match a {
                            AttributeValue::Uid(u) => uid = Some(*u),
                            AttributeValue::Flags(f) => {
                                flags = Some(f.iter().map(|s| s.as_ref()).collect::<FlagSet>())
                            }
                            _ => {}
                        }
                    }
                    if let (Some(uid), Some(flags)) = (uid, flags) {
                        out.push((uid, flags));
                    }
                }
                Ok(())
            },
        )
        .await
        .map_err(|e| self.note_error(e))?;
        out.sort_by_key(|(u, _)| *u);
        out.dedup_by_key(|(u, _)| *u);
        Ok(out)
    }

    pub(super) async fn locate_inner(
        &mut self,
        from_uid: u32,
    ) -> Result<Vec<LocatedMessage>, ImapError> {
        let from = from_uid.max(1);
        self.locate_set(&format!("{from}:*"), from).await
    }

    /// Content fingerprints of the messages of a UID set (UIDs below `min_uid` dropped:
    /// `N:*` also returns the highest message below N).
    pub(super) async fn locate_set(
        &mut self,
        set: &str,
        min_uid: u32,
    ) -> Result<Vec<LocatedMessage>, ImapError> {
        let folder = self.require_selected("UID FETCH")?.to_string();
        // Refresh EXISTS first: messages may have been appended since SELECT.
        let mut exists = self.exists;
        raw::command(&mut self.sess, "NOOP", "NOOP", |r| {
            if let Response::MailboxData(MailboxDatum::Exists(n)) = r {
                exists = *n;
            }
            Ok(())
        })
        .await
        .map_err(|e| self.note_error(e))?;
        self.exists = exists;
        if exists == 0 {
            return Ok(Vec::new());
        }
        if set.is_empty() {
            return Ok(Vec::new());
        }
        let from = min_uid;
        let cmd = format!("UID FETCH {set} (UID RFC822.SIZE BODY.PEEK[])");
        let mut out = Vec::new();
        let r = raw::command(
            &mut self.sess,
            &cmd,
            &format!("locating messages in {folder}"),
            |r| {
                if let Response::Fetch(_, attrs) = r {
                    let mut uid = None;
                    let mut body: Option<Fingerprint> = None;
                    let mut size = 0;
                    for a in attrs {
                        match a {
                            AttributeValue::Uid(u) => uid = Some(*u),
                            AttributeValue::Rfc822Size(s) => size = *s,
                            AttributeValue::BodySection {
                                section: None,
                                data: Some(d),
                                ..
                            } => body = Some(Fingerprint::of(d)),
                            _ => {}
                        }
                    }
                    if let (Some(uid), Some(fingerprint)) = (uid, body)
                        && uid >= from
                    {
                        out.push(LocatedMessage {
                            uid,
                            size,
                            fingerprint,
                        });
                    }
                }
                Ok(())
            },
        )
        .await;
        r.map_err(|e| self.note_error(e))?;
        out.sort_by_key(|m| m.uid);
        out.dedup_by_key(|m| m.uid);
        Ok(out)
    }
}
