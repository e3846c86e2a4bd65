//! Who is looking at a page: the session cookie (accepted on page routes
//! only: the API and registry routes never read cookies), its CSRF token,
//! and the cookies' attributes.

use std::net::IpAddr;

use axum::extract::FromRequestParts;
use berth_api::AppState;
use berth_api::client::ClientInfo;
use berth_auth::{Principal, WebSession};
use berth_registry::browse::Viewer;
use http::request::Parts;
use http::{HeaderMap, HeaderValue, header};
use subtle::ConstantTimeEq;

use crate::render::{Layout, PageError};

/// The session cookie: a random secret naming a server-side session.
pub const SESSION_COOKIE: &str = "berth_session";
/// The sign-in form's own CSRF token (there is no session yet), checked
/// against the form field (double submit).
pub const LOGIN_COOKIE: &str = "berth_login";

/// The request's viewer, as every page handler sees it.
pub struct Ctx {
    pub session: Option<WebSession>,
    /// Authentication is on (else every page is read-only and open).
    pub auth_on: bool,
    /// Cookies get `Secure` (HTTPS in front or TLS here).
    pub secure: bool,
    pub ip: Option<IpAddr>,
    /// The raw session cookie, for signing out.
    pub cookie: Option<String>,
    /// A cookie of this name arrived (for the sign-in form's token).
    pub login_cookie: Option<String>,
    /// `host[:port]` clients pull from (for the pull commands shown).
    pub registry_host: String,
}

impl FromRequestParts<AppState> for Ctx {
    type Rejection = PageError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        let client = parts.extensions.get::<ClientInfo>();
        let secure = state.settings().tls
            || state.settings().public_url.starts_with("https://")
            || client.and_then(|c| c.origin.as_deref()).is_some_and(|o| o.starts_with("https://"));
        let cookie = cookie(&parts.headers, SESSION_COOKIE);
        let session = match (state.auth(), &cookie) {
            (Some(auth), Some(c)) => auth.web_session(c).await?,
            _ => None,
        };
        let origin = match state.settings().public_url.as_str() {
            "" => client.and_then(|c| c.origin.clone()),
            url => Some(url.to_owned()),
        };
        let registry_host = match origin {
            Some(o) => o.split_once("://").map_or(o.clone(), |(_, rest)| rest.to_owned()),
            None => parts
                .headers
                .get(header::HOST)
                .and_then(|h| h.to_str().ok())
                .filter(|h| berth_api::client::valid_host(h))
                .unwrap_or("localhost")
                .to_owned(),
        };
        Ok(Ctx {
            registry_host,
            session,
            auth_on: state.auth().is_some(),
            secure,
            ip: client.and_then(|c| c.ip),
            cookie,
            login_cookie: crate::session::cookie(&parts.headers, LOGIN_COOKIE),
        })
    }
}

impl Ctx {
    /// What listings may include for this viewer.
    pub fn viewer(&self) -> Viewer {
        if !self.auth_on {
            return Viewer::EVERYTHING;
        }
        berth_auth::viewer_of(self.session.as_ref().map(|s| &s.user))
    }

    pub fn principal(&self) -> Principal {
        self.session.as_ref().map_or(Principal::Anonymous, WebSession::principal)
    }

    pub fn user_name(&self) -> Option<&str> {
        self.session.as_ref().map(|s| s.user.name.as_str())
    }

    pub fn layout(&self, title: impl Into<String>) -> Layout {
        Layout {
            title: title.into(),
            user: self.user_name().map(str::to_owned),
            is_admin: self.session.as_ref().is_some_and(|s| s.user.is_admin),
            csrf: self.csrf().to_owned(),
            auth_on: self.auth_on,
        }
    }

    pub fn csrf(&self) -> &str {
        self.session.as_ref().map_or("", |s| s.csrf_token.as_str())
    }

    /// The signed-in session, or a 403 telling the viewer to sign in.
    pub fn require_session(&self) -> Result<&WebSession, PageError> {
        self.session.as_ref().ok_or_else(|| PageError::Forbidden("Sign in first.".into()))
    }

    /// A state-changing form must carry this session's CSRF token.
    pub fn check_csrf(&self, presented: &str) -> Result<&WebSession, PageError> {
        let session = self.require_session()?;
        if equal(presented, &session.csrf_token) {
            Ok(session)
        } else {
            Err(PageError::Forbidden(
                "The form was stale or not sent from this site; reload the page and try again.".into(),
            ))
        }
    }

    /// A `Set-Cookie` value with the attributes every Berth cookie has.
    pub fn set_cookie(&self, name: &str, value: &str, max_age_secs: u64) -> HeaderValue {
        let secure = if self.secure { "; Secure" } else { "" };
        let text = format!("{name}={value}; Path=/; HttpOnly; SameSite=Lax; Max-Age={max_age_secs}{secure}");
        HeaderValue::from_str(&text).unwrap_or_else(|_| HeaderValue::from_static(""))
    }
}

/// Constant-time string equality (tokens).
pub fn equal(a: &str, b: &str) -> bool {
    !a.is_empty() && a.len() == b.len() && bool::from(a.as_bytes().ct_eq(b.as_bytes()))
}

/// The value of cookie `name`, if sent.
pub fn cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.trim().to_owned())
}

/// A fresh random token (hex).
pub fn random_token() -> Result<String, PageError> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).map_err(|e| PageError::Internal(format!("no randomness: {e}")))?;
    Ok(hex::encode(bytes))
}
