//! Background writes that leave the disk to the log: redb's file and new log
//! segments are synced a piece at a time.
//!
//! The log's `fdatasync` asks the disk to flush everything written before
//! it, not only the log's pages. A checkpoint writes, all at once, every
//! page redb changed since the last one (megabytes), then syncs, and a new
//! segment of the log is 32 MiB of zeros; a log sync that comes during
//! either waits for all of it. Measured: the log's sync took 25–60 ms at
//! each checkpoint and each new segment, against 0.15–0.3 ms otherwise, and
//! that was the HTTP tail (docs/performance.md, "Where the paced tail came
//! from"). So these writes sync every [`SYNC_EVERY`] bytes: a log sync
//! waits for one small piece at most. Syncing more often than redb asks
//! never loses anything.

use redb::backends::FileBackend;
use redb::{BackendError, StorageBackend};
use std::fs::File;
use std::ops::Bound;
use std::sync::atomic::{AtomicU64, Ordering};

/// Bytes written between two syncs at most.
pub const SYNC_EVERY: u64 = 128 << 10;

/// Syncs a piece of `file` written in the background.
pub fn sync_piece(file: &File) -> std::io::Result<()> {
    file.sync_data()?;
    crate::metrics::metrics().paced_syncs.inc();
    Ok(())
}

/// redb's own file backend, with a sync after each [`SYNC_EVERY`] bytes written.
#[derive(Debug)]
pub struct PacedFile {
    inner: FileBackend,
    /// The same file, to sync it (redb's backend does not lend its handle).
    file: File,
    unsynced: AtomicU64,
}

impl PacedFile {
    pub fn new(file: File) -> std::io::Result<PacedFile> {
        let own = file.try_clone()?;
        let inner = FileBackend::new(file).map_err(std::io::Error::other)?;
        Ok(PacedFile { inner, file: own, unsynced: AtomicU64::new(0) })
    }
}

impl StorageBackend for PacedFile {
    fn len(&self) -> Result<u64, std::io::Error> {
        self.inner.len()
    }

    fn read(&self, offset: u64, out: &mut [u8]) -> Result<(), std::io::Error> {
        self.inner.read(offset, out)
    }

    fn set_len(&self, len: u64) -> Result<(), std::io::Error> {
        self.inner.set_len(len)
    }

    fn sync_data(&self) -> Result<(), std::io::Error> {
        self.unsynced.store(0, Ordering::Relaxed);
        self.inner.sync_data()
    }

    fn write(&self, offset: u64, data: &[u8]) -> Result<(), std::io::Error> {
        self.inner.write(offset, data)?;
        let before = self.unsynced.fetch_add(data.len() as u64, Ordering::Relaxed);
        if before + data.len() as u64 >= SYNC_EVERY {
            self.unsynced.store(0, Ordering::Relaxed);
            sync_piece(&self.file)?;
        }
        Ok(())
    }

    fn close(&self) -> Result<(), std::io::Error> {
        self.inner.close()
    }

    fn try_lock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<bool, BackendError> {
        self.inner.try_lock_range(start, end)
    }

    fn try_lock_shared_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<bool, BackendError> {
        self.inner.try_lock_shared_range(start, end)
    }

    fn lock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<(), BackendError> {
        self.inner.lock_range(start, end)
    }

    fn lock_shared_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<(), BackendError> {
        self.inner.lock_shared_range(start, end)
    }

    fn unlock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<(), BackendError> {
        self.inner.unlock_range(start, end)
    }

    fn query_lock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<bool, BackendError> {
        self.inner.query_lock_range(start, end)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_are_synced_a_piece_at_a_time_and_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let file = File::options().read(true).write(true).create(true).truncate(true).open(dir.path().join("f")).unwrap();
        let paced = PacedFile::new(file).unwrap();
        let before = crate::metrics::metrics().paced_syncs.get();
        let piece = vec![7u8; 16 << 10];
        let pieces = (SYNC_EVERY as usize * 3 + 100) / piece.len() + 1;
        paced.set_len((pieces * piece.len()) as u64).unwrap();
        for i in 0..pieces {
            paced.write((i * piece.len()) as u64, &piece).unwrap();
        }
        // Three full pieces were synced on the way (other tests may sync too).
        assert!(crate::metrics::metrics().paced_syncs.get() >= before + 3);
        let mut back = vec![0u8; piece.len()];
        paced.read(((pieces - 1) * piece.len()) as u64, &mut back).unwrap();
        assert_eq!(back, piece);
        assert_eq!(paced.len().unwrap(), (pieces * piece.len()) as u64);
    }
}
