//! Embedded streams: one directory per stream under `<data>/streams/`,
//! holding segment files `<base offset>.log` of records (see `record`: the
//! format, version 2 with version 1 still read). The active (last) segment
//! takes appends; a full one is closed and a new one started. Each segment
//! keeps a sparse in-memory index (every [`INDEX_EVERY`] records) from
//! offset to file position.
//!
//! Appends are **group-committed**: concurrent appends to a stream queue
//! up, and one of them (the leader) writes every queued batch with one
//! `write` and one `fsync`; each is answered once that fsync returned.
//! Every append is preceded by a batch mark, so recovery cuts a torn append
//! whole. An append may name a producer and a sequence ([`ProducerBatch`]):
//! the stream keeps the last [`PRODUCER_BATCHES_KEPT`] batches of each
//! producer (rebuilt from the marks at open) and answers a retry of one
//! with its offsets, storing nothing.
//!
//! Followers wait for the tail on a notification from `append` (a
//! `Condvar` for threads, a `tokio::sync::Notify` for tasks), never by
//! polling. Open files are bounded: every segment file is opened through
//! one store-wide LRU of handles ([`StreamConfig::max_open_files`]), and a
//! stream holds no file between its reads and appends.

use std::collections::{HashMap, VecDeque};
use std::fs::{File, OpenOptions};
use std::io::{BufReader, Read, Write};
use std::ops::Range;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::Duration;

use weir_types::{Batch, Event, is_safe_name, now_ms};

use crate::record::{
    self, Bad, Entry, FRAME_BYTES, Format, MAX_PRODUCER_ID_BYTES, MAX_RECORD_BYTES, Mark,
    ProducerBatch, RecordLimit, SEGMENT_MAGIC,
};

/// Records between two sparse index entries.
const INDEX_EVERY: u64 = 256;
/// Stored batches of one producer a retry is recognised against.
pub const PRODUCER_BATCHES_KEPT: usize = 5;
/// Producers one stream remembers; the least recently seen is forgotten
/// first.
pub const MAX_PRODUCERS_PER_STREAM: usize = 1000;
/// A producer not seen for this long is forgotten (its next batch is taken
/// as new whatever its sequence).
pub const PRODUCER_EXPIRY: Duration = Duration::from_secs(7 * 24 * 3600);

/// Sizes and retention of streams.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StreamConfig {
    /// A segment is closed once it holds this many bytes.
    pub segment_bytes: u64,
    /// Drop the oldest segments while a stream is larger than this.
    pub max_bytes: Option<u64>,
    /// Drop the oldest segments whose newest event is older than this.
    pub max_age_ms: Option<i64>,
    /// Segment files kept open at once, over all streams of a store.
    pub max_open_files: usize,
}

impl Default for StreamConfig {
    fn default() -> Self {
        StreamConfig {
            segment_bytes: 64 << 20,
            max_bytes: None,
            max_age_ms: None,
            max_open_files: 256,
        }
    }
}

/// A stream operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StreamError {
    #[error(
        "stream name {0:?} is not valid: use 1-128 of A-Z a-z 0-9 _ . - (not starting with . or -)"
    )]
    BadName(String),
    #[error("offset {offset} is out of range: stream `{stream}` holds offsets {start}..{end}")]
    OffsetOutOfRange {
        stream: String,
        offset: u64,
        start: u64,
        end: u64,
    },
    #[error("stream `{stream}`: {what}: {source}")]
    Io {
        stream: String,
        what: String,
        source: std::io::Error,
    },
    #[error(
        "event {index} of the batch cannot be stored in stream `{stream}`: {limit}; nothing of the batch was written"
    )]
    Unstorable {
        stream: String,
        index: usize,
        limit: RecordLimit,
    },
    #[error(
        "stream `{stream}` is damaged in {file} at byte {position}; move the file away to recover the rest"
    )]
    Corrupt {
        stream: String,
        file: String,
        position: u64,
    },
    #[error(
        "producer id {0:?} is not valid: use 1-{MAX_PRODUCER_ID_BYTES} of A-Z a-z 0-9 _ . - (not starting with . or -)"
    )]
    BadProducer(String),
    #[error(
        "stream `{stream}`: batch {sequence} of producer `{producer}` {why}; nothing was stored: send a new batch with a sequence above {last}"
    )]
    SequenceConflict {
        stream: String,
        producer: String,
        sequence: u64,
        /// The producer's highest stored sequence.
        last: u64,
        why: &'static str,
    },
}

/// What a stream holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamInfo {
    pub name: String,
    /// First offset still held (retention drops older ones).
    pub start_offset: u64,
    /// Offset the next append gets.
    pub end_offset: u64,
    pub bytes: u64,
    pub segments: usize,
}

/// What an idempotent append did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Appended {
    /// The batch's offsets (the stored ones, for a retry).
    pub offsets: Range<u64>,
    /// The batch was stored before: nothing was written now.
    pub duplicate: bool,
}

#[derive(Debug)]
struct Segment {
    base: u64,
    path: PathBuf,
    format: Format,
    bytes: u64,
    records: u64,
    /// `(offset, file position)` every `INDEX_EVERY` records.
    index: Vec<(u64, u64)>,
    max_timestamp: i64,
}

impl Segment {
    fn end(&self) -> u64 {
        self.base + self.records
    }

    fn new(base: u64, path: PathBuf, format: Format) -> Segment {
        Segment {
            base,
            path,
            format,
            bytes: format.data_start(),
            records: 0,
            index: Vec::new(),
            max_timestamp: i64::MIN,
        }
    }
}

/// One stored batch of a producer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stored {
    sequence: u64,
    offsets: (u64, u64),
    hash: u64,
}

/// What a stream remembers of one producer.
#[derive(Debug, Default)]
struct Producer {
    last_seen_ms: i64,
    /// Oldest first, at most [`PRODUCER_BATCHES_KEPT`].
    batches: VecDeque<Stored>,
}

/// The producer table of a stream.
#[derive(Debug, Default)]
struct Producers(HashMap<String, Producer>);

impl Producers {
    fn record(&mut self, producer: &str, stored: Stored, at_ms: i64) {
        let entry = self.0.entry(producer.to_string()).or_default();
        entry.last_seen_ms = entry.last_seen_ms.max(at_ms);
        entry.batches.push_back(stored);
        while entry.batches.len() > PRODUCER_BATCHES_KEPT {
            entry.batches.pop_front();
        }
    }

    /// Forgets expired producers, then the least recently seen ones past
    /// the cap.
    fn bound(&mut self, now: i64) {
        let expiry = PRODUCER_EXPIRY.as_millis() as i64;
        self.0.retain(|_, p| p.last_seen_ms >= now - expiry);
        if self.0.len() > MAX_PRODUCERS_PER_STREAM {
            let mut seen: Vec<i64> = self.0.values().map(|p| p.last_seen_ms).collect();
            seen.sort_unstable();
            let cut = seen[self.0.len() - MAX_PRODUCERS_PER_STREAM];
            self.0.retain(|_, p| p.last_seen_ms >= cut);
            // Ties at the cut may leave a few over; drop any of them.
            let excess = self.0.len().saturating_sub(MAX_PRODUCERS_PER_STREAM);
            let drop: Vec<String> = self
                .0
                .iter()
                .filter(|(_, p)| p.last_seen_ms == cut)
                .map(|(k, _)| k.clone())
                .take(excess)
                .collect();
            for k in drop {
                self.0.remove(&k);
            }
        }
    }
}

#[derive(Debug)]
struct Inner {
    segments: Vec<Segment>,
    producers: Producers,
}

/// One append waiting for its group commit.
struct Job {
    ticket: u64,
    /// The encoded event records.
    records: Vec<u8>,
    /// Position of each event's record in `records`.
    positions: Vec<u64>,
    max_ts: i64,
    producer: Option<ProducerBatch>,
}

