//! `mailshift token ...`: API tokens for `mailshift serve`. A token is printed once, at
//! creation; the database keeps only its SHA-256.

use crate::fleet::FleetDb;
use clap::{Args, Subcommand};
use std::process::ExitCode;

#[derive(Subcommand)]
pub enum TokenCommand {
    /// Create a token and print it (once: it is stored hashed and cannot be shown again)
    Create(Box<CreateArgs>),
    /// List the tokens (names and use, never the tokens)
    List(Box<ListArgs>),
    /// Revoke a token by name
    Revoke(Box<RevokeArgs>),
}

#[derive(Args)]
pub struct CreateArgs {
    #[command(flatten)]
    db: FleetDb,
    /// Who or what uses it, e.g. "alice" or "grafana"
    #[arg(long, value_name = "NAME")]
    name: String,
    /// May look at everything but change nothing (no import, start, pause, retry)
    #[arg(long)]
    read_only: bool,
    /// Refused after this long, e.g. 30d, 12h (default: until revoked)
    #[arg(long, value_name = "DURATION", value_parser = crate::migrate::parse_duration)]
    expires_in: Option<std::time::Duration>,
}

#[derive(Args)]
pub struct ListArgs {
    #[command(flatten)]
    db: FleetDb,
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
pub struct RevokeArgs {
    #[command(flatten)]
    db: FleetDb,
    /// The token's name
    name: String,
}

pub async fn token(cmd: TokenCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        TokenCommand::Create(a) => {
            anyhow::ensure!(!a.name.trim().is_empty(), "--name must not be empty");
            let store = a.db.open(false).await?;
            let expires_at = a
                .expires_in
                .map(|d| mailshift_engine::batches::now() + d.as_secs() as i64);
            let t = store
                .create_token(a.name.trim(), a.read_only, expires_at)
                .await?;
            eprintln!(
                "token '{}'{}{} created; it is shown only now, keep it somewhere safe:",
                a.name.trim(),
                if a.read_only { " (read-only)" } else { "" },
                expires_at
                    .map(|e| format!(", valid until {}", mailshift_engine::batches::stamp(e)))
                    .unwrap_or_default()
            );
            println!("{t}");
            Ok(ExitCode::SUCCESS)
        }
        TokenCommand::List(a) => {
            let store = a.db.open(false).await?;
            let tokens = store.tokens().await?;
            if a.json {
                println!("{}", serde_json::to_string_pretty(&tokens)?);
            } else {
                for t in &tokens {
                    println!(
                        "{:<30} {:<10} created {}  last used {}  expires {}",
                        crate::output::terminal_safe(&t.name),
                        if t.read_only { "read-only" } else { "full" },
                        mailshift_engine::batches::stamp(t.created_at),
                        t.last_used_at
                            .map(mailshift_engine::batches::stamp)
                            .unwrap_or_else(|| "never".into()),
                        t.expires_at
                            .map(mailshift_engine::batches::stamp)
                            .unwrap_or_else(|| "never".into())
                    );
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        TokenCommand::Revoke(a) => {
            let store = a.db.open(false).await?;
            if store.revoke_token(&a.name).await? {
                eprintln!("token '{}' revoked", a.name);
                Ok(ExitCode::SUCCESS)
            } else {
                anyhow::bail!("no token named '{}' (see mailshift token list)", a.name)
            }
        }
    }
}
