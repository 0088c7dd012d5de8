//! `/v1/topologies`: apply, validate, inspect, start, stop and delete
//! topologies; their savepoints and keyed state.

use std::collections::HashMap;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{OriginalUri, Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use serde::Deserialize;
use serde_json::{Value, json};
use weir_topology::Severity;

use super::{ApiError, Plane, blocking, empty, not_in_cluster, offset_only, with_offset};
use crate::cluster::QueryRoute;
use crate::topologies::{DesiredState, SavepointInfo, Topologies, TopologyStatus};
use weir_engine::{
    CheckpointInfo, EndpointSnapshot, LATENCY_BUCKETS_MICROS, MetricsSnapshot, StateRead,
    StateValue,
};

fn text_of(body: &Bytes) -> Result<&str, ApiError> {
    std::str::from_utf8(body).map_err(|_| {
        ApiError::bad_request(
            "invalid_document",
            "the topology is not UTF-8 text: send JSON or YAML",
        )
    })
}

fn problems_json(problems: &[weir_topology::Problem]) -> Vec<Value> {
    problems
        .iter()
        .map(|p| {
            json!({
                "path": p.path,
                "message": p.message,
                "severity": match p.severity { Severity::Error => "error", Severity::Warning => "warning" },
            })
        })
        .collect()
}

/// One instance's counters, as its topology's status and metrics give them.
fn counters_json(m: &MetricsSnapshot) -> Value {
    json!({
        "events_in": m.events_in,
        "events_out": m.events_out,
        "errors": m.errors,
        "dead_lettered": m.dead_lettered,
        "late": m.late,
        "blocked_ms": m.blocked.as_millis() as u64,
        "counters": m.guest_counters,
    })
}

/// Sources' and sinks' live figures, as status and metrics give them.
fn endpoints_json(endpoints: &[(String, EndpointSnapshot)]) -> Value {
    endpoints
        .iter()
        .map(|(name, e)| {
            let splits: Vec<Value> = e
                .splits
                .iter()
                .map(|(split, s)| {
                    json!({ "split": split, "position": s.position, "end": s.end, "lag": s.lag() })
                })
                .collect();
            json!({ "name": name, "splits": splits, "counters": e.counters })
        })
        .collect()
}

fn status_json(s: &TopologyStatus) -> Value {
    let operators: Vec<Value> = s
        .operators
        .iter()
        .map(|(name, instance, m)| {
            let mut out = counters_json(m);
            out["name"] = json!(name);
            out["instance"] = json!(instance);
            out["watermark"] = json!(m.watermark);
            out
        })
        .collect();
    json!({
        "name": s.record.doc.name,
        "state": s.state,
        "desired": s.record.desired,
        "document": s.record.doc,
        "modules": s.record.modules,
        "updated_at": s.record.updated_at,
        "last_error": s.record.last_error,
        "busy": s.busy,
        "restart": {
            "attempt": s.restart.attempt,
            "max_attempts": s.restart.max_attempts,
            "next_try_at": s.restart.next_try_ms,
            "restarts": s.restart.restarts_total,
            "failures": s.restart.failures.iter().map(|f| json!({ "at": f.at_ms, "cause": f.cause })).collect::<Vec<_>>(),
        },
        "operators": operators,
        "endpoints": endpoints_json(&s.endpoints),
        "last_checkpoint": s.last_checkpoint.as_ref().map(checkpoint_json),
        "skipped_checkpoints": s.skipped_checkpoints,
        "usage": s.usage.map(|u| json!({
            "cpu_seconds": u.cpu_seconds,
            "cpu_share": u.cpu_share,
            "throttled": u.throttled,
            "wasm_memory_bytes": u.wasm_memory_bytes,
            "state_bytes": u.state_bytes,
        })),
        "sources": sources_json(s),
        "operator_limits": s
            .operator_limits
            .iter()
            .map(|(name, l)| (name.clone(), json!(l)))
            .collect::<serde_json::Map<String, Value>>(),
        "failed_checkpoints": {
            "total": s.failed_checkpoints.0,
            "in_a_row": s.failed_checkpoints.1,
            "last_error": s.failed_checkpoints.2,
        },
    })
}

/// What each source read in the current run, or the last one once stopped.
fn sources_json(s: &TopologyStatus) -> Vec<Value> {
    s.sources
        .iter()
        .map(|(name, read)| json!({ "name": name, "events_read": read }))
        .collect()
}

fn checkpoint_json(c: &CheckpointInfo) -> Value {
    json!({
        "id": c.id,
        "savepoint": c.savepoint,
        "started_at": c.started_at,
        "duration_ms": c.duration_ms,
        "alignment_ms": c.alignment_ms,
        "commit_ms": c.commit_ms,
        "rows": c.rows,
        "bytes": c.bytes,
        "final": c.final_,
    })
}

fn savepoint_json(s: &SavepointInfo) -> Value {
    json!({ "topology": s.topology, "name": s.name, "bytes": s.bytes, "created_at": s.created_at })
}

/// `PUT /v1/topologies/{name}`: JSON or YAML, parsed (like everything
/// whose cost grows with the document) on the blocking pool.
pub(super) async fn apply(
    State(plane): State<Plane>,
    Path(name): Path<String>,
    body: Bytes,
) -> Result<Response, ApiError> {
    blocking(move || {
        let doc = Topologies::parse(text_of(&body)?)?;
        let (record, created, offset) = match plane.cluster.get() {
            Some(cluster) => {
                let (record, created, offset) = cluster.apply_topology(&plane, &name, doc)?;
                (record, created, Some(offset))
            }
            None => {
                let (record, created) = plane.topologies.apply(&name, doc)?;
                (record, created, None)
            }
        };
        let status = plane.topologies.status(&record.doc.name)?;
        let code = if created {
            StatusCode::CREATED
        } else {
            StatusCode::OK
        };
        Ok((code, Json(with_offset(status_json(&status), offset))).into_response())
    })
    .await
}

/// `POST /v1/topologies/validate`: every problem, nothing stored.
pub(super) async fn validate(
    State(plane): State<Plane>,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    blocking(move || {
        let doc = Topologies::parse(text_of(&body)?)?;
        let problems = plane.topologies.validate(&doc);
        let valid = !problems.iter().any(|p| p.severity == Severity::Error);
        Ok(Json(
            json!({ "valid": valid, "problems": problems_json(&problems) }),
        ))
    })
    .await
}

/// `GET /v1/topologies`.
pub(super) async fn list(State(plane): State<Plane>) -> Result<Json<Value>, ApiError> {
    blocking(move || {
        let mut out = Vec::new();
        for name in plane.topologies.names()? {
            let s = plane.topologies.status(&name)?;
            let doc = &s.record.doc;
            let reads_source = |op: &str| {
                doc.operators.iter().any(|o| {
                    o.name == op
                        && o.input
                            .names()
                            .iter()
                            .any(|i| doc.sources.iter().any(|src| src.name == *i))
                })
            };
            let feeds_sink = |op: &str| doc.sinks.iter().any(|k| k.input.names().contains(&op));
            let sum = |pick: &dyn Fn(&str) -> bool, f: fn(&MetricsSnapshot) -> u64| -> u64 {
                s.operators
                    .iter()
                    .filter(|(op, _, _)| pick(op))
                    .map(|(_, _, m)| f(m))
                    .sum()
            };
            let all = |_: &str| true;
            out.push(json!({
                "name": name,
                "state": s.state,
                "desired": s.record.desired,
                "operators": s.record.doc.operators.len(),
                // What its sources read (each event once, however many
                // operators it crosses), kept once the run stopped.
                "events_in": s.sources.iter().map(|(_, n)| n).sum::<u64>(),
                "events_from_sources": sum(&reads_source, |m| m.events_in),
                "events_to_sinks": sum(&feeds_sink, |m| m.events_out),
                "errors": sum(&all, |m| m.errors),
                "dead_lettered": sum(&all, |m| m.dead_lettered),
                "last_checkpoint": s.last_checkpoint.as_ref().map(checkpoint_json),
                "updated_at": s.record.updated_at,
                "last_error": s.record.last_error,
            }));
        }
        Ok(Json(json!({ "topologies": out })))
    })
    .await
}

/// `GET /v1/topologies/{name}`.
pub(super) async fn status(
    State(plane): State<Plane>,
    Path(name): Path<String>,
) -> Result<Json<Value>, ApiError> {
    blocking(move || Ok(Json(status_json(&plane.topologies.status(&name)?)))).await
}

/// `DELETE /v1/topologies/{name}`.
pub(super) async fn remove(
    State(plane): State<Plane>,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    blocking(move || match plane.cluster.get() {
        Some(cluster) => {
            let offset = cluster.delete_topology(&plane, &name)?;
            Ok(offset_only(StatusCode::NO_CONTENT, offset))
        }
        None => {
            plane.topologies.delete(&name)?;
            Ok(empty(StatusCode::NO_CONTENT))
        }
    })
    .await
}

/// Body of start and stop: an optional savepoint name.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct SavepointArg {
    savepoint: Option<String>,
}

