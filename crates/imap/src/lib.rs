//! IMAP adapter: connects to servers (implicit TLS, STARTTLS, or plain text when allowed)
//! and implements the [`MailSource`](mailshift_core::ports::MailSource) and
//! [`MailTarget`](mailshift_core::ports::MailTarget) ports.
//!
//! async-imap provides the transport, the response parser (imap-proto) and login. It does
//! not expose what a byte-exact, fast copier needs (the raw INTERNALDATE string, APPENDUID,
//! MULTIAPPEND, LITERAL+, HIGHESTMODSEQ with PERMANENTFLAGS in one EXAMINE), so those
//! commands are written here with `run_command` + raw literal writes + `read_response`,
//! on the same async-imap session. See ARCHITECTURE.md.

mod auth;
mod connect;
mod error;
mod guard;
mod raw;
mod session;

pub use auth::{Auth, TokenSource};
pub use connect::{FleetConnectors, ImapConnector, ServerConfig, Side};
pub use error::ImapError;
pub use session::ImapSession;
