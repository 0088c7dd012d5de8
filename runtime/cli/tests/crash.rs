//! Crash test: the real `weir` binary runs a stateful topology with
//! checkpoints every 200 ms over 250,000 input events and is killed with
//! SIGKILL at 12 moments (a fixed seed picks them: some at a random time,
//! some right as a checkpoint starts committing), restarted each time. At
//! the end each sink's output must equal the output of a run that was
//! never killed: nothing lost, nothing duplicated.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{Receiver, channel};
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};

const LINES: usize = 150_000;
const TRANSACTIONS: usize = 100_000;
const KILLS: usize = 12;

const TOPOLOGY: &str = "\
name: crash
checkpoint: { interval_ms: 200 }
sources:
  - { name: lines, file: lines.jsonl }
  - { name: txns, file: txns.jsonl, watermark: { max_out_of_orderness_ms: 0 } }
operators:
  - { name: split, module: split-words, input: lines }
  - { name: count, module: word-count, input: split, key_by: key, parallelism: 2 }
  - { name: fraud, module: fraud-detector, input: txns, key_by: key, parallelism: 2,
      config: { max_count: 2, min_amount: 50, window_ms: 1000 } }
sinks:
  - { name: counts, file: counts.jsonl, input: count }
  - { name: alerts, file: alerts.jsonl, input: fraud.alerts }
";

/// Writes the inputs and the topology into `dir`: lines of 1–6 words from
/// 2,000, and card transactions in time order.
fn write_inputs(dir: &Path) {
    let mut rng = StdRng::seed_from_u64(7);
    let mut lines =
        std::io::BufWriter::new(std::fs::File::create(dir.join("lines.jsonl")).unwrap());
    for i in 0..LINES {
        let n = rng.random_range(1..=6);
        let words: Vec<String> = (0..n)
            .map(|_| format!("w{}", rng.random_range(0..2000)))
            .collect();
        writeln!(
            lines,
            "{{\"value\":\"{}\",\"timestamp\":{}}}",
            words.join(" "),
            1_700_000_000_000i64 + i as i64
        )
        .unwrap();
    }
    lines.flush().unwrap();
    let mut txns = std::io::BufWriter::new(std::fs::File::create(dir.join("txns.jsonl")).unwrap());
    for i in 0..TRANSACTIONS {
        writeln!(
            txns,
            "{{\"key\":\"card{}\",\"value\":{{\"amount\":{}}},\"timestamp\":{}}}",
            rng.random_range(0..100),
            rng.random_range(0..100),
            1_700_000_000_000i64 + (i as i64) * 3
        )
        .unwrap();
    }
    txns.flush().unwrap();
    std::fs::write(dir.join("crash.yaml"), TOPOLOGY).unwrap();
}

fn start(dir: &Path, data: &Path, fresh: bool) -> Child {
    let cache = std::env::temp_dir().join("weir-cli-test-cache");
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_weir"));
    cmd.args(["run", "--topology"])
        .arg(dir.join("crash.yaml"))
        .arg("--module-dir")
        .arg(weir_fixtures::guest_dir())
        .arg("--data-dir")
        .arg(data)
        .arg("--cache-dir")
        .arg(cache)
        .env("WEIR_LOG", "weir_engine=info,weir_engine::checkpoint=debug")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    if fresh {
        cmd.arg("--fresh");
    }
    cmd.spawn().unwrap()
}

