//! A changelog restore against a real Apache Kafka broker
//! (`weir_fixtures::kafka::KafkaBroker`; jars from `cargo xtask kafka`):
//! [`ChangelogTopic::read`] reads `read_committed` up to the end a
//! partition had when the read began, and waits for a transaction still
//! open below that end (a previous owner's) until it is committed or
//! aborted, so a restore sees exactly the committed records, those
//! committed after the open transaction included.

use std::collections::BTreeMap;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rdkafka::config::ClientConfig;
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
use weir_connectors::ChangelogTopic;
use weir_fixtures::kafka::KafkaBroker;

const TOPIC: &str = "restore-waits.changelog";
/// How long the open transaction stays open after the read began.
const OPEN_FOR: Duration = Duration::from_millis(1500);
const STEP: Duration = Duration::from_secs(30);

type Records = Vec<(String, Option<String>)>;

fn producer(
    brokers: &str,
    transactional_id: Option<&str>,
) -> ThreadedProducer<DefaultProducerContext> {
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", brokers)
        .set("enable.idempotence", "true");
    if let Some(id) = transactional_id {
        config.set("transactional.id", id);
    }
    let producer: ThreadedProducer<DefaultProducerContext> = config.create().unwrap();
    if transactional_id.is_some() {
        producer.init_transactions(STEP).unwrap();
    }
    producer
}

/// Sends `records` (key, value) to partition 0 and waits until the broker
/// has them (in its log, committed or not).
fn send(producer: &ThreadedProducer<DefaultProducerContext>, records: &[(&str, &str)]) {
    for (key, value) in records {
        let record = BaseRecord::<str, str>::to(TOPIC)
            .partition(0)
            .key(key)
            .payload(value);
        producer.send(record).map_err(|(e, _)| e).unwrap();
    }
    producer.flush(STEP).unwrap();
}

/// Ends the open transaction of `producer` after [`OPEN_FOR`], from another
/// thread (committing it, or aborting it); answers when it began to.
fn end_later(
    producer: ThreadedProducer<DefaultProducerContext>,
    commit: bool,
) -> JoinHandle<Instant> {
    std::thread::spawn(move || {
        std::thread::sleep(OPEN_FOR);
        let at = Instant::now();
        if commit {
            producer.commit_transaction(STEP).unwrap();
        } else {
            producer.abort_transaction(STEP).unwrap();
        }
        at
    })
}

/// Reads partition 0 from `from`: its records, where it ended, and when
/// the read returned.
fn restore(log: &ChangelogTopic, from: Option<u64>) -> (Records, u64, Instant) {
    let mut seen = Vec::new();
    let ends = log
        .read(
            &BTreeMap::from([(0, from)]),
            &mut |partition, key, value| {
                assert_eq!(partition, 0);
                seen.push((
                    String::from_utf8_lossy(key).into_owned(),
                    value.map(|v| String::from_utf8_lossy(v).into_owned()),
                ));
                Ok(())
            },
        )
        .unwrap();
    (seen, ends[&0], Instant::now())
}

fn records(list: &[(&str, &str)]) -> Records {
    list.iter()
        .map(|(k, v)| (k.to_string(), Some(v.to_string())))
        .collect()
}

#[test]
fn a_restore_waits_for_an_open_transaction_and_sees_exactly_what_committed() {
    let broker = KafkaBroker::start();
    let brokers = broker.bootstrap();
    let log = ChangelogTopic::open(&brokers, TOPIC, 1, true)
        .unwrap()
        .expect("the changelog is created");
    let owner = producer(&brokers, Some("restore-waits.old-owner"));
    owner.begin_transaction().unwrap();
    send(&owner, &[("k1", "a"), ("k2", "b")]);
    owner.commit_transaction(STEP).unwrap();

    // A transaction is open below the end when the restore begins: the
    // restore returns only after it committed, with its records.
    owner.begin_transaction().unwrap();
    send(&owner, &[("k3", "c"), ("k1", "a2")]);
    let committed = end_later(owner, true);
    let (seen, end, returned) = restore(&log, None);
    let committed_at = committed.join().unwrap();
    assert_eq!(
        seen,
        records(&[("k1", "a"), ("k2", "b"), ("k3", "c"), ("k1", "a2")])
    );
    // Two records, a commit marker, the open transaction's two records.
    assert_eq!(end, 5, "the end the partition had when the read began");
    assert!(
        returned > committed_at,
        "the restore returned before the transaction committed"
    );

    // Aborted: its record never shows, a record committed after it does,
    // and the restore returns only once the broker ended the transaction.
    let owner = producer(&brokers, Some("restore-waits.old-owner"));
    owner.begin_transaction().unwrap();
    send(&owner, &[("k9", "aborted")]);
    send(&producer(&brokers, None), &[("k4", "d")]);
    let aborted = end_later(owner, false);
    let (seen, _, returned) = restore(&log, Some(end));
    let aborted_at = aborted.join().unwrap();
    assert_eq!(seen, records(&[("k4", "d")]));
    assert!(
        returned > aborted_at,
        "the restore returned before the transaction was aborted"
    );
}
