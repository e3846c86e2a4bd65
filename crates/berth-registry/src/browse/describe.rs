//! What a page shows of a manifest and its image config, read leniently:
//! anything pushed is shown as far as it can be understood, and a field of
//! the wrong shape is skipped rather than failing the page.

use berth_oci::Digest;
use serde_json::Value;

/// An index entry: one platform's manifest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Child {
    /// `os/architecture[/variant]`, or `unknown`.
    pub platform: String,
    pub digest: Option<Digest>,
    pub media_type: String,
    /// The descriptor's size (the child manifest's own bytes).
    pub descriptor_size: u64,
}

/// A descriptor of a config or layer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layer {
    pub digest: Option<Digest>,
    pub media_type: String,
    pub size: u64,
}

/// What the manifest itself says.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ManifestFacts {
    pub children: Vec<Child>,
    pub config: Option<Layer>,
    pub layers: Vec<Layer>,
    pub annotations: Vec<(String, String)>,
    pub artifact_type: Option<String>,
}

/// What an image config says (the fields an operator checks).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ImageConfig {
    pub platform: Option<String>,
    pub created: Option<String>,
    pub entrypoint: Option<String>,
    pub cmd: Option<String>,
    pub env: Vec<String>,
    pub labels: Vec<(String, String)>,
    pub workdir: Option<String>,
    pub user: Option<String>,
    pub exposed_ports: Vec<String>,
}

fn text(v: &Value, key: &str) -> Option<String> {
    v.get(key).and_then(Value::as_str).filter(|s| !s.is_empty()).map(str::to_owned)
}

fn string_map(v: Option<&Value>) -> Vec<(String, String)> {
    let mut pairs: Vec<(String, String)> = v
        .and_then(Value::as_object)
        .map(|m| m.iter().map(|(k, v)| (k.clone(), v.as_str().map_or_else(|| v.to_string(), str::to_owned))).collect())
        .unwrap_or_default();
    pairs.sort();
    pairs
}

fn descriptor(v: &Value) -> Layer {
    Layer {
        digest: v.get("digest").and_then(Value::as_str).and_then(|d| Digest::parse(d).ok()),
        media_type: text(v, "mediaType").unwrap_or_default(),
        size: v.get("size").and_then(Value::as_u64).unwrap_or(0),
    }
}

/// `os/arch[/variant]` of a platform object.
pub fn platform_name(os: Option<&str>, arch: Option<&str>, variant: Option<&str>) -> Option<String> {
    let (os, arch) = (os?, arch?);
    Some(match variant.filter(|v| !v.is_empty()) {
        Some(v) => format!("{os}/{arch}/{v}"),
        None => format!("{os}/{arch}"),
    })
}

/// Reads a manifest or index; `None` if it is not a JSON object at all.
pub fn manifest_facts(content: &[u8]) -> Option<ManifestFacts> {
    let v: Value = serde_json::from_slice(content).ok()?;
    v.as_object()?;
    let children = v
        .get("manifests")
        .and_then(Value::as_array)
        .map(|list| {
            list.iter()
                .map(|m| {
                    let p = m.get("platform");
                    let field = |k: &str| p.and_then(|p| p.get(k)).and_then(Value::as_str);
                    let d = descriptor(m);
                    Child {
                        platform: platform_name(field("os"), field("architecture"), field("variant"))
                            .unwrap_or_else(|| "unknown".to_owned()),
                        digest: d.digest,
                        media_type: d.media_type,
                        descriptor_size: d.size,
                    }
                })
                .collect()
        })
        .unwrap_or_default();
    let layers =
        v.get("layers").and_then(Value::as_array).map(|l| l.iter().map(descriptor).collect()).unwrap_or_default();
    Some(ManifestFacts {
        children,
        config: v.get("config").filter(|c| c.is_object()).map(descriptor),
        layers,
        annotations: string_map(v.get("annotations")),
        artifact_type: text(&v, "artifactType"),
    })
}

