//! `/metrics`: what the server runs, in the OpenMetrics text format,
//! encoded by `prometheus-client`.
//!
//! The engine keeps its counters as plain atomics, so each scrape takes a
//! [`Scrape`] (a snapshot of topologies, their operators and checkpoints,
//! and the streams) and encodes it through a [`Collector`]. Names that
//! users choose (topologies, operators, guest counters) become label
//! values: every family is capped at [`MAX_SERIES_PER_FAMILY`] series, and
//! what the cap left out is counted in `weir_metrics_series_dropped`.

use std::fmt;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{
    DescriptorEncoder, EncodeMetric, MetricEncoder, NoLabelSet, text,
};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Registry;
use weir_connectors::StreamInfo;
use weir_engine::{CheckpointInfo, EndpointSnapshot, LATENCY_BUCKETS_MICROS, MetricsSnapshot};

use crate::ControlPlane;

/// The content type of [`Scrape::render`]'s text.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Most series one metric family shows in a scrape.
pub const MAX_SERIES_PER_FAMILY: usize = 10_000;

/// One topology as a scrape sees it.
#[derive(Debug)]
struct TopologyRow {
    name: String,
    /// Its phase (`running`, `restarting`, ...), when it has an owner.
    phase: Option<String>,
    restarts: u64,
    running: bool,
    operators: Vec<(String, usize, MetricsSnapshot)>,
    endpoints: Vec<(String, EndpointSnapshot)>,
    checkpoint: Option<CheckpointInfo>,
    /// Checkpoints of the current run aborted because their commit failed.
    failed_checkpoints: u64,
}

/// What the server runs, at one moment.
#[derive(Debug)]
pub struct Scrape {
    topologies: Vec<TopologyRow>,
    streams: Vec<StreamInfo>,
}

impl Scrape {
    /// Takes the snapshot; blocking (it reads topology records from disk).
    pub fn take(plane: &ControlPlane) -> Result<Scrape, weir_connectors::StreamError> {
        let phases = plane.topologies.phases();
        let running = plane.topologies.running();
        let names = plane.topologies.names().unwrap_or_default();
        let topologies = names
            .into_iter()
            .map(|name| {
                let owned = phases.iter().find(|(n, _, _)| *n == name);
                let is_running = running.contains(&name);
                let status = if is_running {
                    plane.topologies.status(&name).ok()
                } else {
                    None
                };
                let (operators, endpoints, checkpoint, failed_checkpoints) = status
                    .map(|s| {
                        (
                            s.operators,
                            s.endpoints,
                            s.last_checkpoint,
                            s.failed_checkpoints.0,
                        )
                    })
                    .unwrap_or_default();
                TopologyRow {
                    phase: owned.and_then(|(_, phase, _)| {
                        serde_json::to_value(phase)
                            .ok()
                            .and_then(|v| v.as_str().map(String::from))
                    }),
                    restarts: owned.map_or(0, |(_, _, r)| *r),
                    running: is_running,
                    operators,
                    endpoints,
                    checkpoint,
                    failed_checkpoints,
                    name,
                }
            })
            .collect();
        Ok(Scrape {
            topologies,
            streams: plane.streams.list()?,
        })
    }

    /// The snapshot in the OpenMetrics text format.
    pub fn render(self) -> String {
        let mut registry = Registry::default();
        registry.register_collector(Box::new(self));
        let mut out = String::new();
        // Writing into a String cannot fail, and the collector's only
        // errors are the writer's.
        let _ = text::encode(&mut out, &registry);
        out
    }
}

type Labels = Vec<(&'static str, String)>;

/// A batch-latency histogram from an instance's snapshot.
#[derive(Debug)]
struct Latency {
    sum_seconds: f64,
    count: u64,
    /// `(upper bound in seconds, batches in this bucket alone)`, the last
    /// bound infinite.
    buckets: Vec<(f64, u64)>,
}

impl Latency {
    fn of(m: &MetricsSnapshot) -> Latency {
        let bounds = LATENCY_BUCKETS_MICROS
            .iter()
            .map(|b| *b as f64 / 1e6)
            .chain([f64::INFINITY]);
        Latency {
            sum_seconds: m.latency_sum.as_secs_f64(),
            count: m.latency_buckets.iter().sum(),
            buckets: bounds.zip(m.latency_buckets.iter().copied()).collect(),
        }
    }
}

impl EncodeMetric for Latency {
    fn encode(&self, mut encoder: MetricEncoder) -> fmt::Result {
        encoder.encode_histogram::<NoLabelSet>(self.sum_seconds, self.count, &self.buckets, None)
    }

    fn metric_type(&self) -> MetricType {
        MetricType::Histogram
    }
}

/// Writes families, counting the series the cap leaves out.
struct Families<'a> {
    encoder: DescriptorEncoder<'a>,
    dropped: u64,
}

