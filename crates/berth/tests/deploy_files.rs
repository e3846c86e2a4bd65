//! No container engine or cluster runs here, so the deployment files are
//! checked by parsing them: every `BERTH_*` variable they set must be a real
//! configuration key, and every probe must hit an endpoint Berth serves.

use std::path::PathBuf;

use yaml_rust2::{Yaml, YamlLoader};

fn repo_file(rel: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..").join(rel)
}

fn load(rel: &str) -> Vec<Yaml> {
    let text = std::fs::read_to_string(repo_file(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"));
    YamlLoader::load_from_str(&text).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

fn assert_config_var(file: &str, name: &str) {
    if name.starts_with("BERTH_") {
        assert!(berth_config::is_config_var(name), "{file}: {name} is not a Berth configuration variable");
    }
}

#[test]
fn compose_environment_uses_real_config_keys() {
    let docs = load("docker-compose.yml");
    let services = docs[0]["services"].as_hash().expect("services");
    let berth = &docs[0]["services"]["berth"];
    assert!(!berth.is_badvalue(), "a berth service");
    let mut checked = 0;
    for (_, service) in services {
        if let Some(env) = service["environment"].as_hash() {
            for (k, _) in env {
                assert_config_var("docker-compose.yml", k.as_str().expect("string keys"));
                checked += 1;
            }
        }
    }
    assert!(checked > 10, "checked {checked} variables");
    // The production-like setup: Postgres and S3.
    assert_eq!(berth["environment"]["BERTH_STORAGE_BACKEND"].as_str(), Some("s3"));
    assert!(berth["environment"]["BERTH_DATABASE_URL"].as_str().unwrap().starts_with("postgres://"));
}

#[test]
fn example_variables_in_the_readme_are_real() {
    let readme = std::fs::read_to_string(repo_file("README.md")).unwrap();
    // The README's examples of mistyped variables, which Berth names at start
    // with the one meant.
    let typos = [("BERTH_AUTH_ENABLE", "BERTH_AUTH_ENABLED"), ("BERTH_STORAGE_S3_BUKET", "BERTH_STORAGE_S3_BUCKET")];
    for (typo, meant) in typos {
        assert!(readme.contains(typo), "{typo}");
        let warned = berth_config::unknown_vars([typo]);
        assert_eq!(warned[0].closest.as_deref(), Some(meant));
    }
    for word in readme.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')) {
        // Variables of the tooling rather than of the server.
        let tooling = berth_config::OTHER_PREFIXES.iter().any(|p| word.starts_with(p))
            || berth_config::OTHER_VARS.contains(&word);
        if word.len() > 6 && word.starts_with("BERTH_") && !tooling && !typos.iter().any(|(t, _)| *t == word) {
            assert_config_var("README.md", word);
        }
    }
}

/// Every document of every manifest under deploy/kubernetes/.
fn kubernetes_docs() -> Vec<(String, Yaml)> {
    docs_in("deploy/kubernetes")
}

/// Every document of every manifest directly in `rel`.
fn docs_in(rel: &str) -> Vec<(String, Yaml)> {
    let dir = repo_file(rel);
    let mut out = Vec::new();
    let mut entries: Vec<_> = std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().path()).collect();
    entries.sort();
    for path in entries.into_iter().filter(|p| p.extension().is_some_and(|e| e == "yaml")) {
        let rel = format!("{rel}/{}", path.file_name().unwrap().to_string_lossy());
        for doc in load(&rel) {
            if !doc.is_null() {
                out.push((rel.clone(), doc));
            }
        }
    }
    out
}

fn of_kind<'a>(docs: &'a [(String, Yaml)], kind: &str) -> Vec<&'a (String, Yaml)> {
    docs.iter().filter(|(_, d)| d["kind"].as_str() == Some(kind)).collect()
}

