//! The one error type of the client, in cases a caller can act on: serve
//! from cache, pass a 404 on, back off, or log who misbehaved.
//!
//! Every case names the upstream (its name and base URL) and what was asked
//! for. No case ever carries a credential, a token or a redirect target's
//! query string (presigned object-storage URLs are credentials too).

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

/// Who answered: `upstream "hub" (https://registry-1.docker.io)`.
#[derive(Clone, PartialEq, Eq)]
pub struct Origin(Arc<str>);

impl Origin {
    pub(crate) fn new(name: &str, base: &str) -> Self {
        Origin(format!("upstream {name:?} ({base})").into())
    }
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[derive(Debug, Clone, thiserror::Error)]
pub enum UpstreamError {
    /// 404: the repository, tag, manifest or blob does not exist upstream.
    #[error("{upstream}: {what}: not found{}", detail_suffix(detail))]
    NotFound { upstream: Origin, what: String, detail: String },
    /// 401: no credentials, wrong credentials, or a token the upstream refused.
    #[error("{upstream}: {what}: unauthorized{}", detail_suffix(detail))]
    Unauthorized { upstream: Origin, what: String, detail: String },
    /// 403: the credentials are known but may not do this.
    #[error("{upstream}: {what}: denied{}", detail_suffix(detail))]
    Denied { upstream: Origin, what: String, detail: String },
    /// 429: rate limited; `retry_after` is the upstream's `Retry-After`.
    #[error("{upstream}: {what}: too many requests{}", retry_suffix(*retry_after))]
    TooManyRequests { upstream: Origin, what: String, retry_after: Option<Duration> },
    /// Could not connect, timed out, the body stalled or broke off, or a 5xx
    /// (`status` is set for an HTTP answer, `None` for transport failures).
    #[error("{upstream}: {what}: unavailable{}: {detail}", status_suffix(*status))]
    Unavailable { upstream: Origin, what: String, status: Option<u16>, detail: String },
    /// The upstream answered something that must not be used: a digest that
    /// does not match the bytes, an oversized manifest, a malformed header,
    /// a redirect loop, an unexpected status.
    #[error("{upstream}: {what}: invalid response: {detail}")]
    Invalid { upstream: Origin, what: String, detail: String },
}

fn detail_suffix(detail: &str) -> String {
    if detail.is_empty() { String::new() } else { format!(" ({detail})") }
}

fn retry_suffix(retry_after: Option<Duration>) -> String {
    retry_after.map(|d| format!(", retry after {} s", d.as_secs())).unwrap_or_default()
}

fn status_suffix(status: Option<u16>) -> String {
    status.map(|s| format!(" (HTTP {s})")).unwrap_or_default()
}

impl UpstreamError {
    /// The upstream's HTTP status, where one was answered.
    pub fn status(&self) -> Option<u16> {
        match self {
            UpstreamError::NotFound { .. } => Some(404),
            UpstreamError::Unauthorized { .. } => Some(401),
            UpstreamError::Denied { .. } => Some(403),
            UpstreamError::TooManyRequests { .. } => Some(429),
            UpstreamError::Unavailable { status, .. } => *status,
            UpstreamError::Invalid { .. } => None,
        }
    }

    /// The wait the upstream asked for with a 429.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            UpstreamError::TooManyRequests { retry_after, .. } => *retry_after,
            _ => None,
        }
    }

    /// True when the same request may well succeed later (429, 5xx, network):
    /// a cache serves what it has, a copier backs off and retries.
    pub fn is_transient(&self) -> bool {
        matches!(self, UpstreamError::TooManyRequests { .. } | UpstreamError::Unavailable { .. })
    }

    pub fn is_not_found(&self) -> bool {
        matches!(self, UpstreamError::NotFound { .. })
    }
}

/// Text of an upstream's answer fit for a log line: printable, one line, short.
pub(crate) fn clean_text(s: &str, max: usize) -> String {
    let mut out: String = s.chars().map(|c| if c.is_control() { ' ' } else { c }).take(max).collect();
    if s.chars().count() > max {
        out.push('…');
    }
    out.trim().to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_names_upstream_and_status() {
        let upstream = Origin::new("hub", "https://registry-1.docker.io");
        let e = UpstreamError::Unavailable {
            upstream: upstream.clone(),
            what: "manifest library/alpine:latest".into(),
            status: Some(503),
            detail: "service unavailable".into(),
        };
        assert_eq!(
            e.to_string(),
            "upstream \"hub\" (https://registry-1.docker.io): manifest library/alpine:latest: unavailable (HTTP 503): service unavailable"
        );
        assert!(e.is_transient());
        let e =
            UpstreamError::TooManyRequests { upstream, what: "blob".into(), retry_after: Some(Duration::from_secs(7)) };
        assert!(e.to_string().ends_with("blob: too many requests, retry after 7 s"), "{e}");
        assert_eq!(e.retry_after(), Some(Duration::from_secs(7)));
    }

    #[test]
    fn clean_text_is_one_short_line() {
        assert_eq!(clean_text("a\nb\tc", 10), "a b c");
        assert_eq!(clean_text("abcdef", 3), "abc…");
    }
}
