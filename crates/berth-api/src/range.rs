//! `Range` requests on blobs (RFC 9110 §14) and `Content-Range` on chunk uploads.

use berth_blob::ByteRange;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RangeOutcome {
    /// No usable range: send the whole blob (200).
    Full,
    /// Send this part (206).
    Partial(ByteRange),
    /// 416 with `Content-Range: bytes */size`.
    Unsatisfiable,
}

/// Resolves a `Range` header against a blob of `size` bytes. Syntax we do not
/// serve (other units, several ranges) is ignored, as RFC 9110 allows; ranges
/// that cannot be served (starting past the end, inverted) are unsatisfiable.
pub fn resolve(header: Option<&str>, size: u64) -> RangeOutcome {
    let Some(h) = header else { return RangeOutcome::Full };
    let Some((unit, spec)) = h.trim().split_once('=') else { return RangeOutcome::Full };
    if !unit.trim().eq_ignore_ascii_case("bytes") || spec.contains(',') {
        return RangeOutcome::Full;
    }
    let Some((first, last)) = spec.trim().split_once('-') else { return RangeOutcome::Full };
    let (first, last) = (first.trim(), last.trim());
    let num = |s: &str| if s.bytes().all(|b| b.is_ascii_digit()) { s.parse::<u64>().ok() } else { None };
    match (first.is_empty(), last.is_empty()) {
        // "-N": the last N bytes.
        (true, false) => match num(last) {
            Some(0) | None => RangeOutcome::Unsatisfiable,
            Some(_) if size == 0 => RangeOutcome::Unsatisfiable,
            Some(n) => RangeOutcome::Partial(ByteRange { start: size.saturating_sub(n), end: size - 1 }),
        },
        // "A-": from A to the end.
        (false, true) => match num(first) {
            Some(a) if a < size => RangeOutcome::Partial(ByteRange { start: a, end: size - 1 }),
            Some(_) => RangeOutcome::Unsatisfiable,
            None => RangeOutcome::Full,
        },
        (false, false) => match (num(first), num(last)) {
            (Some(a), Some(b)) if a <= b && a < size => {
                RangeOutcome::Partial(ByteRange { start: a, end: b.min(size - 1) })
            }
            (Some(_), Some(_)) => RangeOutcome::Unsatisfiable,
            _ => RangeOutcome::Full,
        },
        (true, true) => RangeOutcome::Full,
    }
}

/// Parses a chunk's `Content-Range: <start>-<end>` (a `bytes ` or `bytes=`
/// prefix and a `/total` suffix are tolerated). `None` if malformed.
pub fn parse_content_range(h: &str) -> Option<(u64, u64)> {
    let h = h.trim();
    let h = h.strip_prefix("bytes").map(|r| r.trim_start_matches(['=', ' '])).unwrap_or(h);
    let h = h.split('/').next()?;
    let (a, b) = h.split_once('-')?;
    let parse = |s: &str| {
        let s = s.trim();
        if s.is_empty() || !s.bytes().all(|c| c.is_ascii_digit()) { None } else { s.parse::<u64>().ok() }
    };
    Some((parse(a)?, parse(b)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(start: u64, end: u64) -> RangeOutcome {
        RangeOutcome::Partial(ByteRange { start, end })
    }

    #[test]
    fn ranges() {
        assert_eq!(resolve(None, 10), RangeOutcome::Full);
        assert_eq!(resolve(Some("bytes=0-4"), 10), p(0, 4));
        assert_eq!(resolve(Some("bytes=5-"), 10), p(5, 9));
        assert_eq!(resolve(Some("bytes=-3"), 10), p(7, 9));
        assert_eq!(resolve(Some("bytes=-30"), 10), p(0, 9));
        assert_eq!(resolve(Some("bytes=8-100"), 10), p(8, 9));
        assert_eq!(resolve(Some("bytes=10-"), 10), RangeOutcome::Unsatisfiable);
        assert_eq!(resolve(Some("bytes=10-20"), 10), RangeOutcome::Unsatisfiable);
        assert_eq!(resolve(Some("bytes=5-0"), 10), RangeOutcome::Unsatisfiable);
        assert_eq!(resolve(Some("bytes=-0"), 10), RangeOutcome::Unsatisfiable);
        assert_eq!(resolve(Some("bytes=0-0"), 0), RangeOutcome::Unsatisfiable);
        assert_eq!(resolve(Some("bytes=0-1,3-4"), 10), RangeOutcome::Full);
        assert_eq!(resolve(Some("items=0-1"), 10), RangeOutcome::Full);
        assert_eq!(resolve(Some("bytes=x-1"), 10), RangeOutcome::Full);
        assert_eq!(resolve(Some("bytes=+1-2"), 10), RangeOutcome::Full);
    }

    #[test]
    fn content_ranges() {
        assert_eq!(parse_content_range("0-99"), Some((0, 99)));
        assert_eq!(parse_content_range("bytes 100-199/*"), Some((100, 199)));
        assert_eq!(parse_content_range("bytes=5-9"), Some((5, 9)));
        assert_eq!(parse_content_range("5-"), None);
        assert_eq!(parse_content_range("a-b"), None);
    }
}
