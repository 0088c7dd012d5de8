//! `cluster`: Weir's cluster mode measured from outside, on one throwaway
//! Kafka broker (`weir_fixtures::kafka::KafkaBroker`) and real `weir serve
//! --cluster` processes on loopback, each with its own data directory:
//!
//! - **scale**: W2 (keyed-sum by user) over a 6-partition topic that holds
//!   N events keyed by user, run by a cluster of 1, 2 and 3 processes:
//!   the time from `start` to the last result readable `read_committed`,
//!   and to the first one (joining the consumer group, assigning and
//!   restoring come before any output);
//! - **failover**: 3 processes count K distinct keys (one event each),
//!   with S standby copies of each partition (`--standbys`, 0 by default;
//!   the kill waits until every copy has caught up); one is killed with
//!   SIGKILL, and one more event per key for the first 1,000 keys is
//!   written: the time until all 1,000 new totals are readable, each
//!   checked to be 2 (the killed node's keys restored from their
//!   changelog, from a standby's copy where the new holder kept one, none
//!   counted twice or lost);
//! - **word count**: lines of text in an 8-partition topic counted per
//!   word by 3 processes (`split-words`, then `word-count` keyed by the
//!   word: every word goes through the repartition topic): the
//!   `read_committed` output checked against the oracle (each word's
//!   counts exactly 1..n), and a state query for sample words on every
//!   node answering the oracle's count;
//! - **elastic**: events flow at a steady rate into a cluster that grows
//!   from 1 process to 3 and shrinks back to 1 (the leaving ones stopped
//!   with SIGTERM, as an operator would): every key's totals must be
//!   exactly 1, 2, ..., n, and each step's time to a settled assignment
//!   is reported.
//!
//! The processes and the broker share the machine's cores, so the scale
//! figures say what the protocol costs here, not what more machines give.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError as RdError;
use rdkafka::message::Message;
use rdkafka::producer::Producer;
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use serde::Deserialize;
use weir_connectors::create_topic;
use weir_fixtures::kafka::KafkaBroker;

use crate::compare::{Client, Server};
use crate::kafka::{producer, reader, send};

/// Partitions of every topic: 1, 2 and 3 processes each get a whole share.
const PARTITIONS: i32 = 6;
/// Keys whose second event times the failover.
const PROBES: u64 = 1_000;
/// The longest any phase may take before the bench gives up.
const PHASE_LIMIT: Duration = Duration::from_secs(120);

/// W2 over `input`, whose records the bench keys by user: `key_by: key`
/// reads them where they are (`key_by: {field: user}` would send every
/// event through a repartition topic first); `standbys` copies of each
/// partition.
fn doc(name: &str, input: &str, output: &str, standbys: u32) -> String {
    format!(
        "name: {name}\ncheckpoint: {{ interval_ms: 1000 }}\ncluster: {{ standbys: {standbys} }}\nsources: [{{ name: in, kafka: {{ topic: {input} }} }}]\noperators:\n  - {{ name: sum, module: keyed-sum, input: in, key_by: key }}\nsinks: [{{ name: out, input: sum, kafka: {{ topic: {output} }} }}]\n"
    )
}

/// `n` processes of cluster `cluster`, node ids `<cluster>-n0`, `-n1`, …
/// (every name here is unique to its cluster: changelog topics and
/// transactional ids are named after topology and node, not cluster).
fn nodes(brokers: &str, cluster: &str, n: usize) -> Result<Vec<Server>> {
    (0..n)
        .map(|i| {
            Server::start_with(&[
                "--cluster",
                cluster,
                "--kafka-brokers",
                brokers,
                "--node-id",
                &format!("{cluster}-n{i}"),
            ])
        })
        .collect()
}

/// Writes `(user, value)` records keyed by the user, so that each key's
/// partition is Kafka's own (murmur2), as the changelog requires.
fn fill(
    brokers: &str,
    topic: &str,
    records: impl Iterator<Item = (String, Vec<u8>)>,
) -> Result<()> {
    let p = producer(brokers)?;
    for (user, value) in records {
        send(&p, topic, user.as_bytes(), &value);
    }
    p.flush(Duration::from_secs(120))?;
    Ok(())
}

