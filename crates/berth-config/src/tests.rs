use std::io::Write;

use super::*;

fn vars(list: &[(&str, &str)]) -> Vec<(String, String)> {
    list.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
}

#[test]
fn defaults_derive_from_data_dir() {
    let c = Config::load(None, vars(&[("BERTH_DATA_DIR", "/srv/berth")])).unwrap();
    assert_eq!(c.listen.to_string(), "0.0.0.0:5000");
    assert_eq!(c.database.url.expose(), "sqlite:///srv/berth/berth.db");
    assert_eq!(c.storage.path, PathBuf::from("/srv/berth/blobs"));
    assert!(c.auth.enabled, "auth is on by default");
    assert_eq!(c.auth.jwt_key_file.as_deref(), Some(std::path::Path::new("/srv/berth/auth/jwt-ed25519.pem")));
    assert!(!c.manifests.allow_sparse);
}

#[test]
fn env_overrides_file() {
    let mut f = tempfile::NamedTempFile::new().unwrap();
    writeln!(f, "listen = \"127.0.0.1:6000\"\n[manifests]\nallow_sparse = false\n[tags]\nimmutable = [\"a/*:*\"]")
        .unwrap();
    let c = Config::load(
        Some(f.path()),
        vars(&[
            ("BERTH_MANIFESTS_ALLOW_SPARSE", "true"),
            ("BERTH_TAGS_IMMUTABLE", r#"["*:v*", "x/*:*"]"#),
            ("BERTH_DATABASE_URL", "123"),
            ("BERTH_HTTP_BODY_IDLE_TIMEOUT", "2m"),
            ("BERTH_TEST_POSTGRES_URL", "ignored"),
        ]),
    )
    .unwrap();
    assert_eq!(c.listen.to_string(), "127.0.0.1:6000");
    assert!(c.manifests.allow_sparse);
    assert_eq!(c.tags.immutable, vec!["*:v*", "x/*:*"]);
    assert_eq!(c.database.url.expose(), "123");
    assert_eq!(c.http.body_idle_timeout, std::time::Duration::from_secs(120));
}

#[test]
fn comma_lists_and_bad_values() {
    let c = Config::load(None, vars(&[("BERTH_TAGS_IMMUTABLE", "*:v*, prod/*:*")])).unwrap();
    assert_eq!(c.tags.immutable, vec!["*:v*", "prod/*:*"]);
    let e = Config::load(None, vars(&[("BERTH_AUTH_ENABLED", "maybe")])).unwrap_err();
    assert!(e.to_string().contains("BERTH_AUTH_ENABLED"), "{e}");
}

#[test]
fn unknown_file_keys_are_rejected() {
    let mut f = tempfile::NamedTempFile::new().unwrap();
    writeln!(f, "[manifests]\nallow_sparce = true").unwrap();
    let e = Config::load(Some(f.path()), Vec::new()).unwrap_err();
    assert!(e.to_string().contains("allow_sparce"), "{e}");
}

#[test]
fn secrets_are_masked() {
    let c = Config::load(None, vars(&[("BERTH_DATABASE_URL", "postgres://u:pw@h/db")])).unwrap();
    assert!(!format!("{c:?}").contains("pw@"));
    assert!(!c.to_masked_json().to_string().contains("pw@"));
}

#[test]
fn variable_names_are_unambiguous() {
    let keys = env::known_keys();
    let mut names: Vec<String> = keys.keys().map(|k| env::var_name(k)).collect();
    let n = names.len();
    names.sort();
    names.dedup();
    assert_eq!(names.len(), n);
    assert!(keys.contains_key("tls.cert"), "optional keys are listed too");
}

/// `config.example.toml` must parse and document every key.
#[test]
fn example_documents_every_key() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../config.example.toml");
    let text = std::fs::read_to_string(path).expect("config.example.toml exists");
    Config::load(Some(std::path::Path::new(path)), Vec::new()).expect("example parses");
    // Every key appears, commented out or not, inside its section.
    let mut section = String::new();
    let mut documented = std::collections::BTreeSet::new();
    for line in text.lines() {
        let l = line.trim().trim_start_matches('#').trim();
        if l.starts_with('[') && l.ends_with(']') && !l.contains('=') {
            section = l.trim_matches(|c| c == '[' || c == ']').to_owned();
        } else if let Some((k, _)) = l.split_once('=') {
            let k = k.trim();
            if !k.is_empty() && !k.contains(' ') {
                documented.insert(if section.is_empty() { k.to_owned() } else { format!("{section}.{k}") });
            }
        }
    }
    for key in env::known_keys().keys() {
        assert!(documented.contains(key), "config.example.toml does not document {key}");
    }
}

