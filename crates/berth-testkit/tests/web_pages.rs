//! The web pages over HTTP against the real server (auth on): content,
//! visibility (private is 404 to others), sessions and their cookie, CSRF,
//! the session cookie refused by the registry and API routes, and escaping
//! of everything that came from a user or an image.

mod common;

use std::collections::BTreeMap;

use common::*;
use reqwest::Method;
use serde_json::json;

const ALICE_PW: &str = "alice-correct-horse";
const BOB_PW: &str = "bob-battery-staple";
const XSS: &str = "<script>alert(1)</script>";
const ATTR_XSS: &str = "\"onmouseover=alert(1)";

fn alice() -> Cred {
    Cred::basic("alice", ALICE_PW)
}

/// A client that keeps cookies, as a browser would (no redirects followed).
struct Browser<'a> {
    h: &'a H,
    cookies: BTreeMap<String, String>,
}

impl<'a> Browser<'a> {
    fn new(h: &'a H) -> Self {
        Browser { h, cookies: BTreeMap::new() }
    }

    fn cookie_header(&self) -> String {
        self.cookies.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join("; ")
    }

    fn keep_cookies(&mut self, r: &Resp) {
        for v in r.headers.get_all("set-cookie") {
            let text = v.to_str().expect("ascii cookie");
            let (pair, _) = text.split_once(';').unwrap_or((text, ""));
            let (k, v) = pair.split_once('=').expect("name=value");
            if v.is_empty() || text.contains("Max-Age=0") {
                self.cookies.remove(k);
            } else {
                self.cookies.insert(k.to_owned(), v.to_owned());
            }
        }
    }

    async fn get(&mut self, path: &str) -> Resp {
        let cookie = self.cookie_header();
        let r = self.h.send(Method::GET, path, &Cred::Anon, &[("cookie", &cookie)], None).await;
        self.keep_cookies(&r);
        r
    }

    async fn post(&mut self, path: &str, form: &[(&str, &str)]) -> Resp {
        let cookie = self.cookie_header();
        let body = serde_urlencoded::to_string(form).expect("form");
        let headers = [("cookie", cookie.as_str()), ("content-type", "application/x-www-form-urlencoded")];
        let r = self.h.send(Method::POST, path, &Cred::Anon, &headers, Some(body.into_bytes())).await;
        self.keep_cookies(&r);
        r
    }

    async fn sign_in(&mut self, user: &str, password: &str) -> Resp {
        let form = self.get("/user/login").await;
        assert_eq!(form.status, 200, "{}", form.text());
        let csrf = field(&form.text(), "csrf");
        let r =
            self.post("/user/login", &[("csrf", &csrf), ("user", user), ("password", password), ("next", "/")]).await;
        assert_eq!(r.status, 303, "sign in as {user}: {}", r.text());
        r
    }

    /// The CSRF token of the page at `path` (any form's hidden field).
    async fn csrf(&mut self, path: &str) -> String {
        let page = self.get(path).await;
        assert_eq!(page.status, 200, "{path}: {}", page.text());
        field(&page.text(), "csrf")
    }
}

/// The value of the first hidden input named `name`.
fn field(html: &str, name: &str) -> String {
    let needle = format!("name=\"{name}\" value=\"");
    let start = html.find(&needle).unwrap_or_else(|| panic!("no {name} field in {html}")) + needle.len();
    html[start..].split('"').next().expect("value").to_owned()
}

async fn world() -> H {
    let h = H::default().await;
    h.user("alice", ALICE_PW).await;
    h.user("bob", BOB_PW).await;
    h
}