/// One keyed-sum result.
#[derive(Deserialize)]
struct Total {
    key: String,
    count: u64,
}

/// A `read_committed` reader of every partition of a topic from its
/// start, reading on from where it stopped.
struct Committed {
    consumer: BaseConsumer,
    read: u64,
}

impl Committed {
    fn new(brokers: &str, topic: &str) -> Result<Committed> {
        Committed::of(brokers, topic, PARTITIONS)
    }

    /// A reader of a topic of `partitions` partitions.
    fn of(brokers: &str, topic: &str, partitions: i32) -> Result<Committed> {
        let consumer = reader(brokers, "weir-bench-cluster")?;
        let mut list = TopicPartitionList::new();
        for p in 0..partitions {
            list.add_partition_offset(topic, p, Offset::Beginning)?;
        }
        consumer.assign(&list)?;
        Ok(Committed { consumer, read: 0 })
    }

    /// Reads until `done(total read so far, this record)` says so; the
    /// time of the first record read in this call, if any.
    fn until(
        &mut self,
        what: &str,
        mut done: impl FnMut(u64, &[u8]) -> bool,
    ) -> Result<Option<Instant>> {
        let deadline = Instant::now() + PHASE_LIMIT;
        let mut first = None;
        loop {
            if Instant::now() > deadline {
                bail!(
                    "{what}: not done after {} s ({} records read)",
                    PHASE_LIMIT.as_secs(),
                    self.read
                );
            }
            match self.consumer.poll(Duration::from_millis(50)) {
                Some(Ok(m)) => {
                    self.read += 1;
                    first.get_or_insert_with(Instant::now);
                    if done(self.read, m.payload().unwrap_or_default()) {
                        return Ok(first);
                    }
                }
                Some(Err(RdError::PartitionEOF(_))) | None => {}
                Some(Err(e)) => bail!("{what}: reading the output: {e}"),
            }
        }
    }
}