/// The lines of the child's stderr, as they come.
fn log_lines(child: &mut Child) -> Receiver<String> {
    let (tx, rx) = channel();
    let stderr = child.stderr.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

fn sorted_lines(path: PathBuf) -> Vec<String> {
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    let mut lines: Vec<String> = text.lines().map(str::to_string).collect();
    lines.sort();
    lines
}

/// The checkpoint id a log line names after `what`, if it is such a line.
fn checkpoint_of(line: &str, what: &str) -> Option<u64> {
    if !line.contains(what) {
        return None;
    }
    let at = line.find("checkpoint=")? + "checkpoint=".len();
    line[at..]
        .split(|c: char| !c.is_ascii_digit())
        .next()?
        .parse()
        .ok()
}

#[test]
fn killed_runs_resume_with_exactly_once_output() {
    let dir = tempfile::tempdir().unwrap();
    write_inputs(dir.path());

    // The oracle: one run, never killed.
    let oracle_dir = dir.path().join("oracle");
    std::fs::create_dir_all(&oracle_dir).unwrap();
    for f in ["lines.jsonl", "txns.jsonl", "crash.yaml"] {
        std::fs::copy(dir.path().join(f), oracle_dir.join(f)).unwrap();
    }
    let started = Instant::now();
    let mut oracle = start(&oracle_dir, &oracle_dir.join("data"), true);
    let logs = log_lines(&mut oracle);
    let status = oracle.wait().unwrap();
    let log: Vec<String> = logs.iter().collect();
    assert!(
        status.success(),
        "the uninterrupted run failed:\n{}",
        log.join("\n")
    );
    let full_run = started.elapsed();
    let expected_counts = sorted_lines(oracle_dir.join("counts.jsonl"));
    let expected_alerts = sorted_lines(oracle_dir.join("alerts.jsonl"));
    assert!(expected_counts.len() > LINES, "{}", expected_counts.len());
    assert!(!expected_alerts.is_empty());

    // The same, killed KILLS times.
    let data = dir.path().join("data");
    let mut rng = StdRng::seed_from_u64(42);
    let mut during_commit = 0;
    let mut restored_from = Vec::new();
    for kill in 0..KILLS {
        let mut child = start(dir.path(), &data, kill == 0);
        let logs = log_lines(&mut child);
        // Half of the kills at a random moment, half as soon as a
        // checkpoint starts committing.
        let at_commit = kill % 2 == 1;
        let random = Duration::from_millis(
            rng.random_range(300..=full_run.as_millis().clamp(400, 4000) as u64),
        );
        // A kill at a commit waits for one however slow the machine is
        // (the run restores, so a commit always comes before its end).
        let deadline = Instant::now()
            + if at_commit {
                Duration::from_secs(60)
            } else {
                random
            };
        let mut committing = None;
        loop {
            match logs.recv_timeout(Duration::from_millis(5)) {
                Ok(line) => {
                    if let Some(id) = checkpoint_of(&line, "restoring from checkpoint") {
                        restored_from.push(id);
                    }
                    if let Some(id) = checkpoint_of(&line, "checkpoint committing") {
                        committing = Some(id);
                        if at_commit {
                            break;
                        }
                    }
                    if checkpoint_of(&line, "checkpoint complete").is_some() {
                        committing = None;
                    }
                }
                Err(_) if Instant::now() >= deadline => break,
                Err(_) => {}
            }
            if child.try_wait().unwrap().is_some() {
                break;
            }
        }
        child.kill().unwrap();
        child.wait().unwrap();
        if committing.is_some() {
            during_commit += 1;
        }
    }
    let mut last = start(dir.path(), &data, false);
    let logs = log_lines(&mut last);
    let status = last.wait().unwrap();
    let log: Vec<String> = logs.try_iter().collect();
    assert!(status.success(), "the last run failed:\n{}", log.join("\n"));

    eprintln!(
        "full run {full_run:?}; {KILLS} kills, {during_commit} while a checkpoint was committing; restored from {restored_from:?}"
    );
    assert!(
        during_commit >= 5,
        "only {during_commit} kills hit a commit"
    );
    assert!(restored_from.len() >= KILLS / 2, "{restored_from:?}");
    let counts = sorted_lines(dir.path().join("counts.jsonl"));
    let alerts = sorted_lines(dir.path().join("alerts.jsonl"));
    assert_eq!(
        counts.len(),
        expected_counts.len(),
        "word counts: lost or duplicated output"
    );
    assert!(
        counts == expected_counts,
        "word counts differ from the uninterrupted run"
    );
    assert_eq!(
        alerts.len(),
        expected_alerts.len(),
        "alerts: lost or duplicated output"
    );
    assert!(
        alerts == expected_alerts,
        "alerts differ from the uninterrupted run"
    );
}