fn optional_json<T: Default + for<'a> Deserialize<'a>>(body: &Bytes) -> Result<T, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request("invalid_json", format!("the body is not valid: {e}")))
}

/// `POST /v1/topologies/{name}/start`, optionally `{"savepoint": NAME}`.
pub(super) async fn start(
    State(plane): State<Plane>,
    Path(name): Path<String>,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    let arg: SavepointArg = optional_json(&body)?;
    blocking(move || {
        let offset = match plane.cluster.get() {
            Some(_) if arg.savepoint.is_some() => {
                return Err(not_in_cluster("starting from a savepoint"));
            }
            Some(cluster) => Some(cluster.set_desired(&plane, &name, DesiredState::Running)?),
            None => {
                plane.topologies.start(&name, arg.savepoint.as_deref())?;
                None
            }
        };
        Ok(Json(with_offset(
            status_json(&plane.topologies.status(&name)?),
            offset,
        )))
    })
    .await
}

/// `POST /v1/topologies/{name}/stop`, optionally `{"savepoint": NAME}`.
pub(super) async fn stop(
    State(plane): State<Plane>,
    Path(name): Path<String>,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    let arg: SavepointArg = optional_json(&body)?;
    blocking(move || {
        let (savepoint, offset) = match plane.cluster.get() {
            Some(_) if arg.savepoint.is_some() => {
                return Err(not_in_cluster("stopping with a savepoint"));
            }
            Some(cluster) => (
                None,
                Some(cluster.set_desired(&plane, &name, DesiredState::Stopped)?),
            ),
            None => (
                plane.topologies.stop(&name, arg.savepoint.as_deref())?,
                None,
            ),
        };
        let mut out = with_offset(status_json(&plane.topologies.status(&name)?), offset);
        out["savepoint"] = savepoint
            .as_ref()
            .map(savepoint_json)
            .unwrap_or(Value::Null);
        Ok(Json(out))
    })
    .await
}

