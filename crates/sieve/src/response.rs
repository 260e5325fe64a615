//! ManageSieve server responses (RFC 5804 section 4), bytes in, values out: one line at
//! a time (a line may carry literals, which may hold line breaks), incrementally (a
//! partial line asks for more bytes), within limits a hostile server cannot stretch (a
//! huge literal announcement fails before anything is allocated for it). No I/O.

use std::fmt;

/// Ceilings for what one response line may make us hold in memory.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Largest literal `{N}` accepted (a script, an error text).
    pub max_literal: usize,
    /// Largest line outside its literals (atoms, quoted strings, separators).
    pub max_line: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            // Servers cap scripts far lower (Dovecot: 1 MiB by default).
            max_literal: 16 * 1024 * 1024,
            max_line: 64 * 1024,
        }
    }
}

/// A value on a data line: an atom (`ACTIVE`) or a string (quoted or literal).
#[derive(Clone, PartialEq, Eq)]
pub enum Value {
    Atom(String),
    Str(Vec<u8>),
}

impl Value {
    /// The string's bytes; `None` for an atom.
    pub fn as_bytes(&self) -> Option<&[u8]> {
        match self {
            Value::Str(b) => Some(b),
            Value::Atom(_) => None,
        }
    }

    /// The value as text (lossy UTF-8 for strings).
    pub fn text(&self) -> String {
        match self {
            Value::Atom(a) => a.clone(),
            Value::Str(b) => String::from_utf8_lossy(b).into_owned(),
        }
    }
}

impl fmt::Debug for Value {
    // Strings may be scripts: show their size only beyond a short prefix.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::Atom(a) => write!(f, "Atom({a})"),
            Value::Str(b) if b.len() <= 64 => write!(f, "Str({:?})", String::from_utf8_lossy(b)),
            Value::Str(b) => write!(f, "Str(<{} bytes>)", b.len()),
        }
    }
}

/// How a command ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StatusKind {
    Ok,
    No,
    /// The server is closing the connection.
    Bye,
}

/// A response code: `(QUOTA/MAXSCRIPTS)`, `(NONEXISTENT)`, `(WARNINGS)`, `(SASL "...")`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Code {
    /// Upper case, with its `/`-separated sub-codes: `QUOTA/MAXSCRIPTS`.
    pub name: String,
    pub args: Vec<Value>,
}

impl Code {
    /// Whether the code is `base` or one of its sub-codes (`QUOTA` matches `QUOTA/MAXSIZE`).
    pub fn is(&self, base: &str) -> bool {
        self.name.split('/').next() == Some(base)
    }
}

/// `OK`/`NO`/`BYE` with an optional response code and human-readable text.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Status {
    pub kind: StatusKind,
    pub code: Option<Code>,
    pub text: Option<Vec<u8>>,
}

impl Status {
    /// The server's text, lossy UTF-8, or "" without one.
    pub fn text(&self) -> String {
        self.text
            .as_deref()
            .map(|t| String::from_utf8_lossy(t).into_owned())
            .unwrap_or_default()
    }
}

/// One complete response line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Line {
    /// A data line: a capability (`"SIEVE" "fileinto ..."`), a script listing
    /// (`"name" ACTIVE`), a script (one literal), or an AUTHENTICATE challenge.
    Data(Vec<Value>),
    Status(Status),
}

/// Why a response could not be parsed. Messages never quote string contents.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    /// `at_least`: the announcement is refused as soon as its digits pass the limit.
    #[error(
        "the server announced a literal of at least {at_least} bytes, above the {limit}-byte limit"
    )]
    LiteralTooLarge { at_least: u64, limit: usize },
    #[error("a response line is longer than {limit} bytes")]
    LineTooLong { limit: usize },
    #[error("malformed response at byte {at}: {what}")]
    Syntax { at: usize, what: &'static str },
}

enum Token {
    Atom(String),
    Str(Vec<u8>),
    Open,
    Close,
}

