//! `api_token`: who may use the HTTP API; the token itself is never stored, only its
//! SHA-256.
use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "api_token")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: Uuid,
    pub name: String,
    /// Hex SHA-256 of the token.
    pub hash: String,
    pub read_only: bool,
    pub created_at: i64,
    pub last_used_at: Option<i64>,
    /// Unix seconds after which the token is refused; None: never.
    pub expires_at: Option<i64>,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
