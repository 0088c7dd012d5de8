//! The REST API: [`router`] builds the axum router over a [`ControlPlane`].
//!
//! - `error.rs`: [`ApiError`], the one place domain errors become statuses
//!   and codes; responses that reach the client without a handler (no
//!   route, a rejected body) are rewritten into the same JSON shape.
//! - `modules.rs`, `topologies.rs`, `letters.rs` (dead letters),
//!   `streams.rs` (with server-sent events),
//!   `observe.rs` (`/healthz`, `/metrics`): the handlers. Each parses the
//!   request, calls the control plane (on the blocking pool when it does
//!   I/O or compiles) and shapes the JSON answer.
//! - `cluster.rs`: `GET /v1/cluster`; writes of a cluster's node go
//!   through [`crate::cluster::Cluster`] in the handlers above.
//! - `openapi.rs`: the OpenAPI document, checked against [`routes`].
//! - `wire.rs`: the connections it is served on; hyper's own answers to
//!   requests it cannot parse (a URL over 64 KiB, huge headers) get the
//!   JSON error shape too.
//! - `console.rs`: the web console's files at `/` (embedded at build
//!   time), outside the API and its token: the page calls `/v1` itself.
//! - Auth: with a token configured, every `/v1` call (and `/metrics`
//!   unless `--metrics-public`) needs `Authorization: Bearer <token>`; a
//!   refused call is answered at once, its body mostly unread.

mod cluster;
mod console;
mod error;
mod letters;
mod metrics;
mod modules;
mod observe;
pub mod openapi;
mod streams;
mod topologies;
pub mod wire;

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::{DefaultBodyLimit, MatchedPath, Request, State};
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodRouter, delete, get, post, put};
use tower_http::trace::{DefaultOnResponse, TraceLayer};

pub use console::console_built;
pub use error::ApiError;

use crate::ControlPlane;

type Plane = Arc<ControlPlane>;

