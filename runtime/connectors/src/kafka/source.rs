//! [`KafkaSource`]: every partition of one topic, as one source.
//!
//! Partitions are assigned by hand (all of them; no group rebalancing)
//! and read `read_committed`, so output that an exactly-once producer
//! aborted is never read. The position is the next offset of each
//! partition that returned a record (`Position::Splits`); a restore
//! assigns from it, and partitions it does not name start where `start`
//! says. After a checkpoint is durable, its offsets are committed to the
//! consumer group (`weir.<topology>.<source>` unless `properties` set
//! `group.id`) for lag tools only: Weir never reads them back.
//!
//! On a cluster's node it reads only the partitions the node holds, each
//! from the further of the node's checkpoint and the offset the
//! topology's group committed (in the transaction of the partition's
//! last owner), and commits nothing itself: the node's transaction
//! commits its offsets. The node changes those partitions while the job
//! runs ([`LiveShare`]): at its next pull the source assigns its consumer
//! the new set, keeping the position of each partition it let go, and
//! its event time does not fall below the floor that came with the
//! partitions it took.
//!
//! A cluster's repartition topic is read the same way; once a
//! checkpoint committed, the records before its offsets are deleted
//! (nobody reads them again). Its event time comes from the upstream
//! tasks' event-time marks, not from its records' timestamps
//! ([`TaskMarks`]).
//!
//! Bounded (`weir run`): the input ends when every partition reached its
//! end as it was when reading began. Following (the server): it never
//! ends.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rdkafka::Message;
use rdkafka::consumer::{CommitMode, Consumer};
use rdkafka::error::{KafkaError as RdError, RDKafkaErrorCode};
use rdkafka::message::{BorrowedMessage, Headers};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use weir_io::{
    DeadLetter, DeadLetterFn, EndpointStats, FailureContext, FailureKind, Position, Pull, Source,
};
use weir_topology::{ErrorPolicyDoc, KafkaEdge, KafkaSourceDoc, KafkaStart};
use weir_types::{Event, now_ms};

use super::config::{
    KafkaError, LOOKUP_TIMEOUT, QuietContext, WeirConsumer, base_config, partitions_of,
};
use super::format::{HEADER_OFFSET, HEADER_PARTITION, HEADER_TOPIC, RecordFormat, RecordIn};
use super::live::LiveShare;
use super::repartition::{EVENT_TIME_MARK, Purger, parse_event_time_mark};

/// How long one pull waits for a record before saying `Idle`.
const POLL_WAIT: Duration = Duration::from_millis(20);
/// A partition idle this long does not hold back event time, by default.
const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(10);
/// librdkafka's prefetch per consumer, KiB: when the topology is slower
/// than the topic, fetching stops at this much (backpressure).
const PREFETCH_KIB: &str = "16384";
/// Least time between two warnings about the same broker error.
const WARN_EVERY: Duration = Duration::from_secs(10);

/// Dead letters shared between the engine and the sources that write
/// unreadable records there.
pub(crate) type SharedDeadLetters = Arc<Mutex<DeadLetterFn>>;

/// What one partition has shown of event time.
#[derive(Debug, Clone, Copy)]
struct PartitionTime {
    highest: i64,
    last_record: Instant,
}

/// A repartition topic's event time: per partition read and upstream
/// task, the latest event-time mark (see `repartition.rs`). A task that
/// has not marked a partition holds its event time back from the
/// partition's assignment until `idle_timeout` passes without a mark.
#[derive(Debug)]
struct TaskMarks {
    /// How many upstream tasks there are: the topic's partition count.
    tasks: u32,
    latest: BTreeMap<(u32, u32), PartitionTime>,
}

impl TaskMarks {
    /// Every task of each of `partitions` counts from now on.
    fn seed(&mut self, partitions: &[i32]) {
        let now = Instant::now();
        for &p in partitions {
            for task in 0..self.tasks {
                self.latest
                    .entry((p as u32, task))
                    .or_insert(PartitionTime {
                        highest: i64::MIN,
                        last_record: now,
                    });
            }
        }
    }

