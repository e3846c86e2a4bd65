//! Bearer tokens: Ed25519-signed JWTs in the Docker token format.
//!
//! The signing key is an Ed25519 private key in a PKCS#8 PEM file, generated
//! on first start if absent. Every token names its key (`kid`, derived from
//! the public key), and verification accepts exactly `EdDSA` with a known
//! `kid`: `alg: none`, HMAC confusion and foreign keys are all refused.

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// PKCS#8 v1 prefix of an Ed25519 private key (RFC 8410); the 32-byte seed follows.
const PKCS8_ED25519_PREFIX: [u8; 16] =
    [0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04, 0x20];
/// SubjectPublicKeyInfo prefix of an Ed25519 public key; the 32-byte key follows.
const SPKI_ED25519_PREFIX: [u8; 12] = [0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00];

/// One `access` entry: what the bearer may do to one resource.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccessEntry {
    #[serde(rename = "type")]
    pub kind: String,
    pub name: String,
    pub actions: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Claims {
    pub iss: String,
    /// The user name; empty for anonymous tokens.
    pub sub: String,
    pub aud: String,
    pub exp: u64,
    pub nbf: u64,
    pub iat: u64,
    pub jti: String,
    #[serde(default)]
    pub access: Vec<AccessEntry>,
    /// The personal access token the bearer logged in with, if any; its
    /// restrictions apply when a request needs more than `access` lists.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pat: Option<i64>,
}

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("{path}: {reason}")]
    File { path: PathBuf, reason: String },
}

fn file_err(path: &Path, reason: impl ToString) -> KeyError {
    KeyError::File { path: path.to_owned(), reason: reason.to_string() }
}

struct KeyPair {
    seed: [u8; 32],
    public: [u8; 32],
}

pub struct JwtKeys {
    signing: EncodingKey,
    kid: String,
    verifying: HashMap<String, DecodingKey>,
    issuer: String,
    audience: String,
    ttl: Duration,
}

/// A freshly issued token.
#[derive(Debug, Clone)]
pub struct IssuedToken {
    pub token: String,
    pub expires_in: u64,
    pub issued_at: SystemTime,
}

fn kid_of(public: &[u8; 32]) -> String {
    hex::encode(&Sha256::digest(public)[..8])
}

fn pem_decode(text: &str) -> Option<(String, Vec<u8>)> {
    let mut label = None;
    let mut body = String::new();
    for line in text.lines().map(str::trim) {
        if let Some(l) = line.strip_prefix("-----BEGIN ").and_then(|l| l.strip_suffix("-----")) {
            label = Some(l.to_owned());
        } else if line.starts_with("-----END ") {
            break;
        } else if label.is_some() {
            body.push_str(line);
        }
    }
    Some((label?, STANDARD.decode(body).ok()?))
}

fn pem_encode(label: &str, der: &[u8]) -> String {
    let b64 = STANDARD.encode(der);
    let lines: Vec<&str> = b64.as_bytes().chunks(64).map(|c| std::str::from_utf8(c).unwrap_or_default()).collect();
    format!("-----BEGIN {label}-----\n{}\n-----END {label}-----\n", lines.join("\n"))
}

fn public_of(seed: &[u8; 32]) -> [u8; 32] {
    ed25519_dalek::SigningKey::from_bytes(seed).verifying_key().to_bytes()
}

fn read_private(path: &Path) -> Result<KeyPair, KeyError> {
    let text = std::fs::read_to_string(path).map_err(|e| file_err(path, e))?;
    let (label, der) = pem_decode(&text).ok_or_else(|| file_err(path, "not a PEM file"))?;
    if label != "PRIVATE KEY" || der.len() != 48 || der[..16] != PKCS8_ED25519_PREFIX {
        return Err(file_err(path, "not an Ed25519 private key in PKCS#8 PEM form"));
    }
    let mut seed = [0u8; 32];
    seed.copy_from_slice(&der[16..]);
    Ok(KeyPair { public: public_of(&seed), seed })
}

/// Public key of a PEM file holding an Ed25519 private or public key.
fn read_public(path: &Path) -> Result<[u8; 32], KeyError> {
    let text = std::fs::read_to_string(path).map_err(|e| file_err(path, e))?;
    match pem_decode(&text) {
        Some((label, der)) if label == "PUBLIC KEY" && der.len() == 44 && der[..12] == SPKI_ED25519_PREFIX => {
            let mut public = [0u8; 32];
            public.copy_from_slice(&der[12..]);
            Ok(public)
        }
        _ => read_private(path).map(|k| k.public),
    }
}

/// Creates a key file with a new random key, unless one appears meanwhile
/// (another process starting on the same data directory).
fn generate(path: &Path) -> Result<(), KeyError> {
    let mut seed = [0u8; 32];
    getrandom::fill(&mut seed).map_err(|e| file_err(path, format!("no randomness: {e}")))?;
    let mut der = PKCS8_ED25519_PREFIX.to_vec();
    der.extend_from_slice(&seed);
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| file_err(path, e))?;
    }
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
    match opts.open(path) {
        Ok(mut f) => {
            f.write_all(pem_encode("PRIVATE KEY", &der).as_bytes()).map_err(|e| file_err(path, e))?;
            f.sync_all().map_err(|e| file_err(path, e))?;
            tracing::info!(path = %path.display(), kid = %kid_of(&public_of(&seed)), "generated a new token signing key");
            Ok(())
        }
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(file_err(path, e)),
    }
}

