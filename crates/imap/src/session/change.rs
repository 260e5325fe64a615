//! Changes on the destination: CREATE, UID STORE, UID EXPUNGE (and the safe equivalent
//! without UIDPLUS), UID MOVE/COPY, DELETE.

use super::{ImapSession, ranges, sorted_set};
use crate::error::ImapError;
use crate::raw::{self, quote};
use imap_proto::{MailboxDatum, Response, ResponseCode, Status};
use mailshift_core::flags::FlagSet;
use mailshift_core::ports::Transfer;
use mailshift_core::uidset;

impl ImapSession {
    pub(super) async fn create_inner(&mut self, folder: &str) -> Result<(), ImapError> {
        let cmd = format!("CREATE {}", quote(folder)?);
        match raw::command(
            &mut self.sess,
            &cmd,
            &format!("creating folder {folder}"),
            |_| Ok(()),
        )
        .await
        {
            Ok(_) => Ok(()),
            Err(ImapError::No {
                code: Some(crate::error::Code::AlreadyExists),
                ..
            }) => Ok(()),
            // Servers without response codes say it in words.
            Err(ImapError::No {
                code: None, text, ..
            }) if text.to_ascii_lowercase().contains("already exists") => Ok(()),
            Err(e) => Err(self.note_error(e)),
        }
    }

