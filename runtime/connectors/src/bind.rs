//! Embedded streams as a topology's sources and sinks.
//!
//! [`StreamSource`] reads a stream from an offset, either to the end it
//! has when the run starts (bounded) or following its tail (unbounded,
//! `Pull::Idle` while caught up). Its position is the stream offset.
//! [`StreamSink`] appends; under checkpoints it is exactly-once: it gets a
//! checkpoint's output after the commit, and at recovery appends only the
//! part of that output the stream does not hold yet. It assumes it is the
//! stream's only writer.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use weir_io::{
    CheckpointRef, EndpointStats, Next, Position, Pull, Pulled, Sink, Source, SourceWaker,
};
use weir_types::{Batch, Event};

use crate::Stream;

/// Reads a stream as a source.
pub struct StreamSource {
    stream: Arc<Stream>,
    next: u64,
    /// Stop at this offset (bounded), or follow the tail (`None`).
    end: Option<u64>,
    buffered: VecDeque<Event>,
    read_batch: usize,
    /// Where it is in the stream and where the stream ends (split 0).
    stats: Arc<EndpointStats>,
    /// A wake is registered with the stream and has not fired yet.
    armed: Arc<AtomicBool>,
}

impl StreamSource {
    /// What `stream` holds now, from offset 0.
    pub fn bounded(stream: Arc<Stream>) -> StreamSource {
        let end = stream.end_offset();
        StreamSource {
            stream,
            next: 0,
            end: Some(end),
            buffered: VecDeque::new(),
            read_batch: 1024,
            stats: Arc::default(),
            armed: Arc::default(),
        }
    }

    /// Everything `stream` holds and will hold, from offset 0.
    pub fn follow(stream: Arc<Stream>) -> StreamSource {
        StreamSource {
            stream,
            next: 0,
            end: None,
            buffered: VecDeque::new(),
            read_batch: 1024,
            stats: Arc::default(),
            armed: Arc::default(),
        }
    }

    /// Its live figures: split 0 is the stream, its position the next
    /// offset handed to the engine.
    pub fn stats(&self) -> Arc<EndpointStats> {
        self.stats.clone()
    }

    fn report(&self) {
        let handed = self.next - self.buffered.len() as u64;
        self.stats
            .set_split(0, handed, Some(self.stream.end_offset()));
    }
}

impl Source for StreamSource {
    fn seek(&mut self, position: &Position) -> Result<(), String> {
        let position = position.count()?;
        let end = self.stream.end_offset();
        if position > end {
            return Err(format!(
                "stream `{}` ends at offset {end} but the checkpoint read to {position}: it was replaced since",
                self.stream.name()
            ));
        }
        self.next = position;
        self.buffered.clear();
        Ok(())
    }

    fn pull(&mut self) -> Result<Pull, String> {
        if let Some(e) = self.buffered.pop_front() {
            return Ok(Pull::Event(e));
        }
        self.fill()?;
        self.report();
        Ok(self.buffered.pop_front().map_or_else(
            || {
                if self.end.is_some_and(|end| self.next >= end) {
                    Pull::End
                } else {
                    Pull::Idle
                }
            },
            Pull::Event,
        ))
    }

    /// A following source is woken by the append that gives it an event.
    fn wake_when_ready(&mut self, waker: &SourceWaker) -> bool {
        if self.end.is_some() {
            return false;
        }
        if !self.armed.swap(true, Ordering::SeqCst) {
            let armed = self.armed.clone();
            let waker = waker.clone();
            self.stream.wake_when_past(self.next, move || {
                armed.store(false, Ordering::SeqCst);
                waker.wake();
            });
        }
        true
    }

