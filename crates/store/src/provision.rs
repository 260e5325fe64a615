//! [`ProvisionStore`] on the fleet's database: each batch's provisioning backend (its
//! configuration sealed), and per mailbox what `mailshift provision` did. Imported hashes
//! and temporary passwords are sealed like every other credential (`crate::secrets`).

use crate::entity::{mailbox, provision_alias, provision_backend, provision_mailbox};
use crate::error::StoreError;
use crate::secrets::SecretKey;
use crate::store::SeaStore;
use async_trait::async_trait;
use mailshift_core::aliases::AliasEntry;
use mailshift_core::provision::{PasswordCarry, PasswordHash, ProvisionRecord, ProvisionStore};
use sea_orm::sea_query::{Expr, OnConflict};
use sea_orm::{
    ActiveValue::NotSet, ActiveValue::Set, ColumnTrait, EntityTrait, QueryFilter, TransactionTrait,
};
use secrecy::{ExposeSecret, SecretString};
use std::collections::{BTreeMap, BTreeSet};
use uuid::Uuid;

fn empty(mailbox_id: Uuid) -> provision_mailbox::ActiveModel {
    provision_mailbox::ActiveModel {
        mailbox_id: Set(mailbox_id),
        imported_hash: NotSet,
        provisioned_at: NotSet,
        password_carry: NotSet,
        quota_bytes: NotSet,
        temporary_secret: NotSet,
        temporary_exported_at: NotSet,
        aliases: NotSet,
        aliases_at: NotSet,
    }
}

impl SeaStore {
    fn sealing_key(&self) -> Result<&SecretKey, StoreError> {
        self.key.as_ref().ok_or_else(|| StoreError::Secret {
            place: self.place.clone(),
            source: crate::secrets::SecretError::Missing,
        })
    }

    fn open_sealed(&self, sealed: &str, binding: &str) -> Result<SecretString, StoreError> {
        self.sealing_key()?
            .open(sealed, binding)
            .map_err(|source| StoreError::Secret {
                place: self.place.clone(),
                source,
            })
    }

    /// Inserts the row or updates `columns` of an existing one.
    async fn upsert_provision(
        &self,
        row: provision_mailbox::ActiveModel,
        columns: &[provision_mailbox::Column],
        op: &'static str,
    ) -> Result<(), StoreError> {
        provision_mailbox::Entity::insert(row)
            .on_conflict(
                OnConflict::column(provision_mailbox::Column::MailboxId)
                    .update_columns(columns.iter().copied())
                    .to_owned(),
            )
            .exec_without_returning(&self.db)
            .await
            .map_err(self.query_err(op))?;
        Ok(())
    }

    async fn provision_row(
        &self,
        mailbox: Uuid,
    ) -> Result<Option<provision_mailbox::Model>, StoreError> {
        provision_mailbox::Entity::find_by_id(mailbox)
            .one(&self.db)
            .await
            .map_err(self.query_err("reading a mailbox's provisioning"))
    }

    async fn set_imported_hash_impl(
        &self,
        mailbox: Uuid,
        hash: Option<&PasswordHash>,
    ) -> Result<(), StoreError> {
        let sealed = match hash {
            Some(h) => Some(self.sealing_key()?.seal(
                &SecretString::from(h.expose().to_string()),
                &format!("provision/{mailbox}/imported-hash"),
            )),
            None => None,
        };
        if sealed.is_none() && self.provision_row(mailbox).await?.is_none() {
            return Ok(());
        }
        let mut row = empty(mailbox);
        row.imported_hash = Set(sealed);
        self.upsert_provision(
            row,
            &[provision_mailbox::Column::ImportedHash],
            "recording an imported password hash",
        )
        .await
    }

    async fn imported_hash_impl(&self, mailbox: Uuid) -> Result<Option<PasswordHash>, StoreError> {
        let Some(sealed) = self
            .provision_row(mailbox)
            .await?
            .and_then(|r| r.imported_hash)
        else {
            return Ok(None);
        };
        let opened = self.open_sealed(&sealed, &format!("provision/{mailbox}/imported-hash"))?;
        PasswordHash::parse(opened.expose_secret())
            .map(Some)
            .map_err(|_| self.corrupt(format!("imported password hash of mailbox {mailbox}")))
    }

