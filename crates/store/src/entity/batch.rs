//! `batch`: one batch of mailboxes with its schedule (see `mailshift_core::batch`).
use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "batch")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub name: String,
    pub domain: Option<String>,
    pub state: String,
    /// Unix seconds (every time of this table).
    pub start_at: Option<i64>,
    pub interval_secs: Option<i64>,
    pub switch_at: Option<i64>,
    pub complete_at: Option<i64>,
    pub concurrency: Option<i32>,
    pub host_concurrency: Option<i32>,
    pub final_pass_at: Option<i64>,
    pub created_at: i64,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
