//! `WWW-Authenticate` parsing (RFC 9110 §11.6.1): any number of header
//! values, each with any number of challenges, parameters quoted or not,
//! quoted values holding commas and escaped quotes. A malformed challenge is
//! dropped without losing the well-formed ones around it.

/// A challenge the client can answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Challenge {
    /// The token flow: fetch a token from `realm` for `service` and `scope`.
    Bearer { realm: String, service: Option<String>, scope: Option<String>, error: Option<String> },
    /// Plain HTTP Basic to the registry itself.
    Basic,
}

/// Every usable challenge in the given header values, in order.
pub fn parse<'a>(values: impl IntoIterator<Item = &'a str>) -> Vec<Challenge> {
    let mut out = Vec::new();
    for value in values {
        for raw in split_challenges(value) {
            let param = |name: &str| raw.params.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone());
            match raw.scheme.to_ascii_lowercase().as_str() {
                "bearer" => {
                    if let Some(realm) = param("realm").filter(|r| !r.is_empty()) {
                        out.push(Challenge::Bearer {
                            realm,
                            service: param("service").filter(|s| !s.is_empty()),
                            scope: param("scope").filter(|s| !s.is_empty()),
                            error: param("error"),
                        });
                    }
                }
                "basic" => out.push(Challenge::Basic),
                _ => {}
            }
        }
    }
    out
}

/// The challenge to answer: Bearer when offered (it works anonymously and
/// with credentials), else Basic.
pub fn pick(challenges: &[Challenge]) -> Option<&Challenge> {
    challenges
        .iter()
        .find(|c| matches!(c, Challenge::Bearer { .. }))
        .or_else(|| challenges.iter().find(|c| matches!(c, Challenge::Basic)))
}

struct RawChallenge {
    scheme: String,
    /// Lowercased names, unquoted values.
    params: Vec<(String, String)>,
}

fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

struct Cursor<'a> {
    s: &'a [u8],
    pos: usize,
}

impl Cursor<'_> {
    fn peek(&self) -> Option<u8> {
        self.s.get(self.pos).copied()
    }

    fn skip_ws(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t')) {
            self.pos += 1;
        }
    }

    fn skip_ws_and_commas(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t' | b',')) {
            self.pos += 1;
        }
    }

    fn token(&mut self) -> String {
        let start = self.pos;
        while self.peek().is_some_and(is_tchar) {
            self.pos += 1;
        }
        String::from_utf8_lossy(&self.s[start..self.pos]).into_owned()
    }

    /// An unquoted value: lenient, up to a comma or whitespace (some servers
    /// send `realm=https://host/token` unquoted).
    fn bare_value(&mut self) -> String {
        let start = self.pos;
        while self.peek().is_some_and(|b| !matches!(b, b',' | b' ' | b'\t')) {
            self.pos += 1;
        }
        String::from_utf8_lossy(&self.s[start..self.pos]).into_owned()
    }

    /// A quoted-string after its opening quote; `None` if unterminated.
    fn quoted(&mut self) -> Option<String> {
        let mut bytes = Vec::new();
        loop {
            match self.peek()? {
                b'"' => {
                    self.pos += 1;
                    return Some(String::from_utf8_lossy(&bytes).into_owned());
                }
                b'\\' => {
                    self.pos += 1;
                    bytes.push(self.peek()?);
                    self.pos += 1;
                }
                b => {
                    bytes.push(b);
                    self.pos += 1;
                }
            }
        }
    }

    /// Skips to just after the next comma outside quotes (or to the end).
    fn recover(&mut self) {
        while let Some(b) = self.peek() {
            self.pos += 1;
            match b {
                b',' => return,
                b'"' => {
                    let _ = self.quoted();
                }
                _ => {}
            }
        }
    }
}

fn split_challenges(value: &str) -> Vec<RawChallenge> {
    let mut c = Cursor { s: value.as_bytes(), pos: 0 };
    let mut out = Vec::new();
    loop {
        c.skip_ws_and_commas();
        if c.peek().is_none() {
            return out;
        }
        let scheme = c.token();
        if scheme.is_empty() {
            c.recover();
            continue;
        }
        let (params, ok) = params(&mut c);
        if ok {
            out.push(RawChallenge { scheme, params });
        }
    }
}

