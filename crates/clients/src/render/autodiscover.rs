//! Outlook's POX autodiscover (MS-OXDSCLI): the request Outlook POSTs to
//! `/autodiscover/autodiscover.xml`, and the "outlook/responseschema/2006a" answer with
//! one `Protocol` per server (IMAP, SMTP).
//!
//! The request is read with quick-xml, bounded ([`MAX_REQUEST_BYTES`], [`MAX_DEPTH`]),
//! with no DTD and no entity but XML's five and character references: nothing in a body
//! can make us expand, fetch or allocate beyond its size.
//!
//! The answer depends on the domain's settings and the address as given, never on
//! whether that address exists: a prober learns nothing from it.

use super::xml::Xml;
use crate::error::{Error, Result};
use crate::settings::{DomainSettings, Server};
use mailshift_core::endpoint::Security;
use quick_xml::events::Event;

pub const REQUEST_SCHEMA: &str =
    "http://schemas.microsoft.com/exchange/autodiscover/outlook/requestschema/2006";
pub const RESPONSE_SCHEMA: &str =
    "http://schemas.microsoft.com/exchange/autodiscover/outlook/responseschema/2006a";
const ENVELOPE_SCHEMA: &str =
    "http://schemas.microsoft.com/exchange/autodiscover/responseschema/2006";

/// Largest request body read (Outlook's are about 400 bytes).
pub const MAX_REQUEST_BYTES: usize = 16 * 1024;
/// Deepest element nesting accepted (Outlook's requests have 3 levels).
pub const MAX_DEPTH: usize = 8;

/// What an autodiscover request asks for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AutodiscoverRequest {
    /// `Request/EMailAddress`, trimmed, not validated.
    pub email: String,
    /// `Request/AcceptableResponseSchema`, if given.
    pub schema: Option<String>,
}

impl AutodiscoverRequest {
    /// Whether the client accepts the Outlook "2006a" answer we give (a request without
    /// a schema is taken to accept it).
    pub fn wants_outlook_settings(&self) -> bool {
        self.schema.as_deref().is_none_or(|s| s == RESPONSE_SCHEMA)
    }
}

/// Reads an autodiscover request body. Errors say what is wrong without echoing it.
pub fn parse_request(body: &[u8]) -> Result<AutodiscoverRequest> {
    if body.len() > MAX_REQUEST_BYTES {
        return Err(Error::bad_request(format!(
            "the autodiscover request is larger than {MAX_REQUEST_BYTES} bytes"
        )));
    }
    let malformed =
        |why: String| Error::bad_request(format!("malformed autodiscover request: {why}"));
    let mut reader = quick_xml::Reader::from_reader(body);
    let mut path: Vec<String> = Vec::new();
    let mut email: Option<String> = None;
    let mut schema: Option<String> = None;
    let mut seen_root = false;
    loop {
        let event = reader
            .read_event()
            .map_err(|e| malformed(format!("not well-formed XML ({e})")))?;
        match event {
            Event::Start(e) => {
                let name = e.local_name().as_ref().to_string();
                if path.is_empty() {
                    if seen_root {
                        return Err(malformed("more than one root element".into()));
                    }
                    if name != "Autodiscover" {
                        return Err(malformed("the root element is not <Autodiscover>".into()));
                    }
                    seen_root = true;
                }
                path.push(name);
                if path.len() > MAX_DEPTH {
                    return Err(malformed(format!(
                        "elements are nested deeper than {MAX_DEPTH} levels"
                    )));
                }
            }
            Event::Empty(e) => {
                if path.is_empty() {
                    return Err(malformed("the root element is empty".into()));
                }
                // <EMailAddress/> is an empty address: reported below as missing.
                let _ = e;
            }
            Event::End(_) => {
                path.pop();
            }
            Event::Text(t) => {
                append(&path, &t.xml10_content(), &mut email, &mut schema)?;
            }
            Event::CData(t) => {
                append(&path, &t.xml10_content(), &mut email, &mut schema)?;
            }
            Event::GeneralRef(r) => {
                // Only XML's own entities and character references: no DTD is read, so
                // nothing else can be defined, let alone expanded.
                let text = match r.resolve_char_ref() {
                    Ok(Some(c)) => c.to_string(),
                    _ => match quick_xml::escape::resolve_xml_entity(&r) {
                        Some(s) => s.to_string(),
                        None => {
                            return Err(malformed(
                                "it refers to an entity XML does not define".into(),
                            ));
                        }
                    },
                };
                append(&path, &text, &mut email, &mut schema)?;
            }
            Event::DocType(_) => {
                return Err(malformed("a DOCTYPE is not accepted".into()));
            }
            Event::Decl(_) | Event::Comment(_) | Event::PI(_) => {}
            Event::Eof => break,
        }
    }
    if !seen_root {
        return Err(malformed("there is no <Autodiscover> element".into()));
    }
    if !path.is_empty() {
        return Err(malformed("the document ends inside an element".into()));
    }
    let email = email.map(|e| e.trim().to_string()).unwrap_or_default();
    if email.is_empty() {
        return Err(malformed(
            "there is no <Request><EMailAddress> with an address".into(),
        ));
    }
    Ok(AutodiscoverRequest {
        email,
        schema: schema.map(|s| s.trim().to_string()),
    })
}