    async fn provision_records_impl(
        &self,
        batch: &str,
    ) -> Result<Vec<ProvisionRecord>, StoreError> {
        let ids: Vec<Uuid> = mailbox::Entity::find()
            .filter(mailbox::Column::Batch.eq(batch))
            .all(&self.db)
            .await
            .map_err(self.query_err("listing a batch's mailboxes"))?
            .into_iter()
            .map(|m| m.id)
            .collect();
        let mut out = Vec::new();
        for chunk in ids.chunks(500) {
            let rows = provision_mailbox::Entity::find()
                .filter(provision_mailbox::Column::MailboxId.is_in(chunk.iter().copied()))
                .all(&self.db)
                .await
                .map_err(self.query_err("reading a batch's provisioning"))?;
            for r in rows {
                let carry = match r.password_carry.as_deref() {
                    None => None,
                    Some(c) => Some(PasswordCarry::parse(c).ok_or_else(|| {
                        self.corrupt(format!("password carry of mailbox {}", r.mailbox_id))
                    })?),
                };
                let aliases: Vec<String> = match r.aliases.as_deref() {
                    None => Vec::new(),
                    Some(a) => serde_json::from_str(a).map_err(|_| {
                        self.corrupt(format!("aliases of mailbox {}", r.mailbox_id))
                    })?,
                };
                out.push(ProvisionRecord {
                    mailbox_id: r.mailbox_id,
                    imported_hash: r.imported_hash.is_some(),
                    provisioned_at: r.provisioned_at,
                    carry,
                    quota_bytes: r.quota_bytes.map(|q| q.max(0) as u64),
                    aliases,
                    aliases_at: r.aliases_at,
                    temporary: r.temporary_secret.is_some(),
                    temporary_exported_at: r.temporary_exported_at,
                });
            }
        }
        Ok(out)
    }

    async fn set_provision_backend_impl(
        &self,
        batch: &str,
        kind: &str,
        config: &SecretString,
        described: &str,
    ) -> Result<(), StoreError> {
        let sealed = self
            .sealing_key()?
            .seal(config, &format!("provision-backend/{batch}"));
        provision_backend::Entity::insert(provision_backend::ActiveModel {
            batch: Set(batch.to_string()),
            kind: Set(kind.to_string()),
            config: Set(sealed),
            described: Set(described.to_string()),
            updated_at: Set(crate::domains::now()),
        })
        .on_conflict(
            OnConflict::column(provision_backend::Column::Batch)
                .update_columns([
                    provision_backend::Column::Kind,
                    provision_backend::Column::Config,
                    provision_backend::Column::Described,
                    provision_backend::Column::UpdatedAt,
                ])
                .to_owned(),
        )
        .exec_without_returning(&self.db)
        .await
        .map_err(self.query_err("recording a batch's provisioning backend"))?;
        Ok(())
    }

    async fn provision_backend_impl(
        &self,
        batch: &str,
    ) -> Result<Option<(String, SecretString)>, StoreError> {
        let Some(row) = provision_backend::Entity::find_by_id(batch.to_string())
            .one(&self.db)
            .await
            .map_err(self.query_err("reading a batch's provisioning backend"))?
        else {
            return Ok(None);
        };
        let config = self.open_sealed(&row.config, &format!("provision-backend/{batch}"))?;
        Ok(Some((row.kind, config)))
    }

