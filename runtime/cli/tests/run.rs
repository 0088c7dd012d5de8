//! `weir run` end to end: the real binary, real guests, files and pipes.

use std::io::Write;
use std::process::{Command, Output, Stdio};

use weir_fixtures::{guest_dir, guest_path, repo_root, sample_lines, word_counts};

fn weir(args: &[&str], stdin: &str) -> Output {
    // Shared with the other tests that load guests: a Python or
    // JavaScript component takes seconds to compile.
    let cache = repo_root().join("target/test-cache");
    let mut child = Command::new(env!("CARGO_BIN_EXE_weir"))
        .args(args)
        .arg("--cache-dir")
        .arg(&cache)
        .env_remove("WEIR_LOG")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

fn stdout(out: &Output) -> String {
    String::from_utf8(out.stdout.clone()).unwrap()
}

fn stderr(out: &Output) -> String {
    String::from_utf8(out.stderr.clone()).unwrap()
}

/// `out` ended with exit code `code` and its stdout says `says`.
fn exits_saying(out: &Output, code: i32, says: &str) {
    assert_eq!(
        out.status.code(),
        Some(code),
        "{}{}",
        stdout(out),
        stderr(out)
    );
    assert!(stdout(out).contains(says), "{}", stdout(out));
}

fn module(name: &str) -> String {
    guest_path(name).display().to_string()
}

#[test]
fn split_then_count_over_the_sample_file() {
    let sample = repo_root().join("guest-examples/data/lines.jsonl");
    let dir = tempfile::tempdir().unwrap();
    let words = dir.path().join("words.jsonl");
    let out = weir(
        &[
            "run",
            "--module",
            &module("split-words"),
            "--input",
            sample.to_str().unwrap(),
            "--output",
            words.to_str().unwrap(),
        ],
        "",
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let words_text = std::fs::read_to_string(&words).unwrap();
    assert!(words_text.starts_with(
        "{\"key\":\"the\",\"value\":\"the\",\"timestamp\":1700000000000}\n{\"key\":\"river\",\"value\":\"river\",\"timestamp\":1700000000000}\n"
    ));
    let out = weir(&["run", "--module", &module("word-count")], &words_text);
    assert!(out.status.success(), "{}", stderr(&out));
    let counts = stdout(&out);
    assert_eq!(counts.lines().count(), words_text.lines().count());
    // The last count of "the" (written "The" too) is its count in the sample.
    let the = word_counts(&sample_lines())["the"];
    let last_the = counts
        .lines()
        .rfind(|l| l.starts_with("{\"key\":\"the\","))
        .unwrap();
    assert!(last_the.contains(&format!("\"count\":{the}")), "{last_the}");
}

#[test]
fn config_entries_reach_the_operator() {
    let input = "{\"value\":{\"amount\":60,\"user\":\"ann\"}}\n{\"value\":{\"amount\":10,\"user\":\"bob\"}}\n";
    let out = weir(
        &[
            "run",
            "--module",
            &module("filter"),
            "--config",
            "field=amount",
            "--config",
            "op=gt",
            "--config",
            "value=50",
        ],
        input,
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let filtered = stdout(&out);
    assert_eq!(filtered.lines().count(), 1);
    let out = weir(
        &[
            "run",
            "--module",
            &module("map"),
            "--config-json",
            "{\"uppercase\":\"user\"}",
        ],
        &filtered,
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).starts_with("{\"value\":{\"amount\":60,\"user\":\"ANN\"},\"timestamp\":"));
}

#[test]
fn bad_inputs_get_clear_errors_and_exit_codes() {
    // A module that does not exist.
    let out = weir(&["run", "--module", "/nonexistent.wasm"], "");
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("cannot read module /nonexistent.wasm"),
        "{}",
        stderr(&out)
    );
    // A file that is not Wasm.
    let toml = repo_root().join("Cargo.toml");
    let out = weir(&["run", "--module", toml.to_str().unwrap()], "");
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("not a WebAssembly binary"),
        "{}",
        stderr(&out)
    );
    // A config the operator refuses.
    let out = weir(
        &[
            "run",
            "--module",
            &module("filter"),
            "--config",
            "op=between",
        ],
        "",
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("rejected its config"),
        "{}",
        stderr(&out)
    );
    // A line that is not an event: events before it are processed, the
    // error names the line.
    let out = weir(
        &["run", "--module", &module("identity")],
        "{\"value\":1}\nnot json\n{\"value\":2}\n",
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("-:2: not an event object"),
        "{}",
        stderr(&out)
    );
    assert_eq!(stdout(&out).lines().count(), 1);
    // An event the operator fails on: fail stops, skip reports and goes on.
    let input = "{\"key\":\"a\",\"value\":1}\n{\"key\":\"a\",\"value\":\"poison\"}\n{\"key\":\"b\",\"value\":2}\n";
    let out = weir(&["run", "--module", &module("poison-trap")], input);
    assert_eq!(out.status.code(), Some(1));
    // The guest's panic first, demangled frames of its own code, none of
    // std's and no hint to set RUST_BACKTRACE inside a sandbox.
    let err = stderr(&out);
    assert!(
        err.contains("trapped: panicked at poison-trap/src/lib.rs:"),
        "{err}"
    );
    assert!(
        err.contains("operator `poison_trap` trapped: panicked at"),
        "{err}"
    );
    assert!(err.contains(": poison event (wasm"), "{err}");
    assert!(
        !err.contains("RUST_BACKTRACE") && !err.contains("_RNv"),
        "{err}"
    );
    let out = weir(
        &[
            "run",
            "--module",
            &module("poison-trap"),
            "--on-error",
            "skip",
        ],
        input,
    );
    assert_eq!(out.status.code(), Some(3));
    assert_eq!(stdout(&out).lines().count(), 2);
    let err = stderr(&out);
    assert!(err.contains("skipped event 1:"), "{err}");
    // Each skipped event is reported once, not also as a log line.
    assert_eq!(err.matches("poison event").count(), 1, "{err}");
    // What the operator logs at info shows without WEIR_LOG.
    let out = weir(
        &[
            "run",
            "--module",
            &module("poison-trap"),
            "--on-error",
            "skip",
        ],
        "{\"key\":\"a\",\"value\":\"bad\"}\n",
    );
    let err = stderr(&out);
    assert!(err.contains("refusing a bad event"), "{err}");
    // A malformed --config.
    let out = weir(
        &["run", "--module", &module("filter"), "--config", "novalue"],
        "",
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("is not KEY=VALUE"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn a_topology_runs_over_files_with_modules_found_by_name() {
    let root = repo_root();
    let guests = weir_fixtures::guest_dir();
    let dir = tempfile::tempdir().unwrap();
    let out_file = dir.path().join("counts.jsonl");
    let out = weir(
        &[
            "run",
            "--topology",
            root.join("guest-examples/topologies/word-count.yaml")
                .to_str()
                .unwrap(),
            "--module-dir",
            guests.to_str().unwrap(),
            "--input",
            &format!(
                "lines={}",
                root.join("guest-examples/data/lines.jsonl").display()
            ),
            "--output",
            &format!("out={}", out_file.display()),
        ],
        "",
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let counts = std::fs::read_to_string(&out_file).unwrap();
    // One count per word of the sample, and the final count of "the".
    let oracle = word_counts(&sample_lines());
    assert_eq!(counts.lines().count() as u64, oracle.values().sum::<u64>());
    assert!(
        counts.contains(&format!("{{\"word\":\"the\",\"count\":{}}}", oracle["the"])),
        "{counts}"
    );
}

#[test]
fn a_topology_with_a_dead_letter_file_and_bad_topologies() {
    let dir = tempfile::tempdir().unwrap();
    let guests = weir_fixtures::guest_dir();
    let topo = dir.path().join("t.yaml");
    let events = dir.path().join("in.jsonl");
    let dead = dir.path().join("dead.jsonl");
    std::fs::write(
        &topo,
        format!(
            "name: t\nsources: [{{ name: in, file: in.jsonl }}]\noperators:\n  - {{ name: risky, module: {}, input: in, key_by: key, on_error: dead-letter }}\nsinks: [{{ name: out, file: out.jsonl, input: risky }}]\n",
            guests.join("poison_trap.wasm").display()
        ),
    )
    .unwrap();
    std::fs::write(
        &events,
        "{\"key\":\"a\",\"value\":1,\"timestamp\":1}\n{\"key\":\"a\",\"value\":\"poison\",\"timestamp\":2}\n{\"key\":\"b\",\"value\":3,\"timestamp\":3}\n",
    )
    .unwrap();
    let out = weir(
        &[
            "run",
            "--topology",
            topo.to_str().unwrap(),
            "--dead-letter",
            dead.to_str().unwrap(),
        ],
        "",
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let written = std::fs::read_to_string(dir.path().join("out.jsonl")).unwrap();
    assert_eq!(written.lines().count(), 2);
    let letters = std::fs::read_to_string(&dead).unwrap();
    assert_eq!(letters.lines().count(), 1);
    assert!(letters.contains("\"value\":\"poison\""), "{letters}");
    assert!(letters.contains("\"weir.operator\":\"risky\""), "{letters}");
    assert!(letters.contains("poison event"), "{letters}");

    // Without a dead-letter file, dead letters go to the topology's
    // dead-letter stream in the data directory.
    let data = dir.path().join("data");
    let out = weir(
        &[
            "run",
            "--topology",
            topo.to_str().unwrap(),
            "--data-dir",
            data.to_str().unwrap(),
        ],
        "",
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let segment = data.join("streams/t-dead-letter/00000000000000000000.log");
    let bytes = std::fs::read(&segment).unwrap();
    assert!(
        bytes.windows(12).any(|w| w == b"poison event"),
        "no dead letter in {}",
        segment.display()
    );

    // Every validation problem is listed, exit code 2, nothing runs.
    std::fs::write(
        &topo,
        "name: t\nsources: [{ name: in, file: in.jsonl }]\noperators: [{ name: o, module: m.wasm, input: [in, o], parallelism: 0 }]\nsinks: [{ name: s, file: out.jsonl, input: zz }]\n",
    )
    .unwrap();
    let out = weir(&["run", "--topology", topo.to_str().unwrap()], "");
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    for expected in [
        "operators[0].parallelism: must be between 1 and",
        "sinks[0].input: unknown input \"zz\"",
        "cycle: o → o",
        "3 error(s); nothing was run",
    ] {
        assert!(err.contains(expected), "missing {expected:?} in {err}");
    }
    // Every module that cannot be found is named (where it looked, or the
    // near name of a module there), and nothing runs: exit 2.
    std::fs::write(
        &topo,
        "name: t\nsources: [{ name: in, file: in.jsonl }]\noperators:\n  - { name: o, module: nowhere, input: in }\n  - { name: p, module: split-wrods, input: o }\nsinks: [{ name: s, file: out.jsonl, input: p }]\n",
    )
    .unwrap();
    let guests = guest_path("split-words");
    let guests = guests.parent().unwrap().to_str().unwrap();
    let out = weir(
        &[
            "run",
            "--topology",
            topo.to_str().unwrap(),
            "--module-dir",
            guests,
        ],
        "",
    );
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    let err = stderr(&out);
    for expected in [
        "operator `o`: module \"nowhere\" not found",
        "operator `p`: module \"split-wrods\" not found: did you mean \"split-words\"",
        "2 module problem(s); nothing was run",
    ] {
        assert!(err.contains(expected), "missing {expected:?} in {err}");
    }
}

#[test]
fn topologies_share_embedded_streams_in_the_data_directory() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let guests = weir_fixtures::guest_dir();
    let words = dir.path().join("words.yaml");
    let counts = dir.path().join("counts.yaml");
    std::fs::write(
        &words,
        format!(
            "name: words\nsources: [{{ name: lines, file: {} }}]\noperators: [{{ name: split, module: split-words, input: lines }}]\nsinks: [{{ name: out, stream: words, input: split }}]\n",
            repo_root().join("guest-examples/data/lines.jsonl").display()
        ),
    )
    .unwrap();
    std::fs::write(
        &counts,
        "name: counts\nsources: [{ name: words, stream: words }]\noperators: [{ name: count, module: word-count, input: words, key_by: key }]\nsinks: [{ name: out, file: counts.jsonl, input: count }]\n",
    )
    .unwrap();
    let run = |topology: &std::path::Path| {
        let out = weir(
            &[
                "run",
                "--topology",
                topology.to_str().unwrap(),
                "--module-dir",
                guests.to_str().unwrap(),
                "--data-dir",
                data.to_str().unwrap(),
            ],
            "",
        );
        assert!(out.status.success(), "{}", stderr(&out));
    };
    // Twice into the stream: it is append-only and keeps both runs.
    run(&words);
    run(&words);
    assert!(data.join("streams/words").is_dir());
    run(&counts);
    let text = std::fs::read_to_string(dir.path().join("counts.jsonl")).unwrap();
    assert_eq!(text.lines().count(), 2 * 88);
    assert!(text.contains("{\"word\":\"the\",\"count\":24}"), "{text}");
}

#[test]
fn keep_state_continues_counts_across_runs() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let guests = weir_fixtures::guest_dir();
    let root = repo_root();
    let run = |out: &std::path::Path| {
        let result = weir(
            &[
                "run",
                "--topology",
                root.join("guest-examples/topologies/word-count.yaml")
                    .to_str()
                    .unwrap(),
                "--module-dir",
                guests.to_str().unwrap(),
                "--input",
                &format!(
                    "lines={}",
                    root.join("guest-examples/data/lines.jsonl").display()
                ),
                "--output",
                &format!("out={}", out.display()),
                "--data-dir",
                data.to_str().unwrap(),
                "--keep-state",
            ],
            "",
        );
        assert!(result.status.success(), "{}", stderr(&result));
        std::fs::read_to_string(out).unwrap()
    };
    let the = word_counts(&sample_lines())["the"];
    let count_of_the = |n: u64| format!("{{\"word\":\"the\",\"count\":{n}}}");
    let first = run(&dir.path().join("first.jsonl"));
    assert!(first.contains(&count_of_the(the)));
    assert!(data.join("topologies/word-count/state.redb").exists());
    // The kept state goes on counting from where the first run ended.
    let second = run(&dir.path().join("second.jsonl"));
    assert!(second.contains(&count_of_the(2 * the)), "{second}");
    assert!(!second.contains(&count_of_the(the)));
}

#[test]
fn a_damaged_checkpoint_record_falls_back_to_the_one_before() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let input = dir.path().join("lines.jsonl");
    let text: String = (0..20_000)
        .map(|i| {
            format!(
                "{{\"value\":\"w{} w{} w{}\",\"timestamp\":{i}}}\n",
                i % 97,
                i % 13,
                i % 7
            )
        })
        .collect();
    std::fs::write(&input, text).unwrap();
    let out = dir.path().join("counts.jsonl");
    let run = || {
        weir(
            &[
                "run",
                "--topology",
                repo_root()
                    .join("guest-examples/topologies/word-count.yaml")
                    .to_str()
                    .unwrap(),
                "--module-dir",
                weir_fixtures::guest_dir().to_str().unwrap(),
                "--input",
                &format!("lines={}", input.display()),
                "--output",
                &format!("out={}", out.display()),
                "--data-dir",
                data.to_str().unwrap(),
                "--checkpoint-interval-ms",
                "20",
            ],
            "",
        )
    };
    let first = run();
    assert!(first.status.success(), "{}", stderr(&first));
    let expected = std::fs::read_to_string(&out).unwrap();
    assert_eq!(expected.lines().count(), 60_000);

    // Overwrite the newest checkpoint record with garbage.
    let db_path = data.join("topologies/word-count/state.redb");
    let newest = {
        let db = redb::Database::open(&db_path).unwrap();
        let table: redb::TableDefinition<u64, &[u8]> = redb::TableDefinition::new("checkpoints_v1");
        let txn = db.begin_write().unwrap();
        let newest = {
            let mut records = txn.open_table(table).unwrap();
            let ids: Vec<u64> = redb::ReadableTable::iter(&records)
                .unwrap()
                .map(|r| r.unwrap().0.value())
                .collect();
            assert!(ids.len() >= 2, "only checkpoints {ids:?}");
            let newest = *ids.last().unwrap();
            records.insert(newest, b"garbage".as_slice()).unwrap();
            newest
        };
        txn.commit().unwrap();
        newest
    };
    let again = run();
    let log = stderr(&again);
    assert!(again.status.success(), "{log}");
    assert!(
        log.contains("checkpoint record is damaged")
            && log.contains(&format!("checkpoint={newest}")),
        "{log}"
    );
    let mut got: Vec<&str> = std::fs::read_to_string(&out)
        .unwrap()
        .leak()
        .lines()
        .collect();
    let mut want: Vec<&str> = expected.lines().collect();
    got.sort();
    want.sort();
    assert!(got == want, "output after the fallback differs");
}

/// `split → count` where `count` drops late events: what a resumed run
/// would silently lose if it restored the end of input's watermark.
const DROP_LATE_TOPOLOGY: &str = "name: grow
sources:
  - { name: lines, stream: lines }
operators:
  - { name: split, module: split-words, input: lines }
  - { name: count, module: word-count, input: split, key_by: key, on_late: drop }
sinks:
  - { name: out, stream: counts, input: count }
";

/// Lines `from..to` with timestamps that grow with the line number.
fn growing_lines(from: u32, to: u32) -> String {
    (from..to)
        .map(|i| {
            format!(
                "{{\"value\":\"w{} w{}\",\"timestamp\":{}}}\n",
                i % 31,
                i % 7,
                1_700_000_000_000u64 + u64::from(i) * 10
            )
        })
        .collect()
}

/// Runs the drop-late topology over `input` into `out` with checkpoints and
/// `extra` arguments; returns stderr.
fn run_grow(
    dir: &std::path::Path,
    input: &std::path::Path,
    out: &std::path::Path,
    extra: &[&str],
) -> String {
    let doc = dir.join("grow.yaml");
    std::fs::write(&doc, DROP_LATE_TOPOLOGY).unwrap();
    let mut args = vec![
        "run".to_string(),
        "--topology".into(),
        doc.display().to_string(),
        "--module-dir".into(),
        weir_fixtures::guest_dir().display().to_string(),
        "--input".into(),
        format!("lines={}", input.display()),
        "--output".into(),
        format!("out={}", out.display()),
        "--data-dir".into(),
        dir.join("data").display().to_string(),
        "--checkpoint-interval-ms".into(),
        "200".into(),
    ];
    args.extend(extra.iter().map(|s| s.to_string()));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let result = weir(&args, "");
    assert!(result.status.success(), "{}", stderr(&result));
    stderr(&result)
}

fn sorted_lines(text: &str) -> Vec<String> {
    let mut lines: Vec<String> = text.lines().map(str::to_string).collect();
    lines.sort();
    lines
}

/// The counts of one uninterrupted run over `lines`, sorted.
fn oracle_counts(lines: &str) -> Vec<String> {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("all.jsonl");
    std::fs::write(&input, lines).unwrap();
    let out = dir.path().join("all-out.jsonl");
    run_grow(dir.path(), &input, &out, &[]);
    sorted_lines(&std::fs::read_to_string(&out).unwrap())
}

#[test]
fn a_resumed_run_counts_input_appended_since_its_last_run() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("lines.jsonl");
    let out = dir.path().join("counts.jsonl");
    std::fs::write(&input, growing_lines(0, 1000)).unwrap();
    let first = run_grow(dir.path(), &input, &out, &[]);
    assert!(!first.contains("warning"), "{first}");
    assert_eq!(std::fs::read_to_string(&out).unwrap().lines().count(), 2000);

    // The same command after the file grew: the new lines are counted,
    // none of them late, and the output equals one run over all lines.
    let mut all = growing_lines(0, 1000);
    all.push_str(&growing_lines(1000, 2000));
    std::fs::write(&input, &all).unwrap();
    let second = run_grow(dir.path(), &input, &out, &[]);
    assert!(!second.contains("late"), "{second}");
    let got = sorted_lines(&std::fs::read_to_string(&out).unwrap());
    assert_eq!(got.len(), 4000);
    assert!(
        got == oracle_counts(&all),
        "the resumed run's counts differ from one run's"
    );
}

#[test]
fn a_savepoint_carries_state_to_a_new_input_with_reset_sources() {
    let dir = tempfile::tempdir().unwrap();
    let first_in = dir.path().join("first.jsonl");
    let second_in = dir.path().join("second.jsonl");
    std::fs::write(&first_in, growing_lines(0, 1000)).unwrap();
    std::fs::write(&second_in, growing_lines(1000, 2000)).unwrap();
    let sp = dir.path().join("sp.redb");
    let first_out = dir.path().join("first-out.jsonl");
    run_grow(
        dir.path(),
        &first_in,
        &first_out,
        &["--savepoint-to", sp.to_str().unwrap()],
    );

    // Without --reset-sources the new file (as long as the old one) is read
    // from the restored position: nothing, and the run says so.
    let skipped_out = dir.path().join("skipped-out.jsonl");
    let log = run_grow(
        dir.path(),
        &second_in,
        &skipped_out,
        &["--from-savepoint", sp.to_str().unwrap(), "--fresh"],
    );
    assert!(
        log.contains("source `lines` had nothing to read") && log.contains("--reset-sources"),
        "{log}"
    );
    assert_eq!(std::fs::read_to_string(&skipped_out).unwrap(), "");

    // With it: the state goes on over the whole new file, none of it late.
    let second_out = dir.path().join("second-out.jsonl");
    let log = run_grow(
        dir.path(),
        &second_in,
        &second_out,
        &[
            "--from-savepoint",
            sp.to_str().unwrap(),
            "--fresh",
            "--reset-sources",
        ],
    );
    assert!(!log.contains("warning"), "{log}");
    let mut both = std::fs::read_to_string(&first_out).unwrap();
    both.push_str(&std::fs::read_to_string(&second_out).unwrap());
    let mut all = growing_lines(0, 1000);
    all.push_str(&growing_lines(1000, 2000));
    assert!(
        sorted_lines(&both) == oracle_counts(&all),
        "counts through the savepoint differ from one run's"
    );
}

#[test]
fn key_by_keys_a_single_operator_run_by_a_field() {
    let input = "{\"value\":{\"user\":\"ann\",\"n\":1}}\n{\"value\":{\"user\":\"bob\",\"n\":2}}\n{\"value\":{\"user\":\"ann\",\"n\":3}}\n";
    let out = weir(
        &["run", "--module", &module("word-count"), "--key-by", "user"],
        input,
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let counts = stdout(&out);
    assert!(
        counts.contains("{\"word\":\"bob\",\"count\":1}"),
        "{counts}"
    );
    assert!(
        counts.contains("{\"word\":\"ann\",\"count\":2}"),
        "{counts}"
    );
    // A value without the field: a clear error naming the line.
    let out = weir(
        &["run", "--module", &module("word-count"), "--key-by", "user"],
        "{\"value\":{\"name\":\"x\"}}\n",
    );
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("-:1: --key-by user"),
        "{}",
        stderr(&out)
    );
}

/// `weir test`: passes (exit 0) when the operator emits the expected
/// events (fields the expectation leaves out, here timestamps, are not
/// compared), fails (exit 1) with a diff naming the event, expected and
/// got, ignores order only with --sort, and cannot run (exit 2) without
/// its files.
#[test]
fn weir_test_passes_and_fails_with_a_readable_diff() {
    let dir = tempfile::tempdir().unwrap();
    let file = |name: &str, text: &str| {
        let path = dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        path.display().to_string()
    };
    let input = file("in.jsonl", "{\"value\":\"b a\"}\n\n{\"value\":\"c\"}\n");
    let ordered = file(
        "ordered.jsonl",
        "{\"key\":\"b\",\"value\":\"b\"}\n{\"key\":\"a\",\"value\":\"a\"}\n{\"key\":\"c\",\"value\":\"c\"}\n",
    );
    let shuffled = file(
        "shuffled.jsonl",
        "{\"key\":\"c\",\"value\":\"c\"}\n{\"key\":\"a\",\"value\":\"a\"}\n{\"key\":\"b\",\"value\":\"b\"}\n",
    );
    let wrong = file(
        "wrong.jsonl",
        "{\"key\":\"b\",\"value\":\"b\"}\n{\"key\":\"a\",\"value\":\"z\"}\n",
    );
    let split = module("split-words");
    let test = |expect: &str, extra: &[&str]| {
        let mut args = vec![
            "test", "--module", &split, "--input", &input, "--expect", expect,
        ];
        args.extend_from_slice(extra);
        weir(&args, "")
    };
    exits_saying(&test(&ordered, &[]), 0, "3 events as expected");
    // Order matters unless --sort.
    let out = test(&shuffled, &[]);
    assert_eq!(out.status.code(), Some(1), "{}", stdout(&out));
    let out = test(&shuffled, &["--sort"]);
    assert_eq!(out.status.code(), Some(0), "{}", stdout(&out));
    // A wrong value and a missing event: each named with what was expected.
    let out = test(&wrong, &[]);
    assert_eq!(out.status.code(), Some(1), "{}", stdout(&out));
    let diff = stdout(&out);
    assert!(diff.contains("expected 2 events, got 3"), "{diff}");
    assert!(
        diff.contains("event 1:\n    - expected {\"key\":\"a\",\"value\":\"z\"}\n    + got      {\"key\":\"a\",\"value\":\"a\"}"),
        "{diff}"
    );
    assert!(
        diff.contains("event 2:\n    + extra    {\"key\":\"c\",\"value\":\"c\"}"),
        "{diff}"
    );
    assert!(!diff.contains("event 0"), "{diff}");
    let out = test(&wrong, &["--sort"]);
    let diff = stdout(&out);
    assert_eq!(out.status.code(), Some(1), "{diff}");
    assert!(
        diff.contains("- missing  {\"key\":\"a\",\"value\":\"z\"}"),
        "{diff}"
    );
    // An operator that fails fails the test, saying why.
    let poison = file("poison.jsonl", "{\"key\":\"k\",\"value\":\"poison\"}\n");
    let trap = module("poison-trap");
    let out = weir(
        &[
            "test", "--module", &trap, "--input", &poison, "--expect", &ordered,
        ],
        "",
    );
    assert_eq!(out.status.code(), Some(1), "{}", stdout(&out));
    assert!(
        stdout(&out).contains("the operator failed") && stdout(&out).contains("poison event"),
        "{}",
        stdout(&out)
    );
    // A test that cannot run says why, apart from a failed one.
    let out = test(&dir.path().join("absent.jsonl").display().to_string(), &[]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("absent.jsonl"), "{}", stderr(&out));
}

/// Every guest example with a `test/` directory (`input.jsonl`,
/// `expected.jsonl`, and optionally `flags`: more `weir test` arguments,
/// one a line), in Rust, C, JavaScript and Python, passes `weir test`, as
/// a user's CI would run it.
#[test]
fn every_guest_example_passes_its_weir_test() {
    let mut tested = Vec::new();
    // Each language's directory, and the prefix of its components' names.
    let languages = [
        ("rust", ""),
        ("c", "c-"),
        ("js", "js-"),
        ("python", "python-"),
    ];
    let examples = languages.iter().flat_map(|(lang, prefix)| {
        let dir = repo_root().join("guest-examples").join(lang);
        std::fs::read_dir(dir)
            .unwrap()
            .map(move |entry| (*prefix, entry.unwrap().path().join("test")))
    });
    for (prefix, dir) in examples {
        if !dir.is_dir() {
            continue;
        }
        let example = dir.parent().unwrap().file_name().unwrap().to_string_lossy();
        let name = format!("{prefix}{example}");
        let flags = std::fs::read_to_string(dir.join("flags")).unwrap_or_default();
        let flags = flags.lines().filter(|l| !l.trim().is_empty());
        let (input, expect) = (dir.join("input.jsonl"), dir.join("expected.jsonl"));
        let module = module(&name);
        let topology = dir.join("topology.yaml");
        let guests = guest_dir().display().to_string();
        let args: Vec<String> = if topology.is_file() {
            // A topology's test: its flags name SOURCE=FILE and SINK=FILE
            // relative to the test directory.
            let mut args = vec![
                "test".to_string(),
                "--topology".into(),
                topology.display().to_string(),
                "--module-dir".into(),
                guests,
            ];
            args.extend(flags.map(|f| match f.split_once('=') {
                Some((name, file)) => format!("{name}={}", dir.join(file).display()),
                None => f.to_string(),
            }));
            args
        } else {
            let mut args: Vec<String> = [
                "test",
                "--module",
                &module,
                "--input",
                input.to_str().unwrap(),
                "--expect",
                expect.to_str().unwrap(),
            ]
            .map(String::from)
            .into();
            args.extend(flags.map(String::from));
            args
        };
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let out = weir(&args, "");
        assert_eq!(
            out.status.code(),
            Some(0),
            "{name}: {}{}",
            stdout(&out),
            stderr(&out)
        );
        tested.push(name);
    }
    tested.sort();
    let mut expected: Vec<String> = [
        "enrich",
        "filter",
        "fraud-detector",
        "identity",
        "keyed-sum",
        "map",
        "split-words",
        "window-sum",
        "word-count",
    ]
    .map(String::from)
    .into();
    for lang in ["c", "js", "python"] {
        for example in [
            "enrich",
            "filter",
            "large-amounts",
            "split-words",
            "word-count",
        ] {
            expected.push(format!("{lang}-{example}"));
        }
    }
    expected.sort();
    assert_eq!(tested, expected);
}

#[test]
fn weir_test_of_a_topology_compares_each_sink_with_its_expectation() {
    let dir = repo_root().join("guest-examples/rust/enrich/test");
    let tmp = tempfile::tempdir().unwrap();
    let expected = std::fs::read_to_string(dir.join("expected.jsonl")).unwrap();
    let wrong = tmp.path().join("wrong.jsonl");
    std::fs::write(&wrong, expected.replace("platinum", "gold")).unwrap();
    let run = |expect: &std::path::Path| {
        let pair = |name: &str, file: &std::path::Path| format!("{name}={}", file.display());
        let args = [
            "test".to_string(),
            "--topology".into(),
            dir.join("topology.yaml").display().to_string(),
            "--module-dir".into(),
            guest_dir().display().to_string(),
            "--input".into(),
            pair("tx", &dir.join("tx.jsonl")),
            "--input".into(),
            pair("profiles", &dir.join("profiles.jsonl")),
            "--expect".into(),
            pair("out", expect),
        ];
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        weir(&args, "")
    };
    exits_saying(
        &run(&dir.join("expected.jsonl")),
        0,
        "sink `out`: 3 events as expected",
    );
    let out = run(&wrong);
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}{}",
        stdout(&out),
        stderr(&out)
    );
    assert!(
        stdout(&out).contains("sink `out`") && stdout(&out).contains("\"tier\":\"platinum\""),
        "the diff names the sink and what came: {}",
        stdout(&out)
    );
}
