//! The fleet's job rows on [`SeaStore`]: a pass and its jobs written in one transaction
//! (the outbox the scheduler's relay publishes from), completions recorded once per job
//! (so redeliveries and lost acks cannot miscount a pass), dead letters brought back,
//! and planning leases that let several schedulers run side by side.

use crate::entity::{folder, job, mailbox, migration};
use crate::error::StoreError;
use crate::store::SeaStore;
use chrono::Utc;
use mailshift_core::job::FolderJob;
use mailshift_core::mailbox::{JobOutcome, MailboxStatus};
use mailshift_core::ports::MailboxRecord;
use sea_orm::sea_query::{Expr, ExprTrait, Query};
use sea_orm::{
    ActiveValue::Set, ColumnTrait, Condition, ConnectionTrait, EntityTrait, PaginatorTrait,
    QueryFilter, QueryOrder, QuerySelect,
};
use std::collections::HashMap;
use std::time::Duration;
use uuid::Uuid;

/// Jobs of the mailbox's current pass that are not finished (a correlated subquery of
/// an UPDATE on `mailbox`).
const UNFINISHED: &str = "(SELECT COUNT(*) FROM job WHERE job.migration_id = mailbox.migration_id \
     AND job.pass_id = mailbox.pass_id AND job.finished_at IS NULL)";

fn unix_now() -> i64 {
    Utc::now().timestamp()
}

fn secs(d: Duration) -> i64 {
    Ord::max(i64::try_from(d.as_secs()).unwrap_or(i64::MAX), 1)
}

impl SeaStore {
    pub(crate) async fn begin_pass_impl(
        &self,
        id: Uuid,
        jobs: &[FolderJob],
        source_messages: Option<u64>,
        next_pass_at: Option<i64>,
    ) -> Result<Uuid, StoreError> {
        let m = mailbox::Entity::find_by_id(id)
            .one(&self.db)
            .await
            .map_err(self.query_err("reading a mailbox"))?
            .ok_or_else(|| self.corrupt(format!("mailbox {id} vanished")))?;
        let (copied, _) = self
            .copied_totals_impl(None, Some(m.migration_id))
            .await?
            .remove(&m.migration_id)
            .unwrap_or((0, 0));
        let pass = Uuid::new_v4();
        let now = unix_now();
        // Publication order: unix microseconds, plus the job's place in its pass (INBOX
        // first, then the tree), so the relay publishes a pass in its planned order.
        let order = Utc::now().timestamp_micros();
        let mut rows = Vec::with_capacity(jobs.len());
        for (i, j) in jobs.iter().enumerate() {
            let payload = serde_json::to_string(j)
                .map_err(|e| self.corrupt(format!("a job of mailbox {id}: {e}")))?;
            rows.push(job::ActiveModel {
                id: Set(j.id),
                migration_id: Set(j.migration_id),
                pass_id: Set(pass),
                payload: Set(payload),
                created_at: Set(order + i as i64),
                published_at: Set(None),
                relay_owner: Set(None),
                relay_until: Set(None),
                finished_at: Set(None),
                outcome: Set(None),
                error: Set(None),
            });
        }
        let status = MailboxStatus::Pending
            .next(mailshift_core::mailbox::MailboxEvent::PassPlanned { jobs: jobs.len() });
        let next = next_pass_at.and_then(|t| chrono::DateTime::<Utc>::from_timestamp(t, 0));
        let txn = self.begin().await?;
        // Finished jobs of earlier passes are history; dead ones stay until retried.
        job::Entity::delete_many()
            .filter(job::Column::MigrationId.eq(m.migration_id))
            .filter(job::Column::FinishedAt.is_not_null())
            .filter(job::Column::Outcome.ne(JobOutcome::Dead.as_str()))
            .exec(&txn)
            .await
            .map_err(self.query_err("forgetting finished jobs"))?;
        for chunk in rows.chunks(200) {
            job::Entity::insert_many(chunk.to_vec())
                .exec_without_returning(&txn)
                .await
                .map_err(self.query_err("recording a pass's jobs"))?;
        }
        let mut q = mailbox::Entity::update_many()
            .col_expr(mailbox::Column::Status, Expr::value(status.as_str()))
            .col_expr(
                mailbox::Column::LastError,
                Expr::value(Option::<String>::None),
            )
            .col_expr(
                mailbox::Column::Warning,
                Expr::value(Option::<String>::None),
            )
            .col_expr(mailbox::Column::NextPassAt, Expr::value(next))
            .col_expr(
                mailbox::Column::JobsLeft,
                Expr::value(i32::try_from(jobs.len()).unwrap_or(i32::MAX)),
            )
            .col_expr(mailbox::Column::PassId, Expr::value(Some(pass)))
            .col_expr(mailbox::Column::PassStartedAt, Expr::value(Some(now)))
            .col_expr(
                mailbox::Column::CopiedAtStart,
                Expr::value(Some(i64::try_from(copied).unwrap_or(i64::MAX))),
            );
        if jobs.is_empty() {
            q = q.col_expr(mailbox::Column::LastPassAt, Expr::value(Some(Utc::now())));
        }
        if let Some(n) = source_messages {
            q = q.col_expr(
                mailbox::Column::SourceMessages,
                Expr::value(Some(i64::try_from(n).unwrap_or(i64::MAX))),
            );
        }
        q.filter(mailbox::Column::Id.eq(id))
            .exec(&txn)
            .await
            .map_err(self.query_err("starting a mailbox's pass"))?;
        txn.commit()
            .await
            .map_err(self.query_err("committing a planned pass"))?;
        Ok(pass)
    }