/// The router and the table of its routes, built together so the table
/// cannot drift from what is served.
struct Routes {
    router: Router<Plane>,
    table: Vec<(Method, &'static str)>,
}

impl Routes {
    fn add(mut self, method: Method, path: &'static str, route: MethodRouter<Plane>) -> Self {
        self.table.push((method, path));
        self.router = self.router.route(path, route);
        self
    }
}

fn build(max_module_bytes: usize, max_document_bytes: usize, max_body_bytes: usize) -> Routes {
    let routes = Routes {
        router: Router::new(),
        table: Vec::new(),
    };
    routes
        .add(Method::GET, "/v1/openapi.json", get(openapi::handler))
        .add(Method::GET, "/v1/cluster", get(cluster::status))
        .add(Method::GET, "/v1/modules", get(modules::list))
        .add(
            Method::POST,
            "/v1/modules/{name}",
            limited(post(modules::push), max_module_bytes),
        )
        .add(Method::GET, "/v1/modules/{name}", get(modules::inspect))
        .add(
            Method::GET,
            "/v1/modules/{name}/versions/{version}",
            get(modules::version),
        )
        .add(
            Method::DELETE,
            "/v1/modules/{name}/versions/{version}",
            delete(modules::delete_version),
        )
        .add(Method::GET, "/v1/topologies", get(topologies::list))
        .add(
            Method::POST,
            "/v1/topologies/validate",
            limited(post(topologies::validate), max_document_bytes),
        )
        .add(
            Method::PUT,
            "/v1/topologies/{name}",
            limited(put(topologies::apply), max_document_bytes),
        )
        .add(
            Method::GET,
            "/v1/topologies/{name}",
            get(topologies::status),
        )
        .add(
            Method::DELETE,
            "/v1/topologies/{name}",
            delete(topologies::remove),
        )
        .add(
            Method::POST,
            "/v1/topologies/{name}/start",
            post(topologies::start),
        )
        .add(
            Method::POST,
            "/v1/topologies/{name}/stop",
            post(topologies::stop),
        )
        .add(
            Method::GET,
            "/v1/topologies/{name}/checkpoints",
            get(topologies::checkpoints),
        )
        .add(
            Method::GET,
            "/v1/topologies/{name}/metrics",
            get(topologies::metrics),
        )
        .add(
            Method::GET,
            "/v1/topologies/{name}/savepoints",
            get(topologies::savepoints),
        )
        .add(
            Method::POST,
            "/v1/topologies/{name}/savepoints",
            post(topologies::savepoint),
        )
        .add(
            Method::GET,
            "/v1/topologies/{name}/operators/{operator}/state/{state}",
            get(topologies::state),
        )
        .add(
            Method::GET,
            "/v1/topologies/{name}/dead-letters",
            get(letters::list),
        )
        .add(
            Method::POST,
            "/v1/topologies/{name}/dead-letters/replay",
            limited(post(letters::replay), max_document_bytes),
        )
        .add(Method::GET, "/v1/streams", get(streams::list))
        .add(
            Method::POST,
            "/v1/streams/{name}/events",
            limited(post(streams::produce), max_body_bytes),
        )
        .add(
            Method::GET,
            "/v1/streams/{name}/events",
            get(streams::consume),
        )
}

/// Every `(method, path)` the API serves (paths in OpenAPI's `{param}`
/// form), `/v1` and the unauthenticated ones alike.
pub fn routes() -> Vec<(Method, &'static str)> {
    let mut table = build(0, 0, 0).table;
    table.push((Method::GET, "/healthz"));
    table.push((Method::GET, "/metrics"));
    table
}

/// The API over `plane`.
pub fn router(plane: Plane) -> Router {
    let config = &plane.config;
    let v1 = build(
        config.max_module_bytes,
        config.max_document_bytes,
        config.max_body_bytes,
    )
    .router
    .layer(middleware::from_fn_with_state(plane.clone(), require_token));
    let metrics = Router::new()
        .route("/metrics", get(observe::metrics))
        .layer(middleware::from_fn_with_state(plane.clone(), require_token));
    Router::new()
        .route("/healthz", get(observe::healthz))
        .merge(metrics)
        .merge(v1)
        .merge(console::routes())
        .fallback(no_route)
        .layer(DefaultBodyLimit::max(config.max_body_bytes))
        .layer(middleware::map_response(errors_as_json))
        .layer(
            TraceLayer::new_for_http()
                .on_response(DefaultOnResponse::new().level(tracing::Level::INFO))
                .make_span_with(|req: &Request| {
                    let route = req
                        .extensions()
                        .get::<MatchedPath>()
                        .map(MatchedPath::as_str)
                        .unwrap_or("unmatched");
                    tracing::info_span!(
                        "http",
                        http.method = %req.method(),
                        http.route = route,
                        http.path = %req.uri().path(),
                    )
                }),
        )
        .with_state(plane)
}

async fn no_route(
    State(plane): State<Plane>,
    method: Method,
    uri: axum::http::Uri,
    body: Body,
) -> ApiError {
    // Read what the client sends (up to the body limit) so it sees the
    // 404 rather than a reset.
    let _ = axum::body::to_bytes(body, plane.config.max_body_bytes).await;
    ApiError::new(
        StatusCode::NOT_FOUND,
        "not_found",
        format!(
            "no such endpoint: {method} {}; see GET /v1/openapi.json for the API",
            uri.path()
        ),
    )
}

/// Most bytes of a refused request's body read (and dropped) before the
/// 401, so a client mid-upload sees the answer rather than a reset; the
/// connection is closed after it.
const UNAUTHORIZED_DRAIN_BYTES: usize = 64 << 10;

/// With a token configured, `/v1` calls (and `/metrics`, unless it is
/// public) need `Authorization: Bearer <token>`. A refused request costs
/// at most [`UNAUTHORIZED_DRAIN_BYTES`] of reading and nothing stored.
async fn require_token(State(plane): State<Plane>, req: Request, next: Next) -> Response {
    let Some(token) = &plane.config.token else {
        return next.run(req).await;
    };
    if req.uri().path() == "/metrics" && plane.config.metrics_public {
        return next.run(req).await;
    }
    let given = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    match given {
        Some(g) if tokens_match(g, token) => next.run(req).await,
        _ => {
            let wrong = given.is_some();
            drain(req.into_body(), UNAUTHORIZED_DRAIN_BYTES).await;
            let message = if wrong {
                "the bearer token is wrong: use the server's WEIR_TOKEN"
            } else {
                "this server needs a token: send `Authorization: Bearer <token>` (the client commands' --token, or WEIR_TOKEN)"
            };
            let mut res =
                ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", message).into_response();
            let headers = res.headers_mut();
            headers.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            headers.insert(header::CONNECTION, HeaderValue::from_static("close"));
            res
        }
    }
}

/// Most bytes of an over-limit upload read (and dropped) before its 413,
/// unless twice the route's limit is more: a client that writes the whole
/// body before reading (most do) then sees the answer rather than a reset;
/// a bigger announced body is answered at once.
const OVERSIZED_DRAIN_BYTES: u64 = 16 << 20;

/// How long reading an over-limit upload may take before the 413 is sent
/// regardless.
const OVERSIZED_DRAIN_TIME: Duration = Duration::from_secs(10);

/// `route` with a body limit of `max` bytes. A request that announces more
/// is refused before the handler runs, with `Connection: close`, after
/// reading at most [`OVERSIZED_DRAIN_BYTES`] (or twice `max`) of it.
fn limited(route: MethodRouter<Plane>, max: usize) -> MethodRouter<Plane> {
    route
        .layer(DefaultBodyLimit::max(max))
        .layer(middleware::from_fn(move |req: Request, next: Next| {
            refuse_oversized(max, req, next)
        }))
}

async fn refuse_oversized(max: usize, req: Request, next: Next) -> Response {
    let announced = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    match announced {
        Some(n) if n > max as u64 => {
            if n <= OVERSIZED_DRAIN_BYTES.max(2 * max as u64) {
                let reading = drain(req.into_body(), n as usize);
                let _ = tokio::time::timeout(OVERSIZED_DRAIN_TIME, reading).await;
            }
            // `errors_as_json` gives it the API's error shape and message.
            let mut res = StatusCode::PAYLOAD_TOO_LARGE.into_response();
            res.headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
            res
        }
        _ => next.run(req).await,
    }
}

/// Reads and drops up to `max` bytes of `body`, keeping none of it.
async fn drain(body: Body, max: usize) {
    use futures_util::StreamExt;
    let mut data = body.into_data_stream();
    let mut read = 0usize;
    while read < max {
        match data.next().await {
            Some(Ok(chunk)) => read += chunk.len(),
            _ => return,
        }
    }
}

/// Compares a given token with the server's in time that depends on
/// neither's content nor length: both are hashed, the digests compared in
/// constant time.
fn tokens_match(given: &str, token: &str) -> bool {
    use sha2::{Digest, Sha256};
    use subtle::ConstantTimeEq;
    let a = Sha256::digest(given.as_bytes());
    let b = Sha256::digest(token.as_bytes());
    a.as_slice().ct_eq(b.as_slice()).into()
}

/// Rewrites error responses that are not already JSON (framework
/// rejections: a body over the limit, a bad query string, a wrong method)
/// into the API's error shape.
async fn errors_as_json(res: Response) -> Response {
    let status = res.status();
    let is_json = res
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/json"));
    if !(status.is_client_error() || status.is_server_error()) || is_json {
        return res;
    }
    let (parts, body) = res.into_parts();
    let text = axum::body::to_bytes(body, 64 << 10)
        .await
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .unwrap_or_default();
    let message = match (status, text.trim()) {
        (StatusCode::PAYLOAD_TOO_LARGE, _) => {
            "the request body is over this server's limit (modules: --max-module-bytes, topology documents: --max-document-bytes, other bodies: --max-body-bytes)".to_string()
        }
        (StatusCode::METHOD_NOT_ALLOWED, _) => {
            "this endpoint does not take that method; see GET /v1/openapi.json".to_string()
        }
        (_, "") => status
            .canonical_reason()
            .unwrap_or("request failed")
            .to_string(),
        (_, t) => t.to_string(),
    };
    let mut out = ApiError::new(status, ApiError::code_for_status(status), message).into_response();
    for (name, value) in parts.headers.iter() {
        if name != header::CONTENT_TYPE && name != header::CONTENT_LENGTH {
            out.headers_mut().insert(name.clone(), value.clone());
        }
    }
    out
}

/// Runs blocking control-plane work (file I/O, compiling) off the async
/// workers.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, ApiError> + Send + 'static,
) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| ApiError::internal(format!("a request task failed: {e}")))?
}

