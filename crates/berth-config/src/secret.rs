use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A configuration value that must never reach a log: `Debug` and
/// serialisation print `***` (an empty secret prints as empty).
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(s: impl Into<String>) -> Self {
        Secret(s.into())
    }

    pub fn expose(&self) -> &str {
        &self.0
    }

    fn masked(&self) -> &'static str {
        if self.0.is_empty() { "" } else { "***" }
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.masked())
    }
}

/// Serialising masks the value: only `Config::load`'s defaults are serialised
/// (where every secret is empty) and the masked dump for operators.
impl Serialize for Secret {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.masked())
    }
}

impl<'de> Deserialize<'de> for Secret {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d).map(Secret)
    }
}

/// What may be shown of a URL whose path, query or user info may be the
/// credential (chat webhooks): `scheme://host[:port]/***`, or `***` when it
/// does not parse as such (so nothing odd is ever half shown).
pub fn mask_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else { return "***".into() };
    let authority = rest.split(['/', '?', '#', '\\']).next().unwrap_or_default();
    let host_port = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    let (host, port) = match host_port.rsplit_once(':') {
        Some((h, p)) if !p.contains(']') => (h, Some(p)),
        _ => (host_port, None),
    };
    let plain = |s: &str, extra: &[char]| s.chars().all(|c| c.is_ascii_alphanumeric() || extra.contains(&c));
    let ok = !scheme.is_empty()
        && plain(scheme, &['+', '-', '.'])
        && !host.is_empty()
        && plain(host, &['.', '-', '_', ':', '[', ']'])
        && port.is_none_or(|p| !p.is_empty() && p.chars().all(|c| c.is_ascii_digit()));
    if ok { format!("{scheme}://{host_port}/***") } else { "***".into() }
}