    /// Recounts the unfinished jobs of the current pass of the mailbox whose pass is
    /// `pass` (nothing happens when it is not the current pass any more).
    async fn recount<C: ConnectionTrait>(
        &self,
        conn: &C,
        migration: Uuid,
        pass: Uuid,
    ) -> Result<(), StoreError> {
        mailbox::Entity::update_many()
            .col_expr(mailbox::Column::JobsLeft, Expr::cust(UNFINISHED))
            .col_expr(
                mailbox::Column::Status,
                Expr::cust(format!(
                    "CASE WHEN status = 'syncing' AND {UNFINISHED} = 0 THEN 'synced' \
                     WHEN status = 'synced' AND {UNFINISHED} > 0 THEN 'syncing' ELSE status END"
                )),
            )
            .col_expr(
                mailbox::Column::LastPassAt,
                Expr::cust(format!(
                    "CASE WHEN {UNFINISHED} = 0 THEN CURRENT_TIMESTAMP ELSE last_pass_at END"
                )),
            )
            .filter(mailbox::Column::MigrationId.eq(migration))
            .filter(mailbox::Column::PassId.eq(pass))
            .exec(conn)
            .await
            .map_err(self.query_err("counting a finished job"))?;
        Ok(())
    }

    /// Takes the row lock of a migration's mailbox for the rest of the transaction (a
    /// write that changes nothing, so it works on both backends).
    ///
    /// Completions of one pass are serialised by it: without it, two jobs finishing at
    /// once in READ COMMITTED each count the other as unfinished (its update not yet
    /// committed when their count's snapshot is taken), and the pass stays `syncing`
    /// with one job left for ever.
    async fn lock_mailbox<C: ConnectionTrait>(
        &self,
        conn: &C,
        migration: Uuid,
    ) -> Result<(), StoreError> {
        mailbox::Entity::update_many()
            .col_expr(
                mailbox::Column::JobsLeft,
                Expr::col(mailbox::Column::JobsLeft),
            )
            .filter(mailbox::Column::MigrationId.eq(migration))
            .exec(conn)
            .await
            .map_err(self.query_err("locking a mailbox's pass"))?;
        Ok(())
    }

