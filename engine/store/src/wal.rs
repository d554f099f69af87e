//! The write-ahead log in front of redb: what makes a commit one sequential
//! append and one `fdatasync`.
//!
//! Every batch of jobs the writer applies is a list of table writes (put a
//! key's value, delete a key). The writer appends that list to the log as
//! one record, syncs the log, and only then commits the batch to redb
//! *without* syncing redb and answers the jobs. redb is synced at a
//! checkpoint: when a segment of the log is full, every 5 s while
//! writes come, and at a clean shutdown. Each batch also writes the record's
//! number to redb (`Meta` `wal_applied`), so on open the store knows which
//! records its last durable state holds and replays the rest — physical
//! writes in their order, so the result is the state that was acknowledged.
//!
//! A record: `len: u32 | crc32: u32 | seq: u64 | payload[len]`, little
//! endian; the CRC covers `seq` and the payload. The payload is the writes:
//! `table: u8 | op: u8 (0 put, 1 delete) | key_len: u32 | key | [value_len:
//! u32 | value]`. Segments (`wal/NNNNNNNNNN.wal`) are created full size and
//! zero-filled ahead of use, so an append never grows a file and
//! `fdatasync` writes only the appended pages. Reading stops at the first
//! record that is zero, torn (its CRC fails) or out of sequence: only the
//! last append can be torn, and it was never acknowledged.

use crate::tables::Table;
use std::fs::File;
use std::io::{Read as _, Write as _};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{Receiver, channel};

/// The size of a segment; a checkpoint follows when one is full.
pub const SEGMENT_BYTES: u64 = 32 << 20;
const HEADER: usize = 16;

/// Table writes of one batch, encoded as they go to the log.
#[derive(Default)]
pub struct Ops {
    buf: Vec<u8>,
    count: usize,
}

impl Ops {
    pub fn put(&mut self, table: Table, key: &str, value: &[u8]) {
        self.op(table, 0, key);
        self.buf.extend_from_slice(&(value.len() as u32).to_le_bytes());
        self.buf.extend_from_slice(value);
    }

    pub fn delete(&mut self, table: Table, key: &str) {
        self.op(table, 1, key);
    }

    fn op(&mut self, table: Table, op: u8, key: &str) {
        self.count += 1;
        self.buf.push(table.index());
        self.buf.push(op);
        self.buf.extend_from_slice(&(key.len() as u32).to_le_bytes());
        self.buf.extend_from_slice(key.as_bytes());
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    pub fn len_bytes(&self) -> usize {
        self.buf.len()
    }
}

/// One write read back from the log.
#[derive(Debug, PartialEq, Eq)]
pub enum Op<'a> {
    Put(Table, &'a str, &'a [u8]),
    Delete(Table, &'a str),
}

/// The writes of a record's payload; `Err` names what is malformed.
pub fn decode(mut p: &[u8]) -> Result<Vec<Op<'_>>, String> {
    fn take<'a>(p: &mut &'a [u8], n: usize) -> Result<&'a [u8], String> {
        if p.len() < n {
            return Err(format!("a write is cut short ({} of {n} bytes)", p.len()));
        }
        let (a, b) = p.split_at(n);
        *p = b;
        Ok(a)
    }
    fn len(p: &mut &[u8]) -> Result<usize, String> {
        let b = take(p, 4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize)
    }
    let mut out = Vec::new();
    while !p.is_empty() {
        let head = take(&mut p, 2)?;
        let table = Table::from_index(head[0]).ok_or_else(|| format!("unknown table {}", head[0]))?;
        let n = len(&mut p)?;
        let key = std::str::from_utf8(take(&mut p, n)?).map_err(|e| format!("a key is not UTF-8: {e}"))?;
        match head[1] {
            0 => {
                let n = len(&mut p)?;
                out.push(Op::Put(table, key, take(&mut p, n)?));
            }
            1 => out.push(Op::Delete(table, key)),
            other => return Err(format!("unknown write kind {other}")),
        }
    }
    Ok(out)
}

fn crc(seq: u64, payload: &[u8]) -> u32 {
    let mut h = crc32fast::Hasher::new();
    h.update(&seq.to_le_bytes());
    h.update(payload);
    h.finalize()
}

