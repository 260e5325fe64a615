//! A PostfixAdmin database for tests: the `domain`, `mailbox` and `alias` tables as
//! PostfixAdmin 3.x creates them on PostgreSQL (the columns a mail stack reads, with
//! PostfixAdmin's types, defaults and foreign keys), in a throwaway database, and
//! readers that look at the rows independently of mailshift (through `psql`).
//!
//! [`crate::dovecot::DovecotOptions::pgsql_database`] makes a Dovecot whose users are
//! this `mailbox` table.

use crate::fleet::{Db, psql};
use std::collections::BTreeMap;

/// PostfixAdmin's tables (pgsql, as `upgrade.php` leaves them), the parts that matter.
pub const SCHEMA: &str = "
CREATE TABLE domain (
    domain varchar(255) NOT NULL PRIMARY KEY,
    description varchar(255) NOT NULL DEFAULT '',
    aliases integer NOT NULL DEFAULT 0,
    mailboxes integer NOT NULL DEFAULT 0,
    maxquota bigint NOT NULL DEFAULT 0,
    quota bigint NOT NULL DEFAULT 0,
    transport varchar(255) DEFAULT NULL,
    backupmx boolean NOT NULL DEFAULT false,
    password_expiry integer DEFAULT 0,
    created timestamp with time zone DEFAULT '2000-01-01',
    modified timestamp with time zone DEFAULT '2000-01-01',
    active boolean NOT NULL DEFAULT true
);
CREATE TABLE mailbox (
    username varchar(255) NOT NULL PRIMARY KEY,
    password varchar(255) NOT NULL DEFAULT '',
    name varchar(255) NOT NULL DEFAULT '',
    maildir varchar(255) NOT NULL DEFAULT '',
    quota bigint NOT NULL DEFAULT 0,
    local_part varchar(255) NOT NULL,
    domain varchar(255) NOT NULL REFERENCES domain,
    created timestamp with time zone DEFAULT '2000-01-01',
    modified timestamp with time zone DEFAULT '2000-01-01',
    active boolean NOT NULL DEFAULT true,
    phone varchar(30) NOT NULL DEFAULT '',
    email_other varchar(255) NOT NULL DEFAULT '',
    token varchar(255) NOT NULL DEFAULT '',
    token_validity timestamp with time zone DEFAULT '2000-01-01',
    password_expiry timestamp with time zone DEFAULT '2000-01-01'
);
CREATE INDEX mailbox_username_active ON mailbox(username, active);
CREATE TABLE alias (
    address varchar(255) NOT NULL PRIMARY KEY,
    goto text NOT NULL,
    domain varchar(255) NOT NULL REFERENCES domain,
    created timestamp with time zone DEFAULT '2000-01-01',
    modified timestamp with time zone DEFAULT '2000-01-01',
    active boolean NOT NULL DEFAULT true
);
CREATE INDEX alias_address_active ON alias(address, active);
";

/// A fresh database holding PostfixAdmin's empty tables (dropped with the value).
pub fn create() -> Db {
    let db = Db::create();
    psql(&db.name, SCHEMA);
    db
}

/// One `mailbox` row as the mail stack reads it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MailboxRow {
    pub username: String,
    pub password: String,
    pub maildir: String,
    pub quota: i64,
    pub local_part: String,
    pub domain: String,
    pub active: bool,
}

/// Every `mailbox` row, by username.
pub fn mailboxes(db: &str) -> BTreeMap<String, MailboxRow> {
    let out = psql(
        db,
        "SELECT username, password, maildir, quota, local_part, domain, active \
         FROM mailbox ORDER BY username",
    );
    out.lines()
        .filter(|l| !l.is_empty())
        .map(|l| {
            let f: Vec<&str> = l.split('|').collect();
            let row = MailboxRow {
                username: f[0].to_string(),
                password: f[1].to_string(),
                maildir: f[2].to_string(),
                quota: f[3].parse().unwrap(),
                local_part: f[4].to_string(),
                domain: f[5].to_string(),
                active: f[6] == "t",
            };
            (row.username.clone(), row)
        })
        .collect()
}

/// Every `alias` row: address -> its `goto` targets, sorted.
pub fn aliases(db: &str) -> BTreeMap<String, Vec<String>> {
    psql(
        db,
        "SELECT address, goto FROM alias WHERE active ORDER BY address",
    )
    .lines()
    .filter(|l| !l.is_empty())
    .map(|l| {
        let (address, goto) = l.split_once('|').unwrap();
        let mut targets: Vec<String> = goto
            .split(',')
            .map(|t| t.trim().to_string())
            .filter(|t| !t.is_empty())
            .collect();
        targets.sort();
        (address.to_string(), targets)
    })
    .collect()
}

/// Every `domain` row's name.
pub fn domains(db: &str) -> Vec<String> {
    psql(db, "SELECT domain FROM domain ORDER BY domain")
        .lines()
        .filter(|l| !l.is_empty())
        .map(str::to_string)
        .collect()
}

/// A digest of all three tables (rows and timestamps), to prove nothing changed.
pub fn fingerprint(db: &str) -> String {
    psql(
        db,
        "SELECT md5(coalesce((SELECT string_agg(t::text, ';' ORDER BY t::text) FROM domain t), '') \
         || coalesce((SELECT string_agg(t::text, ';' ORDER BY t::text) FROM mailbox t), '') \
         || coalesce((SELECT string_agg(t::text, ';' ORDER BY t::text) FROM alias t), ''))",
    )
    .trim()
    .to_string()
}
