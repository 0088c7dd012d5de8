//! What a topology reads and writes: [`Source`] and [`Sink`], the two
//! traits connectors implement, and adapters for plain iterators and
//! closures.
//!
//! A source's position is the number of events pulled from its start; a
//! checkpoint records it and recovery [`Source::seek`]s back to it. An
//! exactly-once sink publishes only committed output and can undo what
//! was published after a checkpoint ([`Sink::recover`]).

use weir_types::{Batch, Event};

/// What a source has next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Pull {
    Event(Event),
    /// Nothing now (an unbounded source caught up): ask again soon.
    Idle,
    /// The input is over.
    End,
}

/// Events in, in order. An `Err` stops the topology.
pub trait Source: Send {
    /// Moves past the first `position` events, before the first pull (a
    /// restore from a checkpoint). The default pulls and drops them.
    fn seek(&mut self, position: u64) -> Result<(), String> {
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
    /// The next event, `Idle` or `End`. An unbounded source may wait a
    /// little (tens of ms) for an event before saying `Idle`.
    fn pull(&mut self) -> Result<Pull, String>;
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

/// Where a sink's batches go: any `FnMut(&Batch)` is one (at-least-once).
pub type SinkFn = Box<dyn FnMut(&Batch) -> Result<(), String> + Send>;

/// Batches out.
///
/// Under checkpoints an [`exactly_once`](Sink::exactly_once) sink gets a
/// checkpoint's output only after the checkpoint committed, and at
/// recovery [`recover`](Sink::recover) undoes anything published after
/// the restored checkpoint and publishes that checkpoint's output again.
/// Other sinks get batches as they come (at-least-once after a crash).
pub trait Sink: Send {
    fn write(&mut self, batch: &Batch) -> Result<(), String>;
    fn exactly_once(&self) -> bool {
        false
    }
    /// Where published output ends (file length, stream offset), recorded
    /// with each checkpoint.
    fn position(&mut self) -> Result<u64, String> {
        Ok(0)
    }
    /// Restores the sink to `position` (dropping what follows) and
    /// publishes `pending`.
    fn recover(&mut self, position: u64, pending: &Batch) -> Result<(), String> {
        let _ = position;
        self.write(pending)
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
