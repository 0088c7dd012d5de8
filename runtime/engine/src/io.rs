//! What a topology reads and writes: [`Source`] and [`Sink`], the two
//! traits connectors implement, the [`Position`] a checkpoint records for
//! a source and the [`CheckpointRef`] an exactly-once sink publishes
//! under, and adapters for plain iterators and closures.
//!
//! A source's position is either the number of events pulled from its
//! start (files, embedded streams: the engine counts them) or the next
//! offset of each of its splits (Kafka partitions: the source reports
//! them). A checkpoint records it and recovery [`Source::seek`]s back to
//! it. An exactly-once sink publishes a checkpoint's output only once the
//! checkpoint is durable ([`Sink::publish`]) and, at recovery, makes sure
//! the restored checkpoint's output is published exactly once
//! ([`Sink::recover`]): by cutting what followed (files, streams) or by a
//! progress record kept in the target itself (Kafka, PostgreSQL).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use weir_types::{Batch, Event};

use crate::pool::TaskWaker;

/// What a source has next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Pull {
    Event(Event),
    /// Nothing now (an unbounded source caught up): ask again soon.
    Idle,
    /// The input is over.
    End,
}

/// Where a source is in its input, as a checkpoint records it (in the
/// checkpoint's JSON metadata: a number for `Count`, an object for
/// `Splits`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged, try_from = "RawPosition")]
pub enum Position {
    /// Events read from the start.
    Count(u64),
    /// Split (a Kafka partition, say) → the next offset to read.
    Splits(BTreeMap<u32, u64>),
}

/// A position as JSON holds it: an untagged enum reads map keys as
/// strings only, so split numbers are parsed after.
#[derive(Deserialize)]
#[serde(untagged)]
enum RawPosition {
    Count(u64),
    Splits(BTreeMap<String, u64>),
}

impl TryFrom<RawPosition> for Position {
    type Error = String;

    fn try_from(raw: RawPosition) -> Result<Self, String> {
        match raw {
            RawPosition::Count(n) => Ok(Position::Count(n)),
            RawPosition::Splits(splits) => splits
                .into_iter()
                .map(|(split, offset)| {
                    split
                        .parse::<u32>()
                        .map(|split| (split, offset))
                        .map_err(|_| {
                            format!("split `{split}` of a source position is not a number")
                        })
                })
                .collect::<Result<_, _>>()
                .map(Position::Splits),
        }
    }
}

impl Default for Position {
    fn default() -> Self {
        Position::Count(0)
    }
}

impl Position {
    /// Whether it is the start of the input (nothing read).
    pub fn is_start(&self) -> bool {
        match self {
            Position::Count(n) => *n == 0,
            Position::Splits(splits) => splits.is_empty(),
        }
    }

    /// The event count of a counting source; an error for split offsets
    /// (the checkpoint was taken with another kind of source).
    pub fn count(&self) -> Result<u64, String> {
        match self {
            Position::Count(n) => Ok(*n),
            Position::Splits(_) => Err(
                "the checkpoint holds partition offsets but this source counts events: \
                 the source changed kind since; start from a fresh data directory or \
                 with --reset-sources"
                    .into(),
            ),
        }
    }
}

/// Events in, in order. An `Err` stops the topology.
pub trait Source: Send {
    /// Moves to `position`, before the first pull (a restore from a
    /// checkpoint). The default, for counting sources, pulls and drops
    /// that many events.
    fn seek(&mut self, position: &Position) -> Result<(), String> {
        let position = position.count()?;
        for i in 0..position {
            match self.pull()? {
                Pull::Event(_) => {}
                Pull::Idle => std::thread::sleep(std::time::Duration::from_millis(1)),
                Pull::End => {
                    return Err(format!(
                        "the input ends after {i} events but the checkpoint read {position}: it changed since"
                    ));
                }
            }
        }
        Ok(())
    }
    /// The next event, `Idle` or `End`. An unbounded source says `Idle`
    /// at once when it has nothing (it is asked again when it wakes its
    /// task, or after a pause: [`Source::wake_when_ready`]).
    fn pull(&mut self) -> Result<Pull, String>;
    /// Where the source is after the events it returned so far. `None`
    /// (the default): the engine counts events ([`Position::Count`]).
    fn position(&self) -> Option<Position> {
        None
    }
    /// How far the source's event time has come, for its watermark: a
    /// source of several splits answers the least of its splits' highest
    /// timestamps, skipping idle splits. `None` (the default): the highest
    /// timestamp read.
    fn event_time(&self) -> Option<i64> {
        None
    }
    /// Called after a pull said `Idle`: a source that can tell when its
    /// input grows (an append notification, a readable socket) keeps
    /// `waker` and calls [`SourceWaker::wake`] then (once is enough, a
    /// wake with nothing new is harmless), and returns true. The default
    /// returns false: the engine pulls again after a pause that grows
    /// from 1 ms to 200 ms while the source stays idle. Either way `pull`
    /// itself should not wait: a waiting pull holds a worker thread that
    /// other topologies' tasks need (see [`Source::blocking`]).
    fn wake_when_ready(&mut self, waker: &SourceWaker) -> bool {
        let _ = waker;
        false
    }
    /// Whether `pull` waits on I/O (a broker poll with a timeout): such a
    /// source runs on the pool's blocking workers, not on the workers
    /// that run operators.
    fn blocking(&self) -> bool {
        false
    }
    /// A checkpoint that recorded `position` for this source is durable.
    /// Called on the source's task, between pulls; a Kafka source
    /// commits the offsets back to its group for lag tools.
    fn committed(&mut self, position: &Position) -> Result<(), String> {
        let _ = position;
        Ok(())
    }
}

