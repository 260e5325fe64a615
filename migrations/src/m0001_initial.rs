//! The initial schema: migrations, folder checkpoints, the source-to-destination message
//! map and the messages the destination refused.
//!
//! UIDs, UIDVALIDITYs and sizes are IMAP `u32`s and MODSEQs are 63-bit: all are stored as
//! `bigint` so that neither backend needs unsigned types.

use sea_orm_migration::prelude::*;

pub struct Migration;

impl MigrationName for Migration {
    fn name(&self) -> &str {
        "m0001_initial"
    }
}

/// One source mailbox into one destination mailbox, identified by both endpoints.
#[derive(DeriveIden)]
enum MigrationIden {
    #[sea_orm(iden = "migration")]
    Table,
    Id,
    Source,
    Dest,
    CreatedAt,
}

/// The checkpoint of one source folder of a migration.
#[derive(DeriveIden)]
#[allow(clippy::enum_variant_names)] // the variants are column names: source_folder, dest_folder
enum Folder {
    Table,
    Id,
    MigrationId,
    SourceFolder,
    DestFolder,
    SourceUidvalidity,
    DestUidvalidity,
    HighestUid,
    HighestModseq,
    /// JSON of `mailshift_core::ports::PendingBatch`, or NULL.
    Pending,
    /// mailshift created the destination folder (so it may delete it when the source's goes).
    DestCreated,
    UpdatedAt,
}

/// A source message known to be on the destination.
#[derive(DeriveIden)]
enum Message {
    Table,
    FolderId,
    SourceUid,
    DestUid,
    Flags,
    Size,
    /// SHA-256 of the raw message, 64 lowercase hex characters.
    Fingerprint,
    /// sha256 of the header section: finds a message again without its body (moves,
    /// UIDVALIDITY changes).
    HeaderFingerprint,
}

/// A source message the destination refused (retried by the next pass).
#[derive(DeriveIden)]
enum Failure {
    Table,
    FolderId,
    SourceUid,
    Size,
    Kind,
    Reason,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(MigrationIden::Table)
                    .if_not_exists()
                    .col(
                        ColumnDef::new(MigrationIden::Id)
                            .uuid()
                            .not_null()
                            .primary_key(),
                    )
                    .col(ColumnDef::new(MigrationIden::Source).text().not_null())
                    .col(ColumnDef::new(MigrationIden::Dest).text().not_null())
                    .col(
                        ColumnDef::new(MigrationIden::CreatedAt)
                            .timestamp_with_time_zone()
                            .not_null(),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("migration_source_dest_key")
                    .table(MigrationIden::Table)
                    .col(MigrationIden::Source)
                    .col(MigrationIden::Dest)
                    .unique()
                    .if_not_exists()
                    .to_owned(),
            )
            .await?;

        manager
            .create_table(
                Table::create()
                    .table(Folder::Table)
                    .if_not_exists()
                    .col(ColumnDef::new(Folder::Id).uuid().not_null().primary_key())
                    .col(ColumnDef::new(Folder::MigrationId).uuid().not_null())
                    .col(ColumnDef::new(Folder::SourceFolder).text().not_null())
                    .col(ColumnDef::new(Folder::DestFolder).text().not_null())
                    .col(
                        ColumnDef::new(Folder::SourceUidvalidity)
                            .big_integer()
                            .null(),
                    )
                    .col(ColumnDef::new(Folder::DestUidvalidity).big_integer().null())
                    .col(
                        ColumnDef::new(Folder::HighestUid)
                            .big_integer()
                            .not_null()
                            .default(0),
                    )
                    .col(ColumnDef::new(Folder::HighestModseq).big_integer().null())
                    .col(ColumnDef::new(Folder::Pending).text().null())
                    .col(
                        ColumnDef::new(Folder::DestCreated)
                            .boolean()
                            .not_null()
                            .default(false),
                    )
                    .col(
                        ColumnDef::new(Folder::UpdatedAt)
                            .timestamp_with_time_zone()
                            .not_null(),
                    )
                    .foreign_key(
                        ForeignKey::create()
                            .name("folder_migration_id_fkey")
                            .from(Folder::Table, Folder::MigrationId)
                            .to(MigrationIden::Table, MigrationIden::Id)
                            .on_delete(ForeignKeyAction::Cascade),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("folder_migration_id_source_folder_key")
                    .table(Folder::Table)
                    .col(Folder::MigrationId)
                    .col(Folder::SourceFolder)
                    .unique()
                    .if_not_exists()
                    .to_owned(),
            )
            .await?;

        manager
            .create_table(
                Table::create()
                    .table(Message::Table)
                    .if_not_exists()
                    .col(ColumnDef::new(Message::FolderId).uuid().not_null())
                    .col(ColumnDef::new(Message::SourceUid).big_integer().not_null())
                    .col(ColumnDef::new(Message::DestUid).big_integer().null())
                    .col(ColumnDef::new(Message::Flags).text().not_null())
                    .col(ColumnDef::new(Message::Size).big_integer().not_null())
                    .col(ColumnDef::new(Message::Fingerprint).text().not_null())
                    .col(ColumnDef::new(Message::HeaderFingerprint).text().null())
                    .primary_key(
                        Index::create()
                            .name("message_pkey")
                            .col(Message::FolderId)
                            .col(Message::SourceUid),
                    )
                    .foreign_key(
                        ForeignKey::create()
                            .name("message_folder_id_fkey")
                            .from(Message::Table, Message::FolderId)
                            .to(Folder::Table, Folder::Id)
                            .on_delete(ForeignKeyAction::Cascade),
                    )
                    .to_owned(),
            )
            .await?;

        manager
            .create_table(
                Table::create()
                    .table(Failure::Table)
                    .if_not_exists()
                    .col(ColumnDef::new(Failure::FolderId).uuid().not_null())
                    .col(ColumnDef::new(Failure::SourceUid).big_integer().not_null())
                    .col(ColumnDef::new(Failure::Size).big_integer().not_null())
                    .col(ColumnDef::new(Failure::Kind).text().not_null())
                    .col(ColumnDef::new(Failure::Reason).text().not_null())
                    .primary_key(
                        Index::create()
                            .name("failure_pkey")
                            .col(Failure::FolderId)
                            .col(Failure::SourceUid),
                    )
                    .foreign_key(
                        ForeignKey::create()
                            .name("failure_folder_id_fkey")
                            .from(Failure::Table, Failure::FolderId)
                            .to(Folder::Table, Folder::Id)
                            .on_delete(ForeignKeyAction::Cascade),
                    )
                    .to_owned(),
            )
            .await?;
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        // Children first: the foreign keys point from message/failure to folder to migration.
        manager
            .drop_table(Table::drop().table(Failure::Table).if_exists().to_owned())
            .await?;
        manager
            .drop_table(Table::drop().table(Message::Table).if_exists().to_owned())
            .await?;
        manager
            .drop_table(Table::drop().table(Folder::Table).if_exists().to_owned())
            .await?;
        manager
            .drop_table(
                Table::drop()
                    .table(MigrationIden::Table)
                    .if_exists()
                    .to_owned(),
            )
            .await?;
        Ok(())
    }
}
