//! [`BatchStore`] and the HTTP API's tokens on the fleet's database. A token is shown
//! once, at creation; only its SHA-256 is stored, so a leaked database grants nothing.

use crate::domains::now;
use crate::entity::{api_token, batch};
use crate::error::StoreError;
use crate::store::SeaStore;
use aes_gcm::aead::OsRng;
use aes_gcm::aead::rand_core::RngCore;
use async_trait::async_trait;
use mailshift_core::batch::{BatchRecord, BatchState};
use mailshift_core::ports::{BatchStore, TokenInfo, TokenStore};
use sea_orm::sea_query::{Expr, OnConflict};
use sea_orm::{ActiveValue::Set, ColumnTrait, EntityTrait, QueryFilter, QueryOrder};
use sha2::{Digest, Sha256};
use uuid::Uuid;

/// Tokens look like `mst_` + 43 characters of base64url (32 random bytes).
pub const TOKEN_PREFIX: &str = "mst_";

pub fn token_hash(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

impl SeaStore {
    fn to_batch(&self, m: batch::Model) -> Result<BatchRecord, StoreError> {
        Ok(BatchRecord {
            state: BatchState::parse(&m.state)
                .ok_or_else(|| self.corrupt(format!("state of batch {}", m.name)))?,
            name: m.name,
            domain: m.domain,
            start_at: m.start_at,
            interval_secs: m.interval_secs.map(|s| s.max(1) as u64),
            switch_at: m.switch_at,
            complete_at: m.complete_at,
            concurrency: m.concurrency.map(|c| c.max(0) as u32),
            host_concurrency: m.host_concurrency.map(|c| c.max(0) as u32),
            final_pass_at: m.final_pass_at,
            created_at: m.created_at,
        })
    }

    async fn put_batch_impl(&self, b: &BatchRecord) -> Result<(), StoreError> {
        let row = batch::ActiveModel {
            name: Set(b.name.clone()),
            domain: Set(b.domain.clone()),
            state: Set(b.state.as_str().to_string()),
            start_at: Set(b.start_at),
            interval_secs: Set(b.interval_secs.map(|s| s.min(i64::MAX as u64) as i64)),
            switch_at: Set(b.switch_at),
            complete_at: Set(b.complete_at),
            concurrency: Set(b.concurrency.map(|c| i32::try_from(c).unwrap_or(i32::MAX))),
            host_concurrency: Set(b
                .host_concurrency
                .map(|c| i32::try_from(c).unwrap_or(i32::MAX))),
            final_pass_at: Set(b.final_pass_at),
            created_at: Set(b.created_at),
        };
        batch::Entity::insert(row)
            .on_conflict(
                OnConflict::column(batch::Column::Name)
                    .update_columns([
                        batch::Column::Domain,
                        batch::Column::State,
                        batch::Column::StartAt,
                        batch::Column::IntervalSecs,
                        batch::Column::SwitchAt,
                        batch::Column::CompleteAt,
                        batch::Column::Concurrency,
                        batch::Column::HostConcurrency,
                        batch::Column::FinalPassAt,
                    ])
                    .to_owned(),
            )
            .exec_without_returning(&self.db)
            .await
            .map_err(self.query_err("recording a batch"))?;
        Ok(())
    }

    async fn create_token_impl(
        &self,
        name: &str,
        read_only: bool,
        expires_at: Option<i64>,
    ) -> Result<String, StoreError> {
        use base64::Engine;
        let mut bytes = [0u8; 32];
        OsRng.fill_bytes(&mut bytes);
        let token = format!(
            "{TOKEN_PREFIX}{}",
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
        );
        api_token::Entity::insert(api_token::ActiveModel {
            id: Set(Uuid::new_v4()),
            name: Set(name.to_string()),
            hash: Set(token_hash(&token)),
            read_only: Set(read_only),
            created_at: Set(now()),
            last_used_at: Set(None),
            expires_at: Set(expires_at),
        })
        .exec_without_returning(&self.db)
        .await
        .map_err(|e| {
            if e.to_string().to_ascii_lowercase().contains("unique") {
                StoreError::Conflict {
                    place: self.place.clone(),
                    what: format!(
                        "a token named '{name}' exists; revoke it first or choose another name"
                    ),
                }
            } else {
                self.query_err("creating a token")(e)
            }
        })?;
        Ok(token)
    }

    async fn check_token_impl(&self, token: &str) -> Result<Option<TokenInfo>, StoreError> {
        let Some(m) = api_token::Entity::find()
            .filter(api_token::Column::Hash.eq(token_hash(token)))
            .one(&self.db)
            .await
            .map_err(self.query_err("checking a token"))?
        else {
            return Ok(None);
        };
        let t = now();
        if m.expires_at.is_some_and(|e| e <= t) {
            return Ok(None);
        }
        // Once a minute is enough to tell which tokens are in use.
        if m.last_used_at.is_none_or(|u| t - u >= 60) {
            api_token::Entity::update_many()
                .col_expr(api_token::Column::LastUsedAt, Expr::value(Some(t)))
                .filter(api_token::Column::Id.eq(m.id))
                .exec(&self.db)
                .await
                .map_err(self.query_err("noting a token's use"))?;
        }
        Ok(Some(TokenInfo {
            name: m.name,
            read_only: m.read_only,
            created_at: m.created_at,
            last_used_at: Some(t),
            expires_at: m.expires_at,
        }))
    }

    async fn tokens_impl(&self) -> Result<Vec<TokenInfo>, StoreError> {
        Ok(api_token::Entity::find()
            .order_by_asc(api_token::Column::Name)
            .all(&self.db)
            .await
            .map_err(self.query_err("listing tokens"))?
            .into_iter()
            .map(|m| TokenInfo {
                name: m.name,
                read_only: m.read_only,
                created_at: m.created_at,
                last_used_at: m.last_used_at,
                expires_at: m.expires_at,
            })
            .collect())
    }

    async fn revoke_token_impl(&self, name: &str) -> Result<bool, StoreError> {
        let res = api_token::Entity::delete_many()
            .filter(api_token::Column::Name.eq(name))
            .exec(&self.db)
            .await
            .map_err(self.query_err("revoking a token"))?;
        Ok(res.rows_affected > 0)
    }
}

#[async_trait]
impl BatchStore for SeaStore {
    async fn put_batch(&self, batch: &BatchRecord) -> mailshift_core::Result<()> {
        Ok(self.put_batch_impl(batch).await?)
    }

    async fn batch(&self, name: &str) -> mailshift_core::Result<Option<BatchRecord>> {
        let m = batch::Entity::find_by_id(name.to_string())
            .one(&self.db)
            .await
            .map_err(self.query_err("reading a batch"))?;
        Ok(m.map(|m| self.to_batch(m)).transpose()?)
    }

    async fn delete_batch(&self, name: &str) -> mailshift_core::Result<bool> {
        let res = batch::Entity::delete_by_id(name.to_string())
            .exec(&self.db)
            .await
            .map_err(self.query_err("removing a batch"))?;
        Ok(res.rows_affected > 0)
    }

    async fn batches(&self) -> mailshift_core::Result<Vec<BatchRecord>> {
        let rows = batch::Entity::find()
            .order_by_asc(batch::Column::CreatedAt)
            .all(&self.db)
            .await
            .map_err(self.query_err("listing batches"))?;
        Ok(rows
            .into_iter()
            .map(|m| self.to_batch(m))
            .collect::<Result<Vec<_>, _>>()?)
    }
}

#[async_trait]
impl TokenStore for SeaStore {
    async fn create_token(
        &self,
        name: &str,
        read_only: bool,
        expires_at: Option<i64>,
    ) -> mailshift_core::Result<String> {
        Ok(self.create_token_impl(name, read_only, expires_at).await?)
    }

    async fn check_token(&self, token: &str) -> mailshift_core::Result<Option<TokenInfo>> {
        Ok(self.check_token_impl(token).await?)
    }

    async fn tokens(&self) -> mailshift_core::Result<Vec<TokenInfo>> {
        Ok(self.tokens_impl().await?)
    }

    async fn revoke_token(&self, name: &str) -> mailshift_core::Result<bool> {
        Ok(self.revoke_token_impl(name).await?)
    }
}
