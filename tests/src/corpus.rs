//! A deterministic, deliberately awkward mail corpus.
//!
//! [`generate`] spreads `messages` messages (of which `big_attachments` are 1-4 MiB) over
//! the 14 [`standard_folders`], from a ChaCha8 RNG seeded with `seed`: the same spec always
//! gives the same bytes, flags and dates. Every line ends in CRLF and no message contains
//! NUL or a bare CR/LF, so an IMAP server hands the bytes back unchanged.
//!
//! Mixed in, each at a few percent or more: no `Message-ID`; several messages sharing one
//! `Message-ID` (different content); 8-bit bodies (raw UTF-8 and raw ISO-8859-1, either
//! undeclared or `Content-Transfer-Encoding: 8bit`), some with raw UTF-8 in `Subject:`;
//! malformed MIME (missing closing boundary, declared boundary never used, broken header
//! continuation, header line without a colon); multipart with base64 attachments; HTML;
//! quoted-printable; lines longer than 1000 characters. Sizes are lognormal around 8 KiB.
//! Flags mix `\Seen \Answered \Flagged \Draft \Deleted` and the keywords `$Forwarded`,
//! `$Label1`, `Work`; internal dates spread over 2019-2026 with assorted zone offsets, and
//! always differ from the `Date:` header.
use std::collections::BTreeSet;

use base64::Engine as _;
use chrono::{DateTime, FixedOffset, TimeZone as _};
use rand::{Rng, RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// One message: raw RFC 5322 bytes (CRLF), IMAP flags and IMAP internal date.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Msg {
    /// Full message bytes, every line CRLF-terminated.
    pub raw: Vec<u8>,
    /// System flags (`\Seen`...) and keywords (`$Forwarded`...), as sent in APPEND.
    pub flags: Vec<String>,
    /// IMAP date-time, e.g. `"17-Jul-2023 02:44:25 -0700"` (day space-padded: `" 7-Jul-..."`).
    pub internal_date: String,
}

/// A folder and its messages.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CorpusFolder {
    /// UTF-8 path components, e.g. `["Archive", "2023"]`; INBOX is `["INBOX"]`.
    pub path: Vec<String>,
    /// RFC 6154 special use, e.g. `"\\Sent"`.
    pub special_use: Option<String>,
    /// Messages in append order.
    pub messages: Vec<Msg>,
}

impl CorpusFolder {
    /// The folder's name on a server with hierarchy delimiter `delimiter` (UTF-8).
    pub fn name(&self, delimiter: char) -> String {
        self.path.join(&delimiter.to_string())
    }

    /// The snapshot key: components joined with `/`.
    pub fn key(&self) -> String {
        self.path.join("/")
    }
}

/// What to generate. `Default`: seed 42, 2000 messages, 3 of them big.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CorpusSpec {
    /// RNG seed; equal specs give identical corpora.
    pub seed: u64,
    /// Total number of messages (big ones included).
    pub messages: usize,
    /// How many of them are 1-4 MiB messages with a base64 attachment.
    pub big_attachments: usize,
}

impl Default for CorpusSpec {
    fn default() -> Self {
        CorpusSpec {
            seed: 42,
            messages: 2000,
            big_attachments: 3,
        }
    }
}

/// (path, special use, share of messages in percent)
const FOLDERS: &[(&[&str], Option<&str>, u32)] = &[
    (&["INBOX"], None, 30),
    (&["Sent Items"], Some("\\Sent"), 12),
    (&["Drafts"], Some("\\Drafts"), 2),
    (&["Trash"], Some("\\Trash"), 5),
    (&["Junk"], Some("\\Junk"), 4),
    (&["Archive"], Some("\\Archive"), 10),
    (&["Archive", "2023"], None, 8),
    (&["Archive", "2024"], None, 8),
    (&["Projects"], None, 5),
    (&["Projects", "Q&A [internal]"], None, 3),
    (&["Réunions"], None, 3),
    (&["日本語"], None, 2),
    (&["Work", "Clients", "Acme"], None, 4),
    (&["Lists"], None, 4),
];

