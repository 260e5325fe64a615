//! Domain cutovers: one row per mail domain with its switch configuration (JSON), its
//! phase (`prepare` .. `done`), when the MX switch was observed, when the final pass
//! after dual reception was scheduled, its plan and its
//! decommission report.

use sea_orm_migration::prelude::*;

pub struct Migration;

impl MigrationName for Migration {
    fn name(&self) -> &str {
        "m0004_domains"
    }
}

#[derive(DeriveIden)]
enum Domain {
    Table,
    Name,
    Config,
    Phase,
    PhaseSince,
    SwitchedAt,
    FinalPassAt,
    Plan,
    Report,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(Domain::Table)
                    .if_not_exists()
                    .col(ColumnDef::new(Domain::Name).text().not_null().primary_key())
                    .col(ColumnDef::new(Domain::Config).text().not_null())
                    .col(ColumnDef::new(Domain::Phase).text().not_null())
                    .col(ColumnDef::new(Domain::PhaseSince).big_integer().not_null())
                    .col(ColumnDef::new(Domain::SwitchedAt).big_integer().null())
                    .col(ColumnDef::new(Domain::FinalPassAt).big_integer().null())
                    .col(ColumnDef::new(Domain::Plan).text().null())
                    .col(ColumnDef::new(Domain::Report).text().null())
                    .to_owned(),
            )
            .await
    }
}
