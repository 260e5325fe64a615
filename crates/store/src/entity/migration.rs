//! `migration`: one source mailbox into one destination mailbox, identified by both
//! endpoints (never by credentials); unique on (source, dest).
use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "migration")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: Uuid,
    /// `Endpoint::to_string()` of the source.
    pub source: String,
    /// `Endpoint::to_string()` of the destination.
    pub dest: String,
    pub created_at: ChronoDateTimeUtc,
    /// `mailshift_core::account::pair_key` of the accounts behind both endpoints.
    pub account_key: Option<String>,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {
    #[sea_orm(has_many = "super::folder::Entity")]
    Folder,
}

impl Related<super::folder::Entity> for Entity {
    fn to() -> RelationDef {
        Relation::Folder.def()
    }
}

impl ActiveModelBehavior for ActiveModel {}
