//! `languages`: the `word-count` operator in each guest language against
//! the Rust one, in the same run: component size, compile time (no
//! cache), instantiate time (fresh `Store`, instantiate, `init`), and
//! events/s through the host over batches of 1024 keyed events (10,000
//! keys, state in memory), with the ratio to the Rust guest.

use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use weir_tests::guest_bytes;
use weir_wasm::{HostConfig, WasmHost};

use crate::stats::median;
use crate::{batches, instance, measure};

/// `(language, guest)`: Rust first, the baseline.
const GUESTS: [(&str, &str); 5] = [
    ("rust", "word-count"),
    ("c", "c-word-count"),
    ("go", "go-word-count"),
    ("js", "js-word-count"),
    ("python", "python-word-count"),
];

pub fn run(events: u64, rounds: usize) -> Result<()> {
    // A host without the compile cache, so each load compiles.
    let host = WasmHost::new(HostConfig {
        cache_dir: None,
        ..HostConfig::default()
    })?;
    println!(
        "word-count per guest language: {events} events in batches of 1024 over 10,000 keys, median of {rounds} rounds (each repeats the pass to last 0.5 s at least), one core, state in memory"
    );
    println!(
        "{:<8} {:>10} {:>12} {:>14} {:>12} {:>10}",
        "language", "size KB", "compile ms", "instantiate µs", "events/s", "vs Rust"
    );
    let mut rust_rate = None;
    let mut rust_out = None;
    for (language, guest) in GUESTS {
        let bytes = guest_bytes(guest);
        let start = Instant::now();
        let module = host.load(&bytes)?;
        let compile = start.elapsed();
        let mut inst_times = Vec::new();
        for _ in 0..5 {
            let start = Instant::now();
            drop(instance(&module, "")?);
            inst_times.push(start.elapsed());
        }
        let instantiate: Duration = median(&inst_times);
        let mut op = instance(&module, "")?;
        let mut input = batches(events, 1024);
        let (took, _, out) = measure(rounds, || {
            let mut n = 0;
            for b in input.iter_mut() {
                n += op.process(b, i64::MIN, 0)?.events.len() as u64;
            }
            Ok(n)
        })?;
        match rust_out {
            None => rust_out = Some(out),
            Some(r) if r != out => bail!("{language} emitted {out} events, Rust {r}"),
            _ => {}
        }
        let rate = events as f64 / took.as_secs_f64();
        let base = *rust_rate.get_or_insert(rate);
        println!(
            "{:<8} {:>10.0} {:>12.1} {:>14.0} {:>12.0} {:>9.1}%",
            language,
            bytes.len() as f64 / 1024.0,
            compile.as_secs_f64() * 1e3,
            instantiate.as_secs_f64() * 1e6,
            rate,
            rate / base * 100.0
        );
        crate::report::result(format!(
            "RESULT workload=languages language={language} size_bytes={} compile_ms={:.1} instantiate_us={:.0} events_per_sec={rate:.0} ratio_to_rust={:.3}",
            bytes.len(),
            compile.as_secs_f64() * 1e3,
            instantiate.as_secs_f64() * 1e6,
            rate / base
        ));
    }
    Ok(())
}
