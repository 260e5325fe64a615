//! `provision_alias`: an alias or forward provisioning set for a batch.
use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "provision_alias")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub batch: String,
    #[sea_orm(primary_key, auto_increment = false)]
    pub address: String,
    /// JSON array of addresses.
    pub goto: String,
    pub kind: String,
    pub set_at: i64,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
