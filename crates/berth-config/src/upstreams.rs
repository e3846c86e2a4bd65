//! `[[upstreams]]`: registries Berth pulls through (the pull-through cache).
//!
//! Each upstream owns a local namespace, its `name`: `<host>/hub/alpine`
//! pulls `alpine` (Docker Hub's `library/alpine`) from the upstream named
//! `hub`. At most one upstream may also be served at the root
//! (`mirror_root`), for dockerd's `registry-mirrors`.

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::Secret;

/// Who may read what an upstream serves.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum UpstreamAccess {
    /// Anyone, anonymous callers included.
    Public,
    /// Any signed-in caller whose credentials allow pulling (`read:package`).
    #[default]
    Users,
    /// Members (any role) of the organization named like the upstream.
    Members,
}

impl UpstreamAccess {
    pub fn as_str(self) -> &'static str {
        match self {
            UpstreamAccess::Public => "public",
            UpstreamAccess::Users => "users",
            UpstreamAccess::Members => "members",
        }
    }
}

/// One `[[upstreams]]` entry.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamConfig {
    /// The local namespace: `<host>/<name>/<upstream repository>`.
    pub name: String,
    /// The upstream registry's base URL (`https://registry-1.docker.io`).
    pub url: String,
    /// User name for the upstream; empty: anonymous.
    #[serde(default)]
    pub username: String,
    /// Password or access token for the upstream (masked when shown).
    #[serde(default)]
    pub password: Secret,
    /// A file holding the password instead (a mounted secret); one trailing
    /// newline is ignored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password_file: Option<PathBuf>,
    /// A cached tag is served without asking the upstream for this long;
    /// then one HEAD checks whether it moved.
    #[serde(default = "default_revalidate_after", with = "humantime_serde")]
    pub revalidate_after: Duration,
    /// How long the upstream may take to answer, and to send more of a
    /// body, before it counts as down (cached content is then served).
    #[serde(default = "default_timeout", with = "humantime_serde")]
    pub timeout: Duration,
    /// Who may read the upstream's content through Berth.
    #[serde(default)]
    pub access: UpstreamAccess,
    /// Globs of upstream repositories served (`*` crosses `/`); empty: all.
    #[serde(default)]
    pub repositories: Vec<String>,
    /// Also serve this upstream at the root (`/v2/library/alpine/...`)
    /// for names whose owner does not exist locally.
    #[serde(default)]
    pub mirror_root: bool,
}

fn default_revalidate_after() -> Duration {
    Duration::from_secs(300)
}

fn default_timeout() -> Duration {
    Duration::from_secs(30)
}

impl UpstreamConfig {
    /// The password: `password`, or the contents of `password_file`
    /// (without one trailing newline).
    pub fn resolved_password(&self) -> Result<Secret, String> {
        let Some(path) = &self.password_file else { return Ok(self.password.clone()) };
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("upstreams {:?}: password_file {}: {e}", self.name, path.display()))?;
        let text = text.strip_suffix('\n').map(|t| t.strip_suffix('\r').unwrap_or(t)).unwrap_or(&text);
        Ok(Secret::new(text))
    }
}

/// Checks every `[[upstreams]]` entry and the list as a whole.
pub(crate) fn validate(upstreams: &[UpstreamConfig]) -> Result<(), String> {
    let mut names = std::collections::BTreeSet::new();
    let mut mirrors = Vec::new();
    for u in upstreams {
        let label = format!("upstreams {:?}", u.name);
        if !valid_namespace(&u.name) {
            return Err(format!(
                "{label}: name must be one repository name component (lowercase letters, digits, \
                 and . _ - between them)"
            ));
        }
        if !names.insert(u.name.as_str()) {
            return Err(format!("{label}: names must be unique"));
        }
        let Some((scheme, rest)) = u.url.split_once("://") else {
            return Err(format!("{label}: url must be http:// or https://"));
        };
        if !matches!(scheme, "http" | "https") || rest.is_empty() {
            return Err(format!("{label}: url must be http:// or https://"));
        }
        let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
        if authority.contains('@') {
            return Err(format!("{label}: url must not hold credentials; set username and password"));
        }
        if rest.contains(['?', '#']) {
            return Err(format!("{label}: url must not have a query or fragment"));
        }
        if u.password_file.is_some() && !u.password.expose().is_empty() {
            return Err(format!("{label}: set password or password_file, not both"));
        }
        let has_password = !u.password.expose().is_empty() || u.password_file.is_some();
        if u.username.is_empty() == has_password {
            return Err(format!("{label}: username and password (or password_file) go together"));
        }
        if u.timeout.is_zero() {
            return Err(format!("{label}: timeout must be positive"));
        }
        if u.username.contains(':') {
            return Err(format!("{label}: username must not contain ':'"));
        }
        for p in &u.repositories {
            if p.is_empty() || glob::Pattern::new(p).is_err() {
                return Err(format!("{label}: repositories: {p:?} is not a glob"));
            }
        }
        if u.mirror_root {
            mirrors.push(u.name.as_str());
        }
    }
    if mirrors.len() > 1 {
        return Err(format!("upstreams: at most one may set mirror_root (found {})", mirrors.join(", ")));
    }
    Ok(())
}

/// `[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*`: one component of a repository name.
fn valid_namespace(name: &str) -> bool {
    let b = name.as_bytes();
    let alnum = |c: u8| c.is_ascii_lowercase() || c.is_ascii_digit();
    if b.is_empty() || !alnum(b[0]) || !alnum(b[b.len() - 1]) {
        return false;
    }
    let mut i = 0;
    while i < b.len() {
        if alnum(b[i]) {
            i += 1;
            continue;
        }
        let start = i;
        while i < b.len() && !alnum(b[i]) {
            i += 1;
        }
        let sep = &name[start..i];
        let dashes = sep.bytes().all(|c| c == b'-');
        if !(sep == "." || sep == "_" || sep == "__" || dashes) {
            return false;
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn namespaces_are_name_components() {
        for ok in ["hub", "ghcr", "quay.io", "a-b", "a__b", "x1"] {
            assert!(valid_namespace(ok), "{ok}");
        }
        for bad in ["", "Hub", "a/b", "-a", "a-", "a..b", "a___b", "a b"] {
            assert!(!valid_namespace(bad), "{bad}");
        }
    }
}
