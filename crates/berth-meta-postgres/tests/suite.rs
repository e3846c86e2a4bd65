//! Runs the backend-neutral `berth-meta` suite against Postgres: every case
//! on a fresh, migrated schema of its own. Opt-in: without
//! `BERTH_TEST_POSTGRES_URL` each case says "NOT RUN" on stderr and returns.

mod common;

/// Evaluates to a ready future yielding the case's fixture or, when no
/// database is configured, returns from the calling test (after
/// `common::test_url` has printed the skip). The suite macro awaits its
/// constructor inside each generated test, which is what lets `return`
/// here end that test.
macro_rules! fixture_or_skip {
    () => {
        std::future::ready(match common::fresh_fixture().await {
            Some(fixture) => fixture,
            None => return,
        })
    };
}

berth_meta::meta_store_suite!(postgres, fixture_or_skip!());
