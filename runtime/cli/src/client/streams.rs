//! `weir produce STREAM [FILE]` and `weir consume STREAM`.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::time::Duration;

use clap::Args;
use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::{Value, json};

use weir_types::wire;

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
    /// Producer id sent with each batch (idempotent produce: a batch the
    /// server already stored is not stored twice when a call is retried).
    /// Default: a new id per run.
    #[arg(long)]
    pub producer: Option<String>,
    /// Sequence number of the first batch (then one more per batch); reuse
    /// a run's --producer and --first-sequence to resend its batches without
    /// storing any twice.
    #[arg(long, default_value_t = 1)]
    pub first_sequence: u64,
    /// Retries of a call that failed for a reason that may pass (server
    /// unreachable, 5xx, disk full), waiting 200 ms doubling up to 5 s.
    #[arg(long, default_value_t = 8)]
    pub retries: u32,
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

/// Where a batch goes: the stream, the producer id and the batch's
/// sequence number.
struct Target<'a> {
    stream: &'a str,
    producer: &'a str,
    sequence: u64,
    retries: u32,
}

/// Sends one idempotent batch, retrying a failure that may pass; a retry
/// of a batch the server stored answers its offsets, so nothing is stored
/// twice.
fn send(client: &Client, to: &Target<'_>, lines: &str) -> Result<Value, Failure> {
    let path = format!(
        "/v1/streams/{}/events?producer={}&sequence={}",
        encode(to.stream),
        encode(to.producer),
        to.sequence
    );
    let mut wait = Duration::from_millis(200);
    let mut attempt = 0;
    loop {
        match client.call(
            "POST",
            &path,
            Body::Bytes(lines.as_bytes(), "application/x-ndjson"),
        ) {
            Ok((_, v)) => return Ok(v),
            Err(Failure::Unreachable(_) | Failure::Server(_)) if attempt < to.retries => {
                attempt += 1;
                std::thread::sleep(wait);
                wait = (wait * 2).min(Duration::from_secs(5));
            }
            Err(f) => return Err(f),
        }
    }
}

/// A producer id no other run uses: the clock in nanoseconds and the
/// process id.
fn new_producer_id() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    format!("weir-produce-{nanos:x}-{:x}", std::process::id())
}

/// Most bad lines a refused input lists.
const BAD_LINES_LISTED: usize = 20;

/// Checks every line of `reader` as an event; returns how many lines it has,
/// or every bad one (the first [`BAD_LINES_LISTED`]) with its line number.
fn validate_lines(reader: impl BufRead, source: &str) -> Result<usize, Failure> {
    let mut bad = Vec::new();
    let mut bad_count = 0usize;
    let mut lines = 0usize;
    for (i, line) in reader.lines().enumerate() {
        let line = line.map_err(|e| Failure::Other(format!("cannot read {source}: {e}")))?;
        lines = i + 1;
        if line.trim().is_empty() {
            continue;
        }
        if let Err(e) = wire::parse_event(&line, 0) {
            bad_count += 1;
            if bad.len() < BAD_LINES_LISTED {
                bad.push(format!("  {source}:{}: {e}", i + 1));
            }
        }
    }
    if bad_count == 0 {
        return Ok(lines);
    }
    let more = bad_count - bad.len();
    let more = if more > 0 {
        format!("\n  … and {more} more")
    } else {
        String::new()
    };
    Err(Failure::Invalid(format!(
        "{bad_count} line(s) of {source} are not events; nothing was sent. Fix them and run \
         the command again:\n{}{more}",
        bad.join("\n")
    )))
}

/// What has been stored so far, for a message after a failed request.
struct Produced {
    count: u64,
    first: Option<u64>,
    next: u64,
    /// Lines (1-based, of the input) sent and stored so far.
    lines_stored: usize,
}

impl Produced {
    fn stored(&self) -> String {
        match self.first {
            Some(first) => format!(
                "lines 1–{} were stored ({} events, offsets {first}..{})",
                self.lines_stored, self.count, self.next
            ),
            None => "nothing was stored".into(),
        }
    }
}