fn append(
    path: &[String],
    text: &str,
    email: &mut Option<String>,
    schema: &mut Option<String>,
) -> Result<()> {
    let target = match path {
        [root, req, leaf] if root == "Autodiscover" && req == "Request" => match leaf.as_str() {
            "EMailAddress" => email,
            "AcceptableResponseSchema" => schema,
            _ => return Ok(()),
        },
        _ => return Ok(()),
    };
    let s = target.get_or_insert_with(String::new);
    if s.len() + text.len() > 1024 {
        return Err(Error::bad_request(
            "malformed autodiscover request: a value is longer than 1024 bytes",
        ));
    }
    s.push_str(text);
    Ok(())
}

/// The settings answer for `address` (validated by the caller) on domain `d`. The login
/// name is derived from the address when the domain's login form allows it; otherwise
/// it is left out (Outlook asks the user), whoever the address belongs to.
pub fn settings_response(d: &DomainSettings, address: &str) -> String {
    response(d, d.login.derive(address).as_deref())
}

/// The answer a static web server can give to every address: no login name, so
/// Outlook uses the address (or asks).
pub fn static_response(d: &DomainSettings) -> String {
    response(d, None)
}

fn response(d: &DomainSettings, login: Option<&str>) -> String {
    let mut x = Xml::new();
    x.open("Autodiscover", &[("xmlns", ENVELOPE_SCHEMA)]);
    x.open("Response", &[("xmlns", RESPONSE_SCHEMA)]);
    x.open("Account", &[]);
    x.leaf("AccountType", "email");
    x.leaf("Action", "settings");
    protocol(&mut x, "IMAP", &d.imap, login);
    protocol(&mut x, "SMTP", &d.smtp, login);
    x.close("Account");
    x.close("Response");
    x.close("Autodiscover");
    x.finish()
}

fn protocol(x: &mut Xml, kind: &str, s: &Server, login: Option<&str>) {
    x.open("Protocol", &[]);
    x.leaf("Type", kind);
    x.leaf("Server", &s.host);
    x.leaf("Port", &s.port.to_string());
    x.leaf("DomainRequired", "off");
    if let Some(l) = login {
        x.leaf("LoginName", l);
    }
    x.leaf("SPA", "off");
    match s.security {
        Security::Tls => x.leaf("SSL", "on"),
        Security::StartTls => {
            // SSL alone would mean TLS from the first byte; Encryption (which takes
            // precedence in Outlook 2010 and later) asks for STARTTLS.
            x.leaf("SSL", "off");
            x.leaf("Encryption", "TLS");
        }
    }
    x.leaf("AuthRequired", "on");
    if kind == "SMTP" {
        x.leaf("UsePOPAuth", "off");
        x.leaf("SMTPLast", "off");
    }
    x.close("Protocol");
}

