//! `/v1/streams`: produce events into embedded streams, read them by
//! offset, or follow the tail as server-sent events.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::{Value, json};
use weir_connectors::{ProducerBatch, Stream, batch_hash};
use weir_types::{Batch, EventRef, wire};

use super::{ApiError, FOLLOW_WAIT, Plane, blocking};
use weir_types::now_ms;

use crate::MAX_READ_EVENTS;

/// Events a read returns when no `limit` is given.
const DEFAULT_READ_EVENTS: usize = 100;

/// The events of a produce body, a JSON array or JSON lines, read
/// straight into a batch's columns.
fn parse_body(body: &[u8]) -> Result<Batch, ApiError> {
    let text = std::str::from_utf8(body).map_err(|_| {
        ApiError::bad_request("invalid_event", "the body is not UTF-8: send JSON events")
    })?;
    let now = now_ms();
    let bad = |at: String, e: wire::WireError| {
        ApiError::bad_request("invalid_event", format!("{at}: {e}"))
            .with_details(json!({ "at": at }))
    };
    let mut batch = Batch::with_capacity(0, body.len());
    if text.trim_start().starts_with('[') {
        let items: Vec<&RawValue> = serde_json::from_str(text).map_err(|e| {
            ApiError::bad_request(
                "invalid_event",
                format!("the body is not a JSON array of events: {e}"),
            )
        })?;
        for (i, raw) in items.iter().enumerate() {
            wire::push_event(&mut batch, raw.get(), now).map_err(|e| bad(format!("[{i}]"), e))?;
        }
    } else {
        wire::push_lines(&mut batch, text, now)
            .map_err(|(line, e)| bad(format!("line {line}"), e))?;
    }
    Ok(batch)
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ProduceQuery {
    producer: Option<String>,
    sequence: Option<u64>,
}

/// `POST /v1/streams/{name}/events[?producer=ID&sequence=N]`: answered
/// once the events are on disk. With a producer and a sequence, a retry of
/// a batch the stream holds answers its offsets (`"duplicate": true`) and
/// stores nothing; the same sequence with other events is a 409.
pub(super) async fn produce(
    State(plane): State<Plane>,
    Path(name): Path<String>,
    Query(query): Query<ProduceQuery>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let producer = match (query.producer, query.sequence) {
        (None, None) => None,
        (Some(producer), Some(sequence)) => Some(ProducerBatch {
            producer,
            sequence,
            hash: batch_hash(&body),
        }),
        _ => {
            return Err(ApiError::bad_request(
                "bad_producer",
                "give both producer=ID and sequence=N (an idempotent batch), or neither",
            ));
        }
    };
    blocking(move || {
        let batch = parse_body(&body)?;
        if batch.is_empty() {
            return Err(ApiError::bad_request(
                "no_events",
                "the body holds no events: send a JSON array or JSON lines of {\"key\"?, \"value\", \"timestamp\"?, \"headers\"?}",
            ));
        }
        plane.disk.check()?;
        let stream = plane.streams.stream(&name)?;
        let mut answer = json!({ "stream": name, "count": batch.len() });
        let range = match &producer {
            None => stream.append(&batch)?,
            Some(p) => {
                let appended = stream.append_idempotent(&batch, p)?;
                answer["duplicate"] = json!(appended.duplicate);
                appended.offsets
            }
        };
        answer["first_offset"] = json!(range.start);
        answer["next_offset"] = json!(range.end);
        Ok((StatusCode::OK, Json(answer)).into_response())
    })
    .await
}

/// `GET /v1/streams`.
pub(super) async fn list(State(plane): State<Plane>) -> Result<Json<Value>, ApiError> {
    blocking(move || {
        let streams: Vec<Value> = plane
            .streams
            .list()?
            .iter()
            .map(|s| {
                json!({
                    "name": s.name,
                    "start_offset": s.start_offset,
                    "end_offset": s.end_offset,
                    "bytes": s.bytes,
                    "segments": s.segments,
                })
            })
            .collect();
        Ok(Json(json!({ "streams": streams })))
    })
    .await
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ReadQuery {
    offset: Option<u64>,
    limit: Option<usize>,
}

/// One event as JSON with its offset first.
fn event_json(offset: u64, e: &EventRef<'_>) -> String {
    let mut out = Vec::with_capacity(e.value.len() + 80);
    wire::write_event(&mut out, Some(offset), e);
    // JSON text is UTF-8: no copy, except of a value that was not.
    String::from_utf8(out)
        .unwrap_or_else(|bad| String::from_utf8_lossy(bad.as_bytes()).into_owned())
}

fn check_limit(limit: Option<usize>) -> Result<usize, ApiError> {
    match limit {
        None => Ok(DEFAULT_READ_EVENTS),
        Some(0) => Err(ApiError::bad_request(
            "bad_limit",
            "limit must be at least 1",
        )),
        Some(n) if n > MAX_READ_EVENTS => Err(ApiError::bad_request(
            "bad_limit",
            format!(
                "limit {n} is over the cap of {MAX_READ_EVENTS}: page with offset=<next_offset>"
            ),
        )),
        Some(n) => Ok(n),
    }
}

/// `GET /v1/streams/{name}/events?offset=&limit=`; with `Accept:
/// text/event-stream`, follows the tail from `offset` (or `Last-Event-ID`
/// + 1) as server-sent events, one per event, `id` its offset.
pub(super) async fn consume(
    State(plane): State<Plane>,
    Path(name): Path<String>,
    Query(query): Query<ReadQuery>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let limit = check_limit(query.limit)?;
    let sse = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("text/event-stream"));
    let resume = match headers.get("last-event-id") {
        None => None,
        Some(v) => Some(resume_offset(v.to_str().ok())?),
    };
    let lookup = plane.clone();
    let stream = blocking(move || match lookup.streams.existing(&name)? {
        Some(stream) => Ok(stream),
        None => Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "stream_not_found",
            format!("no stream named `{name}`: a stream is made by its first produce (POST /v1/streams/{name}/events) or by a topology's sink"),
        )),
    })
    .await?;
    let info = stream.info();
    let from = resume.or(query.offset).unwrap_or(info.start_offset);
    if from < info.start_offset || from > info.end_offset {
        return Err(weir_connectors::StreamError::OffsetOutOfRange {
            stream: info.name,
            offset: from,
            start: info.start_offset,
            end: info.end_offset,
        }
        .into());
    }
    if sse {
        let slot = FollowerSlot::take(&plane, stream.name())?;
        return Ok(follow(plane, stream, from, query.limit, slot).into_response());
    }
    let max_bytes = plane.config.max_read_bytes;
    blocking(move || {
        let mut batch = Batch::default();
        let next = stream.read_batch(from, limit, max_bytes, &mut batch)?;
        let mut body = Vec::with_capacity(64 + batch.values.len() + batch.len() * 64);
        body.extend_from_slice(
            format!(
                "{{\"stream\":{},\"next_offset\":{next},\"end_offset\":{},\"events\":[",
                serde_json::to_string(stream.name()).unwrap_or_default(),
                stream.end_offset()
            )
            .as_bytes(),
        );
        for (i, e) in batch.iter().enumerate() {
            if i > 0 {
                body.push(b',');
            }
            wire::write_event(&mut body, Some(from + i as u64), &e);
        }
        body.extend_from_slice(b"]}");
        let mut res = body.into_response();
        res.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        Ok(res)
    })
    .await
}

