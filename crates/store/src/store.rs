//! [`SeaStore`]: opening the database (pool settings, SQLite pragmas, migrations) and the
//! `StateStore` implementation on top of the [`crate::entity`] tables.

use crate::entity::{failure, folder, message, migration};
use crate::error::{StoreError, describe, scrub};
use async_trait::async_trait;
use mailshift_core::endpoint::Endpoint;
use mailshift_core::fingerprint::Fingerprint;
use mailshift_core::flags::FlagSet;
use mailshift_core::ports::{
    CopiedMessage, FailedMessage, FolderState, MigrationRef, PendingBatch, StateStore,
};
use sea_orm::sea_query::Expr;
use sea_orm::sea_query::OnConflict;
use sea_orm::sqlx::postgres::PgConnectOptions;
use sea_orm::sqlx::sqlite::{SqliteJournalMode, SqliteSynchronous};
use sea_orm::{
    ActiveValue::Set, ColumnTrait, ConnectOptions, Database, DatabaseConnection, DbBackend, DbErr,
    EntityTrait, QueryFilter, QueryOrder, QuerySelect, SqliteTransactionMode, TransactionOptions,
    TransactionTrait,
};
use sea_orm_migration::MigratorTrait;
use std::path::{Path, PathBuf};
use std::time::Duration;
use uuid::Uuid;

/// Rows per multi-row INSERT. SQLite allows 32,766 bound values per statement (since
/// 3.32) and PostgreSQL 65,535: 500 rows of at most 6 columns stay far below both.
const CHUNK_ROWS: usize = 500;

/// Parameter bytes per multi-row INSERT on PostgreSQL. sqlx 0.9.0 does not set
/// TCP_NODELAY (sqlx#4335, fixed upstream by #4336, unreleased): a Bind message larger
/// than the socket's initial send buffer (16 KiB) leaves a tail segment that Nagle's
/// algorithm holds until the server's delayed ACK, about 40 ms per statement. Under this
/// budget a 400-message batch commits in ~10 ms instead of ~50 ms on loopback.
const PG_STATEMENT_BYTES: usize = 12 * 1024;

/// How long a SQLite statement waits for another process's lock before failing.
const SQLITE_BUSY_TIMEOUT: Duration = Duration::from_secs(30);

/// How long a task waits for the (single) SQLite connection or a PostgreSQL one.
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(60);

/// How long the first PostgreSQL connection may take before `connect` gives up.
const PG_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// PostgreSQL pool size: enough for a worker process's concurrent folder jobs.
const PG_MAX_CONNECTIONS: u32 = 16;

/// Splits `rows` into runs for one multi-row statement each: at most [`CHUNK_ROWS`] rows
/// and, past the first row, at most `max_bytes` of estimated parameter bytes.
fn runs<T>(rows: &[T], max_bytes: usize, bytes: impl Fn(&T) -> usize) -> Vec<&[T]> {
    let mut out = Vec::new();
    let (mut start, mut size) = (0, 0);
    for (i, row) in rows.iter().enumerate() {
        let b = bytes(row);
        if i > start && (i - start == CHUNK_ROWS || size + b > max_bytes) {
            out.push(&rows[start..i]);
            (start, size) = (i, 0);
        }
        size += b;
    }
    if start < rows.len() {
        out.push(&rows[start..]);
    }
    out
}

/// Estimated Bind bytes of a `message` row: a 4-byte length per value, a 16-byte UUID,
/// three 8-byte integers, the flags and the 64-character fingerprint.
/// (source uid, dest uid, flags, size, fingerprint, header fingerprint)
type MessageRow = (i64, Option<i64>, String, i64, String, Option<String>);

fn message_bytes(c: &CopiedMessage) -> usize {
    7 * 4 + 16 + 3 * 8 + 128 + c.flags.iter().map(|f| f.len() + 1).sum::<usize>()
}

/// Estimated Bind bytes of a `failure` row.
fn failure_bytes(f: &FailedMessage) -> usize {
    5 * 4 + 16 + 2 * 8 + f.kind.len() + f.reason.len()
}

