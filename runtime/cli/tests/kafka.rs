//! Kafka sources and sinks against a real Apache Kafka broker (started by
//! `weir_fixtures::kafka::KafkaBroker`; its jars come from `cargo xtask
//! kafka`): the sink's transactions and markers across recoveries, the
//! source's offsets and dead letters, a word count through `weir run`, a
//! `weir serve` killed with SIGKILL and at each crash point of the sink
//! while the broker is restarted too, and the errors of a missing topic
//! and of brokers that do not answer. Results are read back with a
//! `read_committed` consumer: every count must be there exactly once.

mod server;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use rdkafka::Message;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError as RdError;
use rdkafka::message::Headers;
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use serde_json::{Value, json};
use server::{Server, eventually};
use weir_connectors::{SourceMode, bind_kafka, create_topic};
use weir_engine::{Bindings, CheckpointRef, Position, Pull};
use weir_fixtures::kafka::KafkaBroker;
use weir_fixtures::{guest_bytes, guest_dir};
use weir_types::{Batch, Event};

/// A record as a test reads it back.
#[derive(Debug, Clone)]
struct Record {
    partition: i32,
    offset: i64,
    key: Option<Vec<u8>>,
    value: Vec<u8>,
    headers: BTreeMap<String, String>,
}

fn topic(brokers: &str, name: &str, partitions: i32) {
    create_topic(brokers, name, partitions, &[]).unwrap();
}

/// Writes `records` (key, value) to `topic` and waits for them.
fn produce(brokers: &str, topic: &str, records: &[(Option<String>, Vec<u8>)]) {
    let producer: ThreadedProducer<DefaultProducerContext> = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("partitioner", "murmur2_random")
        .set("linger.ms", "5")
        .create()
        .unwrap();
    for (key, value) in records {
        let mut record = BaseRecord::<str, [u8]>::to(topic).payload(value);
        if let Some(k) = key {
            record = record.key(k);
        }
        loop {
            match producer.send(record) {
                Ok(()) => break,
                Err((_, back)) => {
                    record = back;
                    std::thread::sleep(Duration::from_millis(5));
                }
            }
        }
    }
    producer.flush(Duration::from_secs(60)).unwrap();
}

/// Everything `topic` holds for a `read_committed` reader now.
fn read_committed(brokers: &str, topic: &str) -> Vec<Record> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", "weir-test-reader")
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "true")
        .set("isolation.level", "read_committed")
        .create()
        .unwrap();
    let metadata = consumer
        .fetch_metadata(Some(topic), Duration::from_secs(10))
        .unwrap();
    let partitions: Vec<i32> = metadata.topics()[0]
        .partitions()
        .iter()
        .map(|p| p.id())
        .collect();
    assert!(!partitions.is_empty(), "topic {topic} has no partitions");
    let mut list = TopicPartitionList::new();
    for &p in &partitions {
        list.add_partition_offset(topic, p, Offset::Beginning)
            .unwrap();
    }
    consumer.assign(&list).unwrap();
    let mut open: BTreeSet<i32> = partitions.into_iter().collect();
    let mut out = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while !open.is_empty() {
        assert!(
            Instant::now() < deadline,
            "could not read {topic} to its end"
        );
        match consumer.poll(Duration::from_millis(100)) {
            Some(Ok(m)) => out.push(Record {
                partition: m.partition(),
                offset: m.offset(),
                key: m.key().map(<[u8]>::to_vec),
                value: m.payload().unwrap_or_default().to_vec(),
                headers: m
                    .headers()
                    .map(|h| {
                        h.iter()
                            .map(|h| {
                                (
                                    h.key.to_string(),
                                    String::from_utf8_lossy(h.value.unwrap_or_default()).into(),
                                )
                            })
                            .collect()
                    })
                    .unwrap_or_default(),
            }),
            Some(Err(RdError::PartitionEOF(p))) => {
                open.remove(&p);
            }
            Some(Err(_)) | None => {}
        }
    }
    out
}