#[tokio::test]
async fn pages_show_packages_versions_and_a_version() {
    let h = world().await;
    let img = h.push_image("alice/app", "latest", &alice(), 1).await;
    h.put_manifest("alice/app", "v1.0", &alice(), &img.manifest).await;
    h.push_image("alice/group/tool", "edge", &alice(), 2).await;
    let mut b = Browser::new(&h);
    b.sign_in("alice", ALICE_PW).await;

    let home = b.get("/").await;
    assert_eq!(home.status, 200);
    assert!(home.text().contains("Signed in as <strong>alice</strong>"), "{}", home.text());
    assert!(home.text().contains("alice/app:latest"));

    let owner = b.get("/alice/-/packages").await;
    assert_eq!(owner.status, 200);
    let text = owner.text();
    assert!(text.contains("alice/app") && text.contains("alice/group/tool"), "{text}");
    assert!(text.contains("KiB"), "sizes are shown: {text}");
    let filtered = b.get("/alice/-/packages?q=too").await.text();
    assert!(filtered.contains("alice/group/tool") && !filtered.contains(">alice/app<"), "{filtered}");

    let newest = b.get("/alice/-/packages/container/app").await;
    assert_eq!(newest.status, 200, "{}", newest.text());
    assert!(newest.text().contains(&img.manifest_digest));
    assert!(newest.text().contains(&img.layer_digest), "layers listed");
    assert!(newest.text().contains("docker pull "), "pull commands");

    let versions = b.get("/alice/-/packages/container/app/versions").await.text();
    assert!(versions.contains(">latest<") && versions.contains(">v1.0<"), "{versions}");
    assert!(!versions.contains("image.config.v1+json"), "a plain image has no artifact-type badge: {versions}");
    // An error page keeps the viewer's header.
    let missing = b.get("/alice/-/packages/container/nope").await;
    assert_eq!(missing.status, 404);
    assert!(missing.text().contains("Sign out") && missing.text().contains(">alice<"), "{}", missing.text());

    let version = b.get("/alice/-/packages/container/app/v1.0").await;
    assert_eq!(version.status, 200);
    assert!(version.text().contains("latest"), "other tags on the digest are listed");
    // Names with a slash, plain and as Gitea encodes them.
    for path in ["/alice/-/packages/container/group/tool/edge", "/alice/-/packages/container/group%2Ftool/edge"] {
        let r = b.get(path).await;
        assert_eq!(r.status, 200, "{path}: {}", r.text());
        assert!(r.text().contains("alice/group/tool"));
    }
    // Every page carries the security headers.
    let csp = version.header("content-security-policy").expect("CSP");
    assert!(csp.contains("script-src 'self'") && csp.contains("frame-ancestors 'none'") && !csp.contains("unsafe"));
    assert!(version.header("referrer-policy").is_some());
    assert_eq!(version.header("x-frame-options").as_deref(), Some("DENY"));
    // The Gitea html_url of a version is this page.
    let api = h.get("/api/v1/packages/alice/container/app/v1.0", &alice()).await.json();
    let html_url = api["html_url"].as_str().expect("html_url").to_owned();
    let path = &html_url[html_url.find("/alice/").expect("path")..];
    assert_eq!(b.get(path).await.status, 200, "{path}");

    // Gitea's files list, with what Gitea lacks: every file's size.
    let files = h.get("/api/v1/packages/alice/container/app/v1.0/files", &alice()).await;
    assert_eq!(files.status, 200, "{}", files.text());
    let files = files.json();
    let files = files.as_array().expect("a list");
    assert_eq!(files[0]["name"], "manifest.json");
    assert_eq!(files[0]["Size"], img.manifest.len());
    assert_eq!(files[0]["sha256"], img.manifest_digest.trim_start_matches("sha256:"));
    let names: Vec<&str> = files.iter().map(|f| f["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["manifest.json", img.config_digest.as_str(), img.layer_digest.as_str()]);
    assert_eq!(files[2]["Size"], img.layer.len());
    let group = h.get("/api/v1/packages/alice/container/group%2Ftool/edge/files", &alice()).await;
    assert_eq!(group.status, 200);
    assert_eq!(h.get("/api/v1/packages/alice/container/app/v1.0/files", &Cred::Anon).await.status, 401);
    assert_eq!(h.get("/api/v1/packages/alice/container/app/nope/files", &alice()).await.status, 404);
}

#[tokio::test]
async fn private_packages_are_404_to_others_and_anonymous_sees_public_only() {
    let h = world().await;
    h.push_image("alice/secret", "v1", &alice(), 3).await;
    h.push_image("alice/open", "v1", &alice(), 4).await;
    h.visibility("alice/open", true).await;

    let mut anon = Browser::new(&h);
    let list = anon.get("/alice/-/packages").await.text();
    assert!(list.contains("alice/open") && !list.contains("alice/secret"), "{list}");
    assert!(!anon.get("/").await.text().contains("alice/secret"));
    assert_eq!(anon.get("/alice/-/packages/container/secret").await.status, 404);
    assert_eq!(anon.get("/alice/-/packages/container/secret/v1").await.status, 404);
    assert_eq!(anon.get("/alice/-/packages/container/open/v1").await.status, 200);
    let missing = anon.get("/nobody/-/packages").await;
    assert_eq!(missing.status, 404);
    assert!(missing.text().contains("/user/login"), "a way to sign in from the 404: {}", missing.text());

    let mut bob = Browser::new(&h);
    bob.sign_in("bob", BOB_PW).await;
    for path in [
        "/alice/-/packages/container/secret",
        "/alice/-/packages/container/secret/versions",
        "/alice/-/packages/container/secret/v1",
    ] {
        let r = bob.get(path).await;
        assert_eq!(r.status, 404, "{path}");
        assert!(!r.text().contains("secret/v1"));
    }
    assert!(!bob.get("/?q=secret").await.text().contains("alice/secret"));
}

#[tokio::test]
async fn the_session_cookie_is_strict_ends_at_sign_out_and_is_refused_by_the_apis() {
    let h = world().await;
    h.push_image("alice/app", "v1", &alice(), 5).await;
    let mut b = Browser::new(&h);
    let r = b.sign_in("alice", ALICE_PW).await;
    let set = r.headers.get_all("set-cookie").iter().map(|v| v.to_str().unwrap().to_owned()).collect::<Vec<_>>();
    let session = set.iter().find(|c| c.starts_with("berth_session=")).expect("session cookie");
    for attr in ["HttpOnly", "SameSite=Lax", "Path=/", "Max-Age="] {
        assert!(session.contains(attr), "{session}");
    }
    assert!(!session.contains("Secure"), "plain HTTP without a https public_url");
    assert_eq!(b.get("/alice/-/packages/container/app").await.status, 200);

    // The cookie alone opens nothing on the registry or the JSON API.
    let cookie = b.cookie_header();
    let v2 = h.send(Method::GET, "/v2/alice/app/tags/list", &Cred::Anon, &[("cookie", &cookie)], None).await;
    assert_eq!(v2.status, 401);
    let api = h.send(Method::GET, "/api/v1/packages/alice", &Cred::Anon, &[("cookie", &cookie)], None).await;
    assert!(!api.text().contains("\"app\""), "{} {}", api.status, api.text());

    let csrf = b.csrf("/user/settings/applications").await;
    assert_eq!(b.post("/user/logout", &[("csrf", &csrf)]).await.status, 303);
    assert_eq!(b.get("/alice/-/packages/container/app").await.status, 404);
    // The old cookie value is dead on the server too.
    let stale = h.send(Method::GET, "/alice/-/packages/container/app", &Cred::Anon, &[("cookie", &cookie)], None).await;
    assert_eq!(stale.status, 404);

    // Secure whenever the public URL is https.
    let tls = H::start(|c| c.public_url = "https://registry.example.com".into()).await;
    tls.user("carol", "carol-pass-word").await;
    let mut c = Browser::new(&tls);
    let r = c.sign_in("carol", "carol-pass-word").await;
    assert!(r.headers.get_all("set-cookie").iter().any(|v| v.to_str().unwrap().contains("; Secure")));
}

#[tokio::test]
async fn a_wrong_password_changes_nothing_and_password_change_or_disable_ends_sessions() {
    let h = world().await;
    let mut b = Browser::new(&h);
    let form = b.get("/user/login").await;
    let csrf = field(&form.text(), "csrf");
    let r = b.post("/user/login", &[("csrf", &csrf), ("user", "alice"), ("password", "wrong")]).await;
    assert_eq!(r.status, 401);
    assert!(r.text().contains("Wrong user name or password"));
    assert!(!b.cookies.contains_key("berth_session"));
    // Without the form's token, even the right password is refused.
    let r = b.post("/user/login", &[("csrf", "forged"), ("user", "alice"), ("password", ALICE_PW)]).await;
    assert_eq!(r.status, 403);

    b.sign_in("alice", ALICE_PW).await;
    assert_eq!(b.get("/user/settings/applications").await.status, 200);
    berth_auth::admin::set_password(h.store(), "alice", "a-new-password").await.expect("password");
    assert_eq!(b.get("/user/settings/applications").await.status, 303, "signed out by the password change");

    let mut bob = Browser::new(&h);
    bob.sign_in("bob", BOB_PW).await;
    h.disable("bob").await;
    assert_eq!(bob.get("/user/settings/applications").await.status, 303, "signed out by disabling");
}

#[tokio::test]
async fn forms_without_the_csrf_token_are_refused_and_change_nothing() {
    let h = world().await;
    h.push_image("alice/app", "v1", &alice(), 6).await;
    let mut b = Browser::new(&h);
    b.sign_in("alice", ALICE_PW).await;
    let delete = "/alice/-/packages/container/app/v1/delete";
    assert_eq!(b.post(delete, &[]).await.status, 403);
    assert_eq!(b.post(delete, &[("csrf", "0000")]).await.status, 403);
    assert_eq!(h.get_manifest("alice/app", "v1", &alice()).await.status, 200, "still there");
    let r = b.post("/user/settings/applications", &[("action", "create"), ("name", "x"), ("read", "1")]).await;
    assert_eq!(r.status, 403);
    assert!(berth_auth::admin::list_tokens(h.store(), "alice").await.expect("tokens").is_empty());
    // GET never changes state.
    assert_eq!(b.get(delete).await.status, 200, "a confirmation page");
    assert_eq!(h.get_manifest("alice/app", "v1", &alice()).await.status, 200);

    // With the token, the delete goes through and is gone.
    let csrf = field(&b.get(delete).await.text(), "csrf");
    let r = b.post(delete, &[("csrf", &csrf)]).await;
    assert_eq!(r.status, 303, "{}", r.text());
    assert_eq!(h.get_manifest("alice/app", "v1", &alice()).await.status, 404);
    // Bob may not delete alice's versions, even with his own valid token.
    h.push_image("alice/app", "v2", &alice(), 7).await;
    h.visibility("alice/app", true).await;
    let mut bob = Browser::new(&h);
    bob.sign_in("bob", BOB_PW).await;
    let csrf = bob.csrf("/user/settings/applications").await;
    assert_eq!(bob.post("/alice/-/packages/container/app/v2/delete", &[("csrf", &csrf)]).await.status, 403);
    assert_eq!(h.get_manifest("alice/app", "v2", &alice()).await.status, 200);
}

#[tokio::test]
async fn immutable_versions_show_the_rule_and_refuse_deletion() {
    let h = H::start(|c| c.tags.immutable = vec!["*:v*".into()]).await;
    h.user("alice", ALICE_PW).await;
    h.push_image("alice/rel", "v1.0", &alice(), 8).await;
    let mut b = Browser::new(&h);
    b.sign_in("alice", ALICE_PW).await;
    assert!(b.get("/alice/-/packages/container/rel/versions").await.text().contains("immutable"));
    let csrf = b.csrf("/user/settings/applications").await;
    let r = b.post("/alice/-/packages/container/rel/v1.0/delete", &[("csrf", &csrf)]).await;
    assert_eq!(r.status, 403);
    assert!(r.text().contains("*:v*"), "names the rule: {}", r.text());
    assert_eq!(h.get_manifest("alice/rel", "v1.0", &alice()).await.status, 200);
}

#[tokio::test]
async fn tokens_are_created_shown_once_used_and_revoked() {
    let h = world().await;
    let mut b = Browser::new(&h);
    b.sign_in("alice", ALICE_PW).await;
    let csrf = b.csrf("/user/settings/applications").await;
    let form = [
        ("csrf", csrf.as_str()),
        ("action", "create"),
        ("name", "ci"),
        ("read", "1"),
        ("write", "1"),
        ("expires_days", "30"),
    ];
    let r = b.post("/user/settings/applications", &form).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let text = r.text();
    let start = text.find("bpat_").expect("the secret is shown");
    let secret: String =
        text[start..].chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_' || *c == '-').collect();
    assert!(text.contains("docker login "), "{text}");
    // It works for a push, and the page never shows it again.
    h.push_image("alice/app", "v1", &Cred::basic("alice", &secret), 9).await;
    let again = b.get("/user/settings/applications").await.text();
    assert!(!again.contains(&secret) && again.contains("ci") && again.contains("write:package"));
    let tokens = berth_auth::admin::list_tokens(h.store(), "alice").await.expect("tokens");
    let id = tokens[0].id.to_string();
    // Revoking someone else's token id does nothing.
    let mut bob = Browser::new(&h);
    bob.sign_in("bob", BOB_PW).await;
    let bob_csrf = bob.csrf("/user/settings/applications").await;
    assert_eq!(
        bob.post("/user/settings/applications", &[("csrf", &bob_csrf), ("action", "revoke"), ("id", &id)]).await.status,
        404
    );
    assert_eq!(h.get("/v2/alice/app/tags/list", &Cred::basic("alice", &secret)).await.status, 200);
    let r = b.post("/user/settings/applications", &[("csrf", &csrf), ("action", "revoke"), ("id", &id)]).await;
    assert_eq!(r.status, 303);
    assert_eq!(h.get("/v2/alice/app/tags/list", &Cred::basic("alice", &secret)).await.status, 401);
}

#[tokio::test]
async fn what_came_from_users_and_images_is_escaped() {
    let h = world().await;
    let config = serde_json::to_vec(&json!({
        "architecture": "amd64", "os": "linux",
        "config": {"Labels": {"x": XSS, "y": ATTR_XSS}, "Env": [format!("A={XSS}")], "Cmd": [ATTR_XSS]}
    }))
    .unwrap();
    let layer = berth_testkit::fixtures::blob(11, 300);
    for blob in [&config, &layer] {
        assert_eq!(h.upload_blob("alice/app", &alice(), blob).await.status, 201);
    }
    let manifest = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": digest(&config), "size": config.len()},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": digest(&layer), "size": layer.len()}],
        "annotations": {"note": XSS, ATTR_XSS: "v"}
    }))
    .unwrap();
    assert_eq!(h.put_manifest("alice/app", "v1", &alice(), &manifest).await.status, 201);
    // A referrer whose artifactType carries a payload.
    let empty = b"{}";
    h.upload_blob("alice/app", &alice(), empty).await;
    let referrer = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "artifactType": format!("application/x{XSS}"),
        "config": {"mediaType": "application/vnd.oci.empty.v1+json", "digest": digest(empty), "size": 2},
        "layers": [],
        "subject": {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": digest(&manifest), "size": manifest.len()}
    }))
    .unwrap();
    let pushed = h.put_manifest("alice/app", &digest(&referrer), &alice(), &referrer).await;
    // A tag cannot carry a payload: the tag grammar refuses it.
    let bad_tag = h.put_manifest("alice/app", "x%22onmouseover%3D1", &alice(), &manifest).await;
    assert!(bad_tag.status >= 400);

    let mut b = Browser::new(&h);
    b.sign_in("alice", ALICE_PW).await;
    let csrf = b.csrf("/user/settings/applications").await;
    let tokens = b
        .post("/user/settings/applications", &[("csrf", &csrf), ("action", "create"), ("name", XSS), ("read", "1")])
        .await;
    let mut pages = vec![b.get("/alice/-/packages/container/app/v1").await.text(), tokens.text()];
    pages.push(b.get("/user/settings/applications").await.text());
    if pushed.status == 201 {
        pages.push(b.get(&format!("/alice/-/packages/container/app/{}", digest(&referrer))).await.text());
        assert!(pages[0].contains("Referrers"), "the referrer is listed");
    }
    for page in &pages {
        assert!(!page.contains("<script>alert"), "raw payload in {page}");
        assert!(!page.contains(ATTR_XSS), "raw attribute payload in {page}");
        assert!(
            page.contains("&lt;script&gt;alert(1)&lt;/script&gt;") || page.contains("&#60;script&#62;"),
            "escaped payload shown: {page}"
        );
    }
}

