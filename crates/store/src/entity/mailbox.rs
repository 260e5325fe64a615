use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "mailbox")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: Uuid,
    pub migration_id: Uuid,
    pub batch: Option<String>,
    pub source: String,
    pub dest: String,
    /// Sealed with the fleet key (`crate::secrets`), never plaintext.
    pub source_secret: String,
    pub dest_secret: String,
    pub options: String,
    pub status: String,
    pub last_error: Option<String>,
    pub last_pass_at: Option<ChronoDateTimeUtc>,
    pub next_pass_at: Option<ChronoDateTimeUtc>,
    pub created_at: ChronoDateTimeUtc,
    pub jobs_left: i32,
    pub source_messages: Option<i64>,
    pub source_bytes: Option<i64>,
    /// JSON of the last `batch verify`.
    pub checked: Option<String>,
    /// Unix seconds.
    pub pass_started_at: Option<i64>,
    pub copied_at_start: Option<i64>,
    /// The pass whose jobs `jobs_left` counts (`job.pass_id`).
    pub pass_id: Option<Uuid>,
    /// The scheduler planning this mailbox and until when (unix seconds).
    pub plan_owner: Option<String>,
    pub plan_until: Option<i64>,
    /// Why the mailbox waits (an outage); cleared when a pass is planned.
    pub warning: Option<String>,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
