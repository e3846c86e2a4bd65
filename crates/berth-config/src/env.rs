//! `BERTH_*` environment overrides.
//!
//! Each known key path (`database.url`, `storage.s3.bucket`, `listen`) has one
//! variable name: `BERTH_` + the path upper-cased with `.` replaced by `_`.
//! Values are read according to the type of the key's default: strings stay
//! strings (so a password `123` is not turned into a number), booleans and
//! numbers are parsed, lists take JSON/TOML array syntax or comma-separated
//! items. Variables that match no key (`BERTH_TEST_*` used by tests) are ignored.

use std::collections::BTreeMap;

use serde_json::{Map, Value};

use crate::Config;

pub const PREFIX: &str = "BERTH_";

/// Every leaf key path with its default value, e.g. `("database.url", "")`.
pub fn known_keys() -> BTreeMap<String, Value> {
    let defaults = serde_json::to_value(Config::default()).expect("config serialises");
    let mut out = BTreeMap::new();
    flatten("", &defaults, &mut out);
    out
}

fn flatten(prefix: &str, v: &Value, out: &mut BTreeMap<String, Value>) {
    match v {
        Value::Object(map) => {
            for (k, child) in map {
                let path = if prefix.is_empty() { k.clone() } else { format!("{prefix}.{k}") };
                flatten(&path, child, out);
            }
        }
        leaf => {
            out.insert(prefix.to_owned(), leaf.clone());
        }
    }
}

/// The variable name for a key path.
pub fn var_name(path: &str) -> String {
    format!("{PREFIX}{}", path.replace('.', "_").to_ascii_uppercase())
}

/// Nested override values for every recognised `BERTH_*` variable.
pub fn overrides(vars: impl IntoIterator<Item = (String, String)>) -> Result<Value, String> {
    let keys = known_keys();
    let by_var: BTreeMap<String, (&String, &Value)> = keys.iter().map(|(p, d)| (var_name(p), (p, d))).collect();
    let mut root = Map::new();
    for (name, raw) in vars {
        let Some((path, default)) = by_var.get(&name) else { continue };
        let value = parse_value(default, &raw).map_err(|e| format!("{name}: {e}"))?;
        insert(&mut root, path, value);
    }
    Ok(Value::Object(root))
}

fn parse_value(default: &Value, raw: &str) -> Result<Value, String> {
    let raw = raw.trim();
    match default {
        Value::Bool(_) => match raw.to_ascii_lowercase().as_str() {
            "true" | "1" | "yes" | "on" => Ok(Value::Bool(true)),
            "false" | "0" | "no" | "off" => Ok(Value::Bool(false)),
            _ => Err(format!("expected true or false, got {raw:?}")),
        },
        Value::Number(_) => raw.parse::<u64>().map(Value::from).map_err(|_| format!("expected a number, got {raw:?}")),
        Value::Array(_) => {
            if raw.starts_with('[') {
                serde_json::from_str(raw).map_err(|e| format!("expected a JSON array: {e}"))
            } else if raw.is_empty() {
                Ok(Value::Array(Vec::new()))
            } else {
                Ok(Value::Array(raw.split(',').map(|s| Value::String(s.trim().to_owned())).collect()))
            }
        }
        // Strings and optional values (null default) are taken verbatim.
        _ => Ok(Value::String(raw.to_owned())),
    }
}

fn insert(root: &mut Map<String, Value>, path: &str, value: Value) {
    let mut parts = path.split('.').peekable();
    let mut node = root;
    while let Some(part) = parts.next() {
        if parts.peek().is_none() {
            node.insert(part.to_owned(), value);
            return;
        }
        let child = node.entry(part.to_owned()).or_insert_with(|| Value::Object(Map::new()));
        node = child.as_object_mut().expect("sections are objects");
    }
}