/// Appends queued for the next group commit, and answers of finished ones.
#[derive(Default)]
struct Queue {
    next_ticket: u64,
    waiting: Vec<Job>,
    /// An append is writing a group now.
    leader: bool,
    done: HashMap<u64, Result<Appended, StreamError>>,
}

/// Open files by path, each with the tick of its last use.
type OpenFiles = HashMap<PathBuf, (Arc<File>, u64)>;

/// The store-wide LRU of open segment files.
#[derive(Debug)]
struct Handles {
    max: usize,
    /// The use counter, and the files.
    open: Mutex<(u64, OpenFiles)>,
}

impl Handles {
    /// The open file at `path` (read and positional write), opening it if needed and
    /// closing the least recently used one past the cap.
    fn get(&self, path: &Path) -> std::io::Result<Arc<File>> {
        {
            let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
            let (tick, files) = &mut *open;
            *tick += 1;
            if let Some((file, used)) = files.get_mut(path) {
                *used = *tick;
                return Ok(file.clone());
            }
        }
        // Opened without the lock: an open can be slow.
        let file = Arc::new(OpenOptions::new().read(true).write(true).open(path)?);
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        let (tick, files) = &mut *open;
        while files.len() >= self.max.max(1) {
            let Some(oldest) = files
                .iter()
                .min_by_key(|(_, (_, used))| *used)
                .map(|(p, _)| p.clone())
            else {
                break;
            };
            files.remove(&oldest);
        }
        files.insert(path.to_path_buf(), (file.clone(), *tick));
        Ok(file)
    }

    fn forget(&self, path: &Path) {
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        open.1.remove(path);
    }

    fn count(&self) -> usize {
        self.open.lock().unwrap_or_else(|p| p.into_inner()).1.len()
    }
}

/// Reads a shared file from a position (`pread`: no shared cursor).
struct At {
    file: Arc<File>,
    position: u64,
}

impl Read for At {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.file.read_at(buf, self.position)?;
        self.position += n as u64;
        Ok(n)
    }
}

/// One embedded stream. Appends and reads may come from many threads.
pub struct Stream {
    name: String,
    dir: PathBuf,
    config: StreamConfig,
    handles: Arc<Handles>,
    inner: Mutex<Inner>,
    /// Woken (with `inner`) when the stream grows.
    grew: Condvar,
    /// Woken when the stream grows, for async followers.
    grew_async: tokio::sync::Notify,
    /// Called once when the stream grows, for followers that hold no
    /// thread (sources on the engine's worker pool).
    grew_callbacks: Mutex<Vec<Box<dyn FnOnce() + Send>>>,
    /// The end offset, readable without the lock.
    end: AtomicU64,
    queue: Mutex<Queue>,
    /// Woken when a group commit finished.
    committed: Condvar,
    /// Group commits written (one fsync each).
    groups: AtomicU64,
}

impl std::fmt::Debug for Stream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Stream")
            .field("name", &self.name)
            .field("end", &self.end)
            .finish_non_exhaustive()
    }
}

/// Whether the damaged record at the start of `rest` is the last thing in
/// the file (its declared length reaches the end, or the frame is cut).
fn reaches_the_end(rest: &[u8]) -> bool {
    let Some(frame) = rest.get(..FRAME_BYTES) else {
        return true;
    };
    let len = u32::from_le_bytes([frame[0], frame[1], frame[2], frame[3]]) as usize;
    FRAME_BYTES.saturating_add(len) >= rest.len()
}

fn segment_path(dir: &Path, base: u64) -> PathBuf {
    dir.join(format!("{base:020}.log"))
}

/// A copy of an I/O error, for each append of a failed group.
fn copy_io(e: &std::io::Error) -> std::io::Error {
    match e.raw_os_error() {
        Some(code) => std::io::Error::from_raw_os_error(code),
        None => std::io::Error::new(e.kind(), e.to_string()),
    }
}

/// Creates a format-2 segment file holding only its magic, durably (over
/// an empty one a failed roll left).
fn create_segment(path: &Path) -> std::io::Result<()> {
    let mut file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(path)?;
    file.write_all(&SEGMENT_MAGIC)?;
    file.sync_data()?;
    if let Some(dir) = path.parent() {
        File::open(dir)?.sync_all()?;
    }
    Ok(())
}

/// A segment read back at open; `cut` is set when its tail was torn.
struct Scanned {
    segment: Segment,
    cut: Option<u64>,
}

/// Reads segment `path` whole, rebuilding its index and the producers it
/// holds. `last`: the active segment, whose torn tail may be cut.
fn scan(
    name: &str,
    base: u64,
    path: &Path,
    last: bool,
    producers: &mut Producers,
) -> Result<Scanned, StreamError> {
    let io = |what: String| io_error(name, what);
    let bytes = std::fs::read(path).map_err(io(format!("cannot read {}", path.display())))?;
    let format = Format::of(&bytes);
    let mut segment = Segment::new(base, path.to_path_buf(), format);
    let mut at = format.data_start() as usize;
    // The open batch: where its mark is, what the segment was before it,
    // and how many of its events are still to come.
    let mut open_batch: Option<(usize, Segment, Mark, u32)> = None;
    let mut cut = None;
    while at < bytes.len() {
        match record::decode(&bytes[at..], format) {
            Ok((Entry::Event(decoded), size)) => {
                if segment.records.is_multiple_of(INDEX_EVERY) {
                    segment.index.push((segment.end(), at as u64));
                }
                segment.records += 1;
                segment.max_timestamp = segment.max_timestamp.max(decoded.timestamp);
                at += size;
                if let Some((_, _, _, left)) = open_batch.as_mut() {
                    *left -= 1;
                    if *left == 0 {
                        let (_, _, mark, _) = open_batch.take().expect("an open batch");
                        remember(producers, &mark, segment.end());
                    }
                }
            }
            Ok((Entry::Mark(mark), size)) if open_batch.is_none() => {
                at += size;
                if mark.count == 0 {
                    remember(producers, &mark, segment.end());
                } else {
                    let before = Segment {
                        index: segment.index.clone(),
                        path: segment.path.clone(),
                        ..segment
                    };
                    let left = mark.count;
                    open_batch = Some((at - size, before, mark, left));
                }
            }
            // A mark inside a batch: the batch before it lost events.
            Ok((Entry::Mark(_), _)) => {
                return Err(StreamError::Corrupt {
                    stream: name.to_string(),
                    file: path.display().to_string(),
                    position: at as u64,
                });
            }
            // Only a record that runs to the end of the file is a torn
            // append; one with records after it was acknowledged, and is
            // never cut.
            Err(bad) if last && reaches_the_end(&bytes[at..]) => {
                tracing::warn!(
                    stream = name,
                    file = %path.display(),
                    position = at,
                    reason = ?bad,
                    "cutting off a damaged tail (an append that did not complete)"
                );
                cut = Some(at as u64);
                break;
            }
            Err(_) => {
                return Err(StreamError::Corrupt {
                    stream: name.to_string(),
                    file: path.display().to_string(),
                    position: at as u64,
                });
            }
        }
    }
    if let Some((mark_at, before, _, _)) = open_batch {
        if !last {
            return Err(StreamError::Corrupt {
                stream: name.to_string(),
                file: path.display().to_string(),
                position: mark_at as u64,
            });
        }
        // The batch's events are not all there: its append never
        // completed (nor was it acknowledged), so it goes whole.
        tracing::warn!(
            stream = name,
            file = %path.display(),
            position = mark_at,
            "cutting off a torn append"
        );
        segment = before;
        cut = Some(mark_at as u64);
    }
    segment.bytes = cut.unwrap_or(at as u64);
    Ok(Scanned { segment, cut })
}

