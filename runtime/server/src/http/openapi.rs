//! The OpenAPI 3.1 document of the API, served at `/v1/openapi.json`. A
//! test checks that it lists exactly the routes of [`super::routes`].

use axum::Json;
use serde_json::{Map, Value, json};

fn error_ref() -> Value {
    json!({ "content": { "application/json": { "schema": { "$ref": "#/components/schemas/Error" } } } })
}

fn json_body(schema: Value) -> Value {
    json!({ "content": { "application/json": { "schema": schema } } })
}

fn schema_ref(name: &str) -> Value {
    json!({ "$ref": format!("#/components/schemas/{name}") })
}

fn path_param(name: &str, description: &str) -> Value {
    json!({ "name": name, "in": "path", "required": true, "description": description, "schema": { "type": "string" } })
}

fn query_param(name: &str, ty: &str, description: &str) -> Value {
    json!({ "name": name, "in": "query", "required": false, "description": description, "schema": { "type": ty } })
}

/// A path parameter with its own schema.
fn path_param_of(name: &str, description: &str, schema: Value) -> Value {
    let mut param = path_param(name, description);
    param["schema"] = schema;
    param
}

/// A version number in a path: a positive u32.
fn version_param() -> Value {
    path_param_of(
        "version",
        "1, 2, ...",
        json!({ "type": "integer", "minimum": 1, "maximum": u32::MAX }),
    )
}

/// One operation: its summary, parameters, request body, and answers as
/// `(status, description, body schema)`; the error answers share the
/// `Error` schema.
fn op(
    id: &str,
    summary: &str,
    params: Vec<Value>,
    body: Option<Value>,
    ok: &[(&str, &str, Option<Value>)],
    errors: &[(&str, &str)],
) -> Value {
    let mut responses = Map::new();
    for (status, description, schema) in ok {
        let mut r = json!({ "description": description });
        if let Some(s) = schema {
            r["content"] = json_body(s.clone())["content"].clone();
        }
        responses.insert((*status).to_string(), r);
    }
    for (status, description) in errors {
        let mut r = error_ref();
        r["description"] = json!(description);
        responses.insert((*status).to_string(), r);
    }
    let mut out = json!({ "operationId": id, "summary": summary, "responses": responses });
    if !params.is_empty() {
        out["parameters"] = Value::Array(params);
    }
    if let Some(b) = body {
        out["requestBody"] = b;
    }
    out
}

const AUTH: (&str, &str) = (
    "401",
    "A token is configured and the request has none, or a wrong one",
);

