//! Berth's OCI Distribution conformance suite, one module per area. Each
//! test uses its own repository (`conformance/<module>/<test>`), so the
//! suite runs in parallel against one external registry too.

mod base;
mod blobs_pull;
mod catalog;
mod deletes;
mod errors;
mod immutability;
mod manifests_pull;
mod manifests_push;
mod referrers;
mod tags;
mod uploads_chunked;
mod uploads_monolithic;
mod uploads_mount;
mod uploads_sessions;
mod uploads_stream;