/// The sea-orm state store. Cheap to clone: clones share the pool.
#[derive(Clone, Debug)]
pub struct SeaStore {
    pub(crate) db: DatabaseConnection,
    /// The database as named in messages: the SQLite file path, or the PostgreSQL URL
    /// without password (see `error::describe`). Set once at connect time.
    pub(crate) place: String,
    /// Seals and opens mailbox credentials (fleet mode); None in embedded mode.
    pub(crate) key: Option<crate::secrets::SecretKey>,
    /// Parameter bytes per multi-row statement: [`PG_STATEMENT_BYTES`] on PostgreSQL,
    /// unbounded on SQLite (no socket in between).
    max_statement_bytes: usize,
}

impl SeaStore {
    /// Connects to `sqlite:///abs/path.db` / `sqlite://relative.db` (created if missing)
    /// or `postgres://...`, and applies the schema migrations unless `migrate` is false.
    pub async fn connect(url: &str, migrate: bool) -> Result<SeaStore, StoreError> {
        let place = describe(url);
        let supported = ["sqlite:", "postgres://", "postgresql://"];
        if !supported.iter().any(|scheme| url.starts_with(scheme)) {
            // Checked here: sea-orm would quote the whole URL, password included.
            return Err(StoreError::Url { place });
        }
        Self::open(url, None, place, migrate).await
    }

