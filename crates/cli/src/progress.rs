//! Progress on the terminal: an overall bar whose total (the source's messages) is known
//! from the plan on, counting what is already there as done, and one bar per running
//! folder, with rates in whole messages per second and ETAs; log lines are printed above
//! the bars. When stderr is not a terminal (a log file, a pipe): plain lines per folder
//! and, every `--progress-every`, one line with the totals, rate and ETA.

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressState, ProgressStyle};
use mailshift_core::ports::Progress;
use mailshift_core::report::{FolderReport, FolderStatus};
use std::collections::HashMap;
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

pub struct TerminalProgress {
    enabled: bool,
    bars: Option<MultiProgress>,
    overall: Option<ProgressBar>,
    folders: Mutex<HashMap<String, ProgressBar>>,
    /// Per folder: messages counted as done so far (already there + copied), so that a
    /// retried folder, which reports what is already there again, is not counted twice.
    done: Mutex<HashMap<String, u64>>,
    /// Where refused messages are kept as `.eml` files (`--quarantine`).
    quarantine: Option<PathBuf>,
    /// Off a terminal: the totals a periodic line reports, and the thread printing it.
    lines: Option<Lines>,
}

/// What the periodic line says.
#[derive(Default)]
struct Totals {
    /// Messages planned (None until the plan is known).
    total: Option<u64>,
    done: u64,
    folders: u64,
    folders_done: u64,
    /// Folders created on the new server so far, of how many (before the copy).
    preparing: Option<(u64, u64)>,
}

/// The periodic one-line progress off a terminal: a thread that wakes every `every`
/// and prints the totals, until the run finishes (its sender is dropped).
struct Lines {
    totals: Arc<Mutex<Totals>>,
    stop: Mutex<Option<mpsc::Sender<()>>>,
    thread: Mutex<Option<std::thread::JoinHandle<()>>>,
}

impl Lines {
    fn start(every: Duration) -> Lines {
        let totals = Arc::new(Mutex::new(Totals::default()));
        let (tx, rx) = mpsc::channel::<()>();
        let seen = totals.clone();
        let started = Instant::now();
        let thread = std::thread::Builder::new()
            .name("progress-lines".into())
            .spawn(move || {
                while let Err(mpsc::RecvTimeoutError::Timeout) = rx.recv_timeout(every) {
                    let t = seen.lock().unwrap_or_else(|p| p.into_inner());
                    if let Some(line) = progress_line(&t, started.elapsed()) {
                        eprintln!("{line}");
                    }
                }
            })
            .ok();
        Lines {
            totals,
            stop: Mutex::new(Some(tx)),
            thread: Mutex::new(thread),
        }
    }

    fn update(&self, f: impl FnOnce(&mut Totals)) {
        f(&mut self.totals.lock().unwrap_or_else(|p| p.into_inner()));
    }

    fn stop(&self) {
        drop(self.stop.lock().unwrap_or_else(|p| p.into_inner()).take());
        if let Some(t) = self.thread.lock().unwrap_or_else(|p| p.into_inner()).take() {
            let _ = t.join();
        }
    }
}

/// `progress: 1,234 of 3,025 messages (40%), 3 of 12 folders done, 250 msg/s, ETA 7s`;
/// before that, the folders being created on the new server; None before anything is
/// known.
fn progress_line(t: &Totals, elapsed: Duration) -> Option<String> {
    use crate::output::thousands;
    let Some(total) = t.total else {
        let (done, of) = t.preparing?;
        return Some(format!(
            "progress: creating folders on the new server: {} of {}",
            thousands(done),
            thousands(of)
        ));
    };
    let secs = elapsed.as_secs_f64().max(0.001);
    let rate = t.done as f64 / secs;
    let percent = (t.done.min(total) * 100).checked_div(total).unwrap_or(100);
    let eta = if rate >= 0.5 && total > t.done {
        format!(
            ", ETA {}",
            indicatif::HumanDuration(Duration::from_secs_f64((total - t.done) as f64 / rate))
        )
    } else {
        String::new()
    };
    Some(format!(
        "progress: {} of {} messages ({percent}%), {} of {} folders done, {} msg/s{eta}",
        thousands(t.done),
        thousands(total),
        thousands(t.folders_done.min(t.folders)),
        thousands(t.folders),
        thousands(rate.round() as u64),
    ))
}