    /// Hands out what it holds (it never waits, so `until` does not matter).
    fn pull_batch(
        &mut self,
        batch: &mut Batch,
        max: usize,
        _until: std::time::Instant,
    ) -> Result<Pulled, String> {
        let mut pulled = Pulled {
            events: 0,
            highest_ts: i64::MIN,
            next: Next::More,
        };
        if self.buffered.is_empty() {
            // Straight from the stream's files into the batch's columns.
            if let Some(want) = self.want() {
                let before = batch.len();
                self.next = self
                    .stream
                    .read_batch(self.next, want.min(max), usize::MAX, batch)
                    .map_err(|e| e.to_string())?;
                pulled.events = batch.len() - before;
                pulled.highest_ts = batch.timestamps[before..]
                    .iter()
                    .copied()
                    .max()
                    .unwrap_or(i64::MIN);
            }
        }
        while pulled.events < max {
            let Some(event) = self.buffered.pop_front() else {
                break;
            };
            pulled.add(batch, &event);
        }
        if self.buffered.is_empty() {
            if self.end.is_some_and(|end| self.next >= end) {
                pulled.next = Next::End;
            } else if pulled.events == 0 {
                pulled.next = Next::Idle;
            }
        }
        self.report();
        Ok(pulled)
    }
}

impl StreamSource {
    /// How many events to read now: `None` at the end of a bounded
    /// source, or when a following one has caught up. It never waits.
    fn want(&self) -> Option<usize> {
        let end = match self.end {
            Some(end) if self.next >= end => return None,
            Some(end) => end,
            None => {
                // Never waits: a caught-up source says Idle and the engine
                // pulls it again after a pause (it holds a pool worker).
                if !self.stream.wait_for(self.next, Duration::ZERO) {
                    return None;
                }
                u64::MAX
            }
        };
        Some((end - self.next).min(self.read_batch as u64) as usize)
    }

    /// Reads the next run of events into `buffered`: at once when the
    /// stream has them, nothing when it does not (a following source that
    /// caught up) or at its end (a bounded one). It never waits.
    fn fill(&mut self) -> Result<(), String> {
        let Some(want) = self.want() else {
            return Ok(());
        };
        let (events, after) = self
            .stream
            .read(self.next, want)
            .map_err(|e| e.to_string())?;
        self.next = after;
        self.buffered.extend(events);
        Ok(())
    }
}

/// Appends to a stream as a sink.
pub struct StreamSink {
    stream: Arc<Stream>,
}

impl StreamSink {
    pub fn new(stream: Arc<Stream>) -> StreamSink {
        StreamSink { stream }
    }
}

impl Sink for StreamSink {
    fn write(&mut self, batch: &Batch) -> Result<(), String> {
        if batch.is_empty() {
            return Ok(());
        }
        self.stream
            .append(batch)
            .map(|_| ())
            .map_err(|e| e.to_string())
    }

    fn exactly_once(&self) -> bool {
        true
    }

    fn position(&mut self) -> Result<u64, String> {
        Ok(self.stream.end_offset())
    }

