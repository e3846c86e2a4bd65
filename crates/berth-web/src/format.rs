//! How figures read on a page.

use std::time::{Duration, UNIX_EPOCH};

/// `12.3 MiB`: Berth's one way of printing a size.
pub fn size(bytes: u64) -> String {
    berth_registry::quota::human_size(bytes)
}

/// `2026-12-07 05:40 UTC` from milliseconds since the epoch.
pub fn time(ms: i64) -> String {
    let at = UNIX_EPOCH + Duration::from_millis(u64::try_from(ms).unwrap_or(0));
    let text = humantime::format_rfc3339_seconds(at).to_string();
    // 2026-12-07T05:40:12Z
    format!("{} {} UTC", &text[..10], &text[11..16])
}

/// The first 12 hex digits of a digest, as `docker images` shows them.
pub fn short_digest(digest: &str) -> String {
    match digest.split_once(':') {
        Some((_, hex)) => hex.chars().take(12).collect(),
        None => digest.chars().take(12).collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_and_times() {
        assert_eq!(size(512), "512 B");
        assert_eq!(size(1536), "1.5 KiB");
        assert_eq!(size(5 * 1024 * 1024 * 1024), "5 GiB");
        assert_eq!(time(1_700_000_000_000), "2023-11-14 22:13 UTC");
        assert_eq!(short_digest("sha256:0123456789abcdef"), "0123456789ab");
    }
}
