//! # berth-upstream
//!
//! An OCI Distribution **client** for the registries Berth pulls from: the
//! foundation of the pull-through cache and of `berth sync` (issue #12).
//! It speaks HTTP and the registry protocol, and nothing else: no axum, no
//! SQL, no storage. Deciding what to cache, when to revalidate and what to
//! serve when an upstream fails is the caller's job; this crate gives it
//! answers and errors it can act on.
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use berth_oci::{Reference, RepositoryName};
//! use berth_upstream::{UpstreamClient, UpstreamSettings};
//! use futures_util::StreamExt;
//!
//! let hub = UpstreamClient::new(UpstreamSettings::new("hub", "https://registry-1.docker.io"))?;
//! let repo = hub.upstream_repository(&RepositoryName::parse("alpine")?); // library/alpine
//! let head = hub.head_manifest(&repo, &Reference::parse("latest")?).await?;
//! let manifest = hub.get_manifest(&repo, &Reference::Digest(head.digest), &[]).await?;
//! # let layer = manifest.digest.clone();
//! let mut blob = hub.get_blob(&repo, &layer).await?;
//! while let Some(chunk) = blob.next().await {
//!     let _bytes = chunk?; // the last item is an error if the bytes were wrong
//! }
//! # Ok(()) }
//! ```
//!
//! ## Operations
//! - [`UpstreamClient::head_manifest`]: digest, media type and size of a tag
//!   or digest by HEAD (a HEAD does not count against Docker Hub's pull
//!   limit). If the upstream leaves out `Docker-Content-Digest`,
//!   `Content-Type` or `Content-Length`, the manifest is fetched and hashed
//!   instead, so the answer is always complete.
//! - [`UpstreamClient::get_manifest`]: the exact bytes, at most 4 MiB
//!   (checked against `Content-Length`, then while reading), with the digest
//!   computed from them. The bytes are the truth: a `Docker-Content-Digest`
//!   that disagrees, or by-digest bytes that hash to something else, is
//!   [`UpstreamError::Invalid`].
//! - [`UpstreamClient::get_blob`]: a [`BlobStream`] of chunks, never the
//!   whole blob in memory, hashed as it passes; it ends with an error rather
//!   than cleanly when the bytes break off, stall, run long or hash wrong.
//!   [`BlobStream::expect_size`] bounds it by the descriptor's size.
//! - [`UpstreamClient::list_tags`], [`UpstreamClient::catalog`]: every page,
//!   following `Link: <...>; rel="next"` (on the same registry only, no
//!   loops, at most [`MAX_PAGES`] pages). `page_size` in the settings sends `n`.
//! - [`UpstreamClient::referrers`]: the referrers API; `None` when the
//!   upstream answers 404 (it does not have the API).
//! - [`UpstreamClient::gitea_container_repositories`],
//!   [`UpstreamClient::gitea_user`], [`UpstreamClient::gitea_orgs`]: Gitea's
//!   own API, for listing where `/v2/_catalog` is refused (`berth sync`).
//!   It does not challenge, so the credentials go up front (Basic, to the
//!   registry's origin only).
//! - [`docker_hub_repository`] / [`UpstreamClient::upstream_repository`]:
//!   Docker Hub's rule that a one-component name means `library/<name>`.
//!
//! ## Authentication, and why it works this way
//! A request goes out **anonymously first**. Credentials are only sent
//! once the registry asks for them, because most pulls from public
//! upstreams need none, and because a registry that never asks never sees
//! them.
//!
//! On a `401`, every `WWW-Authenticate` value is parsed (several headers,
//! several challenges per header, quoted values with commas and escapes;
//! malformed challenges are dropped without losing their neighbours).
//! **Bearer** is preferred when offered, since it works anonymously and with
//! credentials; **Basic** is used otherwise, and only with credentials.
//!
//! - **Bearer:** a token is fetched from the challenge's `realm` with a GET
//!   carrying `service`, each `scope` and (with credentials) `account`, and
//!   the configured user name and password as Basic **to the realm**. The
//!   answer's `token` (or OAuth2's `access_token`) and `expires_in` (60 s
//!   when absent, at most an hour) are kept. The request is then retried
//!   **once** with the token; a second 401 is [`UpstreamError::Unauthorized`].
//! - **Token cache:** keyed by realm, service and the challenge's scope, so
//!   a token for `repository:library/alpine:pull` is never used for another
//!   repository. A token is used until a quarter of its life (at most 10 s)
//!   remains, so it is not refused in flight; then it is fetched again before
//!   the request, not after a 401. The client also remembers which token
//!   key each operation's scope led to, so the second request for a
//!   repository carries its token up front and costs one round trip.
//! - **Single flight:** concurrent requests needing the same token wait for
//!   one fetch and share its outcome, success or failure (20 concurrent pulls
//!   of a cold repository make one token request, not 20).
//! - **A refused token** (a 401 although one was sent: revoked, or expired
//!   early) is dropped from the cache and replaced once. A 401 with
//!   `error="insufficient_scope"` for the very token the cache holds for that
//!   scope is not retried: the token is fine, it just does not grant the
//!   repository, and a new one would not either. Docker Hub answers that way
//!   (401, not 404) for a repository that is private or does not exist, so
//!   callers see `Unauthorized` there.
//! - **Basic:** after a registry has asked for Basic once, later requests
//!   send it up front.
//!
//! **Where credentials go.** The Authorization header (Basic or Bearer) is
//! only ever attached to requests for the registry's own origin (scheme,
//! host and port of the configured URL). Redirects are followed by the
//! client itself (at most [`MAX_REDIRECTS`], never from HTTPS down to HTTP),
//! and a hop to any other origin, such as a blob redirected (307/302) to
//! object storage, goes without it. The user name and password also go to
//! the token realm the registry names, as the protocol requires (Docker
//! Hub's realm is `auth.docker.io`), but never over plain HTTP to a host
//! other than the registry's. A 401 from another origin never starts the
//! token flow. [`Secret`] never prints, the Authorization header is marked
//! sensitive, and errors name the upstream and what was asked for but never
//! a credential, a token, or a redirect target's query string (a presigned
//! URL's signature is a credential too).
//!
//! ## Timeouts
//! `connect_timeout` for TCP and TLS, `header_timeout` from sending a
//! request to its response headers, and `idle_timeout` for the longest
//! pause within a body. There is no limit on a body's total time: a
//! multi-GiB layer on a slow link is fine as long as it keeps moving. The
//! idle clock of a [`BlobStream`] runs only while its consumer is waiting
//! for the upstream, so a consumer that takes its time writing a chunk is
//! never mistaken for a stalled upstream.
//!
//! ## Errors
//! One enum, [`UpstreamError`], in cases a caller acts on: `NotFound`
//! (pass the 404 on), `Unauthorized` / `Denied`, `TooManyRequests` with the
//! upstream's `Retry-After`, `Unavailable` (connect error, timeout, stalled
//! body, 5xx, with the status when there is one) and `Invalid` (the upstream
//! answered something that must not be used; logged with the upstream's
//! name). [`UpstreamError::is_transient`] groups the cases where serving a
//! cached copy, or retrying later, is right. The client does not retry by
//! itself, apart from the one retry after a challenge: a cache wants to
//! serve what it has at once, a copier wants to back off, and only the
//! caller knows which it is.
//!
//! ## TLS and HTTP
//! HTTP/1.1 over rustls (ring, the process-wide provider as elsewhere in
//! Berth), with the system's roots plus `ca_certificates_pem`. No proxy
//! variables, compression or cookies: registries serve compressed layers as
//! they are, and digests are over the bytes sent.

mod blob;
mod challenge;
mod client;
mod error;
mod gitea;
mod hub;
mod listing;
mod manifest;
mod settings;
mod token;

pub use blob::BlobStream;
pub use challenge::{Challenge, parse as parse_challenges};
pub use client::{MAX_REDIRECTS, USER_AGENT, UpstreamClient};
pub use error::{Origin, UpstreamError};
pub use gitea::GITEA_PAGE_LIMIT;
pub use hub::{DOCKER_HUB_HOSTS, docker_hub_repository, is_docker_hub_host};
pub use listing::{MAX_ENTRIES, MAX_PAGES, Referrer};
pub use manifest::{DEFAULT_MANIFEST_ACCEPT, Manifest, ManifestHead};
pub use settings::{Credentials, Secret, SettingsError, UpstreamSettings};
pub use token::{DEFAULT_TOKEN_LIFETIME, MAX_TOKEN_LIFETIME};

/// Manifests larger than this are refused (the OCI spec's recommended cap).
pub const MAX_MANIFEST_SIZE: usize = berth_oci::manifest::MAX_MANIFEST_SIZE;
