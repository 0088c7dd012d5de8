//! The API's error: a status and `{"error": {"code", "message", "details"}}`.
//! Every domain error maps to its status and code here, in one place; the
//! conversion logs nothing (the trace layer logs the response).

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use weir_connectors::StreamError;
use weir_topology::Severity;
use weir_wasm::{InstanceError, ModuleError};

use crate::registry::RegistryError;
use crate::topologies::TopologiesError;
use weir_engine::EngineError;

/// An error as the API answers it.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    /// Stable, machine-readable, snake_case.
    pub code: &'static str,
    /// What was wrong and how to fix it.
    pub message: String,
    pub details: Value,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
            details: Value::Null,
        }
    }

    pub fn with_details(mut self, details: Value) -> Self {
        self.details = details;
        self
    }

    pub fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        ApiError::new(StatusCode::BAD_REQUEST, code, message)
    }

    pub fn internal(message: impl Into<String>) -> Self {
        ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", message)
    }

    /// The code of a status that reached the client without a handler's
    /// error (a framework rejection, no route, ...).
    pub fn code_for_status(status: StatusCode) -> &'static str {
        match status {
            StatusCode::NOT_FOUND => "not_found",
            StatusCode::METHOD_NOT_ALLOWED => "method_not_allowed",
            StatusCode::PAYLOAD_TOO_LARGE => "payload_too_large",
            StatusCode::UNSUPPORTED_MEDIA_TYPE => "unsupported_media_type",
            StatusCode::UNAUTHORIZED => "unauthorized",
            StatusCode::UNPROCESSABLE_ENTITY => "unprocessable",
            s if s.is_client_error() => "bad_request",
            _ => "internal",
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = json!({
            "error": { "code": self.code, "message": self.message, "details": self.details }
        });
        (self.status, Json(body)).into_response()
    }
}

impl From<ModuleError> for ApiError {
    fn from(e: ModuleError) -> Self {
        let (status, code) = match &e {
            ModuleError::TooLarge { .. } => (StatusCode::PAYLOAD_TOO_LARGE, "module_too_large"),
            ModuleError::Empty => (StatusCode::BAD_REQUEST, "empty_body"),
            ModuleError::NotWasm { .. } => (StatusCode::UNPROCESSABLE_ENTITY, "not_wasm"),
            ModuleError::CoreModule => (StatusCode::UNPROCESSABLE_ENTITY, "core_module"),
            ModuleError::UnknownLayer { .. } | ModuleError::Invalid(_) => {
                (StatusCode::UNPROCESSABLE_ENTITY, "invalid_module")
            }
            ModuleError::ForbiddenImport { .. }
            | ModuleError::ImportMismatch { .. }
            | ModuleError::MissingExport { .. }
            | ModuleError::ExportMismatch { .. } => {
                (StatusCode::UNPROCESSABLE_ENTITY, "wrong_world")
            }
            ModuleError::Instantiate { .. } => (StatusCode::UNPROCESSABLE_ENTITY, "invalid_module"),
            ModuleError::TooComplex { .. } => {
                (StatusCode::UNPROCESSABLE_ENTITY, "module_too_complex")
            }
            ModuleError::CompileTimeout { .. } | ModuleError::CompileMemory { .. } => {
                (StatusCode::UNPROCESSABLE_ENTITY, "compile_limit")
            }
            _ => (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
        };
        ApiError::new(status, code, e.to_string())
    }
}

impl From<RegistryError> for ApiError {
    fn from(e: RegistryError) -> Self {
        match e {
            RegistryError::Invalid(inner) => inner.into(),
            RegistryError::BadName(_) => ApiError::bad_request("bad_name", e.to_string()),
            RegistryError::BadReference(_) => ApiError::bad_request("bad_reference", e.to_string()),
            RegistryError::NoSuchModule(_) | RegistryError::NoSuchDigest(_) => {
                ApiError::new(StatusCode::NOT_FOUND, "module_not_found", e.to_string())
            }
            RegistryError::NoSuchVersion { .. } => {
                ApiError::new(StatusCode::NOT_FOUND, "version_not_found", e.to_string())
            }
            RegistryError::InUse { ref topology, .. } => {
                let details = json!({ "topology": topology });
                ApiError::new(StatusCode::CONFLICT, "module_in_use", e.to_string())
                    .with_details(details)
            }
            RegistryError::Busy { .. } => {
                ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "busy", e.to_string())
            }
            RegistryError::VersionTaken { .. } => {
                ApiError::new(StatusCode::CONFLICT, "version_taken", e.to_string())
            }
            _ => ApiError::internal(e.to_string()),
        }
    }
}

impl From<crate::cluster::ClusterError> for ApiError {
    fn from(e: crate::cluster::ClusterError) -> Self {
        use crate::cluster::ClusterError as C;
        match e {
            C::Refused(message) => ApiError::new(StatusCode::CONFLICT, "cluster_refused", message),
            C::NoOwner { .. } => ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "partition_unowned",
                e.to_string(),
            ),
            C::Forward { .. } => {
                ApiError::new(StatusCode::BAD_GATEWAY, "forward_failed", e.to_string())
            }
            C::UpgradeRefused { .. } => {
                ApiError::new(StatusCode::CONFLICT, "upgrade_refused", e.to_string())
            }
            C::Registry(inner) => inner.into(),
            C::Topologies(inner) => inner.into(),
            _ => ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "cluster_unavailable",
                e.to_string(),
            ),
        }
    }
}

