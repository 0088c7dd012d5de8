//! `GET /v1/cluster`: this node's view of its cluster (members with their
//! applied control offsets and what they run, records it could not
//! apply).

use axum::Json;
use axum::extract::State;
use serde_json::Value;

use super::{ApiError, Plane};

/// `GET /v1/cluster`.
pub(super) async fn status(State(plane): State<Plane>) -> Result<Json<Value>, ApiError> {
    match plane.cluster.get() {
        Some(cluster) => Ok(Json(cluster.status_json())),
        None => Err(ApiError::new(
            axum::http::StatusCode::CONFLICT,
            "not_in_cluster",
            "this server is not a cluster's node: start it with --cluster NAME --kafka-brokers HOST:PORT",
        )),
    }
}