/// Parses one line from the start of `buf`. `Ok(None)`: the line is not complete yet
/// (read more and call again with the longer buffer). `Ok(Some((line, n)))`: the line
/// used the first `n` bytes.
pub fn parse_line(buf: &[u8], limits: &Limits) -> Result<Option<(Line, usize)>, ParseError> {
    let mut tokens = Vec::new();
    let mut i = 0;
    let mut literal_bytes = 0usize;
    // Bytes outside literals must stay under max_line, literals together under
    // max_literal: a line can never make us hold more than the sum.
    let check_len = |i: usize, literal_bytes: usize| {
        if i - literal_bytes > limits.max_line {
            Err(ParseError::LineTooLong {
                limit: limits.max_line,
            })
        } else {
            Ok(())
        }
    };
    loop {
        check_len(i, literal_bytes)?;
        let Some(&c) = buf.get(i) else {
            return Ok(None);
        };
        match c {
            b'\r' => {
                match buf.get(i + 1) {
                    None => return Ok(None),
                    Some(b'\n') => {}
                    Some(_) => {
                        return Err(ParseError::Syntax {
                            at: i,
                            what: "a CR not followed by LF",
                        });
                    }
                }
                return finish(tokens, i).map(|l| Some((l, i + 2)));
            }
            // Be lenient with a bare LF.
            b'\n' => return finish(tokens, i).map(|l| Some((l, i + 1))),
            b' ' => i += 1,
            b'(' => {
                tokens.push(Token::Open);
                i += 1;
            }
            b')' => {
                tokens.push(Token::Close);
                i += 1;
            }
            b'"' => {
                let mut out = Vec::new();
                let mut j = i + 1;
                loop {
                    check_len(j, literal_bytes)?;
                    match buf.get(j) {
                        None => return Ok(None),
                        Some(b'"') => break,
                        Some(b'\\') => match buf.get(j + 1) {
                            None => return Ok(None),
                            Some(&e @ (b'"' | b'\\')) => {
                                out.push(e);
                                j += 2;
                            }
                            Some(_) => {
                                return Err(ParseError::Syntax {
                                    at: j,
                                    what: "a backslash escaping neither '\"' nor '\\'",
                                });
                            }
                        },
                        Some(b'\r' | b'\n' | 0) => {
                            return Err(ParseError::Syntax {
                                at: j,
                                what: "a line break or NUL inside a quoted string",
                            });
                        }
                        Some(&b) => {
                            out.push(b);
                            j += 1;
                        }
                    }
                }
                tokens.push(Token::Str(out));
                i = j + 1;
            }
            b'{' => {
                let mut j = i + 1;
                let mut size: u64 = 0;
                let mut digits = 0;
                while let Some(&d) = buf.get(j) {
                    if !d.is_ascii_digit() {
                        break;
                    }
                    size = size.saturating_mul(10).saturating_add(u64::from(d - b'0'));
                    digits += 1;
                    j += 1;
                    // Refuse as soon as the digits say too much, before the rest arrives.
                    if size > limits.max_literal as u64 {
                        return Err(ParseError::LiteralTooLarge {
                            at_least: size,
                            limit: limits.max_literal,
                        });
                    }
                }
                if buf.get(j).is_none() {
                    return Ok(None);
                }
                if digits == 0 {
                    return Err(ParseError::Syntax {
                        at: j,
                        what: "a literal without a length",
                    });
                }
                if buf.get(j) == Some(&b'+') {
                    j += 1;
                }
                match (buf.get(j), buf.get(j + 1), buf.get(j + 2)) {
                    (Some(b'}'), Some(b'\r'), Some(b'\n')) => j += 3,
                    (Some(b'}'), Some(b'\n'), _) => j += 2,
                    (Some(b'}'), None, _) | (Some(b'}'), Some(b'\r'), None) | (None, ..) => {
                        return Ok(None);
                    }
                    _ => {
                        return Err(ParseError::Syntax {
                            at: j,
                            what: "a literal length not followed by '}' and a line break",
                        });
                    }
                }
                // `size` is at most max_literal, a usize.
                let size = usize::try_from(size).unwrap_or(usize::MAX);
                if literal_bytes.saturating_add(size) > limits.max_literal {
                    return Err(ParseError::LiteralTooLarge {
                        at_least: (literal_bytes + size) as u64,
                        limit: limits.max_literal,
                    });
                }
                if buf.len() < j + size {
                    return Ok(None);
                }
                tokens.push(Token::Str(buf[j..j + size].to_vec()));
                literal_bytes += size + (j - i);
                i = j + size;
            }
            _ => {
                let start = i;
                while let Some(&b) = buf.get(i) {
                    if matches!(b, b' ' | b'\r' | b'\n' | b'(' | b')' | b'"' | b'{') {
                        break;
                    }
                    if b < 0x20 || b == 0x7f {
                        return Err(ParseError::Syntax {
                            at: i,
                            what: "a control character in an atom",
                        });
                    }
                    i += 1;
                    check_len(i, literal_bytes)?;
                }
                if buf.get(i).is_none() {
                    return Ok(None);
                }
                tokens.push(Token::Atom(
                    String::from_utf8_lossy(&buf[start..i]).into_owned(),
                ));
            }
        }
    }
}

