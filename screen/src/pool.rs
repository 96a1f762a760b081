//! The blocking worker pool: inference runs here, on threads of its own,
//! never on an async executor thread (where it would stall every task
//! sharing the thread) nor anywhere near the SFU's media loop. The queue in
//! front of the workers is bounded; a job that finds it full is refused at
//! once (the caller drops the sample and counts it) rather than waiting.

use crate::error::SampleError;
use crate::metrics::Metrics;
use crate::model::{Model, Screened};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use tokio::sync::oneshot;

/// One snapshot to screen.
struct Job {
    webp: Vec<u8>,
    /// When the sample fell due, for the queue-age metric.
    due: Instant,
    reply: oneshot::Sender<Result<Screened, SampleError>>,
}

/// The queue was full; the job was not taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the screening queue is full")]
pub struct QueueFull;

pub struct Pool {
    /// `None` once shutting down (dropping it lets the workers finish).
    tx: Option<SyncSender<Job>>,
    /// Kept here too, so a queue outlives its workers until shutdown.
    _rx: Arc<Mutex<Receiver<Job>>>,
    /// Jobs queued or running.
    pending: Arc<AtomicUsize>,
    capacity: usize,
    workers: Vec<JoinHandle<()>>,
}

impl Pool {
    /// Starts `workers` threads behind a queue of `queue` jobs.
    pub fn start(model: Model, workers: usize, queue: usize, metrics: Metrics) -> std::io::Result<Self> {
        Self::start_with(model, workers.max(1), queue, metrics)
    }

    /// As [`Pool::start`], zero workers allowed (tests of the queue bound).
    fn start_with(model: Model, workers: usize, queue: usize, metrics: Metrics) -> std::io::Result<Self> {
        let (tx, rx) = mpsc::sync_channel::<Job>(queue);
        let rx = Arc::new(Mutex::new(rx));
        let pending = Arc::new(AtomicUsize::new(0));
        let mut handles = Vec::with_capacity(workers);
        for i in 0..workers {
            let (rx, model, metrics, pending) = (rx.clone(), model.clone(), metrics.clone(), pending.clone());
            handles.push(
                std::thread::Builder::new()
                    .name(format!("screen-worker-{i}"))
                    .spawn(move || work(&rx, &model, &metrics, &pending))?,
            );
        }
        Ok(Self {
            tx: Some(tx),
            _rx: rx,
            pending,
            capacity: workers + queue,
            workers: handles,
        })
    }

    /// Queues a snapshot; the answer arrives on the receiver.
    pub fn try_submit(
        &self,
        webp: Vec<u8>,
        due: Instant,
    ) -> Result<oneshot::Receiver<Result<Screened, SampleError>>, QueueFull> {
        let tx = self.tx.as_ref().ok_or(QueueFull)?;
        let (reply, rx) = oneshot::channel();
        self.pending.fetch_add(1, Ordering::SeqCst);
        match tx.try_send(Job { webp, due, reply }) {
            Ok(()) => Ok(rx),
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => {
                self.pending.fetch_sub(1, Ordering::SeqCst);
                Err(QueueFull)
            }
        }
    }

    /// Jobs the pool can take now (idle workers and free queue places).
    pub fn room(&self) -> usize {
        self.capacity.saturating_sub(self.pending.load(Ordering::SeqCst))
    }

    /// Workers plus queue places.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Lets the queued jobs finish and joins the workers (bounded by `within`).
    pub fn shutdown(mut self, within: Duration) {
        self.tx = None;
        let deadline = Instant::now() + within;
        for h in self.workers.drain(..) {
            while !h.is_finished() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(5));
            }
            if h.is_finished() {
                let _ = h.join();
            }
        }
    }
}

fn work(rx: &Mutex<Receiver<Job>>, model: &Model, metrics: &Metrics, pending: &AtomicUsize) {
    loop {
        // The lock is held only while waiting for the next job.
        let job = match rx.lock() {
            Ok(guard) => guard.recv(),
            Err(_) => return,
        };
        let Ok(job) = job else { return };
        metrics.queue_age.observe(job.due.elapsed().as_secs_f64());
        let result = model.screen(&job.webp);
        if let Ok(s) = &result {
            metrics.prepare.observe(s.prepare.as_secs_f64());
            metrics.inference.observe(s.infer.as_secs_f64());
        }
        pending.fetch_sub(1, Ordering::SeqCst);
        // The asker may have gone (shutdown); the result is then not needed.
        let _ = job.reply.send(result);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ModelConfig;
    use crate::image::{encode_webp_lossless, Rgb};
    use crate::testmodel::{colour_config, colour_model};

    fn model() -> Model {
        let path = std::env::temp_dir().join(format!("duet-screen-pool-{}.onnx", std::process::id()));
        std::fs::write(&path, colour_model()).unwrap();
        let m = Model::load(
            &path,
            ModelConfig::parse(&colour_config(16, 16, 0.5, 0.6)).unwrap(),
        )
        .unwrap();
        let _ = std::fs::remove_file(&path);
        m
    }

    fn metrics() -> Metrics {
        Metrics::new(&prometheus::Registry::new(), &["red".into()]).unwrap()
    }

    #[tokio::test]
    async fn jobs_run_on_the_worker_threads_and_answer() {
        let pool = Pool::start(model(), 2, 4, metrics()).unwrap();
        let red = encode_webp_lossless(&Rgb::solid(32, 32, [220, 40, 40])).unwrap();
        let rx = pool.try_submit(red, Instant::now()).unwrap();
        let s = rx.await.unwrap().unwrap();
        assert!(s.labels[0] > 0.6);
        let bad = pool.try_submit(b"not a webp".to_vec(), Instant::now()).unwrap();
        assert!(matches!(bad.await.unwrap(), Err(SampleError::Decode(_))));
        assert_eq!(pool.room(), 6);
        pool.shutdown(Duration::from_secs(5));
    }

    #[test]
    fn a_full_queue_refuses_at_once_and_room_says_so() {
        // No worker takes anything: the queue alone bounds what is accepted.
        let pool = Pool::start_with(model(), 0, 2, metrics()).unwrap();
        let snap = encode_webp_lossless(&Rgb::solid(8, 8, [1, 2, 3])).unwrap();
        let first = pool.try_submit(snap.clone(), Instant::now()).unwrap();
        let _second = pool.try_submit(snap.clone(), Instant::now()).unwrap();
        assert_eq!(pool.room(), 0);
        assert_eq!(pool.try_submit(snap, Instant::now()).unwrap_err(), QueueFull);
        assert_eq!(pool.room(), 0);
        // Shutting down drops the queued jobs' answers, never blocks.
        pool.shutdown(Duration::from_secs(1));
        assert!(first.blocking_recv().is_err());
    }
}
