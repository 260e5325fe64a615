//! What clients read, rendered from settings: pure functions, no I/O. Each format has
//! its module: [`autoconfig`] (Thunderbird and friends), [`autodiscover`] (Outlook),
//! [`mobileconfig`] (Apple), [`page`] (the settings page and printable sheet).

pub mod autoconfig;
pub mod autodiscover;
pub mod mobileconfig;
pub mod page;
mod xml;

pub use autoconfig::autoconfig;
pub use autodiscover::{AutodiscoverRequest, error_response, parse_request, settings_response};
pub use mobileconfig::{mobileconfig, profile_uuids};
pub use page::{index_page, security_label, settings_page};

#[cfg(test)]
pub(crate) mod tests {
    use crate::settings::*;
    use mailshift_core::endpoint::Security;

    /// A domain whose names need escaping.
    pub fn acme() -> DomainSettings {
        DomainSettings {
            domain: "acme.example".into(),
            display_name: "Acme & Co <Mail>".into(),
            organization: Some("Acme & Co".into()),
            imap: Server {
                host: "imap.new.example".into(),
                port: 993,
                security: Security::Tls,
            },
            smtp: Server {
                host: "smtp.new.example".into(),
                port: 587,
                security: Security::StartTls,
            },
            login: LoginForm::Address,
            password: PasswordNote::Unchanged,
        }
    }

    pub fn alice() -> UserSettings {
        UserSettings::new("alice@acme.example", "alice@acme.example")
    }
}
