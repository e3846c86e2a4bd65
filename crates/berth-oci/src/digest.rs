//! Content digests (`algorithm:hex`) and a streaming hasher whose state can
//! be saved between requests, so an upload can continue on another process.

use std::fmt;
use std::str::FromStr;

use sha2::digest::common::hazmat::SerializableState;
use sha2::{Digest as _, Sha256, Sha512};

/// A digest algorithm Berth can verify.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Algorithm {
    Sha256,
    Sha512,
}

impl Algorithm {
    pub const fn as_str(self) -> &'static str {
        match self {
            Algorithm::Sha256 => "sha256",
            Algorithm::Sha512 => "sha512",
        }
    }

    /// Length of the lowercase hex encoding.
    pub const fn hex_len(self) -> usize {
        match self {
            Algorithm::Sha256 => 64,
            Algorithm::Sha512 => 128,
        }
    }

    /// Parses an algorithm name; a well-formed but unknown name is `Unsupported`.
    pub fn parse(s: &str) -> Result<Self, DigestError> {
        match s {
            "sha256" => Ok(Algorithm::Sha256),
            "sha512" => Ok(Algorithm::Sha512),
            other if is_algorithm_grammar(other) => Err(DigestError::Unsupported(other.to_owned())),
            _ => Err(DigestError::Invalid),
        }
    }

    pub fn hasher(self) -> Hasher {
        Hasher::new(self)
    }
}

impl fmt::Display for Algorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DigestError {
    #[error("invalid digest format")]
    Invalid,
    #[error("unsupported digest algorithm {0:?}")]
    Unsupported(String),
}

/// `algorithm-component ::= [a-z0-9]+`, separators `[+._-]` between components.
fn is_algorithm_grammar(s: &str) -> bool {
    !s.is_empty()
        && s.split(['+', '.', '_', '-'])
            .all(|part| !part.is_empty() && part.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit()))
}

/// A validated digest of a supported algorithm, kept in its canonical string form.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Digest {
    algorithm: Algorithm,
    text: String,
}

impl Digest {
    pub fn parse(s: &str) -> Result<Self, DigestError> {
        let (alg, hex) = s.split_once(':').ok_or(DigestError::Invalid)?;
        let algorithm = Algorithm::parse(alg)?;
        let hex_ok =
            hex.len() == algorithm.hex_len() && hex.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
        if !hex_ok {
            return Err(DigestError::Invalid);
        }
        Ok(Digest { algorithm, text: s.to_owned() })
    }

    fn from_bytes(algorithm: Algorithm, bytes: &[u8]) -> Self {
        Digest { algorithm, text: format!("{}:{}", algorithm.as_str(), hex::encode(bytes)) }
    }

    /// Digest of a byte slice held in memory (manifests, small test blobs).
    pub fn of(algorithm: Algorithm, data: &[u8]) -> Self {
        let mut h = Hasher::new(algorithm);
        h.update(data);
        h.finish()
    }

    pub fn sha256_of(data: &[u8]) -> Self {
        Self::of(Algorithm::Sha256, data)
    }

    pub fn algorithm(&self) -> Algorithm {
        self.algorithm
    }

    /// The encoded (hex) part after the colon.
    pub fn hex(&self) -> &str {
        &self.text[self.algorithm.as_str().len() + 1..]
    }

    pub fn as_str(&self) -> &str {
        &self.text
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl fmt::Debug for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Digest({})", self.text)
    }
}

impl FromStr for Digest {
    type Err = DigestError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Digest::parse(s)
    }
}

impl serde::Serialize for Digest {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.text)
    }
}

impl<'de> serde::Deserialize<'de> for Digest {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Digest::parse(&s).map_err(serde::de::Error::custom)
    }
}

/// A streaming hasher for one algorithm. Its state can be saved with
/// [`Hasher::save`] and restored with [`Hasher::restore`], which is how an
/// upload's digest is carried across PATCH requests without re-reading data.
#[derive(Clone)]
pub enum Hasher {
    Sha256(Box<Sha256>),
    Sha512(Box<Sha512>),
}

