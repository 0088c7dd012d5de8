//! A topology's dead letters: read from its dead-letter stream (each
//! event's `weir.*` headers carry the failure's context, see
//! `weir_io::DeadLetter::to_batch`), and replayed, a range at a time, into
//! the operators of its running job (after an upgrade to a fixed module),
//! with what failed again reported. A replay reads the stream and calls the
//! job with no lock held.

use weir_connectors::{Stream, dead_letter_stream};
use weir_engine::DeadLetter;
use weir_types::Event;

use super::{Topologies, TopologiesError, engine_err};

/// Most dead letters one read returns.
pub const MAX_DEAD_LETTERS_READ: usize = 1_000;
/// Most dead letters one replay feeds back.
pub const MAX_DEAD_LETTERS_REPLAY: u64 = 1_000;

/// Why a topology has no dead letters to replay.
const WRITES_NO_LETTERS: &str = "it writes no dead letters: none of its operators has `on_error: dead-letter` or `on_late: dead-letter`, and no Kafka source or sink outside Weir writes any";

/// A page of dead letters.
#[derive(Debug, Clone)]
pub struct DeadLetterPage {
    /// The dead-letter stream read (`None`: the topology writes none).
    pub stream: Option<String>,
    /// Each letter with its offset in the stream.
    pub letters: Vec<(u64, DeadLetter)>,
    /// Where the next page starts.
    pub next_offset: u64,
    /// The first offset still held, and the offset the next letter gets.
    pub start_offset: u64,
    pub end_offset: u64,
}

/// What a replay did, letter by letter (by offset in the dead-letter
/// stream).
#[derive(Debug, Clone, Default)]
pub struct ReplayReport {
    pub stream: String,
    /// Letters the operator now handles.
    pub passed: Vec<u64>,
    /// Letters it failed on again: offset, operator, the new error. Each
    /// is dead-lettered again (at a new offset).
    pub failed: Vec<(u64, String, String)>,
    /// Letters not replayed: offset and why (not an operator's letter).
    pub skipped: Vec<(u64, String)>,
}

/// A dead-letter stream's name and the stream, each when there is one.
type LetterStream = (Option<String>, Option<std::sync::Arc<Stream>>);

/// A letter to replay: its offset, the input it came on, its event.
type Replayed = (u64, u32, Event);

fn stream_err(topology: &str) -> impl Fn(weir_connectors::StreamError) -> TopologiesError + '_ {
    move |e| TopologiesError::Io {
        what: format!("the dead-letter stream of topology `{topology}`"),
        reason: e.to_string(),
    }
}

impl Topologies {
    /// The name of the dead-letter stream of `name` (`None`: it writes no
    /// dead letters) and the stream (`None`: no letter written yet).
    fn letter_stream(&self, name: &str) -> Result<LetterStream, TopologiesError> {
        let record = self.records.read(name)?;
        let Some(stream) = dead_letter_stream(&record.doc) else {
            return Ok((None, None));
        };
        let existing = self.streams.existing(&stream).map_err(stream_err(name))?;
        Ok((Some(stream), existing))
    }

    /// Up to `limit` (at most [`MAX_DEAD_LETTERS_READ`]) dead letters of
    /// `name` from `offset` (default: the oldest held), in at most about
    /// `max_bytes`.
    pub fn dead_letters(
        &self,
        name: &str,
        offset: Option<u64>,
        limit: usize,
        max_bytes: usize,
    ) -> Result<DeadLetterPage, TopologiesError> {
        let limit = limit.min(MAX_DEAD_LETTERS_READ);
        let (stream_name, stream) = self.letter_stream(name)?;
        let Some(stream) = stream else {
            return match offset {
                None | Some(0) => Ok(DeadLetterPage {
                    stream: stream_name,
                    letters: Vec::new(),
                    next_offset: 0,
                    start_offset: 0,
                    end_offset: 0,
                }),
                Some(o) => Err(bad_range(
                    name,
                    format!(
                        "offset {o} is past the end of its dead letters (none yet): start at offset 0"
                    ),
                )),
            };
        };
        let info = stream.info();
        let from = offset.unwrap_or(info.start_offset);
        if from < info.start_offset || from > info.end_offset {
            return Err(bad_range(
                name,
                format!(
                    "offset {from} is outside its dead letters, which span offsets {}..{} (the end is where the next letter goes)",
                    info.start_offset, info.end_offset
                ),
            ));
        }
        let (events, next) = stream
            .read_capped(from, limit, max_bytes)
            .map_err(stream_err(name))?;
        let letters = (from..)
            .zip(events)
            .map(|(at, e)| (at, DeadLetter::from_event(e)))
            .collect();
        Ok(DeadLetterPage {
            stream: stream_name,
            letters,
            next_offset: next,
            start_offset: info.start_offset,
            end_offset: info.end_offset,
        })
    }

