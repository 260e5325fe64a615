//! ManageSieve commands as bytes (RFC 5804 section 2): the only place that writes the
//! protocol's syntax. ManageSieve commands carry no tag: each one is answered, in order,
//! by data lines and one `OK`/`NO`/`BYE`.

/// A command ready to send, with the name used in messages and traces (never its
/// arguments: they may be a password or a script).
pub struct Command {
    pub name: &'static str,
    pub bytes: Vec<u8>,
}

impl std::fmt::Debug for Command {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Command({}, {} bytes)", self.name, self.bytes.len())
    }
}

fn build(name: &'static str, args: &[Vec<u8>]) -> Command {
    let mut bytes = name.as_bytes().to_vec();
    for a in args {
        bytes.push(b' ');
        bytes.extend_from_slice(a);
    }
    bytes.extend_from_slice(b"\r\n");
    Command { name, bytes }
}

pub fn capability() -> Command {
    build("CAPABILITY", &[])
}

pub fn starttls() -> Command {
    build("STARTTLS", &[])
}

pub fn logout() -> Command {
    build("LOGOUT", &[])
}

/// `AUTHENTICATE "MECH" "base64(initial response)"`.
pub fn authenticate(mechanism: &'static str, initial_b64: &str) -> Command {
    build(
        "AUTHENTICATE",
        &[
            string_arg(mechanism.as_bytes()),
            string_arg(initial_b64.as_bytes()),
        ],
    )
}

/// The client's answer to an AUTHENTICATE challenge: a bare string line.
pub fn sasl_response(b64: &str) -> Command {
    let mut bytes = string_arg(b64.as_bytes());
    bytes.extend_from_slice(b"\r\n");
    Command {
        name: "AUTHENTICATE",
        bytes,
    }
}

pub fn listscripts() -> Command {
    build("LISTSCRIPTS", &[])
}

pub fn getscript(name: &str) -> Command {
    build("GETSCRIPT", &[string_arg(name.as_bytes())])
}

pub fn checkscript(content: &[u8]) -> Command {
    build("CHECKSCRIPT", &[literal_arg(content)])
}

pub fn putscript(name: &str, content: &[u8]) -> Command {
    build(
        "PUTSCRIPT",
        &[string_arg(name.as_bytes()), literal_arg(content)],
    )
}

/// `SETACTIVE ""` switches every script off.
pub fn setactive(name: Option<&str>) -> Command {
    build(
        "SETACTIVE",
        &[string_arg(name.unwrap_or_default().as_bytes())],
    )
}

/// A string argument: quoted when it can be (escaping `"` and `\`), a non-synchronising
/// literal `{N+}` when it holds line breaks or NUL, or is long.
pub fn string_arg(s: &[u8]) -> Vec<u8> {
    if s.len() <= 1024 && !s.iter().any(|&b| matches!(b, b'\r' | b'\n' | 0)) {
        let mut out = Vec::with_capacity(s.len() + 2);
        out.push(b'"');
        for &b in s {
            if b == b'"' || b == b'\\' {
                out.push(b'\\');
            }
            out.push(b);
        }
        out.push(b'"');
        out
    } else {
        literal_arg(s)
    }
}

/// `{N+}` CRLF and the bytes: how scripts travel to the server (RFC 5804 has clients
/// send non-synchronising literals; there is no continuation to wait for).
pub fn literal_arg(s: &[u8]) -> Vec<u8> {
    let mut out = format!("{{{}+}}\r\n", s.len()).into_bytes();
    out.extend_from_slice(s);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::response::{Limits, Line, Value, parse_line};

    #[test]
    fn commands_are_spelled_as_rfc_5804_says() {
        assert_eq!(capability().bytes, b"CAPABILITY\r\n");
        assert_eq!(
            authenticate("PLAIN", "AGFsaWNlAHB3").bytes,
            b"AUTHENTICATE \"PLAIN\" \"AGFsaWNlAHB3\"\r\n"
        );
        assert_eq!(sasl_response("").bytes, b"\"\"\r\n");
        assert_eq!(getscript("a \"q\"").bytes, b"GETSCRIPT \"a \\\"q\\\"\"\r\n");
        assert_eq!(
            putscript("main", b"keep;\r\n").bytes,
            b"PUTSCRIPT \"main\" {7+}\r\nkeep;\r\n\r\n"
        );
        assert_eq!(checkscript(b"").bytes, b"CHECKSCRIPT {0+}\r\n\r\n");
        assert_eq!(setactive(None).bytes, b"SETACTIVE \"\"\r\n");
        assert_eq!(setactive(Some("v")).bytes, b"SETACTIVE \"v\"\r\n");
        let dbg = format!("{:?}", authenticate("PLAIN", "c2VjcmV0"));
        assert!(!dbg.contains("c2VjcmV0"), "{dbg}");
    }

    #[test]
    fn arguments_are_quoted_or_sent_as_literals() {
        assert_eq!(string_arg(b"plain"), b"\"plain\"");
        assert_eq!(string_arg(b"a \"q\" \\"), b"\"a \\\"q\\\" \\\\\"");
        assert_eq!(string_arg(b"two\r\nlines"), b"{10+}\r\ntwo\r\nlines");
        assert_eq!(literal_arg(b"keep;"), b"{5+}\r\nkeep;");
        // What we send parses back to what we meant.
        for arg in [&b"a \"q\" \\"[..], b"two\r\nlines", &[b'x'; 2000]] {
            let mut wire = string_arg(arg);
            wire.extend_from_slice(b"\r\n");
            let (line, n) = parse_line(&wire, &Limits::default()).unwrap().unwrap();
            assert_eq!(n, wire.len());
            assert_eq!(line, Line::Data(vec![Value::Str(arg.to_vec())]));
        }
    }
}
