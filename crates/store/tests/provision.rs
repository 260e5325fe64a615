//! `ProvisionStore` on SQLite and PostgreSQL: one scenario run on both backends
//! (PostgreSQL as in `contract.rs`: a fresh database per test through
//! `MAILSHIFT_TEST_POSTGRES`, skipped with `MAILSHIFT_TEST_SKIP_POSTGRES=1`).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use mailshift_core::aliases::{AliasEntry, AliasKind};
use mailshift_core::endpoint::Endpoint;
use mailshift_core::ports::{MailboxCredentials, MailboxOptions, MailboxStore};
use mailshift_core::provision::{Address, PasswordCarry, PasswordHash, ProvisionStore};
use mailshift_store::{SeaStore, SecretKey};
use sea_orm::{ConnectionTrait, DbBackend, Statement};
use secrecy::{ExposeSecret, SecretString};
use std::collections::BTreeMap;

const HASH: &str = "{SHA512-CRYPT}$6$37iK/C/QOI.sOIBV$5y50eSP84mBy54JWznjJ30X2VMmksaJ4d8uU3Fo6kia5l.cVSbOKI/40QfSBpNcxMpI1cmVaGuhesqvc4GBOH0";

async fn scenario(store: SeaStore) {
    let store = store.with_key(SecretKey::from_base64(&SecretKey::generate()).unwrap());
    let src: Endpoint = "imaps://ann@old.example".parse().unwrap();
    let dst: Endpoint = "imaps://ann@new.example".parse().unwrap();
    let creds = MailboxCredentials {
        source_password: SecretString::from("old-Pw-1"),
        dest_password: SecretString::from("new-Pw-1"),
    };
    let m = store
        .add_mailbox(&src, &dst, Some("acme"), &MailboxOptions::default(), &creds)
        .await
        .unwrap();

    // Nothing recorded yet; forgetting nothing creates no row.
    store.set_imported_hash(m.id, None).await.unwrap();
    assert!(store.provision_records("acme").await.unwrap().is_empty());

    let hash = PasswordHash::parse(HASH).unwrap();
    store.set_imported_hash(m.id, Some(&hash)).await.unwrap();
    assert_eq!(store.imported_hash(m.id).await.unwrap(), Some(hash));

    store
        .set_provision_backend(
            "acme",
            "sql",
            &SecretString::from(r#"{"url":"postgres://u:db-Secret@h/d"}"#),
            "sql postgres://u@h/d",
        )
        .await
        .unwrap();
    let (kind, config) = store.provision_backend("acme").await.unwrap().unwrap();
    assert_eq!(kind, "sql");
    assert!(config.expose_secret().contains("db-Secret"));

    store
        .set_temporary_password(m.id, &SecretString::from("Tmp-Pw-9"))
        .await
        .unwrap();
    let (_, creds) = store.mailbox_credentials(m.migration_id).await.unwrap();
    assert_eq!(creds.dest_password.expose_secret(), "Tmp-Pw-9");
    assert_eq!(
        store
            .temporary_password(m.id)
            .await
            .unwrap()
            .unwrap()
            .expose_secret(),
        "Tmp-Pw-9"
    );

    store
        .record_provisioned(m.id, PasswordCarry::Temporary, 3 << 30, 1000)
        .await
        .unwrap();
    let entry = AliasEntry {
        address: Address::parse("sales@acme.example").unwrap(),
        targets: vec!["ann@acme.example".into()],
        kind: AliasKind::Alias,
        lines: vec![2],
    };
    let per: BTreeMap<_, _> = [(m.id, vec!["sales@acme.example".to_string()])].into();
    store
        .record_aliases("acme", std::slice::from_ref(&entry), &per, 1001)
        .await
        .unwrap();
    let recorded = store.recorded_aliases("acme").await.unwrap();
    assert_eq!(recorded["sales@acme.example"], entry.goto());
    store.mark_exported(&[m.id], 1002).await.unwrap();

    let records = store.provision_records("acme").await.unwrap();
    assert_eq!(records.len(), 1);
    let r = &records[0];
    assert!(r.imported_hash && r.temporary);
    assert_eq!(r.provisioned_at, Some(1000));
    assert_eq!(r.carry, Some(PasswordCarry::Temporary));
    assert_eq!(r.quota_bytes, Some(3 << 30));
    assert_eq!(r.aliases, ["sales@acme.example"]);
    assert_eq!(r.aliases_at, Some(1001));
    assert_eq!(r.temporary_exported_at, Some(1002));

    // Forgetting the hash keeps the rest.
    store.set_imported_hash(m.id, None).await.unwrap();
    assert_eq!(store.imported_hash(m.id).await.unwrap(), None);
    assert_eq!(
        store.provision_records("acme").await.unwrap()[0].provisioned_at,
        Some(1000)
    );

    // Nothing in clear at rest.
    let backend = store.connection().get_database_backend();
    let dump = store
        .connection()
        .query_all_raw(Statement::from_string(
            backend,
            "SELECT * FROM provision_mailbox".to_string(),
        ))
        .await
        .unwrap();
    let text = format!("{dump:?}");
    let config_rows = store
        .connection()
        .query_all_raw(Statement::from_string(
            backend,
            "SELECT config FROM provision_backend".to_string(),
        ))
        .await
        .unwrap();
    let text = text + &format!("{config_rows:?}");
    for secret in ["Tmp-Pw-9", "$6$37iK", "db-Secret"] {
        assert!(!text.contains(secret), "{secret} in clear at rest");
    }
    assert!(matches!(backend, DbBackend::Sqlite | DbBackend::Postgres));
}

#[tokio::test]
async fn sqlite() {
    let dir = tempfile::tempdir().unwrap();
    let store = SeaStore::open_sqlite(&dir.path().join("m.db"))
        .await
        .unwrap();
    scenario(store).await;
}

#[tokio::test]
async fn postgres() {
    if std::env::var("MAILSHIFT_TEST_SKIP_POSTGRES").is_ok_and(|v| v == "1") {
        return;
    }
    let base = std::env::var("MAILSHIFT_TEST_POSTGRES")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432".to_string());
    let base = base.trim_end_matches('/').to_string();
    let admin = SeaStore::connect(&format!("{base}/postgres"), false)
        .await
        .unwrap();
    let name = format!("mailshift_test_{}", uuid::Uuid::new_v4().simple());
    admin
        .connection()
        .execute_unprepared(&format!("CREATE DATABASE {name}"))
        .await
        .unwrap();
    let store = SeaStore::connect(&format!("{base}/{name}"), true)
        .await
        .unwrap();
    let outcome = tokio::spawn(scenario(store.clone())).await;
    let _ = store.connection().clone().close().await;
    let _ = admin
        .connection()
        .execute_unprepared(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
        .await;
    if let Err(e) = outcome {
        std::panic::resume_unwind(e.into_panic());
    }
}
