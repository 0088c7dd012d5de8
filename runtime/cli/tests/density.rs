//! Many small topologies on one server: 200 copies of `split-words →
//! word-count (parallelism 2)`, each over its own streams and its own
//! lines, all running on the server's fixed worker pool. Each must produce
//! exactly its own word counts, and the server's thread count must not
//! grow with the number of topologies (a thread per task would be 1,200).

mod server;

use std::collections::BTreeMap;

use serde_json::json;
use server::{Server, counts_of, eventually, expected_counts, lines_jsonl};
use weir_fixtures::guest_bytes;

const TOPOLOGIES: usize = 200;

/// Threads of process `pid` now.
fn threads_of(pid: u32) -> usize {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("Threads:"))
        .and_then(|n| n.trim().parse().ok())
        .expect("a Threads: line")
}

/// The lines topology `i` reads: a slice of the sample text plus a word of
/// its own, so a mix-up between topologies shows in the counts.
fn lines_of(i: usize, sample: &[&str]) -> String {
    let mut out = String::new();
    for k in 0..3 {
        out.push_str(sample[(i + k) % sample.len()]);
        out.push('\n');
    }
    for _ in 0..=(i % 4) {
        out.push_str(&json!({ "value": format!("only{i} shared") }).to_string());
        out.push('\n');
    }
    out
}

#[test]
fn two_hundred_topologies_each_count_exactly_their_own_words_on_a_fixed_pool() {
    let dir = tempfile::tempdir().unwrap();
    let srv = Server::start_raising_nofile(
        dir.path(),
        &["--workers", "2", "--unload-idle-secs", "2"],
        16_384,
    );
    let http = srv.client();
    for module in ["split-words", "word-count"] {
        let a = http.push(module, &guest_bytes(module));
        assert_eq!(a.status, 201, "{}", a.text);
    }
    let sample = lines_jsonl();
    let sample: Vec<&str> = sample.lines().filter(|l| !l.trim().is_empty()).collect();
    let mut expected: Vec<BTreeMap<String, u64>> = Vec::new();
    for i in 0..TOPOLOGIES {
        let doc = format!(
            "name: d{i}\nsources: [{{ name: lines, stream: d{i}-in }}]\noperators:\n  - {{ name: split, module: split-words, input: lines }}\n  - {{ name: count, module: word-count, input: split, key_by: key, parallelism: 2 }}\nsinks: [{{ name: out, stream: d{i}-out, input: count }}]\n"
        );
        let a = http.put_topology(&format!("d{i}"), &doc);
        assert_eq!(a.status, 201, "d{i}: {}", a.text);
        let a = http.post_json(&format!("/v1/topologies/d{i}/start"), &json!({}));
        assert_eq!(a.status, 200, "d{i}: {}", a.text);
        let lines = lines_of(i, &sample);
        expected.push(expected_counts(&lines));
        let a = http.produce(&format!("d{i}-in"), &lines);
        assert!(a.status < 300, "d{i}: {}", a.text);
    }
    for (i, want) in expected.iter().enumerate() {
        eventually(&format!("the counts of d{i}"), || {
            (counts_of(&http.events(&format!("d{i}-out"))) == *want).then_some(())
        });
    }
    // Everything counted; the topologies are idle now. Threads: the pool
    // (2 + 2 blocking + 1 timer), the HTTP runtime and stream helpers,
    // whatever the number of topologies.
    let threads = threads_of(srv.pid());
    assert!(
        threads < 100,
        "{threads} threads for {TOPOLOGIES} topologies: tasks must share the worker pool"
    );
    let status = http.get("/v1/topologies/d7");
    assert_eq!(status.status, 200, "{}", status.text);
    let usage = &status.body["usage"];
    assert!(usage["cpu_seconds"].as_f64().unwrap() > 0.0, "{usage}");
    // Idle for 2 s, its instances are unloaded: no linear memory held.
    eventually("d7's idle instances unloaded", || {
        let usage = http.get("/v1/topologies/d7").body["usage"].clone();
        (usage["wasm_memory_bytes"].as_u64() == Some(0)).then_some(())
    });
    // One more line into one topology still flows while the others idle,
    // and its new instances count on from the state kept.
    let (word, before) = expected[7].iter().next().unwrap();
    let line = format!("{{\"value\": \"late arrival {word}\"}}\n");
    let a = http.produce("d7-in", &line);
    assert!(a.status < 300, "{}", a.text);
    eventually("the late line's counts", || {
        let counts = counts_of(&http.events("d7-out"));
        (counts.get("arrival") == Some(&1) && counts.get(word) == Some(&(before + 1))).then_some(())
    });
    srv.stop();
}
