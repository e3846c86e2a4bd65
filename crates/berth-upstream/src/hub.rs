//! Docker Hub's naming rule: an official image's one-component name
//! (`alpine`) lives at `library/alpine`.

use berth_oci::RepositoryName;

use crate::client::UpstreamClient;

/// Hosts that serve Docker Hub's registry API.
pub const DOCKER_HUB_HOSTS: [&str; 4] =
    ["registry-1.docker.io", "index.docker.io", "docker.io", "registry.hub.docker.com"];

/// True for a Docker Hub registry host.
pub fn is_docker_hub_host(host: &str) -> bool {
    DOCKER_HUB_HOSTS.iter().any(|h| host.eq_ignore_ascii_case(h))
}

/// The name Docker Hub serves `name` under: `alpine` -> `library/alpine`;
/// names with a `/` are unchanged.
pub fn docker_hub_repository(name: &RepositoryName) -> RepositoryName {
    if name.as_str().contains('/') {
        return name.clone();
    }
    RepositoryName::parse(&format!("library/{name}")).unwrap_or_else(|_| name.clone())
}

impl UpstreamClient {
    /// True when this upstream is Docker Hub.
    pub fn is_docker_hub(&self) -> bool {
        self.base_url().host_str().is_some_and(is_docker_hub_host)
    }

    /// The upstream's name for `name`: Docker Hub's `library/` rule applied
    /// when this upstream is Docker Hub, else `name` itself.
    pub fn upstream_repository(&self, name: &RepositoryName) -> RepositoryName {
        if self.is_docker_hub() { docker_hub_repository(name) } else { name.clone() }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::UpstreamSettings;

    fn name(s: &str) -> RepositoryName {
        RepositoryName::parse(s).unwrap()
    }

    #[test]
    fn library_rule() {
        assert_eq!(docker_hub_repository(&name("alpine")), name("library/alpine"));
        assert_eq!(docker_hub_repository(&name("bitnami/redis")), name("bitnami/redis"));
        assert_eq!(docker_hub_repository(&name("library/alpine")), name("library/alpine"));
        // 247 characters plus `library/` would be too long: left alone.
        let long = "a".repeat(250);
        assert_eq!(docker_hub_repository(&name(&long)), name(&long));
    }

    #[test]
    fn applied_only_to_docker_hub() {
        let hub = UpstreamClient::new(UpstreamSettings::new("hub", "https://registry-1.docker.io")).unwrap();
        let ghcr = UpstreamClient::new(UpstreamSettings::new("ghcr", "https://ghcr.io")).unwrap();
        assert!(hub.is_docker_hub() && !ghcr.is_docker_hub());
        assert_eq!(hub.upstream_repository(&name("alpine")), name("library/alpine"));
        assert_eq!(ghcr.upstream_repository(&name("alpine")), name("alpine"));
    }
}