impl fmt::Debug for Hasher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Hasher({})", self.algorithm())
    }
}

impl Hasher {
    pub fn new(algorithm: Algorithm) -> Self {
        match algorithm {
            Algorithm::Sha256 => Hasher::Sha256(Box::default()),
            Algorithm::Sha512 => Hasher::Sha512(Box::default()),
        }
    }

    pub fn algorithm(&self) -> Algorithm {
        match self {
            Hasher::Sha256(_) => Algorithm::Sha256,
            Hasher::Sha512(_) => Algorithm::Sha512,
        }
    }

    pub fn update(&mut self, data: &[u8]) {
        match self {
            Hasher::Sha256(h) => h.update(data),
            Hasher::Sha512(h) => h.update(data),
        }
    }

    /// The digest of everything hashed so far; the hasher itself is unchanged.
    pub fn digest(&self) -> Digest {
        self.clone().finish()
    }

    pub fn finish(self) -> Digest {
        match self {
            Hasher::Sha256(h) => Digest::from_bytes(Algorithm::Sha256, &h.finalize()),
            Hasher::Sha512(h) => Digest::from_bytes(Algorithm::Sha512, &h.finalize()),
        }
    }

    /// Serialized internal state (a few hundred bytes at most).
    pub fn save(&self) -> Vec<u8> {
        match self {
            Hasher::Sha256(h) => h.serialize().to_vec(),
            Hasher::Sha512(h) => h.serialize().to_vec(),
        }
    }

    /// Restores a state produced by [`Hasher::save`]; `None` if it is corrupt.
    pub fn restore(algorithm: Algorithm, state: &[u8]) -> Option<Self> {
        match algorithm {
            Algorithm::Sha256 => {
                let arr = state.try_into().ok()?;
                Sha256::deserialize(arr).ok().map(|h| Hasher::Sha256(Box::new(h)))
            }
            Algorithm::Sha512 => {
                let arr = state.try_into().ok()?;
                Sha512::deserialize(arr).ok().map(|h| Hasher::Sha512(Box::new(h)))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EMPTY256: &str = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

    #[test]
    fn parses_and_validates() {
        let d = Digest::parse(EMPTY256).unwrap();
        assert_eq!(d.algorithm(), Algorithm::Sha256);
        assert_eq!(d.hex().len(), 64);
        assert_eq!(d.to_string(), EMPTY256);
        assert_eq!(Digest::parse("sha256:abc"), Err(DigestError::Invalid));
        assert_eq!(Digest::parse(&EMPTY256.to_uppercase()), Err(DigestError::Invalid));
        assert_eq!(Digest::parse("nocolon"), Err(DigestError::Invalid));
        assert_eq!(Digest::parse("blake3:abcd"), Err(DigestError::Unsupported("blake3".into())));
        assert_eq!(
            Digest::parse("sha256:E3B0C44298FC1C149AFBF4C8996FB92427AE41E4649B934CA495991B7852B855"),
            Err(DigestError::Invalid)
        );
        assert_eq!(Digest::parse(":abc"), Err(DigestError::Invalid));
    }

    #[test]
    fn hashes_empty_and_known() {
        assert_eq!(Digest::sha256_of(b"").as_str(), EMPTY256);
        let d = Digest::of(Algorithm::Sha512, b"");
        assert_eq!(d.hex().len(), 128);
        assert!(d.as_str().starts_with("sha512:cf83e1357eefb8bd"));
    }

    #[test]
    fn hasher_state_survives_save_and_restore() {
        for alg in [Algorithm::Sha256, Algorithm::Sha512] {
            let mut h = Hasher::new(alg);
            h.update(b"hello ");
            let saved = h.save();
            let mut restored = Hasher::restore(alg, &saved).unwrap();
            restored.update(b"world");
            assert_eq!(restored.finish(), Digest::of(alg, b"hello world"));
            assert!(Hasher::restore(alg, &saved[1..]).is_none());
        }
    }
}