/// How long a follow (SSE) waits for the tail before it checks whether the
/// server is shutting down.
const FOLLOW_WAIT: Duration = Duration::from_millis(500);

/// An empty body, for handlers that answer with a status alone.
fn empty(status: StatusCode) -> Response {
    (status, Body::empty()).into_response()
}

/// The header that carries a cluster write's control offset.
pub const CONTROL_OFFSET_HEADER: &str = "weir-control-offset";

/// `value` with the control offset of the cluster write that made it,
/// when there was one (`control_offset`).
fn with_offset(mut value: serde_json::Value, offset: Option<i64>) -> serde_json::Value {
    if let Some(offset) = offset {
        value["control_offset"] = serde_json::json!(offset);
    }
    value
}

/// An empty answer to a cluster write: its control offset in a header.
fn offset_only(status: StatusCode, offset: i64) -> Response {
    let mut response = empty(status);
    if let Ok(v) = HeaderValue::from_str(&offset.to_string()) {
        response.headers_mut().insert(CONTROL_OFFSET_HEADER, v);
    }
    response
}

/// The error of a call a cluster's node does not take.
fn not_in_cluster(what: &str) -> ApiError {
    ApiError::bad_request(
        "not_in_cluster",
        format!("{what} is per node and not taken in cluster mode (--cluster)"),
    )
}