#[test]
fn maintenance_sections_from_file_and_env() {
    let c = Config::load(None, Vec::new()).unwrap();
    assert_eq!(c.gc.interval, std::time::Duration::from_secs(24 * 3600));
    assert_eq!(c.gc.min_age, std::time::Duration::from_secs(3600));
    assert_eq!(c.uploads.expiry_interval, std::time::Duration::from_secs(600));
    assert!(c.retention.rules.is_empty());

    let mut f = tempfile::NamedTempFile::new().unwrap();
    writeln!(
        f,
        "[gc]\ninterval = \"0s\"\n[retention]\ninterval = \"1h\"\n\
         [[retention.rules]]\nrepositories = \"acme/*\"\nkeep_last = 30\nkeep_tags = [\"v*\"]\n\
         [[retention.rules]]\nrepositories = \"*\"\nremove_older_than = \"30d\"\nremove_tags = [\"pr-*\"]"
    )
    .unwrap();
    let c = Config::load(Some(f.path()), vars(&[("BERTH_GC_MIN_AGE", "5m")])).unwrap();
    assert!(c.gc.interval.is_zero());
    assert_eq!(c.gc.min_age, std::time::Duration::from_secs(300));
    assert_eq!(c.retention.rules.len(), 2);
    assert_eq!(c.retention.rules[0].keep_last, Some(30));
    assert_eq!(c.retention.rules[1].remove_older_than, Some(std::time::Duration::from_secs(30 * 86400)));

    let c = Config::load(
        None,
        vars(&[("BERTH_RETENTION_RULES", r#"[{"repositories":"x/*","keep_last":3,"remove_older_than":"2d"}]"#)]),
    )
    .unwrap();
    assert_eq!(c.retention.rules[0].repositories, "x/*");
    assert_eq!(c.retention.rules[0].remove_older_than, Some(std::time::Duration::from_secs(2 * 86400)));
    let e = Config::load(None, vars(&[("BERTH_RETENTION_RULES", r#"[{"repositories":""}]"#)])).unwrap_err();
    assert!(e.to_string().contains("retention.rules"), "{e}");
}

#[test]
fn webhook_urls_show_scheme_and_host_only() {
    assert_eq!(
        mask_url("https://hooks.example.com/services/T0/B0/XyZsecret?token=abc"),
        "https://hooks.example.com/***"
    );
    assert_eq!(mask_url("http://user:pw@127.0.0.1:8080/x"), "http://127.0.0.1:8080/***");
    assert_eq!(mask_url("http://[::1]:9/hook"), "http://[::1]:9/***");
    assert_eq!(mask_url("https://chat.example.com?key=s3cret"), "https://chat.example.com/***");
    // Nothing half-parsed is shown: user info with a slash, a bad port, no scheme.
    assert_eq!(mask_url("http://u:pa/ss@h/x"), "***");
    assert_eq!(mask_url("https://h:s3cret/x"), "***");
    assert_eq!(mask_url("s3cret-token"), "***");

    let hooks = r#"[{"name":"chat","url":"https://u:pw@hooks.example.com/T0/s3cretpath?token=s3cretquery","secret":"hmac-s3cret"}]"#;
    let c = Config::load(None, vars(&[("BERTH_WEBHOOKS", hooks)])).unwrap();
    assert_eq!(c.webhooks[0].url, "https://u:pw@hooks.example.com/T0/s3cretpath?token=s3cretquery");
    let shown = [c.to_masked_json().to_string(), format!("{c:?}")];
    for text in shown {
        for secret in ["s3cretpath", "s3cretquery", "hmac-s3cret", "pw@", "u:"] {
            assert!(!text.contains(secret), "{secret} shown in {text}");
        }
        assert!(text.contains("https://hooks.example.com/***"), "{text}");
    }
}

#[test]
fn max_connections_has_a_default_and_must_be_positive() {
    assert_eq!(Config::load(None, Vec::new()).unwrap().http.max_connections, 1024);
    let c = Config::load(None, vars(&[("BERTH_HTTP_MAX_CONNECTIONS", "8")])).unwrap();
    assert_eq!(c.http.max_connections, 8);
    let e = Config::load(None, vars(&[("BERTH_HTTP_MAX_CONNECTIONS", "0")])).unwrap_err();
    assert!(e.to_string().contains("http.max_connections"), "{e}");
}

#[test]
fn unknown_berth_variables_are_named_with_the_closest_known_one() {
    let got = unknown_vars([
        "BERTH_AUTH_ENABLE",
        "BERTH_STORAGE_S3_BUKET",
        "BERTH_LOG",
        "BERTH_CONFG",
        "BERTH_NO_SUCH_THING_AT_ALL",
        "HOME",
        "BERTH_LISTEN",
        "BERTH_ADMIN_PASSWORD",
        "BERTH_STORAGE_S3_BUCKET",
        "BERTH_CONFIG",
        "BERTH_BIN",
        "BERTH_TEST_POSTGRES_URL",
        "BERTH_TEST_ANYTHING_NEW",
        "BERTH_BROWSER_NO_INSTALL",
    ]);
    let pairs: Vec<(&str, Option<&str>)> = got.iter().map(|u| (u.name.as_str(), u.closest.as_deref())).collect();
    assert_eq!(
        pairs,
        [
            ("BERTH_AUTH_ENABLE", Some("BERTH_AUTH_ENABLED")),
            ("BERTH_STORAGE_S3_BUKET", Some("BERTH_STORAGE_S3_BUCKET")),
            ("BERTH_LOG", Some("BERTH_LOG_LEVEL")),
            ("BERTH_CONFG", Some("BERTH_CONFIG")),
            ("BERTH_NO_SUCH_THING_AT_ALL", None),
        ]
    );
    assert_eq!(
        got[0].to_string(),
        "environment variable BERTH_AUTH_ENABLE is not a configuration key and is ignored; \
         did you mean BERTH_AUTH_ENABLED?"
    );
    assert!(got[4].to_string().contains("config.example.toml"), "{}", got[4]);
}

#[test]
fn lower_case_typos_find_their_key_too() {
    let got = unknown_vars(["BERTH_storage_s3_bucket", "BERTH_HTTP_MAX_CONNECTION"]);
    assert_eq!(got[0].closest.as_deref(), Some("BERTH_STORAGE_S3_BUCKET"));
    assert_eq!(got[1].closest.as_deref(), Some("BERTH_HTTP_MAX_CONNECTIONS"));
}

#[test]
fn every_variable_the_docs_and_scripts_use_is_known() {
    // The configuration's own variables never warn.
    let config_vars: Vec<String> = env::known_keys().keys().map(|k| env::var_name(k)).collect();
    assert!(config_vars.iter().any(|v| v == "BERTH_STORAGE_S3_SECRET_ACCESS_KEY"));
    assert_eq!(unknown_vars(&config_vars), []);
    assert_eq!(unknown_vars(OTHER_VARS), []);
}

#[test]
fn quota_sizes_read_with_units_from_file_and_environment() {
    let mut f = tempfile::NamedTempFile::new().unwrap();
    writeln!(f, "[quotas]\nowner_bytes = \"50GiB\"\nowner_repositories = 10\nblob_max_size = 1048576").unwrap();
    let c = Config::load(Some(f.path()), vars(&[])).unwrap();
    assert_eq!(c.quotas.owner_bytes, Size(50 << 30));
    assert_eq!(c.quotas.owner_repositories, 10);
    assert_eq!(c.quotas.blob_max_size, Size(1 << 20));
    let c = Config::load(
        Some(f.path()),
        vars(&[("BERTH_QUOTAS_OWNER_BYTES", "500MB"), ("BERTH_QUOTAS_BLOB_MAX_SIZE", "")]),
    )
    .unwrap();
    assert_eq!(c.quotas.owner_bytes, Size(500_000_000));
    assert_eq!(c.quotas.blob_max_size, Size(0), "empty means unlimited");
    let err = Config::load(None, vars(&[("BERTH_QUOTAS_OWNER_BYTES", "lots")])).unwrap_err();
    assert!(err.to_string().contains("is not a size"), "{err}");
    // Unlimited by default.
    let c = Config::load(None, vars(&[])).unwrap();
    assert_eq!((c.quotas.owner_bytes, c.quotas.owner_repositories, c.quotas.blob_max_size), (Size(0), 0, Size(0)));
}

#[test]
fn upstreams_from_file_and_environment() {
    let mut f = tempfile::NamedTempFile::new().unwrap();
    writeln!(
        f,
        "[[upstreams]]\nname = \"hub\"\nurl = \"https://registry-1.docker.io\"\nusername = \"bot\"\n\
         password = \"hub-s3cret\"\nrevalidate_after = \"10m\"\naccess = \"public\"\n\
         repositories = [\"library/*\"]\nmirror_root = true\n\
         [[upstreams]]\nname = \"ghcr\"\nurl = \"https://ghcr.io\""
    )
    .unwrap();
    let c = Config::load(Some(f.path()), Vec::new()).unwrap();
    assert_eq!(c.upstreams.len(), 2);
    let hub = &c.upstreams[0];
    assert_eq!((hub.name.as_str(), hub.username.as_str()), ("hub", "bot"));
    assert_eq!(hub.revalidate_after, std::time::Duration::from_secs(600));
    assert_eq!(hub.access, UpstreamAccess::Public);
    assert_eq!(hub.repositories, vec!["library/*"]);
    assert!(hub.mirror_root);
    assert_eq!(hub.resolved_password().unwrap().expose(), "hub-s3cret");
    // Defaults: re-checked every 5 minutes, signed-in users, everything, not at the root.
    let ghcr = &c.upstreams[1];
    assert_eq!(ghcr.revalidate_after, std::time::Duration::from_secs(300));
    assert_eq!(ghcr.timeout, std::time::Duration::from_secs(30));
    assert_eq!(ghcr.access, UpstreamAccess::Users);
    assert!(ghcr.repositories.is_empty() && !ghcr.mirror_root && ghcr.username.is_empty());
    // The password never shows.
    for text in [c.to_masked_json().to_string(), format!("{c:?}")] {
        assert!(!text.contains("hub-s3cret"), "{text}");
    }

    let ups = r#"[{"name":"quay","url":"https://quay.io","revalidate_after":"1m","access":"members"}]"#;
    let c = Config::load(None, vars(&[("BERTH_UPSTREAMS", ups)])).unwrap();
    assert_eq!(c.upstreams[0].name, "quay");
    assert_eq!(c.upstreams[0].access, UpstreamAccess::Members);
    assert_eq!(c.upstreams[0].revalidate_after, std::time::Duration::from_secs(60));
    assert_eq!(unknown_vars(["BERTH_UPSTREAMS"]), []);
}

#[test]
fn upstream_passwords_from_a_file() {
    let mut secret = tempfile::NamedTempFile::new().unwrap();
    writeln!(secret, "from-file").unwrap();
    let ups = format!(
        r#"[{{"name":"hub","url":"https://registry-1.docker.io","username":"bot","password_file":"{}"}}]"#,
        secret.path().display()
    );
    let c = Config::load(None, vars(&[("BERTH_UPSTREAMS", &ups)])).unwrap();
    assert_eq!(c.upstreams[0].resolved_password().unwrap().expose(), "from-file");
    let missing = r#"[{"name":"hub","url":"https://x","username":"bot","password_file":"/no/such/file"}]"#;
    let c = Config::load(None, vars(&[("BERTH_UPSTREAMS", missing)])).unwrap();
    assert!(c.upstreams[0].resolved_password().unwrap_err().contains("/no/such/file"));
}

#[test]
fn upstreams_are_validated() {
    let refused = |json: &str, expect: &str| {
        let e = Config::load(None, vars(&[("BERTH_UPSTREAMS", json)])).unwrap_err().to_string();
        assert!(e.contains(expect), "{json}: {e}");
    };
    refused(r#"[{"name":"Hub","url":"https://x"}]"#, "one repository name component");
    refused(r#"[{"name":"a/b","url":"https://x"}]"#, "one repository name component");
    refused(r#"[{"name":"hub","url":"https://x"},{"name":"hub","url":"https://y"}]"#, "unique");
    refused(r#"[{"name":"hub","url":"ftp://x"}]"#, "http:// or https://");
    refused(r#"[{"name":"hub","url":"https://u:p@x"}]"#, "credentials");
    refused(r#"[{"name":"hub","url":"https://x/?a=1"}]"#, "query");
    refused(r#"[{"name":"hub","url":"https://x","username":"bob"}]"#, "go together");
    refused(r#"[{"name":"hub","url":"https://x","password":"p"}]"#, "go together");
    refused(r#"[{"name":"hub","url":"https://x","username":"b","password":"p","password_file":"/f"}]"#, "not both");
    refused(r#"[{"name":"hub","url":"https://x","repositories":["["]}]"#, "not a glob");
    refused(r#"[{"name":"hub","url":"https://x","timeout":"0s"}]"#, "timeout must be positive");
    refused(r#"[{"name":"hub","url":"https://x","access":"everyone"}]"#, "everyone");
    refused(r#"[{"name":"hub","url":"https://x","colour":"red"}]"#, "colour");
    refused(
        r#"[{"name":"a","url":"https://x","mirror_root":true},{"name":"b","url":"https://y","mirror_root":true}]"#,
        "at most one",
    );
}
