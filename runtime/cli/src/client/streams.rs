//! `weir produce STREAM [FILE]` and `weir consume STREAM`.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;

use clap::Args;
use serde_json::{Value, json};

use super::{Body, Client, Failure, Outcome, Progress, encode, out, print_json};

#[derive(Args)]
pub struct ProduceArgs {
    /// The stream (created on first use).
    pub stream: String,
    /// JSON lines of events; `-` or absent: stdin.
    pub file: Option<PathBuf>,
    /// Events per request.
    #[arg(long, default_value_t = 1000)]
    pub batch: usize,
}

#[derive(Args)]
pub struct ConsumeArgs {
    pub stream: String,
    /// First offset to read (default: the stream's start).
    #[arg(long)]
    pub from: Option<u64>,
    /// Keep reading as the stream grows (server-sent events), until
    /// interrupted or --limit events.
    #[arg(long)]
    pub follow: bool,
    /// Most events to print.
    #[arg(long)]
    pub limit: Option<u64>,
}

fn send(client: &Client, stream: &str, lines: &str) -> Result<Value, Failure> {
    let (_, v) = client.call(
        "POST",
        &format!("/v1/streams/{}/events", encode(stream)),
        Body::Bytes(lines.as_bytes(), "application/x-ndjson"),
    )?;
    Ok(v)
}

pub fn produce(client: &Client, args: ProduceArgs) -> Outcome {
    let reader: Box<dyn BufRead> = match &args.file {
        Some(f) if f.as_os_str() != "-" => {
            Box::new(BufReader::new(std::fs::File::open(f).map_err(|e| {
                Failure::Other(format!("cannot open {}: {e}", f.display()))
            })?))
        }
        _ => Box::new(BufReader::new(std::io::stdin())),
    };
    let _p = Progress::start(format!("producing to {}", args.stream));
    let mut pending = String::new();
    let mut in_batch = 0;
    let (mut count, mut first, mut next) = (0u64, None::<u64>, 0u64);
    let mut flush = |pending: &mut String, in_batch: &mut usize| -> Outcome {
        if *in_batch == 0 {
            return Ok(());
        }
        let v = send(client, &args.stream, pending)?;
        count += v["count"].as_u64().unwrap_or(0);
        first = first.or(v["first_offset"].as_u64());
        next = v["next_offset"].as_u64().unwrap_or(next);
        pending.clear();
        *in_batch = 0;
        Ok(())
    };
    for line in reader.lines() {
        let line = line?;
        if line.trim().is_empty() {
            continue;
        }
        pending.push_str(&line);
        pending.push('\n');
        in_batch += 1;
        if in_batch >= args.batch.max(1) {
            flush(&mut pending, &mut in_batch)?;
        }
    }
    flush(&mut pending, &mut in_batch)?;
    drop(_p);
    let summary = json!({ "stream": args.stream, "count": count, "first_offset": first, "next_offset": next });
    if client.json {
        print_json(&summary);
    } else {
        out(&format!(
            "produced {count} events to {} (offsets {}..{next})\n",
            args.stream,
            first.unwrap_or(next)
        ));
    }
    Ok(())
}

/// An event of the server as a line: with its offset under --json, in the
/// wire format `weir produce` reads otherwise.
fn event_line(client: &Client, mut event: Value) -> String {
    if !client.json
        && let Some(o) = event.as_object_mut()
    {
        o.remove("offset");
    }
    format!("{event}\n")
}

pub fn consume(client: &Client, args: ConsumeArgs) -> Outcome {
    let stream = encode(&args.stream);
    let mut printed = 0u64;
    let done = |printed: u64| args.limit.is_some_and(|l| printed >= l);
    if args.follow {
        let mut path = format!("/v1/streams/{stream}/events?");
        if let Some(from) = args.from {
            path.push_str(&format!("offset={from}&"));
        }
        if let Some(limit) = args.limit {
            path.push_str(&format!("limit={limit}"));
        }
        let reader = BufReader::new(client.stream(&path)?);
        for line in reader.lines() {
            let line = line.map_err(|e| Failure::Other(format!("the follow broke off: {e}")))?;
            let Some(data) = line.strip_prefix("data:") else {
                continue;
            };
            let event: Value = serde_json::from_str(data.trim())
                .map_err(|e| Failure::Other(format!("bad event from the server: {e}")))?;
            out(&event_line(client, event));
            printed += 1;
            if done(printed) {
                break;
            }
        }
        return Ok(());
    }
    let mut offset = args.from;
    loop {
        let want = args.limit.map(|l| (l - printed).min(1000)).unwrap_or(1000);
        let mut path = format!("/v1/streams/{stream}/events?limit={want}");
        if let Some(o) = offset {
            path.push_str(&format!("&offset={o}"));
        }
        let (_, v) = client.call("GET", &path, Body::Empty)?;
        let events = v["events"].as_array().cloned().unwrap_or_default();
        let mut text = String::new();
        for e in events.iter() {
            text.push_str(&event_line(client, e.clone()));
        }
        out(&text);
        printed += events.len() as u64;
        let next = v["next_offset"].as_u64().unwrap_or(0);
        if events.is_empty() || done(printed) || next >= v["end_offset"].as_u64().unwrap_or(0) {
            return Ok(());
        }
        offset = Some(next);
    }
}