#[test]
fn kubernetes_manifests_are_complete_and_consistent() {
    let docs = kubernetes_docs();
    for kind in ["Deployment", "Service", "PodDisruptionBudget", "ConfigMap", "Secret"] {
        assert!(!of_kind(&docs, kind).is_empty(), "deploy/kubernetes has no {kind}");
    }
    let (_, deployment) = of_kind(&docs, "Deployment")[0];
    assert_eq!(deployment["spec"]["replicas"].as_i64(), Some(3));
    let pod = &deployment["spec"]["template"]["spec"];
    let container = &pod["containers"][0];

    // Every variable set anywhere is a real configuration key.
    let (_, configmap) = of_kind(&docs, "ConfigMap")[0];
    let mut vars: Vec<(String, String)> = Vec::new();
    for (k, v) in configmap["data"].as_hash().unwrap() {
        vars.push((k.as_str().unwrap().to_owned(), v.as_str().unwrap_or_default().to_owned()));
    }
    for (_, secret) in of_kind(&docs, "Secret") {
        if secret["type"].as_str() == Some("Opaque") && secret["metadata"]["name"].as_str() == Some("berth") {
            for (k, v) in secret["stringData"].as_hash().unwrap() {
                vars.push((k.as_str().unwrap().to_owned(), v.as_str().unwrap_or_default().to_owned()));
            }
        }
    }
    for e in container["env"].as_vec().unwrap() {
        vars.push((e["name"].as_str().unwrap().to_owned(), e["value"].as_str().unwrap_or_default().to_owned()));
    }
    for (k, _) in &vars {
        assert_config_var("deploy/kubernetes", k);
    }
    // And the values parse as a configuration.
    let config = berth_config::Config::load(None, vars.clone()).expect("the manifests' settings load");
    assert_eq!(config.storage.backend, berth_config::StorageBackend::S3);
    assert!(config.database.url.expose().starts_with("postgres://"));

    // Ports: the container listens where the configuration says.
    let ports: Vec<(String, i64)> = container["ports"]
        .as_vec()
        .unwrap()
        .iter()
        .map(|p| (p["name"].as_str().unwrap().to_owned(), p["containerPort"].as_i64().unwrap()))
        .collect();
    let port_of = |name: &str| ports.iter().find(|(n, _)| n == name).map(|(_, p)| *p);
    assert_eq!(port_of("http"), Some(i64::from(config.listen.port())));
    assert_eq!(port_of("metrics"), config.metrics.listen.map(|a| i64::from(a.port())));

    // Probes use endpoints Berth serves, on declared ports.
    for probe in ["startupProbe", "readinessProbe", "livenessProbe"] {
        let get = &container[probe]["httpGet"];
        let path = get["path"].as_str().unwrap_or_else(|| panic!("{probe} has an httpGet path"));
        assert!(["/livez", "/readyz"].contains(&path), "{probe} uses {path}");
        let port = get["port"].as_str().unwrap();
        assert!(port_of(port).is_some(), "{probe} port {port} is declared");
    }

    // The Service and PDB select the pods.
    let labels = &deployment["spec"]["template"]["metadata"]["labels"];
    for kind in ["Service", "PodDisruptionBudget"] {
        let (_, doc) = of_kind(&docs, kind)[0];
        let selector =
            if kind == "Service" { &doc["spec"]["selector"] } else { &doc["spec"]["selector"]["matchLabels"] };
        for (k, v) in selector.as_hash().unwrap() {
            assert_eq!(&labels[k.as_str().unwrap()], v, "{kind} selects the Deployment's pods");
        }
    }
    // The signing-key mount matches auth.jwt_key_file.
    let key = config.auth.jwt_key_file.clone().unwrap();
    let mount = container["volumeMounts"]
        .as_vec()
        .unwrap()
        .iter()
        .find(|m| m["name"].as_str() == Some("jwt"))
        .expect("jwt mount");
    assert!(key.starts_with(mount["mountPath"].as_str().unwrap()));

    // The example pull secret is a dockerconfigjson with a Berth token.
    let pull = of_kind(&docs, "Secret")
        .into_iter()
        .find(|(_, d)| d["type"].as_str() == Some("kubernetes.io/dockerconfigjson"))
        .expect("an example pull secret");
    let b64 = pull.1["data"][".dockerconfigjson"].as_str().unwrap();
    let json = decode_b64(b64);
    let v: serde_json::Value = serde_json::from_slice(&json).unwrap();
    let auth = v["auths"].as_object().unwrap().values().next().unwrap()["auth"].as_str().unwrap().to_owned();
    let creds = String::from_utf8(decode_b64(&auth)).unwrap();
    assert!(creds.contains(":bpat_"), "{creds}");
}

