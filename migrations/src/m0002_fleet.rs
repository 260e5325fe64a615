//! The fleet: mailboxes registered for migration (with their credentials, encrypted) and
//! folder leases, so that two workers never copy the same folder at once.

use sea_orm_migration::prelude::*;

pub struct Migration;

impl MigrationName for Migration {
    fn name(&self) -> &str {
        "m0002_fleet"
    }
}

/// One mailbox to migrate: the two endpoints (as in `migration`), sealed passwords and
/// the options of its passes.
#[derive(DeriveIden)]
enum Mailbox {
    Table,
    Id,
    MigrationId,
    Batch,
    Source,
    Dest,
    /// AES-256-GCM sealed password, base64 (nonce || ciphertext). Never plaintext.
    SourceSecret,
    DestSecret,
    /// JSON of the pass options (folder rules, TLS consent, deletions).
    Options,
    /// pending | syncing | synced | failed
    Status,
    LastError,
    LastPassAt,
    NextPassAt,
    CreatedAt,
}

#[derive(DeriveIden)]
enum Folder {
    Table,
    LeaseOwner,
    LeaseUntil,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(Mailbox::Table)
                    .if_not_exists()
                    .col(ColumnDef::new(Mailbox::Id).uuid().not_null().primary_key())
                    .col(ColumnDef::new(Mailbox::MigrationId).uuid().not_null())
                    .col(ColumnDef::new(Mailbox::Batch).text().null())
                    .col(ColumnDef::new(Mailbox::Source).text().not_null())
                    .col(ColumnDef::new(Mailbox::Dest).text().not_null())
                    .col(ColumnDef::new(Mailbox::SourceSecret).text().not_null())
                    .col(ColumnDef::new(Mailbox::DestSecret).text().not_null())
                    .col(ColumnDef::new(Mailbox::Options).text().not_null())
                    .col(ColumnDef::new(Mailbox::Status).text().not_null())
                    .col(ColumnDef::new(Mailbox::LastError).text().null())
                    .col(
                        ColumnDef::new(Mailbox::LastPassAt)
                            .timestamp_with_time_zone()
                            .null(),
                    )
                    .col(
                        ColumnDef::new(Mailbox::NextPassAt)
                            .timestamp_with_time_zone()
                            .null(),
                    )
                    .col(
                        ColumnDef::new(Mailbox::CreatedAt)
                            .timestamp_with_time_zone()
                            .not_null(),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("mailbox_migration_key")
                    .table(Mailbox::Table)
                    .col(Mailbox::MigrationId)
                    .unique()
                    .if_not_exists()
                    .to_owned(),
            )
            .await?;
        manager
            .alter_table(
                Table::alter()
                    .table(Folder::Table)
                    .add_column(ColumnDef::new(Folder::LeaseOwner).text().null())
                    .to_owned(),
            )
            .await?;
        manager
            .alter_table(
                Table::alter()
                    .table(Folder::Table)
                    .add_column(
                        ColumnDef::new(Folder::LeaseUntil)
                            .timestamp_with_time_zone()
                            .null(),
                    )
                    .to_owned(),
            )
            .await
    }
}
