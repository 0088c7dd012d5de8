//! The checkpoint tracker: which participant (source, chain instance,
//! sink) acknowledged which checkpoint, as a plain state machine. No
//! thread, channel or I/O: the coordinator (`checkpoint.rs`) feeds it
//! acknowledgements and requests and commits what it hands back.
//!
//! A participant whose input ended sends a `FINAL` acknowledgement once;
//! it counts for the checkpoint in flight (if that still lacks it) and for
//! every later one, and what it sent is kept for the last checkpoint if no
//! checkpoint committed it yet.

use std::time::{Duration, Instant};

use weir_io::Position;
use weir_state::StateSnapshot;
use weir_types::{Batch, now_ms};

use crate::protocol::{Ack, FINAL};

/// A source's place in its input and the event time it had reached (its
/// highest timestamp, or what the source itself reports).
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub(crate) struct SourceMeta {
    pub(crate) position: Position,
    pub(crate) max_ts: i64,
}

/// A chain instance's part of a checkpoint: its watermark and the state
/// changes of each of its operators.
pub(crate) type TaskPart = (i64, Vec<(String, StateSnapshot)>);

/// What each participant contributed to a checkpoint.
#[derive(Default)]
pub(crate) struct Collected {
    pub(crate) sources: Vec<Option<SourceMeta>>,
    pub(crate) tasks: Vec<Option<TaskPart>>,
    pub(crate) sinks: Vec<Option<Batch>>,
    /// The longest barrier alignment of any task.
    pub(crate) alignment: Duration,
}

impl Collected {
    fn new(sources: usize, tasks: usize, sinks: usize) -> Self {
        Collected {
            sources: vec![None; sources],
            tasks: (0..tasks).map(|_| None).collect(),
            sinks: vec![None; sinks],
            alignment: Duration::ZERO,
        }
    }
    fn complete(&self) -> bool {
        self.sources.iter().all(Option::is_some)
            && self.tasks.iter().all(Option::is_some)
            && self.sinks.iter().all(Option::is_some)
    }
}

/// A checkpoint asked for and not yet committed, with what asked for it
/// (`R`: a request to answer, if any).
pub(crate) struct InFlight<R> {
    pub(crate) id: u64,
    pub(crate) started: Instant,
    /// Wall clock when it was asked for, ms since the Unix epoch.
    pub(crate) started_at: i64,
    pub(crate) collected: Collected,
    pub(crate) request: Option<R>,
}

/// Acknowledgements of the checkpoint in flight and of participants' ends.
pub(crate) struct Tracker<R> {
    /// What participants sent at the end of their input and no checkpoint
    /// took yet.
    ended: Collected,
    /// Positions of ended sources stay valid for every later checkpoint.
    ended_sources: Vec<Option<SourceMeta>>,
    ended_tasks: Vec<bool>,
    ended_sinks: Vec<bool>,
    in_flight: Option<InFlight<R>>,
    /// The last id used (restored, triggered or committed).
    last_id: u64,
}

impl<R> Tracker<R> {
    pub(crate) fn new(sources: usize, tasks: usize, sinks: usize, last_id: u64) -> Self {
        Tracker {
            ended: Collected::new(sources, tasks, sinks),
            ended_sources: vec![None; sources],
            ended_tasks: vec![false; tasks],
            ended_sinks: vec![false; sinks],
            in_flight: None,
            last_id,
        }
    }

    pub(crate) fn in_flight(&self) -> bool {
        self.in_flight.is_some()
    }

    /// Whether a new checkpoint can start: none in flight and some chain
    /// still running (once every chain ended, only the last one is left).
    pub(crate) fn can_trigger(&self) -> bool {
        let every_chain_ended = !self.ended_tasks.is_empty() && self.ended_tasks.iter().all(|&e| e);
        self.in_flight.is_none() && !every_chain_ended
    }

    /// Starts the next checkpoint and returns its id. Participants whose
    /// input already ended count as acknowledged, with what they sent at
    /// their end if no checkpoint committed it yet.
    pub(crate) fn trigger(&mut self, request: Option<R>) -> u64 {
        let id = self.last_id + 1;
        self.last_id = id;
        let mut collected = Collected::new(
            self.ended_sources.len(),
            self.ended_tasks.len(),
            self.ended_sinks.len(),
        );
        collected.sources.clone_from(&self.ended_sources);
        for (t, &e) in self.ended_tasks.iter().enumerate() {
            if e {
                collected.tasks[t] =
                    Some(self.ended.tasks[t].take().unwrap_or((i64::MAX, Vec::new())));
            }
        }
        for (k, &e) in self.ended_sinks.iter().enumerate() {
            if e {
                collected.sinks[k] = Some(self.ended.sinks[k].take().unwrap_or_default());
            }
        }
        self.in_flight = Some(InFlight {
            id,
            started: Instant::now(),
            started_at: now_ms(),
            collected,
            request,
        });
        id
    }

