//! Retention rules for site admins:
//!
//! - `GET /api/v1/admin/retention/rules`: every rule, in the order they are
//!   tried: the config file's (`"source": "config"`, read-only, by
//!   `position`), then the stored ones (`"source": "api"`, by `id`);
//! - `POST /api/v1/admin/retention/rules` with a rule as JSON
//!   (`repositories`, and `keep_last`, `keep_tags`, `remove_tags`,
//!   `remove_older_than` like `"30d"`): 201 with the stored rule;
//! - `DELETE /api/v1/admin/retention/rules/{id}`: 204, or 404;
//! - `GET /api/v1/admin/retention/preview`: what a run would remove now,
//!   per repository (a dry run: nothing changes).
//!
//! Credentials and errors as in the whole `/api/v1` JSON API
//! (`crate::error::json`, `{"message": ...}`): 401
//! without valid credentials, 403 for anyone but a site admin (see
//! `AuthService::is_site_admin`; changes need a token with
//! `write:package`). With authentication disabled anyone may, as anyone may
//! then push and delete. The rules themselves are the registry's
//! (`berth_registry::retention_rules`).

use std::time::Duration;

use axum::extract::{Path, Request, State};
use axum::response::{IntoResponse, Response};
use berth_auth::{Actions, Principal};
use berth_registry::retention::{RetentionReport, RetentionRule, RuleSource};
use berth_registry::retention_rules::{RuleError, SourcedRule};
use http::StatusCode;
use http::request::Parts;
use serde::Deserialize;
use serde_json::{Value, json};

use super::json_api::{caller, json_response, rfc3339};
use crate::AppState;
use crate::auth::Caller;
use crate::body::{drain, drain_unread, read_limited};
use crate::error::json::JsonError;

/// A rule is a few globs: far below this.
const MAX_BODY: usize = 64 * 1024;

/// A rule as posted. Unknown fields are refused: a misspelt limit must not
/// leave a broader rule than intended.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RuleBody {
    repositories: String,
    #[serde(default)]
    keep_last: Option<u32>,
    #[serde(default)]
    keep_tags: Vec<String>,
    #[serde(default)]
    remove_tags: Vec<String>,
    /// A duration such as `"30d"` or `"12h"`.
    #[serde(default)]
    remove_older_than: Option<String>,
}

impl RuleBody {
    fn into_rule(self) -> Result<RetentionRule, JsonError> {
        let remove_older_than = self
            .remove_older_than
            .map(|d| {
                humantime::parse_duration(&d)
                    .map_err(|e| JsonError::Unprocessable(format!("remove_older_than {d:?}: {e}")))
            })
            .transpose()?;
        Ok(RetentionRule {
            repositories: self.repositories,
            keep_last: self.keep_last,
            keep_tags: self.keep_tags,
            remove_older_than,
            remove_tags: self.remove_tags,
        })
    }
}

const FORBIDDEN: JsonError = JsonError::Forbidden("only site admins may manage retention rules");
const NOT_FOUND: JsonError = JsonError::NotFound("retention rule does not exist");

/// The caller, if a site admin may do `wanted` (see the module documentation).
async fn admin(state: &AppState, req: &Parts, wanted: Actions) -> Result<Principal, JsonError> {
    let who = caller(state, &Caller::of_parts(req)).await?;
    match state.auth() {
        Some(auth) if !auth.is_site_admin(&who, wanted) => Err(FORBIDDEN),
        _ => Ok(who),
    }
}

fn duration(d: Option<Duration>) -> Value {
    d.map_or(Value::Null, |d| Value::String(humantime::format_duration(d).to_string()))
}

/// Where a rule comes from: the config file (by position, read-only) or
/// the database (by id, with who added it when).
fn source_json(source: &RuleSource) -> Value {
    match source {
        RuleSource::Config { position } => json!({ "source": "config", "read_only": true, "position": position }),
        RuleSource::Stored { id, created_at, created_by } => json!({
            "source": "api",
            "read_only": false,
            "id": id,
            "created_at": rfc3339(*created_at),
            "created_by": created_by,
        }),
    }
}

fn rule_json(r: &SourcedRule) -> Value {
    let mut v = source_json(&r.source);
    v["repositories"] = json!(r.rule.repositories);
    v["keep_last"] = json!(r.rule.keep_last);
    v["keep_tags"] = json!(r.rule.keep_tags);
    v["remove_tags"] = json!(r.rule.remove_tags);
    v["remove_older_than"] = duration(r.rule.remove_older_than);
    v
}

