//! APPEND and MULTIAPPEND with LITERAL+ (or synchronising literals), written by hand
//! because async-imap drops APPENDUID and has neither MULTIAPPEND nor LITERAL+.

use super::ImapSession;
use crate::error::ImapError;
use crate::raw::{self, quote};
use imap_proto::{MailboxDatum, Response};
use mailshift_core::ports::{AppendItem, Appended};
use mailshift_core::uidset;
use tokio::io::AsyncWriteExt;

impl ImapSession {
    pub(super) fn uses_sync_literal(&self, len: usize) -> bool {
        !(self.caps.literal_plus || (self.caps.literal_minus && len <= 4096))
    }

    pub(super) fn item_head(&self, item: &AppendItem<'_>) -> String {
        let plus = if self.uses_sync_literal(item.raw.len()) {
            ""
        } else {
            "+"
        };
        let flags = if item.flags.is_empty() {
            String::new()
        } else {
            format!("{} ", item.flags.to_imap_list())
        };
        format!(
            "{flags}\"{}\" {{{}{plus}}}",
            item.internal_date,
            item.raw.len()
        )
    }

    pub(super) async fn append_inner(
        &mut self,
        folder: &str,
        items: &[AppendItem<'_>],
    ) -> Result<Appended, ImapError> {
        if items.is_empty() {
            return Ok(Appended::Unknown);
        }
        if items.len() > 1 && !self.caps.multiappend {
            return Err(ImapError::Unsupported(format!(
                "{} has no MULTIAPPEND; append one message at a time",
                self.cfg.label()
            )));
        }
        let op = format!("appending {} message(s) to {folder}", items.len());
        let first = format!("APPEND {} {}", quote(folder)?, self.item_head(&items[0]));
        let tag = match self.sess.run_command(&first).await {
            Ok(t) => t,
            Err(e) => {
                return Err(self.note_error(ImapError::Io {
                    op,
                    reason: e.to_string(),
                }));
            }
        };
        let mut exists = self.exists;
        let res = self.send_literals(&tag, &op, items, &mut exists).await;
        let res = match res {
            Ok(()) => {
                raw::finish(&mut self.sess, &tag, &op, |r| {
                    if let Response::MailboxData(MailboxDatum::Exists(n)) = r {
                        exists = *n;
                    }
                    Ok(())
                })
                .await
            }
            Err(e) => Err(e),
        };
        self.exists = exists;
        let done = res.map_err(|e| self.note_error(e))?;
        match done.append_uid {
            Some((validity, ranges)) => {
                let uids = uidset::expand(&ranges);
                if uids.len() == items.len() {
                    Ok(Appended::Uids {
                        uidvalidity: validity,
                        uids,
                    })
                } else {
                    Ok(Appended::Unknown)
                }
            }
            None => Ok(Appended::Unknown),
        }
    }

    /// Writes the literals of an APPEND whose first line is sent, waiting for the
    /// server's go-ahead only for synchronising literals.
    pub(super) async fn send_literals(
        &mut self,
        tag: &imap_proto::RequestId,
        op: &str,
        items: &[AppendItem<'_>],
        exists: &mut u32,
    ) -> Result<(), ImapError> {
        let io = |e: std::io::Error| ImapError::Io {
            op: op.to_string(),
            reason: e.to_string(),
        };
        for (i, item) in items.iter().enumerate() {
            let sync = self.uses_sync_literal(item.raw.len());
            if i > 0 {
                let head = format!(" {}\r\n", self.item_head(item));
                self.sess
                    .get_mut()
                    .write_all(head.as_bytes())
                    .await
                    .map_err(io)?;
                if sync {
                    self.sess.get_mut().flush().await.map_err(io)?;
                }
            }
            if sync {
                self.wait_continuation(tag, op, exists).await?;
            }
            self.sess.get_mut().write_all(item.raw).await.map_err(io)?;
        }
        self.sess.get_mut().write_all(b"\r\n").await.map_err(io)?;
        self.sess.get_mut().flush().await.map_err(io)?;
        Ok(())
    }

    pub(super) async fn wait_continuation(
        &mut self,
        tag: &imap_proto::RequestId,
        op: &str,
        exists: &mut u32,
    ) -> Result<(), ImapError> {
        loop {
            let step = raw::read_with(&mut self.sess, op, |resp| match resp {
                Response::Continue(_) => Some(Ok(())),
                Response::Done {
                    tag: t, outcome, ..
                } if t == tag => {
                    let (code, text) =
                        raw::outcome_code(outcome.code.as_ref(), outcome.information.as_deref());
                    Some(Err(ImapError::No {
                        op: op.to_string(),
                        code,
                        text,
                    }))
                }
                Response::MailboxData(MailboxDatum::Exists(n)) => {
                    *exists = *n;
                    None
                }
                _ => None,
            })
            .await?;
            if let Some(r) = step {
                return r;
            }
        }
    }
}
