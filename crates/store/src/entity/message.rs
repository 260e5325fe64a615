//! `message`: the message map, one row per source message known to be on the destination;
//! primary key (folder_id, source_uid).
use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "message")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub folder_id: Uuid,
    /// IMAP u32.
    #[sea_orm(primary_key, auto_increment = false)]
    pub source_uid: i64,
    /// IMAP u32; NULL when the destination would not say (no UIDPLUS).
    pub dest_uid: Option<i64>,
    /// `FlagSet::to_storage()`.
    pub flags: String,
    /// IMAP u32 (RFC822.SIZE).
    pub size: i64,
    /// `Fingerprint::to_hex()`: 64 lowercase hex characters.
    pub fingerprint: String,
    pub header_fingerprint: Option<String>,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {
    #[sea_orm(
        belongs_to = "super::folder::Entity",
        from = "Column::FolderId",
        to = "super::folder::Column::Id",
        on_delete = "Cascade"
    )]
    Folder,
}

impl Related<super::folder::Entity> for Entity {
    fn to() -> RelationDef {
        Relation::Folder.def()
    }
}

impl ActiveModelBehavior for ActiveModel {}