/// `1,234.5 msg/s`-style rates are noise: whole messages per second.
fn rate_key(state: &ProgressState, w: &mut dyn std::fmt::Write) {
    let r = state.per_sec();
    let _ = if r >= 10.0 || r == 0.0 {
        write!(w, "{:.0} msg/s", r)
    } else {
        write!(w, "{:.1} msg/s", r)
    };
}

fn style(template: &str) -> ProgressStyle {
    ProgressStyle::with_template(template)
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .with_key("rate", rate_key)
        .progress_chars("=> ")
}

impl TerminalProgress {
    pub fn new(enabled: bool) -> Self {
        let tty = enabled && std::io::stderr().is_terminal();
        let (bars, overall) = if tty {
            let mp = MultiProgress::with_draw_target(ProgressDrawTarget::stderr_with_hz(8));
            // Until the plan is known, a spinner: a total shown is the real one.
            let overall = mp.add(ProgressBar::new_spinner());
            overall.set_style(
                ProgressStyle::with_template("{prefix:>8} {spinner} {msg}")
                    .unwrap_or_else(|_| ProgressStyle::default_spinner()),
            );
            overall.set_prefix("total");
            overall.set_message("listing the folders of both servers…");
            overall.enable_steady_tick(std::time::Duration::from_millis(250));
            // Log lines (a warning, say) are printed above the bars, not through them.
            crate::telemetry::log_above(Some(mp.clone()));
            (Some(mp), Some(overall))
        } else {
            (None, None)
        };
        TerminalProgress {
            enabled,
            bars,
            overall,
            folders: Mutex::new(HashMap::new()),
            done: Mutex::new(HashMap::new()),
            quarantine: None,
            lines: None,
        }
    }

    /// Off a terminal, one line with the totals every `every` (no-op on a terminal,
    /// where the bars show the same, and when progress is off).
    pub fn with_lines_every(mut self, every: Duration) -> Self {
        if self.enabled && self.bars.is_none() {
            self.lines = Some(Lines::start(every));
        }
        self
    }

    pub fn with_quarantine(mut self, dir: Option<PathBuf>) -> Self {
        self.quarantine = dir;
        self
    }

    /// Clears the bars before the final table is printed.
    pub fn finish(&self) {
        if let Some(l) = &self.lines {
            l.stop();
        }
        if let Some(o) = &self.overall {
            o.finish_and_clear();
        }
        for (_, bar) in self.folders().drain() {
            bar.finish_and_clear();
        }
        if let Some(mp) = &self.bars {
            let _ = mp.clear();
        }
        crate::telemetry::log_above(None);
    }

    fn folders(&self) -> std::sync::MutexGuard<'_, HashMap<String, ProgressBar>> {
        self.folders.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Counts `n` more messages of `folder` as done on the overall bar.
    fn count_done(&self, folder: &str, n: u64) {
        let mut done = self.done.lock().unwrap_or_else(|p| p.into_inner());
        *done.entry(folder.to_string()).or_default() += n;
        if let Some(l) = &self.lines {
            l.update(|t| t.done += n);
        }
        if let Some(o) = &self.overall {
            o.inc(n);
            // Mail that arrived since the plan: the total grows rather than overflows.
            if o.length().is_some_and(|len| o.position() > len) {
                o.set_length(o.position());
            }
        }
    }
}

