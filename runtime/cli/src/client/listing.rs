//! `weir stream ls` and `weir savepoint ls [TOPOLOGY]`: what a server holds,
//! as tables (or its JSON with `--json`).

use clap::Subcommand;
use serde_json::json;

use super::{Body, Client, Outcome, cell, encode, out, print_json, table};

#[derive(Subcommand)]
pub enum StreamCommand {
    /// List streams: their offsets and size on disk.
    Ls,
}

#[derive(Subcommand)]
pub enum SavepointCommand {
    /// List the savepoints of one topology, or of every topology.
    Ls { topology: Option<String> },
}

/// `weir stream ls`.
pub fn streams(client: &Client, command: StreamCommand) -> Outcome {
    let StreamCommand::Ls = command;
    let (_, v) = client.call("GET", "/v1/streams", Body::Empty)?;
    if client.json {
        print_json(&v);
        return Ok(());
    }
    let rows: Vec<Vec<String>> = v["streams"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|s| {
            let events = match (s["start_offset"].as_u64(), s["end_offset"].as_u64()) {
                (Some(start), Some(end)) => end.saturating_sub(start).to_string(),
                _ => "-".into(),
            };
            vec![
                cell(&s["name"]),
                cell(&s["start_offset"]),
                cell(&s["end_offset"]),
                events,
                cell(&s["bytes"]),
            ]
        })
        .collect();
    out(&table(&["NAME", "START", "END", "EVENTS", "BYTES"], &rows));
    Ok(())
}

/// `weir savepoint ls [TOPOLOGY]`.
pub fn savepoints(client: &Client, command: SavepointCommand) -> Outcome {
    let SavepointCommand::Ls { topology } = command;
    let topologies: Vec<String> = match topology {
        Some(t) => vec![t],
        None => {
            let (_, v) = client.call("GET", "/v1/topologies", Body::Empty)?;
            v["topologies"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|t| t["name"].as_str().map(str::to_string))
                .collect()
        }
    };
    let mut all = Vec::new();
    for t in &topologies {
        let (_, v) = client.call(
            "GET",
            &format!("/v1/topologies/{}/savepoints", encode(t)),
            Body::Empty,
        )?;
        all.extend(v["savepoints"].as_array().cloned().unwrap_or_default());
    }
    if client.json {
        print_json(&json!({ "savepoints": all }));
        return Ok(());
    }
    let rows: Vec<Vec<String>> = all
        .iter()
        .map(|s| {
            vec![
                cell(&s["topology"]),
                cell(&s["name"]),
                cell(&s["bytes"]),
                s["created_at"]
                    .as_i64()
                    .map(utc)
                    .unwrap_or_else(|| "-".into()),
            ]
        })
        .collect();
    out(&table(
        &["TOPOLOGY", "NAME", "BYTES", "CREATED (UTC)"],
        &rows,
    ));
    Ok(())
}

/// `ms` since the Unix epoch as `YYYY-MM-DD HH:MM:SS` (UTC).
fn utc(ms: i64) -> String {
    let secs = ms.div_euclid(1000);
    let (days, rest) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Days to a civil date (proleptic Gregorian), by 400-year eras.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02}",
        rest / 3600,
        rest % 3600 / 60,
        rest % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_print_as_utc_dates() {
        assert_eq!(utc(0), "1970-01-01 00:00:00");
        assert_eq!(utc(951_782_400_000), "2000-02-29 00:00:00");
        assert_eq!(utc(1_796_059_201_500), "2026-11-30 17:20:01");
        assert_eq!(utc(-1_000), "1969-12-31 23:59:59");
    }
}
