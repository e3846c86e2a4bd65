//! `berth user|org|token|repo`: account management on the configured
//! database (created and migrated if needed; safe while the server runs).

use std::io::BufRead;
use std::time::{Duration, UNIX_EPOCH};

use berth_auth::admin::{self, TokenRequest};
use berth_config::Config;
use berth_meta::AuthStore;
use clap::{Args, Subcommand, ValueEnum};

use crate::backends::open_meta;

#[derive(Subcommand)]
pub enum UserCommand {
    /// Create a user (a namespace owner).
    Add {
        name: String,
        /// Make the user a site admin (may act on every repository).
        #[arg(long)]
        admin: bool,
        /// Read the password from the first line of stdin (otherwise the user can only use tokens).
        #[arg(long)]
        password_stdin: bool,
    },
    /// List users.
    List,
    /// Disable a user: their passwords and tokens stop working.
    Disable { name: String },
    /// Re-enable a disabled user.
    Enable { name: String },
    /// Set a user's password, read from the first line of stdin.
    Passwd { name: String },
}

#[derive(Subcommand)]
pub enum OrgCommand {
    /// Create an organization (a namespace owner whose members act by role).
    Add { name: String },
    /// Manage members.
    #[command(subcommand)]
    Member(MemberCommand),
}

#[derive(Subcommand)]
pub enum MemberCommand {
    /// Add a member or change their role.
    Add {
        org: String,
        user: String,
        /// read: pull; write: pull, push, delete; admin: the same, and manage the org.
        #[arg(long, value_parser = ["read", "write", "admin"])]
        role: String,
    },
    /// Remove a member.
    Remove { org: String, user: String },
    /// List members and roles.
    List { org: String },
}

#[derive(Subcommand)]
pub enum TokenCommand {
    /// Create a personal access token; the secret is printed once, alone on the last line
    /// (the database keeps only its argon2id hash).
    Create(TokenCreate),
    /// List a user's tokens (never their secrets).
    List { user: String },
    /// Revoke a token by id.
    Revoke { id: i64 },
}

#[derive(Args)]
pub struct TokenCreate {
    pub user: String,
    /// Comma-separated: read:package (pull), write:package (push, delete; implies read).
    #[arg(long, value_delimiter = ',', required = true)]
    pub scopes: Vec<String>,
    /// Restrict the token to repositories matching this glob (repeatable), e.g. 'acme/*'.
    #[arg(long = "repo", value_name = "PATTERN")]
    pub repos: Vec<String>,
    /// Lifetime, e.g. 90d or 12h; default: no expiry.
    #[arg(long, value_parser = humantime::parse_duration)]
    pub expires: Option<Duration>,
    /// A label to recognise the token by.
    #[arg(long, default_value = "")]
    pub name: String,
}

#[derive(Subcommand)]
pub enum RepoCommand {
    /// Make an owner (all its repositories) or a single repository public or private.
    Visibility { target: String, visibility: Visibility },
}

#[derive(Clone, Copy, ValueEnum)]
pub enum Visibility {
    Public,
    Private,
}

fn read_password() -> Result<String, String> {
    let mut line = String::new();
    std::io::stdin().lock().read_line(&mut line).map_err(|e| format!("reading stdin: {e}"))?;
    let pw = line.trim_end_matches(['\r', '\n']).to_owned();
    if pw.is_empty() { Err("no password on stdin".into()) } else { Ok(pw) }
}

fn time(ms: Option<i64>) -> String {
    match ms {
        None => "-".into(),
        Some(ms) => humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_millis(ms.max(0) as u64)).to_string(),
    }
}

async fn store(config: &Config) -> Result<std::sync::Arc<dyn AuthStore>, String> {
    open_meta(config, true).await.map(|s| s.auth).map_err(|e| e.to_string())
}

