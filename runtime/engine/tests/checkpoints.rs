//! Checkpoints, savepoints, upgrades, rescaling and state queries, through
//! the engine's `Job` with real guests and state in redb.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use weir_engine::{
    Bindings, CheckpointConfig, CheckpointRef, EngineError, ExecOptions, Job, Modules, Position,
    Pull, Sink, Source, StateConfig, StateValue, run_topology,
};
use weir_fixtures::guest_bytes;
use weir_state::{StateBudget, StateDb};
use weir_topology::parse_topology;
use weir_types::{Batch, Event, wire};
use weir_wasm::{HostConfig, WasmHost};

/// Modules by reference: `(reference, guest)`.
fn modules(refs: &[(&str, &str)]) -> Modules {
    let host = WasmHost::new(HostConfig::default()).unwrap();
    refs.iter()
        .map(|(r, g)| (r.to_string(), host.load(&guest_bytes(g)).unwrap()))
        .collect()
}

/// `n` lines of three words from 300.
fn lines(n: usize) -> Vec<Event> {
    let mut seed: u64 = 7;
    (0..n)
        .map(|i| {
            let words: Vec<String> = (0..3)
                .map(|_| {
                    seed = seed
                        .wrapping_mul(6364136223846793005)
                        .wrapping_add(1442695040888963407);
                    format!("w{}", (seed >> 33) % 300)
                })
                .collect();
            Event {
                key: None,
                value: serde_json::to_vec(&words.join(" ")).unwrap(),
                timestamp: i as i64,
                headers: vec![],
            }
        })
        .collect()
}

/// The events of `all` from a position on, up to `limit`; then idle (an
/// unbounded source that has caught up) or, when `ends`, the end.
struct Gated {
    all: Arc<Vec<Event>>,
    next: usize,
    limit: usize,
    ends: bool,
}

impl Source for Gated {
    fn seek(&mut self, position: &Position) -> Result<(), String> {
        self.next = position.count()? as usize;
        Ok(())
    }
    fn pull(&mut self) -> Result<Pull, String> {
        if self.next < self.limit.min(self.all.len()) {
            self.next += 1;
            return Ok(Pull::Event(self.all[self.next - 1].clone()));
        }
        if self.ends {
            return Ok(Pull::End);
        }
        std::thread::sleep(Duration::from_millis(2));
        Ok(Pull::Idle)
    }
}

/// An exactly-once sink over shared lines: position is the line count.
#[derive(Clone, Default)]
struct Lines(Arc<Mutex<Vec<String>>>);

impl Sink for Lines {
    fn write(&mut self, batch: &Batch) -> Result<(), String> {
        self.0
            .lock()
            .unwrap()
            .extend(batch.iter().map(|e| wire::format_event(&e)));
        Ok(())
    }
    fn exactly_once(&self) -> bool {
        true
    }
    fn position(&mut self) -> Result<u64, String> {
        Ok(self.0.lock().unwrap().len() as u64)
    }
    fn recover(
        &mut self,
        _at: &CheckpointRef,
        position: u64,
        pending: &Batch,
    ) -> Result<(), String> {
        self.0.lock().unwrap().truncate(position as usize);
        self.write(pending)
    }
}

fn topology(module: &str, parallelism: u16) -> weir_topology::TopologyDoc {
    parse_topology(&format!(
        "name: wc\nsources: [{{ name: in, stream: in }}]\noperators:\n  - {{ name: split, module: split-words, input: in }}\n  - {{ name: count, module: {module}, input: split, key_by: key, parallelism: {parallelism} }}\nsinks: [{{ name: out, stream: out, input: count }}]\n"
    ))
    .unwrap()
}

fn durable(dir: &Path) -> StateConfig {
    with_db(StateDb::open(dir).unwrap())
}

/// Checkpoints every 50 ms into `db`.
fn with_db(db: StateDb) -> StateConfig {
    StateConfig {
        db,
        budget: StateBudget::default(),
        checkpoints: Some(CheckpointConfig {
            interval: Some(Duration::from_millis(50)),
            retain: 3,
            ..CheckpointConfig::default()
        }),
    }
}

/// State in `dir`, started from the savepoint at `savepoint`.
fn from_savepoint(dir: &Path, savepoint: &Path) -> StateConfig {
    with_db(StateDb::open_from(dir, savepoint).unwrap())
}

fn bindings(events: &Arc<Vec<Event>>, limit: usize, ends: bool, out: &Lines) -> Bindings {
    Bindings {
        sources: HashMap::from([(
            "in".to_string(),
            Box::new(Gated {
                all: events.clone(),
                next: 0,
                limit,
                ends,
            }) as Box<dyn Source>,
        )]),
        sinks: HashMap::from([("out".to_string(), Box::new(out.clone()) as Box<dyn Sink>)]),
        ..Bindings::default()
    }
}

