//! Apple configuration profiles (`.mobileconfig`) for Mail on iOS, iPadOS and macOS: a
//! `Configuration` profile holding one `com.apple.mail.managed` payload (an IMAP
//! account). Identifiers and UUIDs are derived from the address (UUID v5), so a profile
//! exported again replaces the one installed instead of adding a second account.
//!
//! No password is put in unless the user's settings carry one (the operator asked for
//! it with a temporary password); the device then asks for it.

use crate::error::{Error, Result};
use crate::settings::{DomainSettings, UserSettings};
use mailshift_core::endpoint::Security;
use plist::{Dictionary, Value};
use secrecy::ExposeSecret;
use uuid::Uuid;

/// The namespace of mailshift's profile UUIDs (itself UUID v5 of a fixed name).
fn namespace() -> Uuid {
    Uuid::new_v5(&Uuid::NAMESPACE_DNS, b"clients.mailshift.invalid")
}

/// Stable UUIDs of a user's profile and of its mail payload.
pub fn profile_uuids(address: &str) -> (Uuid, Uuid) {
    let key = address.to_ascii_lowercase();
    let ns = namespace();
    (
        Uuid::new_v5(&ns, format!("profile:{key}").as_bytes()),
        Uuid::new_v5(&ns, format!("mail:{key}").as_bytes()),
    )
}

/// `example.acme` for `acme.example`: Apple wants reverse-DNS identifiers.
fn reverse_dns(domain: &str) -> String {
    domain.split('.').rev().collect::<Vec<_>>().join(".")
}