    async fn set_temporary_password_impl(
        &self,
        mailbox_id: Uuid,
        password: &SecretString,
    ) -> Result<(), StoreError> {
        let key = self.sealing_key()?;
        let migration_id = mailbox::Entity::find_by_id(mailbox_id)
            .one(&self.db)
            .await
            .map_err(self.query_err("reading a mailbox"))?
            .ok_or_else(|| StoreError::NoMailbox {
                place: self.place.clone(),
                id: mailbox_id,
            })?
            .migration_id;
        let tx = self
            .db
            .begin()
            .await
            .map_err(self.query_err("starting a transaction"))?;
        let mut row = empty(mailbox_id);
        row.temporary_secret = Set(Some(
            key.seal(password, &format!("provision/{mailbox_id}/temporary")),
        ));
        provision_mailbox::Entity::insert(row)
            .on_conflict(
                OnConflict::column(provision_mailbox::Column::MailboxId)
                    .update_columns([provision_mailbox::Column::TemporarySecret])
                    .to_owned(),
            )
            .exec_without_returning(&tx)
            .await
            .map_err(self.query_err("sealing a temporary password"))?;
        // The copy logs in to the new server with what the new mailbox really has.
        mailbox::Entity::update_many()
            .col_expr(
                mailbox::Column::DestSecret,
                Expr::value(key.seal(
                    password,
                    &crate::secrets::mailbox_binding(migration_id, "dest"),
                )),
            )
            .filter(mailbox::Column::Id.eq(mailbox_id))
            .exec(&tx)
            .await
            .map_err(self.query_err("setting a mailbox's destination password"))?;
        tx.commit()
            .await
            .map_err(self.query_err("committing a temporary password"))
    }

    async fn temporary_password_impl(
        &self,
        mailbox: Uuid,
    ) -> Result<Option<SecretString>, StoreError> {
        match self
            .provision_row(mailbox)
            .await?
            .and_then(|r| r.temporary_secret)
        {
            Some(sealed) => Ok(Some(
                self.open_sealed(&sealed, &format!("provision/{mailbox}/temporary"))?,
            )),
            None => Ok(None),
        }
    }

    async fn record_provisioned_impl(
        &self,
        mailbox: Uuid,
        carry: PasswordCarry,
        quota_bytes: u64,
        at: i64,
    ) -> Result<(), StoreError> {
        let mut row = empty(mailbox);
        row.provisioned_at = Set(Some(at));
        row.password_carry = Set(Some(carry.as_str().to_string()));
        row.quota_bytes = Set(Some(i64::try_from(quota_bytes).unwrap_or(i64::MAX)));
        self.upsert_provision(
            row,
            &[
                provision_mailbox::Column::ProvisionedAt,
                provision_mailbox::Column::PasswordCarry,
                provision_mailbox::Column::QuotaBytes,
            ],
            "recording a provisioned mailbox",
        )
        .await
    }

    async fn record_aliases_impl(
        &self,
        batch: &str,
        entries: &[AliasEntry],
        per_mailbox: &BTreeMap<Uuid, Vec<String>>,
        at: i64,
    ) -> Result<(), StoreError> {
        for e in entries {
            let goto: Vec<String> = e.goto().into_iter().collect();
            let goto = serde_json::to_string(&goto)
                .map_err(|e| self.corrupt(format!("alias targets: {e}")))?;
            provision_alias::Entity::insert(provision_alias::ActiveModel {
                batch: Set(batch.to_string()),
                address: Set(e.address.to_string()),
                goto: Set(goto),
                kind: Set(if e.is_forward() { "forward" } else { "alias" }.into()),
                set_at: Set(at),
            })
            .on_conflict(
                OnConflict::columns([
                    provision_alias::Column::Batch,
                    provision_alias::Column::Address,
                ])
                .update_columns([
                    provision_alias::Column::Goto,
                    provision_alias::Column::Kind,
                    provision_alias::Column::SetAt,
                ])
                .to_owned(),
            )
            .exec_without_returning(&self.db)
            .await
            .map_err(self.query_err("recording an alias"))?;
        }
        for (id, addresses) in per_mailbox {
            let mut row = empty(*id);
            row.aliases = Set(Some(
                serde_json::to_string(addresses)
                    .map_err(|e| self.corrupt(format!("aliases: {e}")))?,
            ));
            row.aliases_at = Set(Some(at));
            self.upsert_provision(
                row,
                &[
                    provision_mailbox::Column::Aliases,
                    provision_mailbox::Column::AliasesAt,
                ],
                "recording a mailbox's aliases",
            )
            .await?;
        }
        Ok(())
    }

