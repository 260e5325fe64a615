//! `folder`: the checkpoint of one source folder (see `mailshift_core::ports::FolderState`);
//! unique on (migration_id, source_folder).
use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "folder")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: Uuid,
    pub migration_id: Uuid,
    pub source_folder: String,
    pub dest_folder: String,
    /// IMAP u32.
    pub source_uidvalidity: Option<i64>,
    /// IMAP u32.
    pub dest_uidvalidity: Option<i64>,
    /// IMAP u32; 0 until the first commit.
    pub highest_uid: i64,
    /// 63-bit MODSEQ (RFC 7162).
    pub highest_modseq: Option<i64>,
    /// JSON of `PendingBatch`: set before an APPEND, cleared by the commit after it.
    pub pending: Option<String>,
    pub dest_created: bool,
    pub lease_owner: Option<String>,
    pub lease_until: Option<ChronoDateTimeUtc>,
    pub updated_at: ChronoDateTimeUtc,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {
    #[sea_orm(
        belongs_to = "super::migration::Entity",
        from = "Column::MigrationId",
        to = "super::migration::Column::Id",
        on_delete = "Cascade"
    )]
    Migration,
    #[sea_orm(has_many = "super::message::Entity")]
    Message,
    #[sea_orm(has_many = "super::failure::Entity")]
    Failure,
}

impl Related<super::migration::Entity> for Entity {
    fn to() -> RelationDef {
        Relation::Migration.def()
    }
}

impl Related<super::message::Entity> for Entity {
    fn to() -> RelationDef {
        Relation::Message.def()
    }
}

impl Related<super::failure::Entity> for Entity {
    fn to() -> RelationDef {
        Relation::Failure.def()
    }
}

impl ActiveModelBehavior for ActiveModel {}