/// The log: the segment being appended to, and the next one being prepared.
pub struct Wal {
    dir: PathBuf,
    file: File,
    number: u64,
    pos: u64,
    size: u64,
    next_seq: u64,
    /// The next segment, created and zero-filled by a helper thread.
    spare: Option<Receiver<std::io::Result<(File, u64)>>>,
    /// Set when an append failed: what the disk holds is unknown, so nothing
    /// more is acknowledged (the store must be reopened, which replays the log).
    broken: Option<String>,
    written: u64,
    /// The segment a checkpoint was last taken in (once per segment when it fills).
    checkpointed_in: u64,
    /// Where the last record starts (to undo a failed append).
    last_at: Option<u64>,
    /// The first record number each segment since the open holds (segment
    /// number → record), so a checkpoint removes only segments it covers.
    firsts: std::collections::BTreeMap<u64, u64>,
}

/// A record found on open, to replay.
pub struct Recovered {
    pub seq: u64,
    pub payload: Vec<u8>,
}

/// What the log held when it was opened.
pub struct Opened {
    pub wal: Wal,
    /// Every valid record, in order; the caller skips those its durable state holds.
    pub records: Vec<Recovered>,
    /// Why reading stopped early, when it was not the clean end of the log.
    pub stopped: Option<String>,
}

fn segment_path(dir: &Path, number: u64) -> PathBuf {
    dir.join(format!("{number:010}.wal"))
}

/// Creates a segment of `size` zero bytes, synced, under a temporary name
/// first so that a crash never leaves a half-made segment under a real one.
/// A segment made ahead of use (`paced`) is synced a piece at a time (see
/// `paced`), so the log's own syncs meanwhile stay short.
fn create_segment(dir: &Path, number: u64, size: u64, paced: bool) -> std::io::Result<(File, u64)> {
    let tmp = dir.join(format!("{number:010}.tmp"));
    let mut f = File::options().read(true).write(true).create(true).truncate(true).open(&tmp)?;
    let zeros = vec![0u8; crate::paced::SYNC_EVERY as usize];
    let mut left = size;
    while left > 0 {
        let n = left.min(zeros.len() as u64) as usize;
        f.write_all(&zeros[..n])?;
        left -= n as u64;
        if paced && left > 0 {
            crate::paced::sync_piece(&f)?;
        }
    }
    f.sync_all()?;
    std::fs::rename(&tmp, segment_path(dir, number))?;
    sync_dir(dir)?;
    Ok((f, number))
}

/// Why reading a segment stopped before its zero-filled end.
struct Stop {
    reason: String,
    /// A record out of sequence (not a tear): nothing after it can be replayed in order.
    gap: bool,
    /// A valid record lies after the damaged one in the same segment: the
    /// damage is not a torn tail.
    more_after: bool,
}

fn header(bytes: &[u8], at: usize) -> Option<(usize, u32, u64)> {
    let h = bytes.get(at..at + HEADER)?;
    Some((
        u32::from_le_bytes([h[0], h[1], h[2], h[3]]) as usize,
        u32::from_le_bytes([h[4], h[5], h[6], h[7]]),
        u64::from_le_bytes([h[8], h[9], h[10], h[11], h[12], h[13], h[14], h[15]]),
    ))
}

/// Whether a valid record numbered `expect` or later starts anywhere after
/// `from`, up to where the segment's zero fill begins (64 KiB of zeros: no
/// record holds that many in a row).
fn valid_record_after(bytes: &[u8], from: usize, expect: u64) -> bool {
    const ZEROS: usize = 64 << 10;
    let mut end = bytes.len().saturating_sub(HEADER);
    let mut run = 0usize;
    for (i, b) in bytes.iter().enumerate().skip(from + 1) {
        run = if *b == 0 { run + 1 } else { 0 };
        if run >= ZEROS {
            end = i + 1 - ZEROS;
            break;
        }
    }
    (from + 1..end).any(|p| {
        header(bytes, p).is_some_and(|(len, sum, seq)| {
            len > 0
                && seq >= expect.max(1)
                && seq < expect.saturating_add(100_000_000)
                && bytes.get(p + HEADER..p + HEADER + len).is_some_and(|payload| crc(seq, payload) == sum)
        })
    })
}