    async fn recorded_aliases_impl(
        &self,
        batch: &str,
    ) -> Result<BTreeMap<String, BTreeSet<String>>, StoreError> {
        let rows = provision_alias::Entity::find()
            .filter(provision_alias::Column::Batch.eq(batch))
            .all(&self.db)
            .await
            .map_err(self.query_err("reading a batch's aliases"))?;
        rows.into_iter()
            .map(|r| {
                let goto: BTreeSet<String> = serde_json::from_str(&r.goto)
                    .map_err(|_| self.corrupt(format!("targets of alias {}", r.address)))?;
                Ok((r.address, goto))
            })
            .collect()
    }

    async fn mark_exported_impl(&self, mailboxes: &[Uuid], at: i64) -> Result<(), StoreError> {
        for chunk in mailboxes.chunks(500) {
            provision_mailbox::Entity::update_many()
                .col_expr(
                    provision_mailbox::Column::TemporaryExportedAt,
                    Expr::value(Some(at)),
                )
                .filter(provision_mailbox::Column::MailboxId.is_in(chunk.iter().copied()))
                .exec(&self.db)
                .await
                .map_err(self.query_err("recording exported temporary passwords"))?;
        }
        Ok(())
    }
}

#[async_trait]
impl ProvisionStore for SeaStore {
    async fn set_imported_hash(
        &self,
        mailbox: Uuid,
        hash: Option<&PasswordHash>,
    ) -> mailshift_core::Result<()> {
        Ok(self.set_imported_hash_impl(mailbox, hash).await?)
    }

    async fn imported_hash(&self, mailbox: Uuid) -> mailshift_core::Result<Option<PasswordHash>> {
        Ok(self.imported_hash_impl(mailbox).await?)
    }

    async fn provision_records(&self, batch: &str) -> mailshift_core::Result<Vec<ProvisionRecord>> {
        Ok(self.provision_records_impl(batch).await?)
    }

    async fn set_provision_backend(
        &self,
        batch: &str,
        kind: &str,
        config: &SecretString,
        described: &str,
    ) -> mailshift_core::Result<()> {
        Ok(self
            .set_provision_backend_impl(batch, kind, config, described)
            .await?)
    }

    async fn provision_backend(
        &self,
        batch: &str,
    ) -> mailshift_core::Result<Option<(String, SecretString)>> {
        Ok(self.provision_backend_impl(batch).await?)
    }

    async fn set_temporary_password(
        &self,
        mailbox: Uuid,
        password: &SecretString,
    ) -> mailshift_core::Result<()> {
        Ok(self.set_temporary_password_impl(mailbox, password).await?)
    }

    async fn temporary_password(
        &self,
        mailbox: Uuid,
    ) -> mailshift_core::Result<Option<SecretString>> {
        Ok(self.temporary_password_impl(mailbox).await?)
    }

    async fn record_provisioned(
        &self,
        mailbox: Uuid,
        carry: PasswordCarry,
        quota_bytes: u64,
        at: i64,
    ) -> mailshift_core::Result<()> {
        Ok(self
            .record_provisioned_impl(mailbox, carry, quota_bytes, at)
            .await?)
    }

    async fn record_aliases(
        &self,
        batch: &str,
        entries: &[AliasEntry],
        per_mailbox: &BTreeMap<Uuid, Vec<String>>,
        at: i64,
    ) -> mailshift_core::Result<()> {
        Ok(self
            .record_aliases_impl(batch, entries, per_mailbox, at)
            .await?)
    }

    async fn recorded_aliases(
        &self,
        batch: &str,
    ) -> mailshift_core::Result<BTreeMap<String, BTreeSet<String>>> {
        Ok(self.recorded_aliases_impl(batch).await?)
    }

    async fn mark_exported(&self, mailboxes: &[Uuid], at: i64) -> mailshift_core::Result<()> {
        Ok(self.mark_exported_impl(mailboxes, at).await?)
    }
}
