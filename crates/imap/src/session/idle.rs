//! IDLE (or NOOP polling) on the source INBOX for `--follow`.

use super::ImapSession;
use crate::error::ImapError;
use crate::raw::{self};
use imap_proto::{MailboxDatum, Response};
use std::time::Duration;
use tokio::io::AsyncWriteExt;

impl ImapSession {
    pub(super) async fn wait_inner(&mut self, timeout: Duration) -> Result<bool, ImapError> {
        let folder = self.require_selected("IDLE")?.to_string();
        let op = format!("waiting for new mail in {folder}");
        let before = self.exists;
        if !self.caps.idle {
            tokio::time::sleep(timeout).await;
            let mut exists = before;
            raw::command(&mut self.sess, "NOOP", &op, |r| {
                if let Response::MailboxData(MailboxDatum::Exists(n)) = r {
                    exists = *n;
                }
                Ok(())
            })
            .await
            .map_err(|e| self.note_error(e))?;
            self.exists = exists;
            return Ok(exists != before);
        }
        let tag = match self.sess.run_command("IDLE").await {
            Ok(t) => t,
            Err(e) => {
                return Err(self.note_error(ImapError::Io {
                    op,
                    reason: e.to_string(),
                }));
            }
        };
        let mut exists = before;
        // The go-ahead first, then any EXISTS until the deadline.
        let deadline = tokio::time::Instant::now() + timeout;
        let mut changed = false;
        let mut idling = false;
        loop {
            let read = raw::read_with(&mut self.sess, &op, |resp| match resp {
                Response::Continue(_) => Some(true),
                Response::MailboxData(MailboxDatum::Exists(n)) => {
                    exists = *n;
                    Some(false)
                }
                Response::Expunge(_) => {
                    exists = exists.saturating_sub(1);
                    None
                }
                _ => None,
            });
            match tokio::time::timeout_at(deadline, read).await {
                Ok(Ok(Some(true))) => idling = true,
                Ok(Ok(Some(false))) => {
                    if exists > before {
                        changed = true;
                        break;
                    }
                }
                Ok(Ok(None)) => {}
                Ok(Err(e)) => return Err(self.note_error(e)),
                Err(_) => break,
            }
            if !idling && tokio::time::Instant::now() >= deadline {
                break;
            }
        }
        let io = |e: std::io::Error| ImapError::Io {
            op: op.clone(),
            reason: e.to_string(),
        };
        let w = self.sess.get_mut();
        let sent = async {
            w.write_all(b"DONE\r\n").await?;
            w.flush().await
        }
        .await;
        if let Err(e) = sent {
            return Err(self.note_error(io(e)));
        }
        let r = raw::finish(&mut self.sess, &tag, &op, |r| {
            if let Response::MailboxData(MailboxDatum::Exists(n)) = r {
                exists = *n;
            }
            Ok(())
        })
        .await;
        r.map_err(|e| self.note_error(e))?;
        self.exists = exists;
        Ok(changed || exists > before)
    }
}