/// The document.
pub fn document() -> Value {
    let name = || {
        path_param_of(
            "name",
            "A name: 1-128 of A-Z a-z 0-9 _ . - (not starting with . or -)",
            json!({ "type": "string", "pattern": "^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$" }),
        )
    };
    let topology_body = json!({
        "required": true,
        "description": "The topology document, JSON or YAML",
        "content": {
            "application/json": { "schema": schema_ref("TopologyDocument") },
            "application/yaml": { "schema": { "type": "string" } }
        }
    });
    let savepoint_arg = json!({
        "required": false,
        "content": { "application/json": { "schema": {
            "type": "object", "properties": { "savepoint": { "type": "string" } }, "additionalProperties": false
        } } }
    });
    let paths = json!({
        "/healthz": { "get": op("healthz", "Liveness: the server answers", vec![], None,
            &[("200", "Up", Some(json!({ "type": "object" })))], &[]) },
        "/metrics": { "get": {
            "operationId": "metrics",
            "summary": "Metrics for Prometheus: topology phases and restarts, operator and guest counters, batch-latency histograms, newest checkpoint per topology, stream sizes; at most 10,000 series per family",
            "responses": { "200": { "description": "OpenMetrics text format", "content": { "application/openmetrics-text": { "schema": { "type": "string" } } } } }
        } },
        "/v1/openapi.json": { "get": op("openapi", "This document", vec![], None,
            &[("200", "The OpenAPI document", Some(json!({ "type": "object" })))], &[AUTH]) },
        "/v1/cluster": { "get": op("cluster", "A cluster node's view (--cluster): the control topic, the offset this node applied, the members (address, version, applied offset, heartbeat, what each runs, the partitions each reads and their lag), per topology the holder and lag of each input partition and the nodes that keep a standby copy of it (with how many changelog records each copy was behind at its last look), and the records this node could not apply", vec![], None,
            &[("200", "The cluster", Some(json!({ "type": "object", "properties": {
                "cluster": { "type": "string" }, "topic": { "type": "string" }, "node": { "type": "string" },
                "applied_offset": { "type": "integer" },
                "members": { "type": "array", "items": { "type": "object" } },
                "assignment": { "type": "object", "description": "topology → topic → partition → {node, lag}, from the alive members' heartbeats" },
                "problems": { "type": "array", "items": { "type": "object" } } } })))],
            &[AUTH, ("409", "Not a cluster's node (not_in_cluster)")]) },
        "/v1/modules": { "get": op("listModules", "Every module with its latest version", vec![], None,
            &[("200", "Modules", Some(json!({ "type": "object", "properties": { "modules": { "type": "array", "items": schema_ref("ModuleVersion") } } })))],
            &[AUTH]) },
        "/v1/modules/{name}": {
            "post": op("pushModule", "Upload a component as the next version of a module; identical bytes return the existing version",
                vec![name()],
                Some(json!({ "required": true, "content": {
                    "application/wasm": { "schema": { "type": "string", "format": "binary" } },
                    "application/octet-stream": { "schema": { "type": "string", "format": "binary" } } } })),
                &[("201", "Stored as a new version", Some(schema_ref("ModuleVersion"))),
                  ("200", "The same bytes were already stored", Some(schema_ref("ModuleVersion")))],
                &[("400", "Bad name or empty body"), AUTH, ("413", "Over the module size limit"),
                  ("415", "Neither application/wasm nor application/octet-stream"), ("422", "Not Wasm, a core module, not the weir:operator world, or its start-up code fails"),
                  ("503", "Other uploads are compiling and the line is full: retry")]),
            "get": op("inspectModule", "Every version of a module", vec![name()], None,
                &[("200", "Versions", Some(json!({ "type": "object", "properties": {
                    "name": { "type": "string" }, "versions": { "type": "array", "items": schema_ref("ModuleVersion") } } })))],
                &[("400", "Bad name"), AUTH, ("404", "No such module")]),
        },
        "/v1/modules/{name}/versions/{version}": {
            "get": op("getModuleVersion", "One version of a module", vec![name(), version_param()], None,
                &[("200", "The version", Some(schema_ref("ModuleVersion")))],
                &[("400", "Bad name or version"), AUTH, ("404", "No such module or version")]),
            "delete": op("deleteModuleVersion", "Delete a version no topology uses", vec![name(), version_param()], None,
                &[("204", "Deleted", None)],
                &[("400", "Bad name or version"), AUTH, ("404", "No such module or version"), ("409", "A topology uses it")]),
        },
        "/v1/topologies": { "get": op("listTopologies", "Every topology: its state, events read from sources and written to sinks, errors, dead letters, last checkpoint", vec![], None,
            &[("200", "Topologies", Some(json!({ "type": "object" })))], &[AUTH]) },
        "/v1/topologies/validate": { "post": op("validateTopology", "Check a document without storing it", vec![], Some(topology_body.clone()),
            &[("200", "Every problem found (valid: false when any is an error)", Some(json!({ "type": "object", "properties": {
                "valid": { "type": "boolean" }, "problems": { "type": "array", "items": schema_ref("Problem") } } })))],
            &[("400", "Not JSON or YAML of a topology"), AUTH]) },
        "/v1/topologies/{name}": {
            "put": op("applyTopology", "Create or replace a stopped topology (module references are pinned to versions); on a cluster's node, a running one is upgraded: every node restarts its job on the new document from its committed state", vec![name()], Some(topology_body),
                &[("201", "Created", Some(schema_ref("TopologyStatus"))), ("200", "Replaced", Some(schema_ref("TopologyStatus")))],
                &[("400", "Not JSON or YAML, nested deeper than 64 levels, or the document's name differs"), AUTH, ("409", "It is running (on a cluster's node: its Kafka inputs would change, upgrade_refused) or busy"), ("413", "Document over --max-document-bytes"), ("422", "Not valid: details.problems lists the first 100 problems (then one counting the rest)")]),
            "get": op("getTopology", "Document, state, per-operator metrics, last checkpoint", vec![name()], None,
                &[("200", "The topology", Some(schema_ref("TopologyStatus")))], &[("400", "Bad name"), AUTH, ("404", "No such topology")]),
            "delete": op("deleteTopology", "Delete a stopped topology with its state and savepoints", vec![name()], None,
                &[("204", "Deleted", None)], &[("400", "Bad name"), AUTH, ("404", "No such topology"), ("409", "It is running")]),
        },
        "/v1/topologies/{name}/start": { "post": op("startTopology", "Start a topology, optionally from a savepoint", vec![name()], Some(savepoint_arg.clone()),
            &[("200", "Running", Some(schema_ref("TopologyStatus")))],
            &[("400", "Bad name or body"), AUTH, ("404", "No such topology or savepoint"), ("409", "Already running, or busy, or the savepoint's state does not fit the topology (state_mismatch); on a cluster's node, applying it failed (cluster_refused)"), ("422", "A binding failed or an operator rejected its config"), ("500", "The engine failed"), ("503", "On a cluster's node: the control topic cannot be written (cluster_unavailable)")]) },
        "/v1/topologies/{name}/stop": { "post": op("stopTopology", "Stop a topology after a last checkpoint, optionally exported as a savepoint", vec![name()], Some(savepoint_arg),
            &[("200", "Stopped", Some(schema_ref("TopologyStatus")))],
            &[("400", "Bad name or body"), AUTH, ("404", "No such topology"), ("409", "Not running, busy, or the savepoint exists; on a cluster's node, applying it failed (cluster_refused)"), ("500", "The engine failed"), ("503", "On a cluster's node: the control topic cannot be written (cluster_unavailable)")]) },
        "/v1/topologies/{name}/checkpoints": { "get": op("listCheckpoints", "Checkpoints and savepoints of a topology", vec![name()], None,
            &[("200", "Checkpoints and savepoints", Some(json!({ "type": "object" })))], &[("400", "Bad name"), AUTH, ("404", "No such topology")]) },
        "/v1/topologies/{name}/metrics": { "get": op("getTopologyMetrics",
            "Every operator instance's counters, blocked time (backpressure) and batch-latency histogram at one moment, and the operators' chains (tasks); two snapshots give rates. No instances while it is not running",
            vec![name()], None,
            &[("200", "The snapshot", Some(schema_ref("MetricsSnapshot")))],
            &[("400", "Bad name"), AUTH, ("404", "No such topology")]) },
        "/v1/topologies/{name}/savepoints": {
            "get": op("listSavepoints", "Savepoints of a topology", vec![name()], None,
                &[("200", "Savepoints", Some(json!({ "type": "object", "properties": { "savepoints": { "type": "array", "items": schema_ref("Savepoint") } } })))],
                &[("400", "Bad name"), AUTH, ("404", "No such topology")]),
            "post": op("createSavepoint", "Write a named savepoint: of a running topology through a checkpoint taken now, of a stopped one from its last checkpoint", vec![name()],
                Some(json_body(json!({ "type": "object", "required": ["name"], "properties": { "name": { "type": "string" } } }))),
                &[("201", "Written", Some(schema_ref("Savepoint")))],
                &[("400", "Bad name or body"), AUTH, ("404", "No such topology"), ("409", "The savepoint exists, or there is no checkpoint yet"), ("500", "The engine failed")]),
        },
        "/v1/topologies/{name}/operators/{operator}/state/{state}": { "get": op("getState",
            "The state (value, map entries or list) one key has under one name in an operator: of a running topology, or from the last checkpoint of a stopped one. On a cluster's node, answered by the node that holds the key's partition (forwarded once; `node` names it)",
            vec![name(), path_param("operator", "Operator name"), path_param("state", "State name, as the operator declares it"),
                 query_param("key", "string", "The key as text"), query_param("key_b64", "string", "The key as base64"),
                 query_param("forwarded", "string", "Set by a cluster's node that forwards the query: answered here, never forwarded again")], None,
            &[("200", "The value (JSON when it is JSON, else value_b64)", Some(json!({ "type": "object" })))],
            &[("400", "No key, or a bad one"), AUTH, ("404", "No such topology or operator (operator_not_found), no such state (state_not_found), an operator that keeps no state (stateless_operator), or no value for the key (key_not_found)"), ("409", "Stopped before its first checkpoint"), ("502", "The node that holds the key did not answer (forward_failed)"), ("503", "No node holds the key's partition now (partition_unowned)")]) },
        "/v1/topologies/{name}/dead-letters": { "get": op("listDeadLetters",
            "A topology's dead letters from an offset of its dead-letter stream, each with the failure's context: operator, instance, module and digest, source and offset, input, event time, kind (guest-error, trap, out-of-time, memory-cap, over-limit, invalid-output, late, refused), the message and, for a trap, the guest's backtrace",
            vec![name(), query_param("offset", "integer", "First offset (default: the oldest held)"),
                 query_param("limit", "integer", "Most letters (default 100, at most 1000)")], None,
            &[("200", "Dead letters", Some(json!({ "type": "object", "properties": {
                "stream": { "type": ["string", "null"], "description": "The dead-letter stream; null for a topology that writes no dead letters" }, "next_offset": { "type": "integer" },
                "start_offset": { "type": "integer" }, "end_offset": { "type": "integer" },
                "dead_letters": { "type": "array", "items": { "type": "object" } } } })))],
            &[("400", "Bad name or limit, or an offset outside the letters (bad_range)"), AUTH, ("404", "No such topology")]) },
        "/v1/topologies/{name}/dead-letters/replay": { "post": op("replayDeadLetters",
            "Feed the dead letters at offsets from..to (to exclusive, at most 1000) back into the operators that failed on them, in the running topology (after an upgrade to a fixed module): what passes flows on; what fails again is reported and dead-lettered again",
            vec![name()],
            Some(json_body(json!({ "type": "object", "required": ["from", "to"], "properties": { "from": { "type": "integer", "minimum": 0 }, "to": { "type": "integer", "minimum": 0 } } }))),
            &[("200", "What passed, failed again, or was skipped, by offset", Some(json!({ "type": "object", "properties": {
                "passed": { "type": "array", "items": { "type": "integer" } },
                "failed": { "type": "array", "items": { "type": "object" } },
                "skipped": { "type": "array", "items": { "type": "object" } } } })))],
            &[("400", "Bad name or body, or a range that is empty, too long, outside the letters or of a topology that writes none (bad_range)"), AUTH, ("404", "No such topology"), ("409", "Not running"), ("413", "Body over the limit"), ("500", "The engine failed")]) },
        "/v1/streams": { "get": op("listStreams", "Every stream with its offsets and size", vec![], None,
            &[("200", "Streams", Some(json!({ "type": "object", "properties": { "streams": { "type": "array", "items": schema_ref("StreamInfo") } } })))], &[AUTH]) },
        "/v1/streams/{name}/events": {
            "post": op("produce", "Append events (a JSON array or JSON lines); answered once they are on disk. With producer and sequence the batch is idempotent: a retry of a stored batch answers its offsets and stores nothing",
                vec![name(),
                     query_param("producer", "string", "Producer id (1-128 of A-Z a-z 0-9 _ . -), with sequence"),
                     query_param("sequence", "integer", "The batch's number, increasing per producer; a retry sends the same number and body")],
                Some(json!({ "required": true, "content": {
                    "application/json": { "schema": { "type": "array", "items": schema_ref("Event") } },
                    "application/x-ndjson": { "schema": { "type": "string" } } } })),
                &[("200", "Appended", Some(json!({ "type": "object", "properties": {
                    "stream": { "type": "string" }, "count": { "type": "integer" },
                    "first_offset": { "type": "integer" }, "next_offset": { "type": "integer" },
                    "duplicate": { "type": "boolean", "description": "Only with a producer: the batch was stored before, nothing was written now" } } })))],
                &[("400", "Bad name, producer or sequence, or a malformed event (details.at says which)"), AUTH,
                  ("409", "The producer's sequence was stored with different events, or is older than the 5 kept: nothing was stored"),
                  ("413", "Body over the limit"),
                  ("422", "An event the stream cannot store (a header name over 65535 bytes, over 65535 headers, over 64 MiB): details.index says which; nothing was written"),
                  ("507", "The disk is full or under --min-free-bytes: nothing was stored")]),
            "get": op("consume", "Read events from an offset; with Accept: text/event-stream, follow the tail (one SSE event per event, id = offset; Last-Event-ID resumes)",
                vec![name(), query_param("offset", "integer", "First offset (default: the stream's start)"),
                     query_param("limit", "integer", "Most events (default 100, at most 10000; with SSE: stop after this many)")], None,
                &[("200", "Events", Some(json!({ "type": "object", "properties": {
                    "stream": { "type": "string" }, "next_offset": { "type": "integer" }, "end_offset": { "type": "integer" },
                    "events": { "type": "array", "items": schema_ref("Event") } } })))],
                &[("400", "Bad name, limit, or an offset out of range"), AUTH, ("404", "No such stream (a read never creates one)")]),
        },
    });
    let endpoint = json!({ "type": "object", "description": "Live figures of a source or sink that keeps them",
        "properties": {
            "name": { "type": "string" },
            "splits": { "type": "array", "description": "Per split (a stream is split 0, a Kafka topic has one per partition)", "items": { "type": "object", "properties": {
                "split": { "type": "integer" },
                "position": { "type": "integer", "description": "Next offset the source hands to the engine" },
                "end": { "type": ["integer", "null"], "description": "Where the input ends now (a Kafka partition: its last stable offset), when known" },
                "lag": { "type": ["integer", "null"], "description": "end − position" } } } },
            "counters": { "type": "object", "description": "records_in; records_out, transactions_committed, transactions_aborted" } } });
    let metrics_snapshot = json!({ "type": "object", "properties": {
                    "topology": { "type": "string" }, "state": { "type": "string" },
                    "taken_at": { "type": "integer", "description": "Wall clock of the snapshot, ms since the Unix epoch" },
                    "chains": { "type": "array", "description": "Operator names per task, in data order", "items": { "type": "array", "items": { "type": "string" } } },
                    "latency_bounds_us": { "type": "array", "description": "Upper bounds of the latency buckets, µs (a last bucket holds the rest)", "items": { "type": "integer" } },
                    "instances": { "type": "array", "items": { "type": "object", "properties": {
                        "operator": { "type": "string" }, "instance": { "type": "integer" },
                        "events_in": { "type": "integer" }, "events_out": { "type": "integer" }, "errors": { "type": "integer" },
                        "dead_lettered": { "type": "integer" }, "late": { "type": "integer" },
                        "watermark": { "type": ["integer", "null"], "description": "Event time, ms; null before the first" },
                        "blocked_ms": { "type": "integer", "description": "Time spent blocked sending downstream" },
                        "latency_counts": { "type": "array", "items": { "type": "integer" } },
                        "counters": { "type": "object", "description": "The operator's own counters" },
                        "logs": { "type": "array", "description": "The newest lines the operator logged (at most 50, at most 16 per call), oldest first",
                            "items": schema_ref("GuestLog") } } } },
                    "endpoints": { "type": "array", "items": schema_ref("Endpoint") },
                    "last_checkpoint": schema_ref("Checkpoint") } });
    let guest_log = json!({ "type": "object", "properties": {
        "level": { "type": "string", "enum": ["trace", "debug", "info", "warn", "error"] },
        "message": { "type": "string" },
        "at": { "type": "integer", "description": "Wall clock, ms since the Unix epoch" } } });
    json!({
        "openapi": "3.1.0",
        "info": {
            "title": "Weir",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "Stream processing with WebAssembly operators. With a token configured, every /v1 call needs `Authorization: Bearer <token>`. Errors are {\"error\": {\"code\", \"message\", \"details\"}}."
        },
        "components": {
            "securitySchemes": { "bearer": { "type": "http", "scheme": "bearer" } },
            "schemas": {
                "Error": { "type": "object", "required": ["error"], "properties": { "error": {
                    "type": "object", "required": ["code", "message"], "properties": {
                        "code": { "type": "string" }, "message": { "type": "string" }, "details": {} } } } },
                "ModuleVersion": { "type": "object", "properties": {
                    "name": { "type": "string" }, "version": { "type": "integer" }, "reference": { "type": "string" },
                    "digest": { "type": "string" }, "size": { "type": "integer" }, "world": { "type": "string" },
                    "imports": { "type": "array", "items": { "type": "string" } },
                    "exports": { "type": "array", "items": { "type": "string" } }, "created_at": { "type": "integer" },
                    "language": { "type": ["string", "null"], "description": "Rust, C, JavaScript, Python or Go, where the component's producers sections say" } } },
                "Problem": { "type": "object", "properties": {
                    "path": { "type": "string" }, "message": { "type": "string" }, "severity": { "enum": ["error", "warning"] } } },
                "TopologyDocument": { "type": "object", "required": ["name"], "properties": {
                    "name": { "type": "string" }, "sources": { "type": "array" }, "operators": { "type": "array" },
                    "sinks": { "type": "array" }, "key_groups": { "type": "integer" }, "checkpoint": { "type": "object" },
                    "dead_letter_stream": { "type": "string" },
                    "cluster": { "type": "object", "description": "On a cluster: `standbys`, warm copies of each partition's state on other nodes (0 to the nodes less one)", "properties": { "standbys": { "type": "integer" } } } } },
                "TopologyStatus": { "type": "object", "properties": {
                    "name": { "type": "string" }, "state": { "enum": ["running", "stopped", "failed"] },
                    "desired": { "enum": ["running", "stopped"] }, "document": schema_ref("TopologyDocument"),
                    "modules": { "type": "object" }, "operators": { "type": "array" },
                    "last_error": { "type": ["string", "null"] }, "last_checkpoint": schema_ref("Checkpoint"),
                    "skipped_checkpoints": { "type": "integer", "description": "Interval checkpoints this run skipped because nothing had changed since the last one" },
                    "sources": { "type": "array", "description": "Events each source read in the current run, or in the last one once it stopped", "items": { "type": "object", "properties": {
                        "name": { "type": "string" }, "events_read": { "type": "integer" } } } },
                    "endpoints": { "type": "array", "items": schema_ref("Endpoint") },
                    "operator_limits": { "type": "object", "description": "Each operator's limits as its instances get them: its document's `limits`, else the server's",
                        "additionalProperties": { "type": "object", "properties": {
                            "memory_mb": { "type": "integer" }, "call_budget_ms": { "type": "integer" },
                            "max_state_value_bytes": { "type": "integer" }, "max_output_bytes_per_call": { "type": "integer" } } } },
                    "failed_checkpoints": { "type": "object", "description": "Checkpoints of this run whose commit failed (no space, an I/O error) and were aborted, their changes carried into the next; the topology fails past checkpoint.tolerable_failed_checkpoints in a row (default 3)",
                        "properties": { "total": { "type": "integer" }, "in_a_row": { "type": "integer" }, "last_error": { "type": ["string", "null"] } } },
                    "usage": schema_ref("TopologyUsage") } },
                "Endpoint": endpoint,
                "TopologyUsage": { "type": ["object", "null"], "description": "What the running topology costs the node; null while it does not run", "properties": {
                    "cpu_seconds": { "type": "number", "description": "Worker time its tasks used since it started" },
                    "cpu_share": { "type": "number", "description": "Its part (0 to 1) of the worker time all topologies used, over the window since the previous look (at least 1 s)" },
                    "throttled": { "type": "integer", "description": "Slices after which one of its tasks was paused because its guest calls kept running long" },
                    "wasm_memory_bytes": { "type": "integer", "description": "Linear memory of its operator instances" },
                    "state_bytes": { "type": "integer", "description": "Keyed state its operators hold in memory" } } },
                "Checkpoint": { "type": ["object", "null"], "properties": {
                    "id": { "type": "integer" }, "savepoint": { "type": ["string", "null"] }, "started_at": { "type": "integer" },
                    "duration_ms": { "type": "number" }, "alignment_ms": { "type": "number" }, "commit_ms": { "type": "number" },
                    "rows": { "type": "integer" }, "bytes": { "type": "integer" }, "final": { "type": "boolean" } } },
                "MetricsSnapshot": metrics_snapshot,
                "GuestLog": guest_log,
                "Savepoint": { "type": "object", "properties": {
                    "topology": { "type": "string" }, "name": { "type": "string" }, "bytes": { "type": "integer" }, "created_at": { "type": "integer" } } },
                "StreamInfo": { "type": "object", "properties": {
                    "name": { "type": "string" }, "start_offset": { "type": "integer" }, "end_offset": { "type": "integer" },
                    "bytes": { "type": "integer" }, "segments": { "type": "integer" } } },
                "Event": { "type": "object", "properties": {
                    "offset": { "type": "integer", "description": "In reads only" },
                    "key": { "type": "string" }, "key_b64": { "type": "string" }, "value": {},
                    "value_b64": { "type": "string" }, "timestamp": { "type": "integer" },
                    "headers": { "type": "object" }, "headers_b64": { "type": "object" } } }
            }
        },
        "security": [{ "bearer": [] }],
        "paths": paths,
    })
}

/// `GET /v1/openapi.json`.
pub(super) async fn handler() -> Json<Value> {
    Json(document())
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;

    #[test]
    fn documents_exactly_the_routes_served() {
        let doc = document();
        let mut documented = BTreeSet::new();
        for (path, item) in doc["paths"].as_object().unwrap() {
            for method in item.as_object().unwrap().keys() {
                documented.insert((method.to_uppercase(), path.clone()));
            }
        }
        let served: BTreeSet<(String, String)> = crate::http::routes()
            .into_iter()
            .map(|(m, p)| (m.to_string(), p.to_string()))
            .collect();
        assert_eq!(documented, served);
    }
}