/// Waits until `split` has read `n` events and `count` has counted (and
/// stored) every word `split` emitted.
fn wait_for_input(job: &Job, n: u64) {
    let start = Instant::now();
    loop {
        let metrics = job.metrics();
        let sum = |op: &str, f: fn(&weir_engine::MetricsSnapshot) -> u64| -> u64 {
            metrics
                .iter()
                .filter(|(o, _, _)| o == op)
                .map(|(_, _, m)| f(m))
                .sum()
        };
        let read = sum("split", |m| m.events_in);
        let words = sum("split", |m| m.events_out);
        // `events_out` moves after a batch is processed (word-count emits
        // one update per word); `events_in` moves before.
        if read >= n && sum("count", |m| m.events_out) >= words {
            return;
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "only {read} of {n} events arrived"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// The lines of an uninterrupted in-memory run over all `events`.
fn oracle(events: &[Event]) -> Vec<String> {
    let out = Lines::default();
    run_topology(
        &topology("word-count", 1),
        &modules(&[("split-words", "split-words"), ("word-count", "word-count")]),
        bindings(&Arc::new(events.to_vec()), usize::MAX, true, &out),
        ExecOptions::default(),
    )
    .unwrap();
    let mut lines = out.0.lock().unwrap().clone();
    lines.sort();
    lines
}

fn count_of(value: &Option<StateValue>) -> u64 {
    match value {
        Some(StateValue::Value(v)) => std::str::from_utf8(v).unwrap().parse().unwrap(),
        other => panic!("no count: {other:?}"),
    }
}

#[test]
fn rescale_one_to_three_and_back_keeps_every_count() {
    let events = Arc::new(lines(3000));
    let expected = oracle(&events);
    let dir = tempfile::tempdir().unwrap();
    let out = Lines::default();
    let mods = modules(&[("split-words", "split-words"), ("word-count", "word-count")]);
    let savepoint = |name: &str| dir.path().join(format!("savepoints/{name}.redb"));

    // Parallelism 1 over the first third, stopped with a savepoint.
    let job = Job::start(
        &topology("word-count", 1),
        &mods,
        bindings(&events, 1000, false, &out),
        ExecOptions::default(),
        Some(durable(&dir.path().join("a"))),
    )
    .unwrap();
    wait_for_input(&job, 1000);
    let report = job.stop(Some(("first", &savepoint("first")))).unwrap();
    let last = report.checkpoints.last().unwrap();
    assert_eq!(last.savepoint.as_deref(), Some("first"));

    // Parallelism 3 over the second third, from that savepoint.
    let state = from_savepoint(&dir.path().join("b"), &savepoint("first"));
    let job = Job::start(
        &topology("word-count", 3),
        &mods,
        bindings(&events, 2000, false, &out),
        ExecOptions::default(),
        Some(state),
    )
    .unwrap();
    wait_for_input(&job, 1000);
    job.stop(Some(("second", &savepoint("second")))).unwrap();

    // Back to 1 for the rest, to the end.
    let state = from_savepoint(&dir.path().join("c"), &savepoint("second"));
    let job = Job::start(
        &topology("word-count", 1),
        &mods,
        bindings(&events, usize::MAX, true, &out),
        ExecOptions::default(),
        Some(state),
    )
    .unwrap();
    job.wait().unwrap();

    let mut got = out.0.lock().unwrap().clone();
    got.sort();
    assert_eq!(got.len(), expected.len(), "lost or duplicated output");
    assert!(got == expected, "output differs from the uninterrupted run");
}

#[test]
fn an_upgrade_keeps_state_and_a_renamed_state_is_refused() {
    let events = Arc::new(lines(1000));
    let dir = tempfile::tempdir().unwrap();
    let sp = dir.path().join("sp.redb");
    let out = Lines::default();
    let v1 = modules(&[("split-words", "split-words"), ("word-count", "word-count")]);
    let job = Job::start(
        &topology("word-count", 2),
        &v1,
        bindings(&events, 500, false, &out),
        ExecOptions::default(),
        Some(durable(&dir.path().join("v1"))),
    )
    .unwrap();
    wait_for_input(&job, 500);
    // A query while it runs sees the live count, once `w1` has reached
    // the counter (the metrics above can run ahead of the split's output:
    // its `events_in` moves before its batch is processed).
    let start = Instant::now();
    let live = loop {
        if let Ok(state @ Some(_)) = job.query_state("count", "count", b"w1") {
            let n = count_of(&state);
            if n > 0 {
                break n;
            }
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "the live count of w1 never showed"
        );
        std::thread::sleep(Duration::from_millis(5));
    };
    assert!(live > 0);
    assert!(matches!(
        job.query_state("nope", "count", b"w1"),
        Err(EngineError::NotRunning(m)) if m.contains("no operator `nope`")
    ));
    job.stop(Some(("v1", &sp))).unwrap();

    // A module that keeps its state under another name is refused before
    // anything runs.
    let renamed = modules(&[("split-words", "split-words"), ("keyed-sum", "keyed-sum")]);
    let state = from_savepoint(&dir.path().join("bad"), &sp);
    let err = Job::start(
        &topology("keyed-sum", 2),
        &renamed,
        bindings(&events, usize::MAX, true, &Lines::default()),
        ExecOptions::default(),
        Some(state),
    )
    .err()
    .expect("a renamed state must be refused");
    let message = err.to_string();
    assert!(
        message.contains("operator `count`") && message.contains("\"count\""),
        "{message}"
    );

    // Version 2 of word-count (another reference, same state names)
    // continues the counts.
    let v2 = modules(&[
        ("split-words", "split-words"),
        ("word-count@2", "word-count"),
    ]);
    let state = from_savepoint(&dir.path().join("v2"), &sp);
    let job = Job::start(
        &topology("word-count@2", 2),
        &v2,
        bindings(&events, usize::MAX, true, &out),
        ExecOptions::default(),
        Some(state),
    )
    .unwrap();
    let report = job.wait().unwrap();
    assert!(report.checkpoints.iter().any(|c| c.final_));
    let mut got = out.0.lock().unwrap().clone();
    got.sort();
    assert_eq!(got, oracle(&events));
}

/// `n` orders `{"user": "u<k>", "amount": a}` over 40 users.
fn orders(n: usize) -> Vec<Event> {
    (0..n)
        .map(|i| Event {
            key: None,
            value: format!(r#"{{"user":"u{}","amount":{}}}"#, i * 7 % 40, i % 13).into_bytes(),
            timestamp: i as i64,
            headers: vec![],
        })
        .collect()
}

/// `keyed-sum` over orders keyed by user, with `config` (YAML) if any.
fn keyed_sum(config: &str) -> weir_topology::TopologyDoc {
    parse_topology(&format!(
        "name: ks\nsources: [{{ name: in, stream: in }}]\noperators:\n  - {{ name: sum, module: keyed-sum, input: in, key_by: {{ field: user }}, parallelism: 2{config} }}\nsinks: [{{ name: out, stream: out, input: sum }}]\n"
    ))
    .unwrap()
}

/// The first byte of user `u3`'s stored running sum.
fn agg_of_u3(job: &Job) -> Option<u8> {
    match job.query_state("sum", "agg", b"u3") {
        Ok(Some(StateValue::Value(v))) => v.first().copied(),
        _ => None,
    }
}

#[test]
fn a_savepoint_of_json_state_restores_after_the_switch_to_the_compact_encoding() {
    let events = Arc::new(orders(1000));
    let expected = {
        let out = Lines::default();
        run_topology(
            &keyed_sum(""),
            &modules(&[("keyed-sum", "keyed-sum")]),
            bindings(&events, usize::MAX, true, &out),
            ExecOptions::default(),
        )
        .unwrap();
        let mut lines = out.0.lock().unwrap().clone();
        lines.sort();
        lines
    };
    let dir = tempfile::tempdir().unwrap();
    let sp = dir.path().join("sp.redb");
    let out = Lines::default();
    let mods = modules(&[("keyed-sum", "keyed-sum")]);

    // Before the switch: the running sums are stored as JSON.
    let job = Job::start(
        &keyed_sum(", config: { state_encoding: json }"),
        &mods,
        bindings(&events, 500, false, &out),
        ExecOptions::default(),
        Some(durable(&dir.path().join("json"))),
    )
    .unwrap();
    let start = Instant::now();
    while out.0.lock().unwrap().len() < 500 || agg_of_u3(&job).is_none() {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "the first 500 updates never came"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    assert_eq!(agg_of_u3(&job), Some(b'{'), "state is not JSON before");
    job.stop(Some(("json", &sp))).unwrap();

    // After it (the guest's default): the JSON sums read back, the counts
    // go on from them, and what is written again is compact.
    let job = Job::start(
        &keyed_sum(""),
        &mods,
        bindings(&events, usize::MAX, true, &out),
        ExecOptions::default(),
        Some(from_savepoint(&dir.path().join("compact"), &sp)),
    )
    .unwrap();
    while !job.is_finished() {
        std::thread::sleep(Duration::from_millis(5));
    }
    assert_eq!(agg_of_u3(&job), Some(0xC1), "state is not compact after");
    job.wait().unwrap();
    let mut got = out.0.lock().unwrap().clone();
    got.sort();
    assert_eq!(got.len(), expected.len(), "lost or duplicated output");
    assert!(got == expected, "output differs from the uninterrupted run");
}

#[test]
fn a_restart_resumes_from_the_last_checkpoint_and_queries_read_finished_state() {
    let events = Arc::new(lines(2000));
    let dir = tempfile::tempdir().unwrap();
    let out = Lines::default();
    let mods = modules(&[("split-words", "split-words"), ("word-count", "word-count")]);
    let job = Job::start(
        &topology("word-count", 2),
        &mods,
        bindings(&events, 1200, false, &out),
        ExecOptions::default(),
        Some(durable(dir.path())),
    )
    .unwrap();
    wait_for_input(&job, 1200);
    let taken = job.checkpoint().unwrap();
    assert!(taken.bytes > 0 && !taken.final_, "{taken:?}");
    let history = job.checkpoints();
    assert_eq!(history.last().map(|c| c.id), Some(taken.id));
    assert!(
        history.iter().map(|c| c.rows).sum::<u64>() > 0,
        "{history:?}"
    );
    // A plain stop: a last checkpoint, no savepoint.
    job.stop(None).unwrap();
    let committed = out.0.lock().unwrap().len();
    assert!(committed > 0);

    let job = Job::start(
        &topology("word-count", 2),
        &mods,
        bindings(&events, usize::MAX, true, &out),
        ExecOptions::default(),
        Some(durable(dir.path())),
    )
    .unwrap();
    let (job_done, report) = {
        let r = loop {
            if job.is_finished() {
                break job.query_state("count", "count", b"w7").unwrap();
            }
            std::thread::sleep(Duration::from_millis(5));
        };
        (r, job.wait().unwrap())
    };
    let expected = oracle(&events);
    let mut got = out.0.lock().unwrap().clone();
    got.sort();
    assert_eq!(got, expected);
    // After the run the query reads the state database.
    let total = events
        .iter()
        .map(|e| {
            String::from_utf8_lossy(&e.value)
                .split(|c: char| !c.is_alphanumeric())
                .filter(|w| *w == "w7")
                .count() as u64
        })
        .sum::<u64>();
    assert_eq!(count_of(&job_done), total);
    assert!(!report.checkpoints.is_empty());
}

#[test]
fn checkpoints_need_durable_state_and_savepoints_need_checkpoints() {
    let events = Arc::new(lines(10));
    let mods = modules(&[("split-words", "split-words"), ("word-count", "word-count")]);
    let job = Job::start(
        &topology("word-count", 1),
        &mods,
        bindings(&events, 10, false, &Lines::default()),
        ExecOptions::default(),
        None,
    )
    .unwrap();
    assert!(
        matches!(job.checkpoint(), Err(EngineError::NotRunning(m)) if m.contains("without checkpoints"))
    );
    let dir = tempfile::tempdir().unwrap();
    let err = job
        .stop(Some(("x", &dir.path().join("x.redb"))))
        .unwrap_err();
    assert!(err.to_string().contains("no checkpoints"), "{err}");
}

#[test]
fn barriers_align_across_two_sources_and_parallel_producers() {
    // Two sources feed `split` (parallelism 2), whose instances all feed
    // every `count` instance: every task has several inputs to align.
    let doc = |p: u16| {
        parse_topology(&format!(
            "name: union\nsources: [{{ name: a, stream: a }}, {{ name: b, stream: b }}]\noperators:\n  - {{ name: split, module: split-words, input: [a, b], parallelism: 2 }}\n  - {{ name: count, module: word-count, input: split, key_by: key, parallelism: {p} }}\nsinks: [{{ name: out, stream: out, input: count }}]\n"
        ))
        .unwrap()
    };
    let a = Arc::new(lines(1500));
    let b = Arc::new(lines(1500).into_iter().rev().collect::<Vec<_>>());
    let mods = modules(&[("split-words", "split-words"), ("word-count", "word-count")]);
    let bind = |limit: usize, ends: bool, out: &Lines| {
        let gated = |all: &Arc<Vec<Event>>| {
            Box::new(Gated {
                all: all.clone(),
                next: 0,
                limit,
                ends,
            }) as Box<dyn Source>
        };
        Bindings {
            sources: HashMap::from([("a".to_string(), gated(&a)), ("b".to_string(), gated(&b))]),
            sinks: HashMap::from([("out".to_string(), Box::new(out.clone()) as Box<dyn Sink>)]),
            ..Bindings::default()
        }
    };
    // The final count of every word, from an uninterrupted in-memory run.
    let finals = |lines: &[String]| {
        let mut last: HashMap<String, u64> = HashMap::new();
        for l in lines {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            let word = v["value"]["word"].as_str().unwrap().to_string();
            let count = v["value"]["count"].as_u64().unwrap();
            let e = last.entry(word).or_default();
            *e = (*e).max(count);
        }
        last
    };
    let oracle = Lines::default();
    run_topology(
        &doc(2),
        &mods,
        bind(usize::MAX, true, &oracle),
        ExecOptions::default(),
    )
    .unwrap();
    let expected = oracle.0.lock().unwrap().clone();

    let dir = tempfile::tempdir().unwrap();
    let out = Lines::default();
    let job = Job::start(
        &doc(3),
        &mods,
        bind(700, false, &out),
        ExecOptions::default(),
        Some(durable(&dir.path().join("a"))),
    )
    .unwrap();
    // A checkpoint while both sources are mid-input, then the savepoint.
    let mid = job.checkpoint().unwrap();
    let sp = dir.path().join("sp.redb");
    let report = job.stop(Some(("mid", &sp))).unwrap();
    let ids: Vec<u64> = report.checkpoints.iter().map(|c| c.id).collect();
    assert!(ids.contains(&mid.id), "{ids:?}");
    let last = report.checkpoints.last().unwrap();
    assert!(
        last.id > mid.id && last.savepoint.as_deref() == Some("mid"),
        "{last:?}"
    );
    let job = Job::start(
        &doc(2),
        &mods,
        bind(usize::MAX, true, &out),
        ExecOptions::default(),
        Some(from_savepoint(&dir.path().join("b"), &sp)),
    )
    .unwrap();
    job.wait().unwrap();

    // Which source an event came from decides the order of counts, so
    // lines differ between runs; every count is emitted exactly once and
    // the finals agree.
    let got = out.0.lock().unwrap().clone();
    assert_eq!(got.len(), expected.len(), "lost or duplicated output");
    assert_eq!(finals(&got), finals(&expected));
    let pairs = |lines: &[String]| {
        let mut p: Vec<String> = lines
            .iter()
            .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["value"].to_string())
            .collect();
        p.sort();
        p
    };
    assert!(
        pairs(&got) == pairs(&expected),
        "a count is missing or repeated"
    );
}

/// A source of two splits (as a Kafka topic of two partitions): events
/// alternate between them and its position is each split's next offset.
struct TwoSplits {
    splits: [Vec<Event>; 2],
    next: [usize; 2],
    turn: usize,
    ends: bool,
    /// Positions the engine said were committed.
    committed: Arc<Mutex<Vec<Position>>>,
}

impl TwoSplits {
    fn new(events: &[Event], ends: bool, committed: &Arc<Mutex<Vec<Position>>>) -> Self {
        let (a, b): (Vec<_>, Vec<_>) = events
            .iter()
            .cloned()
            .enumerate()
            .partition(|(i, _)| i % 2 == 0);
        TwoSplits {
            splits: [
                a.into_iter().map(|(_, e)| e).collect(),
                b.into_iter().map(|(_, e)| e).collect(),
            ],
            next: [0, 0],
            turn: 0,
            ends,
            committed: committed.clone(),
        }
    }
}

impl Source for TwoSplits {
    fn seek(&mut self, position: &Position) -> Result<(), String> {
        let Position::Splits(offsets) = position else {
            return Err(format!("not split offsets: {position:?}"));
        };
        for (split, offset) in offsets {
            self.next[*split as usize] = *offset as usize;
        }
        Ok(())
    }
    fn pull(&mut self) -> Result<Pull, String> {
        for _ in 0..2 {
            let s = self.turn;
            self.turn = 1 - self.turn;
            if let Some(e) = self.splits[s].get(self.next[s]) {
                self.next[s] += 1;
                return Ok(Pull::Event(e.clone()));
            }
        }
        if self.ends {
            return Ok(Pull::End);
        }
        std::thread::sleep(Duration::from_millis(2));
        Ok(Pull::Idle)
    }
    fn position(&self) -> Option<Position> {
        Some(Position::Splits(
            (0..2).map(|s| (s as u32, self.next[s] as u64)).collect(),
        ))
    }
    fn committed(&mut self, position: &Position) -> Result<(), String> {
        self.committed.lock().unwrap().push(position.clone());
        Ok(())
    }
}

/// What a target with a progress marker holds (as a Kafka topic with its
/// marker record, or a table with its progress row): it cannot cut
/// output, so it publishes a checkpoint only when its marker is older.
#[derive(Default)]
struct Target {
    lines: Vec<String>,
    marker: Option<(String, u64)>,
    /// Every lineage a publish or recovery came with.
    lineages: std::collections::BTreeSet<String>,
    /// Fails the first publish of some output, once: before writing
    /// anything (`false`) or after writing it and its marker (`true`).
    fail: Option<bool>,
}

#[derive(Clone, Default)]
struct Marked(Arc<Mutex<Target>>);

impl Sink for Marked {
    fn write(&mut self, _: &Batch) -> Result<(), String> {
        Err("an exactly-once target is written only by publish".into())
    }
    fn exactly_once(&self) -> bool {
        true
    }
    fn publish(&mut self, at: &CheckpointRef, batch: &Batch) -> Result<(), String> {
        let mut t = self.0.lock().unwrap();
        t.lineages.insert(at.lineage.clone());
        let fail = if batch.is_empty() {
            None
        } else {
            t.fail.take()
        };
        if fail == Some(false) {
            return Err("crashed before publishing".into());
        }
        t.lines.extend(batch.iter().map(|e| wire::format_event(&e)));
        t.marker = Some((at.lineage.clone(), at.id));
        if fail == Some(true) {
            return Err("crashed after publishing".into());
        }
        Ok(())
    }
    fn recover(&mut self, at: &CheckpointRef, _: u64, pending: &Batch) -> Result<(), String> {
        let done = self
            .0
            .lock()
            .unwrap()
            .marker
            .as_ref()
            .is_some_and(|(lineage, id)| *lineage == at.lineage && *id >= at.id);
        if done {
            Ok(())
        } else {
            self.publish(at, pending)
        }
    }
}

fn split_bindings(
    events: &[Event],
    ends: bool,
    committed: &Arc<Mutex<Vec<Position>>>,
    out: &Marked,
) -> Bindings {
    Bindings {
        sources: HashMap::from([(
            "in".to_string(),
            Box::new(TwoSplits::new(events, ends, committed)) as Box<dyn Source>,
        )]),
        sinks: HashMap::from([("out".to_string(), Box::new(out.clone()) as Box<dyn Sink>)]),
        ..Bindings::default()
    }
}

/// A run that fails while publishing its first output, then a run from
/// the same state to the end: the target holds every count exactly once.
fn crash_while_publishing(after_writing: bool) {
    let events = lines(1500);
    let expected = oracle(&events);
    let dir = tempfile::tempdir().unwrap();
    let mods = modules(&[("split-words", "split-words"), ("word-count", "word-count")]);
    let committed = Arc::new(Mutex::new(Vec::new()));
    let out = Marked::default();
    out.0.lock().unwrap().fail = Some(after_writing);
    let job = Job::start(
        &topology("word-count", 2),
        &mods,
        split_bindings(&events[..1000], false, &committed, &out),
        ExecOptions::default(),
        Some(durable(dir.path())),
    )
    .unwrap();
    let err = job.wait().expect_err("the failed publish fails the run");
    assert!(err.to_string().contains("crashed"), "{err}");

    let job = Job::start(
        &topology("word-count", 2),
        &mods,
        split_bindings(&events, true, &committed, &out),
        ExecOptions::default(),
        Some(durable(dir.path())),
    )
    .unwrap();
    job.wait().unwrap();
    let target = out.0.lock().unwrap();
    assert_eq!(target.lineages.len(), 1, "a recovery keeps the lineage");
    let mut got = target.lines.clone();
    got.sort();
    assert_eq!(got.len(), expected.len(), "a count is missing or repeated");
    assert_eq!(got, expected);
}

#[test]
fn split_offsets_and_a_marker_target_survive_a_crash_before_publishing() {
    crash_while_publishing(false);
}

#[test]
fn a_marker_target_is_not_published_twice_after_a_crash_after_publishing() {
    crash_while_publishing(true);
}

#[test]
fn a_split_source_hears_which_offsets_are_committed() {
    let events = lines(200);
    let dir = tempfile::tempdir().unwrap();
    let mods = modules(&[("split-words", "split-words"), ("word-count", "word-count")]);
    let committed = Arc::new(Mutex::new(Vec::new()));
    let job = Job::start(
        &topology("word-count", 1),
        &mods,
        split_bindings(&events, false, &committed, &Marked::default()),
        ExecOptions::default(),
        Some(durable(dir.path())),
    )
    .unwrap();
    let all_read = Position::Splits([(0, 100), (1, 100)].into_iter().collect());
    let start = Instant::now();
    while !committed.lock().unwrap().contains(&all_read) {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "never told of {all_read:?}: {:?}",
            committed.lock().unwrap()
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    job.stop(None).unwrap();
}

#[test]
fn a_fresh_start_publishes_under_a_new_lineage() {
    let events = lines(200);
    let mods = modules(&[("split-words", "split-words"), ("word-count", "word-count")]);
    let committed = Arc::new(Mutex::new(Vec::new()));
    let mut lineages = Vec::new();
    for _ in 0..2 {
        let dir = tempfile::tempdir().unwrap();
        let out = Marked::default();
        Job::start(
            &topology("word-count", 1),
            &mods,
            split_bindings(&events, true, &committed, &out),
            ExecOptions::default(),
            Some(durable(dir.path())),
        )
        .unwrap()
        .wait()
        .unwrap();
        lineages.push(out.0.lock().unwrap().marker.clone().unwrap().0);
    }
    assert_ne!(lineages[0], lineages[1]);
}

#[test]
fn an_idle_topology_skips_an_interval_then_sleeps_until_input_comes() {
    let dir = tempfile::tempdir().unwrap();
    let (job, out, go) = paused_word_count(1, ExecOptions::default(), durable(dir.path()));
    wait_for_input(&job, 200);
    // Checkpoints every 50 ms: once one holds all 200 events, the next
    // interval finds nothing new and is skipped.
    let start = Instant::now();
    while job.skipped_checkpoints() == 0 {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "no checkpoint was skipped while idle"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    // Then the coordinator sleeps: six intervals pass with no checkpoint
    // and no further skip (a coordinator waking every interval would
    // count them).
    let committed = job.checkpoints().len();
    let skipped = job.skipped_checkpoints();
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(job.checkpoints().len(), committed, "an idle run committed");
    assert_eq!(
        job.skipped_checkpoints(),
        skipped,
        "the coordinator kept waking while nothing happened"
    );
    // Input wakes it: the rest is read and an interval checkpoint takes it,
    // with nobody asking.
    go.store(true, std::sync::atomic::Ordering::SeqCst);
    wait_for_input(&job, 300);
    let start = Instant::now();
    while job.checkpoints().len() == committed {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "no checkpoint after the input came back"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    // One asked for is taken all the same.
    let committed = job.checkpoints().len();
    job.checkpoint().unwrap();
    assert_eq!(job.checkpoints().len(), committed + 1);
    job.stop(None).unwrap();
    assert!(!out.0.lock().unwrap().is_empty());
}

#[test]
fn output_is_published_once_the_sources_caught_up_not_at_the_next_interval() {
    // The interval is a minute: only a checkpoint taken because the source
    // caught up with its input can publish the exactly-once output within
    // the test.
    let run = |on_idle: Option<Duration>| {
        let dir = tempfile::tempdir().unwrap();
        let mut state = durable(dir.path());
        state.checkpoints = Some(CheckpointConfig {
            interval: Some(Duration::from_secs(60)),
            on_idle,
            ..CheckpointConfig::default()
        });
        let (job, out, go) = paused_word_count(2, ExecOptions::default(), state);
        (job, out, go, dir)
    };
    let published = |out: &Lines| out.0.lock().unwrap().len();
    let wait_for_output = |out: &Lines, more_than: usize, what: &str| {
        let start = Instant::now();
        while published(out) <= more_than {
            assert!(start.elapsed() < Duration::from_secs(20), "{what}");
            std::thread::sleep(Duration::from_millis(5));
        }
    };

    let (job, out, go, _dir) = run(Some(Duration::from_millis(100)));
    wait_for_output(&out, 0, "the first 200 lines' counts were not published");
    wait_for_input(&job, 200);
    let first = published(&out);
    // The checkpoint's record is kept just after its output is published.
    let start = Instant::now();
    while job.checkpoints().is_empty() {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "no checkpoint recorded"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    let taken = job.checkpoints().len();
    // Caught up and nothing new: no further checkpoint while idle.
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(
        job.checkpoints().len(),
        taken,
        "an idle run kept committing"
    );
    // The next burst is published the same way.
    go.store(true, std::sync::atomic::Ordering::SeqCst);
    wait_for_output(&out, first, "the last 100 lines' counts were not published");
    job.stop(None).unwrap();

    // Turned off, the same input waits for the interval.
    let (job, out, _go, _dir) = run(None);
    wait_for_input(&job, 200);
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(
        published(&out),
        0,
        "output was published before its interval"
    );
    job.stop(None).unwrap();
}

#[test]
fn idle_instances_are_unloaded_and_come_back_with_their_state() {
    let expected = oracle(&lines(300));
    let dir = tempfile::tempdir().unwrap();
    let options = ExecOptions {
        unload_idle: Some(Duration::from_millis(200)),
        ..ExecOptions::default()
    };
    let (job, out, go) = paused_word_count(2, options, durable(dir.path()));
    wait_for_input(&job, 200);
    assert!(
        job.usage().wasm_memory_bytes > 0,
        "no instance was live while busy"
    );
    let start = Instant::now();
    while job.usage().wasm_memory_bytes > 0 {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "idle instances still hold {} bytes of linear memory",
            job.usage().wasm_memory_bytes
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    // The rest comes: new instances carry on from the counts kept.
    go.store(true, std::sync::atomic::Ordering::SeqCst);
    let start = Instant::now();
    while sorted(&out) != expected {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "counts after the unload differ from the uninterrupted run's"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    job.stop(None).unwrap();
}

/// Word count (`count` at `parallelism`) over `lines(300)`, read by a
/// source that pauses after 200 lines until `go` is set and then idles
/// past the end; its published output.
fn paused_word_count(
    parallelism: u16,
    options: ExecOptions,
    state: StateConfig,
) -> (Job, Lines, Arc<std::sync::atomic::AtomicBool>) {
    let out = Lines::default();
    let go = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let source = Crashing {
        all: Arc::new(lines(300)),
        next: 0,
        pause: 200,
        crash: usize::MAX,
        go: go.clone(),
    };
    let job = Job::start(
        &topology("word-count", parallelism),
        &modules(&[("split-words", "split-words"), ("word-count", "word-count")]),
        Bindings {
            sources: HashMap::from([("in".to_string(), Box::new(source) as Box<dyn Source>)]),
            sinks: HashMap::from([("out".to_string(), Box::new(out.clone()) as Box<dyn Sink>)]),
            ..Bindings::default()
        },
        options,
        Some(state),
    )
    .unwrap();
    (job, out, go)
}

/// A source that reads `all` up to `pause`, waits there until `go` is set
/// (so the test can take a checkpoint), then reads on and fails at `crash`:
/// the run dies with work done after its last checkpoint. Past the end of
/// `all` (before `crash`) it is idle.
struct Crashing {
    all: Arc<Vec<Event>>,
    next: usize,
    pause: usize,
    crash: usize,
    go: Arc<std::sync::atomic::AtomicBool>,
}

impl Source for Crashing {
    fn seek(&mut self, position: &Position) -> Result<(), String> {
        self.next = position.count()? as usize;
        Ok(())
    }
    fn pull(&mut self) -> Result<Pull, String> {
        if self.next == self.pause && !self.go.load(std::sync::atomic::Ordering::SeqCst) {
            std::thread::sleep(Duration::from_millis(2));
            return Ok(Pull::Idle);
        }
        if self.next >= self.crash {
            return Err("crashed (test)".into());
        }
        if self.next >= self.all.len() {
            return Ok(Pull::Idle);
        }
        self.next += 1;
        Ok(Pull::Event(self.all[self.next - 1].clone()))
    }
}

fn gated(all: &Arc<Vec<Event>>, ends: bool) -> Box<dyn Source> {
    Box::new(Gated {
        all: all.clone(),
        next: 0,
        limit: usize::MAX,
        ends,
    })
}

/// Keyless events from `(timestamp, value)` pairs.
fn timed(pairs: &[(i64, String)]) -> Arc<Vec<Event>> {
    Arc::new(
        pairs
            .iter()
            .map(|(t, v)| Event {
                key: None,
                value: v.clone().into_bytes(),
                timestamp: *t,
                headers: vec![],
            })
            .collect(),
    )
}

/// Runs `doc` with `first` sources until its crashing source pauses, takes
/// a checkpoint, lets it crash, then runs it again to the end with `second`
/// sources from the same state: what the sinks hold then.
fn crash_and_restore(
    doc: &weir_topology::TopologyDoc,
    mods: &Modules,
    first: Vec<(&str, Box<dyn Source>)>,
    second: Vec<(&str, Box<dyn Source>)>,
    go: &Arc<std::sync::atomic::AtomicBool>,
    sinks: &[(&str, &Lines)],
    wait_for: (&str, u64),
) {
    let dir = tempfile::tempdir().unwrap();
    let bind = |sources: Vec<(&str, Box<dyn Source>)>| Bindings {
        sources: sources
            .into_iter()
            .map(|(n, s)| (n.to_string(), s))
            .collect(),
        sinks: sinks
            .iter()
            .map(|(n, l)| (n.to_string(), Box::new((*l).clone()) as Box<dyn Sink>))
            .collect(),
        ..Bindings::default()
    };
    let job = Job::start(
        doc,
        mods,
        bind(first),
        ExecOptions::default(),
        Some(durable(dir.path())),
    )
    .unwrap();
    let start = Instant::now();
    let (op, n) = wait_for;
    while job
        .metrics()
        .iter()
        .filter(|(o, _, _)| o == op)
        .map(|(_, _, m)| m.events_in)
        .sum::<u64>()
        < n
    {
        assert!(start.elapsed() < Duration::from_secs(60), "no progress");
        std::thread::sleep(Duration::from_millis(5));
    }
    let taken = job.checkpoint().unwrap();
    assert!(!taken.final_);
    go.store(true, std::sync::atomic::Ordering::SeqCst);
    let err = job.wait().expect_err("the source crashes the run");
    assert!(err.to_string().contains("crashed"), "{err}");
    let job = Job::start(
        doc,
        mods,
        bind(second),
        ExecOptions::default(),
        Some(durable(dir.path())),
    )
    .unwrap();
    job.wait().unwrap();
}

fn sorted(lines: &Lines) -> Vec<String> {
    let mut got = lines.0.lock().unwrap().clone();
    got.sort();
    got
}

#[test]
fn an_event_time_join_through_a_crash_and_restore_equals_its_oracle() {
    let input = weir_fixtures::join::join_input(1500, 5, 25);
    let expected = weir_fixtures::join::enrich_oracle_lines(&input);
    let (tx, profiles) = (timed(&input.transactions), timed(&input.profiles));
    let doc = parse_topology(
        "name: join\nsources:\n  - { name: tx, stream: tx, watermark: { max_out_of_orderness_ms: 25 } }\n  - { name: profiles, stream: profiles, watermark: { max_out_of_orderness_ms: 25 } }\noperators:\n  - { name: enrich, module: enrich, input: [tx, profiles], key_by: { field: user }, parallelism: 3 }\nsinks: [{ name: out, stream: out, input: enrich }]\n",
    )
    .unwrap();
    let mods = modules(&[("enrich", "enrich")]);
    let go = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let out = Lines::default();
    let crashing = Box::new(Crashing {
        all: tx.clone(),
        next: 0,
        pause: 600,
        crash: 1100,
        go: go.clone(),
    });
    crash_and_restore(
        &doc,
        &mods,
        vec![("tx", crashing), ("profiles", gated(&profiles, false))],
        vec![
            ("tx", gated(&tx, true)),
            ("profiles", gated(&profiles, true)),
        ],
        &go,
        &[("out", &out)],
        ("enrich", 600),
    );
    let got = sorted(&out);
    assert_eq!(got.len(), expected.len(), "lost or repeated joins");
    assert!(got == expected, "output differs from the oracle");
}

#[test]
fn side_outputs_are_exactly_once_on_both_outputs_through_a_crash() {
    let input = weir_fixtures::join::join_input(2000, 4, 20);
    let events = timed(&input.transactions);
    let doc = parse_topology(
        "name: fraud\nsources: [{ name: in, stream: in, watermark: { max_out_of_orderness_ms: 20 } }]\noperators:\n  - { name: fraud, module: fraud-detector, input: in, key_by: { field: user }, parallelism: 2, config: { max_count: 2, min_amount: 600, window_ms: 120 } }\nsinks:\n  - { name: all, stream: all, input: fraud }\n  - { name: alerts, stream: alerts, input: fraud.alerts }\n",
    )
    .unwrap();
    let mods = modules(&[("fraud-detector", "fraud-detector")]);
    // The uninterrupted run.
    let (all, alerts) = (Lines::default(), Lines::default());
    run_topology(
        &doc,
        &mods,
        Bindings {
            sources: HashMap::from([("in".to_string(), gated(&events, true))]),
            sinks: HashMap::from([
                ("all".to_string(), Box::new(all.clone()) as Box<dyn Sink>),
                (
                    "alerts".to_string(),
                    Box::new(alerts.clone()) as Box<dyn Sink>,
                ),
            ]),
            ..Bindings::default()
        },
        ExecOptions::default(),
    )
    .unwrap();
    let (expected_all, expected_alerts) = (sorted(&all), sorted(&alerts));
    assert_eq!(
        expected_all.len(),
        2000,
        "every transaction on the main output"
    );
    assert!(
        expected_alerts.len() > 20,
        "{} alerts",
        expected_alerts.len()
    );

    let go = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let (all, alerts) = (Lines::default(), Lines::default());
    let crashing = Box::new(Crashing {
        all: events.clone(),
        next: 0,
        pause: 800,
        crash: 1500,
        go: go.clone(),
    });
    crash_and_restore(
        &doc,
        &mods,
        vec![("in", crashing)],
        vec![("in", gated(&events, true))],
        &go,
        &[("all", &all), ("alerts", &alerts)],
        ("fraud", 800),
    );
    assert_eq!(sorted(&all), expected_all, "main output");
    assert_eq!(sorted(&alerts), expected_alerts, "side output");
}

#[test]
fn event_time_ttl_holds_through_savepoints_and_expired_state_is_not_restored() {
    let event = |key: &str, value: &str, ts: i64| Event {
        key: Some(key.as_bytes().to_vec()),
        value: format!("\"{value}\"").into_bytes(),
        timestamp: ts,
        headers: vec![],
    };
    let events = Arc::new(vec![
        event("old", "a", 1000),
        event("new", "n", 1010),
        // After the first savepoint: `old` is still live (watermark 1009),
        event("old", "peek", 1050),
        // then the watermark passes 1000 + 100 and `old` has expired.
        event("x", "x", 5000),
        event("old", "peek", 5010),
    ]);
    let doc = parse_topology(
        "name: ttl\nsources: [{ name: in, stream: in }]\noperators:\n  - { name: ttl, module: ttl-state, input: in, key_by: key, config: { domain: event, ttl_ms: 100 } }\nsinks: [{ name: out, stream: out, input: ttl }]\n",
    )
    .unwrap();
    let mods = modules(&[("ttl-state", "ttl-state")]);
    // One event per batch: each is processed under the watermark of the
    // ones before it, whatever the timing.
    let options = ExecOptions {
        batch_size: 1,
        ..ExecOptions::default()
    };
    let dir = tempfile::tempdir().unwrap();
    let out = Lines::default();
    let wait_in = |job: &Job, n: u64| {
        let start = Instant::now();
        while job
            .metrics()
            .iter()
            .map(|(_, _, m)| m.events_in)
            .sum::<u64>()
            < n
        {
            assert!(start.elapsed() < Duration::from_secs(60), "no progress");
            std::thread::sleep(Duration::from_millis(5));
        }
    };
    let first = dir.path().join("first.redb");
    let job = Job::start(
        &doc,
        &mods,
        bindings(&events, 2, false, &out),
        options,
        Some(durable(&dir.path().join("a"))),
    )
    .unwrap();
    wait_in(&job, 2);
    job.stop(Some(("first", &first))).unwrap();

    let second = dir.path().join("second.redb");
    let job = Job::start(
        &doc,
        &mods,
        bindings(&events, 5, false, &out),
        options,
        Some(from_savepoint(&dir.path().join("b"), &first)),
    )
    .unwrap();
    wait_in(&job, 3);
    job.stop(Some(("second", &second))).unwrap();

    let mut got = out.0.lock().unwrap().clone();
    got.sort();
    let line = |key: &str, seen: &str, ts: i64| {
        format!(r#"{{"key":"{key}","value":{seen},"timestamp":{ts}}}"#)
    };
    let mut expected = vec![
        line("old", r#"{"last":null,"seen":0,"log":0}"#, 1000),
        line("new", r#"{"last":null,"seen":0,"log":0}"#, 1010),
        line("old", r#"{"last":"a","seen":1,"log":1}"#, 1050),
        line("x", r#"{"last":null,"seen":0,"log":0}"#, 5000),
        line("old", r#"{"last":null,"seen":0,"log":0}"#, 5010),
    ];
    expected.sort();
    assert_eq!(got, expected);

    // The expired entries of `old` were removed in a checkpoint commit:
    // the second savepoint does not hold them; `new`'s are still there.
    // (A run over no input, to read the state the savepoint restored.)
    let job = Job::start(
        &doc,
        &mods,
        bindings(&Arc::new(Vec::new()), 0, true, &Lines::default()),
        options,
        Some(from_savepoint(&dir.path().join("c"), &second)),
    )
    .unwrap();
    while !job.is_finished() {
        std::thread::sleep(Duration::from_millis(5));
    }
    let state = |key: &str| job.query_state("ttl", "last", key.as_bytes()).unwrap();
    assert_eq!(state("old"), None);
    assert!(state("new").is_some());
    job.wait().unwrap();
}

/// A word count over `mods` with `count` at `parallelism`, its state in
/// `state`.
fn word_count(mods: &Modules, parallelism: u16, bindings: Bindings, state: StateConfig) -> Job {
    Job::start(
        &topology("word-count", parallelism),
        mods,
        bindings,
        ExecOptions::default(),
        Some(state),
    )
    .unwrap()
}

/// Runs the test `name` again in a child process under `WEIR_FAULT=fault`
/// (read once per process; no other test's commit may meet the fault) and
/// checks that it passed there. True in that child, which runs the test.
fn under_fault(name: &str, fault: &str) -> bool {
    if std::env::var("WEIR_FAULT").is_ok_and(|f| f == fault) {
        return true;
    }
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args([name, "--exact", "--nocapture", "--test-threads=1"])
        .env("WEIR_FAULT", fault)
        .output()
        .unwrap();
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(
        out.status.success() && stdout.contains("1 passed"),
        "{name} under WEIR_FAULT={fault}:\n{stdout}\n{stderr}"
    );
    false
}

#[test]
fn checkpoints_whose_redb_commit_fails_are_retried_without_stopping_the_run() {
    let name = "checkpoints_whose_redb_commit_fails_are_retried_without_stopping_the_run";
    if !under_fault(name, "checkpoint-redb-error:2") {
        return;
    }
    let events = Arc::new(lines(1500));
    let dir = tempfile::tempdir().unwrap();
    let out = Lines::default();
    let mods = modules(&[("split-words", "split-words"), ("word-count", "word-count")]);
    let job = word_count(
        &mods,
        2,
        bindings(&events, 1000, false, &out),
        durable(dir.path()),
    );
    wait_for_input(&job, 1000);
    // Two interval commits fail inside redb; the database is reopened and
    // a later one commits what they held, in the same run.
    let start = Instant::now();
    while job.failed_checkpoints().0 < 2 || job.checkpoints().is_empty() {
        assert!(!job.is_finished(), "the run stopped");
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "{:?}, {} committed",
            job.failed_checkpoints(),
            job.checkpoints().len()
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    let (total, in_a_row, last) = job.failed_checkpoints();
    assert_eq!((total, in_a_row), (2, 0), "{last:?}");
    let last = last.unwrap();
    assert!(
        last.contains("injected by WEIR_FAULT=checkpoint-redb-error"),
        "{last}"
    );
    assert!(!job.is_finished());
    job.stop(None).unwrap();
    // A new run restores the checkpoints written after the reopen: the
    // counts of the aborted ones are in them, and nothing is published twice.
    let job = word_count(
        &mods,
        2,
        bindings(&events, usize::MAX, true, &out),
        durable(dir.path()),
    );
    job.wait().unwrap();
    assert_eq!(sorted(&out), oracle(&events));
}

#[test]
fn redb_commit_failures_past_the_tolerated_number_fail_the_run_with_the_cause() {
    let name = "redb_commit_failures_past_the_tolerated_number_fail_the_run_with_the_cause";
    if !under_fault(name, "checkpoint-redb-error:2") {
        return;
    }
    let events = Arc::new(lines(300));
    let dir = tempfile::tempdir().unwrap();
    let out = Lines::default();
    let mods = modules(&[("split-words", "split-words"), ("word-count", "word-count")]);
    let mut state = durable(dir.path());
    if let Some(c) = state.checkpoints.as_mut() {
        c.tolerable_failed = 1;
    }
    let job = word_count(&mods, 1, bindings(&events, 300, false, &out), state);
    let err = job.wait().unwrap_err().to_string();
    assert!(
        err.contains("2 in a row failed, over the 1 tolerated")
            && err.contains("injected by WEIR_FAULT=checkpoint-redb-error"),
        "{err}"
    );
    assert!(
        out.0.lock().unwrap().is_empty(),
        "a failed checkpoint published"
    );
}
