//! [`DomainStore`] on the same database as the fleet: one row per domain cutover.

use crate::entity::domain;
use crate::error::StoreError;
use crate::store::SeaStore;
use async_trait::async_trait;
use mailshift_core::cutover::{DomainConfig, DomainRecord, Phase};
use mailshift_core::ports::DomainStore;
use sea_orm::sea_query::OnConflict;
use sea_orm::{ActiveValue::Set, EntityTrait, QueryOrder};

/// Unix seconds (the unit of the domain and batch tables' times).
pub(crate) fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

impl SeaStore {
    fn to_domain(&self, m: domain::Model) -> Result<DomainRecord, StoreError> {
        let corrupt = |what: &str| StoreError::Corrupt {
            place: self.place.clone(),
            what: format!("{what} of domain {}", m.name),
        };
        Ok(DomainRecord {
            config: serde_json::from_str(&m.config).map_err(|_| corrupt("configuration"))?,
            phase: Phase::parse(&m.phase).ok_or_else(|| corrupt("phase"))?,
            phase_since: m.phase_since,
            switched_at: m.switched_at,
            final_pass_at: m.final_pass_at,
            plan: m.plan,
            report: m.report,
        })
    }

    async fn put_domain_impl(
        &self,
        c: &DomainConfig,
        plan: Option<&str>,
    ) -> Result<(), StoreError> {
        let config = serde_json::to_string(c).map_err(|_| StoreError::Corrupt {
            place: self.place.clone(),
            what: format!("configuration of domain {}", c.name),
        })?;
        domain::Entity::insert(domain::ActiveModel {
            name: Set(c.name.clone()),
            config: Set(config),
            phase: Set(Phase::Prepare.as_str().to_string()),
            phase_since: Set(now()),
            switched_at: Set(None),
            final_pass_at: Set(None),
            plan: Set(plan.map(str::to_string)),
            report: Set(None),
        })
        .on_conflict(
            OnConflict::column(domain::Column::Name)
                .update_columns([domain::Column::Config, domain::Column::Plan])
                .to_owned(),
        )
        .exec_without_returning(&self.db)
        .await
        .map_err(self.query_err("recording a domain cutover"))?;
        Ok(())
    }

    async fn final_pass_impl(&self, name: &str, at: i64) -> Result<(), StoreError> {
        domain::Entity::update(domain::ActiveModel {
            name: Set(name.to_string()),
            final_pass_at: Set(Some(at)),
            ..Default::default()
        })
        .exec(&self.db)
        .await
        .map_err(self.query_err("recording a domain's final pass"))?;
        Ok(())
    }

    async fn domains_impl(&self) -> Result<Vec<DomainRecord>, StoreError> {
        domain::Entity::find()
            .order_by_asc(domain::Column::Name)
            .all(&self.db)
            .await
            .map_err(self.query_err("listing domains"))?
            .into_iter()
            .map(|m| self.to_domain(m))
            .collect()
    }

    async fn set_phase_impl(
        &self,
        name: &str,
        phase: Phase,
        now: i64,
        switched_at: Option<i64>,
        report: Option<&str>,
    ) -> Result<(), StoreError> {
        let mut row = domain::ActiveModel {
            name: Set(name.to_string()),
            phase: Set(phase.as_str().to_string()),
            phase_since: Set(now),
            ..Default::default()
        };
        if let Some(t) = switched_at {
            row.switched_at = Set(Some(t));
        }
        if let Some(r) = report {
            row.report = Set(Some(r.to_string()));
        }
        domain::Entity::update(row)
            .exec(&self.db)
            .await
            .map_err(self.query_err("recording a domain's phase"))?;
        Ok(())
    }
}

#[async_trait]
impl DomainStore for SeaStore {
    async fn put_domain(
        &self,
        config: &DomainConfig,
        plan: Option<&str>,
    ) -> mailshift_core::Result<()> {
        Ok(self.put_domain_impl(config, plan).await?)
    }

    async fn mark_final_pass(&self, name: &str, at: i64) -> mailshift_core::Result<()> {
        Ok(self.final_pass_impl(name, at).await?)
    }

    async fn domains(&self) -> mailshift_core::Result<Vec<DomainRecord>> {
        Ok(self.domains_impl().await?)
    }

    async fn set_domain_phase(
        &self,
        name: &str,
        phase: Phase,
        now: i64,
        switched_at: Option<i64>,
        report: Option<&str>,
    ) -> mailshift_core::Result<()> {
        Ok(self
            .set_phase_impl(name, phase, now, switched_at, report)
            .await?)
    }
}
