//! `state-store`: what redb does with rows shaped like Weir's keyed state,
//! without the engine: the figures the state backend's write and read
//! paths are designed from (`docs/benchmarks.md`, "State store").
//!
//! Rows are those of the `recovery` workload's value state (`u<i>` keys
//! spread over 128 key groups, row keys of `weir-state`'s layout, 20-byte
//! values), `--keys` of them, written in row order in one durable commit
//! (two-phase, as checkpoints are), then read back. Each case runs in a
//! fresh database; `--rounds` repeats the set.

use std::time::Instant;

use anyhow::{Result, anyhow};
use redb::{Database, Durability, ReadableDatabase, TableDefinition};
use weir_types::key_group_of;

use crate::stats::median;

const ROWS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("rows");

/// The `i`th row's key: scope `w2`/`agg`, key group, value kind, name
/// `sum`, key `u<i>` (the layout of `weir-state`'s `keys.rs`).
fn row_key(i: u64) -> Vec<u8> {
    let key = format!("u{i}");
    let group = key_group_of(key.as_bytes(), 128).0;
    let mut out = Vec::with_capacity(32);
    for part in ["w2", "agg"] {
        out.extend_from_slice(&(part.len() as u16).to_be_bytes());
        out.extend_from_slice(part.as_bytes());
    }
    out.extend_from_slice(&group.to_be_bytes());
    out.push(0);
    out.extend_from_slice(&3u16.to_be_bytes());
    out.extend_from_slice(b"sum");
    out.extend_from_slice(&(key.len() as u32).to_be_bytes());
    out.extend_from_slice(key.as_bytes());
    out
}

fn value(i: u64, len: usize) -> Vec<u8> {
    let mut v = format!("{{\"count\":1,\"sum\":{}}}", i % 101).into_bytes();
    v.resize(len, b' ');
    v
}

/// How one case writes its rows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Write {
    /// `Table::insert` per row.
    Insert,
    /// One `CursorMut` run of `insert_before` (redb buffers the run).
    Cursor,
}

struct Case {
    name: &'static str,
    write: Write,
    value_len: usize,
    tables: usize,
    durability: Durability,
    /// Write every row a second time (overwrites) and time that commit.
    overwrite: bool,
}

/// Writes `rows` (sorted) in one commit; the time to fill the tables and
/// the commit's time, seconds.
fn write_rows(
    db: &Database,
    case: &Case,
    rows: &[(Vec<u8>, Vec<u8>)],
    defs: &[TableDefinition<&[u8], &[u8]>],
) -> Result<(f64, f64)> {
    let started = Instant::now();
    let mut txn = db.begin_write()?;
    txn.set_durability(case.durability)?;
    txn.set_two_phase_commit(true);
    let per_table = rows.len().div_ceil(defs.len());
    for (def, chunk) in defs.iter().zip(rows.chunks(per_table)) {
        let mut table = txn.open_table(*def)?;
        match case.write {
            Write::Insert => {
                for (k, v) in chunk {
                    table.insert(k.as_slice(), v.as_slice())?;
                }
            }
            Write::Cursor => {
                let first = chunk.first().map(|(k, _)| k.as_slice()).unwrap_or(&[]);
                let mut cursor = table.lower_bound_mut(std::ops::Bound::Included(first))?;
                for (k, v) in chunk {
                    let equal = cursor.peek_next()?.is_some_and(|(n, _)| n.value() == k);
                    if equal {
                        cursor.remove_next()?;
                    }
                    cursor
                        .insert_before(k.as_slice(), v.as_slice())
                        .map_err(|e| anyhow!("cursor insert: {e}"))?;
                }
                cursor.close()?;
            }
        }
    }
    let filled = started.elapsed().as_secs_f64();
    txn.commit()?;
    Ok((filled, started.elapsed().as_secs_f64() - filled))
}

