//! The state store of mailshift: per-folder checkpoints, the source-to-destination message
//! map and the messages the destination refused, in SQLite (embedded mode, one file) or
//! PostgreSQL (fleet mode), through one set of sea-orm entities over the
//! `mailshift-migrations` schema.
//!
//! [`SeaStore`] implements `mailshift_core::ports::StateStore`; [`StoreError`] is this
//! crate's error, converted to `mailshift_core::Error` (kind `Store`) at the trait
//! boundary so callers never see a driver error.
//!
//! Architecture invariant: this crate knows nothing about IMAP, queues or the engine; it
//! stores what the core types say and decides nothing.
//!
//! # SQLite concurrency
//!
//! A SQLite store uses a pool of exactly **one** connection. Every task of the process
//! waits its turn in the pool's fair queue, so writers are serialised in-process and can
//! never fail with "database is locked", however many workers share the file. The cost is
//! that reads wait for writes too; with WAL and `synchronous = NORMAL` a 400-row commit
//! takes a few milliseconds, so the queue stays short. (A pool of several connections
//! would let readers run alongside, but then concurrent writers contend on SQLite's file
//! lock, where only the busy timeout stands between them and an error.) Other processes
//! on the same file are covered by the 30 s busy timeout and by `BEGIN IMMEDIATE` for the
//! batch commit, which takes the write lock up front instead of failing to upgrade.
//! Do not hold a transaction of [`SeaStore::connection`] open while calling the store:
//! with one connection that waits forever.

mod batches;
mod domains;
pub mod entity;
mod error;
mod fleet;
mod outbox;
mod provision;
pub mod secrets;
mod store;

pub use batches::{TOKEN_PREFIX, token_hash};
pub use error::StoreError;
pub use secrets::{SecretError, SecretKey};
pub use store::SeaStore;

/// Opens the fleet's database (`postgres://...`, or `sqlite:` for a single machine),
/// applying the schema migrations unless `migrate` is false, with the key that seals
/// mailbox credentials if given: the one handle a front end needs, as ports.
pub async fn open_fleet(
    url: &str,
    migrate: bool,
    key: Option<SecretKey>,
) -> Result<std::sync::Arc<dyn mailshift_core::ports::FleetStore>, StoreError> {
    let store = SeaStore::connect(url, migrate).await?;
    Ok(std::sync::Arc::new(match key {
        Some(k) => store.with_key(k),
        None => store,
    }))
}

/// Opens (creating it if missing) the embedded mode's state file.
pub async fn open_state_file(
    path: &std::path::Path,
) -> Result<std::sync::Arc<dyn mailshift_core::ports::FleetStore>, StoreError> {
    Ok(std::sync::Arc::new(SeaStore::open_sqlite(path).await?))
}