    /// A mark read from `partition`; `false` when it does not parse.
    fn apply(&mut self, partition: u32, header: &[u8], payload: &[u8]) -> bool {
        let Some((tasks, time)) = parse_event_time_mark(header, payload, self.tasks) else {
            return false;
        };
        let now = Instant::now();
        for task in tasks {
            let at = self
                .latest
                .entry((partition, task))
                .or_insert(PartitionTime {
                    highest: i64::MIN,
                    last_record: now,
                });
            at.highest = at.highest.max(time);
            at.last_record = now;
        }
        true
    }

    /// The least event time of the tasks marked within `idle_timeout`.
    fn least(&self, idle_timeout: Duration) -> Option<i64> {
        let now = Instant::now();
        self.latest
            .values()
            .filter(|t| now.duration_since(t.last_record) < idle_timeout)
            .map(|t| t.highest)
            .min()
    }
}

/// The tasks header of an event-time mark, when `msg` is one.
fn mark_header<'m>(msg: &'m BorrowedMessage<'_>) -> Option<&'m [u8]> {
    msg.headers()?
        .iter()
        .find(|h| h.key == EVENT_TIME_MARK)
        .map(|h| h.value.unwrap_or_default())
}

/// A Kafka topic as a source. Created by [`bind_kafka`](super::bind_kafka).
pub struct KafkaSource {
    /// `source `name``, for messages.
    what: String,
    topic: String,
    brokers: String,
    consumer: WeirConsumer,
    partitions: Vec<i32>,
    start: KafkaStart,
    format: RecordFormat,
    on_error: ErrorPolicyDoc,
    dead_letters: Option<SharedDeadLetters>,
    /// The next offset of each partition that returned a record, or that a
    /// restore named.
    next: BTreeMap<u32, u64>,
    times: BTreeMap<u32, PartitionTime>,
    idle_timeout: Duration,
    /// Bounded: the partitions that have not reached their end yet.
    unfinished: Option<BTreeSet<i32>>,
    assigned: bool,
    last_warning: Option<Instant>,
    /// Per partition: the next offset and the last known high watermark;
    /// records read. Refreshed at most every [`STATS_EVERY`].
    stats: Arc<EndpointStats>,
    records_in: u64,
    stats_at: Option<Instant>,
    /// On a cluster's node: the partitions the node holds are the only
    /// ones read, each from the further of this node's checkpoint and
    /// the group's committed offset; nothing is committed here.
    shared: bool,
    /// A repartition topic: what a committed checkpoint read is deleted.
    purger: Option<Purger>,
    /// On a cluster's node: the share it follows, its id there and the
    /// epoch it read as of.
    live: Option<(Arc<LiveShare>, u64, u64)>,
    /// The least event time it reports (partitions taken over from
    /// another node came with it); `i64::MIN`: none.
    floor: i64,
    /// A repartition topic: its event time from the upstream tasks' marks.
    marks: Option<TaskMarks>,
}

impl Drop for KafkaSource {
    fn drop(&mut self) {
        if let Some((share, id, _)) = &self.live {
            share.unregister(*id);
        }
    }
}

/// What a cluster's node reads of a topic.
#[derive(Debug, Clone, Copy)]
pub(crate) struct NodeRead<'a> {
    /// The partitions the node holds, changed while the job runs.
    pub live: &'a Arc<LiveShare>,
    /// A repartition topic: the records a committed checkpoint read past
    /// are deleted.
    pub purge: bool,
}

/// How often a source refreshes its [`EndpointStats`].
const STATS_EVERY: Duration = Duration::from_secs(1);

impl std::fmt::Debug for KafkaSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KafkaSource")
            .field("topic", &self.topic)
            .field("partitions", &self.partitions)
            .field("next", &self.next)
            .finish()
    }
}