/// The 14 folders of the corpus, empty, in creation order (parents before children).
pub fn standard_folders() -> Vec<CorpusFolder> {
    FOLDERS
        .iter()
        .map(|(path, su, _)| CorpusFolder {
            path: path.iter().map(|s| (*s).to_owned()).collect(),
            special_use: su.map(str::to_owned),
            messages: Vec::new(),
        })
        .collect()
}

/// `DovecotOptions::special_use` entries for the corpus on a server with `delimiter`.
pub fn special_use_options(corpus: &[CorpusFolder], delimiter: char) -> Vec<(String, String)> {
    corpus
        .iter()
        .filter_map(|f| f.special_use.clone().map(|su| (f.name(delimiter), su)))
        .collect()
}

/// Number of messages in the corpus.
pub fn message_count(corpus: &[CorpusFolder]) -> usize {
    corpus.iter().map(|f| f.messages.len()).sum()
}

/// Total raw size of the corpus in bytes.
pub fn total_bytes(corpus: &[CorpusFolder]) -> usize {
    corpus
        .iter()
        .flat_map(|f| &f.messages)
        .map(|m| m.raw.len())
        .sum()
}

/// The unfolded value of the first header `name` (case-insensitive) in the header block
/// of `raw`, as raw bytes without the trailing CRLF; `None` if absent.
pub fn header(raw: &[u8], name: &str) -> Option<Vec<u8>> {
    let end = find(raw, b"\r\n\r\n").map_or(raw.len(), |p| p + 2);
    let mut lines = raw[..end].split(|&b| b == b'\n').peekable();
    while let Some(line) = lines.next() {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let Some(colon) = line.iter().position(|&b| b == b':') else {
            continue;
        };
        if !line[..colon].eq_ignore_ascii_case(name.as_bytes()) {
            continue;
        }
        let mut value = trim(&line[colon + 1..]).to_vec();
        while let Some(next) = lines.peek() {
            let next = next.strip_suffix(b"\r").unwrap_or(next);
            if next.first().is_some_and(|b| *b == b' ' || *b == b'\t') {
                value.push(b' ');
                value.extend_from_slice(trim(next));
                lines.next();
            } else {
                break;
            }
        }
        return Some(value);
    }
    None
}

fn trim(b: &[u8]) -> &[u8] {
    let start = b
        .iter()
        .position(|c| !c.is_ascii_whitespace())
        .unwrap_or(b.len());
    let end = b
        .iter()
        .rposition(|c| !c.is_ascii_whitespace())
        .map_or(start, |p| p + 1);
    &b[start..end]
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// `generate(&CorpusSpec::default())`, generated once per process and shared.
pub fn default_corpus() -> &'static [CorpusFolder] {
    static CORPUS: std::sync::OnceLock<Vec<CorpusFolder>> = std::sync::OnceLock::new();
    CORPUS.get_or_init(|| generate(&CorpusSpec::default()))
}

/// Generate the corpus for `spec` (deterministic).
pub fn generate(spec: &CorpusSpec) -> Vec<CorpusFolder> {
    let mut rng = ChaCha8Rng::seed_from_u64(spec.seed);
    let mut folders = standard_folders();
    let total_weight: u32 = FOLDERS.iter().map(|f| f.2).sum();
    let mut big = BTreeSet::new();
    let n_big = spec.big_attachments.min(spec.messages);
    while big.len() < n_big {
        big.insert(rng.random_range(0..spec.messages));
    }
    let mut g = Generator {
        rng,
        ids: Vec::new(),
    };
    for i in 0..spec.messages {
        let mut pick = g.rng.random_range(0..total_weight);
        let mut fi = 0;
        while pick >= FOLDERS[fi].2 {
            pick -= FOLDERS[fi].2;
            fi += 1;
        }
        let msg = g.message(i, fi, big.contains(&i));
        folders[fi].messages.push(msg);
    }
    folders
}