fn batch(values: &[&str]) -> Batch {
    values
        .iter()
        .map(|v| Event {
            key: Some(v.as_bytes().to_vec()),
            value: format!("\"{v}\"").into_bytes(),
            timestamp: 1_700_000_000_000,
            headers: vec![("origin".into(), b"test".to_vec())],
        })
        .collect()
}

fn doc(text: &str) -> weir_topology::TopologyDoc {
    weir_topology::parse_topology(text).unwrap()
}

#[test]
fn a_sink_publishes_each_checkpoint_once_across_recoveries() {
    let broker = KafkaBroker::start();
    let brokers = broker.bootstrap();
    topic(&brokers, "out", 2);
    let d = doc(
        "name: t\nsources: [{name: s, stream: s}]\nsinks: [{name: out, kafka: {topic: out, format: text}, input: s}]\n",
    );
    let bind = || {
        let mut bindings = Bindings::default();
        bind_kafka(&d, Some(&brokers), SourceMode::Follow, &mut bindings).unwrap();
        bindings.sinks.remove("out").unwrap()
    };
    let at = |id| CheckpointRef {
        lineage: "run-1".into(),
        id,
    };
    let mut sink = bind();
    assert!(sink.exactly_once());
    sink.publish(&at(1), &batch(&["a", "b"])).unwrap();
    // A crash after the publish: recovery finds the marker of checkpoint 1
    // and publishes nothing again.
    drop(sink);
    let mut sink = bind();
    sink.recover(&at(1), 0, &batch(&["a", "b"])).unwrap();
    // Checkpoint 2 committed in Weir but never reached Kafka: recovery
    // publishes it.
    sink.recover(&at(2), 0, &batch(&["c"])).unwrap();
    sink.publish(&at(3), &batch(&[])).unwrap();
    // A new lineage (a fresh start) does not take run-1's marker for its own.
    let mut sink = bind();
    sink.recover(
        &CheckpointRef {
            lineage: "run-2".into(),
            id: 2,
        },
        0,
        &batch(&["d"]),
    )
    .unwrap();
    let out = read_committed(&brokers, "out");
    let mut got: Vec<String> = out
        .iter()
        .map(|r| String::from_utf8_lossy(&r.value).into_owned())
        .collect();
    got.sort();
    // Text format: the JSON string values go out as their text.
    assert_eq!(got, ["a", "b", "c", "d"]);
    let a = out.iter().find(|r| r.value == b"a").unwrap();
    assert_eq!(a.key.as_deref(), Some(&b"a"[..]));
    assert_eq!(a.headers.get("origin").map(String::as_str), Some("test"));
    // The markers are in the compacted progress topic, one per publish.
    let markers = read_committed(&brokers, weir_connectors::DEFAULT_PROGRESS_TOPIC);
    let last: Value = serde_json::from_slice(&markers.last().unwrap().value).unwrap();
    assert_eq!(
        last,
        json!({"topology": "t", "sink": "out", "lineage": "run-2", "checkpoint": 2})
    );
    assert_eq!(markers.len(), 3, "{markers:?}");
}