/// The profile of one user, as an XML plist (unsigned).
pub fn mobileconfig(d: &DomainSettings, u: &UserSettings) -> Result<Vec<u8>> {
    let (profile_uuid, mail_uuid) = profile_uuids(&u.address);
    let base = format!("{}.mailshift.{}", reverse_dns(&d.domain), profile_uuid);
    // Apple Mail's UseSSL means "encrypted": on a STARTTLS port it upgrades.
    let encrypted = |s: Security| matches!(s, Security::Tls | Security::StartTls);

    let mut mail = Dictionary::new();
    let mut put = |k: &str, v: Value| {
        mail.insert(k.to_string(), v);
    };
    put("EmailAccountDescription", d.display_name.clone().into());
    put(
        "EmailAccountName",
        u.name.clone().unwrap_or_else(|| u.address.clone()).into(),
    );
    put("EmailAccountType", "EmailTypeIMAP".into());
    put("EmailAddress", u.address.clone().into());
    put(
        "IncomingMailServerAuthentication",
        "EmailAuthPassword".into(),
    );
    put("IncomingMailServerHostName", d.imap.host.clone().into());
    put(
        "IncomingMailServerPortNumber",
        Value::Integer(u64::from(d.imap.port).into()),
    );
    put(
        "IncomingMailServerUseSSL",
        Value::Boolean(encrypted(d.imap.security)),
    );
    put("IncomingMailServerUsername", u.login.clone().into());
    if let Some(pw) = &u.password {
        put("IncomingPassword", pw.expose_secret().to_string().into());
    }
    put(
        "OutgoingMailServerAuthentication",
        "EmailAuthPassword".into(),
    );
    put("OutgoingMailServerHostName", d.smtp.host.clone().into());
    put(
        "OutgoingMailServerPortNumber",
        Value::Integer(u64::from(d.smtp.port).into()),
    );
    put(
        "OutgoingMailServerUseSSL",
        Value::Boolean(encrypted(d.smtp.security)),
    );
    put("OutgoingMailServerUsername", u.login.clone().into());
    put(
        "OutgoingPasswordSameAsIncomingPassword",
        Value::Boolean(true),
    );
    put(
        "PayloadDescription",
        format!("Mail account {} on {}", u.address, d.imap.host).into(),
    );
    put("PayloadDisplayName", d.display_name.clone().into());
    put("PayloadIdentifier", format!("{base}.mail").into());
    put("PayloadType", "com.apple.mail.managed".into());
    put("PayloadUUID", mail_uuid.to_string().to_uppercase().into());
    put("PayloadVersion", Value::Integer(1.into()));

    let mut profile = Dictionary::new();
    let mut put = |k: &str, v: Value| {
        profile.insert(k.to_string(), v);
    };
    put(
        "PayloadContent",
        Value::Array(vec![Value::Dictionary(mail)]),
    );
    put(
        "PayloadDescription",
        format!(
            "Sets up {} on the new mail server {}. Installing it adds the account to Mail.",
            u.address, d.imap.host
        )
        .into(),
    );
    put(
        "PayloadDisplayName",
        format!("{}: {}", d.display_name, u.address).into(),
    );
    put("PayloadIdentifier", base.into());
    if let Some(org) = &d.organization {
        put("PayloadOrganization", org.clone().into());
    }
    put("PayloadRemovalDisallowed", Value::Boolean(false));
    put("PayloadType", "Configuration".into());
    put(
        "PayloadUUID",
        profile_uuid.to_string().to_uppercase().into(),
    );
    put("PayloadVersion", Value::Integer(1.into()));

    let mut out = Vec::new();
    Value::Dictionary(profile)
        .to_writer_xml(&mut out)
        .map_err(|e| Error::Plist(e.to_string()))?;
    out.push(b'\n');
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::render::tests::{acme, alice};

    fn parse(bytes: &[u8]) -> Dictionary {
        plist::Value::from_reader_xml(bytes)
            .unwrap()
            .into_dictionary()
            .unwrap()
    }

    #[test]
    fn a_profile_holds_one_imap_account_and_no_password() {
        let bytes = mobileconfig(&acme(), &alice()).unwrap();
        let text = String::from_utf8(bytes.clone()).unwrap();
        assert!(text.starts_with("<?xml"), "{text}");
        assert!(!text.contains("<key>IncomingPassword</key>"), "{text}");
        assert!(!text.contains("<key>OutgoingPassword</key>"), "{text}");
        let p = parse(&bytes);
        assert_eq!(p["PayloadType"].as_string(), Some("Configuration"));
        let mail = p["PayloadContent"].as_array().unwrap()[0]
            .as_dictionary()
            .unwrap();
        assert_eq!(
            mail["PayloadType"].as_string(),
            Some("com.apple.mail.managed")
        );
        assert_eq!(mail["EmailAccountType"].as_string(), Some("EmailTypeIMAP"));
        assert_eq!(mail["EmailAddress"].as_string(), Some("alice@acme.example"));
        assert_eq!(
            mail["IncomingMailServerHostName"].as_string(),
            Some("imap.new.example")
        );
        assert_eq!(
            mail["IncomingMailServerPortNumber"].as_unsigned_integer(),
            Some(993)
        );
        assert_eq!(
            mail["OutgoingMailServerPortNumber"].as_unsigned_integer(),
            Some(587)
        );
        assert_eq!(mail["OutgoingMailServerUseSSL"].as_boolean(), Some(true));
        assert_eq!(
            mail["IncomingMailServerUsername"].as_string(),
            Some("alice@acme.example")
        );
        assert_eq!(p["PayloadOrganization"].as_string(), Some("Acme & Co"));
    }

    #[test]
    fn identifiers_are_stable_per_user() {
        let a = mobileconfig(&acme(), &alice()).unwrap();
        assert_eq!(a, mobileconfig(&acme(), &alice()).unwrap());
        let mut bob = alice();
        bob.address = "bob@acme.example".into();
        let b = parse(&mobileconfig(&acme(), &bob).unwrap());
        let a = parse(&a);
        assert_ne!(a["PayloadUUID"], b["PayloadUUID"]);
        assert_ne!(a["PayloadIdentifier"], b["PayloadIdentifier"]);
        assert!(
            a["PayloadIdentifier"]
                .as_string()
                .unwrap()
                .starts_with("example.acme.mailshift.")
        );
        let (p, m) = profile_uuids("Alice@acme.example");
        assert_eq!(p.get_version_num(), 5);
        assert_ne!(p, m);
        assert_eq!(profile_uuids("alice@acme.example"), (p, m));
    }

    #[test]
    fn a_password_only_when_given() {
        let mut u = alice();
        u.password = Some("Temp-1234".to_string().into());
        let p = parse(&mobileconfig(&acme(), &u).unwrap());
        let mail = p["PayloadContent"].as_array().unwrap()[0]
            .as_dictionary()
            .unwrap();
        assert_eq!(mail["IncomingPassword"].as_string(), Some("Temp-1234"));
        assert!(!format!("{u:?}").contains("Temp-1234"));
    }

    #[test]
    fn user_text_is_escaped() {
        let mut u = alice();
        u.name = Some("</string><key>x</key>".into());
        let p = parse(&mobileconfig(&acme(), &u).unwrap());
        let mail = p["PayloadContent"].as_array().unwrap()[0]
            .as_dictionary()
            .unwrap();
        assert_eq!(
            mail["EmailAccountName"].as_string(),
            Some("</string><key>x</key>")
        );
        assert!(!mail.contains_key("x"));
    }
}