const WORDS: &[&str] = &[
    "the",
    "migration",
    "mailbox",
    "report",
    "quarterly",
    "budget",
    "meeting",
    "agenda",
    "please",
    "review",
    "attached",
    "invoice",
    "project",
    "deadline",
    "server",
    "folder",
    "message",
    "thanks",
    "regards",
    "update",
    "status",
    "customer",
    "contract",
    "draft",
    "schedule",
    "tomorrow",
    "morning",
    "afternoon",
    "team",
    "release",
    "notes",
    "issue",
    "ticket",
    "priority",
    "urgent",
    "follow",
    "up",
    "on",
    "our",
    "call",
    "with",
    "and",
    "a",
    "to",
    "of",
    "in",
    "for",
    "is",
    "that",
    "we",
    "will",
    "be",
    "can",
    "you",
    "it",
    "this",
    "as",
    "are",
    "at",
    "from",
    "have",
    "not",
    "by",
    "an",
    "or",
    "if",
    "so",
    "all",
    "new",
    "data",
    "backup",
    "archive",
    "copy",
    "sync",
    "imap",
    "quota",
    "limit",
    "retry",
    "error",
    "network",
    "storage",
    "weekly",
    "monthly",
    "summary",
    "question",
    "answer",
    "proposal",
];
const UTF8_WORDS: &[&str] = &[
    "café",
    "naïve",
    "Grüße",
    "Straße",
    "déjà",
    "vu",
    "año",
    "señor",
    "日本語",
    "テスト",
    "会議",
    "Привет",
    "мир",
    "Ωmega",
    "€100",
    "½",
    "→",
    "✓",
    "🎉",
    "📎",
    "coöperate",
    "Zürich",
];
/// All characters below U+0100, written out as ISO-8859-1 bytes.
const LATIN1_WORDS: &[&str] = &[
    "café",
    "naïve",
    "Grüße",
    "Straße",
    "déjà",
    "año",
    "señor",
    "Zürich",
    "garçon",
    "crème",
    "brûlée",
    "façade",
    "Æsir",
    "smørrebrød",
    "£20",
    "±5",
    "©",
    "«citation»",
    "über",
    "Österreich",
];
const TZ_OFFSETS: &[i32] = &[
    0,
    -7 * 3600,
    5 * 3600 + 1800,
    3600,
    2 * 3600,
    -5 * 3600,
    -8 * 3600,
    9 * 3600,
    -3 * 3600,
    10 * 3600,
    5 * 3600 + 2700,
    -(3 * 3600 + 1800),
    12 * 3600 + 2700,
];
const NAMES: &[(&str, &str)] = &[
    ("Alice Martin", "alice@example.org"),
    ("Bob Kowalski", "bob@example.net"),
    ("Chloé Dubois", "chloe@example.fr"),
    ("田中 太郎", "tanaka@example.jp"),
    ("Dmitri Ivanov", "dmitri@example.com"),
    ("Acme Support", "support@acme.example"),
    ("Lists Robot", "list-owner@lists.example.org"),
    ("Eve O'Neil", "eve@example.co.uk"),
];

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Plain,
    Utf8,
    Latin1,
    Html,
    Alternative,
    Mixed,
    MissingClosingBoundary,
    AbsentBoundary,
    BrokenContinuation,
    HeaderWithoutColon,
    LongLines,
    QuotedPrintable,
}

struct Generator {
    rng: ChaCha8Rng,
    ids: Vec<String>,
}