#[test]
fn a_source_resumes_from_its_offsets_and_dead_letters_unreadable_records() {
    let broker = KafkaBroker::start();
    let brokers = broker.bootstrap();
    topic(&brokers, "in", 3);
    let mut records: Vec<(Option<String>, Vec<u8>)> = (0..30)
        .map(|i| {
            (
                Some(format!("k{i}")),
                format!("{{\"n\": {i}}}").into_bytes(),
            )
        })
        .collect();
    records.push((Some("bad".into()), b"not json {".to_vec()));
    produce(&brokers, "in", &records);
    let d = doc(
        "name: t\nsources: [{name: in, kafka: {topic: in}}]\nsinks: [{name: o, stream: o, input: in}]\n",
    );
    let letters = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let bind = || {
        let log = letters.clone();
        let mut bindings = Bindings {
            dead_letter: Some(Box::new(move |l: &weir_engine::DeadLetter| {
                log.lock().unwrap().push(l.clone());
                Ok(())
            })),
            ..Bindings::default()
        };
        bind_kafka(&d, Some(&brokers), SourceMode::Bounded, &mut bindings).unwrap();
        bindings.sources.remove("in").unwrap()
    };
    let drain = |source: &mut Box<dyn weir_engine::Source>| {
        let mut got = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            assert!(Instant::now() < deadline, "the bounded source never ended");
            match source.pull().unwrap() {
                Pull::Event(e) => got.push(String::from_utf8(e.value).unwrap()),
                Pull::Idle => {}
                Pull::End => return got,
            }
        }
    };
    let mut source = bind();
    let first = drain(&mut source);
    assert_eq!(first.len(), 30);
    assert!(first.contains(&"{\"n\":7}".to_string()), "{first:?}");
    let Some(Position::Splits(offsets)) = source.position() else {
        panic!("no offsets")
    };
    assert_eq!(offsets.len(), 3, "{offsets:?}");
    assert_eq!(offsets.values().sum::<u64>(), 31);
    {
        let letters = letters.lock().unwrap();
        assert_eq!(letters.len(), 1);
        let headers: BTreeMap<&str, String> = letters[0]
            .event
            .headers
            .iter()
            .map(|(k, v)| (k.as_str(), String::from_utf8_lossy(v).into_owned()))
            .collect();
        assert_eq!(headers["kafka.topic"], "in");
        let partition: i32 = headers["kafka.partition"].parse().unwrap();
        let offset: u64 = headers["kafka.offset"].parse().unwrap();
        assert!(offset < offsets[&(partition as u32)]);
        assert_eq!(letters[0].event.value, b"not json {");
        assert!(
            letters[0].error.contains("not JSON"),
            "{}",
            letters[0].error
        );
    }
    // A restore from those offsets reads only what came after.
    produce(
        &brokers,
        "in",
        &[(Some("k99".into()), b"{\"n\": 99}".to_vec())],
    );
    let mut source = bind();
    source.seek(&Position::Splits(offsets)).unwrap();
    assert_eq!(drain(&mut source), ["{\"n\":99}"]);
    // The source's event time: the least of its partitions' highest.
    assert!(source.event_time().is_some());
    // `start: latest` resolves to the partitions' ends at once, so a
    // checkpoint taken before any record arrives keeps them.
    let latest = doc(
        "name: t\nsources: [{name: in, kafka: {topic: in, start: latest}}]\nsinks: [{name: o, stream: o, input: in}]\n",
    );
    let mut bindings = Bindings::default();
    bind_kafka(&latest, Some(&brokers), SourceMode::Bounded, &mut bindings).unwrap();
    let mut source = bindings.sources.remove("in").unwrap();
    assert!(drain(&mut source).is_empty());
    let Some(Position::Splits(ends)) = source.position() else {
        panic!("no offsets")
    };
    assert_eq!((ends.len(), ends.values().sum::<u64>()), (3, 32));
}

const WORDS: usize = 300;

/// `n` lines of 1-6 words from [`WORDS`], and their word counts.
fn random_lines(n: usize, seed: u64) -> (Vec<String>, BTreeMap<String, u64>) {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut counts = BTreeMap::new();
    let lines = (0..n)
        .map(|_| {
            let k = rng.random_range(1..=6);
            let words: Vec<String> = (0..k)
                .map(|_| format!("w{}", rng.random_range(0..WORDS)))
                .collect();
            for w in &words {
                *counts.entry(w.clone()).or_insert(0) += 1;
            }
            words.join(" ")
        })
        .collect();
    (lines, counts)
}

fn as_records(lines: &[String], from: usize) -> Vec<(Option<String>, Vec<u8>)> {
    lines
        .iter()
        .enumerate()
        .map(|(i, l)| (Some(format!("line-{}", from + i)), l.clone().into_bytes()))
        .collect()
}

