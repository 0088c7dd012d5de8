//! `postgres`: W2 (keyed-sum per user over 10,000 users) with its totals
//! upserted into a PostgreSQL table through the exactly-once PostgreSQL
//! sink, at checkpoint intervals of 200 ms and 1 s: row updates/s end to
//! end (each event updates its user's row; the sink folds a checkpoint's
//! updates to one upsert per user).
//! The server is a throwaway cluster of Debian's `postgresql`
//! (`weir_fixtures::postgres`), fsync off.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use weir_connectors::{PgSink, PgSinkConfig};
use weir_engine::{Bindings, ExecOptions, Job, Sink, Source, iter_source};
use weir_fixtures::postgres::PgServer;
use weir_topology::parse_topology;

use crate::stats::median;
use crate::workloads::generate;

const W2_PG: &str = "name: w2pg\nsources: [{ name: in, stream: in }]\noperators:\n  - { name: agg, module: keyed-sum, input: in, key_by: { field: user } }\nsinks:\n  - name: out\n    input: agg\n    postgres:\n      table: totals\n      key_columns: [user_id]\n      columns: { user_id: key, events: { from: $.count, type: bigint }, total: { from: $.sum, type: double precision } }\n      create_table: true\n";

/// Runs W2 into PostgreSQL at each interval, `rounds` times each.
pub fn run(n: u64, rounds: usize) -> Result<()> {
    let modules = crate::checkpoints::modules()?;
    let pg = PgServer::start_new();
    let doc = parse_topology(W2_PG)?;
    let Some(settings) = doc.sinks[0].postgres.clone() else {
        bail!("the W2 document lost its postgres sink");
    };
    println!(
        "W2 into PostgreSQL (upsert, 10,000 keys) over {n} events; warm-up + median of {rounds} rounds per checkpoint interval"
    );
    for interval in [Duration::from_millis(200), Duration::from_secs(1)] {
        let mut events_per_sec = Vec::new();
        for round in 0..=rounds {
            pg.execute("DROP TABLE IF EXISTS totals, weir_sink_progress");
            let sink_config = PgSinkConfig::from_doc("w2pg", "out", &settings, Some(&pg.url()))?;
            let sink = PgSink::new(sink_config, None)?;
            let dir = tempfile::tempdir()?;
            let state = crate::checkpoints::checkpointed_state(dir.path(), Some(interval))?;
            let bindings = Bindings {
                sources: HashMap::from([(
                    "in".to_string(),
                    iter_source((0..n).map(|i| Ok(generate(i)))) as Box<dyn Source>,
                )]),
                sinks: HashMap::from([("out".to_string(), Box::new(sink) as Box<dyn Sink>)]),
                ..Bindings::default()
            };
            let start = Instant::now();
            let report = Job::start(
                &doc,
                &modules,
                bindings,
                ExecOptions::default(),
                Some(state),
            )?
            .wait()?;
            let took = start.elapsed();
            let counted: u64 = pg.query("SELECT sum(events) FROM totals")[0][0]
                .parse()
                .unwrap_or(0);
            if counted != n {
                bail!("the totals table counts {counted} events of {n}");
            }
            if round > 0 {
                events_per_sec.push(n as f64 / took.as_secs_f64());
                println!(
                    "  {} ms, round {round}: {:.0} events/s, {} checkpoints, {:.1} s",
                    interval.as_millis(),
                    n as f64 / took.as_secs_f64(),
                    report.checkpoints.len(),
                    took.as_secs_f64()
                );
            }
        }
        let rows = median(&events_per_sec);
        println!(
            "checkpoint every {} ms: {rows:.0} row updates/s into PostgreSQL",
            interval.as_millis()
        );
        crate::report::result(format!(
            "RESULT workload=postgres interval_ms={} events={n} rows_per_sec={rows:.0}",
            interval.as_millis()
        ));
    }
    Ok(())
}
