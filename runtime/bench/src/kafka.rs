//! `kafka`: W1 and W2 from a Kafka topic to a Kafka topic, exactly-once
//! (one transaction per checkpoint), against the same workloads from and
//! to embedded streams, with the same 1 s checkpoints, in the same run;
//! then end-to-end latency through Kafka at a steady rate.
//!
//! The broker is a throwaway one (`weir_fixtures::kafka::KafkaBroker`; its
//! jars from `cargo xtask kafka`). Input topics have 4 partitions; the
//! input is written before the clock starts, the output is read back
//! `read_committed` and counted after it stops.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError as RdError;
use rdkafka::message::Message;
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use weir_connectors::{
    SourceMode, StreamConfig, StreamStore, bind_kafka, bind_streams, create_topic,
};
use weir_engine::{Bindings, ExecOptions, Job, Modules};
use weir_fixtures::kafka::KafkaBroker;
use weir_tests::guest_bytes;
use weir_topology::parse_topology;
use weir_wasm::{HostConfig, WasmHost};

use crate::stats::median;
use crate::workloads::generate;

const PARTITIONS: i32 = 4;
const CHECKPOINT_MS: u64 = 1_000;

fn doc(name: &str, source: &str, sink: &str, operators: &str) -> String {
    format!(
        "name: {name}\ncheckpoint: {{ interval_ms: {CHECKPOINT_MS} }}\nsources: [{{ name: in, {source} }}]\noperators:\n{operators}sinks: [{{ name: out, input: last, {sink} }}]\n"
    )
}

const W1_OPS: &str = "  - { name: f, module: filter, input: in, config: { field: amount, op: gt, value: 50 } }\n  - { name: last, module: map, input: f, config: { uppercase: user } }\n";
const W2_OPS: &str = "  - { name: last, module: keyed-sum, input: in, key_by: { field: user } }\n";

fn modules() -> Result<Modules> {
    let host = WasmHost::new(HostConfig::default())?;
    let mut modules = Modules::new();
    for m in ["filter", "map", "keyed-sum", "identity"] {
        modules.insert(m.to_string(), host.load(&guest_bytes(m))?);
    }
    Ok(modules)
}

pub(crate) fn producer(brokers: &str) -> Result<ThreadedProducer<DefaultProducerContext>> {
    Ok(ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("linger.ms", "5")
        .set("partitioner", "murmur2_random")
        .create()?)
}

pub(crate) fn send(
    p: &ThreadedProducer<DefaultProducerContext>,
    topic: &str,
    key: &[u8],
    value: &[u8],
) {
    let mut record = BaseRecord::<[u8], [u8]>::to(topic).key(key).payload(value);
    loop {
        match p.send(record) {
            Ok(()) => return,
            Err((_, back)) => {
                record = back;
                std::thread::sleep(Duration::from_millis(1));
            }
        }
    }
}

/// Writes the `n` generated events to `topic` (keyed by their index).
fn fill(brokers: &str, topic: &str, n: u64) -> Result<()> {
    create_topic(brokers, topic, PARTITIONS, &[])?;
    let p = producer(brokers)?;
    for i in 0..n {
        send(&p, topic, &i.to_le_bytes(), &generate(i).value);
    }
    p.flush(Duration::from_secs(120))?;
    Ok(())
}

pub(crate) fn reader(brokers: &str, group: &str) -> Result<BaseConsumer> {
    Ok(ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "true")
        .set("isolation.level", "read_committed")
        .create()?)
}

fn assign_all(consumer: &BaseConsumer, topic: &str) -> Result<BTreeSet<i32>> {
    let metadata = consumer.fetch_metadata(Some(topic), Duration::from_secs(10))?;
    let partitions: BTreeSet<i32> = metadata.topics()[0]
        .partitions()
        .iter()
        .map(|p| p.id())
        .collect();
    let mut list = TopicPartitionList::new();
    for &p in &partitions {
        list.add_partition_offset(topic, p, Offset::Beginning)?;
    }
    consumer.assign(&list)?;
    Ok(partitions)
}

