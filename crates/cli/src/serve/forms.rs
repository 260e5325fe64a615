//! What the dashboard's forms send, and its checks: a form is parsed and validated here
//! before any handler acts on it.

use mailshift_engine::batches::{self as ops};
use serde::Deserialize;

#[derive(Deserialize)]
pub(crate) struct LoginForm {
    pub(crate) token: String,
}

#[derive(Deserialize)]
pub(crate) struct CsrfForm {
    #[serde(default)]
    pub(crate) csrf: String,
    #[serde(default)]
    pub(crate) action: String,
}

#[derive(Deserialize)]
pub(crate) struct PageQuery {
    #[serde(default)]
    pub(crate) offset: usize,
}

#[derive(Deserialize)]
pub(crate) struct ScheduleForm {
    #[serde(default)]
    pub(crate) csrf: String,
    #[serde(default)]
    pub(crate) start_at: String,
    #[serde(default)]
    pub(crate) interval: String,
    #[serde(default)]
    pub(crate) switch_at: String,
    #[serde(default)]
    pub(crate) complete_at: String,
    #[serde(default)]
    pub(crate) concurrency: String,
    #[serde(default)]
    pub(crate) per_host: String,
}

pub(crate) fn schedule_change(f: &ScheduleForm) -> Result<ops::ScheduleChange, String> {
    let time = |label: &str, v: &str| -> Result<Option<i64>, String> {
        let v = v.trim();
        if v.is_empty() {
            return Ok(None);
        }
        crate::dns::parse_time(v)
            .map(|t| Some(t.timestamp()))
            .map_err(|e| format!("{label}: {e}"))
    };
    let count = |label: &str, v: &str| -> Result<Option<u32>, String> {
        let v = v.trim();
        if v.is_empty() {
            return Ok(None);
        }
        v.parse::<u32>()
            .map(Some)
            .map_err(|_| format!("{label}: '{v}' is not a whole number"))
    };
    let interval = match f.interval.trim() {
        "" => None,
        v => Some(mailshift_core::batch::parse_interval(v)?),
    };
    Ok(ops::ScheduleChange {
        start_at: time("start at", &f.start_at)?,
        interval_secs: interval,
        switch_at: time("MX switch at", &f.switch_at)?,
        complete_at: time("complete at", &f.complete_at)?,
        concurrency: count("mailboxes at once", &f.concurrency)?,
        host_concurrency: count("per old server", &f.per_host)?,
        domain: None,
    })
}

/// The mailbox page's "fix password" form. (No Debug: it holds a password.)
#[derive(Deserialize)]
pub(crate) struct PasswordForm {
    #[serde(default)]
    pub(crate) csrf: String,
    #[serde(default)]
    pub(crate) side: String,
    #[serde(default)]
    pub(crate) password: String,
}

impl PasswordForm {
    /// Which server, and the password as a secret; what is wrong otherwise.
    pub(crate) fn parse(
        self,
    ) -> Result<(mailshift_core::ports::Side, secrecy::SecretString), String> {
        let side = match self.side.as_str() {
            "source" => mailshift_core::ports::Side::Source,
            "dest" => mailshift_core::ports::Side::Dest,
            _ => return Err("choose the old or the new server".into()),
        };
        if self.password.is_empty() {
            return Err("the new password is empty".into());
        }
        Ok((side, secrecy::SecretString::from(self.password)))
    }
}

/// The batch page's "DNS check parameters" form.
#[derive(Deserialize)]
pub(crate) struct DnsForm {
    #[serde(default)]
    pub(crate) csrf: String,
    #[serde(default)]
    pub(crate) new_mx: String,
    #[serde(default)]
    pub(crate) spf_include: String,
    #[serde(default)]
    pub(crate) dkim_selectors: String,
}

impl DnsForm {
    /// The parameters, normalised (`core::cutover::DnsParams::parse`).
    pub(crate) fn parse(&self) -> Result<ops::DnsParams, String> {
        ops::DnsParams::parse(&self.new_mx, &self.spf_include, &self.dkim_selectors)
    }
}