pub async fn user(config: &Config, cmd: UserCommand) -> Result<(), String> {
    let s = store(config).await?;
    let s = s.as_ref();
    match cmd {
        UserCommand::Add { name, admin, password_stdin } => {
            let pw = if password_stdin { Some(read_password()?) } else { None };
            admin::create_user(s, &name, pw.as_deref(), admin).await.map_err(|e| e.to_string())?;
            println!("created user {name}{}", if admin { " (site admin)" } else { "" });
        }
        UserCommand::List => {
            println!("{:<24} {:<6} {:<9} {:<9} CREATED", "NAME", "ADMIN", "DISABLED", "PASSWORD");
            for u in admin::list_users(s).await.map_err(|e| e.to_string())? {
                println!(
                    "{:<24} {:<6} {:<9} {:<9} {}",
                    u.name,
                    u.is_admin,
                    u.disabled,
                    u.password_hash.is_some(),
                    time(Some(u.created_at))
                );
            }
        }
        UserCommand::Disable { name } => {
            admin::set_disabled(s, &name, true).await.map_err(|e| e.to_string())?;
            println!("disabled user {name}");
        }
        UserCommand::Enable { name } => {
            admin::set_disabled(s, &name, false).await.map_err(|e| e.to_string())?;
            println!("enabled user {name}");
        }
        UserCommand::Passwd { name } => {
            admin::set_password(s, &name, &read_password()?).await.map_err(|e| e.to_string())?;
            println!("password changed for {name}");
        }
    }
    Ok(())
}

pub async fn org(config: &Config, cmd: OrgCommand) -> Result<(), String> {
    let s = store(config).await?;
    let s = s.as_ref();
    match cmd {
        OrgCommand::Add { name } => {
            admin::create_org(s, &name).await.map_err(|e| e.to_string())?;
            println!("created organization {name}");
        }
        OrgCommand::Member(MemberCommand::Add { org, user, role }) => {
            admin::set_member(s, &org, &user, &role).await.map_err(|e| e.to_string())?;
            println!("{user} is now {role} in {org}");
        }
        OrgCommand::Member(MemberCommand::Remove { org, user }) => {
            admin::remove_member(s, &org, &user).await.map_err(|e| e.to_string())?;
            println!("removed {user} from {org}");
        }
        OrgCommand::Member(MemberCommand::List { org }) => {
            for m in admin::list_members(s, &org).await.map_err(|e| e.to_string())? {
                println!("{:<24} {}", m.user, m.role.as_str());
            }
        }
    }
    Ok(())
}

pub async fn token(config: &Config, cmd: TokenCommand) -> Result<(), String> {
    let s = store(config).await?;
    let s = s.as_ref();
    match cmd {
        TokenCommand::Create(c) => {
            let req = TokenRequest { scopes: c.scopes, repositories: c.repos, expires_in: c.expires, name: c.name };
            let (id, secret) = admin::create_token(s, &c.user, &req).await.map_err(|e| e.to_string())?;
            let expires = req.expires_in.map_or("never".to_owned(), |d| humantime::format_duration(d).to_string());
            println!(
                "token {id} for {} (scopes {}; repositories {}; expires {expires})",
                c.user,
                req.scopes.join(","),
                if req.repositories.is_empty() { "all".to_owned() } else { req.repositories.join(" ") }
            );
            println!("store the secret now: it is not shown again");
            println!("{secret}");
        }
        TokenCommand::List { user } => {
            println!(
                "{:<6} {:<20} {:<28} {:<24} {:<21} {:<21} STATUS",
                "ID", "NAME", "SCOPES", "REPOSITORIES", "EXPIRES", "LAST USED"
            );
            let now = UNIX_EPOCH.elapsed().map_or(0, |d| d.as_millis() as i64);
            for t in admin::list_tokens(s, &user).await.map_err(|e| e.to_string())? {
                let status = if t.revoked_at.is_some() {
                    "revoked"
                } else if t.expires_at.is_some_and(|e| e <= now) {
                    "expired"
                } else {
                    "active"
                };
                let repos = if t.repositories.is_empty() { "*".to_owned() } else { t.repositories.join(",") };
                println!(
                    "{:<6} {:<20} {:<28} {:<24} {:<21} {:<21} {status}",
                    t.id,
                    t.name,
                    t.scopes.join(","),
                    repos,
                    time(t.expires_at),
                    time(t.last_used_at)
                );
            }
        }
        TokenCommand::Revoke { id } => {
            admin::revoke_token(s, id).await.map_err(|e| e.to_string())?;
            println!("revoked token {id}");
        }
    }
    Ok(())
}

pub async fn repo(config: &Config, cmd: RepoCommand) -> Result<(), String> {
    let s = store(config).await?;
    match cmd {
        RepoCommand::Visibility { target, visibility } => {
            let public = matches!(visibility, Visibility::Public);
            admin::set_visibility(s.as_ref(), &target, public).await.map_err(|e| e.to_string())?;
            println!("{target} is now {}", if public { "public" } else { "private" });
        }
    }
    Ok(())
}
