//! `provision_backend`: a batch's provisioning backend (see `mailshift_core::provision`).
use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "provision_backend")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub batch: String,
    pub kind: String,
    /// Sealed JSON configuration.
    pub config: String,
    pub described: String,
    pub updated_at: i64,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
