//! The per-user settings page, also the printable sheet an account manager hands out:
//! the new server's names, ports, security and login, what to do about the password,
//! and short steps for the common clients. Plain HTML with its stylesheet inline (a
//! print style included): no script, nothing loaded from elsewhere. Every value goes
//! through maud's escaping.

use crate::settings::{DomainSettings, PasswordNote, Server, UserSettings, url_segment};
use mailshift_core::endpoint::Security;
use maud::{DOCTYPE, Markup, PreEscaped, html};
use secrecy::ExposeSecret;

const STYLE: &str = r#"
:root { color-scheme: light; }
* { box-sizing: border-box; }
body { font: 16px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, "DejaVu Sans", sans-serif;
  color: #1d2330; background: #f3f5f8; margin: 0; }
main { max-width: 52rem; margin: 0 auto; padding: 1.5rem 1.25rem 3rem; background: #fff; }
header { border-bottom: 3px solid #2657a6; padding-bottom: .75rem; margin-bottom: 1rem; }
.org { margin: 0; color: #4b5563; font-weight: 600; letter-spacing: .02em; }
h1 { margin: .2rem 0; font-size: 1.7rem; }
h2 { font-size: 1.2rem; margin: 1.6rem 0 .5rem; color: #2657a6; }
h3 { font-size: 1rem; margin: 1rem 0 .25rem; }
.address { font-size: 1.15rem; font-weight: 600; margin: .2rem 0 0; word-break: break-all; }
table { border-collapse: collapse; width: 100%; margin: .25rem 0 .75rem; }
th, td { text-align: left; padding: .4rem .6rem; border: 1px solid #d5dbe5; vertical-align: top; }
th { background: #eef2f8; width: 30%; font-weight: 600; }
td { font-family: ui-monospace, "DejaVu Sans Mono", Menlo, Consolas, monospace; word-break: break-all; }
caption { text-align: left; font-weight: 700; padding: .3rem 0; }
.note { background: #fff8e1; border-left: 4px solid #e0a800; padding: .6rem .8rem; }
.password { font-family: ui-monospace, "DejaVu Sans Mono", monospace; font-size: 1.1rem; }
ol { padding-left: 1.3rem; margin: .25rem 0; }
li { margin: .15rem 0; }
.profile { display: inline-block; background: #2657a6; color: #fff; padding: .45rem .9rem;
  border-radius: 4px; text-decoration: none; font-weight: 600; }
.clients { columns: 2 22rem; column-gap: 2rem; }
.clients section { break-inside: avoid; }
footer { margin-top: 2rem; color: #6b7280; font-size: .85rem; }
@page { size: A4; margin: 14mm; }
@media print {
  body { background: #fff; font-size: 10.5pt; }
  main { max-width: none; padding: 0; }
  .screen-only { display: none; }
  .clients { columns: 2; }
  h2 { break-after: avoid; }
  table, .note, .clients section { break-inside: avoid; }
  a { color: inherit; text-decoration: none; }
}
"#;

/// How a security is called in client dialogs.
pub fn security_label(s: Security) -> &'static str {
    match s {
        Security::Tls => "SSL/TLS",
        Security::StartTls => "STARTTLS",
    }
}

/// A user's settings page. `profile_href` links the Apple profile (relative to the
/// page) when one is served beside it.
pub fn settings_page(d: &DomainSettings, u: &UserSettings, profile_href: Option<&str>) -> String {
    let title = format!("Mail settings for {}", u.address);
    let page = html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                meta name="referrer" content="no-referrer";
                meta name="robots" content="noindex";
                title { (title) }
                style { (PreEscaped(STYLE)) }
            }
            body {
                main {
                    header {
                        p.org { (d.organization.as_deref().unwrap_or(&d.display_name)) }
                        h1 { "Your new mail settings" }
                        p.address #address { (u.address) }
                    }
                    p {
                        "Your mailbox has moved to a new server. If your mail app still connects to "
                        "the old one, give it the settings below: change them in the existing "
                        "account (your app keeps what it has), or remove the account and add it again."
                    }
                    h2 { "Settings" }
                    (server_table("incoming", "Incoming mail (IMAP)", &d.imap, &u.login))
                    (server_table("outgoing", "Outgoing mail (SMTP, sending)", &d.smtp, &u.login))
                    p { "Outgoing mail needs authentication, with the same user name and password as incoming mail." }
                    (password(&d.password, u))
                    h2 { "Step by step" }
                    div.clients {
                        (steps(d, u, profile_href))
                    }
                    footer {
                        "Settings for " (d.display_name) " (" (d.domain) "). Keep this sheet: it contains no password"
                        @if u.password.is_some() { " other than the temporary one above" }
                        "."
                    }
                }
            }
        }
    };
    page.into_string()
}

fn server_table(id: &str, caption: &str, s: &Server, login: &str) -> Markup {
    html! {
        table #(id) {
            caption { (caption) }
            tr { th { "Server" } td #(format!("{id}-host")) { (s.host) } }
            tr { th { "Port" } td #(format!("{id}-port")) { (s.port) } }
            tr { th { "Security" } td #(format!("{id}-security")) { (security_label(s.security)) } }
            tr { th { "User name" } td #(format!("{id}-login")) { (login) } }
            tr { th { "Authentication" } td { "Normal password" } }
        }
    }
}

fn password(p: &PasswordNote, u: &UserSettings) -> Markup {
    html! {
        div.note #password-note {
            @match p {
                PasswordNote::Unchanged => {
                    strong { "Password: " } "unchanged. Use the password you had on the old server."
                }
                PasswordNote::Temporary { source } => {
                    strong { "Password: " } "you get a temporary password " (source) ". "
                    "Change it after your first login."
                    @if let Some(pw) = &u.password {
                        br;
                        "Your temporary password: " span.password #temporary-password { (pw.expose_secret()) }
                    }
                }
            }
        }
    }
}

fn steps(d: &DomainSettings, u: &UserSettings, profile_href: Option<&str>) -> Markup {
    let imap = format!(
        "{} port {} ({})",
        d.imap.host,
        d.imap.port,
        security_label(d.imap.security)
    );
    let smtp = format!(
        "{} port {} ({})",
        d.smtp.host,
        d.smtp.port,
        security_label(d.smtp.security)
    );
    html! {
        section #steps-thunderbird {
            h3 { "Thunderbird (Windows, Mac, Linux)" }
            ol {
                li { "Account Settings, then Server Settings of " (u.address) ": set Server Name to " (imap) " and User Name to " (u.login) "." }
                li { "Outgoing Server (SMTP), at the bottom of the list: Edit, and set " (smtp) ", Normal password." }
                li { "Or add the account again (Account Actions, Add Mail Account): Thunderbird finds the new settings itself." }
            }
        }
        section #steps-outlook {
            h3 { "Outlook (Windows)" }
            ol {
                li { "File, Account Settings, Account Settings; select " (u.address) " and choose Change (or Repair, then Advanced options)." }
                li { "Incoming mail: " (imap) "; outgoing mail: " (smtp) "; user name " (u.login) "." }
                li { "New Outlook: remove the account and add it again with your address; it finds the settings itself." }
            }
        }
        section #steps-apple {
            h3 { "Apple Mail (iPhone, iPad, Mac)" }
            ol {
                @if let Some(href) = profile_href {
                    li.screen-only { "On the device, open " a.profile #profile-link href=(href) download { "the settings profile" } ", then Settings, Profile Downloaded, Install." }
                }
                li { "Or by hand: Settings, Mail, Accounts, " (u.address) ", Account: incoming " (imap) ", outgoing (SMTP) " (smtp) ", user name " (u.login) "." }
                li { "On a Mac: Mail, Settings, Accounts, Server Settings; untick \"Automatically manage connection settings\" to enter the ports." }
            }
        }
        section #steps-android {
            h3 { "Android: Thunderbird, K-9 Mail" }
            ol {
                li { "Settings, the account, Fetching mail, Incoming server: " (imap) ", user name " (u.login) "." }
                li { "Sending mail, Outgoing server: " (smtp) ", require sign-in." }
                li { "Or remove the account and add it again: the app finds the settings from your address." }
            }
        }
        section #steps-gmail {
            h3 { "Gmail app (Android, iPhone)" }
            ol {
                li { "Settings, Add account, Other; enter " (u.address) " and choose Personal (IMAP)." }
                li { "Incoming server settings: " (imap) ", user name " (u.login) "." }
                li { "Outgoing server settings: " (smtp) ", require sign-in. Then remove the old account." }
            }
        }
    }
}

/// The export's index: every user of the batch with their page and profile, for the
/// account manager (not for publishing: it lists every address).
pub fn index_page(d: &DomainSettings, users: &[UserSettings], with_profiles: bool) -> String {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="robots" content="noindex";
                title { "Client settings: " (d.display_name) }
                style { (PreEscaped(STYLE)) }
            }
            body {
                main {
                    header {
                        p.org { (d.domain) }
                        h1 { "Client settings: " (d.display_name) }
                    }
                    (server_table("incoming", "Incoming mail (IMAP)", &d.imap, login_hint(d)))
                    (server_table("outgoing", "Outgoing mail (SMTP)", &d.smtp, login_hint(d)))
                    table #users {
                        caption { (users.len()) " users" }
                        tr { th { "Address" } th { "Login" } th { "Sheet" } @if with_profiles { th { "Apple profile" } } }
                        @for u in users {
                            tr {
                                td { (u.address) }
                                td { (u.login) }
                                td { a href=(format!("clients/{}.html", url_segment(&u.address))) { "sheet" } }
                                @if with_profiles {
                                    td { a href=(format!("clients/{}.mobileconfig", url_segment(&u.address))) { "profile" } }
                                }
                            }
                        }
                    }
                }
            }
        }
    }
    .into_string()
}

