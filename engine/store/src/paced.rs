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
//! from"). So these writes sync every [`SYNC_EVERY`] bytes (redb's file:
//! those its applier thread makes, which are the checkpoints and the pages
//! a full write buffer spills): a log sync waits for about one piece.
//! Syncing more often than redb asks loses nothing, as long as a failed
//! sync is not forgotten (see [`PacedFile`]).

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

thread_local! {
    /// Set on the threads whose writes to redb's file are synced a piece at
    /// a time (the applier). redb also writes buffered pages out from a
    /// reader's thread when its cache is short; those are not synced there,
    /// so a request never waits for a sync (the applier's next piece covers them).
    static PACED_HERE: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Marks the calling thread as one whose writes to redb's file are paced.
pub fn pace_this_thread() {
    PACED_HERE.with(|p| p.set(true));
}

/// redb's own file backend, with a sync after each [`SYNC_EVERY`] bytes
/// written by a paced thread.
///
/// A failed sync is remembered: Linux reports a failed write-back once per
/// open file, so the error a piece's sync saw would not reach redb's own
/// sync at the next checkpoint, which would then count pages as durable
/// that were lost. Every later write and sync fails with it instead, the
/// applier stops, and nothing more is acknowledged (a restart replays the log).
#[derive(Debug)]
pub struct PacedFile {
    inner: FileBackend,
    /// The same file, to sync it (redb's backend does not lend its handle).
    file: File,
    unsynced: AtomicU64,
    failed: std::sync::Mutex<Option<String>>,
    /// Tests: the next piece's sync fails.
    #[cfg(test)]
    fail_next_sync: std::sync::atomic::AtomicBool,
}

impl PacedFile {
    pub fn new(file: File) -> std::io::Result<PacedFile> {
        let own = file.try_clone()?;
        let inner = FileBackend::new(file).map_err(std::io::Error::other)?;
        Ok(PacedFile {
            inner,
            file: own,
            unsynced: AtomicU64::new(0),
            failed: std::sync::Mutex::new(None),
            #[cfg(test)]
            fail_next_sync: std::sync::atomic::AtomicBool::new(false),
        })
    }

    fn failed(&self) -> std::io::Result<()> {
        match &*self.failed.lock().unwrap_or_else(std::sync::PoisonError::into_inner) {
            Some(why) => Err(std::io::Error::other(format!("an earlier sync of the database file failed ({why}); restart the server"))),
            None => Ok(()),
        }
    }

    fn sync_piece(&self) -> std::io::Result<()> {
        #[cfg(test)]
        if self.fail_next_sync.swap(false, Ordering::Relaxed) {
            return self.remember(std::io::Error::other("a sync the test made fail"));
        }
        sync_piece(&self.file).or_else(|e| self.remember(e))
    }

    fn remember(&self, e: std::io::Error) -> std::io::Result<()> {
        *self.failed.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = Some(e.to_string());
        Err(e)
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
        self.failed()?;
        self.unsynced.store(0, Ordering::Relaxed);
        self.inner.sync_data()
    }

    fn write(&self, offset: u64, data: &[u8]) -> Result<(), std::io::Error> {
        self.failed()?;
        self.inner.write(offset, data)?;
        let before = self.unsynced.fetch_add(data.len() as u64, Ordering::Relaxed);
        if before + data.len() as u64 >= SYNC_EVERY && PACED_HERE.with(|p| p.get()) {
            self.unsynced.store(0, Ordering::Relaxed);
            self.sync_piece()?;
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

    fn paced_file(dir: &tempfile::TempDir) -> PacedFile {
        PacedFile::new(File::options().read(true).write(true).create(true).truncate(true).open(dir.path().join("f")).unwrap()).unwrap()
    }

    #[test]
    fn writes_are_synced_a_piece_at_a_time_and_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let paced = paced_file(&dir);
        pace_this_thread();
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

    #[test]
    fn a_failed_sync_fails_every_later_write_and_sync() {
        let dir = tempfile::tempdir().unwrap();
        let paced = paced_file(&dir);
        pace_this_thread();
        paced.set_len(SYNC_EVERY * 2).unwrap();
        paced.fail_next_sync.store(true, Ordering::Relaxed);
        let piece = vec![1u8; SYNC_EVERY as usize];
        assert!(paced.write(0, &piece).is_err(), "the piece's sync failed");
        // The file itself would sync fine now; the failure is remembered.
        let later = paced.sync_data().unwrap_err().to_string();
        assert!(later.contains("an earlier sync of the database file failed"), "{later}");
        assert!(paced.write(0, &[2u8; 16]).is_err());
    }

    #[test]
    fn a_thread_that_is_not_paced_writes_without_syncing() {
        let dir = tempfile::tempdir().unwrap();
        let paced = std::sync::Arc::new(paced_file(&dir));
        paced.set_len(SYNC_EVERY * 2).unwrap();
        paced.fail_next_sync.store(true, Ordering::Relaxed);
        // A reader's thread (not paced) writes past a piece: no sync, so the
        // failure the test set up is not met there.
        let reader = paced.clone();
        std::thread::spawn(move || reader.write(0, &vec![1u8; SYNC_EVERY as usize + 1]).unwrap()).join().unwrap();
        assert!(paced.fail_next_sync.load(Ordering::Relaxed), "no sync was tried on the reader's thread");
    }
}
