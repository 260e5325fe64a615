//! The client reconfiguration kit: when a mail client keeps connecting to the old
//! server after the DNS change, it is given the new server's settings in the formats
//! clients read, generated from a batch.
//!
//! - [`settings`]: what a client needs (domain, servers, login form, password note);
//! - [`render`] (pure): Thunderbird autoconfig, Outlook POX autodiscover (request
//!   parsing and answer), Apple `.mobileconfig` profiles, the settings page and sheet;
//! - [`sign`]: CMS signing of profiles with the operator's certificate;
//! - [`directory`]: the port through which the HTTP routes read settings, and an
//!   in-memory implementation;
//! - [`http`]: the public routes clients fetch, rate-limited and bounded;
//! - [`kit`]: a batch's settings derived from its mailboxes, and the static files of
//!   `mailshift clients export`.
//!
//! Formats followed: Mozilla's autoconfig "clientConfig" 1.1, MS-OXDSCLI (POX
//! autodiscover, outlook response schema 2006a), Apple's Configuration Profile
//! reference (`com.apple.mail.managed`), RFC 5652 (CMS SignedData), RFC 4122 (UUID v5).
#![deny(clippy::unwrap_used)]

pub mod directory;
pub mod error;
pub mod http;
pub mod kit;
pub mod render;
pub mod settings;
pub mod sign;

pub use directory::{ClientDirectory, MemoryDirectory};
pub use error::{Error, Result};
pub use settings::{DomainSettings, LoginForm, PasswordNote, Server, UserSettings};
pub use sign::ProfileSigner;
