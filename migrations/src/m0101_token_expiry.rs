//! API tokens that expire: `api_token.expires_at` (unix seconds; null: never).

use sea_orm_migration::prelude::*;

pub struct Migration;

impl MigrationName for Migration {
    fn name(&self) -> &str {
        "m0101_token_expiry"
    }
}

#[derive(DeriveIden)]
enum ApiToken {
    Table,
    ExpiresAt,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .alter_table(
                Table::alter()
                    .table(ApiToken::Table)
                    .add_column(ColumnDef::new(ApiToken::ExpiresAt).big_integer().null())
                    .to_owned(),
            )
            .await
    }
}