    /// Files an acknowledgement: into the checkpoint in flight, or (at the
    /// end of a participant's input) into the one in flight if it still
    /// lacks it, else kept for the last checkpoint. An acknowledgement of
    /// another checkpoint is ignored (returns false).
    pub(crate) fn record(&mut self, ack: Ack) -> bool {
        let flight = self.in_flight.as_mut();
        match ack {
            Ack::Source {
                id,
                source,
                position,
                max_ts,
            } => {
                let meta = SourceMeta { position, max_ts };
                if id == FINAL {
                    self.ended_sources[source] = Some(meta.clone());
                }
                match flight {
                    Some(f) if (f.id == id || id == FINAL) => {
                        f.collected.sources[source].get_or_insert(meta);
                        true
                    }
                    _ => id == FINAL,
                }
            }
            Ack::Task {
                id,
                task,
                watermark,
                states,
                alignment,
            } => {
                if id == FINAL {
                    self.ended_tasks[task] = true;
                }
                match flight {
                    Some(f) if (f.id == id || id == FINAL) && f.collected.tasks[task].is_none() => {
                        f.collected.tasks[task] = Some((watermark, states));
                        f.collected.alignment = f.collected.alignment.max(alignment);
                        true
                    }
                    _ if id == FINAL => {
                        self.ended.tasks[task] = Some((watermark, states));
                        true
                    }
                    _ => false,
                }
            }
            Ack::Sink { id, sink, pending } => {
                if id == FINAL {
                    self.ended_sinks[sink] = true;
                }
                match flight {
                    Some(f) if (f.id == id || id == FINAL) && f.collected.sinks[sink].is_none() => {
                        f.collected.sinks[sink] = Some(pending);
                        true
                    }
                    _ if id == FINAL => {
                        self.ended.sinks[sink] = Some(pending);
                        true
                    }
                    _ => false,
                }
            }
        }
    }

    /// The checkpoint in flight, once every participant acknowledged it.
    pub(crate) fn take_complete(&mut self) -> Option<InFlight<R>> {
        if self.in_flight.as_ref()?.collected.complete() {
            self.in_flight.take()
        } else {
            None
        }
    }

    /// The last checkpoint, once every participant's input ended and none
    /// is in flight: what they sent at their end.
    pub(crate) fn take_final(&mut self, request: Option<R>) -> Result<InFlight<R>, Option<R>> {
        let everything_ended = self.ended_sources.iter().all(Option::is_some)
            && self.ended_tasks.iter().all(|&e| e)
            && self.ended_sinks.iter().all(|&e| e);
        if !everything_ended || self.in_flight.is_some() {
            return Err(request);
        }
        let (n_sources, n_tasks, n_sinks) = (
            self.ended_sources.len(),
            self.ended_tasks.len(),
            self.ended_sinks.len(),
        );
        let mut collected =
            std::mem::replace(&mut self.ended, Collected::new(n_sources, n_tasks, n_sinks));
        collected.sources.clone_from(&self.ended_sources);
        for slot in collected.tasks.iter_mut() {
            slot.get_or_insert_with(|| (i64::MAX, Vec::new()));
        }
        for slot in collected.sinks.iter_mut() {
            slot.get_or_insert_with(Batch::default);
        }
        Ok(InFlight {
            id: self.last_id + 1,
            started: Instant::now(),
            started_at: now_ms(),
            collected,
            request,
        })
    }

    /// Drops the checkpoint in flight (the run stopped), handing back its
    /// request.
    pub(crate) fn abandon(&mut self) -> Option<R> {
        self.in_flight.take().and_then(|f| f.request)
    }