impl KafkaSource {
    /// Connects to `brokers` and finds the topic's partitions (an error
    /// when the topic does not exist or the brokers do not answer).
    pub(crate) fn connect(
        what: String,
        group: &str,
        doc: &KafkaSourceDoc,
        brokers: &str,
        bounded: bool,
        dead_letters: Option<SharedDeadLetters>,
        share: Option<NodeRead<'_>>,
    ) -> Result<KafkaSource, KafkaError> {
        let mut config = base_config(brokers, &BTreeMap::new())?;
        config
            .set("group.id", group)
            .set("queued.max.messages.kbytes", PREFETCH_KIB)
            .set("auto.offset.reset", "earliest");
        for (name, value) in &doc.properties {
            if let Some(text) = weir_topology::property_text(value) {
                config.set(name, text);
            }
        }
        // What the connector's guarantees rest on comes last.
        config
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("enable.partition.eof", "true")
            .set("isolation.level", "read_committed");
        let stats = Arc::<EndpointStats>::default();
        let consumer: WeirConsumer = config
            .set(
                "statistics.interval.ms",
                STATS_EVERY.as_millis().to_string(),
            )
            .create_with_context(QuietContext::with_ends(stats.clone()))
            .map_err(|e| KafkaError::Config(e.to_string()))?;
        let mut partitions = partitions_of(&consumer, brokers, &doc.topic)?;
        let tasks = partitions.len() as u32;
        let mut floor = i64::MIN;
        let live = share.map(|s| {
            let (id, reads) = s.live.register(&doc.topic);
            partitions.retain(|p| reads.partitions.contains(p));
            floor = reads.floor;
            (s.live.clone(), id, reads.epoch)
        });
        tracing::info!(
            kafka.topic = %doc.topic,
            partitions = partitions.len(),
            "{what} reads a Kafka topic"
        );
        Ok(KafkaSource {
            what,
            topic: doc.topic.clone(),
            brokers: brokers.to_string(),
            consumer,
            unfinished: bounded.then(|| partitions.iter().copied().collect()),
            partitions,
            start: doc
                .start
                .clone()
                .unwrap_or(KafkaStart::Edge(KafkaEdge::Earliest)),
            format: RecordFormat::of_source(doc),
            on_error: doc.on_error.unwrap_or(ErrorPolicyDoc::DeadLetter),
            dead_letters,
            next: BTreeMap::new(),
            times: BTreeMap::new(),
            idle_timeout: doc
                .idle_timeout_ms
                .map_or(DEFAULT_IDLE_TIMEOUT, Duration::from_millis),
            assigned: false,
            last_warning: None,
            stats,
            records_in: 0,
            stats_at: None,
            shared: share.is_some(),
            purger: share
                .is_some_and(|s| s.purge)
                .then(|| Purger::new(brokers, &doc.topic))
                .transpose()?,
            live,
            floor,
            marks: share.is_some_and(|s| s.purge).then(|| TaskMarks {
                tasks,
                latest: BTreeMap::new(),
            }),
        })
    }

    /// On a cluster's node, when the node changed what its job reads:
    /// assigns the new partitions (each from where the group says its
    /// last owner got to) and keeps reading the others from where it is;
    /// the position of a partition let go stays, so the next checkpoint
    /// commits how far it got.
    fn follow_live(&mut self) -> Result<(), String> {
        let Some((share, id, seen)) = &self.live else {
            return Ok(());
        };
        if share.epoch() == *seen {
            return Ok(());
        }
        let (share, id) = (share.clone(), *id);
        let reads = share.reads_of(&self.topic);
        if reads.partitions != self.partitions {
            tracing::info!(
                kafka.topic = %self.topic,
                from = ?self.partitions,
                to = ?reads.partitions,
                "{} reads other partitions now",
                self.what
            );
            self.times
                .retain(|p, _| reads.partitions.contains(&(*p as i32)));
            if let Some(marks) = &mut self.marks {
                marks
                    .latest
                    .retain(|(p, _), _| reads.partitions.contains(&(*p as i32)));
            }
            // Figures of partitions let go, or taken again, are stale.
            for &p in self.partitions.iter().chain(&reads.partitions) {
                if self.partitions.contains(&p) != reads.partitions.contains(&p) {
                    self.stats.remove_split(p as u32);
                }
            }
            self.partitions = reads.partitions;
            self.stats_at = None;
            if self.assigned {
                self.assign()?;
            }
        }
        self.floor = self.floor.max(reads.floor);
        share.applied(id, reads.epoch);
        if let Some(live) = &mut self.live {
            live.2 = reads.epoch;
        }
        Ok(())
    }

