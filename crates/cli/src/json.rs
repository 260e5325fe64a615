//! The `--json` documents. Every command given `--json` prints exactly one JSON document
//! on stdout (`migrate --follow` and `dns watch` one per line, as they go), errors
//! included, tagged with its schema: `"schema": "mailshift/<command>/v1"`, described by
//! `docs/json/<command>.v1.schema.json`. A new field keeps the version; a removed or
//! retyped one makes a `v2`. Times are RFC 3339 UTC strings (`mailshift_core::time`).

use serde::Serialize;

pub const MIGRATE: &str = "mailshift/migrate/v1";
pub const VERIFY: &str = "mailshift/verify/v1";
pub const STATUS: &str = "mailshift/status/v1";
pub const BATCH_STATUS: &str = "mailshift/batch-status/v1";
pub const BATCH_REPORT: &str = "mailshift/batch-report/v1";
pub const DNS_CHECK: &str = "mailshift/dns-check/v1";
pub const DOMAIN_STATUS: &str = "mailshift/domain-status/v1";
/// What any command prints with `--json` when it ends in an error of its own.
pub const ERROR: &str = "mailshift/error/v1";

/// `doc` (an object) with its `schema` tag.
pub fn tagged(schema: &str, doc: impl Serialize) -> serde_json::Result<serde_json::Value> {
    let mut v = serde_json::to_value(doc)?;
    match v.as_object_mut() {
        Some(o) => {
            o.insert("schema".into(), schema.into());
        }
        // Documents are objects by design; anything else is wrapped, never untagged.
        None => v = serde_json::json!({ "schema": schema, "value": v }),
    }
    Ok(v)
}

/// Prints `doc` tagged with `schema`, indented, on stdout.
pub fn print(schema: &str, doc: impl Serialize) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(&tagged(schema, doc)?)?);
    Ok(())
}

/// Prints `doc` tagged with `schema` on one line (a stream of documents).
pub fn print_line(schema: &str, doc: impl Serialize) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string(&tagged(schema, doc)?)?);
    Ok(())
}

/// Whether this process was asked for JSON (the error path has no parsed options).
pub fn wanted() -> bool {
    std::env::args_os().skip(1).any(|a| a == "--json")
}

/// The document for an error that ended a command: its message, the exit status it
/// leads to, and that status's meaning from the table in `exit`.
pub fn error_doc(message: &str, exit_status: u8) -> serde_json::Value {
    serde_json::json!({
        "schema": ERROR,
        "error": {
            "message": message,
            "exit_status": exit_status,
            "meaning": crate::exit::meaning(exit_status),
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn documents_carry_their_schema() {
        let v = tagged(STATUS, serde_json::json!({"mailboxes": []})).unwrap();
        assert_eq!(v["schema"], STATUS);
        let v = tagged(STATUS, [1, 2]).unwrap();
        assert_eq!(v["schema"], STATUS);
        assert_eq!(v["value"][1], 2);
        let e = error_doc("cannot open", 3);
        assert_eq!(e["error"]["exit_status"], 3);
        assert!(e["error"]["meaning"].as_str().unwrap().contains("reached"));
    }
}