fn read_segment(path: &Path, expect: &mut u64, out: &mut Vec<Recovered>) -> Result<(), Stop> {
    let mut bytes = Vec::new();
    File::open(path).and_then(|mut f| f.read_to_end(&mut bytes)).map_err(|e| Stop {
        reason: format!("{}: {e}", path.display()),
        gap: true,
        more_after: true,
    })?;
    let mut at = 0usize;
    while let Some((len, sum, seq)) = header(&bytes, at) {
        if len == 0 && sum == 0 && seq == 0 {
            return Ok(());
        }
        let torn = |what: &str| Stop {
            reason: format!("{}: the record at byte {at} {what} (torn)", path.display()),
            gap: false,
            more_after: valid_record_after(&bytes, at, *expect),
        };
        let Some(payload) = bytes.get(at + HEADER..at + HEADER + len) else {
            return Err(torn("runs past the end"));
        };
        if crc(seq, payload) != sum {
            return Err(torn("fails its checksum"));
        }
        if *expect != 0 && seq != *expect {
            return Err(Stop { reason: format!("{}: record {seq} at byte {at} where {expect} was expected", path.display()), gap: true, more_after: true });
        }
        out.push(Recovered { seq, payload: payload.to_vec() });
        *expect = seq + 1;
        at += HEADER + len;
    }
    Ok(())
}

fn sync_dir(dir: &Path) -> std::io::Result<()> {
    File::open(dir)?.sync_all()
}

impl Wal {
    /// Opens the log in `dir` (created if missing), reads every record it
    /// holds, and starts a new segment after them; records are numbered on
    /// from `after` or the last one found, whichever is later.
    pub fn open(dir: &Path, after: u64) -> std::io::Result<Opened> {
        std::fs::create_dir_all(dir)?;
        let mut segments: Vec<(u64, PathBuf)> = Vec::new();
        for entry in std::fs::read_dir(dir)? {
            let path = entry?.path();
            let name = path.file_name().and_then(|n| n.to_str()).unwrap_or_default().to_string();
            if let Some(n) = name.strip_suffix(".wal").and_then(|n| n.parse::<u64>().ok()) {
                segments.push((n, path));
            } else if name.ends_with(".tmp") {
                // A segment being prepared when the process stopped.
                std::fs::remove_file(&path)?;
            }
        }
        segments.sort();
        let mut records = Vec::new();
        let mut expect = 0u64;
        let mut stopped = None;
        // Segments at the end that hold nothing (made ready before a stop) are used again.
        let mut empty: Vec<u64> = Vec::new();
        for (n, path) in &segments {
            let before = records.len();
            match read_segment(path, &mut expect, &mut records) {
                Ok(()) => {
                    if records.len() == before && std::fs::metadata(path)?.len() == SEGMENT_BYTES {
                        empty.push(*n);
                    } else {
                        empty.clear();
                    }
                }
                // A torn last append, and nothing valid after it in its
                // segment: the log ends there. A later segment (a restart
                // after the tear) must go on at the torn record's number,
                // which the next read checks.
                Err(stop) if !stop.gap && !stop.more_after => {
                    stopped = Some(stop.reason);
                }
                // Damage followed by good records, or records out of order:
                // acknowledged writes would be lost, so the store does not open.
                Err(stop) => {
                    return Err(std::io::Error::other(format!(
                        "the write-ahead log is damaged before its end ({}). Keep a copy of {} and ask for help before moving it aside",
                        stop.reason,
                        dir.display()
                    )));
                }
            }
        }
        let last = records.last().map_or(0, |r| r.seq);
        // A start that fails and is tried again (a crash loop) adds no
        // segments: the first empty one is written next, the second is the
        // spare, any more are removed.
        if stopped.is_some() {
            empty.clear();
        }
        for n in empty.iter().skip(2) {
            std::fs::remove_file(segment_path(dir, *n))?;
        }
        let open = |n: u64| File::options().read(true).write(true).open(segment_path(dir, n));
        let (file, number) = match empty.first() {
            Some(n) => (open(*n)?, *n),
            None => create_segment(dir, segments.last().map_or(1, |(n, _)| n + 1), SEGMENT_BYTES, false)?,
        };
        let spare = empty.get(1).map(|n| open(*n).map(|f| (f, *n)));
        let mut wal = Wal {
            dir: dir.to_path_buf(),
            file,
            number,
            pos: 0,
            size: SEGMENT_BYTES,
            next_seq: last.max(after) + 1,
            spare: None,
            broken: None,
            written: 0,
            checkpointed_in: 0,
            last_at: None,
            firsts: std::collections::BTreeMap::new(),
        };
        wal.firsts.insert(number, wal.next_seq);
        match spare {
            Some(ready) => {
                let (tx, rx) = channel();
                let _ = tx.send(ready);
                wal.spare = Some(rx);
            }
            None => wal.prepare_spare(),
        }
        Ok(Opened { wal, records, stopped })
    }