    /// The group's committed offset of each partition read (on a
    /// cluster's node: where the previous owner handed over).
    fn group_offsets(&self) -> Result<BTreeMap<i32, i64>, String> {
        let mut asked = TopicPartitionList::new();
        for &p in &self.partitions {
            asked.add_partition(&self.topic, p);
        }
        let have = self
            .consumer
            .committed_offsets(asked, LOOKUP_TIMEOUT)
            .map_err(|e| {
                format!(
                    "{}: cannot read the committed offsets of its group on {}: {e}",
                    self.what, self.brokers
                )
            })?;
        Ok(have
            .elements()
            .iter()
            .filter_map(|e| match e.offset() {
                Offset::Offset(o) if o >= 0 => Some((e.partition(), o)),
                _ => None,
            })
            .collect())
    }

    /// Its live figures: a split per partition (next offset, high
    /// watermark), and `records_in`.
    pub fn stats(&self) -> Arc<EndpointStats> {
        self.stats.clone()
    }

    /// Publishes where each partition is (their ends come from the
    /// consumer's statistics, see [`QuietContext`]).
    fn report(&mut self) {
        if self.stats_at.is_some_and(|at| at.elapsed() < STATS_EVERY) {
            return;
        }
        self.stats_at = Some(Instant::now());
        // Only the partitions read: `next` keeps those let go too.
        for &p in &self.partitions {
            if let Some(&next) = self.next.get(&(p as u32)) {
                self.stats.set_split(p as u32, next, None);
            }
        }
        self.stats
            .add("records_in", std::mem::take(&mut self.records_in));
    }

    /// The topic's partitions.
    pub fn partitions(&self) -> &[i32] {
        &self.partitions
    }

    /// Where each partition is read from: the restored offset, or `start`.
    fn assignment(&self) -> Result<TopicPartitionList, String> {
        let mut list = TopicPartitionList::new();
        let mut by_time = TopicPartitionList::new();
        let handed = match self.shared {
            true => self.group_offsets()?,
            false => BTreeMap::new(),
        };
        for &p in &self.partitions {
            let next = match (self.next.get(&(p as u32)), handed.get(&p)) {
                (Some(&mine), Some(&group)) => Some(mine.max(group as u64)),
                (mine, group) => mine.copied().or(group.map(|&g| g as u64)),
            };
            let offset = match (next, &self.start) {
                (Some(next), _) => Offset::Offset(next as i64),
                (None, KafkaStart::Edge(KafkaEdge::Earliest)) => Offset::Beginning,
                (None, KafkaStart::Edge(KafkaEdge::Latest)) => Offset::Offset(self.end_of(p)?),
                (None, KafkaStart::Offsets { offsets }) => offsets
                    .get(&(p as u32))
                    .map_or(Offset::Beginning, |&o| Offset::Offset(o as i64)),
                (None, KafkaStart::Timestamp { timestamp }) => {
                    by_time
                        .add_partition_offset(&self.topic, p, Offset::Offset(*timestamp))
                        .map_err(|e| e.to_string())?;
                    continue;
                }
            };
            list.add_partition_offset(&self.topic, p, offset)
                .map_err(|e| e.to_string())?;
        }
        if by_time.count() > 0 {
            let found = self
                .consumer
                .offsets_for_times(by_time, LOOKUP_TIMEOUT)
                .map_err(|e| {
                    format!(
                        "{}: cannot look up the offsets of `start: {{timestamp}}` on {}: {e}",
                        self.what, self.brokers
                    )
                })?;
            for e in found.elements() {
                // No record at or after the time: the partition's end.
                let offset = match e.offset() {
                    Offset::Offset(o) if o >= 0 => Offset::Offset(o),
                    _ => Offset::Offset(self.end_of(e.partition())?),
                };
                list.add_partition_offset(&self.topic, e.partition(), offset)
                    .map_err(|e| e.to_string())?;
            }
        }
        Ok(list)
    }

