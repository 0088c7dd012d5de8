//! `produce`: appends to an embedded stream (in-process, no HTTP) from 8
//! threads in batches of 100 events of ~100 bytes, plain against
//! idempotent (a producer id and a sequence per thread), in the same run,
//! and one writer alone: events/s and appends per fsync (what group commit
//! shares). The stream lives in a temporary directory under the current
//! one, so its fsyncs reach the disk the repository is on.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Result;
use weir_connectors::{ProducerBatch, Stream, StreamConfig, StreamStore, batch_hash};
use weir_types::Batch;

use crate::stats::median;

const THREADS: u64 = 8;
const PER_BATCH: u64 = 100;

fn batch_of(first: u64) -> Batch {
    let mut b = Batch::default();
    for i in first..first + PER_BATCH {
        let (key, value) = crate::event(i);
        b.push(Some(key.as_bytes()), value.as_bytes(), i as i64);
    }
    b
}

/// Appends `events` from `threads` writers; the time taken and the group
/// commits written.
fn one_run(events: u64, threads: u64, idempotent: bool) -> Result<(Duration, u64)> {
    let dir = tempfile::Builder::new()
        .prefix("weir-bench-produce")
        .tempdir_in(std::env::current_dir()?)?;
    let store = StreamStore::open(dir.path(), StreamConfig::default())?;
    let stream: Arc<Stream> = store.stream("bench")?;
    let batches = events / PER_BATCH / threads;
    let started = Instant::now();
    let writers: Vec<_> = (0..threads)
        .map(|t| {
            let stream = stream.clone();
            std::thread::spawn(move || -> Result<()> {
                for n in 0..batches {
                    let batch = batch_of((t * batches + n) * PER_BATCH);
                    if idempotent {
                        let producer = ProducerBatch {
                            producer: format!("bench-{t}"),
                            sequence: n,
                            hash: batch_hash(&batch.values),
                        };
                        stream.append_idempotent(&batch, &producer)?;
                    } else {
                        stream.append(&batch)?;
                    }
                }
                Ok(())
            })
        })
        .collect();
    for w in writers {
        w.join()
            .map_err(|_| anyhow::anyhow!("a writer panicked"))??;
    }
    Ok((started.elapsed(), stream.group_commits()))
}

pub(crate) fn run(events: u64, rounds: usize) -> Result<()> {
    let events = events.max(THREADS * PER_BATCH);
    let modes = [
        (THREADS, false, "plain"),
        (THREADS, true, "idempotent"),
        (1, false, "plain-one-writer"),
    ];
    // Rounds outside, modes inside: each mode sees the same disk weather.
    let mut times = vec![Vec::new(); modes.len()];
    let mut groups = vec![0; modes.len()];
    for _ in 0..rounds.max(1) {
        for (m, (threads, idempotent, _)) in modes.iter().enumerate() {
            let (t, g) = one_run(events, *threads, *idempotent)?;
            times[m].push(t);
            groups[m] = g;
        }
    }
    for (m, (threads, _, mode)) in modes.iter().enumerate() {
        let t = median(&times[m]);
        let appends = events / PER_BATCH / threads * threads;
        let written = appends * PER_BATCH;
        crate::report::result(format!(
            "RESULT workload=produce mode={mode} writers={threads} events={written} events_per_sec={:.0} appends_per_fsync={:.2}",
            written as f64 / t.as_secs_f64(),
            appends as f64 / groups[m].max(1) as f64
        ));
    }
    Ok(())
}