impl Generator {
    fn pick<'a>(&mut self, items: &'a [&'a str]) -> &'a str {
        items[self.rng.random_range(0..items.len())]
    }

    fn chance(&mut self, p: f64) -> bool {
        self.rng.random_bool(p)
    }

    fn hex(&mut self, bytes: usize) -> String {
        let mut b = vec![0u8; bytes];
        self.rng.fill_bytes(&mut b);
        hex::encode(b)
    }

    /// Lognormal size with median 8 KiB, clamped to [600 B, 768 KiB].
    fn lognormal_size(&mut self) -> usize {
        let u1: f64 = self.rng.random::<f64>().max(1e-12);
        let u2: f64 = self.rng.random();
        let z = (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos();
        let size = 8192.0 * (0.9 * z).exp();
        (size as usize).clamp(600, 768 * 1024)
    }

    fn date(&mut self) -> DateTime<FixedOffset> {
        // 2019-01-01T00:00:00Z .. 2026-06-30T23:59:59Z
        let ts = self.rng.random_range(1_546_300_800_i64..1_782_863_999);
        let off = TZ_OFFSETS[self.rng.random_range(0..TZ_OFFSETS.len())];
        let tz = FixedOffset::east_opt(off).expect("valid offset");
        tz.timestamp_opt(ts, 0).single().expect("valid timestamp")
    }

    /// Text of roughly `target` bytes in wrapped lines (CRLF), from `words`.
    fn text(&mut self, target: usize, words: &[&str]) -> String {
        let mut out = String::with_capacity(target + 100);
        // One RNG draw per line: 8 word choices per u64 (unoptimised builds are slow).
        while out.len() < target {
            let draw = self.rng.next_u32();
            let width = 60 + (draw % 16) as usize;
            let mut bits = 0u64;
            let mut left = 0;
            let start = out.len();
            while out.len() - start <= width {
                if left == 0 {
                    bits = self.rng.next_u64();
                    left = 8;
                }
                if out.len() > start {
                    out.push(' ');
                }
                out.push_str(words[(bits & 0xff) as usize % words.len()]);
                bits >>= 8;
                left -= 1;
            }
            if (draw >> 8).is_multiple_of(7) {
                out.push_str(".\r\n\r\n");
            } else {
                out.push_str("\r\n");
            }
        }
        out
    }

    fn long_line(&mut self, len: usize) -> String {
        let mut line = String::with_capacity(len + 10);
        while line.len() < len {
            line.push_str(self.pick(WORDS));
            line.push(' ');
        }
        line.push_str("\r\n");
        line
    }

    fn html(&mut self, target: usize, one_line: bool) -> String {
        let mut body = String::from(
            "<!DOCTYPE html>\r\n<html><head><meta charset=\"utf-8\"><title>Newsletter</title>\r\n\
             <style>p { font-family: sans-serif; }</style></head>\r\n<body>\r\n",
        );
        while body.len() < target {
            let len = 200 + self.rng.random_range(0..400);
            let para = self.text(len, WORDS).replace("\r\n", " ");
            let link = self.hex(4);
            body.push_str(&format!(
                "<p>{para} <a href=\"https://example.org/t/{link}\">more</a> &amp; <b>more</b></p>\r\n"
            ));
        }
        body.push_str("</body></html>\r\n");
        if one_line {
            let mut joined = body.replace("\r\n", "");
            joined.push_str("\r\n");
            joined
        } else {
            body
        }
    }

    fn base64_lines(data: &[u8]) -> String {
        let enc = base64::engine::general_purpose::STANDARD.encode(data);
        let mut out = String::with_capacity(enc.len() + enc.len() / 38 + 2);
        for chunk in enc.as_bytes().chunks(76) {
            out.push_str(std::str::from_utf8(chunk).expect("base64 is ASCII"));
            out.push_str("\r\n");
        }
        out
    }

    fn quoted_printable(text: &str) -> String {
        let mut out = String::new();
        for line in text.split("\r\n") {
            let mut cur = String::new();
            for b in line.bytes() {
                let piece = if (b == b'=' || !(32..127).contains(&b)) && b != b'\t' {
                    format!("={b:02X}")
                } else {
                    (b as char).to_string()
                };
                if cur.len() + piece.len() > 75 {
                    out.push_str(&cur);
                    out.push_str("=\r\n");
                    cur.clear();
                }
                cur.push_str(&piece);
            }
            out.push_str(&cur);
            out.push_str("\r\n");
        }
        out.truncate(out.len() - 2);
        out
    }

    fn attachment(&mut self, boundary: &str, i: usize, size: usize) -> String {
        let (ext, ctype) = [
            ("pdf", "application/pdf"),
            ("png", "image/png"),
            ("zip", "application/zip"),
            (
                "docx",
                "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
            ),
            ("bin", "application/octet-stream"),
        ][self.rng.random_range(0..5)];
        let data = self.noise(size);
        let n = self.rng.random_range(1..100);
        format!(
            "--{boundary}\r\nContent-Type: {ctype}; name=\"file-{i}-{n}.{ext}\"\r\n\
             Content-Transfer-Encoding: base64\r\n\
             Content-Disposition: attachment; filename=\"file-{i}-{n}.{ext}\"\r\n\r\n{}",
            Self::base64_lines(&data)
        )
    }

    /// `size` pseudo-random bytes (splitmix64 seeded from the main RNG: much faster than
    /// ChaCha in unoptimised test builds).
    fn noise(&mut self, size: usize) -> Vec<u8> {
        let mut state = self.rng.next_u64();
        let mut data = vec![0u8; size.next_multiple_of(8)];
        for chunk in data.chunks_exact_mut(8) {
            state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = state;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            chunk.copy_from_slice(&(z ^ (z >> 31)).to_le_bytes());
        }
        data.truncate(size);
        data
    }

    fn kind(&mut self) -> Kind {
        let r = self.rng.random_range(0..100);
        match r {
            0..30 => Kind::Plain,
            30..36 => Kind::Utf8,
            36..41 => Kind::Latin1,
            41..49 => Kind::Html,
            49..61 => Kind::Alternative,
            61..79 => Kind::Mixed,
            79..81 => Kind::MissingClosingBoundary,
            81..83 => Kind::AbsentBoundary,
            83..85 => Kind::BrokenContinuation,
            85..87 => Kind::HeaderWithoutColon,
            87..92 => Kind::LongLines,
            _ => Kind::QuotedPrintable,
        }
    }

    fn flags(&mut self, folder: usize) -> Vec<String> {
        let name = FOLDERS[folder].0;
        let mut f = Vec::new();
        let mut add = |cond: bool, flag: &str| {
            if cond {
                f.push(flag.to_owned());
            }
        };
        let (seen, draft, deleted, label_work) = match name {
            ["Drafts"] => (0.5, 0.9, 0.02, 0.04),
            ["Sent Items"] => (1.0, 0.0, 0.02, 0.04),
            ["Trash"] => (0.8, 0.0, 0.25, 0.04),
            ["Work", "Clients", "Acme"] => (0.75, 0.01, 0.02, 0.5),
            ["INBOX"] => (0.6, 0.01, 0.02, 0.04),
            _ => (0.85, 0.01, 0.02, 0.04),
        };
        let answered = self.chance(0.15);
        let flagged = self.chance(0.08);
        let forwarded = self.chance(0.06);
        let label1 = self.chance(0.05);
        add(self.rng.random_bool(seen), "\\Seen");
        add(answered, "\\Answered");
        add(flagged, "\\Flagged");
        add(self.rng.random_bool(draft), "\\Draft");
        add(self.rng.random_bool(deleted), "\\Deleted");
        add(forwarded, "$Forwarded");
        add(label1, "$Label1");
        add(self.rng.random_bool(label_work), "Work");
        f
    }

    fn message(&mut self, i: usize, folder: usize, big: bool) -> Msg {
        let kind = if big { Kind::Mixed } else { self.kind() };
        let target = if big {
            self.rng.random_range(1_150_000..4_050_000)
        } else {
            self.lognormal_size()
        };
        let internal = self.date();
        let sent = {
            let back = self.rng.random_range(7..3 * 86_400);
            let off = TZ_OFFSETS[self.rng.random_range(0..TZ_OFFSETS.len())];
            let tz = FixedOffset::east_opt(off).expect("valid offset");
            (internal - chrono::Duration::seconds(back)).with_timezone(&tz)
        };
        let (from_name, from) = NAMES[self.rng.random_range(0..NAMES.len())];
        let (to_name, to) = NAMES[self.rng.random_range(0..NAMES.len())];

        // Message-ID: ~5% none, ~6% reuse an earlier one (same ID, different content).
        let r: f64 = self.rng.random();
        let message_id = if r < 0.05 {
            None
        } else if r < 0.11 && !self.ids.is_empty() {
            Some(self.ids[self.rng.random_range(0..self.ids.len())].clone())
        } else {
            let id = format!(
                "<{}.{i}@{}>",
                self.hex(8),
                from.split('@').nth(1).unwrap_or("x")
            );
            self.ids.push(id.clone());
            Some(id)
        };

        let topic = (0..self.rng.random_range(2..7))
            .map(|_| self.pick(WORDS))
            .collect::<Vec<_>>()
            .join(" ");
        let subject: Vec<u8> = match kind {
            Kind::Utf8 => format!("[#{i:05}] {topic} {}", self.pick(UTF8_WORDS)).into_bytes(),
            Kind::Latin1 => {
                let mut s = format!("[#{i:05}] {topic} ").into_bytes();
                s.extend(latin1(self.pick(LATIN1_WORDS)));
                s
            }
            _ if self.chance(0.1) => {
                let text = format!("{topic} {}", self.pick(UTF8_WORDS));
                format!(
                    "[#{i:05}] =?UTF-8?B?{}?=",
                    base64::engine::general_purpose::STANDARD.encode(text)
                )
                .into_bytes()
            }
            _ => format!("[#{i:05}] {topic}").into_bytes(),
        };

        let mut h: Vec<u8> = Vec::new();
        let mut hdr = |line: &str| {
            h.extend_from_slice(line.as_bytes());
            h.extend_from_slice(b"\r\n");
        };
        hdr(&format!("Return-Path: <{from}>"));
        let mx = self.rng.random_range(1..255);
        hdr(&format!(
            "Received: from mx{mx}.example.net (mx{mx}.example.net [192.0.2.{mx}])\r\n\tby mail.example.org with ESMTPS id {};\r\n\t{}",
            self.hex(6),
            internal.to_rfc2822()
        ));
        // Non-ASCII display names are RFC 2047-encoded, except in the raw-UTF-8 messages.
        let display = |name: &str| {
            if name.is_ascii() || kind == Kind::Utf8 {
                name.to_owned()
            } else {
                format!(
                    "=?UTF-8?B?{}?=",
                    base64::engine::general_purpose::STANDARD.encode(name)
                )
            }
        };
        hdr(&format!("From: {} <{from}>", display(from_name)));
        hdr(&format!("To: {} <{to}>", display(to_name)));
        if self.chance(0.3) {
            let (cc_name, cc) = NAMES[self.rng.random_range(0..NAMES.len())];
            hdr(&format!(
                "Cc: {} <{cc}>,\r\n undisclosed-recipients:;",
                display(cc_name)
            ));
        }
        let mut h2 = b"Subject: ".to_vec();
        h2.extend_from_slice(&subject);
        h2.extend_from_slice(b"\r\n");
        h.extend_from_slice(&h2);
        let mut hdr = |line: &str| {
            h.extend_from_slice(line.as_bytes());
            h.extend_from_slice(b"\r\n");
        };
        match kind {
            Kind::HeaderWithoutColon => hdr("This header line has no colon at all"),
            Kind::BrokenContinuation => {
                hdr("X-Folded: this header is folded\r\n \r\n\tacross an empty continuation line")
            }
            _ => {}
        }
        hdr(&format!(
            "Date: {}",
            sent.format("%a, %d %b %Y %H:%M:%S %z")
        ));
        if let Some(id) = &message_id {
            hdr(&format!("Message-ID: {id}"));
        }
        if self.chance(0.2) && !self.ids.is_empty() {
            let parent = self.ids[self.rng.random_range(0..self.ids.len())].clone();
            hdr(&format!("In-Reply-To: {parent}"));
            hdr(&format!("References: {parent}"));
        }
        if self.chance(0.3) {
            hdr("X-Mailer: Mailshift Corpus Generator 1.0");
        }

        let header_len = h.len();
        let budget = target.saturating_sub(header_len + 200).max(100);
        let boundary = format!("=_b{}_{}", i, self.hex(6));
        let mut body: Vec<u8> = Vec::new();
        let mut ct: Vec<String> = Vec::new();
        match kind {
            Kind::Plain => {
                ct.push("MIME-Version: 1.0".into());
                ct.push("Content-Type: text/plain; charset=us-ascii".into());
                ct.push("Content-Transfer-Encoding: 7bit".into());
                body.extend(self.text(budget, WORDS).into_bytes());
            }
            Kind::Utf8 => {
                if self.chance(0.5) {
                    ct.push("MIME-Version: 1.0".into());
                    ct.push("Content-Type: text/plain; charset=utf-8".into());
                    ct.push("Content-Transfer-Encoding: 8bit".into());
                }
                let mix: Vec<&str> = WORDS.iter().chain(UTF8_WORDS).copied().collect();
                body.extend(self.text(budget, &mix).into_bytes());
            }
            Kind::Latin1 => {
                if self.chance(0.5) {
                    ct.push("MIME-Version: 1.0".into());
                    ct.push("Content-Type: text/plain; charset=iso-8859-1".into());
                    ct.push("Content-Transfer-Encoding: 8bit".into());
                }
                let mix: Vec<&str> = WORDS.iter().chain(LATIN1_WORDS).copied().collect();
                body.extend(latin1(&self.text(budget, &mix)));
            }
            Kind::Html => {
                ct.push("MIME-Version: 1.0".into());
                ct.push("Content-Type: text/html; charset=utf-8".into());
                let one_line = self.chance(0.3);
                body.extend(self.html(budget, one_line).into_bytes());
            }
            Kind::Alternative => {
                ct.push("MIME-Version: 1.0".into());
                ct.push(format!(
                    "Content-Type: multipart/alternative;\r\n\tboundary=\"{boundary}\""
                ));
                let text = self.text(budget / 3, WORDS);
                let html = self.html(budget * 2 / 3, false);
                body.extend(
                    format!(
                        "--{boundary}\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n{text}\
                         --{boundary}\r\nContent-Type: text/html; charset=utf-8\r\n\r\n{html}\
                         --{boundary}--\r\n"
                    )
                    .into_bytes(),
                );
            }
            Kind::Mixed => {
                ct.push("MIME-Version: 1.0".into());
                ct.push(format!(
                    "Content-Type: multipart/mixed; boundary=\"{boundary}\""
                ));
                let n_att = if big { 1 } else { self.rng.random_range(1..4) };
                let text_len = (budget / 5).clamp(80, 20_000);
                let att_total = budget.saturating_sub(text_len);
                // base64 with CRLF every 76 chars: 78 bytes out per 57 in.
                let att_raw = (att_total * 57 / 78 / n_att).max(16);
                let text = self.text(text_len, WORDS);
                body.extend(b"This is a multi-part message in MIME format.\r\n\r\n");
                if self.chance(0.3) && !big {
                    let inner = format!("{boundary}_alt");
                    let html = self.html(text_len, false);
                    body.extend(
                        format!(
                            "--{boundary}\r\nContent-Type: multipart/alternative; boundary=\"{inner}\"\r\n\r\n\
                             --{inner}\r\nContent-Type: text/plain; charset=us-ascii\r\n\r\n{text}\
                             --{inner}\r\nContent-Type: text/html; charset=utf-8\r\n\r\n{html}\
                             --{inner}--\r\n\r\n"
                        )
                        .into_bytes(),
                    );
                } else {
                    body.extend(
                        format!(
                            "--{boundary}\r\nContent-Type: text/plain; charset=us-ascii\r\n\
                             Content-Transfer-Encoding: 7bit\r\n\r\n{text}"
                        )
                        .into_bytes(),
                    );
                }
                for _ in 0..n_att {
                    body.extend(self.attachment(&boundary, i, att_raw).into_bytes());
                }
                body.extend(format!("--{boundary}--\r\n").into_bytes());
            }
            Kind::MissingClosingBoundary => {
                ct.push("MIME-Version: 1.0".into());
                ct.push(format!(
                    "Content-Type: multipart/mixed; boundary=\"{boundary}\""
                ));
                let text = self.text(budget / 2, WORDS);
                body.extend(
                    format!(
                        "--{boundary}\r\nContent-Type: text/plain\r\n\r\n{text}{}",
                        self.attachment(&boundary, i, budget * 57 / 78 / 2)
                    )
                    .into_bytes(),
                );
                // no closing "--boundary--"
            }
            Kind::AbsentBoundary => {
                ct.push("MIME-Version: 1.0".into());
                ct.push(format!(
                    "Content-Type: multipart/mixed; boundary=\"{boundary}\""
                ));
                body.extend(self.text(budget, WORDS).into_bytes());
            }
            Kind::BrokenContinuation | Kind::HeaderWithoutColon => {
                ct.push("MIME-Version: 1.0".into());
                ct.push("Content-Type: text/plain; charset=us-ascii".into());
                body.extend(self.text(budget, WORDS).into_bytes());
            }
            Kind::LongLines => {
                ct.push("MIME-Version: 1.0".into());
                ct.push("Content-Type: text/plain; charset=us-ascii".into());
                let mut left = budget;
                while left > 0 {
                    let len = self.rng.random_range(1001..6000).min(left.max(1001));
                    let line = self.long_line(len);
                    left = left.saturating_sub(line.len());
                    body.extend(line.into_bytes());
                    let t = self.text(200, WORDS);
                    left = left.saturating_sub(t.len());
                    body.extend(t.into_bytes());
                }
            }
            Kind::QuotedPrintable => {
                ct.push("MIME-Version: 1.0".into());
                ct.push("Content-Type: text/plain; charset=utf-8".into());
                ct.push("Content-Transfer-Encoding: quoted-printable".into());
                let mix: Vec<&str> = WORDS.iter().chain(UTF8_WORDS).copied().collect();
                let text = self.text(budget * 2 / 3, &mix);
                body.extend(Self::quoted_printable(&text).into_bytes());
            }
        }
        let mut raw = h;
        for line in ct {
            raw.extend(line.into_bytes());
            raw.extend(b"\r\n");
        }
        raw.extend(b"\r\n");
        raw.extend(body);
        if !raw.ends_with(b"\r\n") {
            raw.extend(b"\r\n");
        }
        debug_assert!(!raw.contains(&0));
        Msg {
            raw,
            flags: self.flags(folder),
            internal_date: internal.format("%e-%b-%Y %H:%M:%S %z").to_string(),
        }
    }
}

/// Encode a string of characters below U+0100 as ISO-8859-1 bytes.
fn latin1(s: &str) -> Vec<u8> {
    s.chars()
        .map(|c| u8::try_from(u32::from(c)).unwrap_or(b'?'))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deterministic_and_well_formed() {
        let spec = CorpusSpec {
            seed: 7,
            messages: 300,
            big_attachments: 1,
        };
        let a = generate(&spec);
        let b = generate(&spec);
        assert_eq!(a, b);
        assert_eq!(message_count(&a), 300);
        assert_eq!(a.len(), 14);
        for m in a.iter().flat_map(|f| &f.messages) {
            assert!(!m.raw.contains(&0));
            for (i, &c) in m.raw.iter().enumerate() {
                if c == b'\n' {
                    assert_eq!(m.raw[i - 1], b'\r', "bare LF");
                }
                if c == b'\r' {
                    assert_eq!(m.raw.get(i + 1), Some(&b'\n'), "bare CR");
                }
            }
            assert!(m.raw.ends_with(b"\r\n"));
        }
        let other = generate(&CorpusSpec { seed: 8, ..spec });
        assert_ne!(a, other);
    }

    #[test]
    fn header_lookup() {
        let raw = b"Subject: a\r\n b\r\nX: y\r\n\r\nSubject: body\r\n";
        assert_eq!(header(raw, "subject").unwrap(), b"a b");
        assert_eq!(header(raw, "x").unwrap(), b"y");
        assert!(header(raw, "message-id").is_none());
    }
}
