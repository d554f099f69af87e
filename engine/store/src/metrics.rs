//! What the store's writer measures, for `/metrics`: how many jobs each
//! commit carries and how long the log's append and sync take. One set per
//! process (Prometheus metrics are per process), registered by the runtime.

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use std::sync::OnceLock;

pub struct StoreMetrics {
    /// Jobs per commit (group commit).
    pub batch_jobs: Histogram,
    /// Seconds to append a batch to the log and sync it.
    pub sync_seconds: Histogram,
    /// Checkpoints: redb synced with everything so far.
    pub checkpoints: Counter,
    /// Log records (batches) the applier copies into redb per transaction.
    pub applied_batches: Histogram,
    /// Syncs of redb's file and of new log segments made a piece at a time
    /// (so the log's syncs never wait for a large flush).
    pub paced_syncs: Counter,
    /// Commits made on the caller's thread (the writer was idle, nothing
    /// queued); the others are the writer thread's (`batch_jobs` counts both).
    pub commits_here: Counter,
}

pub fn metrics() -> &'static StoreMetrics {
    static METRICS: OnceLock<StoreMetrics> = OnceLock::new();
    METRICS.get_or_init(|| StoreMetrics {
        batch_jobs: Histogram::new(exponential_buckets(1.0, 2.0, 10)),
        sync_seconds: Histogram::new(exponential_buckets(0.000_05, 2.0, 14)),
        checkpoints: Counter::default(),
        applied_batches: Histogram::new(exponential_buckets(1.0, 2.0, 12)),
        paced_syncs: Counter::default(),
        commits_here: Counter::default(),
    })
}
