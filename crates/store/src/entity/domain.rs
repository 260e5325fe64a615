use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "domain")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub name: String,
    /// JSON of `DomainConfig`.
    pub config: String,
    pub phase: String,
    /// Unix seconds.
    pub phase_since: i64,
    pub switched_at: Option<i64>,
    pub final_pass_at: Option<i64>,
    pub plan: Option<String>,
    pub report: Option<String>,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