fn login_hint(d: &DomainSettings) -> &'static str {
    match d.login {
        crate::settings::LoginForm::Address => "the full email address",
        crate::settings::LoginForm::LocalPart => "the part before the @",
        crate::settings::LoginForm::PerUser => "each user's own (see their sheet)",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::render::tests::{acme, alice};

    #[test]
    fn the_page_shows_the_settings_and_no_script() {
        let h = settings_page(&acme(), &alice(), Some("./alice@acme.example.mobileconfig"));
        for needle in [
            "<td id=\"incoming-host\">imap.new.example</td>",
            "<td id=\"incoming-port\">993</td>",
            "<td id=\"incoming-security\">SSL/TLS</td>",
            "<td id=\"outgoing-port\">587</td>",
            "<td id=\"outgoing-security\">STARTTLS</td>",
            "<td id=\"outgoing-login\">alice@acme.example</td>",
            "unchanged",
            "Thunderbird",
            "Outlook",
            "Apple Mail",
            "K-9 Mail",
            "Gmail app",
            "href=\"./alice@acme.example.mobileconfig\"",
            "@media print",
        ] {
            assert!(h.contains(needle), "{needle} missing");
        }
        let lower = h.to_lowercase();
        assert!(!lower.contains("<script"));
        assert!(!lower.contains("src="));
        assert!(!lower.contains("http://") && !lower.contains("https://"));
    }

    #[test]
    fn user_text_is_escaped() {
        let mut d = acme();
        d.password = PasswordNote::Temporary {
            source: "<script>alert(1)</script> by SMS".into(),
        };
        let mut u = alice();
        u.login = "\"><img src=x onerror=alert(1)>".into();
        let h = settings_page(&d, &u, None);
        assert!(!h.contains("<script>alert"));
        assert!(!h.contains("<img"));
        assert!(h.contains("&lt;script&gt;alert(1)&lt;/script&gt; by SMS"));
        assert!(h.contains("&lt;/Mail&gt;") || h.contains("Acme &amp; Co"));
    }

    #[test]
    fn a_temporary_password_only_when_included() {
        let mut d = acme();
        d.password = PasswordNote::Temporary {
            source: "in a text message".into(),
        };
        let mut u = alice();
        assert!(!settings_page(&d, &u, None).contains("temporary-password"));
        u.password = Some("Temp-1234".to_string().into());
        let h = settings_page(&d, &u, None);
        assert!(h.contains("<span class=\"password\" id=\"temporary-password\">Temp-1234</span>"));
    }

    #[test]
    fn the_index_links_every_user() {
        let mut bob = alice();
        bob.address = "b#b@acme.example".into();
        let h = index_page(&acme(), &[alice(), bob], true);
        assert!(h.contains("href=\"clients/alice@acme.example.html\""));
        assert!(h.contains("href=\"clients/b%23b@acme.example.mobileconfig\""));
    }
}