/// Reads an image config; `None` if it is not a JSON object.
pub fn image_config(content: &[u8]) -> Option<ImageConfig> {
    let v: Value = serde_json::from_slice(content).ok()?;
    v.as_object()?;
    let c = v.get("config").cloned().unwrap_or(Value::Null);
    let words = |key: &str| -> Option<String> {
        let list = c.get(key)?.as_array()?;
        let parts: Vec<String> = list.iter().filter_map(Value::as_str).map(str::to_owned).collect();
        (!parts.is_empty()).then(|| serde_json::to_string(&parts).unwrap_or_default())
    };
    let mut exposed_ports: Vec<String> =
        c.get("ExposedPorts").and_then(Value::as_object).map(|m| m.keys().cloned().collect()).unwrap_or_default();
    exposed_ports.sort();
    Some(ImageConfig {
        platform: platform_name(
            v.get("os").and_then(Value::as_str),
            v.get("architecture").and_then(Value::as_str),
            v.get("variant").and_then(Value::as_str),
        ),
        created: text(&v, "created"),
        entrypoint: words("Entrypoint"),
        cmd: words("Cmd"),
        env: c
            .get("Env")
            .and_then(Value::as_array)
            .map(|l| l.iter().filter_map(Value::as_str).map(str::to_owned).collect())
            .unwrap_or_default(),
        labels: string_map(c.get("Labels")),
        workdir: text(&c, "WorkingDir"),
        user: text(&c, "User"),
        exposed_ports,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn index_children_with_platforms() {
        let d = Digest::sha256_of(b"x");
        let index = format!(
            r#"{{"schemaVersion":2,"manifests":[
                {{"mediaType":"m","digest":"{d}","size":10,"platform":{{"os":"linux","architecture":"arm64","variant":"v8"}}}},
                {{"mediaType":"m","digest":"not a digest","size":"big"}}]}}"#
        );
        let f = manifest_facts(index.as_bytes()).expect("facts");
        assert_eq!(f.children.len(), 2);
        assert_eq!(f.children[0].platform, "linux/arm64/v8");
        assert_eq!(f.children[0].digest.as_ref(), Some(&d));
        assert_eq!(
            (f.children[1].platform.as_str(), f.children[1].digest.as_ref(), f.children[1].descriptor_size),
            ("unknown", None, 0)
        );
    }

    #[test]
    fn image_layers_annotations_and_artifact_type() {
        let d = Digest::sha256_of(b"l");
        let m = format!(
            r#"{{"schemaVersion":2,"artifactType":"a/b","config":{{"mediaType":"c","digest":"{d}","size":3}},
                "layers":[{{"mediaType":"l","digest":"{d}","size":7}}],"annotations":{{"z":"1","a":"<b>"}}}}"#
        );
        let f = manifest_facts(m.as_bytes()).expect("facts");
        assert_eq!(f.layers, vec![Layer { digest: Some(d.clone()), media_type: "l".into(), size: 7 }]);
        assert_eq!(f.config.map(|c| c.size), Some(3));
        assert_eq!(f.annotations, vec![("a".into(), "<b>".into()), ("z".into(), "1".into())]);
        assert_eq!(f.artifact_type.as_deref(), Some("a/b"));
        assert!(manifest_facts(b"[1,2]").is_none());
        assert!(manifest_facts(b"not json").is_none());
    }

    #[test]
    fn config_fields_leniently() {
        let c = br#"{"os":"linux","architecture":"amd64","created":"2026-01-01T00:00:00Z",
            "config":{"Entrypoint":["/bin/app","--x"],"Cmd":null,"Env":["A=1",2],"Labels":{"l":"v","n":3},
            "ExposedPorts":{"8080/tcp":{},"443/tcp":{}},"WorkingDir":"/srv","User":""}}"#;
        let cfg = image_config(c).expect("config");
        assert_eq!(cfg.platform.as_deref(), Some("linux/amd64"));
        assert_eq!(cfg.entrypoint.as_deref(), Some(r#"["/bin/app","--x"]"#));
        assert_eq!(cfg.cmd, None);
        assert_eq!(cfg.env, vec!["A=1".to_owned()]);
        assert_eq!(cfg.labels, vec![("l".into(), "v".into()), ("n".into(), "3".into())]);
        assert_eq!(cfg.exposed_ports, vec!["443/tcp".to_owned(), "8080/tcp".to_owned()]);
        assert_eq!((cfg.workdir.as_deref(), cfg.user), (Some("/srv"), None));
    }
}
