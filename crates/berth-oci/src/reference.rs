//! Manifest references: a tag or a digest.

use std::fmt;

use crate::digest::{Digest, DigestError};

pub const MAX_TAG_LEN: usize = 128;

/// A validated tag: `[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}`.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Tag(String);

impl Tag {
    pub fn parse(s: &str) -> Result<Self, ReferenceError> {
        let b = s.as_bytes();
        let head_ok = b.first().is_some_and(|c| c.is_ascii_alphanumeric() || *c == b'_');
        let tail_ok = b.iter().skip(1).all(|c| c.is_ascii_alphanumeric() || matches!(c, b'.' | b'_' | b'-'));
        if head_ok && tail_ok && b.len() <= MAX_TAG_LEN {
            Ok(Tag(s.to_owned()))
        } else {
            Err(ReferenceError::InvalidTag)
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Tag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for Tag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Tag({})", self.0)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReferenceError {
    #[error("invalid tag")]
    InvalidTag,
    #[error(transparent)]
    Digest(#[from] DigestError),
}

/// The `<reference>` of `/v2/<name>/manifests/<reference>`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Reference {
    Tag(Tag),
    Digest(Digest),
}

impl Reference {
    /// Tags cannot contain `:`, so anything with one must be a digest.
    pub fn parse(s: &str) -> Result<Self, ReferenceError> {
        if s.contains(':') { Ok(Reference::Digest(Digest::parse(s)?)) } else { Ok(Reference::Tag(Tag::parse(s)?)) }
    }

    pub fn as_str(&self) -> &str {
        match self {
            Reference::Tag(t) => t.as_str(),
            Reference::Digest(d) => d.as_str(),
        }
    }
}

impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags() {
        for ok in ["latest", "v1.2.3", "_x", "A-b_c.d", &"a".repeat(128)] {
            assert!(Tag::parse(ok).is_ok(), "{ok}");
        }
        for bad in ["", ".x", "-x", "a/b", "a:b", "a b", &"a".repeat(129)] {
            assert!(Tag::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn references() {
        assert!(matches!(Reference::parse("latest"), Ok(Reference::Tag(_))));
        let d = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
        assert!(matches!(Reference::parse(d), Ok(Reference::Digest(_))));
        assert!(matches!(Reference::parse("sha256:xyz"), Err(ReferenceError::Digest(_))));
    }
}
