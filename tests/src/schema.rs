//! Checks mailshift's `--json` documents against the schemas it publishes in
//! `docs/json/`: the document names its schema (`"schema": "mailshift/<command>/v1"`)
//! and must validate against `docs/json/<command>.v1.schema.json`, formats included
//! (`date-time` is RFC 3339).

use std::path::PathBuf;

/// Where the published schemas are.
pub fn dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../docs/json")
}

/// The schema file a document's `schema` tag names.
pub fn file_for(tag: &str) -> PathBuf {
    let mut parts = tag.split('/');
    let (Some("mailshift"), Some(command), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        panic!("`{tag}` is not a schema tag of the form mailshift/<command>/v<N>");
    };
    dir().join(format!("{command}.{version}.schema.json"))
}

/// Reads a schema file, checking it is itself a valid JSON Schema.
pub fn load(path: &std::path::Path) -> serde_json::Value {
    let text = std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    let schema: serde_json::Value = serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("{} is not JSON: {e}", path.display()));
    if let Err(e) = jsonschema::meta::validate(&schema) {
        panic!("{} is not a valid JSON Schema: {e}", path.display());
    }
    schema
}

/// Validates `doc` against the schema it names; panics listing every violation.
pub fn validate(doc: &serde_json::Value) {
    let tag = doc["schema"]
        .as_str()
        .unwrap_or_else(|| panic!("the document names no schema:\n{doc:#}"));
    validate_as(tag, doc);
}

/// Validates `doc` against the schema `tag` (which it must also name).
pub fn validate_as(tag: &str, doc: &serde_json::Value) {
    assert_eq!(doc["schema"], tag, "schema tag:\n{doc:#}");
    let path = file_for(tag);
    let schema = load(&path);
    let validator = jsonschema::options()
        .should_validate_formats(true)
        .build(&schema)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let errors: Vec<String> = validator
        .iter_errors(doc)
        .map(|e| format!("  at {}: {e}", e.instance_path()))
        .collect();
    assert!(
        errors.is_empty(),
        "the document does not match {}:\n{}\n{doc:#}",
        path.display(),
        errors.join("\n")
    );
}

/// Parses a command's stdout as one JSON document and validates it.
pub fn check(stdout: &[u8]) -> serde_json::Value {
    let doc: serde_json::Value = serde_json::from_slice(stdout).unwrap_or_else(|e| {
        panic!(
            "stdout is not one JSON document ({e}):\n{}",
            String::from_utf8_lossy(stdout)
        )
    });
    validate(&doc);
    doc
}
