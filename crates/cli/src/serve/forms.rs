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
    /// The parameters, normalised (lower case, no trailing dot); what is wrong otherwise.
    pub(crate) fn parse(&self) -> Result<ops::DnsParams, String> {
        let new_mx = self.new_mx.trim();
        if new_mx.is_empty() {
            return Err(
                "new MX host: enter the new provider's MX host, e.g. mx.new.example".into(),
            );
        }
        let new_mx = host("new MX host", new_mx, false)?;
        let spf_include = match self.spf_include.trim() {
            "" => None,
            v => Some(host("SPF include", v, true)?),
        };
        let mut dkim_selectors = Vec::new();
        for sel in self
            .dkim_selectors
            .split(|c: char| c == ',' || c.is_whitespace())
            .filter(|s| !s.is_empty())
        {
            let sel = selector(sel)?;
            if !dkim_selectors.contains(&sel) {
                dkim_selectors.push(sel);
            }
        }
        if dkim_selectors.len() > MAX_SELECTORS {
            return Err(format!(
                "DKIM selectors: at most {MAX_SELECTORS}, {} given",
                dkim_selectors.len()
            ));
        }
        Ok(ops::DnsParams {
            new_mx,
            spf_include,
            dkim_selectors,
        })
    }
}

/// More selectors than this is a paste gone wrong, not a provider's setup (each one is a
/// DNS query per check).
const MAX_SELECTORS: usize = 10;

/// Whether `label` is a DNS label: 1 to 63 letters, digits and hyphens (underscores too
/// where `underscore`, as in `_spf.provider.example`), not starting or ending with a hyphen.
fn dns_label(label: &str, underscore: bool) -> bool {
    !label.is_empty()
        && label.len() <= 63
        && !label.starts_with('-')
        && !label.ends_with('-')
        && label
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || (underscore && b == b'_'))
}

/// A host name of two labels or more, lower-cased and without its trailing dot.
fn host(what: &str, v: &str, underscore: bool) -> Result<String, String> {
    let h = v.trim_end_matches('.').to_ascii_lowercase();
    let labels: Vec<&str> = h.split('.').collect();
    if h.len() > 253 || labels.len() < 2 || !labels.iter().all(|l| dns_label(l, underscore)) {
        return Err(format!(
            "{what}: '{v}' is not a host name (letters, digits and hyphens in dot-separated \
             parts, e.g. mx.new.example)"
        ));
    }
    Ok(h)
}

/// A DKIM selector (RFC 6376: one or more dot-separated labels), lower-cased.
fn selector(v: &str) -> Result<String, String> {
    let s = v.to_ascii_lowercase();
    if s.len() > 253 || !s.split('.').all(|l| dns_label(l, true)) {
        return Err(format!(
            "DKIM selectors: '{v}' is not a selector (letters, digits, hyphens and \
             underscores, e.g. selector1); separate several with commas"
        ));
    }
    Ok(s)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn form(mx: &str, spf: &str, dkim: &str) -> DnsForm {
        DnsForm {
            csrf: String::new(),
            new_mx: mx.into(),
            spf_include: spf.into(),
            dkim_selectors: dkim.into(),
        }
    }

    #[test]
    fn dns_parameters_are_normalised() {
        let p = form(
            " MX.New.Example. ",
            "_spf.Provider.example",
            "sel1, sel2 sel1,,s-3._x",
        )
        .parse()
        .unwrap();
        assert_eq!(p.new_mx, "mx.new.example");
        assert_eq!(p.spf_include.as_deref(), Some("_spf.provider.example"));
        assert_eq!(p.dkim_selectors, ["sel1", "sel2", "s-3._x"]);
        let p = form("mx.new.example", " ", "").parse().unwrap();
        assert_eq!((p.spf_include, p.dkim_selectors.len()), (None, 0));
    }

    #[test]
    fn bad_dns_parameters_say_which_and_why() {
        for (f, says) in [
            (form("", "", ""), "new MX host: enter"),
            (
                form("bad host!", "", ""),
                "new MX host: 'bad host!' is not a host name",
            ),
            (form("localhost", "", ""), "not a host name"),
            (form("-mx.example", "", ""), "not a host name"),
            (form("_mx.example", "", ""), "not a host name"),
            (
                form("mx.example", "spf..example", ""),
                "SPF include: 'spf..example'",
            ),
            (form("mx.example", "", "sel1, s/2"), "DKIM selectors: 's/2'"),
        ] {
            let e = f.parse().map(|_| ()).unwrap_err();
            assert!(e.contains(says), "{e}");
        }
        let many = (0..11)
            .map(|i| format!("s{i}"))
            .collect::<Vec<_>>()
            .join(",");
        assert!(
            form("mx.example", "", &many)
                .parse()
                .unwrap_err()
                .contains("at most 10")
        );
    }
}
