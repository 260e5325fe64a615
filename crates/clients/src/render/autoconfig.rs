//! Thunderbird autoconfig (`config-v1.1.xml`, the "clientConfig" format version 1.1),
//! which Thunderbird, K-9/Thunderbird for Android, Evolution, KMail and others read at
//! `autoconfig.DOMAIN/mail/config-v1.1.xml` or `DOMAIN/.well-known/autoconfig/mail/
//! config-v1.1.xml`.
//!
//! The file depends on the domain only: the user name is a placeholder
//! (`%EMAILADDRESS%`, `%EMAILLOCALPART%`) the client fills in, or absent when each user
//! has a login of their own (the client then asks), so it says nothing about who exists.

use super::xml::{Xml, socket_type};
use crate::settings::{DomainSettings, LoginForm, Server};

/// The autoconfig document of a domain.
pub fn autoconfig(d: &DomainSettings) -> String {
    let username = match d.login {
        LoginForm::Address => Some("%EMAILADDRESS%"),
        LoginForm::LocalPart => Some("%EMAILLOCALPART%"),
        LoginForm::PerUser => None,
    };
    let mut x = Xml::new();
    x.open("clientConfig", &[("version", "1.1")]);
    x.open("emailProvider", &[("id", &d.domain)]);
    x.leaf("domain", &d.domain);
    x.leaf("displayName", &d.display_name);
    x.leaf("displayShortName", &d.display_name);
    server(&mut x, "incomingServer", "imap", &d.imap, username);
    server(&mut x, "outgoingServer", "smtp", &d.smtp, username);
    x.close("emailProvider");
    x.close("clientConfig");
    x.finish()
}

fn server(x: &mut Xml, element: &str, kind: &str, s: &Server, username: Option<&str>) {
    x.open(element, &[("type", kind)]);
    x.leaf("hostname", &s.host);
    x.leaf("port", &s.port.to_string());
    x.leaf("socketType", socket_type(s.security));
    if let Some(u) = username {
        x.leaf("username", u);
    }
    x.leaf("authentication", "password-cleartext");
    x.close(element);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::render::tests::acme;

    #[test]
    fn a_domain_becomes_a_client_config() {
        let xml = autoconfig(&acme());
        let expected = r#"<?xml version="1.0" encoding="UTF-8"?>
<clientConfig version="1.1">
  <emailProvider id="acme.example">
    <domain>acme.example</domain>
    <displayName>Acme &amp; Co &lt;Mail&gt;</displayName>
    <displayShortName>Acme &amp; Co &lt;Mail&gt;</displayShortName>
    <incomingServer type="imap">
      <hostname>imap.new.example</hostname>
      <port>993</port>
      <socketType>SSL</socketType>
      <username>%EMAILADDRESS%</username>
      <authentication>password-cleartext</authentication>
    </incomingServer>
    <outgoingServer type="smtp">
      <hostname>smtp.new.example</hostname>
      <port>587</port>
      <socketType>STARTTLS</socketType>
      <username>%EMAILADDRESS%</username>
      <authentication>password-cleartext</authentication>
    </outgoingServer>
  </emailProvider>
</clientConfig>
"#;
        assert_eq!(xml, expected);
    }

    #[test]
    fn login_forms_become_placeholders_or_nothing() {
        let mut d = acme();
        d.login = LoginForm::LocalPart;
        assert_eq!(
            autoconfig(&d)
                .matches("<username>%EMAILLOCALPART%</username>")
                .count(),
            2
        );
        d.login = LoginForm::PerUser;
        assert!(!autoconfig(&d).contains("<username>"));
    }
}
