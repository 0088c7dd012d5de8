//! weir-io: what a topology reads and writes. [`Source`] and [`Sink`],
//! the two traits connectors implement, the [`Position`] a checkpoint
//! records for a source, the [`CheckpointRef`] an exactly-once sink
//! publishes under, [`DeadLetter`]s, the [`Bindings`] a run is given, and
//! adapters for plain iterators and closures. Connectors depend on this
//! crate, not on the engine. [`fault`]: the fault points of the crash
//! tests (`WEIR_FAULT`), shared by the engine's checkpoint coordinator and
//! every sink.
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

pub mod fault;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};
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

/// What one [`Source::pull_batch`] appended, and what comes next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pulled {
    pub events: usize,
    /// The highest timestamp among them (`i64::MIN` for none).
    pub highest_ts: i64,
    pub next: Next,
}

impl Pulled {
    /// Appends `event` to `batch` and counts it.
    pub fn add(&mut self, batch: &mut Batch, event: &Event) {
        batch.push_event(event);
        self.events += 1;
        self.highest_ts = self.highest_ts.max(event.timestamp);
    }
}

/// What a source has after a [`Source::pull_batch`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    /// Maybe more at once: ask again.
    More,
    /// Nothing now (an unbounded source caught up).
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
    /// Appends up to `max` events to `batch` (the engine builds one batch
    /// per call), saying what comes next; once it has one event it stops
    /// at `until` (the engine's linger), so a source whose `pull` waits
    /// for its next event does not hold a batch back for `max` of them.
    /// The default pulls one event at a time; a source that reads in bulk
    /// (a stream's segment, a Kafka fetch) hands out what it holds at once.
    fn pull_batch(
        &mut self,
        batch: &mut Batch,
        max: usize,
        until: std::time::Instant,
    ) -> Result<Pulled, String> {
        let mut pulled = Pulled {
            events: 0,
            highest_ts: i64::MIN,
            next: Next::More,
        };
        while pulled.events < max && (pulled.events == 0 || std::time::Instant::now() < until) {
            match self.pull()? {
                Pull::Event(event) => pulled.add(batch, &event),
                Pull::Idle => {
                    pulled.next = Next::Idle;
                    break;
                }
                Pull::End => {
                    pulled.next = Next::End;
                    break;
                }
            }
        }
        Ok(pulled)
    }
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
pub struct SourceWaker(Arc<dyn Fn() + Send + Sync>);

impl SourceWaker {
    /// A waker that calls `wake` (the engine wakes the source's task).
    pub fn new(wake: impl Fn() + Send + Sync + 'static) -> Self {
        SourceWaker(Arc::new(wake))
    }

    /// The source may have events: its task pulls again soon.
    pub fn wake(&self) {
        (self.0)();
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

/// What the topology's sources read and its sinks write.
#[derive(Default)]
pub struct Bindings {
    pub sources: HashMap<String, Box<dyn Source>>,
    pub sinks: HashMap<String, Box<dyn Sink>>,
    /// Dead letters are written as they come (at-least-once).
    pub dead_letter: Option<DeadLetterFn>,
    /// Live figures of sources and sinks that keep them, by endpoint name.
    pub stats: BTreeMap<String, Arc<EndpointStats>>,
    /// Per source: event time it had reached elsewhere (its highest
    /// timestamp read), which the run's watermark starts from when its own
    /// checkpoint is behind: on a cluster's node, what the changelog says
    /// of the partitions it took over. `i64::MAX` (an end of input) is
    /// ignored.
    pub event_times: BTreeMap<String, i64>,
}

/// Live figures of one source or sink, kept by its connector as it works
/// and read from any thread while the topology runs (status, `/metrics`,
/// the console): per split, where the source is and where its input ends
/// (their difference is the lag); named counters (records in, transactions
/// committed, ...).
#[derive(Debug, Default)]
pub struct EndpointStats {
    splits: Mutex<BTreeMap<u32, SplitStats>>,
    counters: Mutex<BTreeMap<&'static str, u64>>,
}

/// One split of a source: the next offset it reads and the offset its
/// input ends at, when known.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SplitStats {
    pub position: u64,
    pub end: Option<u64>,
}

impl SplitStats {
    /// Records the source has yet to read, when its end is known.
    pub fn lag(&self) -> Option<u64> {
        self.end.map(|end| end.saturating_sub(self.position))
    }
}

/// [`EndpointStats`] at one moment.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct EndpointSnapshot {
    pub splits: BTreeMap<u32, SplitStats>,
    pub counters: BTreeMap<&'static str, u64>,
}

