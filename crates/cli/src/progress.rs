//! Progress on the terminal: one bar per running folder plus an overall bar with rate and
//! ETA; plain log lines when stderr is not a terminal.

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use mailshift_core::ports::Progress;
use mailshift_core::report::{FolderReport, FolderStatus};
use std::collections::HashMap;
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

pub struct TerminalProgress {
    enabled: bool,
    bars: Option<MultiProgress>,
    overall: Option<ProgressBar>,
    folders: Mutex<HashMap<String, ProgressBar>>,
    /// Where refused messages are kept as `.eml` files (`--quarantine`).
    quarantine: Option<PathBuf>,
}

impl TerminalProgress {
    pub fn new(enabled: bool) -> Self {
        let tty = enabled && std::io::stderr().is_terminal();
        let (bars, overall) = if tty {
            let mp = MultiProgress::with_draw_target(ProgressDrawTarget::stderr_with_hz(8));
            let overall = mp.add(ProgressBar::new(0));
            overall.set_style(
                ProgressStyle::with_template(
                    "{prefix:>12} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} ETA {eta} {msg}",
                )
                .unwrap_or_else(|_| ProgressStyle::default_bar())
                .progress_chars("=> "),
            );
            overall.set_prefix("total");
            (Some(mp), Some(overall))
        } else {
            (None, None)
        };
        TerminalProgress {
            enabled,
            bars,
            overall,
            folders: Mutex::new(HashMap::new()),
            quarantine: None,
        }
    }

    pub fn with_quarantine(mut self, dir: Option<PathBuf>) -> Self {
        self.quarantine = dir;
        self
    }

    pub fn finish(&self) {
        if let Some(o) = &self.overall {
            o.finish_and_clear();
        }
    }

    fn folders(&self) -> std::sync::MutexGuard<'_, HashMap<String, ProgressBar>> {
        self.folders.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Progress for TerminalProgress {
    fn rejected(&self, folder: &str, failure: &mailshift_core::report::MessageFailure, raw: &[u8]) {
        let Some(dir) = &self.quarantine else {
            return;
        };
        match quarantine(dir, folder, failure.uid, raw) {
            Ok(path) => tracing::warn!(
                folder,
                uid = failure.uid,
                path = %path.display(),
                "refused message kept in the quarantine"
            ),
            Err(e) => tracing::error!(
                folder,
                uid = failure.uid,
                error = %e,
                "cannot write the refused message to the quarantine"
            ),
        }
    }

    fn folder_started(&self, folder: &str, messages: u64, bytes: u64) {
        if !self.enabled {
            return;
        }
        match (&self.bars, &self.overall) {
            (Some(mp), Some(overall)) => {
                overall.inc_length(bytes);
                if messages > 0 {
                    let bar = mp.add(ProgressBar::new(messages));
                    bar.set_style(
                        ProgressStyle::with_template(
                            "{prefix:>12} [{bar:30}] {pos}/{len} msgs {per_sec} {wide_msg}",
                        )
                        .unwrap_or_else(|_| ProgressStyle::default_bar())
                        .progress_chars("=> "),
                    );
                    bar.set_prefix("folder");
                    bar.set_message(folder.to_string());
                    self.folders().insert(folder.to_string(), bar);
                }
            }
            _ => {
                if messages > 0 {
                    eprintln!("{folder}: copying {messages} message(s), {bytes} bytes");
                }
            }
        }
    }

    fn copied(&self, folder: &str, messages: u64, bytes: u64) {
        if let Some(o) = &self.overall {
            o.inc(bytes);
        }
        if let Some(bar) = self.folders().get(folder) {
            bar.inc(messages);
        }
    }

    fn folder_finished(&self, r: &FolderReport) {
        if !self.enabled {
            return;
        }
        if let Some(bar) = self.folders().remove(&r.source) {
            bar.finish_and_clear();
            if let Some(mp) = &self.bars {
                mp.remove(&bar);
            }
        }
        let line = match r.status {
            FolderStatus::Complete => format!(
                "{}: done ({} copied, {} already there)",
                r.source, r.copied, r.already_done
            ),
            FolderStatus::Partial => format!(
                "{}: {} copied, {} refused",
                r.source,
                r.copied,
                r.failures.len()
            ),
            FolderStatus::Interrupted => format!(
                "{}: interrupted after {} copied (checkpointed)",
                r.source, r.copied
            ),
            FolderStatus::Failed => format!(
                "{}: failed: {}",
                r.source,
                r.error
                    .as_ref()
                    .map(|e| e.message.as_str())
                    .unwrap_or("unknown error")
            ),
        };
        match &self.bars {
            Some(mp) => {
                let _ = mp.println(line);
            }
            None => eprintln!("{line}"),
        }
    }
}

/// A folder name as a directory name: path separators and control characters replaced,
/// everything else (accents, spaces) kept so an operator recognises it.
fn folder_dir(folder: &str) -> String {
    let s: String = folder
        .chars()
        .map(|c| {
            if c == '/' || c == '\\' || c.is_control() {
                '_'
            } else {
                c
            }
        })
        .collect();
    match s.as_str() {
        "" | "." | ".." => format!("_{s}"),
        _ => s,
    }
}

/// Writes a refused message to `dir/FOLDER/UID.eml`, byte for byte.
pub fn quarantine(dir: &Path, folder: &str, uid: u32, raw: &[u8]) -> std::io::Result<PathBuf> {
    use std::io::Write;
    use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
    let d = dir.join(folder_dir(folder));
    // Private directories and files, created without following a link someone may
    // have put in their place.
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&d)?;
    if std::fs::symlink_metadata(&d)?.file_type().is_symlink() {
        return Err(std::io::Error::other(format!(
            "{} is a symbolic link; refusing to write through it",
            d.display()
        )));
    }
    let path = d.join(format!("{uid}.eml"));
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW)
        .open(&path)?;
    f.write_all(raw)?;
    Ok(path)
}
