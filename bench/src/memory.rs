//! Private memory (`RssAnon`) sampled in the background. `/proc` keeps a
//! high-water mark for the resident set (`VmHWM`) but none for private
//! memory, so its peak is the maximum of samples taken every 50 ms, over the
//! whole suite and over a window (the large transfers of one round).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::servers;

const INTERVAL: Duration = Duration::from_millis(50);

#[derive(Debug, Default)]
struct Peaks {
    /// Per process, since the sampler started.
    overall: Vec<u64>,
    /// Per process, since the last [`AnonSampler::window_start`].
    window: Vec<u64>,
}

/// Samples the servers' RssAnon in the background and keeps the maxima.
pub struct AnonSampler {
    pids: Vec<u32>,
    peaks: Arc<Mutex<Peaks>>,
    stop: tokio::sync::watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl AnonSampler {
    pub fn start(pids: Vec<u32>) -> Self {
        let peaks = Arc::new(Mutex::new(Peaks { overall: vec![0; pids.len()], window: vec![0; pids.len()] }));
        let (stop, mut stopped) = tokio::sync::watch::channel(false);
        let task = tokio::spawn({
            let (pids, peaks) = (pids.clone(), peaks.clone());
            async move {
                loop {
                    sample(&pids, &peaks);
                    tokio::select! {
                        _ = stopped.changed() => return,
                        () = tokio::time::sleep(INTERVAL) => {}
                    }
                }
            }
        });
        AnonSampler { pids, peaks, stop, task }
    }

    /// Starts a new window (its peaks restart from the current values).
    pub fn window_start(&self) {
        self.peaks.lock().expect("sampler lock").window.iter_mut().for_each(|w| *w = 0);
        sample(&self.pids, &self.peaks);
    }

    /// The peak of each process since [`AnonSampler::window_start`], in bytes.
    pub fn window_peaks(&self) -> Vec<u64> {
        sample(&self.pids, &self.peaks);
        self.peaks.lock().expect("sampler lock").window.clone()
    }

    /// Stops sampling; the peak of each process over the whole run, in bytes.
    pub async fn stop(self) -> Vec<u64> {
        let _ = self.stop.send(true);
        let _ = self.task.await;
        self.peaks.lock().expect("sampler lock").overall.clone()
    }
}

fn sample(pids: &[u32], peaks: &Mutex<Peaks>) {
    let now: Vec<Option<u64>> = pids.iter().map(|pid| servers::memory_of(*pid).map(|m| m.anon)).collect();
    let mut p = peaks.lock().expect("sampler lock");
    let Peaks { overall, window } = &mut *p;
    for ((o, w), m) in overall.iter_mut().zip(window.iter_mut()).zip(now) {
        if let Some(m) = m {
            *o = (*o).max(m);
            *w = (*w).max(m);
        }
    }
}
