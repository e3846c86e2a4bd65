//! `/user/login` and `/user/logout`.

use askama::Template;
use axum::Form;
use axum::extract::{Query, State};
use axum::response::{IntoResponse, Response};
use berth_api::AppState;
use http::header;
use serde::Deserialize;

use crate::render::{Layout, PageError, page_with_status, see_other};
use crate::session::{Ctx, LOGIN_COOKIE, SESSION_COOKIE, equal, random_token};

/// How long the sign-in form's token lives.
const LOGIN_FORM_SECS: u64 = 3600;

#[derive(Template)]
#[template(path = "login.html")]
struct LoginPage {
    layout: Layout,
    csrf: String,
    next: String,
    user: String,
    error: String,
}

#[derive(Deserialize)]
pub struct Params {
    next: Option<String>,
}

/// Only paths on this site (no `//host`, no scheme) are followed after sign-in.
fn local_path(next: Option<&str>) -> String {
    match next {
        Some(n) if n.starts_with('/') && !n.starts_with("//") && !n.contains('\\') && !n.contains("://") => {
            n.to_owned()
        }
        _ => "/".to_owned(),
    }
}

fn login_page(
    ctx: &Ctx,
    csrf: String,
    next: String,
    user: String,
    error: String,
    status: http::StatusCode,
) -> Response {
    let template = LoginPage { layout: ctx.layout("Sign in"), csrf: csrf.clone(), next, user, error };
    let mut response = page_with_status(status, &template);
    response.headers_mut().append(header::SET_COOKIE, ctx.set_cookie(LOGIN_COOKIE, &csrf, LOGIN_FORM_SECS));
    response
}

pub async fn form(ctx: Ctx, Query(params): Query<Params>) -> Result<Response, PageError> {
    if !ctx.auth_on {
        return Err(PageError::NotFound);
    }
    let next = local_path(params.next.as_deref());
    if ctx.session.is_some() {
        return Ok(see_other(&next));
    }
    Ok(login_page(&ctx, random_token()?, next, String::new(), String::new(), http::StatusCode::OK))
}

#[derive(Deserialize)]
pub struct LoginForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    user: String,
    #[serde(default)]
    password: String,
    #[serde(default)]
    next: String,
}

pub async fn submit(
    State(state): State<AppState>,
    ctx: Ctx,
    Form(form): Form<LoginForm>,
) -> Result<Response, PageError> {
    let Some(auth) = state.auth() else { return Err(PageError::NotFound) };
    if !ctx.login_cookie.as_deref().is_some_and(|c| equal(c, &form.csrf)) {
        return Err(PageError::Forbidden("The sign-in form was stale; reload it and try again.".into()));
    }
    let next = local_path(Some(&form.next));
    match auth.sign_in(form.user.trim(), &form.password, ctx.ip).await {
        Ok(signed_in) => {
            let mut response = see_other(&next);
            let h = response.headers_mut();
            h.append(
                header::SET_COOKIE,
                ctx.set_cookie(SESSION_COOKIE, &signed_in.cookie_secret, signed_in.max_age_secs),
            );
            h.append(header::SET_COOKIE, ctx.set_cookie(LOGIN_COOKIE, "", 0));
            Ok(response)
        }
        Err(berth_auth::AuthError::InvalidCredentials) => Ok(login_page(
            &ctx,
            random_token()?,
            next,
            form.user,
            "Wrong user name or password.".into(),
            http::StatusCode::UNAUTHORIZED,
        )),
        Err(e) => Err(e.into()),
    }
}

#[derive(Deserialize)]
pub struct LogoutForm {
    #[serde(default)]
    csrf: String,
}

pub async fn logout(
    State(state): State<AppState>,
    ctx: Ctx,
    Form(form): Form<LogoutForm>,
) -> Result<Response, PageError> {
    let Some(auth) = state.auth() else { return Err(PageError::NotFound) };
    ctx.check_csrf(&form.csrf)?;
    if let Some(cookie) = &ctx.cookie {
        auth.sign_out(cookie).await?;
    }
    let mut response = see_other("/");
    response.headers_mut().append(header::SET_COOKIE, ctx.set_cookie(SESSION_COOKIE, "", 0));
    Ok(response.into_response())
}
