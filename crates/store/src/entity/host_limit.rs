use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "host_limit")]
pub struct Model {
    /// `host:port`
    #[sea_orm(primary_key, auto_increment = false)]
    pub host: String,
    pub max_connections: i32,
    pub max_messages_per_sec: Option<i32>,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
