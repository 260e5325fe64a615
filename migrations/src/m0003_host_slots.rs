//! Fleet-wide connection limits per server (`host:port`): a limit per host, and one row
//! per connection slot, leased by the worker holding a connection in it.

use sea_orm_migration::prelude::*;

pub struct Migration;

impl MigrationName for Migration {
    fn name(&self) -> &str {
        "m0003_host_slots"
    }
}

#[derive(DeriveIden)]
enum HostLimit {
    Table,
    Host,
    MaxConnections,
    /// Fleet-wide messages per second to this server (shared evenly by its slots).
    MaxMessagesPerSec,
}

#[derive(DeriveIden)]
enum HostSlot {
    Table,
    Host,
    Slot,
    Owner,
    LeaseUntil,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(HostLimit::Table)
                    .if_not_exists()
                    .col(
                        ColumnDef::new(HostLimit::Host)
                            .text()
                            .not_null()
                            .primary_key(),
                    )
                    .col(
                        ColumnDef::new(HostLimit::MaxConnections)
                            .integer()
                            .not_null(),
                    )
                    .col(
                        ColumnDef::new(HostLimit::MaxMessagesPerSec)
                            .integer()
                            .null(),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(HostSlot::Table)
                    .if_not_exists()
                    .col(ColumnDef::new(HostSlot::Host).text().not_null())
                    .col(ColumnDef::new(HostSlot::Slot).integer().not_null())
                    .col(ColumnDef::new(HostSlot::Owner).text().null())
                    .col(
                        ColumnDef::new(HostSlot::LeaseUntil)
                            .timestamp_with_time_zone()
                            .null(),
                    )
                    .primary_key(Index::create().col(HostSlot::Host).col(HostSlot::Slot))
                    .to_owned(),
            )
            .await
    }
}