impl EndpointStats {
    /// Where split `split` is now; `end: None` keeps the end last known.
    pub fn set_split(&self, split: u32, position: u64, end: Option<u64>) {
        if let Ok(mut splits) = self.splits.lock() {
            let s = splits.entry(split).or_default();
            s.position = position;
            if end.is_some() {
                s.end = end;
            }
        }
    }

    /// Where split `split`'s input ends now (keeping its position), if
    /// the split is one the endpoint reports ([`EndpointStats::set_split`]).
    pub fn set_end(&self, split: u32, end: u64) {
        if let Ok(mut splits) = self.splits.lock()
            && let Some(s) = splits.get_mut(&split)
        {
            s.end = Some(end);
        }
    }

    /// Forgets split `split` (the endpoint no longer reads it, or reads it
    /// again from elsewhere: its old figures would mislead).
    pub fn remove_split(&self, split: u32) {
        if let Ok(mut splits) = self.splits.lock() {
            splits.remove(&split);
        }
    }

    /// Adds `n` to counter `name`.
    pub fn add(&self, name: &'static str, n: u64) {
        if let Ok(mut counters) = self.counters.lock() {
            *counters.entry(name).or_default() += n;
        }
    }

    pub fn snapshot(&self) -> EndpointSnapshot {
        EndpointSnapshot {
            splits: self.splits.lock().map(|s| s.clone()).unwrap_or_default(),
            counters: self.counters.lock().map(|c| c.clone()).unwrap_or_default(),
        }
    }
}

/// Where dead letters go.
pub type DeadLetterFn = Box<dyn FnMut(&DeadLetter) -> Result<(), String> + Send>;

/// An event an operator (or a connector) failed on, under `on_error:
/// dead-letter`, with what is known of where and why it failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeadLetter {
    pub operator: String,
    pub error: String,
    /// Wall clock when it failed, ms since the Unix epoch.
    pub failed_at: i64,
    /// The event as the operator received it (its timestamp is the event
    /// time).
    pub event: Event,
    pub context: FailureContext,
}

/// Why an event was dead-lettered, in a word a program can match on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum FailureKind {
    /// The operator returned an error for the event.
    #[default]
    GuestError,
    /// The guest trapped (a panic, an `unreachable`, a bad memory access).
    Trap,
    /// The call ran past its budget (time or fuel).
    OutOfTime,
    /// The guest grew its memory or a table past its cap.
    MemoryCap,
    /// The guest handed the host more than a limit allows (state write
    /// bytes, output bytes).
    OverLimit,
    /// The guest returned a result the contract does not allow.
    InvalidOutput,
    /// The event came behind the watermark (`on_late: dead-letter`).
    Late,
    /// A connector refused it: a sink's target or a source's decoder.
    Refused,
}

impl FailureKind {
    /// Every kind, for parsing and documentation.
    pub const ALL: [FailureKind; 8] = [
        FailureKind::GuestError,
        FailureKind::Trap,
        FailureKind::OutOfTime,
        FailureKind::MemoryCap,
        FailureKind::OverLimit,
        FailureKind::InvalidOutput,
        FailureKind::Late,
        FailureKind::Refused,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            FailureKind::GuestError => "guest-error",
            FailureKind::Trap => "trap",
            FailureKind::OutOfTime => "out-of-time",
            FailureKind::MemoryCap => "memory-cap",
            FailureKind::OverLimit => "over-limit",
            FailureKind::InvalidOutput => "invalid-output",
            FailureKind::Late => "late",
            FailureKind::Refused => "refused",
        }
    }

    /// The kind named `text` (as [`FailureKind::as_str`] writes it).
    pub fn parse(text: &str) -> Option<FailureKind> {
        FailureKind::ALL.into_iter().find(|k| k.as_str() == text)
    }
}

