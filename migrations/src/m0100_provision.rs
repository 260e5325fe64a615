//! Provisioning the new server (`mailshift provision`): each batch's backend with its
//! configuration (sealed: it may hold a database password), what was done per mailbox
//! (imported hash and temporary password sealed, never plaintext), and the aliases and
//! forwards set, so a backend that cannot list what exists still gets idempotent runs.

use sea_orm_migration::prelude::*;

pub struct Migration;

impl MigrationName for Migration {
    fn name(&self) -> &str {
        "m0100_provision"
    }
}

#[derive(DeriveIden)]
enum ProvisionBackend {
    Table,
    Batch,
    /// sql | command
    Kind,
    /// The backend's configuration (JSON), sealed with the fleet key.
    Config,
    /// How messages name the backend, without secrets.
    Described,
    /// Unix seconds.
    UpdatedAt,
}

#[derive(DeriveIden)]
enum ProvisionMailbox {
    Table,
    /// `mailbox.id`.
    MailboxId,
    /// `{SCHEME}...` from the import's `source_password_hash`, sealed.
    ImportedHash,
    /// Unix seconds (every time of these tables); null until mailshift created it.
    ProvisionedAt,
    /// hash | plaintext | temporary
    PasswordCarry,
    QuotaBytes,
    /// A temporary password, sealed.
    TemporarySecret,
    TemporaryExportedAt,
    /// JSON array: aliases delivering to the mailbox and where it forwards to.
    Aliases,
    AliasesAt,
}

#[derive(DeriveIden)]
enum ProvisionAlias {
    Table,
    Batch,
    Address,
    /// JSON array of where mail to the address goes.
    Goto,
    /// alias | forward
    Kind,
    SetAt,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(ProvisionBackend::Table)
                    .if_not_exists()
                    .col(
                        ColumnDef::new(ProvisionBackend::Batch)
                            .text()
                            .not_null()
                            .primary_key(),
                    )
                    .col(ColumnDef::new(ProvisionBackend::Kind).text().not_null())
                    .col(ColumnDef::new(ProvisionBackend::Config).text().not_null())
                    .col(
                        ColumnDef::new(ProvisionBackend::Described)
                            .text()
                            .not_null(),
                    )
                    .col(
                        ColumnDef::new(ProvisionBackend::UpdatedAt)
                            .big_integer()
                            .not_null(),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(ProvisionMailbox::Table)
                    .if_not_exists()
                    .col(
                        ColumnDef::new(ProvisionMailbox::MailboxId)
                            .uuid()
                            .not_null()
                            .primary_key(),
                    )
                    .col(ColumnDef::new(ProvisionMailbox::ImportedHash).text().null())
                    .col(
                        ColumnDef::new(ProvisionMailbox::ProvisionedAt)
                            .big_integer()
                            .null(),
                    )
                    .col(
                        ColumnDef::new(ProvisionMailbox::PasswordCarry)
                            .text()
                            .null(),
                    )
                    .col(
                        ColumnDef::new(ProvisionMailbox::QuotaBytes)
                            .big_integer()
                            .null(),
                    )
                    .col(
                        ColumnDef::new(ProvisionMailbox::TemporarySecret)
                            .text()
                            .null(),
                    )
                    .col(
                        ColumnDef::new(ProvisionMailbox::TemporaryExportedAt)
                            .big_integer()
                            .null(),
                    )
                    .col(ColumnDef::new(ProvisionMailbox::Aliases).text().null())
                    .col(
                        ColumnDef::new(ProvisionMailbox::AliasesAt)
                            .big_integer()
                            .null(),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(ProvisionAlias::Table)
                    .if_not_exists()
                    .col(ColumnDef::new(ProvisionAlias::Batch).text().not_null())
                    .col(ColumnDef::new(ProvisionAlias::Address).text().not_null())
                    .col(ColumnDef::new(ProvisionAlias::Goto).text().not_null())
                    .col(ColumnDef::new(ProvisionAlias::Kind).text().not_null())
                    .col(
                        ColumnDef::new(ProvisionAlias::SetAt)
                            .big_integer()
                            .not_null(),
                    )
                    .primary_key(
                        Index::create()
                            .col(ProvisionAlias::Batch)
                            .col(ProvisionAlias::Address),
                    )
                    .to_owned(),
            )
            .await
    }
}