/// Wakes the task of a source that said `Idle` (see
/// [`Source::wake_when_ready`]). Cheap to clone; may be called from any
/// thread, any number of times.
#[derive(Clone)]
pub struct SourceWaker(TaskWaker);

impl SourceWaker {
    pub(crate) fn new(waker: TaskWaker) -> Self {
        SourceWaker(waker)
    }

    /// The source may have events: its task pulls again soon.
    pub fn wake(&self) {
        self.0.wake();
    }
}

impl std::fmt::Debug for SourceWaker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SourceWaker")
    }
}

/// Events of an iterator, in order; a bounded source.
pub type SourceIter = Box<dyn Iterator<Item = Result<Event, String>> + Send>;

impl Source for SourceIter {
    fn pull(&mut self) -> Result<Pull, String> {
        match self.next() {
            Some(Ok(e)) => Ok(Pull::Event(e)),
            Some(Err(e)) => Err(e),
            None => Ok(Pull::End),
        }
    }
}

/// A source from any iterator of events.
pub fn iter_source(
    events: impl Iterator<Item = Result<Event, String>> + Send + 'static,
) -> Box<dyn Source> {
    Box::new(Box::new(events) as SourceIter)
}

/// Which committed checkpoint a sink's output belongs to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckpointRef {
    /// Names the run: a start with no checkpoint, or from a savepoint,
    /// begins a new lineage; recovery from a checkpoint keeps it.
    pub lineage: String,
    /// Grows within a lineage.
    pub id: u64,
}

/// Where a sink's batches go: any `FnMut(&Batch)` is one (at-least-once).
pub type SinkFn = Box<dyn FnMut(&Batch) -> Result<(), String> + Send>;

/// Batches out.
///
/// Under checkpoints an [`exactly_once`](Sink::exactly_once) sink gets a
/// checkpoint's output only once the checkpoint is durable
/// ([`publish`](Sink::publish), in checkpoint order; checkpoint n is
/// published before n + 1 can commit, so at most the restored
/// checkpoint's output can be unpublished after a crash), and at recovery
/// [`recover`](Sink::recover). Other sinks get batches as they come
/// ([`write`](Sink::write): at-least-once after a crash).
pub trait Sink: Send {
    fn write(&mut self, batch: &Batch) -> Result<(), String>;
    fn exactly_once(&self) -> bool {
        false
    }
    /// Where published output ends (file length, stream offset), recorded
    /// with each checkpoint; 0 for a sink that cannot cut its output.
    fn position(&mut self) -> Result<u64, String> {
        Ok(0)
    }
    /// Publishes the output of checkpoint `at`, which is durable. Called
    /// for every checkpoint, even with an empty batch (a sink may then do
    /// nothing).
    fn publish(&mut self, at: &CheckpointRef, batch: &Batch) -> Result<(), String> {
        let _ = at;
        if batch.is_empty() {
            return Ok(());
        }
        self.write(batch)
    }
    /// At a restore from checkpoint `at`: drops what was published after
    /// `position` where the sink can, then publishes `pending` (the
    /// output committed with `at`) unless the target holds it already.
    fn recover(
        &mut self,
        at: &CheckpointRef,
        position: u64,
        pending: &Batch,
    ) -> Result<(), String> {
        let _ = position;
        self.publish(at, pending)
    }
}

impl<F: FnMut(&Batch) -> Result<(), String> + Send> Sink for F {
    fn write(&mut self, batch: &Batch) -> Result<(), String> {
        self(batch)
    }
}

/// A sink from any closure.
pub fn fn_sink(f: impl FnMut(&Batch) -> Result<(), String> + Send + 'static) -> Box<dyn Sink> {
    Box::new(f)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_counting_position_reads_back_from_the_number_older_checkpoints_hold() {
        let p: Position = serde_json::from_str("5").unwrap();
        assert_eq!(p, Position::Count(5));
        assert_eq!(serde_json::to_string(&p).unwrap(), "5");
    }

    #[test]
    fn split_offsets_round_trip_as_an_object() {
        let p = Position::Splits(BTreeMap::from([(0, 12), (3, 40)]));
        let json = serde_json::to_string(&p).unwrap();
        assert_eq!(json, r#"{"0":12,"3":40}"#);
        assert_eq!(serde_json::from_str::<Position>(&json).unwrap(), p);
    }

    #[test]
    fn a_split_that_is_not_a_number_is_refused() {
        let err = serde_json::from_str::<Position>(r#"{"x":1}"#).unwrap_err();
        assert!(err.to_string().contains("split `x`"), "{err}");
    }

    #[test]
    fn a_counting_source_refuses_split_offsets_with_the_way_out() {
        let err = Position::Splits(BTreeMap::from([(0, 1)]))
            .count()
            .unwrap_err();
        assert!(err.contains("--reset-sources"), "{err}");
    }
}
