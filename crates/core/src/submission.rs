//! Handing a message to a mail provider's submission service (RFC 6409), the port the
//! D-1 test send goes through. The SMTP adapter lives in `mailshift-deliver`; tests and
//! other wirings can put any implementation behind it.

use crate::Result;
use async_trait::async_trait;

/// The SMTP envelope of a message: who bounces go to and who receives it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Envelope {
    /// `MAIL FROM` (the SPF identity of the message).
    pub mail_from: String,
    /// `RCPT TO`, at least one.
    pub rcpt_to: Vec<String>,
}

/// What the submission server answered when it took the message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Accepted {
    /// The final reply, e.g. `250 2.0.0 Ok: queued as 4XyZ1`.
    pub reply: String,
}

impl Accepted {
    /// The queue id a server announces in its final reply (`queued as ID`, Postfix and
    /// Exim style), to find the message in the server's logs.
    pub fn queue_id(&self) -> Option<&str> {
        let lower = self.reply.to_ascii_lowercase();
        let at = lower.find("queued as ")? + "queued as ".len();
        let id = self.reply[at..].split_whitespace().next()?;
        let id = id.trim_matches(|c: char| !c.is_ascii_alphanumeric());
        (!id.is_empty()).then_some(id)
    }
}

/// Submits messages to one account of a provider. Errors are classified: a refused login
/// is `ErrorKind::Auth`, a refused message `Refused`, an unreachable or silent server
/// `Network`, a certificate problem `Tls`. Credentials never appear in them.
#[async_trait]
pub trait Submitter: Send + Sync {
    /// Where messages go, for reports: `smtps://alice@example.com@smtp.new.example:465`
    /// (never a secret).
    fn label(&self) -> String;
    /// Logs in and hands over one message (raw RFC 5322 bytes, CRLF line ends).
    async fn submit(&self, envelope: &Envelope, raw: &[u8]) -> Result<Accepted>;
    /// Logs in and out without sending anything (to tell a refused login apart from
    /// other failures).
    async fn check_login(&self) -> Result<()>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queue_ids_are_read_from_the_final_reply() {
        let a = |r: &str| Accepted {
            reply: r.to_string(),
        };
        assert_eq!(
            a("250 2.0.0 Ok: queued as 4XyZ1Q2abc").queue_id(),
            Some("4XyZ1Q2abc")
        );
        assert_eq!(
            a("250 OK id=1rAbCd-000123-Xy").queue_id(),
            None,
            "no `queued as`"
        );
        assert_eq!(a("250 2.0.0 Ok: queued as <ABC>.").queue_id(), Some("ABC"));
    }
}
