//! `Range` requests on blobs (RFC 9110 §14) and `Content-Range` on chunk uploads.
//! Which bytes a range names is the registry's to decide, against the blob's size.

use berth_registry::blobs::RangeSpec;

/// Parses a `Range` header. Syntax we do not serve (other units, several
/// ranges, garbage) is ignored, as RFC 9110 allows: `None`, the whole blob.
/// A range that names no bytes (`-0`, inverted) is kept: it is unsatisfiable.
pub fn parse(header: Option<&str>) -> Option<RangeSpec> {
    let (unit, spec) = header?.trim().split_once('=')?;
    if !unit.trim().eq_ignore_ascii_case("bytes") || spec.contains(',') {
        return None;
    }
    let (first, last) = spec.trim().split_once('-')?;
    let (first, last) = (first.trim(), last.trim());
    let num = |s: &str| if s.bytes().all(|b| b.is_ascii_digit()) { s.parse::<u64>().ok() } else { None };
    match (first.is_empty(), last.is_empty()) {
        // "-N": the last N bytes; an unreadable N names none.
        (true, false) => Some(RangeSpec::Last(num(last).unwrap_or(0))),
        (false, true) => num(first).map(RangeSpec::From),
        (false, false) => Some(RangeSpec::FromTo(num(first)?, num(last)?)),
        (true, true) => None,
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

    #[test]
    fn ranges() {
        use RangeSpec::{From, FromTo, Last};
        assert_eq!(parse(None), None);
        assert_eq!(parse(Some("bytes=0-4")), Some(FromTo(0, 4)));
        assert_eq!(parse(Some("bytes=5-")), Some(From(5)));
        assert_eq!(parse(Some("bytes=-3")), Some(Last(3)));
        assert_eq!(parse(Some(" Bytes = 8-100 ")), Some(FromTo(8, 100)));
        assert_eq!(parse(Some("bytes=5-0")), Some(FromTo(5, 0)), "inverted: unsatisfiable, not ignored");
        assert_eq!(parse(Some("bytes=-0")), Some(Last(0)));
        assert_eq!(parse(Some("bytes=-x")), Some(Last(0)));
        assert_eq!(parse(Some("bytes=0-1,3-4")), None);
        assert_eq!(parse(Some("items=0-1")), None);
        assert_eq!(parse(Some("bytes=x-1")), None);
        assert_eq!(parse(Some("bytes=+1-2")), None);
        assert_eq!(parse(Some("bytes=-")), None);
        assert_eq!(parse(Some("bytes")), None);
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