    /// Feeds the dead letters at offsets `from..to` of `name`'s
    /// dead-letter stream back into the operators that failed on them, in
    /// the running job (at most [`MAX_DEAD_LETTERS_REPLAY`] at once).
    /// Letters of sinks and sources (refused by a connector) are skipped.
    pub fn replay_dead_letters(
        &self,
        name: &str,
        from: u64,
        to: u64,
    ) -> Result<ReplayReport, TopologiesError> {
        let (stream_name, stream) = self.letter_stream(name)?;
        let Some(stream_name) = stream_name else {
            return Err(bad_range(name, WRITES_NO_LETTERS.into()));
        };
        if to <= from {
            return Err(bad_range(
                name,
                format!(
                    "the range {from}..{to} is empty: give \"from\" below \"to\" (\"to\" is exclusive)"
                ),
            ));
        }
        if to - from > MAX_DEAD_LETTERS_REPLAY {
            return Err(bad_range(
                name,
                format!(
                    "the range {from}..{to} holds {} letters, over the {MAX_DEAD_LETTERS_REPLAY} one replay takes: replay it in parts",
                    to - from
                ),
            ));
        }
        let (start, end) = stream
            .as_ref()
            .map_or((0, 0), |s| (s.info().start_offset, s.end_offset()));
        if from < start || to > end {
            return Err(bad_range(
                name,
                format!(
                    "the range {from}..{to} is outside its dead letters, which span offsets {start}..{end}"
                ),
            ));
        }
        let Some(stream) = stream else {
            return Err(bad_range(name, "it has no dead letters yet".into()));
        };
        let record = self.records.read(name)?;
        let owner = self.owner(name);
        let Some(job) = owner.lease() else {
            return Err(TopologiesError::NotRunning(name.to_string()));
        };
        let mut letters = Vec::new();
        let mut at = from;
        while at < to {
            let want = usize::try_from(to - at).unwrap_or(usize::MAX);
            let (events, next) = stream.read(at, want).map_err(stream_err(name))?;
            if events.is_empty() {
                break;
            }
            letters.extend((at..).zip(events.into_iter().map(DeadLetter::from_event)));
            at = next;
        }
        let mut report = ReplayReport {
            stream: stream_name,
            ..ReplayReport::default()
        };
        // Letters by operator, in stream order within each.
        let mut by_operator: Vec<(String, Vec<Replayed>)> = Vec::new();
        for (offset, letter) in letters {
            if !record
                .doc
                .operators
                .iter()
                .any(|o| o.name == letter.operator)
            {
                report.skipped.push((
                    offset,
                    format!(
                        "`{}` is not an operator of the topology (a connector refused this event): only operators' letters are replayed",
                        letter.operator
                    ),
                ));
                continue;
            }
            let entry = (offset, letter.context.input, letter.event);
            match by_operator.iter_mut().find(|(o, _)| *o == letter.operator) {
                Some((_, list)) => list.push(entry),
                None => by_operator.push((letter.operator, vec![entry])),
            }
        }
        for (operator, list) in by_operator {
            let events: Vec<(u32, Event)> = list
                .iter()
                .map(|(_, input, e)| (*input, e.clone()))
                .collect();
            let again = job.replay(&operator, &events).map_err(engine_err(name))?;
            for ((offset, _, _), failed) in list.into_iter().zip(again) {
                match failed {
                    None => report.passed.push(offset),
                    Some(error) => report.failed.push((offset, operator.clone(), error)),
                }
            }
        }
        report.passed.sort_unstable();
        report.failed.sort_by_key(|f| f.0);
        tracing::info!(
            topology = name,
            from,
            to,
            passed = report.passed.len(),
            failed = report.failed.len(),
            skipped = report.skipped.len(),
            "dead letters replayed"
        );
        Ok(report)
    }
}

fn bad_range(topology: &str, message: String) -> TopologiesError {
    TopologiesError::BadRange {
        topology: topology.to_string(),
        message,
    }
}
