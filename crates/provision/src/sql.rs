//! The `sql` backend: the Postfix + Dovecot layout most self-hosted and ISP stacks use,
//! PostfixAdmin's `domain`, `mailbox` and `alias` tables in PostgreSQL (or an in-house
//! schema mapped onto them, [`crate::config::SqlConfig`]).
//!
//! A new mailbox is one `mailbox` row (password with its `{SCHEME}` prefix, as Dovecot's
//! passdb reads it; quota in bytes; maildir `domain/local_part/`) plus, as PostfixAdmin
//! does, the alias `address -> address`; both in one transaction. An alias or forward is
//! one `alias` row whose `goto` lists the targets, comma-separated; a forward that keeps
//! a copy lists the mailbox itself too (PostfixAdmin's convention). Every value is a
//! bound parameter; table and column names come from the checked configuration and are
//! quoted by the query builder.

use crate::config::{ActiveValue, SqlConfig, describe_url};
use crate::error::{ProvisionError, scrub};
use crate::hash;
use async_trait::async_trait;
use mailshift_core::aliases::AliasEntry;
use mailshift_core::provision::{
    Existing, Lookup, MailboxSpec, NewPassword, PasswordSupport, Provisioner,
};
use sea_orm::sea_query::{Alias, Expr, ExprTrait, Func, Query, TableRef};
use sea_orm::{
    ConnectOptions, ConnectionTrait, Database, DatabaseConnection, DbErr, TransactionTrait,
};
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

/// Rows asked for per `IN (...)` query.
const CHUNK: usize = 500;

pub struct SqlProvisioner {
    db: DatabaseConnection,
    config: SqlConfig,
    described: String,
    /// The URL and its password, scrubbed from driver messages.
    url: String,
}

fn table(name: &str) -> TableRef {
    match name.split_once('.') {
        Some((schema, t)) => (Alias::new(schema), Alias::new(t)).into(),
        None => Alias::new(name).into(),
    }
}

fn col(name: &str) -> Alias {
    Alias::new(name)
}

fn lower(column: &str) -> Expr {
    Expr::from(Func::lower(Expr::col(col(column))))
}

impl SqlProvisioner {
    /// Connects and checks that every configured table and column exists.
    pub async fn connect(config: SqlConfig) -> Result<SqlProvisioner, ProvisionError> {
        let described = format!("sql {}", describe_url(&config.url));
        let mut opts = ConnectOptions::new(config.url.clone());
        opts.sqlx_logging(false)
            .max_connections(2)
            .min_connections(0)
            .connect_timeout(Duration::from_secs(10))
            .acquire_timeout(Duration::from_secs(30));
        let db = tokio::time::timeout(Duration::from_secs(15), Database::connect(opts))
            .await
            .map_err(|_| ProvisionError::Connect {
                backend: described.clone(),
                detail: "no answer within 15 s".into(),
            })?
            .map_err(|e| ProvisionError::Connect {
                backend: described.clone(),
                detail: scrub_url(&e.to_string(), &config.url),
            })?;
        let p = SqlProvisioner {
            url: config.url.clone(),
            db,
            config,
            described,
        };
        p.check_schema().await?;
        Ok(p)
    }

    fn err(&self, op: impl Into<String>, e: DbErr, secrets: &[&str]) -> ProvisionError {
        let detail = scrub(&scrub_url(&e.to_string(), &self.url), secrets);
        ProvisionError::Failed {
            backend: self.described.clone(),
            op: op.into(),
            detail,
        }
    }

