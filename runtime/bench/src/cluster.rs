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
//!   counted twice or lost).
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

fn doc(name: &str, input: &str, output: &str, standbys: u32) -> String {
    format!(
        "name: {name}\ncheckpoint: {{ interval_ms: 1000 }}\ncluster: {{ standbys: {standbys} }}\nsources: [{{ name: in, kafka: {{ topic: {input} }} }}]\noperators:\n  - {{ name: sum, module: keyed-sum, input: in, key_by: {{ field: user }} }}\nsinks: [{{ name: out, input: sum, kafka: {{ topic: {output} }} }}]\n"
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
        let consumer = reader(brokers, "weir-bench-cluster")?;
        let mut list = TopicPartitionList::new();
        for p in 0..PARTITIONS {
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

/// W2 through `processes` processes: (seconds to the first result,
/// seconds to the last).
fn scale_round(brokers: &str, processes: usize, n: u64) -> Result<(f64, f64)> {
    let cluster = format!("scale{processes}");
    let servers = nodes(brokers, &cluster, processes)?;
    let client = Client::new(&servers[0].url);
    client.push_guests(&["keyed-sum"])?;
    let output = format!("w2-out-{processes}");
    create_topic(brokers, &output, PARTITIONS, &[])?;
    let mut out = Committed::new(brokers, &output)?;
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
    Ok((first.duration_since(started).as_secs_f64(), last))
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

/// Scale over `n` events (unless `failover_only`), then the failover
/// with `keys` keys and `standbys` copies of each partition.
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
        "{:<10} {:>16} {:>16} {:>12}",
        "processes", "first result s", "last result s", "ev/s"
    );
    for processes in 1..=3 {
        let (first, last) = scale_round(&brokers, processes, n)?;
        let rate = n as f64 / last;
        println!("{processes:<10} {first:>16.2} {last:>16.2} {rate:>12.0}");
        crate::report::result(format!(
            "RESULT workload=cluster-w2 processes={processes} events={n} first_result_s={first:.2} last_result_s={last:.2} events_per_sec={rate:.0}"
        ));
    }
    Ok(())
}
