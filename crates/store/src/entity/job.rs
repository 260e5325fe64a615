//! `job`: one folder job of a planned pass: the outbox the relay publishes from, and the
//! record of its completion (set once, so a redelivery cannot count twice).
use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "job")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: Uuid,
    pub migration_id: Uuid,
    pub pass_id: Uuid,
    /// The `FolderJob` as JSON.
    pub payload: String,
    /// Publication order: unix microseconds plus the job's place in its pass.
    pub created_at: i64,
    /// Unix seconds (this and the other times).
    pub published_at: Option<i64>,
    pub relay_owner: Option<String>,
    pub relay_until: Option<i64>,
    pub finished_at: Option<i64>,
    /// done | failed | dead
    pub outcome: Option<String>,
    pub error: Option<String>,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