/// Runs every case over `keys` rows, `rounds` times; prints medians.
pub fn run(keys: u64, rounds: usize) -> Result<()> {
    let cases = [
        Case {
            name: "insert",
            write: Write::Insert,
            value_len: 20,
            tables: 1,
            durability: Durability::Immediate,
            overwrite: false,
        },
        Case {
            name: "insert-no-fsync",
            write: Write::Insert,
            value_len: 20,
            tables: 1,
            durability: Durability::None,
            overwrite: false,
        },
        Case {
            name: "cursor",
            write: Write::Cursor,
            value_len: 20,
            tables: 1,
            durability: Durability::Immediate,
            overwrite: false,
        },
        Case {
            name: "insert-100b-values",
            write: Write::Insert,
            value_len: 100,
            tables: 1,
            durability: Durability::Immediate,
            overwrite: false,
        },
        Case {
            name: "cursor-100b-values",
            write: Write::Cursor,
            value_len: 100,
            tables: 1,
            durability: Durability::Immediate,
            overwrite: false,
        },
        Case {
            name: "insert-8-tables",
            write: Write::Insert,
            value_len: 20,
            tables: 8,
            durability: Durability::Immediate,
            overwrite: false,
        },
        Case {
            name: "insert-overwrite",
            write: Write::Insert,
            value_len: 20,
            tables: 1,
            durability: Durability::Immediate,
            overwrite: true,
        },
        Case {
            name: "cursor-overwrite",
            write: Write::Cursor,
            value_len: 20,
            tables: 1,
            durability: Durability::Immediate,
            overwrite: true,
        },
    ];
    let defs_names: Vec<String> = (0..8).map(|t| format!("rows_{t}")).collect();
    let mut keys_sorted: Vec<Vec<u8>> = (0..keys).map(row_key).collect();
    keys_sorted.sort();
    let mut figures: Vec<(&str, Vec<f64>, Vec<f64>, u64)> =
        cases.iter().map(|c| (c.name, vec![], vec![], 0)).collect();
    let mut reads: [Vec<f64>; 3] = Default::default();
    for _ in 0..rounds {
        for (case, fig) in cases.iter().zip(&mut figures) {
            let rows: Vec<(Vec<u8>, Vec<u8>)> = keys_sorted
                .iter()
                .enumerate()
                .map(|(i, k)| (k.clone(), value(i as u64, case.value_len)))
                .collect();
            let dir = tempfile::tempdir()?;
            let path = dir.path().join("s.redb");
            let db = Database::builder().set_cache_size(64 << 20).create(&path)?;
            let defs: Vec<TableDefinition<&[u8], &[u8]>> = if case.tables == 1 {
                vec![ROWS]
            } else {
                defs_names
                    .iter()
                    .take(case.tables)
                    .map(|n| TableDefinition::new(n))
                    .collect()
            };
            let (mut fill, mut commit) = write_rows(&db, case, &rows, &defs)?;
            if case.overwrite {
                (fill, commit) = write_rows(&db, case, &rows, &defs)?;
            }
            fig.1.push(fill);
            fig.2.push(commit);
            fig.3 = std::fs::metadata(&path)?.len();
            if case.name == "insert" {
                drop(db);
                let db = Database::builder().set_cache_size(64 << 20).open(&path)?;
                let txn = db.begin_read()?;
                let table = txn.open_table(ROWS)?;
                // A full range scan, copying each row out.
                let t = Instant::now();
                let mut n = 0u64;
                for row in table.range::<&[u8]>(..)? {
                    let (k, v) = row?;
                    n += (k.value().len() + v.value().to_vec().len()) as u64;
                }
                std::hint::black_box(n);
                reads[0].push(t.elapsed().as_secs_f64());
                // Point gets in row order, then in key order (`u0, u1, …`:
                // the order events bring them, scattered over the file).
                let t = Instant::now();
                for k in &keys_sorted {
                    std::hint::black_box(table.get(k.as_slice())?.map(|v| v.value().len()));
                }
                reads[1].push(t.elapsed().as_secs_f64());
                let t = Instant::now();
                for i in 0..keys {
                    let k = row_key(i);
                    std::hint::black_box(table.get(k.as_slice())?.map(|v| v.value().len()));
                }
                reads[2].push(t.elapsed().as_secs_f64());
            }
        }
    }
    println!("state-store: {keys} rows of ~30-byte keys in one commit (median of {rounds}):");
    for (name, fill, commit, size) in &figures {
        let (fill, commit) = (median(fill), median(commit));
        println!(
            "  {name:<20} fill {:>6.0} ms  commit {:>6.0} ms  total {:>6.0} ms  file {:>4} MiB",
            fill * 1e3,
            commit * 1e3,
            (fill + commit) * 1e3,
            *size >> 20
        );
        crate::report::result(format!(
            "RESULT workload=state-store case={name} rows={keys} fill_ms={:.0} commit_ms={:.0} file_bytes={size}",
            fill * 1e3,
            commit * 1e3
        ));
    }
    let [scan, sorted, scattered] = reads.map(|r| median(&r));
    println!(
        "  reads: range scan {:.0} ms, point gets in row order {:.0} ms, in event order {:.0} ms",
        scan * 1e3,
        sorted * 1e3,
        scattered * 1e3
    );
    crate::report::result(format!(
        "RESULT workload=state-store case=reads rows={keys} scan_ms={:.0} gets_row_order_ms={:.0} gets_event_order_ms={:.0}",
        scan * 1e3,
        sorted * 1e3,
        scattered * 1e3
    ));
    Ok(())
}
