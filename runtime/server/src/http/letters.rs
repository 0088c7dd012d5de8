//! `/v1/topologies/{name}/dead-letters`: read a topology's dead letters
//! with the context of each failure, and replay a range of them into its
//! running operators.

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use serde::Deserialize;
use serde_json::{Value, json};
use weir_engine::DeadLetter;

use super::{ApiError, Plane, blocking};
use crate::topologies::{MAX_DEAD_LETTERS_READ, MAX_DEAD_LETTERS_REPLAY};

/// Letters a read returns when it names no limit.
const DEFAULT_DEAD_LETTERS_READ: usize = 100;

#[derive(Debug, Deserialize)]
pub(super) struct LetterQuery {
    offset: Option<u64>,
    limit: Option<usize>,
}

/// Bytes as JSON when they are JSON text, else `{"b64": ...}`.
fn payload_json(bytes: &[u8]) -> Value {
    serde_json::from_slice::<Value>(bytes)
        .unwrap_or_else(|_| json!({ "b64": BASE64.encode(bytes) }))
}

/// One dead letter at `offset` of the dead-letter stream, as JSON.
fn letter_json(offset: u64, l: &DeadLetter) -> Value {
    let c = &l.context;
    let mut out = json!({
        "offset": offset,
        "operator": l.operator,
        "kind": c.kind.as_str(),
        "error": l.error,
        "failed_at": l.failed_at,
        "event_time": l.event.timestamp,
        "input": c.input,
        "topology": c.topology,
        "instance": c.instance,
        "module": c.module,
        "digest": c.digest,
        "source": c.source,
        "source_offset": c.offset,
        "backtrace": c.backtrace,
        "value": payload_json(&l.event.value),
    });
    match l.event.key.as_deref().map(std::str::from_utf8) {
        None => out["key"] = Value::Null,
        Some(Ok(k)) => out["key"] = json!(k),
        Some(Err(_)) => {
            out["key"] = Value::Null;
            out["key_b64"] = json!(BASE64.encode(l.event.key.as_deref().unwrap_or_default()));
        }
    }
    let headers: serde_json::Map<String, Value> = l
        .event
        .headers
        .iter()
        .map(|(k, v)| (k.clone(), json!(String::from_utf8_lossy(v))))
        .collect();
    out["headers"] = Value::Object(headers);
    out
}

/// `GET /v1/topologies/{name}/dead-letters?offset=&limit=`.
pub(super) async fn list(
    State(plane): State<Plane>,
    Path(name): Path<String>,
    Query(query): Query<LetterQuery>,
) -> Result<Json<Value>, ApiError> {
    let limit = match query.limit {
        None => DEFAULT_DEAD_LETTERS_READ,
        Some(0) => {
            return Err(ApiError::bad_request(
                "bad_limit",
                "limit must be at least 1",
            ));
        }
        Some(n) if n > MAX_DEAD_LETTERS_READ => {
            return Err(ApiError::bad_request(
                "bad_limit",
                format!(
                    "limit {n} is over the cap of {MAX_DEAD_LETTERS_READ} dead letters a read: page with offset=<next_offset>"
                ),
            ));
        }
        Some(n) => n,
    };
    blocking(move || {
        let page = plane.topologies.dead_letters(
            &name,
            query.offset,
            limit,
            plane.config.max_read_bytes,
        )?;
        let letters: Vec<Value> = page
            .letters
            .iter()
            .map(|(at, l)| letter_json(*at, l))
            .collect();
        Ok(Json(json!({
            "topology": name,
            "stream": page.stream,
            "start_offset": page.start_offset,
            "end_offset": page.end_offset,
            "next_offset": page.next_offset,
            "dead_letters": letters,
        })))
    })
    .await
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ReplayRange {
    from: u64,
    to: u64,
}

/// `POST /v1/topologies/{name}/dead-letters/replay` with `{"from": A,
/// "to": B}` (offsets of the dead-letter stream, `to` exclusive).
pub(super) async fn replay(
    State(plane): State<Plane>,
    Path(name): Path<String>,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    let range: ReplayRange = serde_json::from_slice(&body).map_err(|e| {
        ApiError::bad_request(
            "invalid_json",
            format!(
                "send {{\"from\": <first offset>, \"to\": <offset after the last>}} (at most {MAX_DEAD_LETTERS_REPLAY} letters): {e}"
            ),
        )
    })?;
    blocking(move || {
        let report = plane
            .topologies
            .replay_dead_letters(&name, range.from, range.to)?;
        let failed: Vec<Value> = report
            .failed
            .iter()
            .map(|(at, op, error)| json!({ "offset": at, "operator": op, "error": error }))
            .collect();
        let skipped: Vec<Value> = report
            .skipped
            .iter()
            .map(|(at, why)| json!({ "offset": at, "reason": why }))
            .collect();
        Ok(Json(json!({
            "topology": name,
            "stream": report.stream,
            "from": range.from,
            "to": range.to,
            "passed": report.passed,
            "failed": failed,
            "skipped": skipped,
        })))
    })
    .await
}
