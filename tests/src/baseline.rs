//! The benchmark's baseline: the simplest fast IMAP copier there is. No state, no
//! checks, no reconciliation: per folder one pipelined `UID FETCH 1:* (FLAGS INTERNALDATE
//! BODY.PEEK[])`, then MULTIAPPEND batches with LITERAL+, folders spread over N
//! connections. It sets the floor the destination server allows; mailshift is measured
//! against it in the same run.

use crate::imap::{ImapSession, flag_string, login};
use anyhow::{Context, anyhow};
use futures::TryStreamExt;
use imap_proto::{Response, Status};
use tokio::io::AsyncWriteExt;

/// Messages per MULTIAPPEND.
const BATCH: usize = 300;

struct Msg {
    flags: Vec<String>,
    date: String,
    raw: Vec<u8>,
}

/// Copies every folder of `user` on `src_port` to `dst_user` on `dst_port`; returns the
/// number of messages copied.
pub async fn copy(
    src_port: u16,
    user: &str,
    src_pw: &str,
    dst_port: u16,
    dst_user: &str,
    dst_pw: &str,
    connections: usize,
) -> anyhow::Result<usize> {
    let mut s = login(src_port, user, src_pw).await?;
    let names: Vec<(String, String)> = {
        let list: Vec<_> = s.list(Some(""), Some("*")).await?.try_collect().await?;
        list.iter()
            .map(|n| {
                let d = n.delimiter().unwrap_or("/").to_string();
                (n.name().to_string(), n.name().replace(&d, "/"))
            })
            .collect()
    };
    s.logout().await.ok();
    let mut d = login(dst_port, dst_user, dst_pw).await?;
    for (_, dest) in &names {
        if !dest.eq_ignore_ascii_case("INBOX") {
            let _ = d
                .run_command_and_check_ok(&format!("CREATE \"{dest}\""))
                .await;
        }
    }
    d.logout().await.ok();

    let shares: Vec<Vec<(String, String)>> = (0..connections.max(1))
        .map(|i| {
            names
                .iter()
                .skip(i)
                .step_by(connections.max(1))
                .cloned()
                .collect()
        })
        .collect();
    let tasks = shares.into_iter().map(|share| async move {
        let mut s = login(src_port, user, src_pw).await?;
        let mut d = login(dst_port, dst_user, dst_pw).await?;
        let mut n = 0;
        for (src, dest) in share {
            // Parents such as `Work` may be \Noselect.
            let Ok(mb) = s.examine(&src).await else {
                continue;
            };
            if mb.exists == 0 {
                continue;
            }
            let msgs: Vec<Msg> = {
                let fetches: Vec<_> = s
                    .uid_fetch("1:*", "(FLAGS INTERNALDATE BODY.PEEK[])")
                    .await?
                    .try_collect()
                    .await?;
                fetches
                    .iter()
                    .filter_map(|f| {
                        Some(Msg {
                            flags: f
                                .flags()
                                .filter_map(|x| flag_string(&x))
                                .filter(|x| x != "\\Recent")
                                .collect(),
                            date: f
                                .internal_date()?
                                .format("%d-%b-%Y %H:%M:%S %z")
                                .to_string(),
                            raw: f.body()?.to_vec(),
                        })
                    })
                    .collect()
            };
            for batch in msgs.chunks(BATCH) {
                multiappend(&mut d, &dest, batch).await?;
                n += batch.len();
            }
        }
        s.logout().await.ok();
        d.logout().await.ok();
        Ok::<usize, anyhow::Error>(n)
    });
    let counts = futures::future::try_join_all(tasks).await?;
    Ok(counts.into_iter().sum())
}

async fn multiappend(d: &mut ImapSession, folder: &str, batch: &[Msg]) -> anyhow::Result<()> {
    let head = |m: &Msg| {
        format!(
            "({}) \"{}\" {{{}+}}",
            m.flags.join(" "),
            m.date,
            m.raw.len()
        )
    };
    let tag = d
        .run_command(format!("APPEND \"{folder}\" {}", head(&batch[0])))
        .await?;
    {
        let w = d.get_mut();
        for (i, m) in batch.iter().enumerate() {
            if i > 0 {
                w.write_all(format!(" {}\r\n", head(m)).as_bytes()).await?;
            }
            w.write_all(&m.raw).await?;
        }
        w.write_all(b"\r\n").await?;
        w.flush().await?;
    }
    loop {
        let r = d
            .read_response()
            .await?
            .context("connection closed during APPEND")?;
        if let Response::Done { tag: t, status, .. } = r.parsed()
            && t.0 == tag.0
        {
            return match status {
                Status::Ok => Ok(()),
                other => Err(anyhow!("APPEND to {folder}: {other:?}")),
            };
        }
    }
}
