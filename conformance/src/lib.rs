//! Harness for Berth's own OCI Distribution conformance tests (`tests/`).
//!
//! A [`Target`] is the registry under test: by default a real Berth started
//! in-process (temporary SQLite + filesystem store), or any registry reachable
//! over plain HTTP when [`URL_ENV`] (`BERTH_CONFORMANCE_URL`) is set. Tests
//! that need a particular server configuration use [`Target::in_process`],
//! which reports them `NOT RUN` (and returns `None`) against an external
//! registry.
//!
//! Every request goes through [`send`], which returns a [`Resp`] holding the
//! status, headers and whole body, so tests assert all three. Content
//! helpers ([`content`]) compute digests and build manifests, indexes and
//! artifacts with `serde_json`.

pub mod content;
pub mod response;
pub mod target;

pub use content::{Manifest, digest_of, sha256, sha512};
pub use response::{
    Resp, SPEC_ERROR_CODES, assert_error, assert_error_one_of, assert_error_status, assert_head_status, send,
};
pub use target::{Target, URL_ENV, test_name};

/// The current test as `module::function`, e.g. `blobs_pull::range_suffix`.
/// Used to name the test's repository and in `NOT RUN` notices.
#[macro_export]
macro_rules! here {
    () => {{
        fn here() {}
        $crate::test_name(::std::any::type_name_of_val(&here))
    }};
}
