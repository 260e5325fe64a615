//! `failure`: a source message the destination refused, kept so the next pass retries
//! it; primary key (folder_id, source_uid). Removed when the message is later copied.
use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "failure")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub folder_id: Uuid,
    /// IMAP u32.
    #[sea_orm(primary_key, auto_increment = false)]
    pub source_uid: i64,
    /// IMAP u32.
    pub size: i64,
    /// `ErrorKind::as_str()` of the refusal.
    pub kind: String,
    pub reason: String,
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