    /// The end (high watermark) of partition `p` now.
    fn end_of(&self, p: i32) -> Result<i64, String> {
        self.consumer
            .fetch_watermarks(&self.topic, p, LOOKUP_TIMEOUT)
            .map(|(_, high)| high)
            .map_err(|e| {
                format!(
                    "{}: cannot find the end of partition {p} on {}: {e}",
                    self.what, self.brokers
                )
            })
    }

    fn assign(&mut self) -> Result<(), String> {
        let list = self.assignment()?;
        // Where `latest` or a time resolved to is part of the position from
        // now on, so a restore does not skip what came in meanwhile.
        for e in list.elements() {
            if let Offset::Offset(o) = e.offset() {
                let next = self.next.entry(e.partition() as u32).or_insert(o as u64);
                *next = (*next).max(o as u64);
            }
        }
        self.consumer
            .assign(&list)
            .map_err(|e| format!("{}: cannot assign partitions: {e}", self.what))?;
        self.assigned = true;
        // A partition holds event time back from its assignment until it
        // reads past it or stays idle for `idle_timeout`: its first
        // records are not late because another partition is ahead.
        let now = Instant::now();
        for &p in &self.partitions {
            self.times.entry(p as u32).or_insert(PartitionTime {
                highest: i64::MIN,
                last_record: now,
            });
        }
        if let Some(marks) = &mut self.marks {
            marks.seed(&self.partitions);
        }
        Ok(())
    }

    /// The event of a record, or what its policy says when it cannot be
    /// read: `Ok(None)` skips it.
    fn event_of(&self, msg: &BorrowedMessage<'_>) -> Result<Option<Event>, String> {
        let record = RecordIn {
            key: msg.key(),
            value: msg.payload(),
            timestamp: msg.timestamp().to_millis(),
        };
        let mut event = match self.format.to_event(record, now_ms()) {
            Ok(e) => e,
            Err(reason) => return self.unreadable(msg, reason).map(|()| None),
        };
        if self.format.headers
            && let Some(headers) = msg.headers()
        {
            for h in headers.iter() {
                event
                    .headers
                    .push((h.key.to_string(), h.value.unwrap_or_default().to_vec()));
            }
        }
        Ok(Some(event))
    }

    /// A record `format` cannot read: dead-lettered (with its topic,
    /// partition and offset in headers), skipped, or an error.
    fn unreadable(&self, msg: &BorrowedMessage<'_>, reason: String) -> Result<(), String> {
        let at = format!(
            "record at partition {} offset {} of topic `{}`",
            msg.partition(),
            msg.offset(),
            self.topic
        );
        match self.on_error {
            ErrorPolicyDoc::Fail => Err(format!(
                "{}: {at}: {reason} (set `on_error: dead-letter` or `skip` to go past such records)",
                self.what
            )),
            ErrorPolicyDoc::Skip => {
                tracing::warn!(kafka.topic = %self.topic, "{}: skipped {at}: {reason}", self.what);
                Ok(())
            }
            ErrorPolicyDoc::DeadLetter => {
                let Some(letters) = &self.dead_letters else {
                    return Err(format!(
                        "{}: {at}: {reason}, and no dead-letter output is bound",
                        self.what
                    ));
                };
                let mut headers = vec![
                    (HEADER_TOPIC.to_string(), self.topic.clone().into_bytes()),
                    (
                        HEADER_PARTITION.to_string(),
                        msg.partition().to_string().into_bytes(),
                    ),
                    (
                        HEADER_OFFSET.to_string(),
                        msg.offset().to_string().into_bytes(),
                    ),
                ];
                if let Some(h) = msg.headers() {
                    headers.extend(
                        h.iter()
                            .map(|h| (h.key.to_string(), h.value.unwrap_or_default().to_vec())),
                    );
                }
                let letter = DeadLetter {
                    operator: self.what.clone(),
                    error: reason,
                    failed_at: now_ms(),
                    event: Event {
                        key: msg.key().map(<[u8]>::to_vec),
                        value: msg.payload().unwrap_or_default().to_vec(),
                        timestamp: msg.timestamp().to_millis().unwrap_or_else(now_ms),
                        headers,
                    },
                    context: FailureContext {
                        offset: u64::try_from(msg.offset()).ok(),
                        ..FailureContext::of(FailureKind::Refused)
                    },
                };
                let mut write = letters
                    .lock()
                    .map_err(|_| "the dead-letter output's lock is poisoned".to_string())?;
                (*write)(&letter)
            }
        }
    }