pub fn now_secs() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

impl JwtKeys {
    /// Loads the signing key from `key_file` (generating it if missing) and
    /// the extra verification keys.
    pub fn load(
        key_file: &Path,
        verify_files: &[PathBuf],
        issuer: &str,
        audience: &str,
        ttl: Duration,
    ) -> Result<JwtKeys, KeyError> {
        if !key_file.exists() {
            generate(key_file)?;
        }
        // Replicas starting together on a shared volume: one generates the
        // key, the others may look while it is still being written.
        let mut attempts = 0;
        let pair = loop {
            match read_private(key_file) {
                Ok(p) => break p,
                Err(_) if attempts < 20 => {
                    attempts += 1;
                    std::thread::sleep(Duration::from_millis(100));
                }
                Err(e) => return Err(e),
            }
        };
        let mut der = PKCS8_ED25519_PREFIX.to_vec();
        der.extend_from_slice(&pair.seed);
        let kid = kid_of(&pair.public);
        let mut verifying = HashMap::new();
        verifying.insert(kid.clone(), DecodingKey::from_ed_der(&pair.public));
        for path in verify_files {
            let public = read_public(path)?;
            verifying.insert(kid_of(&public), DecodingKey::from_ed_der(&public));
        }
        Ok(JwtKeys {
            signing: EncodingKey::from_ed_der(&der),
            kid,
            verifying,
            issuer: issuer.to_owned(),
            audience: audience.to_owned(),
            ttl,
        })
    }

    pub fn kid(&self) -> &str {
        &self.kid
    }

    pub fn issue(&self, sub: &str, access: Vec<AccessEntry>, pat: Option<i64>) -> Result<IssuedToken, String> {
        let now = now_secs();
        let mut jti = [0u8; 16];
        getrandom::fill(&mut jti).map_err(|e| e.to_string())?;
        let claims = Claims {
            iss: self.issuer.clone(),
            sub: sub.to_owned(),
            aud: self.audience.clone(),
            exp: now + self.ttl.as_secs(),
            // A little slack for replicas whose clocks run behind.
            nbf: now.saturating_sub(10),
            iat: now,
            jti: hex::encode(jti),
            access,
            pat,
        };
        let mut header = Header::new(Algorithm::EdDSA);
        header.kid = Some(self.kid.clone());
        let token = jsonwebtoken::encode(&header, &claims, &self.signing).map_err(|e| e.to_string())?;
        Ok(IssuedToken { token, expires_in: self.ttl.as_secs(), issued_at: UNIX_EPOCH + Duration::from_secs(now) })
    }

    /// Verifies signature, algorithm, key id, issuer, audience, expiry and not-before.
    pub fn verify(&self, token: &str) -> Result<Claims, String> {
        let header = jsonwebtoken::decode_header(token).map_err(reason)?;
        if header.alg != Algorithm::EdDSA {
            return Err(format!("algorithm {:?} is not accepted", header.alg));
        }
        // Keys come from configuration only: a token naming or carrying its
        // own key (CVE-2025-24976 in Distribution) is refused outright, even
        // when its `kid` is one of ours.
        if header.jwk.is_some() || header.jku.is_some() || header.x5c.is_some() || header.x5u.is_some() {
            return Err("tokens carrying or pointing to a key (jwk, jku, x5c, x5u) are not accepted".into());
        }
        let key = header.kid.as_deref().and_then(|k| self.verifying.get(k)).ok_or("unknown signing key")?;
        let mut v = Validation::new(Algorithm::EdDSA);
        v.set_issuer(&[&self.issuer]);
        v.set_audience(&[&self.audience]);
        v.set_required_spec_claims(&["exp", "nbf", "iss", "aud", "sub"]);
        v.validate_nbf = true;
        v.leeway = 5;
        jsonwebtoken::decode::<Claims>(token, key, &v).map(|d| d.claims).map_err(reason)
    }
}

/// Why a presented token failed, for the audit line: decoding errors quote
/// the token's own text, so they are only named.
fn reason(e: jsonwebtoken::errors::Error) -> String {
    use jsonwebtoken::errors::ErrorKind;
    match e.kind() {
        ErrorKind::Base64(_) | ErrorKind::Json(_) | ErrorKind::Utf8(_) | ErrorKind::Provider(_) => {
            "malformed token".into()
        }
        _ => e.to_string(),
    }
}

/// Writes the public key of `key_file` as PEM (for `jwt_verify_key_files` elsewhere).
pub fn public_key_pem(key_file: &Path) -> Result<String, KeyError> {
    let pair = read_private(key_file)?;
    let mut der = SPKI_ED25519_PREFIX.to_vec();
    der.extend_from_slice(&pair.public);
    Ok(pem_encode("PUBLIC KEY", &der))
}