/// `GET /v1/topologies/{name}/checkpoints`.
pub(super) async fn checkpoints(
    State(plane): State<Plane>,
    Path(name): Path<String>,
) -> Result<Json<Value>, ApiError> {
    blocking(move || {
        let checkpoints: Vec<Value> = plane
            .topologies
            .checkpoints(&name)?
            .iter()
            .map(checkpoint_json)
            .collect();
        let savepoints: Vec<Value> = plane
            .topologies
            .savepoints(&name)?
            .iter()
            .map(savepoint_json)
            .collect();
        Ok(Json(
            json!({ "checkpoints": checkpoints, "savepoints": savepoints }),
        ))
    })
    .await
}

/// `GET /v1/topologies/{name}/metrics`: every instance's counters, blocked
/// time and batch-latency histogram at one moment (`taken_at`), with how
/// the operators are chained into tasks: two snapshots give rates.
pub(super) async fn metrics(
    State(plane): State<Plane>,
    Path(name): Path<String>,
) -> Result<Json<Value>, ApiError> {
    blocking(move || {
        let s = plane.topologies.status(&name)?;
        let instances: Vec<Value> = s
            .operators
            .iter()
            .map(|(op, instance, m)| {
                let mut out = counters_json(m);
                out["operator"] = json!(op);
                out["instance"] = json!(instance);
                out["watermark"] = json!((m.watermark != i64::MIN).then_some(m.watermark));
                out["latency_counts"] = json!(m.latency_buckets);
                out["logs"] = m
                    .recent_logs
                    .iter()
                    .map(|l| json!({ "level": l.level, "message": l.message, "at": l.at_ms }))
                    .collect();
                out
            })
            .collect();
        Ok(Json(json!({
            "topology": name,
            "state": s.state,
            "taken_at": weir_types::now_ms(),
            "chains": weir_engine::operator_chains(&s.record.doc),
            "latency_bounds_us": LATENCY_BUCKETS_MICROS,
            "instances": instances,
            "endpoints": endpoints_json(&s.endpoints),
            "last_checkpoint": s.last_checkpoint.as_ref().map(checkpoint_json),
        })))
    })
    .await
}

