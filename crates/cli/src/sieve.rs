//! `migrate --sieve`: the users' filters and vacation replies (Sieve scripts), copied over
//! ManageSieve after the mail, with the same accounts and credentials as IMAP. What was
//! put where is kept beside the state file (`STATE.sieve.json`, 0600) so a script changed
//! on the old server later replaces mailshift's own copy instead of going beside it.

use anyhow::Context;
use mailshift_core::sieve::{CopyRecord, SieveEndpoint};
use mailshift_engine::sieve::{ActivationOutcome, ScriptResult, SieveReport, copy_scripts};
use mailshift_imap::Auth;
use mailshift_imap::{ImapConnector, ServerConfig};
use mailshift_sieve::{SieveAuth, SieveConfig};
use std::io::{Read, Seek, Write};
use std::path::{Path, PathBuf};

/// Where the record of a state file's Sieve copies lives.
fn record_path(state: &Path) -> PathBuf {
    let mut p = state.as_os_str().to_owned();
    p.push(".sieve.json");
    PathBuf::from(p)
}

async fn config(
    imap: &ServerConfig,
    over: Option<&str>,
    side: mailshift_sieve::Side,
    flag: &str,
) -> anyhow::Result<SieveConfig> {
    let endpoint = match over {
        Some(url) => url
            .parse::<SieveEndpoint>()
            .map_err(|e| anyhow::anyhow!("{flag}: {}", e.message))?,
        None => SieveEndpoint::beside(&imap.endpoint),
    };
    let auth = match &imap.auth {
        Auth::Password(p) => SieveAuth::Password(p.clone()),
        Auth::OAuth2(tokens) => SieveAuth::Bearer(
            tokens
                .token(&endpoint.to_string())
                .await
                .map_err(|e| anyhow::anyhow!("{e}"))?,
        ),
    };
    Ok(SieveConfig {
        endpoint,
        auth,
        side,
        allow_plaintext: imap.allow_plaintext,
        ca_file: imap.ca_file.clone(),
        timeout: imap.timeout,
    })
}

/// Copies the scripts and records what was put where. `Err` when a server could not be
/// reached or logged in to; refused scripts are in the report.
pub(crate) async fn copy(
    connector: &ImapConnector,
    from: Option<&str>,
    to: Option<&str>,
    state: &Path,
) -> anyhow::Result<SieveReport> {
    let src_cfg = config(
        &connector.source,
        from,
        mailshift_sieve::Side::Source,
        "--from-sieve",
    )
    .await?;
    let dst_cfg = config(
        &connector.target,
        to,
        mailshift_sieve::Side::Destination,
        "--to-sieve",
    )
    .await?;
    let path = record_path(state);
    let mut file = crate::lock::private_file(&path)?;
    let mut text = String::new();
    file.read_to_string(&mut text)
        .with_context(|| format!("cannot read {}", path.display()))?;
    let record: CopyRecord = if text.trim().is_empty() {
        CopyRecord::default()
    } else {
        serde_json::from_str(&text).with_context(|| {
            format!(
                "{} is not a record of Sieve copies; move it away to start afresh (scripts \
                 already copied are recognised by content)",
                path.display()
            )
        })?
    };
    let (src, dst) = tokio::join!(
        mailshift_sieve::connect_source(&src_cfg),
        mailshift_sieve::connect_target(&dst_cfg)
    );
    let mut src = src.map_err(|e| anyhow::anyhow!("Sieve filters: {}", e.message))?;
    let mut dst = dst.map_err(|e| anyhow::anyhow!("Sieve filters: {}", e.message))?;
    let report = copy_scripts(&mut *src, &mut *dst, &record)
        .await
        .map_err(|e| anyhow::anyhow!("Sieve filters: {}", e.message))?;
    let json = serde_json::to_string_pretty(&report.record)?;
    file.set_len(0)?;
    file.rewind()?;
    file.write_all(json.as_bytes())
        .with_context(|| format!("cannot write {}", path.display()))?;
    Ok(report)
}

/// The report's lines for the human summary.
pub(crate) fn render(r: &SieveReport) -> String {
    let mut out = String::from("\nSieve filters:");
    if r.scripts.is_empty() {
        out.push_str(" the old server has none");
    }
    for s in &r.scripts {
        let what = match &s.result {
            ScriptResult::Unchanged => "already there".to_string(),
            ScriptResult::Copied { warnings, .. } => match warnings {
                Some(w) => format!("copied (the new server warns: {w})"),
                None => "copied".to_string(),
            },
            ScriptResult::Rejected { reason, .. } => format!("NOT COPIED: {reason}"),
        };
        if s.dest_name == s.name {
            out.push_str(&format!("\n  {}: {what}", s.name));
        } else {
            out.push_str(&format!("\n  {} (as {}): {what}", s.name, s.dest_name));
        }
    }
    match &r.activation {
        ActivationOutcome::Activated { name, .. } => {
            out.push_str(&format!("\n  active on the new server: {name}"))
        }
        ActivationOutcome::Deactivated { name } => out.push_str(&format!(
            "\n  {name} switched off on the new server (the old server runs no script)"
        )),
        ActivationOutcome::Skipped { name, reason } => out.push_str(&format!(
            "\n  the active script {name} is not active on the new server: {reason}"
        )),
        ActivationOutcome::Unchanged { .. } => {}
    }
    for u in &r.untouched {
        out.push_str(&format!("\n  {u}: the new server's own script, left alone"));
    }
    out.push('\n');
    out
}
