//! `weir topology apply | validate | ls | status | start | stop | rm` and
//! `weir savepoint`.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use clap::Subcommand;
use serde_json::{Value, json};

use super::{Body, Client, Failure, Outcome, Progress, cell, encode, out, print_json, table};

#[derive(Subcommand)]
pub enum TopologyCommand {
    /// Create or replace a (stopped) topology from a YAML or JSON file; its
    /// module references are pinned to the versions they name now.
    Apply {
        file: PathBuf,
        /// Start it once applied.
        #[arg(long)]
        start: bool,
    },
    /// Check a topology file against the server without storing it.
    Validate { file: PathBuf },
    /// List topologies and their state.
    Ls,
    /// A topology's state, operators and their metrics.
    Status { name: String },
    /// Start a topology (from a savepoint with --savepoint).
    Start {
        name: String,
        #[arg(long)]
        savepoint: Option<String>,
    },
    /// Stop a topology (it drains; state and positions are kept), writing a
    /// savepoint with --savepoint.
    Stop {
        name: String,
        #[arg(long)]
        savepoint: Option<String>,
    },
    /// Delete a stopped topology with its state and savepoints.
    Rm { name: String },
}

fn read_doc(file: &PathBuf) -> Result<(String, String), Failure> {
    let text = std::fs::read_to_string(file)
        .map_err(|e| Failure::Other(format!("cannot read {}: {e}", file.display())))?;
    let doc = weir_topology::parse_topology(&text)
        .map_err(|e| Failure::Invalid(format!("{}: {e}", file.display())))?;
    Ok((doc.name, text))
}

fn content_type(text: &str) -> &'static str {
    if text.trim_start().starts_with('{') {
        "application/json"
    } else {
        "application/yaml"
    }
}

/// An operator's guest counters (`weir_sdk::counter_add`) as
/// `name=value` pairs, in name order.
fn counters_cell(counters: &Value) -> String {
    let Some(map) = counters.as_object() else {
        return String::new();
    };
    let mut pairs: Vec<String> = map
        .iter()
        .map(|(k, v)| format!("{k}={}", cell(v)))
        .collect();
    pairs.sort();
    pairs.join(" ")
}

fn print_status(v: &Value) {
    let mut text = format!(
        "topology {}: {} (desired: {})\n",
        cell(&v["name"]),
        cell(&v["state"]),
        cell(&v["desired"])
    );
    if let Some(e) = v["last_error"].as_str() {
        text.push_str(&format!("last error: {e}\n"));
    }
    let restart = &v["restart"];
    if let Some(attempt) = restart["attempt"].as_u64().filter(|a| *a > 0) {
        text.push_str(&format!(
            "restart attempt {attempt} of {}{}\n",
            cell(&restart["max_attempts"]),
            restart["next_try_at"]
                .as_i64()
                .map(|t| format!(", next try at {t} ms"))
                .unwrap_or_default()
        ));
    }
    for f in restart["failures"].as_array().into_iter().flatten() {
        text.push_str(&format!(
            "failed at {} ms: {}\n",
            cell(&f["at"]),
            cell(&f["cause"])
        ));
    }
    if let Some(modules) = v["modules"].as_object() {
        let pinned: Vec<String> = modules
            .iter()
            .map(|(r, p)| format!("{r} -> {}", cell(p)))
            .collect();
        text.push_str(&format!("modules: {}\n", pinned.join(", ")));
    }
    let c = &v["last_checkpoint"];
    if !c.is_null() {
        text.push_str(&format!(
            "last checkpoint: {} ({} ms, {} bytes)\n",
            cell(&c["id"]),
            c["duration_ms"]
                .as_f64()
                .map(|d| format!("{d:.1}"))
                .unwrap_or_default(),
            cell(&c["bytes"])
        ));
    }
    let rows: Vec<Vec<String>> = v["operators"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|o| {
            vec![
                cell(&o["name"]),
                cell(&o["instance"]),
                cell(&o["events_in"]),
                cell(&o["events_out"]),
                cell(&o["errors"]),
                cell(&o["dead_lettered"]),
                cell(&o["late"]),
                counters_cell(&o["counters"]),
            ]
        })
        .collect();
    if !rows.is_empty() {
        text.push('\n');
        text.push_str(&table(
            &[
                "OPERATOR", "INSTANCE", "IN", "OUT", "ERRORS", "DEAD", "LATE", "COUNTERS",
            ],
            &rows,
        ));
    }
    out(&text);
}

fn show(client: &Client, v: &Value) {
    if client.json {
        print_json(v);
    } else {
        print_status(v);
    }
}

/// How long `start` watches a topology it started before saying it runs:
/// a failure on the first events it reads shows up within this.
const START_SETTLE: Duration = Duration::from_millis(1000);

/// Watches a topology that was just started for [`START_SETTLE`]; a
/// failure in that time is the command's failure, with the server's cause.
fn settle(client: &Client, name: &str, started: Value) -> Result<Value, Failure> {
    let path = format!("/v1/topologies/{}", encode(name));
    let until = Instant::now() + START_SETTLE;
    let mut last = started;
    while Instant::now() < until {
        let state = last["state"].as_str().unwrap_or("");
        if state == "failed" || state == "restarting" {
            let cause = last["last_error"].as_str().unwrap_or("no cause recorded");
            let restarting = if state == "restarting" {
                " (it is restarting)"
            } else {
                ""
            };
            return Err(Failure::Other(format!(
                "topology {name} failed right after it started{restarting}: {cause}\n(fix the \
                 cause, then `weir topology start {name}` again; `weir topology status {name}` \
                 shows it)"
            )));
        }
        std::thread::sleep(Duration::from_millis(100));
        last = client.call("GET", &path, Body::Empty)?.1;
    }
    Ok(last)
}