    fn prepare_spare(&mut self) {
        let (tx, rx) = channel();
        let (dir, number) = (self.dir.clone(), self.number + 1);
        let spawned = std::thread::Builder::new().name("flowform-wal-segment".into()).spawn(move || {
            let _ = tx.send(create_segment(&dir, number, SEGMENT_BYTES, true));
        });
        self.spare = spawned.ok().map(|_| rx);
    }

    /// The number the next record will have.
    pub fn next_seq(&self) -> u64 {
        self.next_seq
    }

    /// Whether the current segment is full enough that the next batch should be a checkpoint.
    pub fn wants_checkpoint(&self) -> bool {
        self.pos > self.size / 4 * 3 && self.checkpointed_in != self.number
    }

    /// Bytes appended since the log was opened.
    pub fn written(&self) -> u64 {
        self.written
    }

    pub fn broken(&self) -> Option<&str> {
        self.broken.as_deref()
    }

    /// Appends the record `seq` holding `ops` and syncs it. Once this
    /// returns `Ok`, the writes survive a crash.
    pub fn append(&mut self, seq: u64, ops: &Ops) -> std::io::Result<()> {
        if let Some(why) = &self.broken {
            return Err(std::io::Error::other(format!("the write-ahead log failed before: {why}")));
        }
        self.last_at = None;
        let result = self.append_inner(seq, ops);
        if let Err(e) = &result {
            // Best effort: the log ends before this record, so a restart does
            // not apply what its jobs are told failed. Whether that reached
            // the disk is unknown after a failed sync, so nothing more is
            // acknowledged until the store is opened again.
            if let Some(at) = self.last_at {
                let _ = self.file.write_all_at(&[0u8; HEADER], at).and_then(|()| self.file.sync_data());
            }
            self.broken = Some(format!(
                "{e}. Restart the server; a request that got no clear answer may or may not have been applied: send it again with the same Idempotency-Key"
            ));
        }
        result
    }

    fn append_inner(&mut self, seq: u64, ops: &Ops) -> std::io::Result<()> {
        debug_assert_eq!(seq, self.next_seq);
        let len = ops.buf.len();
        if len > u32::MAX as usize - HEADER {
            return Err(std::io::Error::other("a batch of more than 4 GiB of writes"));
        }
        let need = (HEADER + len) as u64;
        if self.pos + need > self.size {
            self.switch(need)?;
        }
        let mut record = Vec::with_capacity(HEADER + len);
        record.extend_from_slice(&(len as u32).to_le_bytes());
        record.extend_from_slice(&crc(seq, &ops.buf).to_le_bytes());
        record.extend_from_slice(&seq.to_le_bytes());
        record.extend_from_slice(&ops.buf);
        self.file.write_all_at(&record, self.pos)?;
        self.last_at = Some(self.pos);
        self.file.sync_data()?;
        self.pos += need;
        self.next_seq = seq + 1;
        self.written += need;
        Ok(())
    }

    /// Moves to the next segment (the prepared one when it is ready and large enough).
    fn switch(&mut self, need: u64) -> std::io::Result<()> {
        let spare = self.spare.take().and_then(|rx| rx.recv().ok());
        let (file, number, size) = match spare {
            Some(Ok((f, n))) if need <= SEGMENT_BYTES => (f, n, SEGMENT_BYTES),
            other => {
                if let Some(Ok((_, n))) = other {
                    std::fs::remove_file(segment_path(&self.dir, n))?;
                }
                let size = need.max(SEGMENT_BYTES);
                let (f, n) = create_segment(&self.dir, self.number + 1, size, false)?;
                (f, n, size)
            }
        };
        self.file = file;
        self.number = number;
        self.size = size;
        self.pos = 0;
        self.firsts.insert(number, self.next_seq);
        self.prepare_spare();
        Ok(())
    }

