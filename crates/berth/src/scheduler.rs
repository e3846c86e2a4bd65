//! The server's maintenance schedule: garbage collection (`[gc] interval`),
//! retention rules (`[retention] interval`) and upload expiry (`[uploads]
//! expiry_interval`), each in a background task of every replica.
//!
//! A job is due when its interval has passed since it last finished
//! anywhere in the cluster (the `last_run_at` of its lease row; a cluster
//! that never ran it counts from this process's start). The replica that
//! takes the job's lease runs it; the others find the lease held, or the
//! job no longer due, and skip. So each job runs once per interval per
//! cluster, never twice at once, and an operator's `berth gc` in the
//! middle counts as the run.

use std::time::Duration;

use berth_registry::Maintenance;
use berth_registry::gc::{GcOptions, no_progress};
use berth_registry::maintenance::{EXPIRY_LEASE, GC_LEASE, RETENTION_LEASE};
use berth_registry::retention::RetentionPolicy;
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// What a job does.
#[derive(Debug, Clone)]
pub enum Task {
    Gc { min_age: Duration },
    Retention(RetentionPolicy),
    ExpireUploads { expire_after: Duration },
}

/// A scheduled job.
#[derive(Debug, Clone)]
pub struct Job {
    pub lease: &'static str,
    pub interval: Duration,
    pub task: Task,
}

/// The jobs the configuration enables (an interval of 0 disables one;
/// retention without rules has nothing to do).
pub fn jobs(config: &berth_config::Config, retention: &RetentionPolicy) -> Vec<Job> {
    let mut jobs = vec![
        Job { lease: GC_LEASE, interval: config.gc.interval, task: Task::Gc { min_age: config.gc.min_age } },
        Job {
            lease: EXPIRY_LEASE,
            interval: config.uploads.expiry_interval,
            task: Task::ExpireUploads { expire_after: config.uploads.expire_after },
        },
    ];
    if !retention.is_empty() {
        jobs.push(Job {
            lease: RETENTION_LEASE,
            interval: config.retention.interval,
            task: Task::Retention(retention.clone()),
        });
    }
    jobs.retain(|j| !j.interval.is_zero());
    jobs
}

/// Starts one task per job; they end when `stop` turns true (a job in
/// progress is abandoned there: every step it took is complete on its own,
/// and its lease lapses).
pub fn spawn(maintenance: Maintenance, jobs: Vec<Job>, stop: watch::Receiver<bool>) -> Vec<JoinHandle<()>> {
    let started = berth_registry::now_ms();
    jobs.into_iter()
        .map(|job| {
            let (maintenance, mut stop) = (maintenance.clone(), stop.clone());
            tokio::spawn(async move {
                tracing::info!(job = job.lease, interval = ?job.interval, "maintenance job scheduled");
                let tick = (job.interval / 4).clamp(Duration::from_millis(100), Duration::from_secs(30));
                loop {
                    tokio::select! {
                        _ = stop.changed() => return,
                        () = tick_once(&maintenance, &job, started) => {}
                    }
                    tokio::select! {
                        _ = stop.changed() => return,
                        () = tokio::time::sleep(tick) => {}
                    }
                }
            })
        })
        .collect()
}

fn interval_ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// When the job last finished anywhere, or this process's start.
async fn last_run(maintenance: &Maintenance, job: &Job, started: i64) -> Option<i64> {
    match maintenance.store().get_lease(job.lease).await {
        Ok(record) => Some(record.and_then(|r| r.last_run_at).unwrap_or(started)),
        Err(e) => {
            tracing::warn!(job = job.lease, error = %e, "cannot read the maintenance schedule");
            None
        }
    }
}

async fn tick_once(maintenance: &Maintenance, job: &Job, started: i64) {
    let due = |last: i64| berth_registry::now_ms() >= last.saturating_add(interval_ms(job.interval));
    if !last_run(maintenance, job, started).await.is_some_and(due) {
        return;
    }
    let lease = match maintenance.try_lease(job.lease).await {
        Ok(Ok(lease)) => lease,
        Ok(Err(held)) => {
            tracing::debug!(job = job.lease, holder = %held.holder, "maintenance job runs elsewhere");
            return;
        }
        Err(e) => {
            tracing::warn!(job = job.lease, error = %e, "cannot take the maintenance lease");
            return;
        }
    };
    // Under the lease: another replica may have finished it just now.
    if !last_run(maintenance, job, started).await.is_some_and(due) {
        let _ = lease.release(false).await;
        return;
    }
    let result = match &job.task {
        Task::Gc { min_age } => {
            let options = GcOptions { min_age: *min_age, dry_run: false };
            maintenance.collect_garbage(&options, Some(&lease), &no_progress).await.map(|_| ())
        }
        Task::Retention(policy) => maintenance.apply_retention(policy, false, Some(&lease)).await.map(|_| ()),
        Task::ExpireUploads { expire_after } => {
            maintenance.expire_uploads(*expire_after, Some(&lease)).await.map(|_| ())
        }
    };
    if let Err(e) = &result {
        tracing::error!(job = job.lease, error = %e, "maintenance job failed; retrying at the next tick");
    }
    if let Err(e) = lease.release(result.is_ok()).await {
        tracing::warn!(job = job.lease, error = %e, "cannot release the maintenance lease");
    }
}