    fn recover(
        &mut self,
        _at: &CheckpointRef,
        position: u64,
        pending: &Batch,
    ) -> Result<(), String> {
        let end = self.stream.end_offset();
        let have = end.checked_sub(position).ok_or_else(|| {
            format!(
                "stream `{}` ends at {end}, before the committed offset {position}: it was replaced since",
                self.stream.name()
            )
        })?;
        if have > pending.len() as u64 {
            return Err(format!(
                "stream `{}` holds {have} events after the checkpoint's offset {position} but the checkpoint published {}: another producer wrote to it",
                self.stream.name(),
                pending.len()
            ));
        }
        let mut rest = Batch::default();
        for e in pending.iter().skip(have as usize) {
            rest.push_ref(&e);
        }
        self.write(&rest)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{StreamConfig, StreamStore};

    /// A deadline that never comes in a test.
    fn far() -> std::time::Instant {
        std::time::Instant::now() + std::time::Duration::from_secs(3600)
    }

    fn batch(n: std::ops::Range<u32>) -> Batch {
        n.map(|i| Event {
            value: i.to_string().into_bytes(),
            timestamp: i64::from(i),
            ..Event::default()
        })
        .collect()
    }

    #[test]
    fn a_sink_republishes_only_what_the_stream_lacks() {
        let dir = tempfile::tempdir().unwrap();
        let store = StreamStore::open(dir.path(), StreamConfig::default()).unwrap();
        let stream = store.stream("out").unwrap();
        let mut sink = StreamSink::new(stream.clone());
        sink.write(&batch(0..2)).unwrap();
        let base = sink.position().unwrap();
        let at = CheckpointRef {
            lineage: "run".into(),
            id: 1,
        };
        // A crash after the first event of the pending output was appended.
        sink.write(&batch(2..3)).unwrap();
        sink.recover(&at, base, &batch(2..5)).unwrap();
        let (events, end) = stream.read(0, 100).unwrap();
        assert_eq!(end, 5);
        let values: Vec<Vec<u8>> = events.into_iter().map(|e| e.value).collect();
        assert_eq!(
            values,
            (0..5)
                .map(|i: u32| i.to_string().into_bytes())
                .collect::<Vec<_>>()
        );
        // More than the checkpoint published: someone else wrote.
        assert!(sink.recover(&at, base, &batch(0..1)).is_err());
    }

    #[test]
    fn a_source_follows_the_tail_and_seeks() {
        let dir = tempfile::tempdir().unwrap();
        let store = StreamStore::open(dir.path(), StreamConfig::default()).unwrap();
        let stream = store.stream("in").unwrap();
        stream.append(&batch(0..3)).unwrap();
        let mut source = StreamSource::follow(stream.clone());
        source.seek(&Position::Count(2)).unwrap();
        assert!(matches!(source.pull().unwrap(), Pull::Event(e) if e.value == b"2"));
        assert_eq!(source.pull().unwrap(), Pull::Idle);
        stream.append(&batch(3..4)).unwrap();
        assert!(matches!(source.pull().unwrap(), Pull::Event(e) if e.value == b"3"));
        let mut bounded = StreamSource::bounded(stream);
        assert!(bounded.seek(&Position::Count(9)).is_err());
        bounded.seek(&Position::Count(4)).unwrap();
        assert_eq!(bounded.pull().unwrap(), Pull::End);
    }

    #[test]
    fn an_idle_following_source_is_woken_by_the_append_and_a_bounded_one_never_waits() {
        let dir = tempfile::tempdir().unwrap();
        let store = StreamStore::open(dir.path(), StreamConfig::default()).unwrap();
        let stream = store.stream("in").unwrap();
        let mut source = StreamSource::follow(stream.clone());
        assert_eq!(source.pull().unwrap(), Pull::Idle);
        let woken = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let w = woken.clone();
        let waker = SourceWaker::new(move || {
            w.fetch_add(1, Ordering::SeqCst);
        });
        assert!(source.wake_when_ready(&waker));
        assert!(source.wake_when_ready(&waker), "asked twice, armed once");
        stream.append(&batch(0..1)).unwrap();
        assert_eq!(woken.load(Ordering::SeqCst), 1);
        assert!(matches!(source.pull().unwrap(), Pull::Event(e) if e.value == b"0"));
        assert!(!StreamSource::bounded(stream).wake_when_ready(&waker));
    }

    #[test]
    fn a_source_hands_out_batches_and_reports_its_lag() {
        let dir = tempfile::tempdir().unwrap();
        let store = StreamStore::open(dir.path(), StreamConfig::default()).unwrap();
        let stream = store.stream("in").unwrap();
        stream.append(&batch(0..5)).unwrap();
        let mut source = StreamSource::follow(stream.clone());
        let stats = source.stats();
        let mut out = Batch::default();
        let pulled = source.pull_batch(&mut out, 3, far()).unwrap();
        assert_eq!((pulled.events, pulled.next), (3, Next::More));
        assert_eq!(stats.snapshot().splits[&0].lag(), Some(2));
        stream.append(&batch(5..7)).unwrap();
        let pulled = source.pull_batch(&mut out, 10, far()).unwrap();
        assert_eq!(pulled.events, 4, "the rest and what was appended since");
        assert_eq!(pulled.highest_ts, 6);
        assert_eq!(stats.snapshot().splits[&0].lag(), Some(0));
        assert_eq!(
            source.pull_batch(&mut out, 10, far()).unwrap().next,
            Next::Idle
        );
        let values: Vec<&[u8]> = out.iter().map(|e| e.value).collect();
        let expected: Vec<Vec<u8>> = (0..7).map(|i: u32| i.to_string().into_bytes()).collect();
        assert_eq!(
            values,
            expected.iter().map(Vec::as_slice).collect::<Vec<_>>()
        );
    }
}
