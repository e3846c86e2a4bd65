//! Progress of `berth backup` and `berth restore`: a bar on a terminal
//! (stderr), plain log lines otherwise.
//!
//! Updates are two atomic additions (bytes, blobs); the bar redraws itself
//! at most 10 times a second from them, and the log line is written at most
//! every [`LOG_EVERY`]. Workers on several threads share one `Progress`.

use std::io::IsTerminal;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressState, ProgressStyle};

/// How often a line is logged when stderr is not a terminal.
const LOG_EVERY: Duration = Duration::from_secs(10);

pub struct Progress {
    /// `backup` or `restore`.
    verb: &'static str,
    bar: Option<ProgressBar>,
    blobs: Arc<AtomicU64>,
    bytes: AtomicU64,
    total_blobs: u64,
    total_bytes: u64,
    started: Instant,
    last_log: Mutex<Instant>,
}

impl Progress {
    /// A bar if stderr is a terminal, else log lines.
    pub fn new(verb: &'static str, total_blobs: u64, total_bytes: u64) -> Progress {
        Progress::with_bar(verb, total_blobs, total_bytes, std::io::stderr().is_terminal())
    }

    fn with_bar(verb: &'static str, total_blobs: u64, total_bytes: u64, terminal: bool) -> Progress {
        let blobs = Arc::new(AtomicU64::new(0));
        let bar = terminal.then(|| {
            let counted = blobs.clone();
            let template = format!(
                "{verb} {{elapsed:>4}} [{{wide_bar}}] {{bytes}}/{{total_bytes}} {{blobs}} {{binary_bytes_per_sec}} eta {{eta}}"
            );
            let style = ProgressStyle::with_template(&template)
                .unwrap_or_else(|_| ProgressStyle::default_bar())
                .with_key("blobs", move |_: &ProgressState, w: &mut dyn std::fmt::Write| {
                    let _ = write!(w, "{}/{total_blobs} blobs", counted.load(Ordering::Relaxed));
                })
                .progress_chars("=> ");
            let bar = ProgressBar::with_draw_target(Some(total_bytes), ProgressDrawTarget::stderr_with_hz(10));
            bar.set_style(style);
            // Redrawn on a timer too, so a single large blob still shows time passing.
            bar.enable_steady_tick(Duration::from_millis(500));
            bar
        });
        let now = Instant::now();
        Progress {
            verb,
            bar,
            blobs,
            bytes: AtomicU64::new(0),
            total_blobs,
            total_bytes,
            started: now,
            last_log: Mutex::new(now),
        }
    }

    /// One more blob of `size` bytes is done.
    pub fn blob_done(&self, size: u64) {
        self.blobs.fetch_add(1, Ordering::Relaxed);
        self.bytes.fetch_add(size, Ordering::Relaxed);
        match &self.bar {
            Some(bar) => bar.inc(size),
            None => self.maybe_log(),
        }
    }

    fn maybe_log(&self) {
        let Ok(mut last) = self.last_log.try_lock() else { return };
        if last.elapsed() < LOG_EVERY {
            return;
        }
        *last = Instant::now();
        drop(last);
        tracing::info!("{}", self.line());
    }

    /// `backup: 120/800 blobs, 1.2 GiB of 4.0 GiB (30 %), 25s`.
    fn line(&self) -> String {
        let bytes = self.bytes.load(Ordering::Relaxed);
        let percent = (bytes * 100).checked_div(self.total_bytes).unwrap_or(100);
        format!(
            "{}: {}/{} blobs, {} of {} ({percent} %), {}s",
            self.verb,
            self.blobs.load(Ordering::Relaxed),
            self.total_blobs,
            berth_config::human_size(bytes),
            berth_config::human_size(self.total_bytes),
            self.started.elapsed().as_secs()
        )
    }

    /// Blobs and bytes done so far.
    pub fn done(&self) -> (u64, u64) {
        (self.blobs.load(Ordering::Relaxed), self.bytes.load(Ordering::Relaxed))
    }

    /// Removes the bar (the caller prints the summary).
    pub fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }

    /// Shows `what` as the current step (a spinner on a terminal, a log
    /// line otherwise) until the returned guard is dropped.
    pub fn step(what: &str) -> Step {
        Step::new(what, std::io::stderr().is_terminal())
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        // An error cut the run short: leave the bar where it stopped.
        if let Some(bar) = &self.bar
            && !bar.is_finished()
        {
            bar.abandon();
        }
    }
}

/// A spinner for a step whose size is unknown (copying the database).
pub struct Step {
    spinner: Option<ProgressBar>,
}

impl Step {
    fn new(what: &str, terminal: bool) -> Step {
        if !terminal {
            tracing::info!("{what}");
            return Step { spinner: None };
        }
        let spinner = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr_with_hz(10));
        spinner.set_style(
            ProgressStyle::with_template("{spinner} {msg} {elapsed}")
                .unwrap_or_else(|_| ProgressStyle::default_spinner()),
        );
        spinner.set_message(what.to_owned());
        spinner.enable_steady_tick(Duration::from_millis(100));
        Step { spinner: Some(spinner) }
    }
}

impl Drop for Step {
    fn drop(&mut self) {
        if let Some(s) = &self.spinner {
            s.finish_and_clear();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_from_several_threads() {
        let p = Progress::with_bar("backup", 400, 400 * 1024, false);
        std::thread::scope(|s| {
            for _ in 0..4 {
                s.spawn(|| (0..100).for_each(|_| p.blob_done(1024)));
            }
        });
        assert_eq!(p.done(), (400, 400 * 1024));
        let line = p.line();
        assert!(line.starts_with("backup: 400/400 blobs, 400 KiB of 400 KiB (100 %), "), "{line}");
    }
}