fn report_json(report: &RetentionReport) -> Value {
    let repositories: Vec<Value> = report
        .repositories
        .iter()
        .map(|r| {
            let rule = match &r.source {
                RuleSource::Config { position } => json!({ "source": "config", "position": position }),
                RuleSource::Stored { id, .. } => json!({ "source": "api", "id": id }),
            };
            let remove: Vec<Value> = r
                .removed
                .iter()
                .map(|t| json!({ "tag": t.tag, "digest": t.digest.as_str(), "pushed_at": rfc3339(t.updated_at) }))
                .collect();
            json!({
                "repository": r.repository.as_str(),
                "rule": rule,
                "would_remove": remove,
                "kept": r.kept,
                "immutable": r.immutable,
            })
        })
        .collect();
    json!({
        "dry_run": report.dry_run,
        "would_remove": report.removed(),
        "kept": report.kept(),
        "immutable": report.immutable(),
        "repositories": repositories,
    })
}

/// `GET /api/v1/admin/retention/rules`
pub async fn list(State(state): State<AppState>, req: Request) -> Response {
    let (req, _) = req.into_parts();
    async {
        admin(&state, &req, Actions::PULL).await?;
        let rules = state.maintenance().retention_rules().await?;
        Ok::<_, JsonError>(json_response(StatusCode::OK, &Value::Array(rules.iter().map(rule_json).collect())))
    }
    .await
    .unwrap_or_else(IntoResponse::into_response)
}

/// `POST /api/v1/admin/retention/rules`
pub async fn add(State(state): State<AppState>, req: Request) -> Response {
    let (req, mut body) = req.into_parts();
    async {
        let who = match admin(&state, &req, Actions::READ_WRITE).await {
            Ok(who) => who,
            Err(e) => {
                drain_unread(&req.headers, &mut body).await;
                return Err(e);
            }
        };
        let read = read_limited(&mut body, MAX_BODY, state.settings().body_idle_timeout).await;
        let Some(bytes) = read.map_err(|e| JsonError::BadRequest(format!("reading the request body: {e}")))? else {
            drain(&mut body).await;
            return Err(JsonError::TooLarge("a rule is at most 64 KiB of JSON"));
        };
        let body: RuleBody =
            serde_json::from_slice(&bytes).map_err(|e| JsonError::BadRequest(format!("invalid rule JSON: {e}")))?;
        let created_by = who.user_name().unwrap_or("anonymous");
        let stored = match state.maintenance().add_retention_rule(body.into_rule()?, created_by).await {
            Ok(stored) => stored,
            Err(RuleError::Invalid(m)) => return Err(JsonError::Unprocessable(m)),
            Err(RuleError::Registry(e)) => return Err(e.into()),
        };
        Ok::<_, JsonError>(json_response(StatusCode::CREATED, &rule_json(&stored)))
    }
    .await
    .unwrap_or_else(IntoResponse::into_response)
}

/// `DELETE /api/v1/admin/retention/rules/{id}`
pub async fn remove(State(state): State<AppState>, Path(id): Path<String>, req: Request) -> Response {
    let (req, _) = req.into_parts();
    async {
        let who = admin(&state, &req, Actions::READ_WRITE).await?;
        // Config rules have no id: they are changed in the file.
        let id: i64 = id.parse().map_err(|_| NOT_FOUND)?;
        if !state.maintenance().remove_retention_rule(id, who.user_name().unwrap_or("anonymous")).await? {
            return Err(NOT_FOUND);
        }
        Ok::<_, JsonError>(StatusCode::NO_CONTENT.into_response())
    }
    .await
    .unwrap_or_else(IntoResponse::into_response)
}

/// `GET /api/v1/admin/retention/preview`
pub async fn preview(State(state): State<AppState>, req: Request) -> Response {
    let (req, _) = req.into_parts();
    async {
        admin(&state, &req, Actions::PULL).await?;
        let m = state.maintenance();
        let policy = m.retention_policy().await?;
        // A dry run takes no lease: it changes nothing.
        let report = m.apply_retention(&policy, true, None).await?;
        Ok::<_, JsonError>(json_response(StatusCode::OK, &report_json(&report)))
    }
    .await
    .unwrap_or_else(IntoResponse::into_response)
}