    /// `SELECT every configured column FROM each table LIMIT 0`: a wrong name fails now,
    /// with the database's own words, before anything is written.
    async fn check_schema(&self) -> Result<(), ProvisionError> {
        let m = &self.config.mailbox;
        let a = &self.config.alias;
        let d = &self.config.domain;
        let mut tables = vec![(
            m.table.as_str(),
            vec![
                &m.username,
                &m.password,
                &m.name,
                &m.maildir,
                &m.quota,
                &m.local_part,
                &m.domain,
                &m.created,
                &m.modified,
                &m.active,
            ],
        )];
        if !a.table.is_empty() {
            tables.push((
                a.table.as_str(),
                vec![
                    &a.address,
                    &a.goto,
                    &a.domain,
                    &a.created,
                    &a.modified,
                    &a.active,
                ],
            ));
        }
        if !d.table.is_empty() {
            tables.push((
                d.table.as_str(),
                vec![
                    &d.domain,
                    &d.description,
                    &d.created,
                    &d.modified,
                    &d.active,
                ],
            ));
        }
        for (t, cols) in tables {
            let cols: Vec<&String> = cols.into_iter().filter(|c| !c.is_empty()).collect();
            let mut q = Query::select();
            q.from(table(t)).limit(0);
            for c in &cols {
                q.column(col(c));
            }
            self.db.query_all(&q).await.map_err(|e| {
                self.err(
                    format!(
                        "checking table {t} (columns {}); set the names in the configuration \
                         (docs/provisioning.md)",
                        cols.iter()
                            .map(|c| c.as_str())
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                    e,
                    &[],
                )
            })?;
        }
        Ok(())
    }

    async fn strings(
        &self,
        t: &str,
        key: &str,
        value: Option<&str>,
        wanted: &[String],
        op: &str,
    ) -> Result<Vec<(String, String)>, ProvisionError> {
        let mut out = Vec::new();
        for chunk in wanted.chunks(CHUNK) {
            let mut q = Query::select();
            q.column(col(key))
                .from(table(t))
                .and_where(lower(key).is_in(chunk.iter().cloned()));
            if let Some(v) = value {
                q.column(col(v));
            }
            let rows = self
                .db
                .query_all(&q)
                .await
                .map_err(|e| self.err(op, e, &[]))?;
            for r in rows {
                let k: String = r.try_get_by_index(0).map_err(|e| self.err(op, e, &[]))?;
                let v: String = match value {
                    Some(_) => r
                        .try_get_by_index::<Option<String>>(1)
                        .map_err(|e| self.err(op, e, &[]))?
                        .unwrap_or_default(),
                    None => String::new(),
                };
                out.push((k.to_ascii_lowercase(), v));
            }
        }
        Ok(out)
    }

    fn active(&self) -> Expr {
        match &self.config.active_value {
            ActiveValue::Bool(b) => Expr::val(*b),
            ActiveValue::Int(i) => Expr::val(*i),
        }
    }

    /// Columns and values of an insert: empty column names are left out.
    fn insert(
        &self,
        t: &str,
        pairs: Vec<(&str, Expr)>,
    ) -> Result<sea_orm::sea_query::InsertStatement, ProvisionError> {
        let pairs: Vec<(&str, Expr)> = pairs.into_iter().filter(|(c, _)| !c.is_empty()).collect();
        let mut q = Query::insert();
        q.into_table(table(t))
            .columns(pairs.iter().map(|(c, _)| col(c)));
        q.values(pairs.into_iter().map(|(_, v)| v))
            .map_err(|e| ProvisionError::Failed {
                backend: self.described.clone(),
                op: format!("building an insert into {t}"),
                detail: e.to_string(),
            })?;
        Ok(q)
    }

    fn goto_text(goto: &BTreeSet<String>) -> String {
        goto.iter().cloned().collect::<Vec<_>>().join(",")
    }

    /// Inserts or updates one alias row inside `tx`.
    async fn put_alias<C: ConnectionTrait>(
        &self,
        tx: &C,
        address: &str,
        domain: &str,
        goto: &BTreeSet<String>,
        replace: bool,
    ) -> Result<(), ProvisionError> {
        let a = &self.config.alias;
        let op = format!("setting alias {address}");
        let mut q = Query::select();
        q.column(col(&a.address))
            .from(table(&a.table))
            .and_where(lower(&a.address).eq(address));
        let exists = !tx
            .query_all(&q)
            .await
            .map_err(|e| self.err(&op, e, &[]))?
            .is_empty();
        if exists && !replace {
            return Ok(());
        }
        if exists {
            let mut u = Query::update();
            u.table(table(&a.table))
                .value(col(&a.goto), Self::goto_text(goto))
                .and_where(lower(&a.address).eq(address));
            if !a.modified.is_empty() {
                u.value(col(&a.modified), Expr::current_timestamp());
            }
            tx.execute(&u).await.map_err(|e| self.err(&op, e, &[]))?;
        } else {
            let q = self.insert(
                &a.table,
                vec![
                    (&a.address, Expr::val(address)),
                    (&a.goto, Expr::val(Self::goto_text(goto))),
                    (&a.domain, Expr::val(domain)),
                    (&a.created, Expr::current_timestamp()),
                    (&a.modified, Expr::current_timestamp()),
                    (&a.active, self.active()),
                ],
            )?;
            tx.execute(&q).await.map_err(|e| self.err(&op, e, &[]))?;
        }
        Ok(())
    }
}

/// A driver message without the URL or its password.
fn scrub_url(text: &str, url: &str) -> String {
    let mut out = text.replace(url, &describe_url(url));
    if let Ok(u) = url::Url::parse(url)
        && let Some(pw) = u.password().filter(|p| !p.is_empty())
    {
        out = out.replace(pw, "***");
    }
    out
}

#[async_trait]
impl Provisioner for SqlProvisioner {
    fn describe(&self) -> String {
        self.described.clone()
    }

    /// Dovecot reads every scheme a carried hash may have.
    fn password_support(&self) -> PasswordSupport {
        PasswordSupport::any_hash()
    }

