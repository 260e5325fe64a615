//! The fleet as a service: a row per published folder job (a transactional outbox the
//! scheduler fills in the same transaction as the pass it plans, and the record of each
//! job's completion, counted once however often it is redelivered), planning leases on
//! mailboxes (several schedulers may run), a note for mailboxes waiting on an outage, and
//! the account key that recognises a migration under another spelling of its addresses.

use sea_orm_migration::prelude::*;

pub struct Migration;

impl MigrationName for Migration {
    fn name(&self) -> &str {
        "m0006_outbox"
    }
}

#[derive(DeriveIden)]
enum Job {
    Table,
    Id,
    MigrationId,
    /// The pass the job belongs to (`mailbox.pass_id` while it is the current one).
    PassId,
    /// The `FolderJob` as JSON, exactly as published.
    Payload,
    /// Publication order: unix microseconds plus the job's place in its pass.
    CreatedAt,
    /// Unix seconds (this and the other times of this table). Set by the relay once RabbitMQ confirmed the publish; null: still to publish.
    PublishedAt,
    /// The relay that is publishing it, and until when (several schedulers may run).
    RelayOwner,
    RelayUntil,
    /// Set once, by the first completion (ack or dead letter) of the job.
    FinishedAt,
    /// done | failed | dead
    Outcome,
    Error,
}

#[derive(DeriveIden)]
enum Mailbox {
    Table,
    Batch,
    /// The pass whose jobs `jobs_left` counts.
    PassId,
    /// The scheduler planning this mailbox now, and until when.
    PlanOwner,
    PlanUntil,
    /// Why the mailbox waits (an outage, not its own fault); cleared by its next pass.
    Warning,
}

#[derive(DeriveIden)]
enum MigrationTable {
    #[sea_orm(iden = "migration")]
    Table,
    /// Hex SHA-256 of both accounts' users and INBOX UIDVALIDITY (`core::account`).
    AccountKey,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(Job::Table)
                    .if_not_exists()
                    .col(ColumnDef::new(Job::Id).uuid().not_null().primary_key())
                    .col(ColumnDef::new(Job::MigrationId).uuid().not_null())
                    .col(ColumnDef::new(Job::PassId).uuid().not_null())
                    .col(ColumnDef::new(Job::Payload).text().not_null())
                    .col(ColumnDef::new(Job::CreatedAt).big_integer().not_null())
                    .col(ColumnDef::new(Job::PublishedAt).big_integer().null())
                    .col(ColumnDef::new(Job::RelayOwner).text().null())
                    .col(ColumnDef::new(Job::RelayUntil).big_integer().null())
                    .col(ColumnDef::new(Job::FinishedAt).big_integer().null())
                    .col(ColumnDef::new(Job::Outcome).text().null())
                    .col(ColumnDef::new(Job::Error).text().null())
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("job_unpublished")
                    .table(Job::Table)
                    .col(Job::PublishedAt)
                    .col(Job::CreatedAt)
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("job_pass")
                    .table(Job::Table)
                    .col(Job::MigrationId)
                    .col(Job::PassId)
                    .to_owned(),
            )
            .await?;
        // SQLite adds one column per ALTER TABLE.
        let columns = [
            ColumnDef::new(Mailbox::PassId).uuid().null().to_owned(),
            ColumnDef::new(Mailbox::PlanOwner).text().null().to_owned(),
            ColumnDef::new(Mailbox::PlanUntil)
                .big_integer()
                .null()
                .to_owned(),
            ColumnDef::new(Mailbox::Warning).text().null().to_owned(),
        ];
        for mut c in columns {
            manager
                .alter_table(
                    Table::alter()
                        .table(Mailbox::Table)
                        .add_column(&mut c)
                        .to_owned(),
                )
                .await?;
        }
        manager
            .create_index(
                Index::create()
                    .name("mailbox_batch")
                    .table(Mailbox::Table)
                    .col(Mailbox::Batch)
                    .to_owned(),
            )
            .await?;
        manager
            .alter_table(
                Table::alter()
                    .table(MigrationTable::Table)
                    .add_column(ColumnDef::new(MigrationTable::AccountKey).text().null())
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("migration_account_key")
                    .table(MigrationTable::Table)
                    .col(MigrationTable::AccountKey)
                    .to_owned(),
            )
            .await?;
        Ok(())
    }
}