    /// The embedded mode's state file: opened, created if missing (with its parent
    /// directories), and migrated.
    pub async fn open_sqlite(path: &Path) -> Result<SeaStore, StoreError> {
        let place = path.display().to_string();
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            tokio::fs::create_dir_all(parent)
                .await
                .map_err(|e| StoreError::Open {
                    place: place.clone(),
                    detail: format!("cannot create directory {}: {e}", parent.display()),
                })?;
        }
        // The URL only selects the driver; the path is set on the options as is, so file
        // names with `?`, `#` or `%` need no escaping.
        Self::open(
            "sqlite://mailshift-state.db",
            Some(path.to_path_buf()),
            place,
            true,
        )
        .await
    }

    /// The key that seals mailbox credentials (needed to add or run fleet mailboxes).
    pub fn with_key(mut self, key: crate::secrets::SecretKey) -> SeaStore {
        self.key = Some(key);
        self
    }

    /// The underlying connection (pool), e.g. for ad-hoc queries in tests or tools. On
    /// SQLite it is the store's only connection: keep any transaction on it short.
    pub fn connection(&self) -> &DatabaseConnection {
        &self.db
    }

    async fn open(
        url: &str,
        sqlite_path: Option<PathBuf>,
        place: String,
        migrate: bool,
    ) -> Result<SeaStore, StoreError> {
        let mut opts = ConnectOptions::new(url.to_string());
        opts.sqlx_logging(false).acquire_timeout(ACQUIRE_TIMEOUT);
        if url.starts_with("sqlite:") {
            // One connection for the whole process (see the crate docs), never recycled:
            // recycling would also lose a `sqlite::memory:` database.
            opts.max_connections(1)
                .min_connections(1)
                .idle_timeout(None)
                .max_lifetime(None)
                .test_before_acquire(false)
                .map_sqlx_sqlite_opts(move |o| {
                    let o = match &sqlite_path {
                        Some(p) => o.filename(p),
                        None => o,
                    };
                    o.create_if_missing(true)
                        .journal_mode(SqliteJournalMode::Wal)
                        .synchronous(SqliteSynchronous::Normal)
                        .busy_timeout(SQLITE_BUSY_TIMEOUT)
                        .foreign_keys(true)
                });
        } else {
            Self::preflight_postgres(url, &place).await?;
            opts.max_connections(PG_MAX_CONNECTIONS);
        }
        let db = Database::connect(opts)
            .await
            .map_err(|e| StoreError::Open {
                detail: scrub(&e.to_string(), url, &place),
                place: place.clone(),
            })?;
        if migrate {
            mailshift_migrations::Migrator::up(&db, None)
                .await
                .map_err(|source| StoreError::Migrate {
                    place: place.clone(),
                    source,
                })?;
        }
        tracing::debug!(database = %place, migrated = migrate, "state store open");
        let max_statement_bytes = match db.get_database_backend() {
            DbBackend::Postgres => PG_STATEMENT_BYTES,
            _ => usize::MAX,
        };
        Ok(SeaStore {
            db,
            place,
            key: None,
            max_statement_bytes,
        })
    }

    /// One direct connection before building the pool: the pool retries a refused
    /// connection until its acquire timeout and then reports only "pool timed out", while
    /// this fails at once with the driver's reason (scrubbed of the URL).
    async fn preflight_postgres(url: &str, place: &str) -> Result<(), StoreError> {
        use sea_orm::sqlx::{ConnectOptions as _, Connection as _};
        let fail = |detail: String| StoreError::Open {
            place: place.to_string(),
            detail: scrub(&detail, url, place),
        };
        let opts: PgConnectOptions = url
            .parse()
            .map_err(|e: sea_orm::sqlx::Error| fail(e.to_string()))?;
        match tokio::time::timeout(PG_CONNECT_TIMEOUT, opts.connect()).await {
            Err(_) => Err(fail(format!(
                "no answer within {} s",
                PG_CONNECT_TIMEOUT.as_secs()
            ))),
            Ok(Err(e)) => Err(fail(e.to_string())),
            Ok(Ok(conn)) => {
                let _ = conn.close().await;
                Ok(())
            }
        }
    }

    pub(crate) fn query_err(&self, op: &'static str) -> impl Fn(DbErr) -> StoreError + '_ {
        move |source| StoreError::Query {
            place: self.place.clone(),
            op,
            source,
        }
    }

    pub(crate) fn corrupt(&self, what: String) -> StoreError {
        StoreError::Corrupt {
            place: self.place.clone(),
            what,
        }
    }

    fn u32_of(&self, v: i64, what: impl FnOnce() -> String) -> Result<u32, StoreError> {
        u32::try_from(v).map_err(|_| self.corrupt(format!("{} ({v} is not a u32)", what())))
    }

    fn to_state(&self, m: folder::Model) -> Result<FolderState, StoreError> {
        let pending = match &m.pending {
            Some(json) => Some(serde_json::from_str::<PendingBatch>(json).map_err(|e| {
                self.corrupt(format!("pending batch of folder {}: {e}", m.source_folder))
            })?),
            None => None,
        };
        let field = |name: &str| format!("{name} of folder {}", m.source_folder);
        Ok(FolderState {
            source_uidvalidity: m
                .source_uidvalidity
                .map(|v| self.u32_of(v, || field("source uidvalidity")))
                .transpose()?,
            dest_uidvalidity: m
                .dest_uidvalidity
                .map(|v| self.u32_of(v, || field("destination uidvalidity")))
                .transpose()?,
            highest_uid: self.u32_of(m.highest_uid, || field("highest uid"))?,
            highest_modseq: m
                .highest_modseq
                .map(|v| u64::try_from(v).map_err(|_| self.corrupt(field("highest modseq"))))
                .transpose()?,
            id: m.id,
            migration_id: m.migration_id,
            source_folder: m.source_folder,
            dest_folder: m.dest_folder,
            pending,
            dest_created: m.dest_created,
        })
    }

    async fn find_migration(
        &self,
        source: &str,
        dest: &str,
    ) -> Result<Option<migration::Model>, StoreError> {
        migration::Entity::find()
            .filter(migration::Column::Source.eq(source))
            .filter(migration::Column::Dest.eq(dest))
            .one(&self.db)
            .await
            .map_err(self.query_err("finding the migration"))
    }

    async fn find_folder(
        &self,
        migration: Uuid,
        source_folder: &str,
    ) -> Result<Option<folder::Model>, StoreError> {
        folder::Entity::find()
            .filter(folder::Column::MigrationId.eq(migration))
            .filter(folder::Column::SourceFolder.eq(source_folder))
            .one(&self.db)
            .await
            .map_err(self.query_err("finding a folder"))
    }

    async fn migration_impl(
        &self,
        source: &Endpoint,
        dest: &Endpoint,
        key: Option<&str>,
    ) -> Result<MigrationRef, StoreError> {
        let (source, dest) = (source.to_string(), dest.to_string());
        if let Some(m) = self.find_migration(&source, &dest).await? {
            if let Some(k) = key
                && m.account_key.as_deref() != Some(k)
            {
                // The account behind the address changed (a recreated INBOX) or was
                // never recorded: the address decides, the key follows.
                migration::Entity::update_many()
                    .col_expr(
                        migration::Column::AccountKey,
                        Expr::value(Some(k.to_string())),
                    )
                    .filter(migration::Column::Id.eq(m.id))
                    .exec(&self.db)
                    .await
                    .map_err(self.query_err("recording the accounts of a migration"))?;
            }
            return Ok(MigrationRef {
                id: m.id,
                recorded_as: None,
            });
        }
        if let Some(k) = key
            && let Some(m) = migration::Entity::find()
                .filter(migration::Column::AccountKey.eq(k))
                .order_by_asc(migration::Column::CreatedAt)
                .one(&self.db)
                .await
                .map_err(self.query_err("finding the migration of these accounts"))?
        {
            return Ok(MigrationRef {
                id: m.id,
                recorded_as: Some((m.source, m.dest)),
            });
        }
        // Another task or process may insert the same pair meanwhile: do nothing on
        // conflict, then read back whichever row won.
        migration::Entity::insert(migration::ActiveModel {
            id: Set(Uuid::new_v4()),
            source: Set(source.clone()),
            dest: Set(dest.clone()),
            created_at: Set(chrono::Utc::now()),
            account_key: Set(key.map(str::to_string)),
        })
        .on_conflict_do_nothing_on([migration::Column::Source, migration::Column::Dest])
        .exec_without_returning(&self.db)
        .await
        .map_err(self.query_err("creating the migration"))?;
        let id = self
            .find_migration(&source, &dest)
            .await?
            .ok_or_else(|| self.corrupt("migration row missing right after its insert".into()))?
            .id;
        Ok(MigrationRef {
            id,
            recorded_as: None,
        })
    }

    async fn folder_impl(
        &self,
        migration: Uuid,
        source_folder: &str,
        dest_folder: &str,
    ) -> Result<FolderState, StoreError> {
        let found = match self.find_folder(migration, source_folder).await? {
            Some(m) => m,
            None => {
                // Race-safe like `migration`: the unique key decides, we read the winner.
                folder::Entity::insert(folder::ActiveModel {
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
                    lease_owner: Set(None),
                    lease_until: Set(None),
                    updated_at: Set(chrono::Utc::now()),
                })
                .on_conflict_do_nothing_on([
                    folder::Column::MigrationId,
                    folder::Column::SourceFolder,
                ])
                .exec_without_returning(&self.db)
                .await
                .map_err(self.query_err("creating a folder"))?;
                self.find_folder(migration, source_folder)
                    .await?
                    .ok_or_else(|| {
                        self.corrupt(format!(
                            "folder {source_folder} missing right after its insert"
                        ))
                    })?
            }
        };
        let mut found = found;
        if found.dest_folder != dest_folder {
            folder::Entity::update_many()
                .col_expr(folder::Column::DestFolder, dest_folder.into())
                .col_expr(folder::Column::UpdatedAt, chrono::Utc::now().into())
                .filter(folder::Column::Id.eq(found.id))
                .exec(&self.db)
                .await
                .map_err(self.query_err("renaming a folder's destination"))?;
            found.dest_folder = dest_folder.to_string();
        }
        self.to_state(found)
    }

    async fn folders_impl(&self, migration: Uuid) -> Result<Vec<FolderState>, StoreError> {
        folder::Entity::find()
            .filter(folder::Column::MigrationId.eq(migration))
            .order_by_asc(folder::Column::SourceFolder)
            .all(&self.db)
            .await
            .map_err(self.query_err("listing folders"))?
            .into_iter()
            .map(|m| self.to_state(m))
            .collect()
    }

    async fn set_pending_impl(
        &self,
        folder_id: Uuid,
        pending: Option<&PendingBatch>,
    ) -> Result<(), StoreError> {
        let json = pending
            .map(serde_json::to_string)
            .transpose()
            .map_err(|e| self.corrupt(format!("pending batch (cannot encode: {e})")))?;
        let res = folder::Entity::update_many()
            .col_expr(folder::Column::Pending, json.into())
            .filter(folder::Column::Id.eq(folder_id))
            .exec(&self.db)
            .await
            .map_err(self.query_err("recording a pending batch"))?;
        if res.rows_affected == 0 {
            return Err(StoreError::NoFolder {
                place: self.place.clone(),
                id: folder_id,
            });
        }
        Ok(())
    }

    async fn commit_batch_impl(
        &self,
        state: &FolderState,
        copied: &[CopiedMessage],
        failed: &[FailedMessage],
    ) -> Result<(), StoreError> {
        let txn = self.begin().await?;

        self.insert_messages(&txn, state.id, copied).await?;

        for chunk in runs(failed, self.max_statement_bytes, failure_bytes) {
            let rows = chunk.iter().map(|f| failure::ActiveModel {
                folder_id: Set(state.id),
                source_uid: Set(i64::from(f.source_uid)),
                size: Set(i64::from(f.size)),
                kind: Set(f.kind.clone()),
                reason: Set(f.reason.clone()),
            });
            failure::Entity::insert_many(rows)
                .on_conflict(
                    OnConflict::columns([failure::Column::FolderId, failure::Column::SourceUid])
                        .update_columns([
                            failure::Column::Size,
                            failure::Column::Kind,
                            failure::Column::Reason,
                        ])
                        .to_owned(),
                )
                .exec_without_returning(&txn)
                .await
                .map_err(self.query_err("recording refused messages"))?;
        }

        self.save_checkpoint(&txn, state).await?;
        txn.commit()
            .await
            .map_err(self.query_err("committing a checkpoint"))
    }

    pub(crate) async fn begin(&self) -> Result<sea_orm::DatabaseTransaction, StoreError> {
        // IMMEDIATE on SQLite: take the write lock at BEGIN (waiting out other processes
        // with the busy timeout) rather than fail to upgrade mid-transaction. Ignored on
        // PostgreSQL. Dropping the transaction on an early return rolls it back.
        self.db
            .begin_with_options(TransactionOptions {
                sqlite_transaction_mode: Some(SqliteTransactionMode::Immediate),
                ..Default::default()
            })
            .await
            .map_err(self.query_err("starting a checkpoint"))
    }

    /// Upserts map rows and forgets earlier failures of those messages.
    async fn insert_messages(
        &self,
        txn: &sea_orm::DatabaseTransaction,
        folder_id: Uuid,
        copied: &[CopiedMessage],
    ) -> Result<(), StoreError> {
        for chunk in runs(copied, self.max_statement_bytes, message_bytes) {
            let rows = chunk.iter().map(|c| message::ActiveModel {
                folder_id: Set(folder_id),
                source_uid: Set(i64::from(c.source_uid)),
                dest_uid: Set(c.dest_uid.map(i64::from)),
                flags: Set(c.flags.to_storage()),
                size: Set(i64::from(c.size)),
                fingerprint: Set(c.fingerprint.to_hex()),
                header_fingerprint: Set(c.header_fingerprint.map(|f| f.to_hex())),
            });
            message::Entity::insert_many(rows)
                .on_conflict(
                    OnConflict::columns([message::Column::FolderId, message::Column::SourceUid])
                        .update_columns([
                            message::Column::DestUid,
                            message::Column::Flags,
                            message::Column::Size,
                            message::Column::Fingerprint,
                            message::Column::HeaderFingerprint,
                        ])
                        .to_owned(),
                )
                .exec_without_returning(txn)
                .await
                .map_err(self.query_err("recording copied messages"))?;
            failure::Entity::delete_many()
                .filter(failure::Column::FolderId.eq(folder_id))
                .filter(
                    failure::Column::SourceUid.is_in(chunk.iter().map(|c| i64::from(c.source_uid))),
                )
                .exec(txn)
                .await
                .map_err(self.query_err("forgetting failures of copied messages"))?;
        }

        Ok(())
    }

    /// Saves the checkpoint fields of `state` and clears its pending batch.
    async fn save_checkpoint(
        &self,
        txn: &sea_orm::DatabaseTransaction,
        state: &FolderState,
    ) -> Result<(), StoreError> {
        let modseq = state
            .highest_modseq
            .map(|v| {
                i64::try_from(v)
                    .map_err(|_| self.corrupt(format!("highest modseq {v} (over 63 bits)")))
            })
            .transpose()?;
        let res = folder::Entity::update_many()
            .col_expr(
                folder::Column::DestFolder,
                state.dest_folder.as_str().into(),
            )
            .col_expr(
                folder::Column::SourceUidvalidity,
                state.source_uidvalidity.map(i64::from).into(),
            )
            .col_expr(
                folder::Column::DestUidvalidity,
                state.dest_uidvalidity.map(i64::from).into(),
            )
            .col_expr(
                folder::Column::HighestUid,
                i64::from(state.highest_uid).into(),
            )
            .col_expr(folder::Column::HighestModseq, modseq.into())
            .col_expr(folder::Column::DestCreated, state.dest_created.into())
            .col_expr(folder::Column::Pending, Option::<String>::None.into())
            .col_expr(folder::Column::UpdatedAt, chrono::Utc::now().into())
            .filter(folder::Column::Id.eq(state.id))
            .exec(txn)
            .await
            .map_err(self.query_err("saving a checkpoint"))?;
        if res.rows_affected == 0 {
            return Err(StoreError::NoFolder {
                place: self.place.clone(),
                id: state.id,
            });
        }
        Ok(())
    }

    async fn apply_changes_impl(
        &self,
        state: &FolderState,
        flags: &[(u32, FlagSet)],
        forget: &[u32],
    ) -> Result<(), StoreError> {
        let txn = self.begin().await?;
        let mut by_flags: std::collections::BTreeMap<String, Vec<i64>> = Default::default();
        for (uid, f) in flags {
            by_flags
                .entry(f.to_storage())
                .or_default()
                .push(i64::from(*uid));
        }
        for (stored, uids) in by_flags {
            for chunk in uids.chunks(500) {
                message::Entity::update_many()
                    .col_expr(message::Column::Flags, stored.as_str().into())
                    .filter(message::Column::FolderId.eq(state.id))
                    .filter(message::Column::SourceUid.is_in(chunk.iter().copied()))
                    .exec(&txn)
                    .await
                    .map_err(self.query_err("updating flags"))?;
            }
        }
        for chunk in forget.chunks(500) {
            let uids = chunk.iter().map(|u| i64::from(*u));
            message::Entity::delete_many()
                .filter(message::Column::FolderId.eq(state.id))
                .filter(message::Column::SourceUid.is_in(uids.clone()))
                .exec(&txn)
                .await
                .map_err(self.query_err("forgetting expunged messages"))?;
            failure::Entity::delete_many()
                .filter(failure::Column::FolderId.eq(state.id))
                .filter(failure::Column::SourceUid.is_in(uids))
                .exec(&txn)
                .await
                .map_err(self.query_err("forgetting expunged messages"))?;
        }
        self.save_checkpoint(&txn, state).await?;
        txn.commit()
            .await
            .map_err(self.query_err("committing a checkpoint"))
    }

    async fn replace_messages_impl(
        &self,
        state: &FolderState,
        messages: &[CopiedMessage],
    ) -> Result<(), StoreError> {
        let txn = self.begin().await?;
        message::Entity::delete_many()
            .filter(message::Column::FolderId.eq(state.id))
            .exec(&txn)
            .await
            .map_err(self.query_err("clearing a message map"))?;
        failure::Entity::delete_many()
            .filter(failure::Column::FolderId.eq(state.id))
            .exec(&txn)
            .await
            .map_err(self.query_err("clearing refused messages"))?;
        self.insert_messages(&txn, state.id, messages).await?;
        self.save_checkpoint(&txn, state).await?;
        txn.commit()
            .await
            .map_err(self.query_err("committing a checkpoint"))
    }

    async fn merge_folder_impl(&self, into: Uuid, from: Uuid) -> Result<(), StoreError> {
        let txn = self.begin().await?;
        message::Entity::update_many()
            .col_expr(message::Column::FolderId, into.into())
            .filter(message::Column::FolderId.eq(from))
            .exec(&txn)
            .await
            .map_err(self.query_err("merging a slice's messages"))?;
        failure::Entity::update_many()
            .col_expr(failure::Column::FolderId, into.into())
            .filter(failure::Column::FolderId.eq(from))
            .exec(&txn)
            .await
            .map_err(self.query_err("merging a slice's failures"))?;
        txn.commit()
            .await
            .map_err(self.query_err("merging a slice"))
    }

    async fn remove_folder_impl(&self, folder_id: Uuid) -> Result<(), StoreError> {
        let txn = self.begin().await?;
        message::Entity::delete_many()
            .filter(message::Column::FolderId.eq(folder_id))
            .exec(&txn)
            .await
            .map_err(self.query_err("removing a folder"))?;
        failure::Entity::delete_many()
            .filter(failure::Column::FolderId.eq(folder_id))
            .exec(&txn)
            .await
            .map_err(self.query_err("removing a folder"))?;
        folder::Entity::delete_many()
            .filter(folder::Column::Id.eq(folder_id))
            .exec(&txn)
            .await
            .map_err(self.query_err("removing a folder"))?;
        txn.commit()
            .await
            .map_err(self.query_err("removing a folder"))
    }

    async fn copied_impl(&self, folder_id: Uuid) -> Result<Vec<CopiedMessage>, StoreError> {
        // Only the needed columns, decoded as a tuple: no per-row model or UUID decoding.
        let rows: Vec<MessageRow> = message::Entity::find()
            .select_only()
            .columns([
                message::Column::SourceUid,
                message::Column::DestUid,
                message::Column::Flags,
                message::Column::Size,
                message::Column::Fingerprint,
                message::Column::HeaderFingerprint,
            ])
            .filter(message::Column::FolderId.eq(folder_id))
            .order_by_asc(message::Column::SourceUid)
            .into_tuple()
            .all(&self.db)
            .await
            .map_err(self.query_err("loading the message map"))?;
        rows.into_iter()
            .map(|(uid, dest_uid, flags, size, fingerprint, header)| {
                let what = |f: &str| format!("{f} of message {uid}");
                Ok(CopiedMessage {
                    source_uid: self.u32_of(uid, || what("source uid"))?,
                    dest_uid: dest_uid
                        .map(|v| self.u32_of(v, || what("destination uid")))
                        .transpose()?,
                    flags: FlagSet::from_storage(&flags),
                    size: self.u32_of(size, || what("size"))?,
                    fingerprint: Fingerprint::from_hex(&fingerprint)
                        .ok_or_else(|| self.corrupt(what("fingerprint")))?,
                    header_fingerprint: header.as_deref().and_then(Fingerprint::from_hex),
                })
            })
            .collect()
    }

    async fn failed_impl(&self, folder_id: Uuid) -> Result<Vec<FailedMessage>, StoreError> {
        let rows: Vec<(i64, i64, String, String)> = failure::Entity::find()
            .select_only()
            .columns([
                failure::Column::SourceUid,
                failure::Column::Size,
                failure::Column::Kind,
                failure::Column::Reason,
            ])
            .filter(failure::Column::FolderId.eq(folder_id))
            .order_by_asc(failure::Column::SourceUid)
            .into_tuple()
            .all(&self.db)
            .await
            .map_err(self.query_err("loading refused messages"))?;
        rows.into_iter()
            .map(|(uid, size, kind, reason)| {
                Ok(FailedMessage {
                    source_uid: self
                        .u32_of(uid, || format!("source uid of refused message {uid}"))?,
                    size: self.u32_of(size, || format!("size of refused message {uid}"))?,
                    kind,
                    reason,
                })
            })
            .collect()
    }
}