fn finish(tokens: Vec<Token>, at: usize) -> Result<Line, ParseError> {
    let syntax = |what| ParseError::Syntax { at, what };
    let mut it = tokens.into_iter().peekable();
    let kind = match it.peek() {
        Some(Token::Atom(a)) if a.eq_ignore_ascii_case("OK") => Some(StatusKind::Ok),
        Some(Token::Atom(a)) if a.eq_ignore_ascii_case("NO") => Some(StatusKind::No),
        Some(Token::Atom(a)) if a.eq_ignore_ascii_case("BYE") => Some(StatusKind::Bye),
        _ => None,
    };
    let Some(kind) = kind else {
        let mut values = Vec::new();
        for t in it {
            values.push(match t {
                Token::Atom(a) => Value::Atom(a),
                Token::Str(s) => Value::Str(s),
                Token::Open | Token::Close => return Err(syntax("parentheses on a data line")),
            });
        }
        if values.is_empty() {
            return Err(syntax("an empty line"));
        }
        return Ok(Line::Data(values));
    };
    it.next();
    let mut code = None;
    if matches!(it.peek(), Some(Token::Open)) {
        it.next();
        let name = match it.next() {
            Some(Token::Atom(a)) => a.to_ascii_uppercase(),
            _ => return Err(syntax("a response code without a name")),
        };
        let mut args = Vec::new();
        loop {
            match it.next() {
                Some(Token::Close) => break,
                Some(Token::Atom(a)) => args.push(Value::Atom(a)),
                Some(Token::Str(s)) => args.push(Value::Str(s)),
                Some(Token::Open) => return Err(syntax("nested parentheses in a response code")),
                None => return Err(syntax("an unclosed response code")),
            }
        }
        code = Some(Code { name, args });
    }
    let text = match it.next() {
        None => None,
        Some(Token::Str(s)) => Some(s),
        Some(_) => return Err(syntax("a status text that is not a string")),
    };
    if it.next().is_some() {
        return Err(syntax("more than one text after a status"));
    }
    Ok(Line::Status(Status { kind, code, text }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(buf: &[u8]) -> Line {
        let (line, n) = parse_line(buf, &Limits::default())
            .expect("parses")
            .expect("complete");
        assert_eq!(
            n,
            buf.len(),
            "consumed all of {:?}",
            String::from_utf8_lossy(buf)
        );
        line
    }

    fn status(buf: &[u8]) -> Status {
        match one(buf) {
            Line::Status(s) => s,
            other => panic!("not a status: {other:?}"),
        }
    }

    fn s(v: &str) -> Value {
        Value::Str(v.as_bytes().to_vec())
    }

    #[test]
    fn status_lines_with_codes_and_texts() {
        assert_eq!(
            status(b"OK\r\n"),
            Status {
                kind: StatusKind::Ok,
                code: None,
                text: None
            }
        );
        let st = status(b"NO (QUOTA/MAXSCRIPTS) \"Too many scripts\"\r\n");
        assert_eq!(st.kind, StatusKind::No);
        let code = st.code.clone().unwrap();
        assert_eq!(code.name, "QUOTA/MAXSCRIPTS");
        assert!(code.is("QUOTA") && !code.is("QUOTA/MAXSIZE") && !code.is("QUOT"));
        assert_eq!(st.text(), "Too many scripts");
        let st = status(b"no (nonexistent) \"Sieve script `nope' not found\"\r\n");
        assert_eq!(st.kind, StatusKind::No);
        assert_eq!(st.code.unwrap().name, "NONEXISTENT");
        let st = status(b"OK (WARNINGS) \"line 2: warning: odd\"\r\n");
        assert!(st.code.unwrap().is("WARNINGS"));
        let st = status(b"OK (SASL \"dGVzdA==\") \"Logged in\"\r\n");
        assert_eq!(st.code.unwrap().args, vec![s("dGVzdA==")]);
        let st = status(b"BYE (REFERRAL sieve://other.example) \"Moved\"\r\n");
        assert_eq!(st.kind, StatusKind::Bye);
        assert_eq!(
            st.code.unwrap().args,
            vec![Value::Atom("sieve://other.example".into())]
        );
        let st = status(b"NO (TAG {4}\r\nab\"c) \"x\"\r\n");
        assert_eq!(st.code.unwrap().args, vec![s("ab\"c")]);
    }

    #[test]
    fn a_refusal_text_may_be_a_multi_line_literal() {
        // Dovecot answers a CHECKSCRIPT refusal like this.
        let text = "line 1: error: require command: unknown Sieve capability `vacation'.\r\n\
                    error: validation failed.\r\n";
        let wire = format!("NO {{{}}}\r\n{text}\r\n", text.len());
        let st = status(wire.as_bytes());
        assert_eq!(st.kind, StatusKind::No);
        assert_eq!(st.text(), text);
    }

    #[test]
    fn quoted_strings_unescape_quotes_and_backslashes() {
        assert_eq!(
            one(b"\"a \\\"q\\\" \\\\ b\" ACTIVE\r\n"),
            Line::Data(vec![s("a \"q\" \\ b"), Value::Atom("ACTIVE".into())])
        );
        assert_eq!(
            one("\"caf\u{e9}\"\r\n".as_bytes()),
            Line::Data(vec![s("caf\u{e9}")])
        );
        assert_eq!(one(b"\"\"\r\n"), Line::Data(vec![s("")]));
        for bad in [&b"\"a\\nb\"\r\n"[..], b"\"a\rb\"\r\n", b"\"a\nb\"\r\n"] {
            assert!(
                matches!(
                    parse_line(bad, &Limits::default()),
                    Err(ParseError::Syntax { .. })
                ),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn capability_lines() {
        assert_eq!(
            one(b"\"IMPLEMENTATION\" \"Dovecot (Debian) Pigeonhole\"\r\n"),
            Line::Data(vec![s("IMPLEMENTATION"), s("Dovecot (Debian) Pigeonhole")])
        );
        assert_eq!(one(b"\"STARTTLS\"\r\n"), Line::Data(vec![s("STARTTLS")]));
        assert_eq!(
            one(b"\"SIEVE\" {26}\r\nfileinto vacation envelope\r\n"),
            Line::Data(vec![s("SIEVE"), s("fileinto vacation envelope")])
        );
    }

    #[test]
    fn literals_in_both_spellings_keep_their_bytes() {
        let script = b"require \"x\";\r\n# \xff not utf-8\r\n";
        let mut wire = format!("{{{}}}\r\n", script.len()).into_bytes();
        wire.extend_from_slice(script);
        wire.extend_from_slice(b"\r\n");
        assert_eq!(one(&wire), Line::Data(vec![Value::Str(script.to_vec())]));
        let mut wire = format!("{{{}+}}\r\n", script.len()).into_bytes();
        wire.extend_from_slice(script);
        wire.extend_from_slice(b"\r\n");
        assert_eq!(one(&wire), Line::Data(vec![Value::Str(script.to_vec())]));
        assert_eq!(one(b"{0}\r\n\r\n"), Line::Data(vec![s("")]));
    }

    #[test]
    fn incomplete_lines_ask_for_more_at_every_cut() {
        let wire: &[u8] = b"\"vacation\" ACTIVE\r\n\"a \\\"b\\\"\"\r\n{5}\r\nab\r\nc\r\nNO (QUOTA/MAXSIZE) {3}\r\nbig\r\nOK \"done\"\r\n";
        // Whole-buffer parse, line after line.
        let mut all = Vec::new();
        let mut at = 0;
        while at < wire.len() {
            let (line, n) = parse_line(&wire[at..], &Limits::default())
                .unwrap()
                .unwrap();
            all.push(line);
            at += n;
        }
        assert_eq!(all.len(), 5);
        assert_eq!(all[2], Line::Data(vec![s("ab\r\nc")]));
        // Every prefix that stops inside a line is incomplete, never an error.
        let mut at = 0;
        for line in &all {
            let mut n = None;
            for cut in 0..=wire.len() - at {
                match parse_line(&wire[at..at + cut], &Limits::default()).unwrap() {
                    None => {}
                    Some((l, used)) => {
                        assert_eq!(&l, line);
                        n = Some(used);
                        break;
                    }
                }
            }
            at += n.expect("the line completes");
        }
        assert_eq!(at, wire.len());
    }

    #[test]
    fn a_huge_literal_fails_before_its_bytes_arrive() {
        let limits = Limits {
            max_literal: 1000,
            max_line: 100,
        };
        // Only the announcement arrives: refused without waiting for (or allocating) it.
        let e = parse_line(b"{18446744073709551616999}", &limits).unwrap_err();
        assert!(
            matches!(e, ParseError::LiteralTooLarge { limit: 1000, .. }),
            "{e}"
        );
        let e = parse_line(b"{1001}\r\n", &limits).unwrap_err();
        assert!(matches!(
            e,
            ParseError::LiteralTooLarge { at_least: 1001, .. }
        ));
        assert!(e.to_string().contains("at least 1001 bytes"));
        let e = parse_line(b"NO {4294967296+}\r\n", &limits).unwrap_err();
        assert!(matches!(e, ParseError::LiteralTooLarge { .. }));
        // At the limit is fine; many literals on one line count together.
        let mut ok = b"{1000}\r\n".to_vec();
        ok.extend(std::iter::repeat_n(b'x', 1000));
        ok.extend_from_slice(b"\r\n");
        assert!(parse_line(&ok, &limits).unwrap().is_some());
        let many = b"{600}\r\n"
            .iter()
            .chain([b'x'; 600].iter())
            .chain(b" {600}\r\n")
            .copied()
            .collect::<Vec<u8>>();
        assert!(matches!(
            parse_line(&many, &limits),
            Err(ParseError::LiteralTooLarge { .. })
        ));
    }

    #[test]
    fn endless_lines_fail_instead_of_growing() {
        let limits = Limits {
            max_literal: 1000,
            max_line: 100,
        };
        let atom = vec![b'a'; 200];
        assert!(matches!(
            parse_line(&atom, &limits),
            Err(ParseError::LineTooLong { limit: 100 })
        ));
        let mut quoted = vec![b'"'];
        quoted.extend(vec![b'a'; 200]);
        assert!(matches!(
            parse_line(&quoted, &limits),
            Err(ParseError::LineTooLong { .. })
        ));
        let spaces = vec![b' '; 200];
        assert!(matches!(
            parse_line(&spaces, &limits),
            Err(ParseError::LineTooLong { .. })
        ));
        // A short incomplete line is just incomplete.
        assert_eq!(parse_line(&atom[..50], &limits).unwrap(), None);
    }

    #[test]
    fn malformed_lines_are_errors() {
        for bad in [
            &b"\r\n"[..],
            b"OK \"a\" \"b\"\r\n",
            b"OK (\"x\")\r\n",
            b"OK (A (B))\r\n",
            b"OK (A\r\n",
            b"\"a\" (b)\r\n",
            b"{}\r\n",
            b"{3x}\r\nabc\r\n",
            b"OK\rX",
            b"a\x01b\r\n",
        ] {
            assert!(
                parse_line(bad, &Limits::default()).is_err(),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }
}