/// `GET /v1/topologies/{name}/savepoints`.
pub(super) async fn savepoints(
    State(plane): State<Plane>,
    Path(name): Path<String>,
) -> Result<Json<Value>, ApiError> {
    blocking(move || {
        let list: Vec<Value> = plane
            .topologies
            .savepoints(&name)?
            .iter()
            .map(savepoint_json)
            .collect();
        Ok(Json(json!({ "savepoints": list })))
    })
    .await
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct NewSavepoint {
    name: String,
}

/// `POST /v1/topologies/{name}/savepoints` with `{"name": NAME}`.
pub(super) async fn savepoint(
    State(plane): State<Plane>,
    Path(name): Path<String>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let arg: NewSavepoint = serde_json::from_slice(&body).map_err(|e| {
        ApiError::bad_request(
            "invalid_json",
            format!("send {{\"name\": \"<savepoint name>\"}}: {e}"),
        )
    })?;
    blocking(move || {
        let info = plane.topologies.savepoint(&name, &arg.name)?;
        Ok((StatusCode::CREATED, Json(savepoint_json(&info))).into_response())
    })
    .await
}

/// Stored bytes as JSON when they are JSON, else as `{"b64": ...}`.
fn bytes_json(bytes: &[u8]) -> Value {
    serde_json::from_slice::<Value>(bytes)
        .unwrap_or_else(|_| json!({ "b64": BASE64.encode(bytes) }))
}

/// `GET /v1/topologies/{name}/operators/{operator}/state/{state}?key=` (or
/// `key_b64=`).
pub(super) async fn state(
    State(plane): State<Plane>,
    OriginalUri(uri): OriginalUri,
    Path((name, operator, state)): Path<(String, String, String)>,
    Query(query): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    let key = match (query.get("key"), query.get("key_b64")) {
        (Some(k), None) => k.clone().into_bytes(),
        (None, Some(b)) => BASE64.decode(b).map_err(|e| {
            ApiError::bad_request("bad_key", format!("key_b64 is not valid base64: {e}"))
        })?,
        _ => {
            return Err(ApiError::bad_request(
                "bad_key",
                "give the key as ?key=TEXT or ?key_b64=BASE64 (one of them)",
            ));
        }
    };
    let forwarded = query.contains_key("forwarded");
    blocking(move || {
        // On a cluster's node: answered by the node that holds the key's
        // partition (one hop), which names itself.
        let node = match plane.cluster.get() {
            None => None,
            Some(cluster) if forwarded => {
                cluster.check_owner(&plane, &name, &key)?;
                Some(cluster.node.clone())
            }
            Some(cluster) => match cluster.route_state_query(&plane, &name, &key)? {
                QueryRoute::Here => Some(cluster.node.clone()),
                QueryRoute::There { node, address } => {
                    let path = uri
                        .path_and_query()
                        .map_or_else(|| uri.path(), |p| p.as_str());
                    let answer = cluster.forward(&plane, &node, &address, path)?;
                    let status = StatusCode::from_u16(answer.status)
                        .unwrap_or(StatusCode::BAD_GATEWAY);
                    return Ok((status, Json(answer.body)).into_response());
                }
            },
        };
        let shown = match std::str::from_utf8(&key) {
            Ok(k) => format!("key `{k}`"),
            Err(_) => format!("key (base64) {}", BASE64.encode(&key)),
        };
        let not_found = |code: &'static str, message: String| {
            ApiError::new(StatusCode::NOT_FOUND, code, message)
        };
        let value = match plane
            .topologies
            .query_state(&name, &operator, &state, &key)?
        {
            StateRead::Found(value) => value,
            StateRead::NoValue => {
                return Err(not_found(
                    "key_not_found",
                    format!(
                        "operator `{operator}` of topology `{name}` has no value in state `{state}` for {shown}: the key has not been seen (keys are what its key_by gives)"
                    ),
                ));
            }
            StateRead::UnknownState { declared } => {
                return Err(not_found(
                    "state_not_found",
                    format!(
                        "operator `{operator}` of topology `{name}` has no state `{state}` for {shown} ({}; it declares the value state(s) {})",
                        weir_topology::suggest_name(&state, declared.iter().map(String::as_str)),
                        declared.join(", ")
                    ),
                )
                .with_details(json!({ "declared": declared })));
            }
            StateRead::Stateless => {
                return Err(not_found(
                    "stateless_operator",
                    format!(
                        "operator `{operator}` of topology `{name}` declares no value state and holds no map or list `{state}` for {shown}: it keeps no state by that name"
                    ),
                ));
            }
        };
        let mut out = json!({ "topology": name, "operator": operator, "state": state });
        if let Some(node) = node {
            out["node"] = json!(node);
        }
        match String::from_utf8(key) {
            Ok(k) => out["key"] = json!(k),
            Err(e) => out["key_b64"] = json!(BASE64.encode(e.as_bytes())),
        }
        match value {
            StateValue::Value(bytes) => {
                out["kind"] = json!("value");
                match serde_json::from_slice::<Value>(&bytes) {
                    Ok(v) => out["value"] = v,
                    Err(_) => out["value_b64"] = json!(BASE64.encode(&bytes)),
                }
            }
            StateValue::Map(entries) => {
                out["kind"] = json!("map");
                let entries: Vec<Value> = entries
                    .iter()
                    .map(|(k, v)| json!({ "key": bytes_json(k), "value": bytes_json(v) }))
                    .collect();
                out["entries"] = json!(entries);
            }
            StateValue::List(items) => {
                out["kind"] = json!("list");
                out["items"] = json!(items.iter().map(|i| bytes_json(i)).collect::<Vec<_>>());
            }
        }
        Ok(Json(out).into_response())
    })
    .await
}