#[tokio::test]
async fn pages_off_are_404_and_reserved_owner_names_are_refused() {
    let h = H::start(|c| c.ui.enabled = false).await;
    h.user("alice", ALICE_PW).await;
    for path in ["/", "/alice/-/packages", "/user/login", "/-/admin", "/-/static/berth.css"] {
        assert_eq!(h.get(path, &Cred::Anon).await.status, 404, "{path}");
    }
    for name in ["user", "api", "v2"] {
        let e = berth_auth::admin::create_user(h.store(), name, Some("pw-pw-pw-pw"), false).await.expect_err(name);
        assert!(e.to_string().contains("reserved"), "{e}");
    }
}

#[tokio::test]
async fn site_admins_manage_users_others_see_nothing() {
    let h = world().await;
    h.site_admin("root", "root-pass-word").await;
    let mut bob = Browser::new(&h);
    bob.sign_in("bob", BOB_PW).await;
    assert_eq!(bob.get("/-/admin").await.status, 404);
    let mut root = Browser::new(&h);
    root.sign_in("root", "root-pass-word").await;
    let page = root.get("/-/admin").await;
    assert_eq!(page.status, 200);
    assert!(page.text().contains("alice") && page.text().contains("Storage"));
    let csrf = field(&page.text(), "csrf");
    let r = root
        .post(
            "/-/admin",
            &[("csrf", &csrf), ("action", "create_user"), ("name", "dave"), ("password", "dave-pass-word")],
        )
        .await;
    assert_eq!(r.status, 303, "{}", r.text());
    assert_eq!(root.post("/-/admin", &[("csrf", &csrf), ("action", "disable"), ("name", "bob")]).await.status, 303);
    assert_eq!(bob.get("/user/settings/applications").await.status, 303, "bob's session ended");
    assert_eq!(root.post("/-/admin", &[("action", "disable"), ("name", "alice")]).await.status, 403, "CSRF");

    // Site admin, organizations and members.
    assert_eq!(
        root.post("/-/admin", &[("csrf", &csrf), ("action", "make_admin"), ("name", "alice")]).await.status,
        303
    );
    assert!(h.store().get_user("alice").await.unwrap().unwrap().is_admin);
    assert_eq!(root.post("/-/admin", &[("csrf", &csrf), ("action", "create_org"), ("name", "acme")]).await.status, 303);
    let r = root
        .post(
            "/-/admin",
            &[("csrf", &csrf), ("action", "set_member"), ("org", "acme"), ("name", "dave"), ("role", "write")],
        )
        .await;
    assert_eq!(r.status, 303, "{}", r.text());
    let members = h.store().list_org_members("acme").await.unwrap();
    assert_eq!((members[0].user.as_str(), members[0].role.as_str()), ("dave", "write"));
    let page = root.get("/-/admin").await.text();
    assert!(page.contains(">acme<") && page.contains(">dave<"), "{page}");
    let refused = root.post("/-/admin", &[("csrf", &csrf), ("action", "create_org"), ("name", "user")]).await;
    assert!(refused.text().contains("reserved"), "{}", refused.text());

    // The retention preview is a dry run.
    h.push_image("alice/app", "old", &alice(), 12).await;
    h.push_image("alice/app", "new", &alice(), 13).await;
    let rule = serde_json::json!({"repositories": "alice/*", "keep_last": 1});
    let added = h
        .send(
            Method::POST,
            "/api/v1/admin/retention/rules",
            &Cred::basic("root", "root-pass-word"),
            &[("content-type", "application/json")],
            Some(rule.to_string().into_bytes()),
        )
        .await;
    assert!(added.status < 300, "{} {}", added.status, added.text());
    let preview = root.get("/-/admin?preview=1").await.text();
    assert!(preview.contains("alice/app") && preview.contains("old"), "{preview}");
    assert_eq!(h.get_manifest("alice/app", "old", &alice()).await.status, 200, "nothing removed");
}

