//! Alerts raised outside the security sensor (the insights job's anomalies and saturation
//! forecasts) go to the same SIEM sinks as the sensor's (`security.sinks`), through the same
//! durable queues and retries (`sensor::sink::Forwarder`), on a thread of their own. The queues
//! live in `<data>/insights/`, apart from the sensor's, so each side replays only its own.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use model::security::Alert;
use sensor::sink::{Forwarder, RetryConfig, SinkConfig};

/// The running forwarder; dropping it stops the thread after one last pump.
pub struct AlertSinks {
    tx: mpsc::Sender<Vec<Alert>>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl AlertSinks {
    /// Opens one queue per sink under `queue_dir` and starts sending; `None` without sinks.
    pub fn start(sinks: &[SinkConfig], queue_dir: &Path) -> Result<Option<Self>, String> {
        if sinks.is_empty() {
            return Ok(None);
        }
        std::fs::create_dir_all(queue_dir)
            .map_err(|e| format!("cannot create {}: {e}", queue_dir.display()))?;
        let mut forwarders = Vec::with_capacity(sinks.len());
        for (i, sink) in sinks.iter().enumerate() {
            let built =
                sensor::sink::build(sink).map_err(|e| format!("security.sinks[{i}]: {e}"))?;
            let queue = queue_dir.join(format!("queue-{i}-{}.log", built.kind()));
            forwarders.push(
                Forwarder::new(built, &queue, RetryConfig::default())
                    .map_err(|e| format!("security.sinks[{i}]: {e}"))?,
            );
        }
        let (tx, rx) = mpsc::channel::<Vec<Alert>>();
        let stop = Arc::new(AtomicBool::new(false));
        let thread = std::thread::Builder::new()
            .name("oxeye-alert-sinks".into())
            .spawn({
                let stop = stop.clone();
                move || forward(forwarders, rx, &stop)
            })
            .map_err(|e| format!("cannot start the alert forwarder thread: {e}"))?;
        Ok(Some(AlertSinks {
            tx,
            stop,
            thread: Some(thread),
        }))
    }

    pub fn sender(&self) -> mpsc::Sender<Vec<Alert>> {
        self.tx.clone()
    }
}

impl Drop for AlertSinks {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn forward(mut forwarders: Vec<Forwarder>, rx: mpsc::Receiver<Vec<Alert>>, stop: &AtomicBool) {
    loop {
        let stopping = stop.load(Ordering::Relaxed);
        let mut incoming = Vec::new();
        if !stopping {
            match rx.recv_timeout(Duration::from_millis(500)) {
                Ok(a) => incoming.extend(a),
                Err(mpsc::RecvTimeoutError::Timeout) => {}
                // Nobody sends any more; keep pumping what is queued.
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    std::thread::sleep(Duration::from_millis(500))
                }
            }
        }
        while let Ok(a) = rx.try_recv() {
            incoming.extend(a);
        }
        let now = Instant::now();
        for f in &mut forwarders {
            if !incoming.is_empty()
                && let Err(e) = f.enqueue(&incoming)
            {
                tracing::warn!(sink = f.kind(), error = %e, "insights: cannot queue alerts");
            }
            if let Err(e) = f.pump(now) {
                tracing::warn!(sink = f.kind(), error = %e, "insights: sink queue failed");
            }
        }
        if stopping {
            break;
        }
    }
}