/// Where and why a dead letter failed, as far as the failing side knows
/// it: a connector knows less than an operator task. Empty fields are
/// unknown.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct FailureContext {
    pub topology: Option<String>,
    /// The operator instance (0-based) that failed on it.
    pub instance: Option<u32>,
    /// The module as `name@version` (or the reference the document used,
    /// when the run has no registry), and the `sha256:` digest of its bytes.
    pub module: Option<String>,
    pub digest: Option<String>,
    /// The source the event was read from and its offset there, when the
    /// operator got it straight from a source.
    pub source: Option<String>,
    pub offset: Option<u64>,
    /// Which of the operator's inputs it came on (the index in the
    /// document's `input` list): where a replay feeds it back.
    pub input: u32,
    pub kind: FailureKind,
    /// For a trap: the guest's call stack, innermost frame first, as the
    /// module's name section names its functions (empty without one).
    pub backtrace: Vec<String>,
}

impl FailureContext {
    /// A context that knows only why.
    pub fn of(kind: FailureKind) -> FailureContext {
        FailureContext {
            kind,
            ..FailureContext::default()
        }
    }
}

/// The prefix of the headers a dead letter adds to its event.
const LETTER_HEADER: &str = "weir.";

impl DeadLetter {
    /// The failed event as a one-event batch, carrying the failure in
    /// `weir.*` headers (`weir.operator`, `weir.error`, `weir.failed_at`,
    /// `weir.kind`, `weir.input`, and when known `weir.topology`,
    /// `weir.instance`, `weir.module`, `weir.digest`, `weir.source`,
    /// `weir.offset`, `weir.backtrace` with one frame a line): how dead
    /// letters are written to streams and files. [`DeadLetter::from_event`]
    /// reads it back.
    pub fn to_batch(&self) -> Batch {
        let mut event = self.event.clone();
        let c = &self.context;
        let mut put = |name: &str, value: String| {
            event
                .headers
                .push((format!("{LETTER_HEADER}{name}"), value.into_bytes()));
        };
        put("operator", self.operator.clone());
        put("error", self.error.clone());
        put("failed_at", self.failed_at.to_string());
        put("kind", c.kind.as_str().to_string());
        put("input", c.input.to_string());
        let known = [
            ("topology", c.topology.clone()),
            ("instance", c.instance.map(|i| i.to_string())),
            ("module", c.module.clone()),
            ("digest", c.digest.clone()),
            ("source", c.source.clone()),
            ("offset", c.offset.map(|o| o.to_string())),
            (
                "backtrace",
                (!c.backtrace.is_empty()).then(|| c.backtrace.join("\n")),
            ),
        ];
        for (name, value) in known {
            if let Some(value) = value {
                put(name, value);
            }
        }
        let mut batch = Batch::default();
        batch.push_event(&event);
        batch
    }

    /// The dead letter [`DeadLetter::to_batch`] wrote as `event`: its
    /// `weir.*` headers taken off the event back into the letter. A field
    /// that is missing or does not parse is left unknown (letters written
    /// before a field existed read back without it).
    pub fn from_event(mut event: Event) -> DeadLetter {
        let mut letter = DeadLetter {
            operator: String::new(),
            error: String::new(),
            failed_at: 0,
            event: Event::default(),
            context: FailureContext::default(),
        };
        let c = &mut letter.context;
        event.headers.retain(|(name, value)| {
            let Some(field) = name.strip_prefix(LETTER_HEADER) else {
                return true;
            };
            let text = String::from_utf8_lossy(value).into_owned();
            match field {
                "operator" => letter.operator = text,
                "error" => letter.error = text,
                "failed_at" => letter.failed_at = text.parse().unwrap_or(0),
                "kind" => c.kind = FailureKind::parse(&text).unwrap_or_default(),
                "input" => c.input = text.parse().unwrap_or(0),
                "topology" => c.topology = Some(text),
                "instance" => c.instance = text.parse().ok(),
                "module" => c.module = Some(text),
                "digest" => c.digest = Some(text),
                "source" => c.source = Some(text),
                "offset" => c.offset = text.parse().ok(),
                "backtrace" => c.backtrace = text.lines().map(str::to_string).collect(),
                // A header of the event itself that happens to start so.
                _ => return true,
            }
            false
        });
        letter.event = event;
        letter
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, Instant};

    /// A deadline that never comes in a test.
    fn far() -> Instant {
        Instant::now() + Duration::from_secs(3600)
    }