/// Every `{"word", "count"}` of the output, checked to hold each count of
/// each word exactly once (1..=n with no gap and no repeat); returns the
/// highest count per word.
fn exactly_once_counts(records: &[Record]) -> Result<BTreeMap<String, u64>, String> {
    let mut seen: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    for r in records {
        let v: Value = serde_json::from_slice(&r.value)
            .map_err(|e| format!("output record is not JSON: {e}"))?;
        let word = v["word"].as_str().ok_or("no word")?.to_string();
        if r.key.as_deref() != Some(word.as_bytes()) {
            return Err(format!("record of {word} keyed {:?}", r.key));
        }
        seen.entry(word)
            .or_default()
            .push(v["count"].as_u64().ok_or("no count")?);
    }
    let mut highest = BTreeMap::new();
    for (word, mut counts) in seen {
        counts.sort_unstable();
        let n = counts.len() as u64;
        if counts != (1..=n).collect::<Vec<_>>() {
            let mut dup = counts.clone();
            dup.dedup();
            return Err(format!(
                "the counts of {word} are not 1..={n} once each ({} repeated, highest {})",
                counts.len() - dup.len(),
                counts.last().unwrap()
            ));
        }
        highest.insert(word, n);
    }
    Ok(highest)
}

fn word_count_doc(name: &str, interval_ms: u64) -> String {
    format!(
        "name: {name}\n\
         checkpoint: {{ interval_ms: {interval_ms} }}\n\
         sources:\n\
         \x20 - {{ name: lines, kafka: {{ topic: lines, format: text }} }}\n\
         operators:\n\
         \x20 - {{ name: split, module: split-words, input: lines }}\n\
         \x20 - {{ name: count, module: word-count, input: split, key_by: key, parallelism: 2 }}\n\
         sinks:\n\
         \x20 - {{ name: out, kafka: {{ topic: counts }}, input: count }}\n"
    )
}

