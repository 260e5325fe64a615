//! The fleet's tables on [`SeaStore`]: registered mailboxes with sealed credentials, and
//! folder leases (a worker holds a folder while it copies it; an expired lease, say of a
//! killed worker, may be taken over).

use crate::entity::{folder, host_limit, host_slot, mailbox};
use crate::error::StoreError;
use crate::store::SeaStore;
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use mailshift_core::endpoint::Endpoint;
use mailshift_core::job::FolderJob;
use mailshift_core::mailbox::{JobOutcome, MailboxStatus};
use mailshift_core::ports::{
    HostSlots, MailboxCredentials, MailboxOptions, MailboxRecord, MailboxStore, Side, StateStore,
};
use sea_orm::sea_query::{Expr, ExprTrait, OnConflict};
use sea_orm::{ActiveValue::Set, ColumnTrait, Condition, EntityTrait, QueryFilter, QueryOrder};
use std::time::Duration;
use uuid::Uuid;

fn to_i64(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

fn to_u64(n: i64) -> u64 {
    u64::try_from(n).unwrap_or(0)
}

fn to_unix(t: Option<DateTime<Utc>>) -> Option<i64> {
    t.map(|t| t.timestamp())
}

impl SeaStore {
    fn key(&self) -> Result<&crate::secrets::SecretKey, StoreError> {
        self.key.as_ref().ok_or_else(|| StoreError::Secret {
            place: self.place.clone(),
            source: crate::secrets::SecretError::Missing,
        })
    }

    pub(crate) fn to_record(&self, m: &mailbox::Model) -> Result<MailboxRecord, StoreError> {
        let options: MailboxOptions = serde_json::from_str(&m.options)
            .map_err(|e| self.corrupt(format!("options of mailbox {}: {e}", m.id)))?;
        Ok(MailboxRecord {
            id: m.id,
            migration_id: m.migration_id,
            batch: m.batch.clone(),
            source: m.source.clone(),
            dest: m.dest.clone(),
            options,
            status: MailboxStatus::parse(&m.status),
            last_error: m.last_error.clone(),
            warning: m.warning.clone(),
            pass_id: m.pass_id,
            last_pass_at: to_unix(m.last_pass_at),
            next_pass_at: to_unix(m.next_pass_at),
            jobs_left: u32::try_from(m.jobs_left).unwrap_or(0),
            source_messages: m.source_messages.map(to_u64),
            source_bytes: m.source_bytes.map(to_u64),
            checked: m.checked.clone(),
            pass_started_at: m.pass_started_at,
            copied_at_start: m.copied_at_start.map(to_u64),
        })
    }

    async fn remove_mailbox_impl(&self, id: Uuid) -> Result<bool, StoreError> {
        use sea_orm::TransactionTrait;
        let Some(m) = mailbox::Entity::find_by_id(id)
            .one(&self.db)
            .await
            .map_err(self.query_err("reading a mailbox"))?
        else {
            return Ok(false);
        };
        let txn = self
            .db
            .begin()
            .await
            .map_err(self.query_err("removing a mailbox"))?;
        crate::entity::job::Entity::delete_many()
            .filter(crate::entity::job::Column::MigrationId.eq(m.migration_id))
            .exec(&txn)
            .await
            .map_err(self.query_err("removing a mailbox's jobs"))?;
        crate::entity::provision_mailbox::Entity::delete_many()
            .filter(crate::entity::provision_mailbox::Column::MailboxId.eq(id))
            .exec(&txn)
            .await
            .map_err(self.query_err("removing a mailbox's provisioning record"))?;
        mailbox::Entity::delete_by_id(id)
            .exec(&txn)
            .await
            .map_err(self.query_err("removing a mailbox"))?;
        txn.commit()
            .await
            .map_err(self.query_err("removing a mailbox"))?;
        Ok(true)
    }

    async fn set_mailbox_password_impl(
        &self,
        id: Uuid,
        side: Side,
        password: &secrecy::SecretString,
    ) -> Result<(), StoreError> {
        let key = self.key()?;
        let m = mailbox::Entity::find_by_id(id)
            .one(&self.db)
            .await
            .map_err(self.query_err("reading a mailbox"))?
            .ok_or_else(|| StoreError::NoMailbox {
                place: self.place.clone(),
                id,
            })?;
        let sealed = key.seal(
            password,
            &crate::secrets::mailbox_binding(m.migration_id, side.as_str()),
        );
        let column = match side {
            Side::Source => mailbox::Column::SourceSecret,
            Side::Dest => mailbox::Column::DestSecret,
        };
        mailbox::Entity::update_many()
            .col_expr(column, Expr::value(sealed))
            .filter(mailbox::Column::Id.eq(id))
            .exec(&self.db)
            .await
            .map_err(self.query_err("setting a mailbox's password"))?;
        Ok(())
    }

    async fn find_mailbox(&self, migration: Uuid) -> Result<mailbox::Model, StoreError> {
        mailbox::Entity::find()
            .filter(mailbox::Column::MigrationId.eq(migration))
            .one(&self.db)
            .await
            .map_err(self.query_err("reading a mailbox"))?
            .ok_or_else(|| StoreError::NoMailbox {
                place: self.place.clone(),
                id: migration,
            })
    }

    async fn add_mailbox_impl(
        &self,
        source: &Endpoint,
        dest: &Endpoint,
        batch: Option<&str>,
        options: &MailboxOptions,
        credentials: &MailboxCredentials,
    ) -> Result<MailboxRecord, StoreError> {
        let key = self.key()?;
        let migration = self
            .migration(source, dest)
            .await
            .map_err(|e| self.corrupt(e.message))?;
        let options_json = serde_json::to_string(options)
            .map_err(|e| self.corrupt(format!("mailbox options: {e}")))?;
        let row = mailbox::ActiveModel {
            id: Set(Uuid::new_v4()),
            migration_id: Set(migration),
            batch: Set(batch.map(str::to_string)),
            source: Set(source.to_string()),
            dest: Set(dest.to_string()),
            source_secret: Set(key.seal(
                &credentials.source_password,
                &crate::secrets::mailbox_binding(migration, "source"),
            )),
            dest_secret: Set(key.seal(
                &credentials.dest_password,
                &crate::secrets::mailbox_binding(migration, "dest"),
            )),
            options: Set(options_json),
            status: Set("pending".into()),
            last_error: Set(None),
            last_pass_at: Set(None),
            next_pass_at: Set(Some(Utc::now())),
            created_at: Set(Utc::now()),
            jobs_left: Set(0),
            source_messages: Set(None),
            source_bytes: Set(None),
            checked: Set(None),
            pass_started_at: Set(None),
            copied_at_start: Set(None),
            pass_id: Set(None),
            plan_owner: Set(None),
            plan_until: Set(None),
            warning: Set(None),
        };
        mailbox::Entity::insert(row)
            .on_conflict(
                OnConflict::column(mailbox::Column::MigrationId)
                    .update_columns([
                        mailbox::Column::Batch,
                        mailbox::Column::SourceSecret,
                        mailbox::Column::DestSecret,
                        mailbox::Column::Options,
                        mailbox::Column::NextPassAt,
                    ])
                    .to_owned(),
            )
            .exec_without_returning(&self.db)
            .await
            .map_err(self.query_err("registering a mailbox"))?;
        let m = self.find_mailbox(migration).await?;
        self.to_record(&m)
    }

    async fn mailboxes_impl(&self, batch: Option<&str>) -> Result<Vec<MailboxRecord>, StoreError> {
        let mut q = mailbox::Entity::find().order_by_asc(mailbox::Column::CreatedAt);
        if let Some(b) = batch {
            q = q.filter(mailbox::Column::Batch.eq(b));
        }
        q.all(&self.db)
            .await
            .map_err(self.query_err("listing mailboxes"))?
            .iter()
            .map(|m| self.to_record(m))
            .collect()
    }

    async fn credentials_impl(
        &self,
        migration: Uuid,
    ) -> Result<(MailboxRecord, MailboxCredentials), StoreError> {
        let key = self.key()?;
        let m = self.find_mailbox(migration).await?;
        let open = |s: &str, side: &str| {
            let binding = crate::secrets::mailbox_binding(m.migration_id, side);
            key.open(s, &binding).map_err(|e| StoreError::Secret {
                place: self.place.clone(),
                source: e,
            })
        };
        let creds = MailboxCredentials {
            source_password: open(&m.source_secret, "source")?,
            dest_password: open(&m.dest_secret, "dest")?,
        };
        Ok((self.to_record(&m)?, creds))
    }

    async fn set_status_impl(
        &self,
        id: Uuid,
        status: MailboxStatus,
        error: Option<&str>,
        next_pass_at: Option<i64>,
    ) -> Result<(), StoreError> {
        let next = next_pass_at.and_then(|t| DateTime::<Utc>::from_timestamp(t, 0));
        let mut q = mailbox::Entity::update_many()
            .col_expr(mailbox::Column::Status, Expr::value(status.as_str()))
            .col_expr(
                mailbox::Column::LastError,
                Expr::value(error.map(str::to_string)),
            )
            .col_expr(
                mailbox::Column::Warning,
                Expr::value(Option::<String>::None),
            )
            .col_expr(mailbox::Column::NextPassAt, Expr::value(next));
        if status != MailboxStatus::Syncing {
            q = q.col_expr(mailbox::Column::LastPassAt, Expr::value(Some(Utc::now())));
        }
        q.filter(mailbox::Column::Id.eq(id))
            .exec(&self.db)
            .await
            .map_err(self.query_err("updating a mailbox's status"))?;
        Ok(())
    }

    async fn defer_impl(
        &self,
        id: Uuid,
        warning: &str,
        next_pass_at: i64,
    ) -> Result<(), StoreError> {
        let next = DateTime::<Utc>::from_timestamp(next_pass_at, 0);
        mailbox::Entity::update_many()
            .col_expr(
                mailbox::Column::Warning,
                Expr::value(Some(warning.to_string())),
            )
            .col_expr(mailbox::Column::NextPassAt, Expr::value(next))
            .filter(mailbox::Column::Id.eq(id))
            .exec(&self.db)
            .await
            .map_err(self.query_err("deferring a mailbox's pass"))?;
        Ok(())
    }

    async fn record_check_impl(
        &self,
        id: Uuid,
        checked: &str,
        source_messages: Option<u64>,
        source_bytes: Option<u64>,
    ) -> Result<(), StoreError> {
        let mut q = mailbox::Entity::update_many().col_expr(
            mailbox::Column::Checked,
            Expr::value(Some(checked.to_string())),
        );
        if let Some(n) = source_messages {
            q = q.col_expr(
                mailbox::Column::SourceMessages,
                Expr::value(Some(to_i64(n))),
            );
        }
        if let Some(n) = source_bytes {
            q = q.col_expr(mailbox::Column::SourceBytes, Expr::value(Some(to_i64(n))));
        }
        q.filter(mailbox::Column::Id.eq(id))
            .exec(&self.db)
            .await
            .map_err(self.query_err("recording a credential check"))?;
        Ok(())
    }

    /// Messages and bytes mapped on the destination, per migration.
    async fn folder_totals_impl(
        &self,
        migration: Uuid,
    ) -> Result<std::collections::HashMap<Uuid, (u64, u64)>, StoreError> {
        use sea_orm::{FromQueryResult, JoinType, QuerySelect, RelationTrait};
        #[derive(FromQueryResult)]
        struct Row {
            folder_id: Uuid,
            n: i64,
            bytes: Option<i64>,
        }
        let rows = crate::entity::message::Entity::find()
            .select_only()
            .column_as(crate::entity::message::Column::FolderId, "folder_id")
            .column_as(
                Expr::col(crate::entity::message::Column::SourceUid).count(),
                "n",
            )
            .column_as(Expr::cust("CAST(SUM(message.size) AS BIGINT)"), "bytes")
            .join(
                JoinType::InnerJoin,
                crate::entity::message::Relation::Folder.def(),
            )
            .filter(folder::Column::MigrationId.eq(migration))
            .group_by(crate::entity::message::Column::FolderId)
            .into_model::<Row>()
            .all(&self.db)
            .await
            .map_err(self.query_err("counting copied messages per folder"))?;
        Ok(rows
            .into_iter()
            .map(|r| (r.folder_id, (to_u64(r.n), r.bytes.map(to_u64).unwrap_or(0))))
            .collect())
    }

    pub(crate) async fn copied_totals_impl(
        &self,
        batch: Option<&str>,
        migration: Option<Uuid>,
    ) -> Result<std::collections::HashMap<Uuid, (u64, u64)>, StoreError> {
        use sea_orm::{FromQueryResult, JoinType, QuerySelect, RelationTrait};
        #[derive(FromQueryResult)]
        struct Row {
            migration_id: Uuid,
            n: i64,
            bytes: Option<i64>,
        }
        let mut q = crate::entity::message::Entity::find()
            .select_only()
            .column_as(folder::Column::MigrationId, "migration_id")
            .column_as(
                Expr::col(crate::entity::message::Column::SourceUid).count(),
                "n",
            )
            .column_as(Expr::cust("CAST(SUM(message.size) AS BIGINT)"), "bytes")
            .join(
                JoinType::InnerJoin,
                crate::entity::message::Relation::Folder.def(),
            )
            .group_by(folder::Column::MigrationId);
        if let Some(m) = migration {
            q = q.filter(folder::Column::MigrationId.eq(m));
        }
        if let Some(b) = batch {
            // A subquery, not the ids as parameters: a batch may hold 100,000 mailboxes.
            q = q.filter(
                folder::Column::MigrationId.in_subquery(
                    sea_orm::sea_query::Query::select()
                        .column(mailbox::Column::MigrationId)
                        .from(mailbox::Entity)
                        .and_where(mailbox::Column::Batch.eq(b))
                        .to_owned(),
                ),
            );
        }
        let rows = q
            .into_model::<Row>()
            .all(&self.db)
            .await
            .map_err(self.query_err("counting copied messages"))?;
        Ok(rows
            .into_iter()
            .map(|r| (r.migration_id, (to_u64(r.n), to_u64(r.bytes.unwrap_or(0)))))
            .collect())
    }

    async fn claim_impl(
        &self,
        migration: Uuid,
        source_folder: &str,
        dest_folder: &str,
        owner: &str,
        lease: Duration,
    ) -> Result<bool, StoreError> {
        let now = Utc::now();
        let until = now + chrono::Duration::from_std(lease).unwrap_or(chrono::Duration::MAX);
        // One statement, atomic on both backends: create the folder's row already leased,
        // or take the lease of the existing row if it is free, expired or ours.
        let row = folder::ActiveModel {
            id: Set(Uuid::new_v4()),
            migration_id: Set(migration),
            source_folder: Set(source_folder.to_string()),
            dest_folder: Set(dest_folder.to_string()),
            source_uidvalidity: Set(None),
            dest_uidvalidity: Set(None),
            highest_uid: Set(0),
            highest_modseq: Set(None),
            pending: Set(None),
            dest_created: Set(false),
            lease_owner: Set(Some(owner.to_string())),
            lease_until: Set(Some(until)),
            updated_at: Set(now),
        };
        let free = Expr::col((folder::Entity, folder::Column::LeaseOwner))
            .is_null()
            .or(Expr::col((folder::Entity, folder::Column::LeaseOwner)).eq(owner))
            .or(Expr::col((folder::Entity, folder::Column::LeaseUntil)).lt(now));
        let res = folder::Entity::insert(row)
            .on_conflict(
                OnConflict::columns([folder::Column::MigrationId, folder::Column::SourceFolder])
                    .update_columns([folder::Column::LeaseOwner, folder::Column::LeaseUntil])
                    .action_and_where(free)
                    .to_owned(),
            )
            .exec_without_returning(&self.db)
            .await
            .map_err(self.query_err("claiming a folder"))?;
        Ok(res == 1)
    }

    async fn renew_impl(
        &self,
        migration: Uuid,
        source_folder: &str,
        owner: &str,
        lease: Duration,
    ) -> Result<bool, StoreError> {
        let now = Utc::now();
        let until = now + chrono::Duration::from_std(lease).unwrap_or(chrono::Duration::MAX);
        let res = folder::Entity::update_many()
            .col_expr(folder::Column::LeaseUntil, Expr::value(Some(until)))
            .filter(folder::Column::MigrationId.eq(migration))
            .filter(folder::Column::SourceFolder.eq(source_folder))
            .filter(folder::Column::LeaseOwner.eq(owner))
            .filter(folder::Column::LeaseUntil.gte(now))
            .exec(&self.db)
            .await
            .map_err(self.query_err("renewing a folder lease"))?;
        Ok(res.rows_affected == 1)
    }

    async fn release_impl(
        &self,
        migration: Uuid,
        source_folder: &str,
        owner: &str,
    ) -> Result<(), StoreError> {
        folder::Entity::update_many()
            .col_expr(
                folder::Column::LeaseOwner,
                Expr::value(Option::<String>::None),
            )
            .col_expr(
                folder::Column::LeaseUntil,
                Expr::value(Option::<DateTime<Utc>>::None),
            )
            .filter(folder::Column::MigrationId.eq(migration))
            .filter(folder::Column::SourceFolder.eq(source_folder))
            .filter(folder::Column::LeaseOwner.eq(owner))
            .exec(&self.db)
            .await
            .map_err(self.query_err("releasing a folder"))?;
        Ok(())
    }
}

#[async_trait]
impl MailboxStore for SeaStore {
    async fn remove_mailbox(&self, id: Uuid) -> mailshift_core::Result<bool> {
        Ok(self.remove_mailbox_impl(id).await?)
    }

    async fn set_mailbox_password(
        &self,
        id: Uuid,
        side: Side,
        password: &secrecy::SecretString,
    ) -> mailshift_core::Result<()> {
        Ok(self.set_mailbox_password_impl(id, side, password).await?)
    }

    async fn add_mailbox(
        &self,
        source: &Endpoint,
        dest: &Endpoint,
        batch: Option<&str>,
        options: &MailboxOptions,
        credentials: &MailboxCredentials,
    ) -> mailshift_core::Result<MailboxRecord> {
        Ok(self
            .add_mailbox_impl(source, dest, batch, options, credentials)
            .await?)
    }

    async fn mailboxes(&self, batch: Option<&str>) -> mailshift_core::Result<Vec<MailboxRecord>> {
        Ok(self.mailboxes_impl(batch).await?)
    }

    async fn mailbox_credentials(
        &self,
        migration: Uuid,
    ) -> mailshift_core::Result<(MailboxRecord, MailboxCredentials)> {
        Ok(self.credentials_impl(migration).await?)
    }

    async fn set_mailbox_status(
        &self,
        id: Uuid,
        status: MailboxStatus,
        error: Option<&str>,
        next_pass_at: Option<i64>,
    ) -> mailshift_core::Result<()> {
        Ok(self
            .set_status_impl(id, status, error, next_pass_at)
            .await?)
    }

    async fn defer_mailbox(
        &self,
        id: Uuid,
        warning: &str,
        next_pass_at: i64,
    ) -> mailshift_core::Result<()> {
        Ok(self.defer_impl(id, warning, next_pass_at).await?)
    }

    async fn begin_pass(
        &self,
        id: Uuid,
        jobs: &[FolderJob],
        source_messages: Option<u64>,
        next_pass_at: Option<i64>,
    ) -> mailshift_core::Result<Uuid> {
        Ok(self
            .begin_pass_impl(id, jobs, source_messages, next_pass_at)
            .await?)
    }

    async fn job_finished(
        &self,
        job: &FolderJob,
        outcome: JobOutcome,
        error: Option<&str>,
    ) -> mailshift_core::Result<()> {
        Ok(self.job_finished_impl(job, outcome, error).await?)
    }

    async fn reopen_job(&self, job: Uuid) -> mailshift_core::Result<bool> {
        Ok(self.reopen_job_impl(job).await?)
    }

    async fn claim_unpublished(
        &self,
        owner: &str,
        limit: usize,
        lease: Duration,
    ) -> mailshift_core::Result<Vec<FolderJob>> {
        Ok(self.claim_unpublished_impl(owner, limit, lease).await?)
    }

    async fn mark_published(&self, jobs: &[Uuid]) -> mailshift_core::Result<()> {
        Ok(self.mark_published_impl(jobs).await?)
    }

    async fn republish_lost(
        &self,
        published_by: i64,
        limit: usize,
    ) -> mailshift_core::Result<Vec<FolderJob>> {
        Ok(self.republish_lost_impl(published_by, limit).await?)
    }

    async fn claim_planning(
        &self,
        id: Uuid,
        owner: &str,
        lease: Duration,
    ) -> mailshift_core::Result<bool> {
        Ok(self.claim_planning_impl(id, owner, lease).await?)
    }

    async fn release_planning(&self, id: Uuid, owner: &str) -> mailshift_core::Result<()> {
        Ok(self.release_planning_impl(id, owner).await?)
    }

    async fn account_conflicts(
        &self,
        migration: Uuid,
        key: &str,
    ) -> mailshift_core::Result<Vec<MailboxRecord>> {
        Ok(self.account_conflicts_impl(migration, key).await?)
    }

    async fn dead_jobs(
        &self,
        batch: Option<&str>,
    ) -> mailshift_core::Result<std::collections::HashMap<Uuid, u64>> {
        Ok(self.dead_jobs_impl(batch).await?)
    }

    async fn record_check(
        &self,
        id: Uuid,
        checked: &str,
        source_messages: Option<u64>,
        source_bytes: Option<u64>,
    ) -> mailshift_core::Result<()> {
        Ok(self
            .record_check_impl(id, checked, source_messages, source_bytes)
            .await?)
    }

    async fn copied_totals(
        &self,
        batch: Option<&str>,
    ) -> mailshift_core::Result<std::collections::HashMap<Uuid, (u64, u64)>> {
        Ok(self.copied_totals_impl(batch, None).await?)
    }

    async fn folder_totals(
        &self,
        migration: Uuid,
    ) -> mailshift_core::Result<std::collections::HashMap<Uuid, (u64, u64)>> {
        Ok(self.folder_totals_impl(migration).await?)
    }

    async fn claim_folder(
        &self,
        migration: Uuid,
        source_folder: &str,
        dest_folder: &str,
        owner: &str,
        lease: Duration,
    ) -> mailshift_core::Result<bool> {
        Ok(self
            .claim_impl(migration, source_folder, dest_folder, owner, lease)
            .await?)
    }

    async fn release_folder(
        &self,
        migration: Uuid,
        source_folder: &str,
        owner: &str,
    ) -> mailshift_core::Result<()> {
        Ok(self.release_impl(migration, source_folder, owner).await?)
    }

    async fn renew_folder(
        &self,
        migration: Uuid,
        source_folder: &str,
        owner: &str,
        lease: Duration,
    ) -> mailshift_core::Result<bool> {
        Ok(self
            .renew_impl(migration, source_folder, owner, lease)
            .await?)
    }
}

impl SeaStore {
    async fn set_host_limit_impl(
        &self,
        host: &str,
        max: Option<u32>,
        rate: Option<u32>,
    ) -> Result<(), StoreError> {
        match max {
            Some(n) => {
                host_limit::Entity::insert(host_limit::ActiveModel {
                    host: Set(host.to_string()),
                    max_connections: Set(i32::try_from(n).unwrap_or(i32::MAX)),
                    max_messages_per_sec: Set(rate.map(|r| i32::try_from(r).unwrap_or(i32::MAX))),
                })
                .on_conflict(
                    OnConflict::column(host_limit::Column::Host)
                        .update_columns([
                            host_limit::Column::MaxConnections,
                            host_limit::Column::MaxMessagesPerSec,
                        ])
                        .to_owned(),
                )
                .exec_without_returning(&self.db)
                .await
                .map_err(self.query_err("setting a host limit"))?;
            }
            None => {
                host_limit::Entity::delete_by_id(host.to_string())
                    .exec(&self.db)
                    .await
                    .map_err(self.query_err("removing a host limit"))?;
            }
        }
        Ok(())
    }

    async fn slot_rate_impl(&self, host: &str) -> Result<Option<f64>, StoreError> {
        let limit = host_limit::Entity::find_by_id(host.to_string())
            .one(&self.db)
            .await
            .map_err(self.query_err("reading a host limit"))?;
        Ok(limit.and_then(|l| {
            l.max_messages_per_sec
                .filter(|r| *r > 0 && l.max_connections > 0)
                .map(|r| f64::from(r) / f64::from(l.max_connections))
        }))
    }

    async fn acquire_slot_impl(
        &self,
        host: &str,
        owner: &str,
        lease: Duration,
    ) -> Result<Option<Option<u32>>, StoreError> {
        let Some(limit) = host_limit::Entity::find_by_id(host.to_string())
            .one(&self.db)
            .await
            .map_err(self.query_err("reading a host limit"))?
        else {
            return Ok(Some(None));
        };
        let now = Utc::now();
        let until = now + chrono::Duration::from_std(lease).unwrap_or(chrono::Duration::MAX);
        for slot in 0..Ord::max(limit.max_connections, 0) {
            // Slot rows appear on first use; the primary key makes that race-safe.
            host_slot::Entity::insert(host_slot::ActiveModel {
                host: Set(host.to_string()),
                slot: Set(slot),
                owner: Set(None),
                lease_until: Set(None),
            })
            .on_conflict_do_nothing_on([host_slot::Column::Host, host_slot::Column::Slot])
            .exec_without_returning(&self.db)
            .await
            .map_err(self.query_err("creating a host slot"))?;
            let res = host_slot::Entity::update_many()
                .col_expr(
                    host_slot::Column::Owner,
                    Expr::value(Some(owner.to_string())),
                )
                .col_expr(host_slot::Column::LeaseUntil, Expr::value(Some(until)))
                .filter(host_slot::Column::Host.eq(host))
                .filter(host_slot::Column::Slot.eq(slot))
                .filter(
                    Condition::any()
                        .add(host_slot::Column::Owner.is_null())
                        .add(host_slot::Column::LeaseUntil.lt(now)),
                )
                .exec(&self.db)
                .await
                .map_err(self.query_err("leasing a host slot"))?;
            if res.rows_affected == 1 {
                return Ok(Some(Some(slot as u32)));
            }
        }
        Ok(None)
    }

    async fn renew_slot_impl(
        &self,
        host: &str,
        slot: u32,
        owner: &str,
        lease: Duration,
    ) -> Result<bool, StoreError> {
        let until = Utc::now() + chrono::Duration::from_std(lease).unwrap_or(chrono::Duration::MAX);
        let res = host_slot::Entity::update_many()
            .col_expr(host_slot::Column::LeaseUntil, Expr::value(Some(until)))
            .filter(host_slot::Column::Host.eq(host))
            .filter(host_slot::Column::Slot.eq(slot as i32))
            .filter(host_slot::Column::Owner.eq(owner))
            .exec(&self.db)
            .await
            .map_err(self.query_err("renewing a host slot"))?;
        Ok(res.rows_affected == 1)
    }

    async fn release_slot_impl(
        &self,
        host: &str,
        slot: u32,
        owner: &str,
    ) -> Result<(), StoreError> {
        host_slot::Entity::update_many()
            .col_expr(
                host_slot::Column::Owner,
                Expr::value(Option::<String>::None),
            )
            .col_expr(
                host_slot::Column::LeaseUntil,
                Expr::value(Option::<DateTime<Utc>>::None),
            )
            .filter(host_slot::Column::Host.eq(host))
            .filter(host_slot::Column::Slot.eq(slot as i32))
            .filter(host_slot::Column::Owner.eq(owner))
            .exec(&self.db)
            .await
            .map_err(self.query_err("releasing a host slot"))?;
        Ok(())
    }
}

#[async_trait]
impl HostSlots for SeaStore {
    async fn set_host_limit(
        &self,
        host: &str,
        max: Option<u32>,
        messages_per_sec: Option<u32>,
    ) -> mailshift_core::Result<()> {
        Ok(self
            .set_host_limit_impl(host, max, messages_per_sec)
            .await?)
    }

    async fn slot_rate(&self, host: &str) -> mailshift_core::Result<Option<f64>> {
        Ok(self.slot_rate_impl(host).await?)
    }

    async fn acquire_slot(
        &self,
        host: &str,
        owner: &str,
        lease: Duration,
    ) -> mailshift_core::Result<Option<Option<u32>>> {
        Ok(self.acquire_slot_impl(host, owner, lease).await?)
    }

    async fn renew_slot(
        &self,
        host: &str,
        slot: u32,
        owner: &str,
        lease: Duration,
    ) -> mailshift_core::Result<bool> {
        Ok(self.renew_slot_impl(host, slot, owner, lease).await?)
    }

    async fn release_slot(&self, host: &str, slot: u32, owner: &str) -> mailshift_core::Result<()> {
        Ok(self.release_slot_impl(host, slot, owner).await?)
    }
}