#[cfg(test)]
mod tests {
    use axum::http::Request;
    use http_body_util::BodyExt;
    use serde_json::Value;
    use tower::ServiceExt;

    use super::*;
    use crate::ServerConfig;

    fn app(dir: &std::path::Path, token: Option<&str>) -> Router {
        let plane = ControlPlane::open(ServerConfig {
            data_dir: dir.to_path_buf(),
            token: token.map(String::from),
            max_body_bytes: 1024,
            max_document_bytes: 1024,
            ..ServerConfig::default()
        })
        .unwrap();
        router(plane)
    }

    async fn call(app: Router, req: Request<Body>) -> (StatusCode, Value) {
        let res = app.oneshot(req).await.unwrap();
        let status = res.status();
        let bytes = res.into_body().collect().await.unwrap().to_bytes();
        (
            status,
            serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        )
    }

    fn get(path: &str) -> Request<Body> {
        Request::get(path).body(Body::empty()).unwrap()
    }

    #[tokio::test]
    async fn rejections_come_out_as_json_errors() {
        let dir = tempfile::tempdir().unwrap();
        let (status, body) = call(app(dir.path(), None), get("/v1/nothing")).await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        assert_eq!(body["error"]["code"], "not_found");
        let big = Request::put("/v1/topologies/t")
            .body(Body::from(vec![b'x'; 4096]))
            .unwrap();
        let (status, body) = call(app(dir.path(), None), big).await;
        assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
        assert_eq!(body["error"]["code"], "payload_too_large");
        let (status, body) = call(
            app(dir.path(), None),
            get("/v1/streams/s/events?offset=nope"),
        )
        .await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert!(
            body["error"]["message"]
                .as_str()
                .unwrap()
                .contains("offset"),
            "{body}"
        );
    }

    #[tokio::test]
    async fn a_token_guards_v1_but_not_health() {
        let dir = tempfile::tempdir().unwrap();
        let res = app(dir.path(), Some("t"))
            .oneshot(get("/v1/modules"))
            .await
            .unwrap();
        assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(res.headers()[header::WWW_AUTHENTICATE], "Bearer");
        let ok = Request::get("/v1/modules")
            .header(header::AUTHORIZATION, "Bearer t")
            .body(Body::empty())
            .unwrap();
        let (status, body) = call(app(dir.path(), Some("t")), ok).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(body["modules"], serde_json::json!([]));
        let (status, _) = call(app(dir.path(), Some("t")), get("/healthz")).await;
        assert_eq!(status, StatusCode::OK);
    }

    #[tokio::test]
    async fn an_idempotent_produce_answers_a_retry_with_its_offsets_and_a_reuse_with_409() {
        let dir = tempfile::tempdir().unwrap();
        let app = app(dir.path(), None);
        let post = |uri: &str, body: &str| {
            Request::post(uri)
                .body(Body::from(body.to_string()))
                .unwrap()
        };
        let uri = "/v1/streams/s/events?producer=p1&sequence=7";
        let body = "{\"value\":1}\n{\"value\":2}\n";
        let (status, first) = call(app.clone(), post(uri, body)).await;
        assert_eq!(status, StatusCode::OK, "{first}");
        assert_eq!(
            (
                &first["first_offset"],
                &first["next_offset"],
                &first["duplicate"]
            ),
            (&Value::from(0), &Value::from(2), &Value::from(false))
        );
        let (status, again) = call(app.clone(), post(uri, body)).await;
        assert_eq!(status, StatusCode::OK, "{again}");
        assert_eq!(again["duplicate"], true);
        assert_eq!(again["first_offset"], 0);
        assert_eq!(again["next_offset"], 2);
        let (status, other) = call(app.clone(), post(uri, "{\"value\":3}")).await;
        assert_eq!(status, StatusCode::CONFLICT, "{other}");
        assert_eq!(other["error"]["code"], "sequence_conflict");
        assert_eq!(other["error"]["details"]["last_sequence"], 7);
        let (status, half) =
            call(app.clone(), post("/v1/streams/s/events?producer=p1", body)).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{half}");
        assert_eq!(half["error"]["code"], "bad_producer");
        // Nothing but the first batch was stored.
        let (_, read) = call(app, get("/v1/streams/s/events")).await;
        assert_eq!(read["end_offset"], 2, "{read}");
    }
}
