//! `weir dead-letter ls TOPOLOGY` and `weir dead-letter replay TOPOLOGY
//! --from A --to B`: a topology's dead letters, with the context of each
//! failure, and replaying a range of them after a fix.

use clap::Subcommand;
use serde_json::{Value, json};

use super::{Body, Client, Failure, Outcome, cell, encode, out, print_json, table};

/// Characters of an error shown in a table row (`--json` has all of it).
const ERROR_CELL_CHARS: usize = 80;

#[derive(Subcommand)]
pub enum LetterCommand {
    /// List dead letters: offset, kind of failure, operator, key, event
    /// time and error (--json for the whole context: module and digest,
    /// source and offset, backtrace, value).
    Ls {
        topology: String,
        /// The first dead letter to read [default: the oldest kept].
        #[arg(long)]
        offset: Option<u64>,
        /// How many to read [server default: 100].
        #[arg(long)]
        limit: Option<usize>,
    },
    /// Feed the dead letters at offsets FROM..TO (TO excluded) back into
    /// the running topology's operators, after a fix (a new module
    /// version); those that fail again become new dead letters.
    Replay {
        topology: String,
        #[arg(long)]
        from: u64,
        #[arg(long)]
        to: u64,
    },
}

pub fn run(client: &Client, command: LetterCommand) -> Outcome {
    match command {
        LetterCommand::Ls {
            topology,
            offset,
            limit,
        } => list(client, &topology, offset, limit),
        LetterCommand::Replay { topology, from, to } => replay(client, &topology, from, to),
    }
}

/// The first line of `error`, at most [`ERROR_CELL_CHARS`] characters.
fn error_cell(error: &Value) -> String {
    let text = cell(error);
    let line = text.lines().next().unwrap_or_default();
    match line.char_indices().nth(ERROR_CELL_CHARS) {
        Some((at, _)) => format!("{}…", &line[..at]),
        None => line.to_string(),
    }
}

fn list(client: &Client, topology: &str, offset: Option<u64>, limit: Option<usize>) -> Outcome {
    let mut query = Vec::new();
    if let Some(o) = offset {
        query.push(format!("offset={o}"));
    }
    if let Some(l) = limit {
        query.push(format!("limit={l}"));
    }
    let mut path = format!("/v1/topologies/{}/dead-letters", encode(topology));
    if !query.is_empty() {
        path = format!("{path}?{}", query.join("&"));
    }
    let (_, v) = client.call("GET", &path, Body::Empty)?;
    if client.json {
        print_json(&v);
        return Ok(());
    }
    let rows: Vec<Vec<String>> = v["dead_letters"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|l| {
            let key = match (&l["key"], &l["key_b64"]) {
                (Value::Null, Value::String(b64)) => format!("b64:{b64}"),
                (key, _) => cell(key),
            };
            vec![
                cell(&l["offset"]),
                cell(&l["kind"]),
                format!("{}#{}", cell(&l["operator"]), cell(&l["instance"])),
                key,
                cell(&l["event_time"]),
                error_cell(&l["error"]),
            ]
        })
        .collect();
    out(&table(
        &["OFFSET", "KIND", "OPERATOR", "KEY", "EVENT_TIME", "ERROR"],
        &rows,
    ));
    if let (Some(next), Some(end)) = (v["next_offset"].as_u64(), v["end_offset"].as_u64())
        && next < end
    {
        out(&format!("more from --offset {next} (up to {end})\n"));
    }
    Ok(())
}

fn replay(client: &Client, topology: &str, from: u64, to: u64) -> Outcome {
    let body = json!({ "from": from, "to": to });
    let (_, v) = client.call(
        "POST",
        &format!("/v1/topologies/{}/dead-letters/replay", encode(topology)),
        Body::Json(&body),
    )?;
    let count = |field: &str| v[field].as_array().map_or(0, Vec::len);
    let failed = count("failed");
    if client.json {
        print_json(&v);
    } else {
        out(&format!(
            "replayed {from}..{to} of {topology}: {} passed, {failed} failed again, {} skipped\n",
            count("passed"),
            count("skipped")
        ));
        let mut rows: Vec<Vec<String>> = Vec::new();
        for f in v["failed"].as_array().into_iter().flatten() {
            rows.push(vec![
                cell(&f["offset"]),
                "failed again".into(),
                format!("{}: {}", cell(&f["operator"]), error_cell(&f["error"])),
            ]);
        }
        for s in v["skipped"].as_array().into_iter().flatten() {
            rows.push(vec![
                cell(&s["offset"]),
                "skipped".into(),
                error_cell(&s["reason"]),
            ]);
        }
        if !rows.is_empty() {
            out(&table(&["OFFSET", "OUTCOME", "WHY"], &rows));
        }
    }
    if failed > 0 {
        return Err(Failure::Other(format!(
            "{failed} replayed dead letter(s) of {topology} failed again and are dead letters anew: \
             `weir dead-letter ls {topology}` shows them"
        )));
    }
    Ok(())
}
