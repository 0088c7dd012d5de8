//! `/healthz` and `/metrics` (encoded in `metrics.rs`).

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::metrics::{CONTENT_TYPE, Scrape};
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

/// `GET /metrics`: per-operator-instance counters, guest counters and
/// batch-latency histograms of running topologies, their phases and
/// newest checkpoint, and the size of every stream (see [`metrics`]).
pub(super) async fn metrics(State(plane): State<Plane>) -> Result<Response, ApiError> {
    let scrape = blocking(move || Ok(Scrape::take(&plane)?)).await?;
    let mut res = scrape.render().into_response();
    res.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(CONTENT_TYPE));
    Ok(res)
}