/// Adds a producer's batch that ends at `end` to the table.
fn remember(producers: &mut Producers, mark: &Mark, end: u64) {
    if let Some(p) = &mark.producer {
        let start = end - u64::from(mark.count);
        producers.record(
            &p.producer,
            Stored {
                sequence: p.sequence,
                offsets: (start, end),
                hash: p.hash,
            },
            mark.at_ms,
        );
    }
}

/// What the leader decided for one append of a group.
enum Plan {
    Write {
        start: u64,
        end: u64,
    },
    Answer(Result<Appended, StreamError>),
    /// A retry of an earlier append of the same group: its offsets, once
    /// that one is durable.
    SameAs {
        start: u64,
        end: u64,
    },
}

impl Stream {
    fn io(&self, what: impl Into<String>) -> impl FnOnce(std::io::Error) -> StreamError + '_ {
        let what = what.into();
        move |source| StreamError::Io {
            stream: self.name.clone(),
            what,
            source,
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock leaves the log itself consistent
        // (writes are cut back on error), so the state is usable.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Opens (or creates) the stream in `dir`, cutting off a torn tail.
    fn open(
        name: &str,
        dir: PathBuf,
        config: StreamConfig,
        handles: Arc<Handles>,
    ) -> Result<Stream, StreamError> {
        let io = |what: String| io_error(name, what);
        std::fs::create_dir_all(&dir).map_err(io(format!("cannot create {}", dir.display())))?;
        let mut bases: Vec<u64> = std::fs::read_dir(&dir)
            .map_err(io(format!("cannot list {}", dir.display())))?
            .filter_map(|e| e.ok())
            .filter_map(|e| {
                let name = e.file_name().into_string().ok()?;
                name.strip_suffix(".log")?.parse().ok()
            })
            .collect();
        bases.sort_unstable();
        let mut segments = Vec::new();
        let mut producers = Producers::default();
        let count = bases.len();
        for (i, base) in bases.into_iter().enumerate() {
            let path = segment_path(&dir, base);
            let scanned = scan(name, base, &path, i + 1 == count, &mut producers)?;
            if let Some(at) = scanned.cut {
                let file = OpenOptions::new()
                    .write(true)
                    .open(&path)
                    .map_err(io(format!("cannot open {}", path.display())))?;
                file.set_len(at)
                    .and_then(|()| file.sync_all())
                    .map_err(io(format!("cannot truncate {}", path.display())))?;
            }
            segments.push(scanned.segment);
        }
        producers.bound(now_ms());
        // Appends go to a format-2 segment: a new stream, or one whose
        // active segment is format 1, starts one at its end.
        let needs_v2 = segments.last().is_none_or(|s| s.format == Format::V1);
        if needs_v2 {
            let base = segments.last().map_or(0, Segment::end);
            let path = segment_path(&dir, base);
            if segments.last().is_some_and(|s| s.base == base) {
                // An empty format-1 segment at that base: replace it.
                std::fs::remove_file(&path)
                    .map_err(io(format!("cannot remove {}", path.display())))?;
                segments.pop();
            }
            create_segment(&path).map_err(io(format!("cannot create {}", path.display())))?;
            segments.push(Segment::new(base, path, Format::V2));
        }
        let end = segments[segments.len() - 1].end();
        Ok(Stream {
            name: name.to_string(),
            dir,
            config,
            handles,
            inner: Mutex::new(Inner {
                segments,
                producers,
            }),
            grew: Condvar::new(),
            grew_async: tokio::sync::Notify::new(),
            grew_callbacks: Mutex::new(Vec::new()),
            end: AtomicU64::new(end),
            queue: Mutex::new(Queue::default()),
            committed: Condvar::new(),
            groups: AtomicU64::new(0),
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn info(&self) -> StreamInfo {
        let inner = self.lock();
        StreamInfo {
            name: self.name.clone(),
            start_offset: inner.segments[0].base,
            end_offset: inner.segments[inner.segments.len() - 1].end(),
            bytes: inner.segments.iter().map(|s| s.bytes).sum(),
            segments: inner.segments.len(),
        }
    }

    /// Group commits this process wrote to the stream (one write and one
    /// fsync each, for one or more appends).
    pub fn group_commits(&self) -> u64 {
        self.groups.load(Ordering::Relaxed)
    }

    /// Offset the next append gets.
    pub fn end_offset(&self) -> u64 {
        self.end.load(Ordering::Acquire)
    }

    /// Appends a batch and returns its offsets once it is on disk.
    pub fn append(&self, batch: &Batch) -> Result<Range<u64>, StreamError> {
        self.append_with(batch, None).map(|a| a.offsets)
    }

    /// Appends a batch of `producer` unless it holds it already: a retry of
    /// a stored batch (same sequence, same hash) answers its offsets and
    /// stores nothing; a sequence used for another batch, or one older
    /// than the batches kept, is a [`StreamError::SequenceConflict`].
    pub fn append_idempotent(
        &self,
        batch: &Batch,
        producer: &ProducerBatch,
    ) -> Result<Appended, StreamError> {
        if !is_safe_name(&producer.producer) || producer.producer.len() > MAX_PRODUCER_ID_BYTES {
            return Err(StreamError::BadProducer(producer.producer.clone()));
        }
        self.append_with(batch, Some(producer.clone()))
    }

    fn append_with(
        &self,
        batch: &Batch,
        producer: Option<ProducerBatch>,
    ) -> Result<Appended, StreamError> {
        let mut records =
            Vec::with_capacity(batch.values.len() + batch.keys.len() + batch.len() * 25);
        let mut positions = Vec::with_capacity(batch.len());
        let mut max_ts = i64::MIN;
        for (index, e) in batch.iter().enumerate() {
            record::check(&e).map_err(|limit| StreamError::Unstorable {
                stream: self.name.clone(),
                index,
                limit,
            })?;
            positions.push(records.len() as u64);
            max_ts = max_ts.max(e.timestamp);
            record::encode(&e, &mut records);
        }
        if batch.is_empty() && producer.is_none() {
            let end = self.end_offset();
            return Ok(Appended {
                offsets: end..end,
                duplicate: false,
            });
        }
        let mut queue = self.queue.lock().unwrap_or_else(|p| p.into_inner());
        let ticket = queue.next_ticket;
        queue.next_ticket += 1;
        queue.waiting.push(Job {
            ticket,
            records,
            positions,
            max_ts,
            producer,
        });
        loop {
            if let Some(answer) = queue.done.remove(&ticket) {
                return answer;
            }
            if !queue.leader {
                // Lead: write everything queued (this append included)
                // with one write and one fsync, without the queue lock, so
                // more appends queue up for the next group meanwhile.
                queue.leader = true;
                let jobs = std::mem::take(&mut queue.waiting);
                drop(queue);
                let answers = self.write_group(jobs);
                queue = self.queue.lock().unwrap_or_else(|p| p.into_inner());
                queue.leader = false;
                queue.done.extend(answers);
                self.committed.notify_all();
                continue;
            }
            queue = self
                .committed
                .wait(queue)
                .unwrap_or_else(|p| p.into_inner());
        }
    }

    /// Writes a group of appends durably: one write, one fsync. Decides
    /// under the lock (offsets, retries, the producer table), writes
    /// without it (only the leader writes, and readers see nothing past the
    /// end until the group is durable), then publishes under it.
    fn write_group(&self, jobs: Vec<Job>) -> Vec<(u64, Result<Appended, StreamError>)> {
        let now = now_ms();
        let mut plans = Vec::with_capacity(jobs.len());
        // Producer batches this group adds.
        let mut added: Vec<(String, Stored)> = Vec::new();
        let mut buf = Vec::new();
        // Position in `buf` of each event written, in offset order.
        let mut event_positions = Vec::new();
        let mut max_ts = i64::MIN;
        let (start, target) = {
            let inner = self.lock();
            let active = &inner.segments[inner.segments.len() - 1];
            let start = active.end();
            let mut end = start;
            for job in &jobs {
                let count = job.positions.len() as u64;
                if let Some(p) = &job.producer {
                    match self.check_producer(&inner.producers, &added, p) {
                        Some(plan) => {
                            plans.push(plan);
                            continue;
                        }
                        None => added.push((
                            p.producer.clone(),
                            Stored {
                                sequence: p.sequence,
                                offsets: (end, end + count),
                                hash: p.hash,
                            },
                        )),
                    }
                }
                record::encode_mark(
                    &Mark {
                        count: count as u32,
                        at_ms: now,
                        producer: job.producer.clone(),
                    },
                    &mut buf,
                );
                let at = buf.len() as u64;
                event_positions.extend(job.positions.iter().map(|p| at + p));
                buf.extend_from_slice(&job.records);
                max_ts = max_ts.max(job.max_ts);
                plans.push(Plan::Write {
                    start: end,
                    end: end + count,
                });
                end += count;
            }
            let roll =
                active.records > 0 && active.bytes + buf.len() as u64 > self.config.segment_bytes;
            let target = (!roll).then(|| (active.path.clone(), active.bytes));
            (start, target)
        };
        let written = if buf.is_empty() {
            Ok(None)
        } else {
            self.write_durably(start, target, &buf)
        };
        let grown = written.is_ok() && !event_positions.is_empty();
        if let Ok(rolled) = &written {
            let mut inner = self.lock();
            if let Some((path, _)) = rolled {
                inner
                    .segments
                    .push(Segment::new(start, path.clone(), Format::V2));
            }
            let segment = inner.segments.last_mut().expect("a stream has a segment");
            for (i, pos) in event_positions.iter().enumerate() {
                if (segment.records + i as u64).is_multiple_of(INDEX_EVERY) {
                    segment
                        .index
                        .push((segment.end() + i as u64, segment.bytes + pos));
                }
            }
            segment.records += event_positions.len() as u64;
            segment.bytes += buf.len() as u64;
            segment.max_timestamp = segment.max_timestamp.max(max_ts);
            let end = segment.end();
            for (producer, stored) in added {
                inner.producers.record(&producer, stored, now);
            }
            inner.producers.bound(now);
            if let Err(e) = self.enforce_retention(&mut inner) {
                // The append is durable; a segment retention could not
                // drop goes at a later append.
                tracing::warn!(stream = %self.name, error = %e, "retention could not drop a segment");
            }
            self.end.store(end, Ordering::Release);
        }
        if grown {
            self.grew.notify_all();
            self.grew_async.notify_waiters();
            let callbacks = std::mem::take(
                &mut *self
                    .grew_callbacks
                    .lock()
                    .unwrap_or_else(|p| p.into_inner()),
            );
            for wake in callbacks {
                wake();
            }
        }
        let failed = |source: &std::io::Error, what: &str| StreamError::Io {
            stream: self.name.clone(),
            what: what.to_string(),
            source: copy_io(source),
        };
        let mut answers: Vec<Result<Appended, StreamError>> = Vec::with_capacity(plans.len());
        for plan in plans {
            let answer = match plan {
                Plan::Answer(a) => a,
                Plan::Write { start, end } | Plan::SameAs { start, end } => match &written {
                    Ok(_) => Ok(Appended {
                        offsets: start..end,
                        duplicate: matches!(plan, Plan::SameAs { .. }),
                    }),
                    Err((what, source)) => Err(failed(source, what)),
                },
            };
            answers.push(answer);
        }
        jobs.into_iter()
            .map(|job| job.ticket)
            .zip(answers)
            .collect()
    }

    /// What to answer a producer's batch without writing it: a retry of a
    /// stored batch (kept, or earlier in this group), or a conflict. `None`:
    /// write it.
    fn check_producer(
        &self,
        producers: &Producers,
        added: &[(String, Stored)],
        p: &ProducerBatch,
    ) -> Option<Plan> {
        let kept = producers
            .0
            .get(&p.producer)
            .into_iter()
            .flat_map(|known| known.batches.iter().map(|s| (false, *s)));
        let earlier = added
            .iter()
            .filter(|(id, _)| *id == p.producer)
            .map(|(_, s)| (true, *s));
        let history: Vec<(bool, Stored)> = kept.chain(earlier).collect();
        let last = history.iter().map(|(_, s)| s.sequence).max();
        let conflict = |why| {
            Some(Plan::Answer(Err(StreamError::SequenceConflict {
                stream: self.name.clone(),
                producer: p.producer.clone(),
                sequence: p.sequence,
                last: last.unwrap_or(0),
                why,
            })))
        };
        if let Some((in_group, s)) = history.iter().find(|(_, s)| s.sequence == p.sequence) {
            let (start, end) = s.offsets;
            return if s.hash != p.hash {
                conflict("was stored before with different events")
            } else if *in_group {
                Some(Plan::SameAs { start, end })
            } else {
                Some(Plan::Answer(Ok(Appended {
                    offsets: start..end,
                    duplicate: true,
                })))
            };
        }
        if last.is_some_and(|last| p.sequence < last) {
            return conflict(
                "is below the producer's last stored sequence and no longer kept (only the last 5 are)",
            );
        }
        None
    }

    /// Writes `buf` (records from offset `start`) at the end of the active
    /// segment (`target`: its path and length), or of a new segment when
    /// `target` is `None`, and syncs it; on failure, cuts the file back.
    /// Returns the new segment, if one was started.
    fn write_durably(
        &self,
        start: u64,
        target: Option<(PathBuf, u64)>,
        buf: &[u8],
    ) -> Result<Option<(PathBuf, u64)>, (String, std::io::Error)> {
        let (path, at, rolled) = match target {
            Some((path, at)) => (path, at, false),
            None => {
                let path = segment_path(&self.dir, start);
                create_segment(&path)
                    .map_err(|e| (format!("cannot create {}", path.display()), e))?;
                (path, SEGMENT_MAGIC.len() as u64, true)
            }
        };
        let what = || format!("cannot append to {}", path.display());
        let file = self.handles.get(&path).map_err(|e| (what(), e))?;
        if let Err(source) = file.write_all_at(buf, at).and_then(|()| file.sync_data()) {
            // Cut a partial write back so the log stays whole.
            let _ = file.set_len(at);
            return Err((what(), source));
        }
        self.groups.fetch_add(1, Ordering::Relaxed);
        Ok(rolled.then_some((path, at)))
    }

    fn enforce_retention(&self, inner: &mut Inner) -> Result<(), StreamError> {
        let now = weir_types::now_ms();
        while inner.segments.len() > 1 {
            let total: u64 = inner.segments.iter().map(|s| s.bytes).sum();
            let oldest = &inner.segments[0];
            let too_big = self.config.max_bytes.is_some_and(|max| total > max);
            let too_old = self
                .config
                .max_age_ms
                .is_some_and(|age| oldest.max_timestamp < now - age);
            if !too_big && !too_old {
                break;
            }
            self.handles.forget(&oldest.path);
            std::fs::remove_file(&oldest.path)
                .map_err(self.io(format!("cannot remove {}", oldest.path.display())))?;
            inner.segments.remove(0);
        }
        Ok(())
    }

    /// Up to `max` events from offset `from`, and the offset after them.
    /// Reading at the end gives nothing; before the start or past the end
    /// is an error.
    pub fn read(&self, from: u64, max: usize) -> Result<(Vec<Event>, u64), StreamError> {
        self.read_capped(from, max, usize::MAX)
    }

    /// [`Stream::read`] that also stops once the events read take
    /// `max_bytes` stored (always at least one event, so a reader moves on).
    pub fn read_capped(
        &self,
        from: u64,
        max: usize,
        max_bytes: usize,
    ) -> Result<(Vec<Event>, u64), StreamError> {
        let mut events = Vec::new();
        let next = self.read_each(from, max, max_bytes, |d| {
            events.push(Event {
                key: d.key.map(<[u8]>::to_vec),
                value: d.value.to_vec(),
                timestamp: d.timestamp,
                headers: d.headers,
            })
        })?;
        Ok((events, next))
    }

    /// [`Stream::read_capped`] into `batch`'s columns, with no [`Event`]
    /// per record (what the API's reads format); the offset after the
    /// last event read.
    pub fn read_batch(
        &self,
        from: u64,
        max: usize,
        max_bytes: usize,
        batch: &mut Batch,
    ) -> Result<u64, StreamError> {
        self.read_each(from, max, max_bytes, |d| {
            let index = batch.len() as u32;
            batch
                .headers
                .extend(d.headers.into_iter().map(|(n, v)| (index, n, v)));
            batch.push(d.key, d.value, d.timestamp);
        })
    }

    /// Hands each event from `from` on to `each`, up to `max` events or
    /// `max_bytes` (at least one); the offset after the last one.
    fn read_each(
        &self,
        from: u64,
        max: usize,
        max_bytes: usize,
        mut each: impl FnMut(record::Decoded<'_>),
    ) -> Result<u64, StreamError> {
        // What to read, under the lock; the reading itself, without it.
        let plan: Vec<(PathBuf, Format, u64, u64, u64)> = {
            let inner = self.lock();
            let start = inner.segments[0].base;
            let end = inner.segments[inner.segments.len() - 1].end();
            if from < start || from > end {
                return Err(StreamError::OffsetOutOfRange {
                    stream: self.name.clone(),
                    offset: from,
                    start,
                    end,
                });
            }
            inner
                .segments
                .iter()
                .filter(|s| s.end() > from)
                .map(|s| {
                    let (at_offset, pos) = s
                        .index
                        .iter()
                        .rev()
                        .find(|(o, _)| *o <= from)
                        .copied()
                        .unwrap_or((s.base, s.format.data_start()));
                    (s.path.clone(), s.format, at_offset, pos, s.end())
                })
                .collect()
        };
        let mut bytes_read = 0usize;
        let mut read = 0usize;
        let mut offset = from;
        for (path, format, mut at_offset, pos, segment_end) in plan {
            if read >= max || bytes_read >= max_bytes {
                break;
            }
            let file = match self.handles.get(&path) {
                Ok(file) => file,
                // Retention dropped the segment since the read was planned:
                // the offset is before the start now.
                Err(e) if e.kind() == std::io::ErrorKind::NotFound && read == 0 => {
                    let info = self.info();
                    return Err(StreamError::OffsetOutOfRange {
                        stream: self.name.clone(),
                        offset: from,
                        start: info.start_offset,
                        end: info.end_offset,
                    });
                }
                Err(e) => {
                    return Err(self.io(format!("cannot open {}", path.display()))(e));
                }
            };
            let mut reader = BufReader::with_capacity(
                256 << 10,
                At {
                    file,
                    position: pos,
                },
            );
            let mut buf = Vec::new();
            let mut position = pos;
            // Built once per segment: the message of a failed read.
            let cannot_read = format!("cannot read {}", path.display());
            while at_offset < segment_end && read < max && bytes_read < max_bytes {
                let record_at = position;
                let corrupt = || StreamError::Corrupt {
                    stream: self.name.clone(),
                    file: path.display().to_string(),
                    position: record_at,
                };
                buf.resize(FRAME_BYTES, 0);
                reader
                    .read_exact(&mut buf)
                    .map_err(|e| self.io(cannot_read.as_str())(e))?;
                let len = u32::from_le_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize;
                if len > MAX_RECORD_BYTES {
                    return Err(corrupt());
                }
                buf.resize(FRAME_BYTES + len, 0);
                reader
                    .read_exact(&mut buf[FRAME_BYTES..])
                    .map_err(|e| self.io(cannot_read.as_str())(e))?;
                position += buf.len() as u64;
                let (entry, _) = record::decode(&buf, format).map_err(|_: Bad| corrupt())?;
                let Entry::Event(d) = entry else {
                    continue;
                };
                if at_offset >= offset {
                    bytes_read += buf.len();
                    read += 1;
                    each(d);
                    offset = at_offset + 1;
                }
                at_offset += 1;
            }
        }
        Ok(offset)
    }

    /// Waits until the stream holds an event at `offset` (or `timeout`
    /// passes); returns whether it does. Woken by the append, not polled.
    pub fn wait_for(&self, offset: u64, timeout: Duration) -> bool {
        let inner = self.lock();
        let (_inner, _) = self
            .grew
            .wait_timeout_while(inner, timeout, |_| self.end_offset() <= offset)
            .unwrap_or_else(|p| p.into_inner());
        self.end_offset() > offset
    }

    /// Calls `wake` once the stream holds an event at `offset`: now when it
    /// does already, else from the append that stores it. For followers
    /// that must not hold a thread waiting (a source on the engine's
    /// worker pool).
    pub fn wake_when_past(&self, offset: u64, wake: impl FnOnce() + Send + 'static) {
        let mut callbacks = self
            .grew_callbacks
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        // Checked under the lock an append takes after it moved the end:
        // either this sees the new end or that append sees `wake`.
        if self.end_offset() > offset {
            drop(callbacks);
            wake();
            return;
        }
        callbacks.push(Box::new(wake));
    }

    /// Waits (async) until the stream holds an event at `offset`; woken by
    /// the append that stores it.
    pub async fn grown_past(&self, offset: u64) {
        loop {
            let notified = self.grew_async.notified();
            tokio::pin!(notified);
            // Registered before the check, so an append in between wakes it.
            notified.as_mut().enable();
            if self.end_offset() > offset {
                return;
            }
            notified.await;
        }
    }

    /// The events from `from` to the end the stream has now, batch by
    /// batch: a bounded source.
    pub fn read_to_end(
        self: Arc<Self>,
        from: u64,
        batch: usize,
    ) -> impl Iterator<Item = Result<Event, String>> + Send {
        let end = self.end_offset();
        let mut next = from;
        let mut pending = std::collections::VecDeque::new();
        std::iter::from_fn(move || {
            loop {
                if let Some(e) = pending.pop_front() {
                    return Some(Ok(e));
                }
                if next >= end {
                    return None;
                }
                let want = (end - next).min(batch.max(1) as u64) as usize;
                match self.read(next, want) {
                    Ok((events, after)) if !events.is_empty() => {
                        next = after;
                        pending.extend(events);
                    }
                    Ok(_) => return None,
                    Err(e) => {
                        next = end;
                        return Some(Err(e.to_string()));
                    }
                }
            }
        })
    }
}

/// The embedded streams of one data directory.
#[derive(Debug)]
pub struct StreamStore {
    dir: PathBuf,
    config: StreamConfig,
    handles: Arc<Handles>,
    open: Mutex<HashMap<String, Arc<Stream>>>,
}

impl StreamStore {
    /// The streams under `<data_dir>/streams`.
    pub fn open(data_dir: &Path, config: StreamConfig) -> Result<StreamStore, StreamError> {
        let dir = data_dir.join("streams");
        std::fs::create_dir_all(&dir).map_err(|source| StreamError::Io {
            stream: String::new(),
            what: format!("cannot create {}", dir.display()),
            source,
        })?;
        Ok(StreamStore {
            dir,
            config,
            handles: Arc::new(Handles {
                max: config.max_open_files,
                open: Mutex::new((0, HashMap::new())),
            }),
            open: Mutex::new(HashMap::new()),
        })
    }

    /// The stream `name`, created empty if it does not exist.
    pub fn stream(&self, name: &str) -> Result<Arc<Stream>, StreamError> {
        if !is_safe_name(name) {
            return Err(StreamError::BadName(name.to_string()));
        }
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(s) = open.get(name) {
            return Ok(s.clone());
        }
        let stream = Arc::new(Stream::open(
            name,
            self.dir.join(name),
            self.config,
            self.handles.clone(),
        )?);
        open.insert(name.to_string(), stream.clone());
        Ok(stream)
    }

    /// The stream `name` if it exists; never creates one (a read of a
    /// missing stream must leave nothing behind).
    pub fn existing(&self, name: &str) -> Result<Option<Arc<Stream>>, StreamError> {
        if !is_safe_name(name) {
            return Err(StreamError::BadName(name.to_string()));
        }
        let known = self
            .open
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .contains_key(name);
        if known || self.dir.join(name).is_dir() {
            self.stream(name).map(Some)
        } else {
            Ok(None)
        }
    }

    /// Segment files open now, over every stream (at most
    /// [`StreamConfig::max_open_files`]).
    pub fn open_files(&self) -> usize {
        self.handles.count()
    }

    /// Every stream there is, by name. A stream this process has not used
    /// yet is read once, to learn its end; no file stays open.
    pub fn list(&self) -> Result<Vec<StreamInfo>, StreamError> {
        let mut names: Vec<String> = std::fs::read_dir(&self.dir)
            .map_err(|source| StreamError::Io {
                stream: String::new(),
                what: format!("cannot list {}", self.dir.display()),
                source,
            })?
            .filter_map(|e| e.ok()?.file_name().into_string().ok())
            .filter(|n| is_safe_name(n))
            .collect();
        names.sort();
        names.iter().map(|n| Ok(self.stream(n)?.info())).collect()
    }
}

/// The `map_err` of an I/O call on stream `stream` doing `what`.
fn io_error(stream: &str, what: String) -> impl FnOnce(std::io::Error) -> StreamError {
    let stream = stream.to_string();
    move |source| StreamError::Io {
        stream,
        what,
        source,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Where each record of a format-2 segment file starts.
    fn record_starts(bytes: &[u8]) -> Vec<usize> {
        let mut at = SEGMENT_MAGIC.len();
        let mut starts = Vec::new();
        while let Ok((_, size)) = record::frame(&bytes[at..]) {
            starts.push(at);
            at += size;
        }
        starts
    }

    fn producer(id: &str, sequence: u64, hash: u64) -> ProducerBatch {
        ProducerBatch {
            producer: id.into(),
            sequence,
            hash,
        }
    }

    fn values(events: &[Event]) -> Vec<String> {
        events
            .iter()
            .map(|e| String::from_utf8_lossy(&e.value).into_owned())
            .collect()
    }

    fn batch(from: i64, n: i64) -> Batch {
        let mut b = Batch::default();
        for i in from..from + n {
            b.push(
                Some(format!("k{i}").as_bytes()),
                format!("{i}").as_bytes(),
                i,
            );
        }
        b
    }

    #[test]
    fn appends_reads_and_reopens() {
        let dir = tempfile::tempdir().unwrap();
        let config = StreamConfig {
            segment_bytes: 4096,
            ..StreamConfig::default()
        };
        {
            let store = StreamStore::open(dir.path(), config).unwrap();
            let s = store.stream("events").unwrap();
            assert_eq!(s.append(&batch(0, 500)).unwrap(), 0..500);
            for i in 0..7 {
                let from = 500 + i * 100;
                assert_eq!(
                    s.append(&batch(from, 100)).unwrap(),
                    from as u64..from as u64 + 100
                );
            }
            // A batch never splits; a full segment is closed.
            assert!(s.info().segments > 3, "{:?}", s.info());
            let (events, next) = s.read(990, 20).unwrap();
            assert_eq!(next, 1010);
            assert_eq!(events[0].value, b"990");
            assert_eq!(events[19].key.as_deref(), Some(&b"k1009"[..]));
        }
        // Everything is still there after reopening.
        let store = StreamStore::open(dir.path(), config).unwrap();
        let s = store.stream("events").unwrap();
        assert_eq!(s.end_offset(), 1200);
        let all: Vec<Event> = s.clone().read_to_end(0, 100).map(Result::unwrap).collect();
        assert_eq!(all.len(), 1200);
        assert!(all.iter().enumerate().all(|(i, e)| e.timestamp == i as i64));
        assert!(matches!(
            s.read(1201, 1),
            Err(StreamError::OffsetOutOfRange { end: 1200, .. })
        ));
        assert!(s.read(1200, 10).unwrap().0.is_empty());
        assert_eq!(store.list().unwrap().len(), 1);
        assert!(matches!(store.stream("../x"), Err(StreamError::BadName(_))));
    }

    #[test]
    fn a_torn_tail_is_cut_off_at_open() {
        let dir = tempfile::tempdir().unwrap();
        let path;
        {
            let store = StreamStore::open(dir.path(), StreamConfig::default()).unwrap();
            let s = store.stream("t").unwrap();
            s.append(&batch(0, 10)).unwrap();
            path = segment_path(&dir.path().join("streams/t"), 0);
        }
        // A crash in the middle of an append leaves half a record.
        let mut bytes = std::fs::read(&path).unwrap();
        let whole = bytes.len();
        bytes.extend_from_slice(&[9, 0, 0, 0, 1, 2]);
        std::fs::write(&path, &bytes).unwrap();
        let store = StreamStore::open(dir.path(), StreamConfig::default()).unwrap();
        let s = store.stream("t").unwrap();
        assert_eq!(s.end_offset(), 10);
        assert_eq!(std::fs::metadata(&path).unwrap().len() as usize, whole);
        assert_eq!(s.append(&batch(10, 1)).unwrap(), 10..11);
        assert_eq!(s.read(10, 1).unwrap().0[0].value, b"10");
    }

    #[test]
    fn an_event_the_format_cannot_hold_is_refused_before_the_append() {
        let dir = tempfile::tempdir().unwrap();
        let store = StreamStore::open(dir.path(), StreamConfig::default()).unwrap();
        let s = store.stream("t").unwrap();
        s.append(&batch(0, 2)).unwrap();
        let mut bad = batch(2, 2);
        bad.headers.push((1, "h".repeat(65_536), vec![1]));
        let err = s.append(&bad).unwrap_err();
        assert!(
            matches!(err, StreamError::Unstorable { index: 1, .. }),
            "{err}"
        );
        assert!(err.to_string().contains("65535 bytes"), "{err}");
        assert_eq!(s.end_offset(), 2);
        assert_eq!(s.append(&batch(2, 2)).unwrap(), 2..4);
        drop((s, store));
        // Everything acknowledged reads back after a reopen.
        let store = StreamStore::open(dir.path(), StreamConfig::default()).unwrap();
        let (events, next) = store.stream("t").unwrap().read(0, 10).unwrap();
        assert_eq!(next, 4);
        assert_eq!(events[3].value, b"3");
    }

    #[test]
    fn a_damaged_record_with_records_after_it_is_never_cut() {
        let dir = tempfile::tempdir().unwrap();
        let path = segment_path(&dir.path().join("streams/t"), 0);
        {
            let store = StreamStore::open(dir.path(), StreamConfig::default()).unwrap();
            store.stream("t").unwrap().append(&batch(0, 3)).unwrap();
        }
        // Damage the middle event's payload: the third was acknowledged.
        let mut bytes = std::fs::read(&path).unwrap();
        let starts = record_starts(&bytes);
        assert_eq!(starts.len(), 4, "a mark and three events");
        bytes[starts[2] + FRAME_BYTES + 1] ^= 0xff;
        std::fs::write(&path, &bytes).unwrap();
        let store = StreamStore::open(dir.path(), StreamConfig::default()).unwrap();
        let err = store.stream("t").unwrap_err();
        assert!(matches!(err, StreamError::Corrupt { .. }), "{err}");
        assert_eq!(std::fs::read(&path).unwrap(), bytes, "the file was cut");
    }

    #[test]
    fn a_read_stops_at_its_byte_cap_but_always_moves_on() {
        let dir = tempfile::tempdir().unwrap();
        let store = StreamStore::open(dir.path(), StreamConfig::default()).unwrap();
        let s = store.stream("t").unwrap();
        let mut b = Batch::default();
        for i in 0..10u8 {
            b.push(None, &vec![i; 1000], 0);
        }
        s.append(&b).unwrap();
        let (events, next) = s.read_capped(0, 10, 2500).unwrap();
        assert_eq!((events.len(), next), (3, 3));
        let (events, next) = s.read_capped(3, 10, 1).unwrap();
        assert_eq!((events.len(), next), (1, 4));
        assert_eq!(events[0].value, vec![3u8; 1000]);
        assert_eq!(s.read(0, 10).unwrap().0.len(), 10);
    }

    #[test]
    fn a_batch_read_holds_what_an_event_read_does_headers_and_caps_included() {
        let dir = tempfile::tempdir().unwrap();
        let store = StreamStore::open(dir.path(), StreamConfig::default()).unwrap();
        let s = store.stream("t").unwrap();
        let mut b = Batch::default();
        for i in 0..6u8 {
            let key = [b'k', i];
            b.push(
                (i % 2 == 0).then_some(&key[..]),
                &vec![i; 600],
                i64::from(i),
            );
            if i == 3 {
                b.headers.push((3, "h".into(), b"v".to_vec()));
            }
        }
        s.append(&b).unwrap();
        let (events, next) = s.read_capped(1, 10, 2000).unwrap();
        let mut batch = Batch::default();
        assert_eq!(s.read_batch(1, 10, 2000, &mut batch).unwrap(), next);
        assert_eq!(
            batch.len(),
            4,
            "the byte cap stops the read before offset 5"
        );
        let read: Vec<Event> = batch.iter().map(|e| e.to_event()).collect();
        assert_eq!(read, events);
        assert_eq!(read[2].headers, vec![("h".to_string(), b"v".to_vec())]);
    }

    #[test]
    fn looking_up_a_missing_stream_creates_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let store = StreamStore::open(dir.path(), StreamConfig::default()).unwrap();
        assert!(store.existing("nope").unwrap().is_none());
        assert!(!dir.path().join("streams/nope").exists());
        assert!(store.list().unwrap().is_empty());
        store.stream("yes").unwrap();
        assert!(store.existing("yes").unwrap().is_some());
    }

    #[test]
    fn retention_drops_old_segments() {
        let dir = tempfile::tempdir().unwrap();
        let store = StreamStore::open(
            dir.path(),
            StreamConfig {
                segment_bytes: 2048,
                max_bytes: Some(8192),
                max_age_ms: None,
                ..StreamConfig::default()
            },
        )
        .unwrap();
        let s = store.stream("r").unwrap();
        for i in 0..20 {
            s.append(&batch(i * 100, 100)).unwrap();
        }
        let info = s.info();
        assert!(info.bytes <= 8192 + 2048, "{info:?}");
        assert!(info.start_offset > 0);
        assert_eq!(info.end_offset, 2000);
        assert!(matches!(
            s.read(0, 1),
            Err(StreamError::OffsetOutOfRange { .. })
        ));
        let (events, _) = s.read(info.start_offset, 5).unwrap();
        assert_eq!(events[0].timestamp, info.start_offset as i64);
    }

    #[test]
    fn a_reader_waits_for_the_tail() {
        let dir = tempfile::tempdir().unwrap();
        let store = StreamStore::open(dir.path(), StreamConfig::default()).unwrap();
        let s = store.stream("tail").unwrap();
        assert!(!s.wait_for(0, Duration::from_millis(10)));
        let writer = s.clone();
        let t = std::thread::spawn(move || writer.append(&batch(0, 3)).unwrap());
        assert!(s.wait_for(0, Duration::from_secs(10)));
        t.join().unwrap();
        assert_eq!(s.read(0, 10).unwrap().0.len(), 3);
    }

    #[test]
    fn a_wake_waits_for_the_append_that_passes_its_offset_and_fires_once() {
        let dir = tempfile::tempdir().unwrap();
        let store = StreamStore::open(dir.path(), StreamConfig::default()).unwrap();
        let s = store.stream("tail").unwrap();
        let woken = Arc::new(AtomicU64::new(0));
        let w = woken.clone();
        s.wake_when_past(0, move || {
            w.fetch_add(1, Ordering::SeqCst);
        });
        assert_eq!(woken.load(Ordering::SeqCst), 0, "nothing appended yet");
        s.append(&batch(0, 2)).unwrap();
        assert_eq!(woken.load(Ordering::SeqCst), 1, "the append woke it");
        s.append(&batch(2, 1)).unwrap();
        assert_eq!(woken.load(Ordering::SeqCst), 1, "once only");
        let w = woken.clone();
        s.wake_when_past(1, move || {
            w.fetch_add(1, Ordering::SeqCst);
        });
        assert_eq!(woken.load(Ordering::SeqCst), 2, "already past: at once");
    }

    #[test]
    fn a_format_1_log_is_read_and_appends_go_to_a_format_2_segment() {
        let dir = tempfile::tempdir().unwrap();
        let stream_dir = dir.path().join("streams/old");
        std::fs::create_dir_all(&stream_dir).unwrap();
        // Two segments as the format-1 code wrote them: no magic, no marks.
        for (base, range) in [(0u64, 0..3i64), (3, 3..5)] {
            let mut bytes = Vec::new();
            for e in batch(range.start, range.end - range.start).iter() {
                record::encode_v1(&e, &mut bytes);
            }
            std::fs::write(segment_path(&stream_dir, base), bytes).unwrap();
        }
        {
            let store = StreamStore::open(dir.path(), StreamConfig::default()).unwrap();
            let s = store.stream("old").unwrap();
            assert_eq!(s.end_offset(), 5);
            assert_eq!(values(&s.read(1, 10).unwrap().0), ["1", "2", "3", "4"]);
            assert_eq!(s.append(&batch(5, 2)).unwrap(), 5..7);
            assert_eq!(values(&s.read(4, 10).unwrap().0), ["4", "5", "6"]);
        }
        // The new events went to a format-2 segment; the old ones are
        // untouched; all read back after a reopen.
        let new_segment = std::fs::read(segment_path(&stream_dir, 5)).unwrap();
        assert!(new_segment.starts_with(&SEGMENT_MAGIC));
        let old_segment = std::fs::read(segment_path(&stream_dir, 3)).unwrap();
        assert!(!old_segment.starts_with(&SEGMENT_MAGIC) && record::frame(&old_segment).is_ok());
        let store = StreamStore::open(dir.path(), StreamConfig::default()).unwrap();
        let s = store.stream("old").unwrap();
        let all: Vec<Event> = s.clone().read_to_end(0, 2).map(Result::unwrap).collect();
        assert_eq!(values(&all), ["0", "1", "2", "3", "4", "5", "6"]);
        assert_eq!(s.info().segments, 3);
    }

    #[test]
    fn concurrent_appends_get_disjoint_offsets_and_all_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let store = StreamStore::open(dir.path(), StreamConfig::default()).unwrap();
        let s = store.stream("many").unwrap();
        let threads: Vec<_> = (0..8)
            .map(|t| {
                let s = s.clone();
                std::thread::spawn(move || {
                    (0..25)
                        .map(|i| {
                            let first = t * 1000 + i * 3;
                            (first, s.append(&batch(first, 3)).unwrap())
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        let mut got: Vec<(i64, Range<u64>)> = threads
            .into_iter()
            .flat_map(|t| t.join().unwrap())
            .collect();
        got.sort_by_key(|(_, r)| r.start);
        // Every append got three offsets of its own, with nothing between.
        for (k, (_, range)) in got.iter().enumerate() {
            assert_eq!(*range, k as u64 * 3..k as u64 * 3 + 3);
        }
        drop(s);
        drop(store);
        let store = StreamStore::open(dir.path(), StreamConfig::default()).unwrap();
        let s = store.stream("many").unwrap();
        for (first, range) in got {
            let (events, _) = s.read(range.start, 3).unwrap();
            let want: Vec<String> = (first..first + 3).map(|i| i.to_string()).collect();
            assert_eq!(values(&events), want);
        }
    }

    #[test]
    fn a_retried_batch_answers_its_offsets_and_stores_nothing() {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = StreamStore::open(dir.path(), StreamConfig::default()).unwrap();
            let s = store.stream("p").unwrap();
            let first = s
                .append_idempotent(&batch(0, 2), &producer("a", 10, 1))
                .unwrap();
            assert_eq!((first.offsets.clone(), first.duplicate), (0..2, false));
            s.append(&batch(2, 1)).unwrap();
            let again = s
                .append_idempotent(&batch(0, 2), &producer("a", 10, 1))
                .unwrap();
            assert_eq!((again.offsets, again.duplicate), (0..2, true));
            assert_eq!(s.end_offset(), 3);
            // Another producer may use the same sequence.
            let other = s
                .append_idempotent(&batch(3, 1), &producer("b", 10, 1))
                .unwrap();
            assert_eq!(other.offsets, 3..4);
        }
        // The producer table is durable: a retry after a restart is known.
        let store = StreamStore::open(dir.path(), StreamConfig::default()).unwrap();
        let s = store.stream("p").unwrap();
        let again = s
            .append_idempotent(&batch(0, 2), &producer("a", 10, 1))
            .unwrap();
        assert_eq!((again.offsets, again.duplicate), (0..2, true));
        assert_eq!(s.end_offset(), 4);
        assert_eq!(values(&s.read(0, 10).unwrap().0), ["0", "1", "2", "3"]);
    }

    #[test]
    fn a_sequence_reused_for_other_events_or_too_old_is_a_conflict() {
        let dir = tempfile::tempdir().unwrap();
        let store = StreamStore::open(dir.path(), StreamConfig::default()).unwrap();
        let s = store.stream("p").unwrap();
        for seq in 1..=7 {
            s.append_idempotent(&batch(seq as i64, 1), &producer("a", seq, seq))
                .unwrap();
        }
        let err = s
            .append_idempotent(&batch(0, 1), &producer("a", 7, 99))
            .unwrap_err();
        assert!(
            matches!(
                &err,
                StreamError::SequenceConflict {
                    sequence: 7,
                    last: 7,
                    ..
                }
            ),
            "{err}"
        );
        assert!(err.to_string().contains("different events"), "{err}");
        // Sequences 1 and 2 are past the 5 kept: not answerable any more.
        let err = s
            .append_idempotent(&batch(1, 1), &producer("a", 1, 1))
            .unwrap_err();
        assert!(err.to_string().contains("no longer kept"), "{err}");
        // Sequence 3 is kept: a retry.
        let kept = s
            .append_idempotent(&batch(3, 1), &producer("a", 3, 3))
            .unwrap();
        assert!(kept.duplicate);
        assert_eq!(s.end_offset(), 7, "nothing of a refused batch was stored");
        assert!(matches!(
            s.append_idempotent(&batch(0, 1), &producer("../x", 8, 1)),
            Err(StreamError::BadProducer(_))
        ));
        // A retry within one group commit waits for its first copy.
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let s = s.clone();
                std::thread::spawn(move || {
                    s.append_idempotent(&batch(50, 2), &producer("c", 1, 5))
                        .unwrap()
                })
            })
            .collect();
        let answers: Vec<Appended> = threads.into_iter().map(|t| t.join().unwrap()).collect();
        assert!(answers.iter().all(|a| a.offsets == (7..9)), "{answers:?}");
        assert_eq!(answers.iter().filter(|a| !a.duplicate).count(), 1);
        assert_eq!(s.end_offset(), 9);
    }

    #[test]
    fn a_torn_append_is_cut_whole_and_its_producer_batch_forgotten() {
        let dir = tempfile::tempdir().unwrap();
        let path = segment_path(&dir.path().join("streams/t"), 0);
        let whole;
        {
            let store = StreamStore::open(dir.path(), StreamConfig::default()).unwrap();
            let s = store.stream("t").unwrap();
            s.append_idempotent(&batch(0, 2), &producer("a", 1, 1))
                .unwrap();
            whole = std::fs::metadata(&path).unwrap().len() as usize;
            s.append_idempotent(&batch(2, 3), &producer("a", 2, 2))
                .unwrap();
        }
        // A crash during the second append: its mark and first event
        // reached the disk, the rest did not.
        let bytes = std::fs::read(&path).unwrap();
        let starts = record_starts(&bytes);
        std::fs::write(&path, &bytes[..starts[5] + 3]).unwrap();
        let store = StreamStore::open(dir.path(), StreamConfig::default()).unwrap();
        let s = store.stream("t").unwrap();
        assert_eq!(s.end_offset(), 2);
        assert_eq!(std::fs::metadata(&path).unwrap().len() as usize, whole);
        // The client never got an answer and retries: stored now, once.
        let retry = s
            .append_idempotent(&batch(2, 3), &producer("a", 2, 2))
            .unwrap();
        assert_eq!((retry.offsets, retry.duplicate), (2..5, false));
        assert_eq!(values(&s.read(0, 10).unwrap().0), ["0", "1", "2", "3", "4"]);
    }

    #[test]
    fn open_files_stay_under_the_cap_over_many_streams() {
        let dir = tempfile::tempdir().unwrap();
        let config = StreamConfig {
            segment_bytes: 256,
            max_open_files: 4,
            ..StreamConfig::default()
        };
        let store = StreamStore::open(dir.path(), config).unwrap();
        for i in 0..20 {
            let s = store.stream(&format!("s{i}")).unwrap();
            for k in 0..5 {
                s.append(&batch(k * 4, 4)).unwrap();
            }
            assert_eq!(s.read(0, 100).unwrap().0.len(), 20);
            assert!(store.open_files() <= 4, "{}", store.open_files());
        }
        assert!(store.stream("s0").unwrap().info().segments > 2);
        assert_eq!(store.list().unwrap().len(), 20);
        assert!(store.open_files() <= 4);
        // Every stream still reads whole through the evicted handles.
        for i in 0..20 {
            let s = store.stream(&format!("s{i}")).unwrap();
            assert_eq!(s.read(0, 100).unwrap().0.len(), 20);
        }
    }

    #[test]
    fn an_async_follower_is_woken_by_the_append() {
        let dir = tempfile::tempdir().unwrap();
        let store = StreamStore::open(dir.path(), StreamConfig::default()).unwrap();
        let s = store.stream("tail").unwrap();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap();
        let writer = s.clone();
        let t = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(50));
            writer.append(&batch(0, 1)).unwrap()
        });
        // Far longer than the append takes: only a wake-up ends it in time.
        let woken = runtime.block_on(async {
            tokio::time::timeout(Duration::from_secs(30), s.grown_past(0)).await
        });
        assert!(woken.is_ok());
        t.join().unwrap();
        let at_end = runtime.block_on(async {
            tokio::time::timeout(Duration::from_millis(100), s.grown_past(1)).await
        });
        assert!(at_end.is_err(), "nothing was appended at offset 1");
    }
}