#[tokio::test]
async fn failed_sign_ins_share_the_basic_auth_limiter() {
    let h = H::start(|c| c.auth.failed_login_limit = 3).await;
    h.user("alice", ALICE_PW).await;
    let mut b = Browser::new(&h);
    let mut statuses = Vec::new();
    for _ in 0..5 {
        let csrf = field(&b.get("/user/login").await.text(), "csrf");
        statuses.push(b.post("/user/login", &[("csrf", &csrf), ("user", "alice"), ("password", "wrong")]).await.status);
    }
    assert_eq!(statuses.last(), Some(&429), "{statuses:?}");
    // The same lockout answers Basic auth from this address.
    assert_eq!(h.get("/v2/", &Cred::basic("alice", "wrong-again")).await.status, 429);
}

#[tokio::test]
async fn storage_usage_shows_to_the_owner_org_admins_and_site_admins_only() {
    let h = world().await;
    h.site_admin("root", "root-pass-word").await;
    h.user("carol", "carol-pass-word").await;
    h.org("acme").await;
    h.member("acme", "carol", "admin").await;
    h.member("acme", "bob", "read").await;
    h.push_image("alice/app", "v1", &alice(), 14).await;
    h.push_image("acme/web", "v1", &Cred::basic("carol", "carol-pass-word"), 15).await;
    h.visibility("alice", true).await;
    h.visibility("acme", true).await;
    let quota = berth_registry::quota::QuotaLimits { bytes: Some(1 << 20), repositories: Some(10) };
    h.server.registry.set_quota("alice", quota).await.expect("set a quota");
    let alice_usage = h.server.registry.usage("alice").await.expect("usage");
    let line = format!("Storage: {} of 1 MiB (", berth_registry::quota::human_size(alice_usage.usage.bytes));

    let mut a = Browser::new(&h);
    a.sign_in("alice", ALICE_PW).await;
    let own = a.get("/alice/-/packages").await.text();
    assert!(own.contains(&line) && own.contains("%) · 1 of 10 repositories"), "{own}");
    // acme has no quota: its admin sees the figure alone.
    let mut carol = Browser::new(&h);
    carol.sign_in("carol", "carol-pass-word").await;
    let org = carol.get("/acme/-/packages").await.text();
    assert!(org.contains("stored · 1 repository<"), "{org}");
    // Outsiders see the packages (public here), never the usage.
    let mut bob = Browser::new(&h);
    bob.sign_in("bob", BOB_PW).await;
    for (viewer, path) in [(&mut bob, "/alice/-/packages"), (&mut carol, "/alice/-/packages")] {
        let page = viewer.get(path).await.text();
        assert!(page.contains("alice/app") && !page.contains("Storage:"), "{page}");
    }
    let page = bob.get("/acme/-/packages").await.text();
    assert!(page.contains("acme/web") && !page.contains("Storage:"), "a plain member: {page}");
    let page = Browser::new(&h).get("/alice/-/packages").await.text();
    assert!(page.contains("alice/app") && !page.contains("Storage:"), "anonymous: {page}");

    // Site admins see it on every owner, and the table on the admin page.
    let mut root = Browser::new(&h);
    root.sign_in("root", "root-pass-word").await;
    assert!(root.get("/alice/-/packages").await.text().contains(&line));
    let admin = root.get("/-/admin").await.text();
    assert!(
        admin.contains("Usage by owner") && admin.contains(">alice</a> <span class=\"badge\">own quota"),
        "{admin}"
    );
    assert!(admin.contains(">1 MiB<") && admin.contains(">unlimited<") && admin.contains(">1 of 10<"), "{admin}");

    // What the viewer typed stays escaped beside the usage line.
    let filtered = a.get(&format!("/alice/-/packages?q={}", query(XSS))).await.text();
    assert!(filtered.contains(&line), "{filtered}");
    assert!(!filtered.contains("<script>alert"), "{filtered}");
    assert!(
        filtered.contains("&lt;script&gt;alert(1)&lt;/script&gt;") || filtered.contains("&#60;script&#62;"),
        "{filtered}"
    );
}

fn query(text: &str) -> String {
    serde_urlencoded::to_string([("v", text)]).expect("encode")[2..].to_owned()
}