impl Families<'_> {
    fn family<M: EncodeMetric>(
        &mut self,
        name: &str,
        help: &str,
        kind: MetricType,
        series: impl IntoIterator<Item = (Labels, M)>,
    ) -> fmt::Result {
        let mut family = self.encoder.encode_descriptor(name, help, None, kind)?;
        for (i, (labels, metric)) in series.into_iter().enumerate() {
            if i >= MAX_SERIES_PER_FAMILY {
                self.dropped += 1;
                continue;
            }
            metric.encode(family.encode_family(&labels)?)?;
        }
        Ok(())
    }

    fn counters(
        &mut self,
        name: &str,
        help: &str,
        series: impl IntoIterator<Item = (Labels, u64)>,
    ) -> fmt::Result {
        let series = series.into_iter().map(|(l, v)| (l, ConstCounter::new(v)));
        self.family(name, help, MetricType::Counter, series)
    }

    fn gauges<V: prometheus_client::encoding::EncodeGaugeValue>(
        &mut self,
        name: &str,
        help: &str,
        series: impl IntoIterator<Item = (Labels, V)>,
    ) -> fmt::Result {
        let series = series.into_iter().map(|(l, v)| (l, ConstGauge::new(v)));
        self.family(name, help, MetricType::Gauge, series)
    }
}

fn topology(name: &str) -> Labels {
    vec![("topology", name.to_string())]
}

fn instance(topology: &str, operator: &str, instance: usize) -> Labels {
    vec![
        ("topology", topology.to_string()),
        ("operator", operator.to_string()),
        ("instance", instance.to_string()),
    ]
}

impl Scrape {
    fn instances(&self) -> impl Iterator<Item = (&str, &str, usize, &MetricsSnapshot)> {
        self.topologies.iter().flat_map(|t| {
            t.operators
                .iter()
                .map(move |(op, i, m)| (t.name.as_str(), op.as_str(), *i, m))
        })
    }

    fn splits(&self) -> impl Iterator<Item = (Labels, &weir_engine::SplitStats)> {
        self.topologies.iter().flat_map(|t| {
            t.endpoints.iter().flat_map(move |(endpoint, e)| {
                e.splits.iter().map(move |(split, s)| {
                    let labels = vec![
                        ("topology", t.name.clone()),
                        ("endpoint", endpoint.clone()),
                        ("split", split.to_string()),
                    ];
                    (labels, s)
                })
            })
        })
    }

    fn instance_counter(
        &self,
        f: &mut Families,
        name: &str,
        help: &str,
        value: fn(&MetricsSnapshot) -> u64,
    ) -> fmt::Result {
        let series = self
            .instances()
            .map(|(t, op, i, m)| (instance(t, op, i), value(m)));
        f.counters(name, help, series)
    }

    fn checkpoint_gauge(
        &self,
        f: &mut Families,
        name: &str,
        help: &str,
        value: fn(&CheckpointInfo) -> f64,
    ) -> fmt::Result {
        let series = self.topologies.iter().filter_map(|t| {
            let c = t.checkpoint.as_ref()?;
            Some((topology(&t.name), value(c)))
        });
        f.gauges(name, help, series)
    }

    fn stream_gauge(
        &self,
        f: &mut Families,
        name: &str,
        help: &str,
        value: fn(&StreamInfo) -> u64,
    ) -> fmt::Result {
        let series = self
            .streams
            .iter()
            .map(|s| (vec![("stream", s.name.clone())], value(s)));
        f.gauges(name, help, series)
    }
}

