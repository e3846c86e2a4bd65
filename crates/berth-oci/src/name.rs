//! Repository names, per the distribution spec's grammar:
//! `[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*(\/[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*)*`.

use std::fmt;

/// Clients commonly limit `host/name` to 255 characters; the name alone may not exceed it.
pub const MAX_NAME_LEN: usize = 255;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    #[error("repository name must not be empty")]
    Empty,
    #[error("repository name is longer than {MAX_NAME_LEN} characters")]
    TooLong,
    #[error("invalid repository name component {0:?}")]
    InvalidComponent(String),
}

/// A validated repository name such as `owner/group/image`.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RepositoryName(String);

impl RepositoryName {
    pub fn parse(s: &str) -> Result<Self, NameError> {
        if s.is_empty() {
            return Err(NameError::Empty);
        }
        if s.len() > MAX_NAME_LEN {
            return Err(NameError::TooLong);
        }
        for component in s.split('/') {
            if !is_valid_component(component) {
                return Err(NameError::InvalidComponent(component.to_owned()));
            }
        }
        Ok(RepositoryName(s.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The first path component: the namespace owner (a user or an org).
    pub fn owner(&self) -> &str {
        self.0.split('/').next().unwrap_or(&self.0)
    }
}

/// `[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*`
fn is_valid_component(c: &str) -> bool {
    let bytes = c.as_bytes();
    let alnum = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    if bytes.is_empty() || !alnum(bytes[0]) || !alnum(bytes[bytes.len() - 1]) {
        return false;
    }
    let mut i = 0;
    while i < bytes.len() {
        if alnum(bytes[i]) {
            i += 1;
            continue;
        }
        // A separator run: ".", "_", "__" or "-+", always followed by alnum.
        let start = i;
        match bytes[i] {
            b'.' => i += 1,
            b'_' => {
                i += 1;
                if i < bytes.len() && bytes[i] == b'_' {
                    i += 1;
                }
            }
            b'-' => {
                while i < bytes.len() && bytes[i] == b'-' {
                    i += 1;
                }
            }
            _ => return false,
        }
        if i == start || i >= bytes.len() || !alnum(bytes[i]) {
            return false;
        }
    }
    true
}

impl fmt::Display for RepositoryName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for RepositoryName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RepositoryName({})", self.0)
    }
}

impl AsRef<str> for RepositoryName {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_spec_examples() {
        for ok in ["a", "library/ubuntu", "a/b/c/d", "my-app", "my--app", "my_app", "my__app", "v1.2", "0", "a.b_c-d/e"]
        {
            assert!(RepositoryName::parse(ok).is_ok(), "{ok}");
        }
    }

    #[test]
    fn rejects_bad_names() {
        for bad in ["", "A", "a//b", "/a", "a/", "-a", "a-", "a___b", "a..b", "a._b", "a b", "a:b", "_a", "a/_catalog"]
        {
            assert!(RepositoryName::parse(bad).is_err(), "{bad}");
        }
        assert_eq!(RepositoryName::parse(&"a".repeat(256)), Err(NameError::TooLong));
        assert!(RepositoryName::parse(&"a".repeat(255)).is_ok());
    }

    #[test]
    fn owner_is_first_component() {
        assert_eq!(RepositoryName::parse("acme/team/app").unwrap().owner(), "acme");
        assert_eq!(RepositoryName::parse("solo").unwrap().owner(), "solo");
    }
}
