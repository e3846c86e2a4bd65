//! `BERTH_*` environment overrides.
//!
//! Each known key path (`database.url`, `storage.s3.bucket`, `listen`) has one
//! variable name: `BERTH_` + the path upper-cased with `.` replaced by `_`.
//! Values are read according to the type of the key's default: strings stay
//! strings (so a password `123` is not turned into a number), booleans and
//! numbers are parsed, lists take JSON/TOML array syntax or comma-separated
//! items. A variable that matches no key is ignored, and [`unknown_vars`]
//! names it (with the closest known variable) so the binary can warn: a typo
//! such as `BERTH_AUTH_ENABLE` must not pass silently. The few `BERTH_*`
//! variables read by something other than the configuration ([`OTHER_VARS`],
//! `BERTH_TEST_*`) are not reported.

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

/// `BERTH_*` variables that are not configuration keys but are read
/// elsewhere: the config file's path (`--config`) and the test and CI
/// scripts' knobs. (`BERTH_LOG` is read by nothing: it gets a warning
/// pointing to `BERTH_LOG_LEVEL`.)
pub const OTHER_VARS: &[&str] = &[
    // `berth --config`.
    "BERTH_CONFIG",
    // `berth sync`: the source registry's password.
    "BERTH_SYNC_PASSWORD",
    // conformance/clients/run.sh, berth-bench, the conformance crate.
    "BERTH_BIN",
    "BERTH_CLIENTS_NO_INSTALL",
    "BERTH_CONFORMANCE_URL",
];

/// Prefixes of variables read by the test suites (`BERTH_TEST_POSTGRES_URL`,
/// ...) and by the browser test script (`BERTH_BROWSER_NO_INSTALL`, ...).
pub const OTHER_PREFIXES: &[&str] = &["BERTH_TEST_", "BERTH_BROWSER_"];

/// A `BERTH_*` variable that sets nothing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnknownVar {
    pub name: String,
    /// The known variable nearest to `name` by edit distance, if one is near.
    pub closest: Option<String>,
}

impl std::fmt::Display for UnknownVar {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "environment variable {} is not a configuration key and is ignored", self.name)?;
        match &self.closest {
            Some(closest) => write!(f, "; did you mean {closest}?"),
            None => write!(f, " (config.example.toml lists every key; BERTH_<SECTION>_<KEY>)"),
        }
    }
}

/// The `BERTH_*` variables among `vars` that match no configuration key and
/// are not otherwise used, in the order given.
pub fn unknown_vars<I, K>(vars: I) -> Vec<UnknownVar>
where
    I: IntoIterator<Item = K>,
    K: AsRef<str>,
{
    let known: Vec<String> =
        known_keys().keys().map(|k| var_name(k)).chain(OTHER_VARS.iter().map(|v| (*v).to_owned())).collect();
    vars.into_iter()
        .filter_map(|name| {
            let name = name.as_ref();
            let unknown = name.starts_with(PREFIX)
                && !known.iter().any(|k| k == name)
                && !OTHER_PREFIXES.iter().any(|p| name.starts_with(p));
            unknown.then(|| UnknownVar { name: name.to_owned(), closest: closest(name, &known) })
        })
        .collect()
}

/// The candidate nearest to `name`, if the distance is at most a third of the
/// part after `BERTH_` (at least 2): near enough to be the one meant. A name
/// that stops at a section (`BERTH_LOG`, `BERTH_STORAGE_S3`) gets the
/// shortest key inside it.
fn closest(name: &str, candidates: &[String]) -> Option<String> {
    let upper = name.to_ascii_uppercase();
    let section = format!("{upper}_");
    if let Some(inside) = candidates.iter().filter(|c| c.starts_with(&section)).min_by_key(|c| (c.len(), *c)) {
        return Some(inside.clone());
    }
    let (best, distance) =
        candidates.iter().map(|c| (c, edit_distance(&upper, c))).min_by_key(|(c, d)| (*d, c.len()))?;
    let limit = (name.len().saturating_sub(PREFIX.len()) / 3).max(2);
    (distance <= limit).then(|| best.clone())
}

/// Levenshtein distance over bytes (variable names are ASCII).
fn edit_distance(a: &str, b: &str) -> usize {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.iter().enumerate() {
        let mut diagonal = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let substitute = diagonal + usize::from(ca != cb);
            diagonal = row[j + 1];
            row[j + 1] = substitute.min(row[j] + 1).min(row[j + 1] + 1);
        }
    }
    row[b.len()]
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