/// What each process says of the cluster and of its topologies, for an
/// error.
fn views(servers: &[Server]) -> String {
    servers
        .iter()
        .map(|s| {
            let client = Client::new(&s.url);
            let get = |path: &str| {
                client
                    .send("GET", path, b"", "")
                    .unwrap_or_else(|e| format!("{e:#}"))
            };
            format!(
                "{}: /v1/cluster {}\n/v1/topologies {}",
                s.url,
                get("/v1/cluster"),
                get("/v1/topologies")
            )
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// W2 through `processes` processes.
fn scale_round(brokers: &str, processes: usize, n: u64) -> Result<Round> {
    let cluster = format!("scale{processes}");
    let servers = nodes(brokers, &cluster, processes)?;
    let client = Client::new(&servers[0].url);
    client.push_guests(&["keyed-sum"])?;
    let output = format!("w2-out-{processes}");
    create_topic(brokers, &output, PARTITIONS, &[])?;
    let mut out = Committed::new(brokers, &output)?;
    let cpu_before = servers
        .iter()
        .map(Server::cpu_seconds)
        .collect::<Result<Vec<f64>>>()?;
    let started = Instant::now();
    let name = format!("w2p{processes}");
    client.apply_and_start(&name, &doc(&name, "w2-in", &output, 0))?;
    let first = out
        .until(&format!("W2 on {processes} process(es)"), |read, _| {
            read >= n
        })
        .map_err(|e| e.context(views(&servers)))?
        .context("no output")?;
    let last = started.elapsed().as_secs_f64();
    let cpu = servers
        .iter()
        .zip(cpu_before)
        .map(|(s, before)| Ok((s.cpu_seconds()? - before) / last))
        .collect::<Result<_>>()?;
    Ok(Round {
        first: first.duration_since(started).as_secs_f64(),
        last,
        cpu,
    })
}

/// One scale round's figures.
struct Round {
    /// Seconds from `start` to the first result readable.
    first: f64,
    /// Seconds from `start` to the last.
    last: f64,
    /// Each process's CPU use over the round, in cores.
    cpu: Vec<f64>,
}

/// How many members the cluster `client` belongs to has alive.
fn members_alive(client: &Client) -> Result<usize> {
    let view: serde_json::Value =
        serde_json::from_str(&client.send("GET", "/v1/cluster", b"", "")?)?;
    Ok(view["members"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|m| m["alive"] == true)
        .count())
}

/// Waits until the cluster `client` belongs to keeps `standbys` copies
/// of each of topology `name`'s partitions, none behind its changelog.
fn standbys_warm(client: &Client, name: &str, standbys: u32) -> Result<()> {
    let deadline = Instant::now() + PHASE_LIMIT;
    let want = PARTITIONS as usize * standbys as usize;
    loop {
        let text = client.send("GET", "/v1/cluster", b"", "")?;
        let view: serde_json::Value = serde_json::from_str(&text)?;
        let copies: Vec<u64> = view["members"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|m| m["alive"] == true)
            .filter_map(|m| m["standbys"][name].as_object())
            .flat_map(|parts| parts.values().filter_map(serde_json::Value::as_u64))
            .collect();
        if copies.len() >= want && copies.iter().all(|&lag| lag == 0) {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!(
                "the standby copies did not catch up within {} s: {text}",
                PHASE_LIMIT.as_secs()
            );
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Kills one of 3 processes counting `keys` keys (with `standbys` copies
/// of each partition); seconds until the 1,000 probe keys' new totals are
/// all readable, each checked.
fn failover(brokers: &str, keys: u64, standbys: u32) -> Result<f64> {
    create_topic(brokers, "fo-in", PARTITIONS, &[])?;
    create_topic(brokers, "fo-out", PARTITIONS, &[])?;
    let value = |k: u64| format!(r#"{{"user":"k{k}","amount":1}}"#).into_bytes();
    fill(
        brokers,
        "fo-in",
        (0..keys).map(|k| (format!("k{k}"), value(k))),
    )?;
    let mut servers = nodes(brokers, "failover", 3)?;
    let client = Client::new(&servers[0].url);
    client.push_guests(&["keyed-sum"])?;
    let mut out = Committed::new(brokers, "fo-out")?;
    let started = Instant::now();
    // Every node is a member before the document asks for standbys.
    let deadline = Instant::now() + PHASE_LIMIT;
    while members_alive(&client)? < 3 {
        if Instant::now() > deadline {
            bail!("the 3 processes did not all join: {}", views(&servers));
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    client.apply_and_start("fo", &doc("fo", "fo-in", "fo-out", standbys))?;
    out.until("counting every key once", |read, _| read >= keys)?;
    println!(
        "  {keys} keys counted by 3 processes in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    // Let a checkpoint after the last result commit the changelogs.
    std::thread::sleep(Duration::from_secs(2));
    if standbys > 0 {
        let waited = Instant::now();
        standbys_warm(&client, "fo", standbys)?;
        println!(
            "  {standbys} standby cop{} of each partition caught up {:.1} s later",
            if standbys == 1 { "y" } else { "ies" },
            waited.elapsed().as_secs_f64()
        );
    }
    let before = take_overs(&servers[..2])?;
    let killed = servers.remove(2);
    let pid = killed.pid();
    drop(killed);
    let killed_at = Instant::now();
    let probes = PROBES.min(keys);
    fill(
        brokers,
        "fo-in",
        (0..probes).map(|k| (format!("k{k}"), value(k))),
    )?;
    let mut seen: BTreeMap<String, u64> = BTreeMap::new();
    let mut bad = None;
    out.until("the probes' second totals", |_, payload| {
        match serde_json::from_slice::<Total>(payload) {
            Ok(t) if t.count == 2 => {
                *seen.entry(t.key).or_default() += 1;
            }
            Ok(t) if t.count > 2 => bad = Some(format!("{} counted {} times", t.key, t.count)),
            Ok(_) => {}
            Err(e) => bad = Some(format!("not a keyed-sum total ({e})")),
        }
        bad.is_some() || seen.len() as u64 >= probes
    })?;
    let took = killed_at.elapsed().as_secs_f64();
    if let Some(bad) = bad {
        bail!("after killing process {pid}: {bad}");
    }
    // What each survivor restored to take the dead node's partitions
    // over while its job ran.
    for ((node, records, ms), (_, records_before, ms_before)) in
        take_overs(&servers)?.into_iter().zip(before)
    {
        println!(
            "  {node}: {} changelog records restored, {} ms from its new assignment to reading the partitions it took",
            records - records_before,
            ms - ms_before
        );
    }
    let twice: BTreeSet<_> = seen
        .iter()
        .filter(|(_, n)| **n > 1)
        .map(|(k, _)| k)
        .collect();
    if !twice.is_empty() {
        bail!(
            "after the failover {} keys' second totals were written twice",
            twice.len()
        );
    }
    Ok(took)
}

/// Per server: its node, and the changelog records its job of `fo`
/// restored and the milliseconds it took to take partitions over while
/// running, so far.
fn take_overs(servers: &[Server]) -> Result<Vec<(String, u64, u64)>> {
    servers
        .iter()
        .map(|s| {
            let text = Client::new(&s.url).send("GET", "/v1/cluster", b"", "")?;
            let view: serde_json::Value = serde_json::from_str(&text)?;
            let moves = &view["moves"]["fo"];
            Ok((
                view["node"].as_str().unwrap_or("?").to_string(),
                moves["restored_records"].as_u64().unwrap_or(0),
                moves["take_over_ms"].as_u64().unwrap_or(0),
            ))
        })
        .collect()
}

/// Scale over `n` events, the failover with `keys` keys and `standbys`
/// copies of each partition, the word count and the elastic run
/// (`failover_only`: the failover alone).
pub fn run(n: u64, keys: u64, standbys: u32, failover_only: bool) -> Result<()> {
    let broker = KafkaBroker::start();
    let brokers = broker.bootstrap();
    if !failover_only {
        scale(&brokers, n)?;
    }
    println!(
        "failover: 3 processes, {keys} keys, {standbys} standby cop{} of each partition, one killed with SIGKILL:",
        if standbys == 1 { "y" } else { "ies" }
    );
    let took = failover(&brokers, keys, standbys)?;
    println!(
        "  the {} probe keys' totals (each 2) readable {took:.1} s after the kill (the session timeout is 6 s)",
        PROBES.min(keys)
    );
    crate::report::result(format!(
        "RESULT workload=cluster-failover keys={keys} standbys={standbys} probes={} seconds={took:.2}",
        PROBES.min(keys)
    ));
    if !failover_only {
        word_count(&brokers, n.min(300_000))?;
        elastic(&brokers)?;
    }
    Ok(())
}

/// W2 over `n` events through 1, 2 and 3 processes.
fn scale(brokers: &str, n: u64) -> Result<()> {
    let brokers = brokers.to_string();
    create_topic(&brokers, "w2-in", PARTITIONS, &[])?;
    fill(
        &brokers,
        "w2-in",
        (0..n).map(|i| {
            let (user, value) = crate::event(i);
            (user, value.into_bytes())
        }),
    )?;
    println!(
        "W2 (keyed-sum by user) over {n} events in a {PARTITIONS}-partition topic, exactly-once Kafka sink, checkpoints every 1 s; one broker and the processes on this machine"
    );
    println!(
        "{:<10} {:>16} {:>16} {:>12}  CPU per process (cores)",
        "processes", "first result s", "last result s", "ev/s"
    );
    for processes in 1..=3 {
        let Round { first, last, cpu } = scale_round(&brokers, processes, n)?;
        let rate = n as f64 / last;
        let cpu: Vec<String> = cpu.iter().map(|c| format!("{c:.2}")).collect();
        let cpu = cpu.join(" ");
        println!("{processes:<10} {first:>16.2} {last:>16.2} {rate:>12.0}  {cpu}");
        crate::report::result(format!(
            "RESULT workload=cluster-w2 processes={processes} events={n} first_result_s={first:.2} last_result_s={last:.2} events_per_sec={rate:.0} cpu_cores=[{cpu}]"
        ));
    }
    Ok(())
}

/// Events per second the elastic run writes.
const ELASTIC_RATE: u64 = 5_000;
/// Distinct keys of the elastic run.
const ELASTIC_KEYS: u64 = 2_000;
/// How long each size of the elastic cluster runs.
const ELASTIC_STEP: Duration = Duration::from_secs(10);

/// How many input partitions of topology `name` each node holds, as
/// `GET /v1/cluster` on `server` says (heartbeats, up to 3 s old).
fn holders(server: &Server, name: &str, topic: &str) -> Result<BTreeMap<String, usize>> {
    let mut held = BTreeMap::new();
    for node in holder_of(server, name, topic)?.into_values() {
        *held.entry(node).or_insert(0) += 1;
    }
    Ok(held)
}

/// The node that holds each partition of `topic` for topology `name`, as
/// `server` sees it.
fn holder_of(server: &Server, name: &str, topic: &str) -> Result<BTreeMap<i32, String>> {
    let text = Client::new(&server.url).send("GET", "/v1/cluster", b"", "")?;
    let view: serde_json::Value = serde_json::from_str(&text)?;
    let mut held = BTreeMap::new();
    for (partition, at) in view["assignment"][name][topic]
        .as_object()
        .into_iter()
        .flatten()
    {
        let node = at["node"].as_str().unwrap_or("?").to_string();
        held.insert(partition.parse()?, node);
    }
    Ok(held)
}

/// Waits until `nodes` nodes hold all partitions; the seconds it took.
fn settle(server: &Server, name: &str, topic: &str, nodes: usize) -> Result<f64> {
    let began = Instant::now();
    loop {
        let held = holders(server, name, topic)?;
        if held.len() == nodes && held.values().sum::<usize>() == PARTITIONS as usize {
            return Ok(began.elapsed().as_secs_f64());
        }
        if began.elapsed() > PHASE_LIMIT {
            bail!("the partitions of {topic} did not settle on {nodes} node(s): {held:?}");
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The elastic run's steps, for the latency the reader sees.
const STEPS: [&str; 3] = [
    "1 process",
    "growing to 3, then 3",
    "shrinking to 1, then 1",
];

/// What the elastic run's reader saw: every key's totals, and per step
/// and output partition (its key's input partition) the longest time
/// from an event's write to its total being readable.
struct Seen {
    counts: BTreeMap<String, Vec<u64>>,
    worst_ms: [BTreeMap<i32, i64>; 3],
}

/// Reads `el-out` as it is committed until `target` (known once the
/// writer ends) totals are in.
fn watch(
    brokers: &str,
    step: &std::sync::atomic::AtomicUsize,
    target: &std::sync::atomic::AtomicU64,
) -> Result<Seen> {
    use std::sync::atomic::Ordering;
    let mut out = Committed::new(brokers, "el-out")?;
    let mut seen = Seen {
        counts: BTreeMap::new(),
        worst_ms: Default::default(),
    };
    let mut idle_since = Instant::now();
    while out.read < target.load(Ordering::SeqCst) {
        if idle_since.elapsed() > PHASE_LIMIT {
            bail!(
                "elastic: no total for {} s ({} read)",
                PHASE_LIMIT.as_secs(),
                out.read
            );
        }
        match out.consumer.poll(Duration::from_millis(50)) {
            Some(Ok(m)) => {
                idle_since = Instant::now();
                out.read += 1;
                let total: Total = serde_json::from_slice(m.payload().unwrap_or_default())
                    .context("elastic: not a keyed-sum total")?;
                seen.counts.entry(total.key).or_default().push(total.count);
                if let Some(written) = m.timestamp().to_millis() {
                    let i = step.load(Ordering::SeqCst).min(2);
                    let worst = seen.worst_ms[i].entry(m.partition()).or_default();
                    *worst = (*worst).max(weir_types::now_ms() - written);
                }
            }
            Some(Err(RdError::PartitionEOF(_))) | None => {}
            Some(Err(e)) => bail!("elastic: reading the output: {e}"),
        }
    }
    Ok(seen)
}

/// Scale 1 → 3 → 1 while events flow: every key's totals exactly 1..n,
/// and per step the longest wait for a total.
fn elastic(brokers: &str) -> Result<()> {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};

    create_topic(brokers, "el-in", PARTITIONS, &[])?;
    create_topic(brokers, "el-out", PARTITIONS, &[])?;
    let mut servers = nodes(brokers, "elastic", 1)?;
    let client = Client::new(&servers[0].url);
    client.push_guests(&["keyed-sum"])?;
    client.apply_and_start("el", &doc("el", "el-in", "el-out", 0))?;
    settle(&servers[0], "el", "el-in", 1)?;
    let step = Arc::new(AtomicUsize::new(0));
    let target = Arc::new(AtomicU64::new(u64::MAX));
    let reader = {
        let (brokers, step, target) = (brokers.to_string(), step.clone(), target.clone());
        std::thread::spawn(move || watch(&brokers, &step, &target))
    };
    // A steady writer until told to stop; it answers how many events it
    // wrote.
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let (brokers, stop) = (brokers.to_string(), stop.clone());
        std::thread::spawn(move || -> Result<u64> {
            let p = producer(&brokers)?;
            let tick = Duration::from_millis(100);
            let per_tick = ELASTIC_RATE / 10;
            let mut written = 0u64;
            let mut next = Instant::now();
            while !stop.load(Ordering::SeqCst) {
                for _ in 0..per_tick {
                    let key = format!("k{}", written % ELASTIC_KEYS);
                    let value = format!(r#"{{"user":"{key}","amount":1}}"#);
                    send(&p, "el-in", key.as_bytes(), value.as_bytes());
                    written += 1;
                }
                next += tick;
                std::thread::sleep(next.saturating_duration_since(Instant::now()));
            }
            p.flush(Duration::from_secs(60))?;
            Ok(written)
        })
    };
    println!(
        "elastic: {ELASTIC_RATE} events/s over {ELASTIC_KEYS} keys; the cluster grows from 1 process to 3 and back, {} s at each size:",
        ELASTIC_STEP.as_secs()
    );
    std::thread::sleep(ELASTIC_STEP);
    step.store(1, Ordering::SeqCst);
    servers.extend(
        (1..3)
            .map(|i| {
                Server::start_with(&[
                    "--cluster",
                    "elastic",
                    "--kafka-brokers",
                    brokers,
                    "--node-id",
                    &format!("elastic-n{i}"),
                ])
            })
            .collect::<Result<Vec<_>>>()?,
    );
    let grew = settle(&servers[0], "el", "el-in", 3)?;
    println!("  1 → 3 processes: the partitions settled on 3 after {grew:.1} s");
    // The partitions the first process kept: on it from start to end.
    let first: serde_json::Value =
        serde_json::from_str(&client.send("GET", "/v1/cluster", b"", "")?)?;
    let first = first["node"].as_str().unwrap_or_default().to_string();
    let stayed: BTreeSet<i32> = holder_of(&servers[0], "el", "el-in")?
        .into_iter()
        .filter(|(_, node)| *node == first)
        .map(|(p, _)| p)
        .collect();
    std::thread::sleep(ELASTIC_STEP);
    step.store(2, Ordering::SeqCst);
    let began = Instant::now();
    for leaving in servers.drain(1..).rev() {
        let status = leaving.terminate()?;
        if !status.success() {
            bail!("a leaving process exited with {status}");
        }
    }
    let stopped = began.elapsed().as_secs_f64();
    let shrank = settle(&servers[0], "el", "el-in", 1)?;
    println!(
        "  3 → 1 processes: the two stopped in {stopped:.1} s (SIGTERM), the partitions settled on 1 after {shrank:.1} s more"
    );
    std::thread::sleep(ELASTIC_STEP);
    stop.store(true, Ordering::SeqCst);
    let written = writer
        .join()
        .map_err(|_| anyhow::anyhow!("the writer panicked"))??;
    target.store(written, Ordering::SeqCst);
    let Seen { counts, worst_ms } = reader
        .join()
        .map_err(|_| anyhow::anyhow!("the reader panicked"))?
        .map_err(|e| e.context(views(&servers)))?;
    // Key k<j> got events j, j + K, j + 2K, ... of the `written`.
    let expected = (0..ELASTIC_KEYS.min(written))
        .map(|j| (format!("k{j}"), (written - j).div_ceil(ELASTIC_KEYS)));
    exact("elastic: the totals of", counts, expected)?;
    println!(
        "  {written} events, every key's totals exactly 1..n; the longest wait from an event's write to its total readable:"
    );
    println!(
        "    {:<24} {:>8} {:>22} {:>14}",
        "", "all", "partitions that stayed", "that moved"
    );
    let mut figures = Vec::new();
    for (name, worst) in STEPS.iter().zip(&worst_ms) {
        let of = |keep: &dyn Fn(i32) -> bool| {
            worst
                .iter()
                .filter(|(p, _)| keep(**p))
                .map(|(_, &ms)| ms)
                .max()
                .unwrap_or(0)
        };
        let (all, kept, moved) = (
            of(&|_| true),
            of(&|p| stayed.contains(&p)),
            of(&|p| !stayed.contains(&p)),
        );
        println!(
            "    {name:<24} {:>7.1}s {:>21.1}s {:>13.1}s",
            all as f64 / 1000.0,
            kept as f64 / 1000.0,
            moved as f64 / 1000.0
        );
        figures.push(format!("{all}/{kept}/{moved}"));
    }
    crate::report::result(format!(
        "RESULT workload=cluster-elastic events={written} grow_settle_s={grew:.2} shrink_stop_s={stopped:.2} shrink_settle_s={shrank:.2} worst_wait_ms_all_stayed_moved=[{}] exact=true",
        figures.join(", ")
    ));
    Ok(())
}

/// Checks that each key's numbers in `seen` are exactly 1..n, n its
/// number in `expected`, and that no other key is there; `what` starts
/// the error.
fn exact(
    what: &str,
    mut seen: BTreeMap<String, Vec<u64>>,
    expected: impl Iterator<Item = (String, u64)>,
) -> Result<()> {
    for (key, n) in expected {
        let mut got = seen.remove(&key).unwrap_or_default();
        got.sort_unstable();
        if got != (1..=n).collect::<Vec<_>>() {
            bail!(
                "{what} {key} are not exactly 1..{n}: {} results, highest {:?}",
                got.len(),
                got.last()
            );
        }
    }
    if !seen.is_empty() {
        bail!("{what} {} keys nobody wrote", seen.len());
    }
    Ok(())
}

/// Partitions of the word count's topics.
const WC_PARTITIONS: i32 = 8;
/// Distinct words of the word count.
const WC_VOCABULARY: u64 = 10_000;
/// Words per line.
const WC_WORDS_PER_LINE: u64 = 8;
/// Words whose count a state query asks on every node.
const WC_QUERIES: u64 = 100;

/// Word `j` of line `i`.
fn wc_word(i: u64, j: u64) -> String {
    format!(
        "w{}",
        (i * WC_WORDS_PER_LINE + j).wrapping_mul(7919) % WC_VOCABULARY
    )
}

/// The word count's state for `word`, asked of the node at `url`. The
/// members' heartbeats may be a few seconds behind the assignment (the
/// last node to join moved partitions just before): a query answered 503
/// `partition_unowned` is asked again, as the answer says, for a while.
fn state_query(url: &str, word: &str) -> Result<String> {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        match Client::new(url).send(
            "GET",
            &format!("/v1/topologies/wc/operators/count/state/count?key={word}"),
            b"",
            "",
        ) {
            Err(e) if e.to_string().contains("partition_unowned") && Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(200));
            }
            answer => return answer,
        }
    }
}

/// `lines` lines counted per word by 3 processes through a repartition
/// topic: exact output, and state queries answered on every node.
fn word_count(brokers: &str, lines: u64) -> Result<()> {
    create_topic(brokers, "wc-lines", WC_PARTITIONS, &[])?;
    create_topic(brokers, "wc-counts", WC_PARTITIONS, &[])?;
    let mut oracle: BTreeMap<String, u64> = BTreeMap::new();
    fill(
        brokers,
        "wc-lines",
        (0..lines).map(|i| {
            let words: Vec<String> = (0..WC_WORDS_PER_LINE).map(|j| wc_word(i, j)).collect();
            for w in &words {
                *oracle.entry(w.clone()).or_default() += 1;
            }
            (format!("line{i}"), words.join(" ").into_bytes())
        }),
    )?;
    let words = lines * WC_WORDS_PER_LINE;
    let servers = nodes(brokers, "wordcount", 3)?;
    let client = Client::new(&servers[0].url);
    client.push_guests(&["split-words", "word-count"])?;
    let doc = "name: wc\ncheckpoint: { interval_ms: 1000 }\nsources: [{ name: lines, kafka: { topic: wc-lines, format: text } }]\noperators:\n  - { name: split, module: split-words, input: lines }\n  - { name: count, module: word-count, input: split, key_by: key }\nsinks: [{ name: out, input: count, kafka: { topic: wc-counts } }]\n";
    let mut out = Committed::of(brokers, "wc-counts", WC_PARTITIONS)?;
    let cpu_before = servers
        .iter()
        .map(Server::cpu_seconds)
        .collect::<Result<Vec<f64>>>()?;
    let started = Instant::now();
    client.apply_and_start("wc", doc)?;
    let mut counts: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    let mut bad = None;
    out.until("every word counted", |read, payload| {
        #[derive(Deserialize)]
        struct Count {
            word: String,
            count: u64,
        }
        match serde_json::from_slice::<Count>(payload) {
            Ok(c) => counts.entry(c.word).or_default().push(c.count),
            Err(e) => bad = Some(format!("not a word count ({e})")),
        }
        bad.is_some() || read >= words
    })
    .map_err(|e| e.context(views(&servers)))?;
    let took = started.elapsed().as_secs_f64();
    let cpu: Vec<String> = servers
        .iter()
        .zip(cpu_before)
        .map(|(s, before)| Ok(format!("{:.2}", (s.cpu_seconds()? - before) / took)))
        .collect::<Result<_>>()?;
    if let Some(bad) = bad {
        bail!("word count: {bad}");
    }
    exact(
        "word count: the counts of",
        counts,
        oracle.iter().map(|(w, n)| (w.clone(), *n)),
    )?;
    // State queries on every node, for words spread over the vocabulary.
    let mut asked = 0;
    for (word, n) in oracle
        .iter()
        .step_by((oracle.len() as u64 / WC_QUERIES).max(1) as usize)
    {
        for server in &servers {
            let text = state_query(&server.url, word)?;
            let answer: serde_json::Value = serde_json::from_str(&text)?;
            if answer["value"] != serde_json::json!(n) {
                bail!(
                    "word count: a state query for {word} on {} answered {text}, not {n}",
                    server.url
                );
            }
            asked += 1;
        }
    }
    println!(
        "word count: {lines} lines ({words} words, {} distinct) in {WC_PARTITIONS} partitions, 3 processes, through the repartition topic: last count readable after {took:.1} s ({:.0} words/s), CPU per process {}; every count exact, {asked} state queries (each word on each node) answered the oracle's count",
        oracle.len(),
        words as f64 / took,
        cpu.join(" ")
    );
    crate::report::result(format!(
        "RESULT workload=cluster-word-count lines={lines} words={words} seconds={took:.2} words_per_sec={:.0} cpu_cores=[{}] exact=true queries={asked}",
        words as f64 / took,
        cpu.join(" ")
    ));
    Ok(())
}