    #[test]
    fn a_batch_pull_from_a_waiting_source_stops_at_its_deadline() {
        // A source whose pull waits 5 ms for each event: a batch of up to
        // 1,000 stops at the deadline (20 ms) with a handful, not 1,000.
        let mut paced = iter_source((0..).map(|_| {
            std::thread::sleep(Duration::from_millis(5));
            Ok(Event::default())
        }));
        let mut batch = Batch::default();
        let pulled = paced
            .pull_batch(&mut batch, 1000, Instant::now() + Duration::from_millis(20))
            .unwrap();
        assert!((1..=10).contains(&pulled.events), "{}", pulled.events);
        assert_eq!(pulled.next, Next::More);
        // A deadline already past still gives one event.
        let pulled = paced.pull_batch(&mut batch, 1000, Instant::now()).unwrap();
        assert_eq!(pulled.events, 1);
    }

    fn events(n: i64) -> Box<dyn Source> {
        iter_source((0..n).map(|i| {
            Ok(Event {
                timestamp: 100 - i,
                ..Event::default()
            })
        }))
    }

    #[test]
    fn a_dead_letter_reads_back_from_the_event_it_is_written_as() {
        let letter = DeadLetter {
            operator: "score".into(),
            error: "operator `score` trapped: boom".into(),
            failed_at: 1_700,
            event: Event {
                key: Some(b"k".to_vec()),
                value: b"{}".to_vec(),
                timestamp: 42,
                headers: vec![("weir.trace".into(), b"own".to_vec())],
            },
            context: FailureContext {
                topology: Some("fraud".into()),
                instance: Some(2),
                module: Some("score@3".into()),
                digest: Some("sha256:ab".into()),
                source: Some("tx".into()),
                offset: Some(17),
                input: 1,
                kind: FailureKind::Trap,
                backtrace: vec!["score::Score::process".into(), "score::check".into()],
            },
        };
        let batch = letter.to_batch();
        let event = batch.iter().next().unwrap().to_event();
        assert_eq!(DeadLetter::from_event(event), letter);
        // Unknown fields stay unknown; a bad kind reads as the default.
        let mut bare = Event::default();
        bare.headers
            .push(("weir.kind".into(), b"nonsense".to_vec()));
        bare.headers.push(("weir.offset".into(), b"x".to_vec()));
        let read = DeadLetter::from_event(bare);
        assert_eq!(read.context.kind, FailureKind::GuestError);
        assert_eq!(read.context.offset, None);
        assert!(read.event.headers.is_empty());
        for kind in FailureKind::ALL {
            assert_eq!(FailureKind::parse(kind.as_str()), Some(kind));
        }
    }

    #[test]
    fn a_batch_pull_stops_at_its_limit_and_reports_the_highest_time() {
        let mut source = events(5);
        let mut batch = Batch::default();
        let pulled = source.pull_batch(&mut batch, 3, far()).unwrap();
        assert_eq!((pulled.events, pulled.highest_ts), (3, 100));
        assert_eq!(pulled.next, Next::More);
        let pulled = source.pull_batch(&mut batch, 3, far()).unwrap();
        assert_eq!((pulled.events, pulled.highest_ts), (2, 97));
        assert_eq!(pulled.next, Next::End);
        assert_eq!(batch.len(), 5);
    }

    #[test]
    fn a_batch_pull_ends_early_when_the_source_is_idle() {
        struct Trickle(u32);
        impl Source for Trickle {
            fn pull(&mut self) -> Result<Pull, String> {
                self.0 += 1;
                Ok(if self.0 % 2 == 1 {
                    Pull::Event(Event::default())
                } else {
                    Pull::Idle
                })
            }
        }
        let mut batch = Batch::default();
        let pulled = Trickle(0).pull_batch(&mut batch, 10, far()).unwrap();
        assert_eq!((pulled.events, pulled.next), (1, Next::Idle));
    }

    #[test]
    fn a_split_keeps_its_last_known_end_and_reports_its_lag() {
        let stats = EndpointStats::default();
        stats.set_split(2, 10, Some(25));
        stats.set_split(2, 20, None);
        stats.add("records_in", 3);
        stats.add("records_in", 4);
        let snap = stats.snapshot();
        assert_eq!(snap.splits[&2].lag(), Some(5));
        assert_eq!(snap.counters["records_in"], 7);
        stats.set_split(2, 30, None);
        assert_eq!(
            stats.snapshot().splits[&2].lag(),
            Some(0),
            "never below zero"
        );
    }

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
