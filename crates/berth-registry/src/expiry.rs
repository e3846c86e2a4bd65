//! Upload expiry: sessions idle longer than `expire_after` are purged (the
//! row, then the blob store's data — on S3 that aborts the multipart
//! upload), and so is upload data older than that which no session owns
//! (left by a crash between creating the data and recording the session).
//!
//! A session is only removed if it is still idle when the delete runs (the
//! `updated_at` condition is re-checked by the store), so an append that
//! lands meanwhile keeps it.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use berth_blob::UploadCursor;

use crate::maintenance::{Lease, Maintenance, ensure_held};
use crate::{Result, now_ms};

const PAGE: u32 = 200;

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExpiryReport {
    /// Idle sessions purged.
    pub sessions: u64,
    /// Upload data without a session removed.
    pub orphans: u64,
    /// Blob-store aborts that failed (retried next run for orphans).
    pub errors: u64,
    pub elapsed: Duration,
}

impl Maintenance {
    /// Purges idle upload sessions and orphan upload data. Hold the
    /// [`EXPIRY_LEASE`] when other runners may do the same.
    ///
    /// [`EXPIRY_LEASE`]: crate::maintenance::EXPIRY_LEASE
    pub async fn expire_uploads(&self, expire_after: Duration, lease: Option<&Lease>) -> Result<ExpiryReport> {
        let started = Instant::now();
        let age = i64::try_from(expire_after.as_millis()).unwrap_or(i64::MAX);
        let before = now_ms().saturating_sub(age);
        let mut report = ExpiryReport::default();
        let mut seen: HashSet<String> = HashSet::new();
        loop {
            ensure_held(lease)?;
            let stale = self.meta().stale_uploads(before, PAGE).await?;
            let fresh: Vec<_> = stale.into_iter().filter(|s| seen.insert(s.id.clone())).collect();
            if fresh.is_empty() {
                break;
            }
            for session in fresh {
                if !self.store().expire_upload(&session.id, before).await? {
                    continue; // used meanwhile, or finished
                }
                let cursor =
                    UploadCursor { offset: session.progress.offset, state: session.progress.backend_state.clone() };
                if let Err(e) = self.blobs().upload_abort(&session.id, &cursor).await {
                    tracing::warn!(upload = %session.id, error = %e, "cannot discard expired upload data");
                    report.errors += 1;
                }
                report.sessions += 1;
            }
        }
        for id in self.blobs().list_uploads(before).await? {
            ensure_held(lease)?;
            if self.meta().get_upload(&id).await?.is_some() {
                continue;
            }
            match self.blobs().upload_abort(&id, &UploadCursor::default()).await {
                Ok(()) => report.orphans += 1,
                Err(e) => {
                    tracing::warn!(upload = %id, error = %e, "cannot remove orphan upload data");
                    report.errors += 1;
                }
            }
        }
        report.elapsed = started.elapsed();
        tracing::info!(
            sessions = report.sessions,
            orphans = report.orphans,
            errors = report.errors,
            elapsed_ms = report.elapsed.as_millis() as u64,
            "upload expiry finished"
        );
        berth_metrics::metrics().uploads_expired.inc_by(report.sessions + report.orphans);
        Ok(report)
    }
}
