#![allow(clippy::unwrap_used, clippy::expect_used)]
//! What a person sees at a terminal (issue 20): `mailshift migrate` run under a
//! pseudo-terminal of 120x35 columns (util-linux `script`), its output read as it comes
//! and cut into the lines the terminal draws.

use mailshift_tests::corpus::CorpusSpec;
use mailshift_tests::dovecot::DovecotOptions;
use mailshift_tests::pair::*;
use std::io::Read;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// `text` without ANSI escape sequences (cursor moves, erases, colours).
fn strip_ansi(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        if c != '\u{1b}' {
            out.push(c);
            continue;
        }
        if chars.peek() == Some(&'[') {
            chars.next();
            // Parameters, then one final byte in @..~.
            for c in chars.by_ref() {
                if ('@'..='~').contains(&c) {
                    break;
                }
            }
        } else {
            chars.next();
        }
    }
    out
}

/// A single-quoted shell word.
fn quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// One line drawn on the terminal, and when it arrived.
struct Drawn {
    at: Duration,
    text: String,
}

/// Runs `cmd` under a 120x35 pseudo-terminal; every line it drew, with its time.
fn run_on_a_terminal(cmd: &Command) -> (bool, Vec<Drawn>) {
    let mut words = vec![quote(&cmd.get_program().to_string_lossy())];
    words.extend(cmd.get_args().map(|a| quote(&a.to_string_lossy())));
    let mut script = Command::new("script");
    script
        .args(["-q", "-f", "-e", "-c"])
        .arg(format!("stty cols 120 rows 35 && exec {}", words.join(" ")))
        .arg("/dev/null")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    for (k, v) in cmd.get_envs() {
        match v {
            Some(v) => script.env(k, v),
            None => script.env_remove(k),
        };
    }
    let started = Instant::now();
    let mut child = script.spawn().expect("script (util-linux)");
    let mut out = child.stdout.take().unwrap();
    let mut drawn = Vec::new();
    let mut pending = String::new();
    let mut buf = [0u8; 8192];
    loop {
        let n = out.read(&mut buf).unwrap_or(0);
        if n == 0 {
            break;
        }
        let at = started.elapsed();
        pending.push_str(&String::from_utf8_lossy(&buf[..n]));
        // A line ends where the terminal moves to the start of a line.
        while let Some(i) = pending.find(['\n', '\r']) {
            let line = strip_ansi(&pending[..i]);
            if !line.trim().is_empty() {
                drawn.push(Drawn { at, text: line });
            }
            pending.drain(..=i);
        }
    }
    if !pending.trim().is_empty() {
        drawn.push(Drawn {
            at: started.elapsed(),
            text: strip_ansi(&pending),
        });
    }
    let ok = child.wait().map(|s| s.success()).unwrap_or(false);
    (ok, drawn)
}

/// `done/total` of an overall-bar line (`   total [===>   ] 1,234/3,025 msgs ...`).
fn overall(line: &str) -> Option<(u64, u64)> {
    let rest = line.trim_start().strip_prefix("total [")?;
    let counts = rest.split("] ").nth(1)?.split(" msgs").next()?;
    let (done, total) = counts.split_once('/')?;
    let n = |s: &str| s.replace(',', "").trim().parse::<u64>().ok();
    Some((n(done)?, n(total)?))
}

#[tokio::test(flavor = "multi_thread")]
async fn progress_on_a_terminal_tells_the_truth() {
    let pair = Pair::new(DovecotOptions::default());
    let before = populate(
        &pair,
        &CorpusSpec {
            seed: 20,
            messages: 3000,
            big_attachments: 0,
        },
    )
    .await;
    let total: u64 = before.values().map(|v| v.len() as u64).sum();
    let (ok, drawn) = run_on_a_terminal(&pair.command(&[]));
    let all: Vec<&str> = drawn.iter().map(|d| d.text.as_str()).collect();
    let dump = || all.join("\n");
    assert!(ok, "migrate failed:\n{}", dump());

    // The overall total is the source's from the first frame that shows one.
    let frames: Vec<(Duration, u64, u64)> = drawn
        .iter()
        .filter_map(|d| overall(&d.text).map(|(done, of)| (d.at, done, of)))
        .collect();
    assert!(frames.len() >= 3, "no overall bar drawn:\n{}", dump());
    for (_, _, of) in &frames {
        assert_eq!(
            *of,
            total,
            "an overall total other than the source's:\n{}",
            dump()
        );
    }
    // It advances within a second of being drawn, and never stalls for long.
    let first = frames[0];
    let moved = frames
        .iter()
        .find(|f| f.1 > first.1)
        .unwrap_or_else(|| panic!("the overall bar never moved:\n{}", dump()));
    assert!(
        moved.0 - first.0 <= Duration::from_secs(1),
        "the overall bar took {:?} to move",
        moved.0 - first.0
    );
    let mut last = first;
    for f in &frames {
        if f.1 > last.1 {
            assert!(
                f.0 - last.0 <= Duration::from_secs(3),
                "the overall bar stood still for {:?} at {}",
                f.0 - last.0,
                last.1
            );
            last = *f;
        }
    }
    // Rates in whole messages per second.
    let bar_lines: Vec<&str> = all
        .iter()
        .copied()
        .filter(|l| l.contains(" msgs"))
        .collect();
    for l in &bar_lines {
        if let Some(rate) = l.split("  ").find(|p| p.ends_with("msg/s")) {
            let n = rate.trim_end_matches("msg/s").trim();
            assert!(
                n.parse::<f64>().is_ok() && n.split('.').nth(1).is_none_or(|d| d.len() <= 1),
                "rate {rate:?} in {l:?}"
            );
        }
    }

    // Log lines stand on their own: the plain-text warning once per server, never inside
    // a bar.
    let warnings: Vec<&str> = all
        .iter()
        .copied()
        .filter(|l| l.contains("no STARTTLS"))
        .collect();
    assert!(
        (1..=2).contains(&warnings.len()),
        "{} plain-text warnings:\n{}",
        warnings.len(),
        dump()
    );
    for w in &warnings {
        assert!(
            !w.contains(" msgs") && !w.contains("[="),
            "a log line inside a bar: {w:?}"
        );
    }
    eprintln!(
        "{} overall frames, first at {:?} showing {}/{}, moved at {:?}; {} warning line(s)",
        frames.len(),
        first.0,
        first.1,
        first.2,
        moved.0,
        warnings.len()
    );
    pair.assert_mirrored("after the run on a terminal").await;
}
