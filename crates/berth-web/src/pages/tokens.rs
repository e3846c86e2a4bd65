//! `/user/settings/applications`: the viewer's personal access tokens.

use std::time::Duration;

use askama::Template;
use axum::Form;
use axum::extract::State;
use axum::response::Response;
use berth_api::AppState;
use berth_auth::admin::TokenRequest;
use serde::Deserialize;

use crate::format;
use crate::render::{Layout, PageError, page, see_other};
use crate::session::Ctx;

struct TokenItem {
    id: i64,
    name: String,
    scopes: String,
    repositories: String,
    created: String,
    last_used: String,
    expires: String,
    state: &'static str,
}

/// A token just created: its secret, shown this once.
struct NewSecret {
    name: String,
    secret: String,
    login: String,
}

#[derive(Template)]
#[template(path = "tokens.html")]
struct TokensPage {
    layout: Layout,
    user: String,
    tokens: Vec<TokenItem>,
    created: Option<NewSecret>,
    error: String,
}

async fn render(state: &AppState, ctx: &Ctx, created: Option<NewSecret>, error: String) -> Result<Response, PageError> {
    let auth = state.auth().ok_or(PageError::NotFound)?;
    let Some(session) = &ctx.session else { return Ok(see_other("/user/login?next=/user/settings/applications")) };
    let now = berth_registry::now_ms();
    let tokens = auth
        .own_tokens(&session.user)
        .await?
        .into_iter()
        .map(|t| TokenItem {
            id: t.id,
            state: if t.revoked_at.is_some() {
                "revoked"
            } else if t.expires_at.is_some_and(|e| e <= now) {
                "expired"
            } else {
                "active"
            },
            name: t.name,
            scopes: t.scopes.join(", "),
            repositories: if t.repositories.is_empty() { "all".into() } else { t.repositories.join(" ") },
            created: format::time(t.created_at),
            last_used: t.last_used_at.map_or_else(|| "never".into(), format::time),
            expires: t.expires_at.map_or_else(|| "never".into(), format::time),
        })
        .collect();
    let template =
        TokensPage { layout: ctx.layout("Applications"), user: session.user.name.clone(), tokens, created, error };
    Ok(page(&template))
}

pub async fn show(State(state): State<AppState>, ctx: Ctx) -> Result<Response, PageError> {
    render(&state, &ctx, None, String::new()).await
}

#[derive(Deserialize)]
pub struct ChangeForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    action: String,
    #[serde(default)]
    name: String,
    #[serde(default)]
    read: Option<String>,
    #[serde(default)]
    write: Option<String>,
    #[serde(default)]
    repositories: String,
    /// Days until expiry; empty: never.
    #[serde(default)]
    expires_days: String,
    #[serde(default)]
    id: String,
}

pub async fn change(
    State(state): State<AppState>,
    ctx: Ctx,
    Form(form): Form<ChangeForm>,
) -> Result<Response, PageError> {
    let auth = state.auth().ok_or(PageError::NotFound)?;
    let session = ctx.check_csrf(&form.csrf)?;
    match form.action.as_str() {
        "create" => {
            let mut scopes = Vec::new();
            if form.read.is_some() || form.write.is_some() {
                scopes.push("read:package".to_owned());
            }
            if form.write.is_some() {
                scopes.push("write:package".to_owned());
            }
            let expires_in = match form.expires_days.trim() {
                "" => None,
                days => match days.parse::<u64>() {
                    Ok(d) if (1..=3650).contains(&d) => Some(Duration::from_secs(d * 86_400)),
                    _ => {
                        return render(&state, &ctx, None, "Expiry must be a number of days from 1 to 3650.".into())
                            .await;
                    }
                },
            };
            let name = form.name.trim().to_owned();
            if name.is_empty() || name.len() > 100 {
                return render(&state, &ctx, None, "Give the token a name (at most 100 characters).".into()).await;
            }
            let request = TokenRequest {
                scopes,
                repositories: form.repositories.split_whitespace().map(str::to_owned).collect(),
                expires_in,
                name: name.clone(),
            };
            match auth.create_own_token(&session.user, &request).await {
                Ok(secret) => {
                    let login = format!("docker login {} -u {}", ctx.registry_host, session.user.name);
                    render(&state, &ctx, Some(NewSecret { name, secret, login }), String::new()).await
                }
                Err(berth_auth::admin::AdminError::Invalid(m)) => render(&state, &ctx, None, m).await,
                Err(e) => Err(PageError::Internal(e.to_string())),
            }
        }
        "revoke" => {
            let id: i64 = form.id.parse().map_err(|_| PageError::BadRequest("no such token".into()))?;
            if !auth.revoke_own_token(&session.user, id).await? {
                return Err(PageError::NotFound);
            }
            Ok(see_other("/user/settings/applications"))
        }
        _ => Err(PageError::BadRequest("unknown action".into())),
    }
}
