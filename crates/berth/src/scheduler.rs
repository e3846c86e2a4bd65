//! The server's maintenance schedule: garbage collection (`[gc] interval`),
//! retention rules (`[retention] interval`), upload expiry (`[uploads]
//! expiry_interval`) and scrub (`[scrub] interval`), each in a background
//! task of every replica.
//!
//! Retention is scheduled whether or not any rule exists when the server
//! starts: each run reads the effective rules (config file, then the
//! database) afresh, so rules added through the CLI or the API apply from
//! the next run on.
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
use berth_registry::maintenance::{EXPIRY_LEASE, GC_LEASE, Lease, RETENTION_LEASE, SCRUB_LEASE};
use berth_registry::scrub::ScrubOptions;
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// What a job does.
#[derive(Debug, Clone)]
pub enum Task {
    Gc {
        min_age: Duration,
    },
    /// Apply the effective retention rules, read at each run.
    Retention,
    ExpireUploads {
        expire_after: Duration,
    },
    /// Check every stored blob and manifest, reading at most `rate` bytes/s.
    Scrub {
        rate: Option<u64>,
    },
}

/// A scheduled job.
#[derive(Debug, Clone)]
pub struct Job {
    pub lease: &'static str,
    pub interval: Duration,
    pub task: Task,
}

/// The jobs the configuration enables (an interval of 0 disables one).
/// Retention is among them even without rules yet: they may be added to the
/// database at any time.
pub fn jobs(config: &berth_config::Config) -> Vec<Job> {
    let mut jobs = vec![
        Job { lease: GC_LEASE, interval: config.gc.interval, task: Task::Gc { min_age: config.gc.min_age } },
        Job {
            lease: EXPIRY_LEASE,
            interval: config.uploads.expiry_interval,
            task: Task::ExpireUploads { expire_after: config.uploads.expire_after },
        },
        Job { lease: RETENTION_LEASE, interval: config.retention.interval, task: Task::Retention },
        Job {
            lease: SCRUB_LEASE,
            interval: config.scrub.interval,
            task: Task::Scrub { rate: config.scrub.rate.per_second() },
        },
    ];
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
    match maintenance.last_run(job.lease).await {
        Ok(last) => Some(last.unwrap_or(started)),
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
        Task::Retention => retention(maintenance, &lease).await,
        Task::ExpireUploads { expire_after } => {
            maintenance.expire_uploads(*expire_after, Some(&lease)).await.map(|_| ())
        }
        Task::Scrub { rate } => scrub(maintenance, &lease, *rate).await,
    };
    if let Err(e) = &result {
        tracing::error!(job = job.lease, error = %e, "maintenance job failed; retrying at the next tick");
    }
    if let Err(e) = lease.release(result.is_ok()).await {
        tracing::warn!(job = job.lease, error = %e, "cannot release the maintenance lease");
    }
}

/// One retention run over the rules as they are now; without any, nothing
/// to do (the run still counts, so the next comes an interval later).
async fn retention(maintenance: &Maintenance, lease: &Lease) -> berth_registry::Result<()> {
    let policy = maintenance.retention_policy().await?;
    if policy.is_empty() {
        tracing::debug!("no retention rules in the config file or the database; nothing to do");
        return Ok(());
    }
    maintenance.apply_retention(&policy, false, Some(lease)).await.map(|_| ())
}

/// One scrub of everything; its problems go to the log (each by digest,
/// with what reaches it) and to `berth_scrub_problems`.
async fn scrub(maintenance: &Maintenance, lease: &Lease, rate: Option<u64>) -> berth_registry::Result<()> {
    let options = ScrubOptions { repositories: None, rate };
    let report = maintenance.scrub(&options, Some(lease), &berth_registry::scrub::no_progress).await?;
    for problem in &report.problems {
        tracing::error!(digest = %problem.digest, damage = %problem.damage, reach = ?problem.reach, "scrub problem");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retention_is_scheduled_without_config_rules() {
        let mut config = berth_config::Config::default();
        assert!(config.retention.rules.is_empty());
        let leases: Vec<&str> = jobs(&config).iter().map(|j| j.lease).collect();
        assert!(leases.contains(&RETENTION_LEASE), "{leases:?}");
        config.retention.interval = Duration::ZERO;
        assert!(!jobs(&config).iter().any(|j| j.lease == RETENTION_LEASE));
    }

    #[test]
    fn scrub_is_scheduled_only_when_asked() {
        let mut config = berth_config::Config::default();
        assert!(!jobs(&config).iter().any(|j| j.lease == SCRUB_LEASE), "off by default");
        config.scrub.interval = Duration::from_secs(7 * 24 * 3600);
        let scrub = jobs(&config).into_iter().find(|j| j.lease == SCRUB_LEASE).expect("scheduled");
        assert!(matches!(scrub.task, Task::Scrub { rate: Some(r) } if r == 100 << 20), "{:?}", scrub.task);
    }
}