    pub(crate) async fn job_finished_impl(
        &self,
        j: &FolderJob,
        outcome: JobOutcome,
        error: Option<&str>,
    ) -> Result<(), StoreError> {
        let txn = self.begin().await?;
        self.lock_mailbox(&txn, j.migration_id).await?;
        let res = job::Entity::update_many()
            .col_expr(job::Column::FinishedAt, Expr::value(Some(unix_now())))
            .col_expr(job::Column::Outcome, Expr::value(Some(outcome.as_str())))
            .col_expr(job::Column::Error, Expr::value(error.map(str::to_string)))
            .filter(job::Column::Id.eq(j.id))
            .filter(job::Column::FinishedAt.is_null())
            .exec(&txn)
            .await
            .map_err(self.query_err("recording a finished job"))?;
        if res.rows_affected == 1
            && let Some(row) = job::Entity::find_by_id(j.id)
                .one(&txn)
                .await
                .map_err(self.query_err("reading a job"))?
        {
            self.recount(&txn, row.migration_id, row.pass_id).await?;
        }
        txn.commit()
            .await
            .map_err(self.query_err("committing a finished job"))?;
        Ok(())
    }

    pub(crate) async fn reopen_job_impl(&self, id: Uuid) -> Result<bool, StoreError> {
        let txn = self.begin().await?;
        let Some(found) = job::Entity::find_by_id(id)
            .one(&txn)
            .await
            .map_err(self.query_err("reading a job"))?
        else {
            return Ok(false);
        };
        self.lock_mailbox(&txn, found.migration_id).await?;
        let res = job::Entity::update_many()
            .col_expr(job::Column::FinishedAt, Expr::value(Option::<i64>::None))
            .col_expr(job::Column::Outcome, Expr::value(Option::<String>::None))
            .col_expr(job::Column::Error, Expr::value(Option::<String>::None))
            .filter(job::Column::Id.eq(id))
            .filter(job::Column::Outcome.eq(JobOutcome::Dead.as_str()))
            .exec(&txn)
            .await
            .map_err(self.query_err("reopening a dead job"))?;
        let reopened = res.rows_affected == 1;
        if reopened
            && let Some(row) = job::Entity::find_by_id(id)
                .one(&txn)
                .await
                .map_err(self.query_err("reading a job"))?
        {
            // Its mailbox is syncing again (and no longer failed) if it is its pass.
            mailbox::Entity::update_many()
                .col_expr(mailbox::Column::Status, Expr::value("syncing"))
                .col_expr(
                    mailbox::Column::LastError,
                    Expr::value(Option::<String>::None),
                )
                .filter(mailbox::Column::MigrationId.eq(row.migration_id))
                .filter(mailbox::Column::PassId.eq(row.pass_id))
                .exec(&txn)
                .await
                .map_err(self.query_err("reopening a mailbox's pass"))?;
            self.recount(&txn, row.migration_id, row.pass_id).await?;
        }
        txn.commit()
            .await
            .map_err(self.query_err("committing a reopened job"))?;
        Ok(reopened)
    }

