//! Batches and the HTTP API: one row per batch with its schedule and state, API tokens
//! (stored as SHA-256 hashes, never the token), and the mailbox columns the dashboard's
//! progress needs (jobs of the running pass, the source's size, the last credential
//! check).

use sea_orm_migration::prelude::*;

pub struct Migration;

impl MigrationName for Migration {
    fn name(&self) -> &str {
        "m0005_batches"
    }
}

#[derive(DeriveIden)]
enum Batch {
    Table,
    Name,
    Domain,
    /// draft | running | paused | completing | completed
    State,
    /// Unix seconds (all times of this table).
    StartAt,
    IntervalSecs,
    SwitchAt,
    CompleteAt,
    /// Mailboxes of the batch with a pass in flight at once; null: no limit.
    Concurrency,
    /// The same, per source server (`host:port`).
    HostConcurrency,
    FinalPassAt,
    CreatedAt,
}

#[derive(DeriveIden)]
enum ApiToken {
    Table,
    Id,
    Name,
    /// Hex SHA-256 of the token.
    Hash,
    ReadOnly,
    CreatedAt,
    LastUsedAt,
}

#[derive(DeriveIden)]
enum Mailbox {
    Table,
    /// Folder jobs of the current pass not yet finished (acked or dead-lettered).
    JobsLeft,
    SourceMessages,
    SourceBytes,
    /// JSON of the last `batch verify` of this mailbox.
    Checked,
    /// Unix seconds; with `copied_at_start`, the current pass's rate.
    PassStartedAt,
    CopiedAtStart,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(Batch::Table)
                    .if_not_exists()
                    .col(ColumnDef::new(Batch::Name).text().not_null().primary_key())
                    .col(ColumnDef::new(Batch::Domain).text().null())
                    .col(ColumnDef::new(Batch::State).text().not_null())
                    .col(ColumnDef::new(Batch::StartAt).big_integer().null())
                    .col(ColumnDef::new(Batch::IntervalSecs).big_integer().null())
                    .col(ColumnDef::new(Batch::SwitchAt).big_integer().null())
                    .col(ColumnDef::new(Batch::CompleteAt).big_integer().null())
                    .col(ColumnDef::new(Batch::Concurrency).integer().null())
                    .col(ColumnDef::new(Batch::HostConcurrency).integer().null())
                    .col(ColumnDef::new(Batch::FinalPassAt).big_integer().null())
                    .col(ColumnDef::new(Batch::CreatedAt).big_integer().not_null())
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(ApiToken::Table)
                    .if_not_exists()
                    .col(ColumnDef::new(ApiToken::Id).uuid().not_null().primary_key())
                    .col(
                        ColumnDef::new(ApiToken::Name)
                            .text()
                            .not_null()
                            .unique_key(),
                    )
                    .col(
                        ColumnDef::new(ApiToken::Hash)
                            .text()
                            .not_null()
                            .unique_key(),
                    )
                    .col(ColumnDef::new(ApiToken::ReadOnly).boolean().not_null())
                    .col(ColumnDef::new(ApiToken::CreatedAt).big_integer().not_null())
                    .col(ColumnDef::new(ApiToken::LastUsedAt).big_integer().null())
                    .to_owned(),
            )
            .await?;
        // SQLite adds one column per ALTER TABLE.
        let columns = [
            ColumnDef::new(Mailbox::JobsLeft)
                .integer()
                .not_null()
                .default(0)
                .to_owned(),
            ColumnDef::new(Mailbox::SourceMessages)
                .big_integer()
                .null()
                .to_owned(),
            ColumnDef::new(Mailbox::SourceBytes)
                .big_integer()
                .null()
                .to_owned(),
            ColumnDef::new(Mailbox::Checked).text().null().to_owned(),
            ColumnDef::new(Mailbox::PassStartedAt)
                .big_integer()
                .null()
                .to_owned(),
            ColumnDef::new(Mailbox::CopiedAtStart)
                .big_integer()
                .null()
                .to_owned(),
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
        Ok(())
    }
}
