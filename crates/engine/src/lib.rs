//! The engine: everything between "copy this folder" and the IMAP/store/queue ports.
//!
//! - [`batches`]: the batch service (import, readiness, schedule, actions, views,
//!   reports) over the fleet's store and connectors, for the CLI, the API and the
//!   dashboard alike.
//! - [`adopt`]: recognising mail already on the destination by content, whatever the
//!   state says (destination-side idempotence).
//! - [`copy`]: one folder pass (list, plan, fetch and append in pipelined batches,
//!   checkpoint each batch, recover an interrupted batch by fingerprint).
//! - [`pass`]: preparing a mailbox pass (folder mapping, creation, reconciliation) into
//!   one job per folder, for the in-process queue or RabbitMQ alike.
//! - [`provision`]: the outcome of `mailshift provision` (per mailbox, alias, domain), its
//!   summary, and what is recorded afterwards (aliases applied, interrupted creations).
//! - [`reconcile`]: recognising messages by content when UIDs no longer suffice (moves
//!   between folders, recreated folders, folders gone from the source).
//! - [`fleet`]: the scheduler of fleet mode (plans due mailboxes, publishes jobs).
//! - [`lifecycle`]: the shutdown request every long-running loop and wait watches.
//! - [`lease`]: folder leases per claim, renewed while held, stopped when dropped.
//! - [`limits`]: fleet-wide per-server connection limits (leased slots).
//! - [`fault`]: fault points that let crash tests stop a run at an exact place.
//! - [`retry`]: when a failed job is tried again (outages by time, failures by attempt).
//! - [`trace`]: a job's spans as children of the span that published it.
//! - [`verify`]: comparing both servers independently of stored state.
//! - [`sieve`]: copying a mailbox's Sieve scripts (CHECKSCRIPT first, refusals reported
//!   per script, the active one activated) and comparing them for `verify`.
//! - [`worker`]: the loop that takes folder jobs from a queue, runs them with pooled
//!   sessions, retries what is retryable and acknowledges after the checkpoint.
//! - [`embedded`]: `mailshift migrate` on one machine: plan the folders, create them, put
//!   one job per folder on an in-process queue and run workers over it.
//!
//! Architecture invariant: this crate speaks only to ports (traits in `mailshift-core`);
//! it knows no IMAP syntax, SQL or AMQP.

pub mod adopt;
pub mod batches;
pub mod copy;
pub mod embedded;
pub mod fault;
pub mod fleet;
pub mod lease;
pub mod lifecycle;
pub mod limits;
pub mod metrics;
pub mod pass;
pub mod provision;
pub mod reconcile;
pub mod retry;
pub mod sieve;
pub mod trace;
pub mod verify;
pub mod worker;

pub use embedded::{MigrateOptions, migrate};