    pub(crate) async fn claim_unpublished_impl(
        &self,
        owner: &str,
        limit: usize,
        lease: Duration,
    ) -> Result<Vec<FolderJob>, StoreError> {
        let now = unix_now();
        let until = now + secs(lease);
        // Each claim reads back exactly its own rows, however often one relay claims.
        let token = format!("{owner}#{}", Uuid::new_v4());
        let free = || {
            Condition::any()
                .add(job::Column::RelayUntil.is_null())
                .add(job::Column::RelayUntil.lt(now))
        };
        // The outer condition is checked again after a concurrent relay's row locks are
        // released (PostgreSQL), so two relays never take the same rows.
        job::Entity::update_many()
            .col_expr(job::Column::RelayOwner, Expr::value(Some(token.clone())))
            .col_expr(job::Column::RelayUntil, Expr::value(Some(until)))
            .filter(
                job::Column::Id.in_subquery(
                    Query::select()
                        .column(job::Column::Id)
                        .from(job::Entity)
                        .and_where(job::Column::PublishedAt.is_null())
                        .and_where(job::Column::FinishedAt.is_null())
                        .cond_where(free())
                        .order_by(job::Column::CreatedAt, sea_orm::Order::Asc)
                        .limit(limit as u64)
                        // PostgreSQL: rows another relay is taking are passed over, not
                        // waited for (SQLite serialises writers anyway).
                        .lock_with_behavior(
                            sea_orm::sea_query::LockType::Update,
                            sea_orm::sea_query::LockBehavior::SkipLocked,
                        )
                        .to_owned(),
                ),
            )
            .filter(job::Column::PublishedAt.is_null())
            .filter(free())
            .exec(&self.db)
            .await
            .map_err(self.query_err("claiming jobs to publish"))?;
        let rows = job::Entity::find()
            .filter(job::Column::RelayOwner.eq(token.as_str()))
            .filter(job::Column::PublishedAt.is_null())
            .order_by_asc(job::Column::CreatedAt)
            .all(&self.db)
            .await
            .map_err(self.query_err("reading jobs to publish"))?;
        let mut out = Vec::with_capacity(rows.len());
        let mut corrupt = Vec::new();
        for r in rows {
            match serde_json::from_str::<FolderJob>(&r.payload) {
                Ok(j) => out.push(j),
                Err(_) => corrupt.push(r.id),
            }
        }
        if !corrupt.is_empty() {
            // Never published, never blocking the others: set aside as dead.
            job::Entity::update_many()
                .col_expr(job::Column::FinishedAt, Expr::value(Some(now)))
                .col_expr(job::Column::Outcome, Expr::value(Some("dead")))
                .col_expr(
                    job::Column::Error,
                    Expr::value(Some("the stored job cannot be decoded".to_string())),
                )
                .filter(job::Column::Id.is_in(corrupt))
                .exec(&self.db)
                .await
                .map_err(self.query_err("setting aside undecodable jobs"))?;
        }
        Ok(out)
    }

    pub(crate) async fn republish_lost_impl(
        &self,
        published_by: i64,
        limit: usize,
    ) -> Result<Vec<FolderJob>, StoreError> {
        let rows = job::Entity::find()
            .filter(job::Column::FinishedAt.is_null())
            .filter(job::Column::PublishedAt.lte(published_by))
            .filter(Expr::cust(
                "job.pass_id IN (SELECT mailbox.pass_id FROM mailbox \
                 WHERE mailbox.migration_id = job.migration_id)",
            ))
            .order_by_asc(job::Column::CreatedAt)
            .limit(limit as u64)
            .all(&self.db)
            .await
            .map_err(self.query_err("looking for lost jobs"))?;
        let now = Utc::now();
        let mut lost = Vec::new();
        for r in rows {
            // An undecodable payload is never published again (the relay sets it aside).
            let Ok(j) = serde_json::from_str::<FolderJob>(&r.payload) else {
                continue;
            };
            let held = folder::Entity::find()
                .filter(folder::Column::MigrationId.eq(j.migration_id))
                .filter(folder::Column::SourceFolder.eq(j.state_key()))
                .filter(folder::Column::LeaseUntil.gt(now))
                .count(&self.db)
                .await
                .map_err(self.query_err("reading a folder's lease"))?;
            if held == 0 {
                lost.push(j);
            }
        }
        for chunk in lost.chunks(500) {
            job::Entity::update_many()
                .col_expr(job::Column::PublishedAt, Expr::value(Option::<i64>::None))
                .filter(job::Column::Id.is_in(chunk.iter().map(|j| j.id)))
                .filter(job::Column::FinishedAt.is_null())
                .filter(job::Column::PublishedAt.lte(published_by))
                .exec(&self.db)
                .await
                .map_err(self.query_err("publishing lost jobs again"))?;
        }
        Ok(lost)
    }

    pub(crate) async fn mark_published_impl(&self, ids: &[Uuid]) -> Result<(), StoreError> {
        let now = unix_now();
        for chunk in ids.chunks(500) {
            job::Entity::update_many()
                .col_expr(job::Column::PublishedAt, Expr::value(Some(now)))
                .col_expr(job::Column::RelayOwner, Expr::value(Option::<String>::None))
                .col_expr(job::Column::RelayUntil, Expr::value(Option::<i64>::None))
                .filter(job::Column::Id.is_in(chunk.to_vec()))
                .exec(&self.db)
                .await
                .map_err(self.query_err("marking jobs published"))?;
        }
        Ok(())
    }