    /// Logs a broker error the client retries by itself, at most every
    /// [`WARN_EVERY`].
    fn transient(&mut self, error: &RdError) {
        let now = Instant::now();
        if self
            .last_warning
            .is_none_or(|at| now.duration_since(at) >= WARN_EVERY)
        {
            self.last_warning = Some(now);
            tracing::warn!(
                kafka.topic = %self.topic,
                kafka.brokers = %self.brokers,
                "{}: {error} (librdkafka retries)",
                self.what
            );
        }
    }
}

impl Source for KafkaSource {
    /// Its pull polls the broker with a timeout.
    fn blocking(&self) -> bool {
        true
    }

    fn seek(&mut self, position: &Position) -> Result<(), String> {
        match position {
            Position::Splits(offsets) => {
                self.next = offsets.clone();
                if self.shared {
                    // Partitions this node no longer holds are another's.
                    let held: BTreeSet<u32> = self.partitions.iter().map(|&p| p as u32).collect();
                    self.next.retain(|p, _| held.contains(p));
                }
                self.assigned = false;
                Ok(())
            }
            Position::Count(0) => Ok(()),
            Position::Count(n) => Err(format!(
                "{}: the checkpoint recorded {n} events read, not Kafka offsets: the source was \
                 not a Kafka topic then; start the topology without its checkpoint",
                self.what
            )),
        }
    }

    fn pull(&mut self) -> Result<Pull, String> {
        self.follow_live()?;
        if !self.assigned {
            self.assign()?;
        }
        self.report();
        loop {
            if self.unfinished.as_ref().is_some_and(BTreeSet::is_empty) {
                return Ok(Pull::End);
            }
            let read = match self.consumer.poll(POLL_WAIT) {
                None => return Ok(Pull::Idle),
                Some(Ok(msg)) => {
                    if let Some(marks) = &mut self.marks
                        && let Some(header) = mark_header(&msg)
                    {
                        let partition = msg.partition() as u32;
                        if !marks.apply(partition, header, msg.payload().unwrap_or_default()) {
                            tracing::warn!(
                                kafka.topic = %self.topic,
                                kafka.partition = partition,
                                kafka.offset = msg.offset(),
                                "{}: skipped an event-time mark that does not parse",
                                self.what
                            );
                        }
                        self.next.insert(partition, msg.offset() as u64 + 1);
                        continue;
                    }
                    let event = self.event_of(&msg)?;
                    Ok((msg.partition() as u32, msg.offset() as u64 + 1, event))
                }
                Some(Err(e)) => Err(e),
            };
            match read {
                Ok((partition, next, event)) => {
                    self.next.insert(partition, next);
                    self.records_in += 1;
                    let Some(event) = event else { continue };
                    let now = Instant::now();
                    let time = self.times.entry(partition).or_insert(PartitionTime {
                        highest: i64::MIN,
                        last_record: now,
                    });
                    time.highest = time.highest.max(event.timestamp);
                    time.last_record = now;
                    return Ok(Pull::Event(event));
                }
                Err(RdError::PartitionEOF(p)) => {
                    if let Some(unfinished) = &mut self.unfinished {
                        unfinished.remove(&p);
                    }
                }
                Err(e)
                    if e.rdkafka_error_code()
                        == Some(RDKafkaErrorCode::UnknownTopicOrPartition) =>
                {
                    return Err(format!(
                        "{}: topic `{}` is gone from {}: {e}",
                        self.what, self.topic, self.brokers
                    ));
                }
                Err(e) => {
                    self.transient(&e);
                    return Ok(Pull::Idle);
                }
            }
        }
    }

