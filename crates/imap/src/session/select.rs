//! EXAMINE/SELECT (a folder opened with its UIDVALIDITY, UIDNEXT, HIGHESTMODSEQ and
//! PERMANENTFLAGS in one round trip) and STATUS.

use super::ImapSession;
use crate::error::ImapError;
use crate::raw::{self, quote};
use imap_proto::{MailboxDatum, Response, ResponseCode, Status, StatusAttribute};
use mailshift_core::flags::PermanentFlags;
use mailshift_core::ports::FolderStatus;

impl ImapSession {
    pub(super) async fn open(
        &mut self,
        folder: &str,
        read_only: bool,
    ) -> Result<FolderStatus, ImapError> {
        let verb = if read_only { "EXAMINE" } else { "SELECT" };
        let cond = if self.caps.condstore {
            " (CONDSTORE)"
        } else {
            ""
        };
        let cmd = format!("{verb} {}{cond}", quote(folder)?);
        let op = format!("{verb} {folder}");
        let mut st = FolderStatus {
            uidvalidity: 0,
            uidnext: None,
            exists: 0,
            highest_modseq: None,
            permanent_flags: PermanentFlags::unrestricted(),
        };
        let mut saw_validity = false;
        let mut saw_permanent = false;
        self.selected = None;
        let result = raw::command(&mut self.sess, &cmd, &op, |r| {
            match r {
                Response::Data {
                    status: Status::Ok,
                    outcome,
                } => match &outcome.code {
                    Some(ResponseCode::UidValidity(v)) => {
                        st.uidvalidity = *v;
                        saw_validity = true;
                    }
                    Some(ResponseCode::UidNext(v)) => st.uidnext = Some(*v),
                    Some(ResponseCode::HighestModSeq(v)) => st.highest_modseq = Some(*v),
                    Some(ResponseCode::PermanentFlags(flags)) => {
                        saw_permanent = true;
                        st.permanent_flags.any_keyword = flags.iter().any(|f| f == "\\*");
                        st.permanent_flags.keywords = flags
                            .iter()
                            .filter(|f| !f.starts_with('\\'))
                            .map(|f| f.to_string())
                            .collect();
                    }
                    _ => {}
                },
                Response::MailboxData(MailboxDatum::Exists(n)) => st.exists = *n,
                _ => {}
            }
            Ok(())
        })
        .await;
        if let Err(e) = result {
            return Err(self.note_error(e));
        }
        if !saw_permanent {
            st.permanent_flags = PermanentFlags::unrestricted();
        }
        if !saw_validity {
            return Err(ImapError::Protocol {
                op,
                text: "no UIDVALIDITY in the reply; mailshift needs UIDs to copy safely".into(),
            });
        }
        self.exists = st.exists;
        self.selected = Some(folder.to_string());
        Ok(st)
    }

    /// STATUS of a folder without opening it.
    pub(super) async fn status_inner(&mut self, folder: &str) -> Result<FolderStatus, ImapError> {
        let items = if self.caps.condstore {
            "(MESSAGES UIDNEXT UIDVALIDITY HIGHESTMODSEQ)"
        } else {
            "(MESSAGES UIDNEXT UIDVALIDITY)"
        };
        let cmd = format!("STATUS {} {items}", quote(folder)?);
        let op = format!("STATUS {folder}");
        let mut st = None;
        raw::command(&mut self.sess, &cmd, &op, |r| {
            if let Some(s) = status_of(r) {
                st = Some(s);
            }
            Ok(())
        })
        .await
        .map_err(|e| self.note_error(e))?;
        st.ok_or(ImapError::Protocol {
            op,
            text: "no STATUS data in the reply".into(),
        })
    }
}

/// The counters of a `* STATUS` response.
pub(crate) fn status_of(r: &Response<'_>) -> Option<FolderStatus> {
    let Response::MailboxData(MailboxDatum::Status { status, .. }) = r else {
        return None;
    };
    let mut st = FolderStatus {
        uidvalidity: 0,
        uidnext: None,
        exists: 0,
        highest_modseq: None,
        permanent_flags: PermanentFlags::unrestricted(),
    };
    for a in status {
        match a {
            StatusAttribute::Messages(n) => st.exists = *n,
            StatusAttribute::UidNext(n) => st.uidnext = Some(*n),
            StatusAttribute::UidValidity(n) => st.uidvalidity = *n,
            StatusAttribute::HighestModSeq(n) => st.highest_modseq = Some(*n),
            _ => {}
        }
    }
    Some(st)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn status_counters() {
        let line = b"* STATUS \"Sent Items\" (MESSAGES 231 UIDNEXT 44292 UIDVALIDITY 1 HIGHESTMODSEQ 90)\r\n";
        let (_, r) = Response::parse(line).unwrap();
        let st = status_of(&r).unwrap();
        assert_eq!(
            (st.exists, st.uidnext, st.uidvalidity, st.highest_modseq),
            (231, Some(44292), 1, Some(90))
        );
    }
}