impl Collector for Scrape {
    fn encode(&self, encoder: DescriptorEncoder) -> fmt::Result {
        let f = &mut Families {
            encoder,
            dropped: 0,
        };
        f.gauges(
            "weir_topology_running",
            "Whether a topology is running (1) or not.",
            self.topologies
                .iter()
                .map(|t| (topology(&t.name), u64::from(t.running))),
        )?;
        f.gauges(
            "weir_topology_phase",
            "The phase a topology is in (1 for its current one).",
            self.topologies.iter().filter_map(|t| {
                let mut labels = topology(&t.name);
                labels.push(("phase", t.phase.clone()?));
                Some((labels, 1u64))
            }),
        )?;
        f.counters(
            "weir_topology_restarts",
            "Restarts of a topology after failures (this process).",
            self.topologies
                .iter()
                .filter(|t| t.phase.is_some())
                .map(|t| (topology(&t.name), t.restarts)),
        )?;
        f.counters(
            "weir_checkpoint_failed",
            "Checkpoints of a running topology's current run whose commit failed and that were aborted (their changes went into the next).",
            self.topologies
                .iter()
                .filter(|t| t.running)
                .map(|t| (topology(&t.name), t.failed_checkpoints)),
        )?;
        self.instance_counter(
            f,
            "weir_operator_events_in",
            "Events an operator instance received.",
            |m| m.events_in,
        )?;
        self.instance_counter(
            f,
            "weir_operator_events_out",
            "Events an operator instance emitted.",
            |m| m.events_out,
        )?;
        self.instance_counter(
            f,
            "weir_operator_errors",
            "Events an operator instance failed on.",
            |m| m.errors,
        )?;
        self.instance_counter(
            f,
            "weir_operator_dead_lettered",
            "Events an operator instance sent to the dead-letter stream.",
            |m| m.dead_lettered,
        )?;
        self.instance_counter(
            f,
            "weir_operator_late_events",
            "Events that arrived behind the instance's watermark.",
            |m| m.late,
        )?;
        f.counters(
            "weir_operator_guest",
            "Counters an operator keeps itself (context counter-add), by name.",
            self.instances().flat_map(|(t, op, i, m)| {
                m.guest_counters.iter().map(move |(counter, v)| {
                    let mut labels = instance(t, op, i);
                    labels.push(("counter", counter.clone()));
                    (labels, *v)
                })
            }),
        )?;
        f.family(
            "weir_operator_batch_seconds",
            "Time an operator instance took per batch.",
            MetricType::Histogram,
            self.instances()
                .map(|(t, op, i, m)| (instance(t, op, i), Latency::of(m))),
        )?;
        f.gauges(
            "weir_source_split_position",
            "Next offset a source hands to the engine, per split (a stream is split 0, a Kafka topic has one per partition).",
            self.splits().map(|(l, s)| (l, s.position)),
        )?;
        f.gauges(
            "weir_source_split_lag",
            "Records of a split the source has yet to read (a Kafka partition: to its last stable offset).",
            self.splits()
                .filter_map(|(l, s)| Some((l, s.lag()?))),
        )?;
        f.counters(
            "weir_connector_count",
            "What a source or sink counted: records_in; records_out, transactions_committed, transactions_aborted.",
            self.topologies.iter().flat_map(|t| {
                t.endpoints.iter().flat_map(move |(endpoint, e)| {
                    e.counters.iter().map(move |(counter, v)| {
                        let labels = vec![
                            ("topology", t.name.clone()),
                            ("endpoint", endpoint.clone()),
                            ("counter", counter.to_string()),
                        ];
                        (labels, *v)
                    })
                })
            }),
        )?;
        self.checkpoint_gauge(
            f,
            "weir_checkpoint_last_id",
            "Id of the newest completed checkpoint.",
            |c| c.id as f64,
        )?;
        self.checkpoint_gauge(
            f,
            "weir_checkpoint_last_duration_seconds",
            "Newest checkpoint, from request to durable commit.",
            |c| c.duration_ms / 1e3,
        )?;
        self.checkpoint_gauge(
            f,
            "weir_checkpoint_last_alignment_seconds",
            "Newest checkpoint's longest barrier alignment.",
            |c| c.alignment_ms / 1e3,
        )?;
        self.checkpoint_gauge(
            f,
            "weir_checkpoint_last_commit_seconds",
            "Newest checkpoint's commit alone.",
            |c| c.commit_ms / 1e3,
        )?;
        self.checkpoint_gauge(
            f,
            "weir_checkpoint_last_bytes",
            "Bytes the newest checkpoint wrote.",
            |c| c.bytes as f64,
        )?;
        self.stream_gauge(
            f,
            "weir_stream_end_offset",
            "Offset the next event appended to a stream gets.",
            |s| s.end_offset,
        )?;
        self.stream_gauge(
            f,
            "weir_stream_start_offset",
            "First offset a stream still holds.",
            |s| s.start_offset,
        )?;
        self.stream_gauge(
            f,
            "weir_stream_bytes",
            "Bytes a stream holds on disk.",
            |s| s.bytes,
        )?;
        let dropped = f.dropped;
        f.counters(
            "weir_metrics_series_dropped",
            "Series this scrape left out: a family had more than its cap.",
            [(Vec::new(), dropped)],
        )
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::time::Duration;

    use super::*;

    fn snapshot(guest: &[(&str, u64)]) -> MetricsSnapshot {
        let mut latency_buckets = vec![0; LATENCY_BUCKETS_MICROS.len() + 1];
        latency_buckets[0] = 3; // ≤ 50 µs
        latency_buckets[LATENCY_BUCKETS_MICROS.len()] = 1; // slower than all
        MetricsSnapshot {
            events_in: 7,
            latency_buckets,
            latency_sum: Duration::from_millis(300),
            guest_counters: guest
                .iter()
                .map(|(k, v)| (k.to_string(), *v))
                .collect::<BTreeMap<_, _>>(),
            ..MetricsSnapshot::default()
        }
    }

    fn scrape(operators: Vec<(String, usize, MetricsSnapshot)>) -> Scrape {
        Scrape {
            topologies: vec![TopologyRow {
                name: "t\"1\n".into(),
                phase: Some("running".into()),
                restarts: 2,
                running: true,
                operators,
                endpoints: vec![("in".into(), lagging())],
                checkpoint: None,
                failed_checkpoints: 1,
            }],
            streams: Vec::new(),
        }
    }

    fn lagging() -> EndpointSnapshot {
        let stats = weir_engine::EndpointStats::default();
        stats.set_split(3, 40, Some(52));
        stats.add("records_in", 40);
        stats.snapshot()
    }

    #[test]
    fn histograms_have_sum_count_and_cumulative_buckets() {
        let text = scrape(vec![("op".into(), 0, snapshot(&[]))]).render();
        let labels = r#"topology="t\"1\n",operator="op",instance="0""#;
        for line in [
            format!("weir_operator_batch_seconds_sum{{{labels}}} 0.3"),
            format!("weir_operator_batch_seconds_count{{{labels}}} 4"),
            format!("weir_operator_batch_seconds_bucket{{le=\"0.00005\",{labels}}} 3"),
            format!("weir_operator_batch_seconds_bucket{{le=\"0.25\",{labels}}} 3"),
            format!("weir_operator_batch_seconds_bucket{{le=\"+Inf\",{labels}}} 4"),
            format!("weir_operator_events_in_total{{{labels}}} 7"),
            "weir_topology_restarts_total{topology=\"t\\\"1\\n\"} 2".to_string(),
            "weir_checkpoint_failed_total{topology=\"t\\\"1\\n\"} 1".to_string(),
            r#"weir_source_split_lag{topology="t\"1\n",endpoint="in",split="3"} 12"#.to_string(),
            r#"weir_connector_count_total{topology="t\"1\n",endpoint="in",counter="records_in"} 40"#.to_string(),
        ] {
            assert!(text.contains(&line), "no `{line}` in:\n{text}");
        }
        assert!(text.ends_with("# EOF\n"), "{text}");
    }

    #[test]
    fn guest_counters_are_capped_per_family() {
        let many: Vec<(String, u64)> = (0..MAX_SERIES_PER_FAMILY + 5)
            .map(|i| (format!("c{i}"), 1))
            .collect();
        let many: Vec<(&str, u64)> = many.iter().map(|(k, v)| (k.as_str(), *v)).collect();
        let text = scrape(vec![("op".into(), 0, snapshot(&many))]).render();
        let shown = text
            .lines()
            .filter(|l| l.starts_with("weir_operator_guest_total{"))
            .count();
        assert_eq!(shown, MAX_SERIES_PER_FAMILY);
        assert!(
            text.contains("weir_metrics_series_dropped_total 5"),
            "{}",
            &text[text.len() - 300..]
        );
    }
}
