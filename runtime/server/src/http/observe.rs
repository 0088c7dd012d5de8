//! `/healthz` and `/metrics` (Prometheus text format).

use std::fmt::Write as _;

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use weir_engine::LATENCY_BUCKETS_MICROS;

use super::{ApiError, Plane, blocking};

/// `GET /healthz`: the server answers, with what it runs.
pub(super) async fn healthz(State(plane): State<Plane>) -> Json<Value> {
    Json(json!({
        "status": "ok",
        "version": env!("CARGO_PKG_VERSION"),
        "uptime_s": plane.started_at.elapsed().as_secs(),
        "running_topologies": plane.topologies.running().len(),
    }))
}

/// Escapes a Prometheus label value.
fn label(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// `GET /metrics`: per-operator-instance counters and batch-latency
/// histograms of running topologies, their newest checkpoint, and the size
/// of every stream.
pub(super) async fn metrics(State(plane): State<Plane>) -> Result<Response, ApiError> {
    let text = blocking(move || {
        let mut out = String::new();
        let counters: [(&str, &str); 5] = [
            (
                "weir_operator_events_in_total",
                "Events an operator instance received.",
            ),
            (
                "weir_operator_events_out_total",
                "Events an operator instance emitted.",
            ),
            (
                "weir_operator_errors_total",
                "Events an operator instance failed on.",
            ),
            (
                "weir_operator_dead_lettered_total",
                "Events an operator instance sent to the dead-letter stream.",
            ),
            (
                "weir_operator_late_events_total",
                "Events that arrived behind the instance's watermark.",
            ),
        ];
        let mut running = Vec::new();
        for name in plane.topologies.running() {
            if let Ok(status) = plane.topologies.status(&name) {
                let checkpoint = status.last_checkpoint;
                running.push((name, status.operators, checkpoint));
            }
        }
        let _ = writeln!(
            out,
            "# HELP weir_topology_running Whether a topology is running (1) or not."
        );
        let _ = writeln!(out, "# TYPE weir_topology_running gauge");
        for name in plane.topologies.names().unwrap_or_default() {
            let up = running.iter().any(|(n, _, _)| *n == name);
            let _ = writeln!(
                out,
                "weir_topology_running{{topology=\"{}\"}} {}",
                label(&name),
                u8::from(up)
            );
        }
        let phases = plane.topologies.phases();
        let _ = writeln!(
            out,
            "# HELP weir_topology_phase The phase a topology is in (1 for its current one)."
        );
        let _ = writeln!(out, "# TYPE weir_topology_phase gauge");
        for (name, phase, _) in &phases {
            let phase = serde_json::to_value(phase).unwrap_or_default();
            let _ = writeln!(
                out,
                "weir_topology_phase{{topology=\"{}\",phase=\"{}\"}} 1",
                label(name),
                phase.as_str().unwrap_or_default()
            );
        }
        let _ = writeln!(
            out,
            "# HELP weir_topology_restarts_total Restarts of a topology after failures (this process)."
        );
        let _ = writeln!(out, "# TYPE weir_topology_restarts_total counter");
        for (name, _, restarts) in &phases {
            let _ = writeln!(
                out,
                "weir_topology_restarts_total{{topology=\"{}\"}} {restarts}",
                label(name)
            );
        }
        for (i, (metric, help)) in counters.iter().enumerate() {
            let _ = writeln!(out, "# HELP {metric} {help}");
            let _ = writeln!(out, "# TYPE {metric} counter");
            for (topology, operators, _) in &running {
                for (op, instance, m) in operators {
                    let v = [m.events_in, m.events_out, m.errors, m.dead_lettered, m.late][i];
                    let _ = writeln!(
                        out,
                        "{metric}{{topology=\"{}\",operator=\"{}\",instance=\"{instance}\"}} {v}",
                        label(topology),
                        label(op)
                    );
                }
            }
        }
        let metric = "weir_operator_batch_seconds";
        let _ = writeln!(
            out,
            "# HELP {metric} Time an operator instance took per batch."
        );
        let _ = writeln!(out, "# TYPE {metric} histogram");
        for (topology, operators, _) in &running {
            for (op, instance, m) in operators {
                let labels = format!(
                    "topology=\"{}\",operator=\"{}\",instance=\"{instance}\"",
                    label(topology),
                    label(op)
                );
                let mut cumulative = 0;
                for (bound, n) in LATENCY_BUCKETS_MICROS.iter().zip(&m.latency_buckets) {
                    cumulative += n;
                    let le = *bound as f64 / 1e6;
                    let _ = writeln!(out, "{metric}_bucket{{{labels},le=\"{le}\"}} {cumulative}");
                }
                let total: u64 = m.latency_buckets.iter().sum();
                let _ = writeln!(out, "{metric}_bucket{{{labels},le=\"+Inf\"}} {total}");
                let _ = writeln!(out, "{metric}_count{{{labels}}} {total}");
            }
        }
        for (metric, help) in [
            (
                "weir_checkpoint_last_id",
                "Id of the newest completed checkpoint.",
            ),
            (
                "weir_checkpoint_last_duration_seconds",
                "Newest checkpoint, from request to durable commit.",
            ),
            (
                "weir_checkpoint_last_alignment_seconds",
                "Newest checkpoint's longest barrier alignment.",
            ),
            (
                "weir_checkpoint_last_commit_seconds",
                "Newest checkpoint's commit alone.",
            ),
            (
                "weir_checkpoint_last_bytes",
                "Bytes the newest checkpoint wrote.",
            ),
        ] {
            let _ = writeln!(out, "# HELP {metric} {help}");
            let _ = writeln!(out, "# TYPE {metric} gauge");
            for (topology, _, checkpoint) in &running {
                if let Some(c) = checkpoint {
                    let v = match metric {
                        "weir_checkpoint_last_id" => c.id as f64,
                        "weir_checkpoint_last_duration_seconds" => c.duration_ms / 1e3,
                        "weir_checkpoint_last_alignment_seconds" => c.alignment_ms / 1e3,
                        "weir_checkpoint_last_commit_seconds" => c.commit_ms / 1e3,
                        _ => c.bytes as f64,
                    };
                    let _ = writeln!(out, "{metric}{{topology=\"{}\"}} {v}", label(topology));
                }
            }
        }
        let streams = plane.streams.list()?;
        for (metric, help) in [
            (
                "weir_stream_end_offset",
                "Offset the next event appended to a stream gets.",
            ),
            (
                "weir_stream_start_offset",
                "First offset a stream still holds.",
            ),
            ("weir_stream_bytes", "Bytes a stream holds on disk."),
        ] {
            let _ = writeln!(out, "# HELP {metric} {help}");
            let _ = writeln!(out, "# TYPE {metric} gauge");
            for s in &streams {
                let v = match metric {
                    "weir_stream_end_offset" => s.end_offset,
                    "weir_stream_start_offset" => s.start_offset,
                    _ => s.bytes,
                };
                let _ = writeln!(out, "{metric}{{stream=\"{}\"}} {v}", label(&s.name));
            }
        }
        Ok(out)
    })
    .await?;
    let mut res = text.into_response();
    res.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    Ok(res)
}