    pub(crate) async fn claim_planning_impl(
        &self,
        id: Uuid,
        owner: &str,
        lease: Duration,
    ) -> Result<bool, StoreError> {
        let now = unix_now();
        let res = mailbox::Entity::update_many()
            .col_expr(
                mailbox::Column::PlanOwner,
                Expr::value(Some(owner.to_string())),
            )
            .col_expr(
                mailbox::Column::PlanUntil,
                Expr::value(Some(now + secs(lease))),
            )
            .filter(mailbox::Column::Id.eq(id))
            .filter(
                Condition::any()
                    .add(mailbox::Column::PlanOwner.is_null())
                    .add(mailbox::Column::PlanOwner.eq(owner))
                    .add(mailbox::Column::PlanUntil.lt(now)),
            )
            .exec(&self.db)
            .await
            .map_err(self.query_err("claiming a mailbox to plan"))?;
        Ok(res.rows_affected == 1)
    }

    pub(crate) async fn release_planning_impl(
        &self,
        id: Uuid,
        owner: &str,
    ) -> Result<(), StoreError> {
        mailbox::Entity::update_many()
            .col_expr(
                mailbox::Column::PlanOwner,
                Expr::value(Option::<String>::None),
            )
            .col_expr(mailbox::Column::PlanUntil, Expr::value(Option::<i64>::None))
            .filter(mailbox::Column::Id.eq(id))
            .filter(mailbox::Column::PlanOwner.eq(owner))
            .exec(&self.db)
            .await
            .map_err(self.query_err("releasing a mailbox's planning"))?;
        Ok(())
    }

    pub(crate) async fn account_conflicts_impl(
        &self,
        migration_id: Uuid,
        key: &str,
    ) -> Result<Vec<MailboxRecord>, StoreError> {
        migration::Entity::update_many()
            .col_expr(
                migration::Column::AccountKey,
                Expr::value(Some(key.to_string())),
            )
            .filter(migration::Column::Id.eq(migration_id))
            .exec(&self.db)
            .await
            .map_err(self.query_err("recording the accounts of a migration"))?;
        let others: Vec<Uuid> = migration::Entity::find()
            .select_only()
            .column(migration::Column::Id)
            .filter(migration::Column::AccountKey.eq(key))
            .filter(migration::Column::Id.ne(migration_id))
            .into_tuple()
            .all(&self.db)
            .await
            .map_err(self.query_err("finding migrations of the same accounts"))?;
        if others.is_empty() {
            return Ok(Vec::new());
        }
        mailbox::Entity::find()
            .filter(mailbox::Column::MigrationId.is_in(others))
            .all(&self.db)
            .await
            .map_err(self.query_err("finding mailboxes of the same accounts"))?
            .iter()
            .map(|m| self.to_record(m))
            .collect()
    }

    pub(crate) async fn dead_jobs_impl(
        &self,
        batch: Option<&str>,
    ) -> Result<HashMap<Uuid, u64>, StoreError> {
        let mut q = job::Entity::find()
            .select_only()
            .column(job::Column::MigrationId)
            .column_as(Expr::col(job::Column::Id).count(), "n")
            .filter(job::Column::Outcome.eq(JobOutcome::Dead.as_str()))
            .group_by(job::Column::MigrationId);
        if let Some(b) = batch {
            q = q.filter(
                job::Column::MigrationId.in_subquery(
                    Query::select()
                        .column(mailbox::Column::MigrationId)
                        .from(mailbox::Entity)
                        .and_where(mailbox::Column::Batch.eq(b))
                        .to_owned(),
                ),
            );
        }
        let rows: Vec<(Uuid, i64)> = q
            .into_tuple()
            .all(&self.db)
            .await
            .map_err(self.query_err("counting dead jobs"))?;
        Ok(rows
            .into_iter()
            .map(|(m, n)| (m, u64::try_from(n).unwrap_or(0)))
            .collect())
    }
}