    /// After a checkpoint that holds every record up to `through`: the
    /// segments whose records all lie at or before it are no longer needed
    /// (those found at the open hold only records before it).
    pub fn checkpointed(&mut self, through: u64) -> std::io::Result<()> {
        let covered = |n: u64| self.firsts.range(n + 1..).next().is_some_and(|(_, first)| *first <= through + 1);
        self.checkpointed_in = self.number;
        let mut removed = false;
        for entry in std::fs::read_dir(&self.dir)? {
            let path = entry?.path();
            let n = path.file_name().and_then(|n| n.to_str()).and_then(|n| n.strip_suffix(".wal")).and_then(|n| n.parse::<u64>().ok());
            if let Some(n) = n
                && n < self.number
                && covered(n)
            {
                std::fs::remove_file(&path)?;
                removed = true;
            }
        }
        // Entries before the oldest segment left are no one's successor any more.
        if let Some(oldest) = self.firsts.keys().copied().find(|n| !covered(*n)) {
            self.firsts = self.firsts.split_off(&oldest);
        }
        // A deletion not on disk could bring an old segment back after a power cut.
        if removed { sync_dir(&self.dir) } else { Ok(()) }
    }

    /// At a clean shutdown, after the final checkpoint: no segment is left.
    pub fn close(mut self) -> std::io::Result<()> {
        if let Some(rx) = self.spare.take() {
            let _ = rx.recv();
        }
        for entry in std::fs::read_dir(&self.dir)? {
            let path = entry?.path();
            if path.extension().is_some_and(|e| e == "wal" || e == "tmp") {
                std::fs::remove_file(&path)?;
            }
        }
        sync_dir(&self.dir)
    }
}

impl Drop for Wal {
    /// Waits for the segment being prepared, so that a store opened again
    /// in this process never meets a half-made one.
    fn drop(&mut self) {
        if let Some(rx) = self.spare.take() {
            let _ = rx.recv();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ops(n: usize) -> Ops {
        let mut o = Ops::default();
        for i in 0..n {
            o.put(Table::Instances, &format!("k{i}"), format!("value {i}").as_bytes());
        }
        o.delete(Table::Timers, "gone");
        o
    }

    #[test]
    fn records_read_back_in_order_and_decode() {
        let dir = tempfile::tempdir().unwrap();
        let opened = Wal::open(dir.path(), 0).unwrap();
        assert!(opened.records.is_empty());
        let mut wal = opened.wal;
        for seq in 1..=3 {
            wal.append(seq, &ops(seq as usize)).unwrap();
        }
        drop(wal);
        let opened = Wal::open(dir.path(), 0).unwrap();
        assert_eq!(opened.records.iter().map(|r| r.seq).collect::<Vec<_>>(), vec![1, 2, 3]);
        assert_eq!(opened.stopped, None);
        let writes = decode(&opened.records[1].payload).unwrap();
        assert_eq!(writes, vec![Op::Put(Table::Instances, "k0", b"value 0"), Op::Put(Table::Instances, "k1", b"value 1"), Op::Delete(Table::Timers, "gone")]);
        assert_eq!(opened.wal.next_seq(), 4);
    }

    /// Opening again and again (a start that keeps failing) adds no segments.
    #[test]
    fn opening_again_uses_the_empty_segment() {
        let dir = tempfile::tempdir().unwrap();
        let mut wal = Wal::open(dir.path(), 0).unwrap().wal;
        wal.append(1, &ops(2)).unwrap();
        drop(wal);
        for _ in 0..3 {
            let opened = Wal::open(dir.path(), 0).unwrap();
            assert_eq!(opened.records.len(), 1);
            drop(opened);
        }
        let segments = std::fs::read_dir(dir.path()).unwrap().count();
        assert_eq!(segments, 3, "the one with the record, the empty one, its spare");
    }

    #[test]
    fn a_torn_tail_ends_the_log_where_it_tears() {
        let dir = tempfile::tempdir().unwrap();
        let mut wal = Wal::open(dir.path(), 0).unwrap().wal;
        for seq in 1..=3 {
            wal.append(seq, &ops(4)).unwrap();
        }
        let (path, pos) = (segment_path(dir.path(), wal.number), wal.pos);
        drop(wal);
        // Damage one byte of the last record.
        let f = File::options().write(true).open(&path).unwrap();
        f.write_all_at(&[0xff], pos - 3).unwrap();
        let opened = Wal::open(dir.path(), 0).unwrap();
        assert_eq!(opened.records.iter().map(|r| r.seq).collect::<Vec<_>>(), vec![1, 2]);
        assert!(opened.stopped.unwrap().contains("checksum"));
    }
}