pub fn produce(client: &Client, args: ProduceArgs) -> Outcome {
    // A file is checked whole before anything is sent, so that a bad line
    // never leaves part of the file stored; stdin cannot be read twice, so
    // each batch is checked before it is sent and a failure says exactly
    // which lines were stored.
    let file = args.file.as_ref().filter(|f| f.as_os_str() != "-");
    let open = |f: &PathBuf| {
        std::fs::File::open(f)
            .map(BufReader::new)
            .map_err(|e| Failure::Other(format!("cannot open {}: {e}", f.display())))
    };
    let source = match file {
        Some(f) => {
            validate_lines(open(f)?, &f.display().to_string())?;
            f.display().to_string()
        }
        None => "stdin".to_string(),
    };
    let reader: Box<dyn BufRead> = match file {
        Some(f) => Box::new(open(f)?),
        None => Box::new(BufReader::new(std::io::stdin())),
    };
    let producer = args.producer.clone().unwrap_or_else(new_producer_id);
    let mut sequence = args.first_sequence;
    let _p = Progress::start(format!("producing to {}", args.stream));
    let mut pending = String::new();
    let mut in_batch = 0;
    let mut done = Produced {
        count: 0,
        first: None,
        next: 0,
        lines_stored: 0,
    };
    let mut flush = |pending: &mut String, in_batch: &mut usize, last_line: usize| -> Outcome {
        if *in_batch == 0 {
            return Ok(());
        }
        let first_line = done.lines_stored + 1;
        let to = Target {
            stream: &args.stream,
            producer: &producer,
            sequence,
            retries: args.retries,
        };
        sequence += 1;
        let v = send(client, &to, pending).map_err(|f| {
            f.context(format!(
                "{source} lines {first_line}–{last_line} (the server's line numbers count \
                 from {first_line}); {}",
                done.stored()
            ))
        })?;
        done.count += v["count"].as_u64().unwrap_or(0);
        done.first = done.first.or(v["first_offset"].as_u64());
        done.next = v["next_offset"].as_u64().unwrap_or(done.next);
        done.lines_stored = last_line;
        pending.clear();
        *in_batch = 0;
        Ok(())
    };
    let mut last_line = 0;
    for (i, line) in reader.lines().enumerate() {
        let line = line?;
        last_line = i + 1;
        if line.trim().is_empty() {
            continue;
        }
        if file.is_none()
            && let Err(e) = wire::parse_event(&line, 0)
        {
            flush(&mut pending, &mut in_batch, i)?;
            return Err(Failure::Invalid(format!(
                "{source}:{}: {e}; {} and nothing after",
                i + 1,
                done.stored()
            )));
        }
        pending.push_str(&line);
        pending.push('\n');
        in_batch += 1;
        if in_batch >= args.batch.max(1) {
            flush(&mut pending, &mut in_batch, i + 1)?;
        }
    }
    flush(&mut pending, &mut in_batch, last_line)?;
    drop(_p);
    let (count, first, next) = (done.count, done.first, done.next);
    let summary = json!({ "stream": args.stream, "count": count, "first_offset": first, "next_offset": next });
    if client.json {
        print_json(&summary);
    } else {
        let events = if count == 1 { "event" } else { "events" };
        out(&format!(
            "produced {count} {events} to {} (offsets {}..{next})\n",
            args.stream,
            first.unwrap_or(next)
        ));
    }
    Ok(())
}

/// An event of the server as a line, byte for byte as the server wrote it
/// (the operator's key order kept): with its offset under --json, in the
/// wire format `weir produce` reads otherwise.
fn event_line(client: &Client, event: &str) -> Result<String, Failure> {
    if client.json {
        return Ok(format!("{event}\n"));
    }
    without_offset(event)
        .map(|e| format!("{e}\n"))
        .ok_or_else(|| Failure::Other(format!("bad event from the server: {event}")))
}

/// `{"offset":N,REST` (how the server writes every event) as `{REST`.
fn without_offset(event: &str) -> Option<String> {
    let rest = event.strip_prefix("{\"offset\":")?;
    let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
    let rest = rest[digits..].strip_prefix(',')?;
    Some(format!("{{{rest}"))
}

/// One page of `GET /v1/streams/{name}/events`, events kept as text.
#[derive(Deserialize)]
struct Page<'a> {
    #[serde(borrow)]
    events: Vec<&'a RawValue>,
    next_offset: u64,
    end_offset: u64,
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
            out(&event_line(client, data.trim())?);
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
        let (_, text) = client.call_text("GET", &path, Body::Empty)?;
        let page: Page<'_> = serde_json::from_str(&text)
            .map_err(|e| Failure::Other(format!("bad page of events from the server: {e}")))?;
        let mut lines = String::new();
        for e in &page.events {
            lines.push_str(&event_line(client, e.get())?);
        }
        out(&lines);
        printed += page.events.len() as u64;
        let next = page.next_offset;
        if page.events.is_empty() || done(printed) || next >= page.end_offset {
            return Ok(());
        }
        offset = Some(next);
    }
}