fn weir_run(dir: &Path, brokers: &str, extra: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_weir"))
        .args(["run", "--topology"])
        .arg(dir.join("topology.yaml"))
        .arg("--module-dir")
        .arg(guest_dir())
        .arg("--data-dir")
        .arg(dir.join("data"))
        .arg("--cache-dir")
        .arg(std::env::temp_dir().join("weir-cli-test-cache"))
        .args(["--kafka-brokers", brokers])
        .args(extra)
        .env("WEIR_LOG", "warn")
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

#[test]
fn word_count_through_kafka_equals_the_oracle() {
    let broker = KafkaBroker::start();
    let brokers = broker.bootstrap();
    topic(&brokers, "lines", 4);
    topic(&brokers, "counts", 3);
    let (lines, oracle) = random_lines(20_000, 1);
    produce(&brokers, "lines", &as_records(&lines, 0));
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("topology.yaml"), word_count_doc("wc", 200)).unwrap();
    let out = weir_run(dir.path(), &brokers, &[]);
    assert!(
        out.status.success(),
        "weir run failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let records = read_committed(&brokers, "counts");
    assert_eq!(exactly_once_counts(&records).unwrap(), oracle);
    // The offsets of checkpoints were committed back to the source's group
    // (for lag tools), never past what the topic holds.
    let group: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", &brokers)
        .set("group.id", "weir.wc.lines")
        .create()
        .unwrap();
    let mut asked = TopicPartitionList::new();
    for p in 0..4 {
        asked.add_partition("lines", p);
    }
    let committed = group
        .committed_offsets(asked, Duration::from_secs(10))
        .unwrap();
    let total: i64 = committed
        .elements()
        .iter()
        .map(|e| match e.offset() {
            Offset::Offset(o) => o,
            _ => 0,
        })
        .sum();
    assert!(
        total > 0 && total <= lines.len() as i64,
        "committed offsets {committed:?}"
    );
    // murmur2 partitioning: one word, one partition.
    let mut partition_of: BTreeMap<Vec<u8>, i32> = BTreeMap::new();
    for r in &records {
        let p = partition_of
            .entry(r.key.clone().unwrap())
            .or_insert(r.partition);
        assert_eq!(*p, r.partition);
    }
    // A second run resumes after the offsets of its last checkpoint: only
    // new lines are counted, on top of the state it had.
    let (more, more_counts) = random_lines(500, 2);
    produce(&brokers, "lines", &as_records(&more, lines.len()));
    let out = weir_run(dir.path(), &brokers, &[]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut total = oracle.clone();
    for (w, n) in more_counts {
        *total.entry(w).or_insert(0) += n;
    }
    let records = read_committed(&brokers, "counts");
    assert_eq!(exactly_once_counts(&records).unwrap(), total);
    assert!(records.iter().all(|r| r.offset >= 0));
}

#[test]
fn missing_topics_and_silent_brokers_are_clear_errors_not_panics() {
    let broker = KafkaBroker::start();
    let brokers = broker.bootstrap();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("topology.yaml"), word_count_doc("wc", 200)).unwrap();
    // `weir run`: the missing topic is named, nothing runs.
    let out = weir_run(dir.path(), &brokers, &[]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("topic `lines` does not exist"), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    // Nothing listens on this port: the brokers are named, within the
    // look-up timeout.
    let silent = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().to_string()
    };
    let started = Instant::now();
    let out = weir_run(dir.path(), &silent, &[]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("did not answer"), "{stderr}");
    assert!(stderr.contains(&silent), "{stderr}");
    assert!(started.elapsed() < Duration::from_secs(60));
    // The server: a document without brokers is a 422 naming the field
    // when the server has no default.
    let data = tempfile::tempdir().unwrap();
    let srv = Server::start(data.path(), &[], &[]);
    let http = srv.client();
    for m in ["split-words", "word-count"] {
        let a = http.push(m, &guest_bytes(m));
        assert!(a.status == 201 || a.status == 200, "{}", a.text);
    }
    let a = http.put_topology("wc", &word_count_doc("wc", 200));
    assert_eq!(a.status, 422, "{}", a.text);
    assert!(a.text.contains("sources[0].kafka.brokers"), "{}", a.text);
    drop(srv);
    // With brokers, a start whose topic is missing is refused, naming it,
    // and retried with backoff.
    let srv = Server::start(
        data.path(),
        &["--kafka-brokers", &brokers, "--restart-backoff-ms", "200"],
        &[],
    );
    let http = srv.client();
    assert_eq!(
        http.put_topology("wc", &word_count_doc("wc", 200)).status,
        201
    );
    let a = http.post_json("/v1/topologies/wc/start", &json!({}));
    assert_eq!(a.status, 422, "{}", a.text);
    assert_eq!(a.code(), "binding_failed", "{}", a.text);
    assert!(
        a.text.contains("topic `lines` does not exist"),
        "{}",
        a.text
    );
    assert!(a.text.contains("started again with backoff"), "{}", a.text);
    let status = http.get("/v1/topologies/wc");
    assert_eq!(status.body["state"], "restarting", "{}", status.text);
    // Once the topics exist it starts by itself.
    topic(&brokers, "lines", 2);
    topic(&brokers, "counts", 1);
    eventually("the topology started by its retries", || {
        let s = http.get("/v1/topologies/wc");
        (s.body["state"] == "running").then_some(())
    });
}

/// How one run of `weir serve` in the crash test ends.
#[derive(Debug, Clone, Copy)]
enum Interruption {
    /// SIGKILL after a random wait.
    Kill,
    /// The sink aborts the process at this crash point (`WEIR_FAULT`).
    Fault(&'static str),
    /// The broker is stopped and started again while the server runs.
    BrokerRestart,
}

#[test]
fn killed_servers_and_a_restarted_broker_leave_every_count_once() {
    let mut broker = KafkaBroker::start();
    let brokers = broker.bootstrap();
    topic(&brokers, "lines", 4);
    topic(&brokers, "counts", 2);
    let data = tempfile::tempdir().unwrap();
    let flags = [
        "--kafka-brokers",
        &brokers,
        "--restart-backoff-ms",
        "200",
        "--restart-max-backoff-ms",
        "2000",
        "--restart-attempts",
        "1000",
    ];
    let plan = [
        Interruption::Kill,
        Interruption::Fault("after-commit-before-publish:2"),
        Interruption::Kill,
        Interruption::Fault("mid-publish:2"),
        Interruption::BrokerRestart,
        Interruption::Fault("before-kafka-commit:2"),
        Interruption::Kill,
    ];
    let (all, oracle) = random_lines(2_000 * (plan.len() + 1), 3);
    let chunks: Vec<&[String]> = all.chunks(2_000).collect();
    let mut rng = StdRng::seed_from_u64(11);
    {
        let srv = Server::start(data.path(), &flags, &[]);
        let http = srv.client();
        for m in ["split-words", "word-count"] {
            let a = http.push(m, &guest_bytes(m));
            assert!(a.status == 201 || a.status == 200, "{}", a.text);
        }
        assert_eq!(
            http.put_topology("wc", &word_count_doc("wc", 100)).status,
            201
        );
        let a = http.post_json("/v1/topologies/wc/start", &json!({}));
        assert_eq!(a.status, 200, "{}", a.text);
    }
    let mut sent = 0;
    for (step, interruption) in plan.iter().enumerate() {
        let env: Vec<(&str, &str)> = match interruption {
            Interruption::Fault(point) => vec![("WEIR_FAULT", *point)],
            _ => vec![],
        };
        let mut srv = Server::start(data.path(), &flags, &env);
        // In pieces, so the chunk spans several checkpoints.
        for piece in chunks[step].chunks(250) {
            produce(&brokers, "lines", &as_records(piece, sent));
            sent += piece.len();
            std::thread::sleep(Duration::from_millis(60));
        }
        match interruption {
            Interruption::Kill => {
                std::thread::sleep(Duration::from_millis(rng.random_range(200..1500)));
            }
            Interruption::Fault(point) => {
                let deadline = Instant::now() + Duration::from_secs(60);
                loop {
                    if let Some(status) = srv.try_wait() {
                        assert!(!status.success(), "{point}: exited with {status}");
                        break;
                    }
                    assert!(
                        Instant::now() < deadline,
                        "{point} was never reached; status: {}",
                        srv.client().get("/v1/topologies/wc").text
                    );
                    std::thread::sleep(Duration::from_millis(20));
                }
            }
            Interruption::BrokerRestart => {
                std::thread::sleep(Duration::from_millis(300));
                broker.stop();
                std::thread::sleep(Duration::from_millis(500));
                broker.start_again();
            }
        }
        drop(srv);
    }
    // A last run, never interrupted, until every line is counted.
    let srv = Server::start(data.path(), &flags, &[]);
    produce(&brokers, "lines", &as_records(chunks[plan.len()], sent));
    let expected: u64 = oracle.values().sum();
    let deadline = Instant::now() + Duration::from_secs(180);
    let records = loop {
        let records = read_committed(&brokers, "counts");
        if records.len() as u64 >= expected {
            break records;
        }
        assert!(
            Instant::now() < deadline,
            "{} of {expected} counts after 180 s; status: {}",
            records.len(),
            srv.client().get("/v1/topologies/wc").text
        );
        std::thread::sleep(Duration::from_millis(500));
    };
    assert_eq!(exactly_once_counts(&records).unwrap(), oracle);
    assert_eq!(records.len() as u64, expected);
    eventually("the topology running", || {
        let s = srv.client().get("/v1/topologies/wc");
        (s.body["state"] == "running").then_some(())
    });
    // Status shows each partition's position and lag (none left: every
    // line is counted), what the source read and the sink's transactions.
    let status = eventually("every partition caught up in status", || {
        let s = srv.client().get("/v1/topologies/wc");
        let source = s.body["endpoints"]
            .as_array()?
            .iter()
            .find(|e| e["name"] == "lines")?
            .clone();
        let splits = source["splits"].as_array()?;
        (splits.len() == 4 && splits.iter().all(|p| p["lag"] == 0)).then_some(s)
    });
    let endpoints = status.body["endpoints"].as_array().unwrap();
    let sink = endpoints.iter().find(|e| e["name"] == "out").unwrap();
    assert!(
        sink["counters"]["transactions_committed"].as_u64().unwrap() > 0,
        "{}",
        status.text
    );
    let metrics = srv.client().get("/metrics").text;
    assert!(
        metrics.contains(r#"weir_source_split_lag{topology="wc",endpoint="lines",split="3"} 0"#),
        "{metrics}"
    );
}
