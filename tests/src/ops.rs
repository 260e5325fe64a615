//! Changes made by hand on a server, as a user's mail client would make them: raw IMAP
//! commands on one session (expunge, move, rename, recreate a folder), and what Dovecot's
//! log says each session transferred.

use crate::corpus::Msg;
use crate::imap::{append_one, flag_string, login};
use anyhow::Context;
use futures::TryStreamExt;

/// Runs each command on one logged-in session, in order, each needing a tagged OK.
/// Folder names are the server's own (delimiter and modified UTF-7 included).
pub async fn run(port: u16, user: &str, password: &str, commands: &[String]) -> anyhow::Result<()> {
    let mut s = login(port, user, password).await?;
    for c in commands {
        s.run_command_and_check_ok(c)
            .await
            .with_context(|| format!("command {c:?}"))?;
    }
    s.logout().await.ok();
    Ok(())
}

/// UIDs of a folder (server name), ascending.
pub async fn uids(port: u16, user: &str, password: &str, folder: &str) -> anyhow::Result<Vec<u32>> {
    let mut s = login(port, user, password).await?;
    s.examine(folder)
        .await
        .with_context(|| format!("EXAMINE {folder}"))?;
    let mut v: Vec<u32> = s.uid_search("ALL").await?.into_iter().collect();
    v.sort_unstable();
    s.logout().await.ok();
    Ok(v)
}

/// Deletes a folder and creates it again with the same messages (flags and dates kept):
/// the folder gets a new UIDVALIDITY, as after a server-side restore.
pub async fn recreate_folder(
    port: u16,
    user: &str,
    password: &str,
    folder: &str,
) -> anyhow::Result<()> {
    let mut s = login(port, user, password).await?;
    s.examine(folder).await?;
    let mut saved = Vec::new();
    {
        let mut fetches = s
            .uid_fetch("1:*", "(FLAGS INTERNALDATE BODY.PEEK[])")
            .await?;
        while let Some(f) = fetches.try_next().await? {
            let flags: Vec<String> = f
                .flags()
                .filter_map(|fl| flag_string(&fl))
                .filter(|fl| fl != "\\Recent")
                .collect();
            let date = f.internal_date().context("no INTERNALDATE")?;
            saved.push((
                f.body().context("no body")?.to_vec(),
                flags,
                date.format("%d-%b-%Y %H:%M:%S %z").to_string(),
            ));
        }
    }
    // Dovecot disconnects a session whose selected folder is deleted.
    s.run_command_and_check_ok("UNSELECT").await?;
    s.run_command_and_check_ok(&format!("DELETE \"{folder}\""))
        .await?;
    // Dovecot derives UIDVALIDITY from the clock: make sure the new one differs.
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    s.run_command_and_check_ok(&format!("CREATE \"{folder}\""))
        .await?;
    for (raw, flags, internal_date) in saved {
        let msg = Msg {
            raw,
            flags,
            internal_date,
        };
        append_one(&mut s, folder, &msg)
            .await
            .with_context(|| format!("APPEND to {folder}"))?;
    }
    s.logout().await.ok();
    Ok(())
}

/// Total bytes (received, sent) by the server over the IMAP sessions that ended in `log`
/// (Dovecot logs `in=N out=N` at each logout or disconnect).
pub fn session_bytes(log: &str) -> (u64, u64) {
    let mut total = (0, 0);
    for line in log.lines() {
        let field = |name: &str| -> Option<u64> {
            let i = line.find(name)?;
            let rest = &line[i + name.len()..];
            rest.split(|c: char| !c.is_ascii_digit())
                .next()?
                .parse()
                .ok()
        };
        if let (Some(i), Some(o)) = (field(" in="), field(" out=")) {
            total.0 += i;
            total.1 += o;
        }
    }
    total
}