/// Autodiscover's error answer (ErrorCode 600 "Invalid Request", 601 "Provider is not
/// available"), the same for every address.
pub fn error_response(code: u16, message: &str) -> String {
    let mut x = Xml::new();
    x.open("Autodiscover", &[("xmlns", ENVELOPE_SCHEMA)]);
    x.open("Response", &[]);
    x.open("Error", &[("Id", "0"), ("Time", "00:00:00.0000000")]);
    x.leaf("ErrorCode", &code.to_string());
    x.leaf("Message", message);
    x.leaf("DebugData", "");
    x.close("Error");
    x.close("Response");
    x.close("Autodiscover");
    x.finish()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::render::tests::acme;
    use crate::settings::LoginForm;

    /// Byte for byte what Outlook 2016 sends.
    pub(crate) fn outlook_request(address: &str) -> String {
        format!(
            "<?xml version=\"1.0\" encoding=\"utf-8\"?><Autodiscover xmlns=\"{REQUEST_SCHEMA}\"><Request><EMailAddress>{address}</EMailAddress><AcceptableResponseSchema>{RESPONSE_SCHEMA}</AcceptableResponseSchema></Request></Autodiscover>"
        )
    }

    #[test]
    fn reads_outlooks_request() {
        let r = parse_request(outlook_request("alice@acme.example").as_bytes()).unwrap();
        assert_eq!(r.email, "alice@acme.example");
        assert!(r.wants_outlook_settings());
        // Prefixed namespaces, whitespace, references.
        let r = parse_request(
            br#"<?xml version="1.0"?>
<a:Autodiscover xmlns:a="x"><a:Request>
  <a:EMailAddress> bob&#64;acme.example </a:EMailAddress>
  <a:AcceptableResponseSchema>http://schemas.microsoft.com/exchange/autodiscover/mobilesync/responseschema/2006</a:AcceptableResponseSchema>
</a:Request></a:Autodiscover>"#,
        )
        .unwrap();
        assert_eq!(r.email, "bob@acme.example");
        assert!(!r.wants_outlook_settings());
    }

    #[test]
    fn refuses_what_is_not_a_request_without_echoing_it() {
        let billion_laughs = br#"<?xml version="1.0"?>
<!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;&lol;&lol;">]>
<Autodiscover><Request><EMailAddress>&lol2;</EMailAddress></Request></Autodiscover>"#;
        let deep = format!(
            "<Autodiscover>{}{}</Autodiscover>",
            "<a>".repeat(20),
            "</a>".repeat(20)
        );
        let big = vec![b' '; MAX_REQUEST_BYTES + 1];
        let cases: Vec<(&[u8], &str)> = vec![
            (b"", "no <Autodiscover>"),
            (b"secret-token-xyz", "no <Autodiscover>"),
            (b"<Autodiscover><Request>", "ends inside"),
            (b"<Autodiscover></Request>", "not well-formed"),
            (b"<Other><secret-token-xyz/></Other>", "root element"),
            (b"<Autodiscover><Request></Request></Autodiscover>", "EMailAddress"),
            (
                b"<Autodiscover><Request><EMailAddress>&ext;</EMailAddress></Request></Autodiscover>",
                "entity",
            ),
            (billion_laughs, "DOCTYPE"),
            (deep.as_bytes(), "nested"),
            (&big, "larger than"),
        ];
        for (body, why) in cases {
            let err = parse_request(body).unwrap_err().to_string();
            assert!(err.contains(why), "{err} (wanted '{why}')");
            assert!(!err.contains("secret-token-xyz"), "{err}");
        }
    }

    #[test]
    fn answers_with_both_protocols() {
        let x = settings_response(&acme(), "alice@acme.example");
        assert!(x.contains("<AccountType>email</AccountType>"));
        assert!(x.contains("<Action>settings</Action>"));
        assert!(x.contains(
            "<Type>IMAP</Type>\n        <Server>imap.new.example</Server>\n        <Port>993</Port>"
        ));
        assert!(x.contains("<SSL>on</SSL>"));
        assert!(x.contains("<SSL>off</SSL>\n        <Encryption>TLS</Encryption>"));
        assert_eq!(
            x.matches("<LoginName>alice@acme.example</LoginName>")
                .count(),
            2
        );
        let mut d = acme();
        d.login = LoginForm::PerUser;
        assert!(!settings_response(&d, "alice@acme.example").contains("LoginName"));
        d.login = LoginForm::LocalPart;
        assert!(
            settings_response(&d, "alice@acme.example").contains("<LoginName>alice</LoginName>")
        );
    }

    #[test]
    fn error_answers_are_fixed() {
        let x = error_response(600, "Invalid Request");
        assert!(x.contains("<ErrorCode>600</ErrorCode>"));
        assert_eq!(x, error_response(600, "Invalid Request"));
    }
}