/// The offset after a `Last-Event-ID`: a decimal offset the stream
/// handed out, so one below `u64::MAX`.
fn resume_offset(id: Option<&str>) -> Result<u64, ApiError> {
    id.and_then(|v| v.trim().parse::<u64>().ok())
        .and_then(|id| id.checked_add(1))
        .ok_or_else(|| {
            ApiError::bad_request(
                "bad_last_event_id",
                "Last-Event-ID must be the id (offset) of an event this stream sent",
            )
        })
}

/// One follower counted against the caps; freed when the follow ends.
struct FollowerSlot {
    plane: Plane,
    stream: String,
}

impl FollowerSlot {
    /// A slot for a follower of `stream`, or why there is none.
    fn take(plane: &Plane, stream: &str) -> Result<FollowerSlot, ApiError> {
        let config = &plane.config;
        let mut followers = plane.followers.lock().unwrap_or_else(|p| p.into_inner());
        let total: usize = followers.values().sum();
        let here = followers.get(stream).copied().unwrap_or(0);
        let refused = if total >= config.max_followers {
            Some(format!(
                "the server already has {total} followers, its limit (--max-followers)"
            ))
        } else if here >= config.max_followers_per_stream {
            Some(format!(
                "stream `{stream}` already has {here} followers, the limit per stream (--max-followers-per-stream)"
            ))
        } else {
            None
        };
        if let Some(why) = refused {
            return Err(ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "too_many_followers",
                format!("{why}: read with offset and limit instead, or try again later"),
            ));
        }
        *followers.entry(stream.to_string()).or_insert(0) += 1;
        Ok(FollowerSlot {
            plane: plane.clone(),
            stream: stream.to_string(),
        })
    }
}