impl From<TopologiesError> for ApiError {
    fn from(e: TopologiesError) -> Self {
        use TopologiesError as T;
        let message = e.to_string();
        match e {
            T::BadName { .. } => ApiError::bad_request("bad_name", message),
            T::Parse { .. } => ApiError::bad_request("invalid_document", message),
            T::NameMismatch { .. } => ApiError::bad_request("name_mismatch", message),
            T::Invalid(problems) => {
                let list: Vec<Value> = problems
                    .iter()
                    .map(|p| {
                        json!({
                            "path": p.path,
                            "message": p.message,
                            "severity": match p.severity { Severity::Error => "error", Severity::Warning => "warning" },
                        })
                    })
                    .collect();
                ApiError::new(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "invalid_topology",
                    message,
                )
                .with_details(json!({ "problems": list }))
            }
            T::NotFound(_) => ApiError::new(StatusCode::NOT_FOUND, "topology_not_found", message),
            T::BadRange { .. } => ApiError::bad_request("bad_range", message),
            T::NoSuchOperator { .. } => {
                ApiError::new(StatusCode::NOT_FOUND, "operator_not_found", message)
            }
            T::NoSuchSavepoint { .. } => {
                ApiError::new(StatusCode::NOT_FOUND, "savepoint_not_found", message)
            }
            T::Running(_) => ApiError::new(StatusCode::CONFLICT, "topology_running", message),
            T::NotRunning(_) => {
                ApiError::new(StatusCode::CONFLICT, "topology_not_running", message)
            }
            T::Busy { .. } => ApiError::new(StatusCode::CONFLICT, "topology_busy", message),
            T::SavepointExists { .. } => {
                ApiError::new(StatusCode::CONFLICT, "savepoint_exists", message)
            }
            T::NoCheckpoint(_) | T::NoState(_) => {
                ApiError::new(StatusCode::CONFLICT, "no_checkpoint", message)
            }
            T::Registry(inner) => inner.into(),
            T::Binding { io, .. } => {
                let message = if io {
                    format!(
                        "{message}; the topology is kept and started again with backoff until it binds (its status says when)"
                    )
                } else {
                    message
                };
                ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "binding_failed", message)
            }
            T::Engine {
                source: EngineError::Invalid(_),
                ..
            } => ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid_topology",
                message,
            ),
            T::Engine {
                source: EngineError::Instance(InstanceError::Init { operator, .. }),
                ..
            } => ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "operator_config_rejected",
                message,
            )
            .with_details(json!({ "operator": operator })),
            T::Engine {
                source: EngineError::StateMismatch(_),
                ..
            } => ApiError::new(StatusCode::CONFLICT, "state_mismatch", message),
            T::Engine {
                source: EngineError::NotRunning(_),
                ..
            } => ApiError::new(StatusCode::CONFLICT, "topology_not_running", message),
            T::Engine { .. } => ApiError::internal(message).with_code("engine_error"),
            _ => ApiError::internal(message),
        }
    }
}

impl ApiError {
    fn with_code(mut self, code: &'static str) -> Self {
        self.code = code;
        self
    }
}

impl From<StreamError> for ApiError {
    fn from(e: StreamError) -> Self {
        match &e {
            StreamError::BadName(_) => ApiError::bad_request("bad_name", e.to_string()),
            StreamError::OffsetOutOfRange { start, end, .. } => {
                let details = json!({ "start_offset": start, "end_offset": end });
                ApiError::bad_request("offset_out_of_range", e.to_string()).with_details(details)
            }
            StreamError::Unstorable { index, .. } => ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "event_too_large",
                e.to_string(),
            )
            .with_details(json!({ "index": index })),
            StreamError::BadProducer(_) => ApiError::bad_request("bad_producer", e.to_string()),
            StreamError::SequenceConflict { last, sequence, .. } => {
                let details = json!({ "sequence": sequence, "last_sequence": last });
                ApiError::new(StatusCode::CONFLICT, "sequence_conflict", e.to_string())
                    .with_details(details)
            }
            StreamError::Io { source, .. } if crate::disk::is_disk_full(source) => ApiError::new(
                StatusCode::INSUFFICIENT_STORAGE,
                "disk_full",
                format!("{e}: free some space in the data directory; produce resumes by itself"),
            ),
            _ => ApiError::internal(e.to_string()),
        }
    }
}

impl From<crate::disk::DiskFull> for ApiError {
    fn from(e: crate::disk::DiskFull) -> Self {
        ApiError::new(StatusCode::INSUFFICIENT_STORAGE, "disk_full", e.to_string())
            .with_details(json!({ "free_bytes": e.free, "min_free_bytes": e.min }))
    }
}