pub fn run(client: &Client, command: TopologyCommand) -> Outcome {
    match command {
        TopologyCommand::Apply { file, start } => {
            let (name, text) = read_doc(&file)?;
            let (status, v) = client.call(
                "PUT",
                &format!("/v1/topologies/{}", encode(&name)),
                Body::Bytes(text.as_bytes(), content_type(&text)),
            )?;
            if !client.json {
                out(&format!(
                    "topology {name} {}\n",
                    if status == 201 { "created" } else { "replaced" }
                ));
            }
            if start {
                let _p = Progress::start(format!("starting {name}"));
                let (_, v) = client.call(
                    "POST",
                    &format!("/v1/topologies/{}/start", encode(&name)),
                    Body::Empty,
                )?;
                let v = settle(client, &name, v)?;
                drop(_p);
                show(client, &v);
            } else if client.json {
                print_json(&v);
            }
        }
        TopologyCommand::Validate { file } => {
            let (_, text) = read_doc(&file)?;
            let (_, v) = client.call(
                "POST",
                "/v1/topologies/validate",
                Body::Bytes(text.as_bytes(), content_type(&text)),
            )?;
            if client.json {
                print_json(&v);
            }
            let problems = v["problems"].as_array().cloned().unwrap_or_default();
            if !client.json {
                for p in &problems {
                    out(&format!(
                        "{}: {}: {}\n",
                        cell(&p["severity"]),
                        cell(&p["path"]),
                        cell(&p["message"])
                    ));
                }
            }
            let count = |severity: &str| {
                problems
                    .iter()
                    .filter(|p| p["severity"] == severity)
                    .count()
            };
            let (errors, warnings) = (count("error"), count("warning"));
            if v["valid"] != json!(true) {
                return Err(Failure::Invalid(format!(
                    "{}: {errors} error(s), {warnings} warning(s)",
                    file.display(),
                )));
            }
            if !client.json {
                let noted = if warnings > 0 {
                    format!(" ({warnings} warning(s))")
                } else {
                    String::new()
                };
                out(&format!("{}: valid{noted}\n", file.display()));
            }
        }
        TopologyCommand::Ls => {
            let (_, v) = client.call("GET", "/v1/topologies", Body::Empty)?;
            if client.json {
                print_json(&v);
            } else {
                let rows: Vec<Vec<String>> = v["topologies"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|t| {
                        vec![
                            cell(&t["name"]),
                            cell(&t["state"]),
                            cell(&t["desired"]),
                            cell(&t["operators"]),
                            cell(&t["events_in"]),
                        ]
                    })
                    .collect();
                out(&table(
                    &["NAME", "STATE", "DESIRED", "OPERATORS", "EVENTS IN"],
                    &rows,
                ));
            }
        }
        TopologyCommand::Status { name } => {
            let (_, v) = client.call(
                "GET",
                &format!("/v1/topologies/{}", encode(&name)),
                Body::Empty,
            )?;
            show(client, &v);
        }
        TopologyCommand::Start { name, savepoint } => {
            let body = json!({ "savepoint": savepoint });
            let _p = Progress::start(format!("starting {name}"));
            let (_, v) = client.call(
                "POST",
                &format!("/v1/topologies/{}/start", encode(&name)),
                Body::Json(&body),
            )?;
            let v = settle(client, &name, v)?;
            drop(_p);
            show(client, &v);
        }
        TopologyCommand::Stop { name, savepoint } => {
            let body = json!({ "savepoint": savepoint });
            let _p = Progress::start(format!("stopping {name}"));
            let (_, v) = client.call(
                "POST",
                &format!("/v1/topologies/{}/stop", encode(&name)),
                Body::Json(&body),
            )?;
            drop(_p);
            show(client, &v);
            if !client.json
                && let Some(sp) = v["savepoint"]["name"].as_str()
            {
                out(&format!("savepoint {sp} written\n"));
            }
        }
        TopologyCommand::Rm { name } => {
            client.call(
                "DELETE",
                &format!("/v1/topologies/{}", encode(&name)),
                Body::Empty,
            )?;
            if client.json {
                print_json(&json!({ "deleted": name }));
            } else {
                out(&format!("deleted topology {name}\n"));
            }
        }
    }
    Ok(())
}

/// `weir savepoint TOPOLOGY [NAME]`.
pub fn savepoint(client: &Client, topology: &str, name: Option<String>) -> Outcome {
    let name = name.unwrap_or_else(|| format!("sp-{}", weir_types::now_ms()));
    let body = json!({ "name": name });
    let _p = Progress::start(format!("writing savepoint {name} of {topology}"));
    let (_, v) = client.call(
        "POST",
        &format!("/v1/topologies/{}/savepoints", encode(topology)),
        Body::Json(&body),
    )?;
    drop(_p);
    if client.json {
        print_json(&v);
    } else {
        out(&format!(
            "savepoint {} of {topology} written ({} bytes)\n",
            cell(&v["name"]),
            cell(&v["bytes"])
        ));
    }
    Ok(())
}