/// Records of `topic` a `read_committed` reader sees now.
fn count_committed(brokers: &str, topic: &str) -> Result<u64> {
    let consumer = reader(brokers, "weir-bench-count")?;
    let mut open = assign_all(&consumer, topic)?;
    let mut n = 0;
    let deadline = Instant::now() + Duration::from_secs(120);
    while !open.is_empty() {
        if Instant::now() > deadline {
            bail!("could not read {topic} to its end");
        }
        match consumer.poll(Duration::from_millis(100)) {
            Some(Ok(_)) => n += 1,
            Some(Err(RdError::PartitionEOF(p))) => {
                open.remove(&p);
            }
            Some(Err(_)) | None => {}
        }
    }
    Ok(n)
}

/// Runs `doc_text` bounded over what its source holds; events/s.
fn run_job(
    doc_text: &str,
    modules: &Modules,
    bindings: Bindings,
    dir: &std::path::Path,
    n: u64,
) -> Result<f64> {
    let doc = parse_topology(doc_text)?;
    let state =
        crate::checkpoints::checkpointed_state(dir, Some(Duration::from_millis(CHECKPOINT_MS)))?;
    let start = Instant::now();
    Job::start(&doc, modules, bindings, ExecOptions::default(), Some(state))?.wait()?;
    Ok(n as f64 / start.elapsed().as_secs_f64())
}

/// W1 and W2: Kafka → Kafka against streams → streams.
pub fn run(n: u64, rounds: usize, rate: u64, seconds: u64) -> Result<()> {
    let broker = KafkaBroker::start();
    let brokers = broker.bootstrap();
    let modules = modules()?;
    fill(&brokers, "events", n)?;
    let expected_w1 = (0..n).filter(|i| (i * 13) % 101 > 50).count() as u64;
    println!(
        "W1 and W2 over {n} events, checkpoints every {CHECKPOINT_MS} ms, exactly-once sinks; warm-up + median of {rounds} rounds; Kafka topics have {PARTITIONS} partitions"
    );
    println!(
        "{:<10} {:>18} {:>18} {:>8}",
        "workload", "streams ev/s", "kafka ev/s", "ratio"
    );
    for (workload, ops, expected) in [("stateless", W1_OPS, expected_w1), ("keyed", W2_OPS, n)] {
        let mut streams = Vec::new();
        let mut kafka = Vec::new();
        for round in 0..=rounds {
            // Embedded streams: the same events appended before the clock.
            let dir = tempfile::tempdir()?;
            let store = StreamStore::open(&dir.path().join("streams"), StreamConfig::default())?;
            let input = store.stream("events")?;
            for chunk in (0..n).collect::<Vec<_>>().chunks(10_000) {
                let mut batch = weir_types::Batch::default();
                for &i in chunk {
                    batch.push_event(&generate(i));
                }
                input.append(&batch)?;
            }
            let d = parse_topology(&doc("s", "stream: events", "stream: out", ops))?;
            let mut bindings = Bindings::default();
            bind_streams(&d, &store, SourceMode::Bounded, &mut bindings)?;
            let s = run_job(
                &doc("s", "stream: events", "stream: out", ops),
                &modules,
                bindings,
                &dir.path().join("state"),
                n,
            )?;
            let out = store.stream("out")?.end_offset();
            if out != expected {
                bail!("{workload} through streams wrote {out} events, not {expected}");
            }
            // Kafka: a new output topic each round.
            let out_topic = format!("out-{workload}-{round}");
            create_topic(&brokers, &out_topic, PARTITIONS, &[])?;
            let text = doc(
                &format!("k{workload}{round}"),
                "kafka: { topic: events }",
                &format!("kafka: {{ topic: {out_topic} }}"),
                ops,
            );
            let d = parse_topology(&text)?;
            let mut bindings = Bindings::default();
            bind_kafka(&d, Some(&brokers), SourceMode::Bounded, &mut bindings)
                .map_err(|e| anyhow::anyhow!("{}: {}", e.what, e.source))?;
            let kdir = tempfile::tempdir()?;
            let k = run_job(&text, &modules, bindings, kdir.path(), n)?;
            let out = count_committed(&brokers, &out_topic)?;
            if out != expected {
                bail!("{workload} through Kafka left {out} committed records, not {expected}");
            }
            if round > 0 {
                streams.push(s);
                kafka.push(k);
            }
        }
        let (s, k) = (median(&streams), median(&kafka));
        println!("{workload:<10} {s:>18.0} {k:>18.0} {:>8.2}", k / s);
        crate::report::result(format!(
            "RESULT workload=kafka-{workload} events={n} streams_events_per_sec={s:.0} kafka_events_per_sec={k:.0}"
        ));
    }
    latency(&brokers, &modules, rate, seconds)
}

