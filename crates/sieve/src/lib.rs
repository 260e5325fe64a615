//! ManageSieve adapter: a client for RFC 5804 on tokio that implements the domain's
//! `SieveSource` and `SieveTarget` ports (`mailshift_core::sieve`).
//!
//! - [`connect`]: TCP, implicit TLS or STARTTLS with rustls (certificates verified against
//!   the system roots plus an optional CA file; plain text only when allowed and the
//!   server offers no STARTTLS), login ([`auth`]), capabilities.
//! - [`response`]: the response parser, bytes in and values out, with size ceilings.
//! - [`command`]: the commands as bytes (the only place that writes ManageSieve syntax).
//! - [`session`]: a logged-in session; CAPABILITY, LISTSCRIPTS, GETSCRIPT, CHECKSCRIPT,
//!   PUTSCRIPT, SETACTIVE, LOGOUT, each under a timeout.
//! - [`error`]: the one error type, converted to `mailshift_core::Error` at the ports.
//!
//! Follows RFC 5804 (ManageSieve), RFC 4616 (SASL PLAIN), RFC 7628 (OAUTHBEARER) and
//! Google's/Microsoft's XOAUTH2.
//!
//! ```no_run
//! # async fn run() -> mailshift_core::Result<()> {
//! use mailshift_sieve::{SieveAuth, SieveConfig, Side, connect_source};
//! let cfg = SieveConfig {
//!     endpoint: "sieve://alice@old.example".parse()?,
//!     auth: SieveAuth::Password("secret".to_string().into()),
//!     side: Side::Source,
//!     allow_plaintext: false,
//!     ca_file: None,
//!     timeout: std::time::Duration::from_secs(60),
//! };
//! let mut old = connect_source(&cfg).await?;
//! for script in old.list_scripts().await? {
//!     println!("{} ({} bytes)", script.name, old.get_script(&script.name).await?.len());
//! }
//! # Ok(()) }
//! ```
#![forbid(unsafe_code)]

mod auth;
pub mod command;
pub mod connect;
pub mod error;
pub mod response;
pub mod session;

pub use connect::{Side, SieveAuth, SieveConfig, connect, connect_source, connect_target};
pub use error::SieveError;
pub use session::SieveSession;
