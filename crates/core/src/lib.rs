//! The mailshift domain: what a mailbox migration *is*, with no I/O.
//!
//! This crate owns endpoints (where mail lives), folder mapping (which source folder goes
//! where), flags, content fingerprints, copy plans (which messages go in which batch),
//! folder jobs, reports, batches (schedule, state, progress), the cutover timeline and phases of a domain, and the ports (traits) that the IMAP, store and queue adapters
//! implement. It knows nothing about sockets, SQL or AMQP, and it never blocks.

pub mod account;
pub mod aliases;
pub mod batch;
pub mod cutover;
pub mod endpoint;
pub mod error;
pub mod fingerprint;
pub mod flags;
pub mod folder;
pub mod import;
pub mod job;
pub mod mailbox;
pub mod plan;
pub mod ports;
pub mod provision;
pub mod report;
pub mod sieve;
pub mod steps;
pub mod submission;
pub mod time;
pub mod uidset;

pub use error::{Error, ErrorKind, Result};