    async fn existing(&self, lookup: &Lookup) -> mailshift_core::Result<Option<Existing>> {
        let m = &self.config.mailbox;
        let a = &self.config.alias;
        let d = &self.config.domain;
        let mut e = Existing::default();
        for (k, _) in self
            .strings(
                &m.table,
                &m.username,
                None,
                &lookup.mailboxes,
                "listing mailboxes",
            )
            .await?
        {
            e.mailboxes.insert(k);
        }
        if !a.table.is_empty() {
            let mut aliases: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
            for (k, goto) in self
                .strings(
                    &a.table,
                    &a.address,
                    Some(&a.goto),
                    &lookup.aliases,
                    "listing aliases",
                )
                .await?
            {
                aliases.entry(k).or_default().extend(
                    goto.split([',', ' ', '\n'])
                        .map(|t| t.trim().to_ascii_lowercase())
                        .filter(|t| !t.is_empty()),
                );
            }
            e.aliases = aliases;
        }
        if !d.table.is_empty() {
            e.domains = Some(
                self.strings(
                    &d.table,
                    &d.domain,
                    None,
                    &lookup.domains,
                    "listing domains",
                )
                .await?
                .into_iter()
                .map(|(k, _)| k)
                .collect(),
            );
        }
        Ok(Some(e))
    }

    async fn create_domain(&self, domain: &str) -> mailshift_core::Result<()> {
        let d = &self.config.domain;
        if d.table.is_empty() {
            return Ok(());
        }
        let q = self.insert(
            &d.table,
            vec![
                (&d.domain, Expr::val(domain)),
                (&d.description, Expr::val("created by mailshift provision")),
                (&d.created, Expr::current_timestamp()),
                (&d.modified, Expr::current_timestamp()),
                (&d.active, self.active()),
            ],
        )?;
        self.db
            .execute(&q)
            .await
            .map_err(|e| self.err(format!("creating domain {domain}"), e, &[]))?;
        Ok(())
    }

    async fn create_mailbox(
        &self,
        spec: &MailboxSpec,
        password: &NewPassword,
    ) -> mailshift_core::Result<()> {
        let m = &self.config.mailbox;
        let address = spec.address.to_string();
        let op = format!("creating mailbox {address}");
        let stored = match password {
            NewPassword::Hash(h) => h.clone(),
            NewPassword::Plaintext(p) => {
                hash::crypt(self.config.password_scheme, p).map_err(|detail| {
                    ProvisionError::Failed {
                        backend: self.described.clone(),
                        op: op.clone(),
                        detail,
                    }
                })?
            }
        };
        let secrets = [stored.expose(), stored.value()];
        let maildir = self
            .config
            .maildir_template
            .replace("{domain}", &spec.address.domain)
            .replace("{local_part}", &spec.address.local)
            .replace("{address}", &address);
        let quota = i64::try_from(spec.quota_bytes.div_ceil(self.config.quota_unit.divisor()))
            .unwrap_or(i64::MAX);
        let q = self.insert(
            &m.table,
            vec![
                (&m.username, Expr::val(address.as_str())),
                (&m.password, Expr::val(stored.expose())),
                (&m.name, Expr::val("")),
                (&m.maildir, Expr::val(maildir)),
                (&m.quota, Expr::val(quota)),
                (&m.local_part, Expr::val(spec.address.local.as_str())),
                (&m.domain, Expr::val(spec.address.domain.as_str())),
                (&m.created, Expr::current_timestamp()),
                (&m.modified, Expr::current_timestamp()),
                (&m.active, self.active()),
            ],
        )?;
        let tx = self
            .db
            .begin()
            .await
            .map_err(|e| self.err(&op, e, &secrets))?;
        tx.execute(&q)
            .await
            .map_err(|e| self.err(&op, e, &secrets))?;
        let a = &self.config.alias;
        if !a.table.is_empty() && a.mailbox_self_alias {
            let own: BTreeSet<String> = [address.clone()].into();
            self.put_alias(&tx, &address, &spec.address.domain, &own, false)
                .await?;
        }
        tx.commit().await.map_err(|e| self.err(&op, e, &secrets))?;
        Ok(())
    }

    async fn set_alias(&self, entry: &AliasEntry) -> mailshift_core::Result<()> {
        if self.config.alias.table.is_empty() {
            return Err(ProvisionError::Failed {
                backend: self.described.clone(),
                op: format!("setting alias {}", entry.address),
                detail: "the configuration has no alias table (alias.table)".into(),
            }
            .into());
        }
        let address = entry.address.to_string();
        let op = format!("setting alias {address}");
        let tx = self.db.begin().await.map_err(|e| self.err(&op, e, &[]))?;
        self.put_alias(&tx, &address, &entry.address.domain, &entry.goto(), true)
            .await?;
        tx.commit().await.map_err(|e| self.err(&op, e, &[]))?;
        Ok(())
    }
}