#[cfg(test)]
mod tests {
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;

    use super::*;

    fn keys(dir: &Path, name: &str) -> JwtKeys {
        JwtKeys::load(&dir.join(name), &[], "berth", "svc", Duration::from_secs(60)).unwrap()
    }

    fn entry() -> Vec<AccessEntry> {
        vec![AccessEntry { kind: "repository".into(), name: "a/b".into(), actions: vec!["pull".into()] }]
    }

    #[test]
    fn issue_and_verify() {
        let dir = tempfile::tempdir().unwrap();
        let k = keys(dir.path(), "k.pem");
        let t = k.issue("alice", entry(), Some(7)).unwrap();
        let c = k.verify(&t.token).unwrap();
        assert_eq!((c.sub.as_str(), c.pat, c.access), ("alice", Some(7), entry()));
        // Reloading the same file gives the same key.
        assert_eq!(keys(dir.path(), "k.pem").kid(), k.kid());
    }

    #[test]
    fn refuses_foreign_forged_and_unsigned_tokens() {
        let dir = tempfile::tempdir().unwrap();
        let k = keys(dir.path(), "k.pem");
        let other = keys(dir.path(), "other.pem");
        let foreign = other.issue("alice", entry(), None).unwrap().token;
        assert!(k.verify(&foreign).is_err(), "signed by another key");
        // Rotation: the old key is accepted once listed.
        let rotated = JwtKeys::load(
            &dir.path().join("k.pem"),
            &[dir.path().join("other.pem")],
            "berth",
            "svc",
            Duration::from_secs(60),
        )
        .unwrap();
        assert!(rotated.verify(&foreign).is_ok());

        let good = k.issue("alice", entry(), None).unwrap().token;
        let parts: Vec<&str> = good.split('.').collect();
        // Tampered claims.
        let mut claims: serde_json::Value = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[1]).unwrap()).unwrap();
        claims["sub"] = "admin".into();
        let forged = format!("{}.{}.{}", parts[0], URL_SAFE_NO_PAD.encode(claims.to_string()), parts[2]);
        assert!(k.verify(&forged).is_err());
        // alg: none.
        let none_header = URL_SAFE_NO_PAD.encode(r#"{"alg":"none","typ":"JWT"}"#);
        assert!(k.verify(&format!("{none_header}.{}.", parts[1])).is_err());
        // HS256 with the public kid.
        let hs = URL_SAFE_NO_PAD.encode(format!(r#"{{"alg":"HS256","typ":"JWT","kid":"{}"}}"#, k.kid()));
        assert!(k.verify(&format!("{hs}.{}.{}", parts[1], parts[2])).is_err());
        // Wrong audience / expired.
        let other_aud =
            JwtKeys::load(&dir.path().join("k.pem"), &[], "berth", "elsewhere", Duration::from_secs(60)).unwrap();
        assert!(other_aud.verify(&good).is_err());
    }

    #[test]
    fn tokens_carrying_their_own_key_are_refused_even_with_our_kid() {
        let dir = tempfile::tempdir().unwrap();
        let k = keys(dir.path(), "k.pem");
        let claims = k.verify(&k.issue("alice", entry(), None).unwrap().token).unwrap();
        for field in ["jku", "x5u", "x5c"] {
            let mut header = Header::new(Algorithm::EdDSA);
            header.kid = Some(k.kid().to_owned());
            match field {
                "jku" => header.jku = Some("https://evil.example/keys".into()),
                "x5u" => header.x5u = Some("https://evil.example/cert".into()),
                _ => header.x5c = Some(vec!["MIIB".into()]),
            }
            // Signed with the registry's own key: only the header is at fault.
            let t = jsonwebtoken::encode(&header, &claims, &k.signing).unwrap();
            assert!(k.verify(&t).unwrap_err().contains("key"), "{field}");
        }
    }

    #[test]
    fn expired_tokens_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let k = keys(dir.path(), "k.pem");
        let mut claims = k.verify(&k.issue("bob", vec![], None).unwrap().token).unwrap();
        claims.exp = now_secs() - 120;
        let mut header = Header::new(Algorithm::EdDSA);
        header.kid = Some(k.kid().to_owned());
        let expired = jsonwebtoken::encode(&header, &claims, &k.signing).unwrap();
        assert!(k.verify(&expired).unwrap_err().contains("xpired"));
    }

    #[test]
    fn public_key_file_verifies() {
        let dir = tempfile::tempdir().unwrap();
        let k = keys(dir.path(), "k.pem");
        std::fs::write(dir.path().join("k.pub"), public_key_pem(&dir.path().join("k.pem")).unwrap()).unwrap();
        let v = JwtKeys::load(
            &dir.path().join("new.pem"),
            &[dir.path().join("k.pub")],
            "berth",
            "svc",
            Duration::from_secs(60),
        )
        .unwrap();
        assert!(v.verify(&k.issue("x", vec![], None).unwrap().token).is_ok());
    }
}