impl Progress for TerminalProgress {
    fn planned(&self, messages: u64, folders: u64) {
        if !self.enabled {
            return;
        }
        match &self.overall {
            Some(o) => {
                o.disable_steady_tick();
                o.set_style(style(
                    "{prefix:>8} [{bar:30}] {human_pos}/{human_len} msgs  {rate}  ETA {eta}  {msg}",
                ));
                o.set_length(messages);
                o.set_message(format!("{folders} folder(s)"));
                o.reset_eta();
            }
            None => {
                if let Some(l) = &self.lines {
                    l.update(|t| {
                        t.total = Some(messages);
                        t.folders = folders;
                    });
                }
                eprintln!(
                    "planned: {} message(s) in {} folder(s)",
                    crate::output::thousands(messages),
                    crate::output::thousands(folders)
                )
            }
        }
    }

    fn preparing(&self, done: u64, total: u64) {
        if let Some(l) = &self.lines {
            l.update(|t| t.preparing = Some((done, total)));
        }
        if let Some(o) = &self.overall {
            o.set_message(format!(
                "creating folders on the new server: {done}/{total}"
            ));
        }
    }

    fn already_there(&self, folder: &str, messages: u64) {
        let before = self
            .done
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(folder)
            .copied()
            .unwrap_or(0);
        self.count_done(folder, messages.saturating_sub(before));
    }

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
        match &self.bars {
            Some(mp) => {
                // A retried folder starts again: its old bar goes.
                if let Some(old) = self.folders().remove(folder) {
                    old.finish_and_clear();
                    mp.remove(&old);
                }
                if messages > 0 {
                    let bar = mp.add(ProgressBar::new(messages));
                    bar.set_style(style(
                        "{prefix:>8} [{bar:30}] {human_pos}/{human_len} msgs  {rate}  {wide_msg}",
                    ));
                    bar.set_prefix("folder");
                    bar.set_message(crate::output::terminal_safe(folder).into_owned());
                    self.folders().insert(folder.to_string(), bar);
                }
            }
            None => {
                if messages > 0 {
                    eprintln!(
                        "{}: copying {messages} message(s), {bytes} bytes",
                        crate::output::terminal_safe(folder)
                    );
                }
            }
        }
    }

    fn copied(&self, folder: &str, messages: u64, _bytes: u64) {
        self.count_done(folder, messages);
        if let Some(bar) = self.folders().get(folder) {
            bar.inc(messages);
        }
    }

    fn folder_finished(&self, r: &FolderReport) {
        if !self.enabled {
            return;
        }
        if let Some(l) = &self.lines {
            l.update(|t| t.folders_done += 1);
        }
        if let Some(bar) = self.folders().remove(&r.source) {
            bar.finish_and_clear();
            if let Some(mp) = &self.bars {
                mp.remove(&bar);
            }
        }
        let name = crate::output::terminal_safe(&r.source);
        let line = match r.status {
            FolderStatus::Complete => format!(
                "{name}: done ({} copied, {} already there)",
                r.copied, r.already_done
            ),
            FolderStatus::Partial => {
                format!("{name}: {} copied, {} refused", r.copied, r.failures.len())
            }
            FolderStatus::Interrupted => format!(
                "{name}: interrupted after {} copied (checkpointed)",
                r.copied
            ),
            FolderStatus::Failed => format!(
                "{name}: failed: {}",
                r.error
                    .as_ref()
                    .map(|e| crate::output::terminal_safe(&e.message).into_owned())
                    .unwrap_or_else(|| "unknown error".into())
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

#[cfg(test)]
mod line_tests {
    use super::*;

    #[test]
    fn the_periodic_line_says_totals_rate_and_eta() {
        let mut t = Totals::default();
        assert_eq!(progress_line(&t, Duration::from_secs(1)), None);
        t.preparing = Some((1234, 10_000));
        assert_eq!(
            progress_line(&t, Duration::from_secs(1)).unwrap(),
            "progress: creating folders on the new server: 1,234 of 10,000"
        );
        t.total = Some(3025);
        t.done = 1234;
        t.folders = 12;
        t.folders_done = 3;
        let line = progress_line(&t, Duration::from_secs(5)).unwrap();
        assert_eq!(
            line,
            "progress: 1,234 of 3,025 messages (40%), 3 of 12 folders done, 247 msg/s, ETA 7 seconds"
        );
    }
}