/// The parameters after a scheme, up to the next challenge's scheme (a token
/// not followed by `=`). `false` when one of them was malformed.
fn params(c: &mut Cursor<'_>) -> (Vec<(String, String)>, bool) {
    let mut params = Vec::new();
    let mut ok = true;
    loop {
        c.skip_ws_and_commas();
        let save = c.pos;
        if c.peek().is_none() {
            return (params, ok);
        }
        let name = c.token();
        if name.is_empty() {
            ok = false;
            c.recover();
            continue;
        }
        c.skip_ws();
        if c.peek() != Some(b'=') {
            // A token with no `=`: the next challenge's scheme.
            c.pos = save;
            return (params, ok);
        }
        c.pos += 1;
        c.skip_ws();
        let value = if c.peek() == Some(b'"') {
            c.pos += 1;
            match c.quoted() {
                Some(v) => v,
                None => return (params, false),
            }
        } else {
            c.bare_value()
        };
        params.push((name.to_ascii_lowercase(), value));
        c.skip_ws();
        match c.peek() {
            None | Some(b',') => {}
            Some(_) => {
                ok = false;
                c.recover();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bearer(realm: &str, service: Option<&str>, scope: Option<&str>) -> Challenge {
        Challenge::Bearer {
            realm: realm.into(),
            service: service.map(Into::into),
            scope: scope.map(Into::into),
            error: None,
        }
    }

    #[test]
    fn docker_hub_challenge() {
        let h = r#"Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/alpine:pull""#;
        assert_eq!(
            parse([h]),
            vec![bearer(
                "https://auth.docker.io/token",
                Some("registry.docker.io"),
                Some("repository:library/alpine:pull")
            )]
        );
    }

    #[test]
    fn quoted_commas_escapes_and_case() {
        let h = r#"bearer Realm = "https://a/t?x=1,2" , SERVICE="svc \"q\"", scope="repository:a:pull,push repository:b:pull""#;
        assert_eq!(
            parse([h]),
            vec![bearer("https://a/t?x=1,2", Some("svc \"q\""), Some("repository:a:pull,push repository:b:pull"))]
        );
    }

    #[test]
    fn several_challenges_in_one_value_and_across_values() {
        let h =
            r#"Basic realm="Registry Realm", Bearer realm="https://a/token",service="s",error="insufficient_scope""#;
        let got = parse([h, "Negotiate", r#"Bearer realm=https://b/token"#]);
        assert_eq!(got.len(), 3);
        assert_eq!(got[0], Challenge::Basic);
        assert!(
            matches!(&got[1], Challenge::Bearer { realm, error: Some(e), .. } if realm == "https://a/token" && e == "insufficient_scope")
        );
        assert_eq!(got[2], bearer("https://b/token", None, None));
        assert_eq!(pick(&got), Some(&got[1]));
        assert_eq!(pick(&got[..1]), Some(&Challenge::Basic));
    }

    #[test]
    fn malformed_challenges_are_dropped_not_the_rest() {
        assert!(parse([r#"Bearer realm="unterminated"#]).is_empty());
        assert!(parse(["Bearer"]).is_empty());
        assert!(parse([r#"Bearer service="x""#]).is_empty(), "no realm");
        assert!(parse(["", " , ,", "=== \"", "Bearer realm=\"\""]).is_empty());
        let got = parse([r#"Bearer realm="a" junk"x", Basic realm="r""#]);
        assert_eq!(got, vec![Challenge::Basic]);
        let got = parse([r#"@@ garbage, Bearer realm="https://a/t""#]);
        assert_eq!(got, vec![bearer("https://a/t", None, None)]);
    }

    #[test]
    fn token68_style_value_does_not_confuse() {
        // Not something a registry sends, but it must not panic or invent a realm.
        let got = parse(["Basic dXNlcjpwYXNz==, Bearer realm=\"r\""]);
        assert!(got.contains(&Challenge::Basic));
    }
}