#[async_trait]
impl StateStore for SeaStore {
    async fn migration_keyed(
        &self,
        source: &Endpoint,
        dest: &Endpoint,
        account_key: Option<&str>,
    ) -> mailshift_core::Result<MigrationRef> {
        Ok(self.migration_impl(source, dest, account_key).await?)
    }

    async fn folder(
        &self,
        migration: Uuid,
        source_folder: &str,
        dest_folder: &str,
    ) -> mailshift_core::Result<FolderState> {
        Ok(self
            .folder_impl(migration, source_folder, dest_folder)
            .await?)
    }

    async fn folders(&self, migration: Uuid) -> mailshift_core::Result<Vec<FolderState>> {
        Ok(self.folders_impl(migration).await?)
    }

    async fn set_pending(
        &self,
        folder: Uuid,
        pending: Option<&PendingBatch>,
    ) -> mailshift_core::Result<()> {
        Ok(self.set_pending_impl(folder, pending).await?)
    }

    async fn commit_batch(
        &self,
        state: &FolderState,
        copied: &[CopiedMessage],
        failed: &[FailedMessage],
    ) -> mailshift_core::Result<()> {
        Ok(self.commit_batch_impl(state, copied, failed).await?)
    }

    async fn apply_changes(
        &self,
        state: &FolderState,
        flags: &[(u32, FlagSet)],
        forget: &[u32],
    ) -> mailshift_core::Result<()> {
        Ok(self.apply_changes_impl(state, flags, forget).await?)
    }

