//! The database schema of mailshift, one migration per change, applied alike to SQLite
//! (the embedded state file) and PostgreSQL (the fleet).
//!
//! This crate owns the tables and their constraints, nothing else: the entities that read
//! and write them live in `mailshift-store`. Every migration must run on both backends, so
//! it only uses portable column types (text, bigint, uuid, timestamp with time zone) and
//! portable constraints.
//!
//! Architecture invariant: a migration never changes once released; a schema change is a
//! new module appended to [`Migrator::migrations`].

use sea_orm_migration::prelude::*;

mod m0001_initial;
mod m0002_fleet;
mod m0003_host_slots;
mod m0004_domains;
mod m0005_batches;
mod m0006_outbox;
mod m0100_provision;
mod m0101_token_expiry;

/// All migrations of the state schema, in order.
pub struct Migrator;

#[async_trait::async_trait]
impl MigratorTrait for Migrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![
            Box::new(m0001_initial::Migration),
            Box::new(m0002_fleet::Migration),
            Box::new(m0003_host_slots::Migration),
            Box::new(m0004_domains::Migration),
            Box::new(m0005_batches::Migration),
            Box::new(m0006_outbox::Migration),
            Box::new(m0100_provision::Migration),
            Box::new(m0101_token_expiry::Migration),
        ]
    }
}
