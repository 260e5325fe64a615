//! How times leave the program: every JSON document (`--json`, the HTTP API, stored
//! JSON) writes a time as an RFC 3339 UTC string (`2026-12-02T11:00:00Z`), whatever
//! the record keeps inside (unix seconds). Reading accepts both the string and the
//! unix seconds older documents and API clients send.
//!
//! Use with serde: `#[serde(with = "mailshift_core::time::unix")]` on an `i64`,
//! `#[serde(default, with = "mailshift_core::time::unix_opt")]` on an `Option<i64>`.

use chrono::{DateTime, SecondsFormat, Utc};

/// Unix seconds as RFC 3339 UTC, to the second (`2026-12-02T11:00:00Z`).
pub fn rfc3339(t: i64) -> String {
    DateTime::<Utc>::from_timestamp(t, 0)
        .unwrap_or_default()
        .to_rfc3339_opts(SecondsFormat::Secs, true)
}

/// An RFC 3339 time with any offset, or unix seconds in a string, as unix seconds.
pub fn parse(text: &str) -> Option<i64> {
    let text = text.trim();
    if let Ok(t) = text.parse::<i64>() {
        return Some(t);
    }
    DateTime::parse_from_rfc3339(text)
        .ok()
        .map(|d| d.timestamp())
}

/// An IMAP internal date (`17-Feb-2019 08:01:21 +0000`, RFC 3501) or an RFC 5322 date
/// header as RFC 3339 UTC; the text itself when it is neither (a broken header says
/// what it says).
pub fn imap_date_rfc3339(text: &str) -> String {
    let t = text.trim();
    DateTime::parse_from_str(t, "%d-%b-%Y %H:%M:%S %z")
        .or_else(|_| DateTime::parse_from_rfc2822(t))
        .or_else(|_| DateTime::parse_from_rfc3339(t))
        .map(|d| {
            d.with_timezone(&Utc)
                .to_rfc3339_opts(SecondsFormat::Secs, true)
        })
        .unwrap_or_else(|_| text.to_string())
}

/// Serializes an IMAP or header date as RFC 3339 UTC (see [`imap_date_rfc3339`]).
pub fn imap_date<S: serde::Serializer>(text: &str, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&imap_date_rfc3339(text))
}

/// The same for an optional date.
pub fn imap_date_opt<S: serde::Serializer>(text: &Option<String>, s: S) -> Result<S::Ok, S::Error> {
    match text {
        Some(t) => s.serialize_str(&imap_date_rfc3339(t)),
        None => s.serialize_none(),
    }
}

/// An RFC 3339 time kept as given (any offset) written in UTC; kept as is when it does
/// not parse.
pub fn utc_text_opt<S: serde::Serializer>(text: &Option<String>, s: S) -> Result<S::Ok, S::Error> {
    match text {
        Some(t) => match DateTime::parse_from_rfc3339(t.trim()) {
            Ok(d) => s.serialize_str(&rfc3339(d.timestamp())),
            Err(_) => s.serialize_str(t),
        },
        None => s.serialize_none(),
    }
}

/// A duration or rate to the millisecond (or thousandth): `12.345`, not
/// `12.345000000000001`.
pub fn thousandths<S: serde::Serializer>(v: &f64, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_f64((v * 1000.0).round() / 1000.0)
}

/// The same for an optional value.
pub fn thousandths_opt<S: serde::Serializer>(v: &Option<f64>, s: S) -> Result<S::Ok, S::Error> {
    match v {
        Some(v) => thousandths(v, s),
        None => s.serialize_none(),
    }
}

#[derive(serde::Deserialize)]
#[serde(untagged)]
enum Either {
    Unix(i64),
    Text(String),
}

fn from_either<E: serde::de::Error>(v: Either) -> Result<i64, E> {
    match v {
        Either::Unix(t) => Ok(t),
        Either::Text(s) => parse(&s).ok_or_else(|| {
            E::custom(format!(
                "'{s}' is not a time: give RFC 3339 (2026-12-02T11:00:00Z) or unix seconds"
            ))
        }),
    }
}

/// `i64` unix seconds <-> RFC 3339 UTC.
pub mod unix {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(t: &i64, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&super::rfc3339(*t))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<i64, D::Error> {
        super::from_either(super::Either::deserialize(d)?)
    }
}

/// `Option<i64>` unix seconds <-> RFC 3339 UTC or null.
pub mod unix_opt {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(t: &Option<i64>, s: S) -> Result<S::Ok, S::Error> {
        match t {
            Some(t) => s.serialize_str(&super::rfc3339(*t)),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<i64>, D::Error> {
        Option::<super::Either>::deserialize(d)?
            .map(super::from_either)
            .transpose()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(serde::Serialize, serde::Deserialize, PartialEq, Debug)]
    struct T {
        #[serde(with = "unix")]
        at: i64,
        #[serde(default, with = "unix_opt")]
        maybe: Option<i64>,
    }

    #[test]
    fn written_as_rfc3339_utc_read_from_either() {
        let t = T {
            at: 1_764_673_200,
            maybe: None,
        };
        let text = serde_json::to_string(&t).unwrap();
        assert_eq!(text, r#"{"at":"2025-12-02T11:00:00Z","maybe":null}"#);
        assert_eq!(serde_json::from_str::<T>(&text).unwrap(), t);
        let old: T = serde_json::from_str(r#"{"at":1764673200,"maybe":1764673201}"#).unwrap();
        assert_eq!(old.maybe, Some(1_764_673_201));
        let offset: T = serde_json::from_str(r#"{"at":"2025-12-02T12:00:00+01:00"}"#).unwrap();
        assert_eq!(offset.at, 1_764_673_200);
        let bad = serde_json::from_str::<T>(r#"{"at":"tomorrow"}"#).unwrap_err();
        assert!(bad.to_string().contains("RFC 3339"), "{bad}");
    }

    #[test]
    fn imap_dates_become_utc() {
        assert_eq!(
            imap_date_rfc3339("17-Feb-2019 08:01:21 +0100"),
            "2019-02-17T07:01:21Z"
        );
        assert_eq!(
            imap_date_rfc3339("Sun, 17 Feb 2019 08:01:21 +0000"),
            "2019-02-17T08:01:21Z"
        );
        assert_eq!(imap_date_rfc3339("yesterday"), "yesterday");
    }
}