impl Drop for FollowerSlot {
    fn drop(&mut self) {
        let mut followers = self
            .plane
            .followers
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if let Some(n) = followers.get_mut(&self.stream) {
            *n -= 1;
            if *n == 0 {
                followers.remove(&self.stream);
            }
        }
    }
}

/// State of a follow: where it is, what it read ahead, how many it may
/// still send.
struct Follow {
    plane: Plane,
    stream: Arc<Stream>,
    next: u64,
    pending: VecDeque<(u64, String)>,
    remaining: Option<usize>,
    /// Held for the follow's life.
    _slot: FollowerSlot,
}

fn follow(
    plane: Plane,
    stream: Arc<Stream>,
    from: u64,
    limit: Option<usize>,
    slot: FollowerSlot,
) -> Sse<impl futures_util::Stream<Item = Result<SseEvent, Infallible>>> {
    let state = Follow {
        plane,
        stream,
        next: from,
        pending: VecDeque::new(),
        remaining: limit,
        _slot: slot,
    };
    let events = futures_util::stream::unfold(state, |mut f| async move {
        loop {
            if f.remaining == Some(0) {
                return None;
            }
            if let Some((offset, data)) = f.pending.pop_front() {
                if let Some(r) = f.remaining.as_mut() {
                    *r -= 1;
                }
                let event = SseEvent::default().id(offset.to_string()).data(data);
                return Some((Ok(event), f));
            }
            if f.plane.closing.load(Ordering::Relaxed) {
                return None;
            }
            let stream = f.stream.clone();
            let next = f.next;
            // Woken by the append (no task, no thread while it waits); the
            // timeout only lets it see a shutdown.
            if tokio::time::timeout(FOLLOW_WAIT, stream.grown_past(next))
                .await
                .is_err()
            {
                continue;
            }
            let max_bytes = f.plane.config.max_read_bytes;
            let read = tokio::task::spawn_blocking(move || {
                let mut batch = Batch::default();
                stream
                    .read_batch(next, 1000, max_bytes, &mut batch)
                    .map(|after| Some((batch, after)))
            })
            .await;
            let read = match read {
                Ok(Ok(read)) => read,
                // A failed read ends the follow (the client may resume
                // with Last-Event-ID) rather than retrying in a loop.
                Ok(Err(e)) => {
                    tracing::warn!(stream = f.stream.name(), error = %e, "a follow ended on a read error");
                    return None;
                }
                Err(e) => {
                    tracing::warn!(stream = f.stream.name(), error = %e, "a follow's read task failed");
                    return None;
                }
            };
            if let Some((batch, after)) = read {
                for (i, e) in batch.iter().enumerate() {
                    let offset = f.next + i as u64;
                    f.pending.push_back((offset, event_json(offset, &e)));
                }
                f.next = after;
            }
        }
    });
    Sse::new(events).keep_alive(KeepAlive::default())
}