/// The dual-running CronJob runs `berth sync` with flags it has, on the
/// Deployment's settings, with the source's password from a Secret (never
/// in its arguments).
#[test]
fn sync_cronjob_runs_berth_sync_with_the_password_from_a_secret() {
    // In a directory of its own, so that applying deploy/kubernetes/ leaves it out.
    assert!(of_kind(&kubernetes_docs(), "CronJob").is_empty());
    let mut docs = docs_in("deploy/kubernetes/gitea-sync");
    docs.extend(kubernetes_docs());
    let cronjobs = of_kind(&docs, "CronJob");
    assert_eq!(cronjobs.len(), 1, "one CronJob");
    let (file, cron) = cronjobs[0];
    assert_eq!(cron["spec"]["concurrencyPolicy"].as_str(), Some("Forbid"), "{file}: runs never overlap");
    let pod = &cron["spec"]["jobTemplate"]["spec"]["template"]["spec"];
    assert_eq!(pod["restartPolicy"].as_str(), Some("Never"));
    let container = &pod["containers"][0];
    let args: Vec<&str> = container["args"].as_vec().unwrap().iter().map(|a| a.as_str().unwrap()).collect();
    assert_eq!(args[0], "sync", "{file}: {args:?}");
    assert!(args.contains(&"--from") && args.contains(&"--username"), "{args:?}");
    assert!(!args.contains(&"--password-stdin"), "the password comes from the environment");
    let help = std::process::Command::new(env!("CARGO_BIN_EXE_berth")).args(["sync", "--help"]).output().unwrap();
    let help = String::from_utf8_lossy(&help.stdout);
    for flag in args.iter().filter(|a| a.starts_with("--")) {
        assert!(help.contains(&format!("{flag} ")), "{file}: berth sync has no {flag}:\n{help}");
    }

    // Every variable is a configuration key or BERTH_SYNC_PASSWORD, which
    // comes from a Secret defined here, under the key named.
    let mut password = false;
    for e in container["env"].as_vec().unwrap() {
        let name = e["name"].as_str().unwrap();
        if name == "BERTH_SYNC_PASSWORD" {
            assert!(berth_config::OTHER_VARS.contains(&name));
            let r = &e["valueFrom"]["secretKeyRef"];
            let (secret, key) = (r["name"].as_str().unwrap(), r["key"].as_str().unwrap());
            let found = of_kind(&docs, "Secret")
                .into_iter()
                .any(|(_, s)| s["metadata"]["name"].as_str() == Some(secret) && !s["stringData"][key].is_badvalue());
            assert!(found, "{file}: no Secret {secret} with key {key}");
            assert!(e["value"].is_badvalue(), "the password is not written inline");
            password = true;
        } else {
            assert_config_var(file, name);
        }
    }
    assert!(password, "{file}: BERTH_SYNC_PASSWORD is set");

    // The database and storage settings are the Deployment's.
    let (_, deployment) = of_kind(&docs, "Deployment")[0];
    let server = &deployment["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(container["envFrom"], server["envFrom"], "{file}: the same ConfigMap and Secret as the Deployment");
}

/// Standard base64 (no dependency just for the test).
fn decode_b64(s: &str) -> Vec<u8> {
    let alphabet = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = Vec::new();
    let (mut buf, mut bits) = (0u32, 0);
    for c in s.bytes().filter(|c| *c != b'=') {
        let v = alphabet.iter().position(|a| *a == c).expect("base64") as u32;
        buf = (buf << 6) | v;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((buf >> bits) as u8);
            buf &= (1 << bits) - 1;
        }
    }
    out
}

/// The probe paths answer 200 on a real server.
#[tokio::test]
async fn probe_paths_are_served() {
    let server = berth_testkit::TestServer::start().await;
    berth_testkit::install_crypto_provider();
    let c = reqwest::Client::new();
    for path in ["/livez", "/readyz", "/metrics"] {
        assert_eq!(c.get(server.url(path)).send().await.unwrap().status(), 200, "{path}");
    }
}

/// `cargo build` in the image needs every workspace member's directory:
/// one left out fails the build before it compiles anything.
#[test]
fn dockerfile_copies_every_workspace_member() {
    let manifest = std::fs::read_to_string(repo_file("Cargo.toml")).expect("Cargo.toml");
    let dockerfile = std::fs::read_to_string(repo_file("Dockerfile")).expect("Dockerfile");
    let members_line = manifest.lines().find(|l| l.starts_with("members")).expect("workspace members");
    let members: Vec<&str> = members_line.split('"').skip(1).step_by(2).collect();
    assert!(members.len() >= 3, "{members:?}");
    for member in members {
        let top = member.split('/').next().expect("a directory");
        assert!(
            dockerfile.lines().any(|l| l.trim() == format!("COPY {top} {top}")),
            "the Dockerfile does not copy {top}/ (workspace member {member})"
        );
    }
}
