//! `/v1/modules`: upload, list, inspect and delete operator modules.

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::{ApiError, Plane, blocking, empty, offset_only, with_offset};
use crate::registry::{ModuleVersion, Pushed};

fn version_json(v: &ModuleVersion) -> Value {
    json!({
        "name": v.name,
        "version": v.version,
        "reference": v.reference(),
        "digest": v.digest,
        "size": v.size,
        "world": v.world,
        "imports": v.imports,
        "exports": v.exports,
        "created_at": v.created_at,
        "language": v.language,
    })
}

/// `POST /v1/modules/{name}`: the raw component as the body.
pub(super) async fn push(
    State(plane): State<Plane>,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    if let Some(ct) = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        && !(ct.starts_with("application/wasm") || ct.starts_with("application/octet-stream"))
    {
        return Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            format!("send the component as `Content-Type: application/wasm`, not {ct:?}"),
        ));
    }
    if body.is_empty() {
        return Err(weir_wasm::ModuleError::Empty.into());
    }
    let (pushed, offset) = blocking(move || match plane.cluster.get() {
        Some(cluster) => {
            let (pushed, offset) = cluster.push_module(&plane, &name, &body)?;
            Ok((pushed, Some(offset)))
        }
        None => Ok((plane.registry.push(&name, &body)?, None)),
    })
    .await?;
    Ok(match pushed {
        Pushed::Created(v) => (
            StatusCode::CREATED,
            Json(with_offset(version_json(&v), offset)),
        )
            .into_response(),
        Pushed::Existing(v) => {
            (StatusCode::OK, Json(with_offset(version_json(&v), offset))).into_response()
        }
    })
}

/// `GET /v1/modules`: every module with its latest version.
pub(super) async fn list(State(plane): State<Plane>) -> Result<Json<Value>, ApiError> {
    blocking(move || {
        let mut modules = Vec::new();
        for name in plane.registry.names()? {
            let versions = plane.registry.versions(&name)?;
            if let Some(latest) = versions.last() {
                let mut entry = version_json(latest);
                entry["versions"] = json!(versions.len());
                modules.push(entry);
            }
        }
        Ok(Json(json!({ "modules": modules })))
    })
    .await
}

/// `GET /v1/modules/{name}`: every version of one module.
pub(super) async fn inspect(
    State(plane): State<Plane>,
    Path(name): Path<String>,
) -> Result<Json<Value>, ApiError> {
    blocking(move || {
        let versions = plane.registry.module(&name)?;
        let list: Vec<Value> = versions.iter().map(version_json).collect();
        Ok(Json(json!({ "name": name, "versions": list })))
    })
    .await
}

fn parse_version(text: &str) -> Result<u32, ApiError> {
    text.parse::<u32>().map_err(|_| {
        ApiError::bad_request(
            "bad_version",
            format!("version {text:?} is not a number: versions are 1, 2, 3, ..."),
        )
    })
}

/// `GET /v1/modules/{name}/versions/{version}`.
pub(super) async fn version(
    State(plane): State<Plane>,
    Path((name, version)): Path<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    let version = parse_version(&version)?;
    blocking(move || Ok(Json(version_json(&plane.registry.version(&name, version)?)))).await
}

/// `DELETE /v1/modules/{name}/versions/{version}`: refused while a topology
/// uses it.
pub(super) async fn delete_version(
    State(plane): State<Plane>,
    Path((name, version)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    let version = parse_version(&version)?;
    blocking(move || match plane.cluster.get() {
        Some(cluster) => {
            let (_, offset) = cluster.delete_module(&plane, &name, version)?;
            Ok(offset_only(StatusCode::NO_CONTENT, offset))
        }
        None => {
            plane.topologies.delete_module(&name, version)?;
            Ok(empty(StatusCode::NO_CONTENT))
        }
    })
    .await
}
