//! `provision_mailbox`: what provisioning did to one mailbox of the fleet.
use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "provision_mailbox")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub mailbox_id: Uuid,
    /// Sealed, never plaintext.
    pub imported_hash: Option<String>,
    pub provisioned_at: Option<i64>,
    pub password_carry: Option<String>,
    pub quota_bytes: Option<i64>,
    /// Sealed, never plaintext.
    pub temporary_secret: Option<String>,
    pub temporary_exported_at: Option<i64>,
    /// JSON array of addresses.
    pub aliases: Option<String>,
    pub aliases_at: Option<i64>,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