    async fn replace_messages(
        &self,
        state: &FolderState,
        messages: &[CopiedMessage],
    ) -> mailshift_core::Result<()> {
        Ok(self.replace_messages_impl(state, messages).await?)
    }

    async fn remove_folder(&self, folder: Uuid) -> mailshift_core::Result<()> {
        Ok(self.remove_folder_impl(folder).await?)
    }

    async fn merge_folder(&self, into: Uuid, from: Uuid) -> mailshift_core::Result<()> {
        Ok(self.merge_folder_impl(into, from).await?)
    }

    async fn copied(&self, folder: Uuid) -> mailshift_core::Result<Vec<CopiedMessage>> {
        Ok(self.copied_impl(folder).await?)
    }

    async fn failed(&self, folder: Uuid) -> mailshift_core::Result<Vec<FailedMessage>> {
        Ok(self.failed_impl(folder).await?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runs_respect_rows_and_bytes() {
        let rows: Vec<u32> = (0..1234).collect();
        let by_rows = runs(&rows, usize::MAX, |_| 100);
        assert_eq!(
            by_rows.iter().map(|r| r.len()).collect::<Vec<_>>(),
            [500, 500, 234]
        );
        let by_bytes = runs(&rows[..10], 250, |_| 100);
        assert_eq!(
            by_bytes.iter().map(|r| r.len()).collect::<Vec<_>>(),
            [2, 2, 2, 2, 2]
        );
        // A single row over the budget still goes out, alone.
        assert_eq!(runs(&rows[..2], 10, |_| 100).len(), 2);
        assert!(runs(&rows[..0], 10, |_| 100).is_empty());
    }
}
