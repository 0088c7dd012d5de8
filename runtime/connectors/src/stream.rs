//! Embedded streams: one directory per stream under `<data>/streams/`,
//! holding segment files `<base offset>.log` of records (see `record`).
//! The active (last) segment takes appends; a full one is closed and a new
//! one started. Each segment keeps a sparse in-memory index (every
//! [`INDEX_EVERY`] records) from offset to file position.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{BufReader, Read, Seek, SeekFrom, Write};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::Duration;

use weir_types::{Batch, Event, is_safe_name};

use crate::record::{self, Bad, FRAME_BYTES, MAX_RECORD_BYTES, RecordLimit};

/// Records between two sparse index entries.
const INDEX_EVERY: u64 = 256;

/// Sizes and retention of streams.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StreamConfig {
    /// A segment is closed once it holds this many bytes.
    pub segment_bytes: u64,
    /// Drop the oldest segments while a stream is larger than this.
    pub max_bytes: Option<u64>,
    /// Drop the oldest segments whose newest event is older than this.
    pub max_age_ms: Option<i64>,
}

impl Default for StreamConfig {
    fn default() -> Self {
        StreamConfig {
            segment_bytes: 64 << 20,
            max_bytes: None,
            max_age_ms: None,
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

#[derive(Debug)]
struct Segment {
    base: u64,
    path: PathBuf,
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
}

#[derive(Debug)]
struct Inner {
    segments: Vec<Segment>,
    writer: File,
}

/// One embedded stream. Appends and reads may come from many threads.
#[derive(Debug)]
pub struct Stream {
    name: String,
    dir: PathBuf,
    config: StreamConfig,
    inner: Mutex<Inner>,
    grew: Condvar,
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
    fn open(name: &str, dir: PathBuf, config: StreamConfig) -> Result<Stream, StreamError> {
        let io = |what: String| {
            let name = name.to_string();
            move |source| StreamError::Io {
                stream: name,
                what,
                source,
            }
        };
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
        if bases.is_empty() {
            bases.push(0);
        }
        let mut segments = Vec::new();
        let last = bases.len() - 1;
        for (i, base) in bases.into_iter().enumerate() {
            let path = segment_path(&dir, base);
            let bytes = if path.exists() {
                std::fs::read(&path).map_err(io(format!("cannot read {}", path.display())))?
            } else {
                Vec::new()
            };
            let mut segment = Segment {
                base,
                path: path.clone(),
                bytes: 0,
                records: 0,
                index: Vec::new(),
                max_timestamp: i64::MIN,
            };
            let mut at = 0usize;
            while at < bytes.len() {
                match record::decode(&bytes[at..]) {
                    Ok((decoded, size)) => {
                        if segment.records.is_multiple_of(INDEX_EVERY) {
                            segment.index.push((segment.end(), at as u64));
                        }
                        segment.records += 1;
                        segment.max_timestamp = segment.max_timestamp.max(decoded.timestamp);
                        at += size;
                    }
                    // Only a record that runs to the end of the file is a
                    // torn append; one with records after it was
                    // acknowledged, and is never cut.
                    Err(bad) if i == last && reaches_the_end(&bytes[at..]) => {
                        tracing::warn!(
                            stream = name,
                            file = %path.display(),
                            position = at,
                            reason = ?bad,
                            "cutting off a damaged tail (an append that did not complete)"
                        );
                        let file = OpenOptions::new()
                            .write(true)
                            .open(&path)
                            .map_err(io(format!("cannot open {}", path.display())))?;
                        file.set_len(at as u64)
                            .and_then(|()| file.sync_all())
                            .map_err(io(format!("cannot truncate {}", path.display())))?;
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
            segment.bytes = at as u64;
            segments.push(segment);
        }
        let active = &segments[segments.len() - 1].path;
        let writer = OpenOptions::new()
            .create(true)
            .append(true)
            .open(active)
            .map_err(io(format!("cannot open {}", active.display())))?;
        Ok(Stream {
            name: name.to_string(),
            dir,
            config,
            inner: Mutex::new(Inner { segments, writer }),
            grew: Condvar::new(),
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

    /// Offset the next append gets.
    pub fn end_offset(&self) -> u64 {
        let inner = self.lock();
        inner.segments[inner.segments.len() - 1].end()
    }

    /// Appends a batch and returns its offsets once it is on disk.
    pub fn append(&self, batch: &Batch) -> Result<Range<u64>, StreamError> {
        let mut buf = Vec::with_capacity(batch.values.len() + batch.keys.len() + batch.len() * 24);
        let mut positions = Vec::with_capacity(batch.len());
        let mut max_ts = i64::MIN;
        for (index, e) in batch.iter().enumerate() {
            record::check(&e).map_err(|limit| StreamError::Unstorable {
                stream: self.name.clone(),
                index,
                limit,
            })?;
            positions.push(buf.len() as u64);
            max_ts = max_ts.max(e.timestamp);
            record::encode(&e, &mut buf);
        }
        let mut inner = self.lock();
        let start = inner.segments[inner.segments.len() - 1].end();
        if batch.is_empty() {
            return Ok(start..start);
        }
        let active_bytes = inner.segments[inner.segments.len() - 1].bytes;
        if active_bytes > 0 && active_bytes + buf.len() as u64 > self.config.segment_bytes {
            self.roll(&mut inner, start)?;
        }
        let Inner { segments, writer } = &mut *inner;
        let segment = segments.last_mut().expect("a stream has a segment");
        if let Err(source) = writer.write_all(&buf).and_then(|()| writer.sync_data()) {
            // Cut a partial write back so the log stays whole.
            let _ = writer.set_len(segment.bytes);
            return Err(StreamError::Io {
                stream: self.name.clone(),
                what: format!("cannot append to {}", segment.path.display()),
                source,
            });
        }
        for (i, pos) in positions.into_iter().enumerate() {
            if (segment.records + i as u64).is_multiple_of(INDEX_EVERY) {
                segment
                    .index
                    .push((segment.end() + i as u64, segment.bytes + pos));
            }
        }
        segment.records += batch.len() as u64;
        segment.bytes += buf.len() as u64;
        segment.max_timestamp = segment.max_timestamp.max(max_ts);
        let end = segment.end();
        self.enforce_retention(&mut inner)?;
        drop(inner);
        self.grew.notify_all();
        Ok(start..end)
    }

    /// Closes the active segment and starts one at `base`.
    fn roll(&self, inner: &mut Inner, base: u64) -> Result<(), StreamError> {
        let path = segment_path(&self.dir, base);
        inner.writer = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(self.io(format!("cannot create {}", path.display())))?;
        inner.segments.push(Segment {
            base,
            path,
            bytes: 0,
            records: 0,
            index: Vec::new(),
            max_timestamp: i64::MIN,
        });
        Ok(())
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
        let mut bytes_read = 0usize;
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
        let mut events = Vec::new();
        let mut offset = from;
        for segment in inner.segments.iter().filter(|s| s.end() > from) {
            if events.len() >= max || bytes_read >= max_bytes {
                break;
            }
            let (mut at_offset, pos) = segment
                .index
                .iter()
                .rev()
                .find(|(o, _)| *o <= offset)
                .copied()
                .unwrap_or((segment.base, 0));
            let file = File::open(&segment.path)
                .map_err(self.io(format!("cannot open {}", segment.path.display())))?;
            let mut reader = BufReader::with_capacity(256 << 10, file);
            reader
                .seek(SeekFrom::Start(pos))
                .map_err(self.io("cannot seek"))?;
            let mut buf = Vec::new();
            let mut position = pos;
            while at_offset < segment.end() && events.len() < max && bytes_read < max_bytes {
                let record_at = position;
                let corrupt = || StreamError::Corrupt {
                    stream: self.name.clone(),
                    file: segment.path.display().to_string(),
                    position: record_at,
                };
                buf.resize(FRAME_BYTES, 0);
                reader
                    .read_exact(&mut buf)
                    .map_err(self.io(format!("cannot read {}", segment.path.display())))?;
                let len = u32::from_le_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize;
                if len > MAX_RECORD_BYTES {
                    return Err(corrupt());
                }
                buf.resize(FRAME_BYTES + len, 0);
                reader
                    .read_exact(&mut buf[FRAME_BYTES..])
                    .map_err(self.io(format!("cannot read {}", segment.path.display())))?;
                position += buf.len() as u64;
                if at_offset >= offset {
                    bytes_read += buf.len();
                    let (d, _) = record::decode(&buf).map_err(|_: Bad| corrupt())?;
                    events.push(Event {
                        key: d.key.map(<[u8]>::to_vec),
                        value: d.value.to_vec(),
                        timestamp: d.timestamp,
                        headers: d.headers,
                    });
                    offset = at_offset + 1;
                }
                at_offset += 1;
            }
        }
        Ok((events, offset))
    }

    /// Waits until the stream holds an event at `offset` (or `timeout`
    /// passes); returns whether it does.
    pub fn wait_for(&self, offset: u64, timeout: Duration) -> bool {
        let inner = self.lock();
        let (inner, _) = self
            .grew
            .wait_timeout_while(inner, timeout, |i| {
                i.segments[i.segments.len() - 1].end() <= offset
            })
            .unwrap_or_else(|p| p.into_inner());
        inner.segments[inner.segments.len() - 1].end() > offset
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
        let stream = Arc::new(Stream::open(name, self.dir.join(name), self.config)?);
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

    /// Every stream there is, by name.
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

#[cfg(test)]
mod tests {
    use super::*;

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
        // Damage the middle record's payload: the third was acknowledged.
        let mut bytes = std::fs::read(&path).unwrap();
        let first = record::decode(&bytes).unwrap().1;
        bytes[first + FRAME_BYTES + 1] ^= 0xff;
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
}