    fn position(&self) -> Option<Position> {
        Some(Position::Splits(self.next.clone()))
    }

    fn event_time(&self) -> Option<i64> {
        let now = Instant::now();
        let least = match &self.marks {
            Some(marks) => marks.least(self.idle_timeout),
            None => self
                .times
                .values()
                .filter(|t| now.duration_since(t.last_record) < self.idle_timeout)
                .map(|t| t.highest)
                .min(),
        };
        match least {
            Some(t) => Some(t.max(self.floor)),
            None => (self.floor > i64::MIN).then_some(self.floor),
        }
    }

    fn committed(&mut self, position: &Position) -> Result<(), String> {
        let Position::Splits(offsets) = position else {
            return Ok(());
        };
        if let Some(purger) = &mut self.purger {
            // The checkpoint's transaction committed these offsets to the
            // group: no owner of these partitions reads before them again.
            purger.purge(offsets);
        }
        if offsets.is_empty() || self.shared {
            return Ok(());
        }
        let mut list = TopicPartitionList::new();
        for (&p, &next) in offsets {
            list.add_partition_offset(&self.topic, p as i32, Offset::Offset(next as i64))
                .map_err(|e| e.to_string())?;
        }
        // Only for lag tools: a failure is logged, never fatal. A bounded
        // source that read everything waits for it: the run ends after
        // this checkpoint, and an asynchronous commit could be lost with
        // the process.
        let mode = match &self.unfinished {
            Some(left) if left.is_empty() => CommitMode::Sync,
            _ => CommitMode::Async,
        };
        if let Err(e) = self.consumer.commit(&list, mode) {
            self.transient(&e);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;
    use crate::kafka::repartition::event_time_mark;

    #[test]
    fn a_repartition_topics_event_time_is_the_least_tasks_mark() {
        let mut marks = TaskMarks {
            tasks: 2,
            latest: BTreeMap::new(),
        };
        marks.seed(&[0, 1]);
        let wait = Duration::from_secs(60);
        // No task marked yet: nothing moves.
        assert_eq!(marks.least(wait), Some(i64::MIN));
        let (both, ahead) = event_time_mark(&BTreeSet::from([0, 1]), 100_000);
        assert!(marks.apply(0, &both, &ahead));
        // Partition 1 has no mark of either task yet.
        assert_eq!(marks.least(wait), Some(i64::MIN));
        assert!(marks.apply(1, &both, &ahead));
        assert_eq!(marks.least(wait), Some(100_000));
        // Task 1 lags in partition 1: it holds the event time back.
        let (one, behind) = event_time_mark(&BTreeSet::from([1]), 5_000);
        assert!(marks.apply(1, &one, &behind));
        assert_eq!(marks.least(wait), Some(100_000), "a mark never goes back");
        let mut fresh = TaskMarks {
            tasks: 2,
            latest: BTreeMap::new(),
        };
        fresh.seed(&[0]);
        assert!(fresh.apply(0, &one, &behind));
        let (task0, _) = event_time_mark(&BTreeSet::from([0]), 100_000);
        assert!(fresh.apply(0, &task0, &ahead));
        assert_eq!(fresh.least(wait), Some(5_000));
        // Idle tasks do not count; a hostile mark is refused.
        assert_eq!(fresh.least(Duration::ZERO), None);
        assert!(!fresh.apply(0, b"7", &ahead));
    }
}