    /// Checkpoint `id` is durable.
    pub(crate) fn committed(&mut self, id: u64) {
        self.last_id = self.last_id.max(id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::testing::Rng;

    fn sink_batch(n: i64) -> Batch {
        let mut b = Batch::default();
        b.push(None, b"x", n);
        b
    }

    /// Every acknowledgement of checkpoint `id` by (2 sources, 3 tasks, 2
    /// sinks), tagged with values that say who sent them.
    fn acks(id: u64) -> Vec<Ack> {
        let mut out = Vec::new();
        for s in 0..2 {
            out.push(Ack::Source {
                id,
                source: s,
                position: Position::Count(100 + s as u64),
                max_ts: s as i64,
            });
        }
        for t in 0..3 {
            out.push(Ack::Task {
                id,
                task: t,
                watermark: 10 * t as i64,
                states: Vec::new(),
                alignment: Duration::from_millis(t as u64),
            });
        }
        for k in 0..2 {
            out.push(Ack::Sink {
                id,
                sink: k,
                pending: sink_batch(k as i64),
            });
        }
        out
    }

    #[test]
    fn a_checkpoint_completes_with_the_last_of_its_acks_in_any_order() {
        for seed in 1..200u64 {
            let mut rng = Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1);
            let mut tracker: Tracker<()> = Tracker::new(2, 3, 2, 4);
            assert!(tracker.can_trigger());
            assert_eq!(tracker.trigger(None), 5);
            assert!(!tracker.can_trigger(), "one checkpoint in flight at a time");
            let mut pending = acks(5);
            // Stray acknowledgements of an older checkpoint, mixed in.
            let mut strays = acks(4);
            while !pending.is_empty() {
                if rng.below(3) == 0
                    && let Some(stray) = strays.pop()
                {
                    assert!(!tracker.record(stray), "seed {seed}: a stray counted");
                }
                assert!(
                    tracker.take_complete().is_none(),
                    "seed {seed}: complete too early"
                );
                let ack = pending.swap_remove(rng.below(pending.len()));
                assert!(tracker.record(ack));
            }
            let done = tracker.take_complete().expect("complete after every ack");
            assert_eq!(done.id, 5);
            let positions: Vec<Position> = done
                .collected
                .sources
                .iter()
                .map(|s| s.clone().unwrap().position)
                .collect();
            assert_eq!(positions, vec![Position::Count(100), Position::Count(101)]);
            let watermarks: Vec<i64> = done
                .collected
                .tasks
                .iter()
                .map(|t| t.as_ref().unwrap().0)
                .collect();
            assert_eq!(watermarks, vec![0, 10, 20]);
            assert_eq!(done.collected.alignment, Duration::from_millis(2));
            let firsts: Vec<i64> = done
                .collected
                .sinks
                .iter()
                .map(|b| b.as_ref().unwrap().timestamps[0])
                .collect();
            assert_eq!(firsts, vec![0, 1]);
            assert!(!tracker.in_flight());
        }
    }

    #[test]
    fn an_ended_participant_counts_for_the_checkpoint_in_flight_and_every_later_one() {
        let mut tracker: Tracker<()> = Tracker::new(1, 2, 1, 0);
        let id = tracker.trigger(None);
        // Task 1 ends before it sees barrier 1: its final ack stands in.
        tracker.record(Ack::Task {
            id: FINAL,
            task: 1,
            watermark: i64::MAX,
            states: Vec::new(),
            alignment: Duration::ZERO,
        });
        for ack in [
            Ack::Source {
                id,
                source: 0,
                position: Position::Count(7),
                max_ts: 3,
            },
            Ack::Task {
                id,
                task: 0,
                watermark: 2,
                states: Vec::new(),
                alignment: Duration::ZERO,
            },
            Ack::Sink {
                id,
                sink: 0,
                pending: Batch::default(),
            },
        ] {
            tracker.record(ack);
        }
        let first = tracker.take_complete().expect("complete");
        assert_eq!(
            first.collected.tasks[1].as_ref().map(|t| t.0),
            Some(i64::MAX)
        );
        tracker.committed(first.id);
        // The next checkpoint needs no word from task 1.
        let id = tracker.trigger(None);
        assert_eq!(id, 2);
        for ack in [
            Ack::Source {
                id,
                source: 0,
                position: Position::Count(9),
                max_ts: 3,
            },
            Ack::Task {
                id,
                task: 0,
                watermark: 4,
                states: Vec::new(),
                alignment: Duration::ZERO,
            },
        ] {
            tracker.record(ack);
        }
        assert!(
            tracker.take_complete().is_none(),
            "the sink has not acknowledged"
        );
        tracker.record(Ack::Sink {
            id,
            sink: 0,
            pending: Batch::default(),
        });
        let second = tracker.take_complete().expect("complete");
        assert_eq!(
            second.collected.tasks[1].as_ref().map(|t| t.0),
            Some(i64::MAX)
        );
    }

    #[test]
    fn the_last_checkpoint_waits_for_every_end_and_carries_what_was_sent_at_it() {
        let mut tracker: Tracker<&str> = Tracker::new(1, 1, 1, 3);
        tracker.record(Ack::Source {
            id: FINAL,
            source: 0,
            position: Position::Count(12),
            max_ts: 8,
        });
        tracker.record(Ack::Task {
            id: FINAL,
            task: 0,
            watermark: i64::MAX,
            states: Vec::new(),
            alignment: Duration::ZERO,
        });
        assert!(
            !tracker.can_trigger(),
            "no checkpoint after every chain ended"
        );
        assert_eq!(
            tracker.take_final(Some("stop")).err(),
            Some(Some("stop")),
            "the sink has not ended"
        );
        tracker.record(Ack::Sink {
            id: FINAL,
            sink: 0,
            pending: sink_batch(77),
        });
        let Ok(last) = tracker.take_final(Some("stop")) else {
            panic!("everything ended, yet no final checkpoint");
        };
        assert_eq!(last.id, 4);
        assert_eq!(last.request, Some("stop"));
        assert_eq!(
            last.collected.sources[0]
                .as_ref()
                .map(|s| s.position.clone()),
            Some(Position::Count(12))
        );
        assert_eq!(
            last.collected.sinks[0].as_ref().map(|b| b.timestamps[0]),
            Some(77)
        );
    }

    #[test]
    fn an_abandoned_checkpoint_hands_back_its_request() {
        let mut tracker: Tracker<u8> = Tracker::new(1, 1, 0, 0);
        tracker.trigger(Some(9));
        assert_eq!(tracker.abandon(), Some(9));
        assert!(tracker.can_trigger());
    }
}