/// Identity from Kafka to Kafka, exactly-once with 1 s checkpoints, fed at
/// `rate` events/s for `seconds`: the time from a record's write to its
/// result being readable `read_committed`.
fn latency(brokers: &str, modules: &Modules, rate: u64, seconds: u64) -> Result<()> {
    create_topic(brokers, "lat-in", PARTITIONS, &[])?;
    create_topic(brokers, "lat-out", PARTITIONS, &[])?;
    let text = doc(
        "lat",
        "kafka: { topic: lat-in }",
        "kafka: { topic: lat-out }",
        "  - { name: last, module: identity, input: in }\n",
    );
    let d = parse_topology(&text)?;
    let mut bindings = Bindings::default();
    bind_kafka(&d, Some(brokers), SourceMode::Follow, &mut bindings)
        .map_err(|e| anyhow::anyhow!("{}: {}", e.what, e.source))?;
    let dir = tempfile::tempdir()?;
    let state = crate::checkpoints::checkpointed_state(
        dir.path(),
        Some(Duration::from_millis(CHECKPOINT_MS)),
    )?;
    let job = Job::start(&d, modules, bindings, ExecOptions::default(), Some(state))?;

    let consumer = reader(brokers, "weir-bench-latency")?;
    assign_all(&consumer, "lat-out")?;
    let clock = Instant::now();
    let writer = {
        let p = producer(brokers)?;
        std::thread::spawn(move || {
            let total = rate * seconds;
            for i in 0..total {
                let due = Duration::from_secs_f64(i as f64 / rate as f64);
                if let Some(wait) = due.checked_sub(clock.elapsed()) {
                    std::thread::sleep(wait);
                }
                let sent = clock.elapsed().as_micros() as u64;
                send(
                    &p,
                    "lat-in",
                    &i.to_le_bytes(),
                    format!("{{\"sent\":{sent}}}").as_bytes(),
                );
            }
            let _ = p.flush(Duration::from_secs(30));
            total
        })
    };
    let mut micros = Vec::new();
    let deadline = Duration::from_secs(seconds + 30);
    while clock.elapsed() < deadline && (micros.len() as u64) < rate * seconds {
        if let Some(Ok(m)) = consumer.poll(Duration::from_millis(50)) {
            let v: serde_json::Value = serde_json::from_slice(m.payload().unwrap_or_default())?;
            let sent = v["sent"]
                .as_u64()
                .context("an output record without `sent`")?;
            micros.push(clock.elapsed().as_micros() as u64 - sent);
        }
    }
    let written = writer
        .join()
        .map_err(|_| anyhow::anyhow!("the writer panicked"))?;
    job.stop(None)?;
    if (micros.len() as u64) < written {
        bail!("{} of {written} records came through in time", micros.len());
    }
    micros.sort_unstable();
    let at = |q: f64| micros[((micros.len() - 1) as f64 * q) as usize] as f64 / 1000.0;
    println!(
        "latency Kafka → identity → Kafka (exactly-once, checkpoint {CHECKPOINT_MS} ms), {rate} events/s for {seconds} s: p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        at(0.5),
        at(0.99),
        at(1.0)
    );
    crate::report::result(format!(
        "RESULT workload=kafka-latency rate={rate} seconds={seconds} p50_ms={:.1} p99_ms={:.1} max_ms={:.1}",
        at(0.5),
        at(0.99),
        at(1.0)
    ));
    Ok(())
}