    /// Runs a command on the selected folder, tracking EXISTS/EXPUNGE and collecting
    /// COPYUID (tagged or untagged, as MOVE sends it).
    pub(super) async fn run_tracked(
        &mut self,
        cmd: &str,
        op: &str,
        copy_uid: &mut Vec<(u32, u32)>,
    ) -> Result<(), ImapError> {
        let mut exists = self.exists;
        let mut pairs: Vec<(u32, u32)> = Vec::new();
        let collect = |code: &Option<ResponseCode<'_>>, pairs: &mut Vec<(u32, u32)>| {
            if let Some(ResponseCode::CopyUid(_, from, to)) = code {
                let a = uidset::expand(&ranges(from));
                let b = uidset::expand(&ranges(to));
                if a.len() == b.len() {
                    pairs.extend(a.into_iter().zip(b));
                }
            }
        };
        let tag = self.sess.run_command(cmd).await.map_err(|e| ImapError::Io {
            op: op.to_string(),
            reason: e.to_string(),
        });
        let tag = match tag {
            Ok(t) => t,
            Err(e) => return Err(self.note_error(e)),
        };
        let r = loop {
            let step = raw::read_with(&mut self.sess, op, |resp| match resp {
                Response::Done {
                    tag: t,
                    status: Status::Ok,
                    outcome,
                } if *t == tag => {
                    collect(&outcome.code, &mut pairs);
                    Some(Ok(()))
                }
                Response::Done {
                    tag: t, outcome, ..
                } if *t == tag => {
                    let (code, text) =
                        raw::outcome_code(outcome.code.as_ref(), outcome.information.as_deref());
                    Some(Err(ImapError::No {
                        op: op.to_string(),
                        code,
                        text,
                    }))
                }
                Response::Data {
                    status: Status::Ok,
                    outcome,
                } => {
                    collect(&outcome.code, &mut pairs);
                    None
                }
                Response::MailboxData(MailboxDatum::Exists(n)) => {
                    exists = *n;
                    None
                }
                Response::Expunge(_) => {
                    exists = exists.saturating_sub(1);
                    None
                }
                _ => None,
            })
            .await;
            match step {
                Ok(Some(r)) => break r,
                Ok(None) => {}
                Err(e) => break Err(e),
            }
        };
        self.exists = exists;
        copy_uid.extend(pairs);
        r.map_err(|e| self.note_error(e))
    }

    pub(super) async fn set_flags_inner(
        &mut self,
        uids: &[u32],
        flags: &FlagSet,
    ) -> Result<(), ImapError> {
        let folder = self.require_selected("UID STORE")?.to_string();
        if uids.is_empty() {
            return Ok(());
        }
        let cmd = format!(
            "UID STORE {} FLAGS.SILENT {}",
            sorted_set(uids),
            flags.to_imap_list()
        );
        self.run_tracked(&cmd, &format!("setting flags in {folder}"), &mut Vec::new())
            .await
    }

    pub(super) async fn expunge_inner(&mut self, uids: &[u32]) -> Result<(), ImapError> {
        let folder = self.require_selected("UID EXPUNGE")?.to_string();
        if uids.is_empty() {
            return Ok(());
        }
        let set = sorted_set(uids);
        let op = format!("deleting messages in {folder}");
        if !self.caps.uidplus {
            // Without UID EXPUNGE, EXPUNGE removes every \Deleted message of the folder:
            // safe only when no other message carries \Deleted (a user's pending delete).
            let mut marked: Vec<u32> = Vec::new();
            raw::command(
                &mut self.sess,
                "UID SEARCH DELETED",
                &format!("listing deleted messages of {folder}"),
                |r| {
                    if let Response::MailboxData(MailboxDatum::Search(ids)) = r {
                        marked.extend_from_slice(ids);
                    }
                    Ok(())
                },
            )
            .await
            .map_err(|e| self.note_error(e))?;
            let ours: std::collections::HashSet<u32> = uids.iter().copied().collect();
            if marked.iter().any(|u| !ours.contains(u)) {
                return Err(ImapError::Unsupported(format!(
                    "{} has no UIDPLUS and {folder} holds messages a user marked \\Deleted: \
                     mailshift cannot delete single messages there without expunging those too",
                    self.cfg.label()
                )));
            }
            self.run_tracked(
                &format!("UID STORE {set} +FLAGS.SILENT (\\Deleted)"),
                &op,
                &mut Vec::new(),
            )
            .await?;
            return self.run_tracked("EXPUNGE", &op, &mut Vec::new()).await;
        }
        self.run_tracked(
            &format!("UID STORE {set} +FLAGS.SILENT (\\Deleted)"),
            &op,
            &mut Vec::new(),
        )
        .await?;
        self.run_tracked(&format!("UID EXPUNGE {set}"), &op, &mut Vec::new())
            .await
    }

    /// EXPUNGE of exactly `uids` without UID EXPUNGE: the folder's other \\Deleted
    /// messages lose the flag for the EXPUNGE and get it back after (also when the
    /// EXPUNGE fails).
    pub(super) async fn expunge_restoring_inner(&mut self, uids: &[u32]) -> Result<(), ImapError> {
        let folder = self.require_selected("EXPUNGE")?.to_string();
        if uids.is_empty() {
            return Ok(());
        }
        let mut marked: Vec<u32> = Vec::new();
        raw::command(
            &mut self.sess,
            "UID SEARCH DELETED",
            &format!("listing deleted messages of {folder}"),
            |r| {
                if let Response::MailboxData(MailboxDatum::Search(ids)) = r {
                    marked.extend_from_slice(ids);
                }
                Ok(())
            },
        )
        .await
        .map_err(|e| self.note_error(e))?;
        let ours: std::collections::HashSet<u32> = uids.iter().copied().collect();
        let others: Vec<u32> = marked.into_iter().filter(|u| !ours.contains(u)).collect();
        let op = format!("deleting messages in {folder}");
        if !others.is_empty() {
            self.run_tracked(
                &format!(
                    "UID STORE {} -FLAGS.SILENT (\\Deleted)",
                    sorted_set(&others)
                ),
                &op,
                &mut Vec::new(),
            )
            .await?;
        }
        let removed = async {
            self.run_tracked(
                &format!("UID STORE {} +FLAGS.SILENT (\\Deleted)", sorted_set(uids)),
                &op,
                &mut Vec::new(),
            )
            .await?;
            self.run_tracked("EXPUNGE", &op, &mut Vec::new()).await
        }
        .await;
        if !others.is_empty() {
            self.run_tracked(
                &format!(
                    "UID STORE {} +FLAGS.SILENT (\\Deleted)",
                    sorted_set(&others)
                ),
                &format!("restoring \\Deleted in {folder}"),
                &mut Vec::new(),
            )
            .await?;
        }
        removed
    }

    pub(super) async fn transfer_inner(
        &mut self,
        uids: &[u32],
        to: &str,
        how: Transfer,
    ) -> Result<Vec<(u32, u32)>, ImapError> {
        let folder = self.require_selected("UID MOVE")?.to_string();
        if uids.is_empty() {
            return Ok(Vec::new());
        }
        let set = sorted_set(uids);
        let mut pairs = Vec::new();
        let op = format!("moving messages from {folder} to {to}");
        match how {
            Transfer::Move if self.caps.move_ => {
                self.run_tracked(&format!("UID MOVE {set} {}", quote(to)?), &op, &mut pairs)
                    .await?;
            }
            Transfer::Move => {
                self.run_tracked(&format!("UID COPY {set} {}", quote(to)?), &op, &mut pairs)
                    .await?;
                self.expunge_inner(uids).await?;
            }
            Transfer::Copy => {
                self.run_tracked(&format!("UID COPY {set} {}", quote(to)?), &op, &mut pairs)
                    .await?;
            }
        }
        Ok(pairs)
    }

    pub(super) async fn delete_folder_inner(&mut self, folder: &str) -> Result<(), ImapError> {
        if self.selected.as_deref() == Some(folder) {
            // Some servers refuse to delete the selected folder.
            self.run_tracked("UNSELECT", "UNSELECT", &mut Vec::new())
                .await
                .ok();
            self.selected = None;
        }
        self.run_tracked(
            &format!("DELETE {}", quote(folder)?),
            &format!("deleting folder {folder}"),
            &mut Vec::new(),
        )
        .await
    }
}
