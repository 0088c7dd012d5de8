//! A cluster of `weir serve` processes (`--cluster`) over one real Apache
//! Kafka broker (`weir_fixtures::kafka::KafkaBroker`; jars from `cargo
//! xtask kafka`), each with its own data directory on loopback: writes
//! through one node reach the others through the control topic, a write
//! is read back at once on the node that took it, a node started later
//! catches up, a chunked module arrives byte for byte, and hostile records
//! in the control topic are reported without stopping any node, and a
//! topology over a 4-partition topic is shared by two nodes through its
//! consumer group with exactly-once output equal to the oracle, also
//! when one of them joins mid-run and when one is killed, and a word
//! count on three nodes stays exact when two of them die mid-run (one
//! inside a transaction), restoring from standby copies that catch up
//! with the changelog; a tumbling window whose partition moves while it
//! is open fires once with its total (timers and watermarks move with
//! it). One broker serves the whole scenario (starting one takes
//! seconds).

mod server;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use rdkafka::Message;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError as RdError;
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use serde_json::{Value, json};
use server::{Server, eventually};
use weir_connectors::create_topic;
use weir_fixtures::guest_bytes;
use weir_fixtures::kafka::KafkaBroker;

const CLUSTER: &str = "t1";
const CONTROL_TOPIC: &str = "weir-cluster-t1";
/// Small chunks, so a test module of a few hundred KiB is cut in many.
const CHUNK_BYTES: &str = "16384";

fn node(dir: &std::path::Path, brokers: &str, id: &str) -> Server {
    Server::start(
        dir,
        &[
            "--cluster",
            CLUSTER,
            "--kafka-brokers",
            brokers,
            "--cluster-chunk-bytes",
            CHUNK_BYTES,
            "--node-id",
            id,
        ],
        &[],
    )
}

/// Writes raw records (key, value) to `topic`; `None`: no key.
fn produce_raw(brokers: &str, topic: &str, records: &[(Option<&[u8]>, &[u8])]) {
    let producer: ThreadedProducer<DefaultProducerContext> = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .create()
        .unwrap();
    for (key, value) in records {
        let mut record = BaseRecord::<[u8], [u8]>::to(topic);
        if let Some(k) = key {
            record = record.key(*k);
        }
        record = record.payload(*value);
        producer.send(record).map_err(|(e, _)| e).unwrap();
    }
    producer.flush(Duration::from_secs(30)).unwrap();
}

fn topology_doc(name: &str, input: &str, output: &str) -> String {
    format!(
        "name: {name}\n\
         checkpoint: {{ interval_ms: 200 }}\n\
         sources:\n\
         \x20 - {{ name: lines, kafka: {{ topic: {input}, format: text }} }}\n\
         operators:\n\
         \x20 - {{ name: split, module: ops, input: lines }}\n\
         sinks:\n\
         \x20 - {{ name: out, kafka: {{ topic: {output}, delivery: at-least-once }}, input: split }}\n"
    )
}

/// The node's `GET /v1/cluster`.
fn cluster_view(server: &Server) -> Value {
    let answer = server.client().get("/v1/cluster");
    assert_eq!(answer.status, 200, "{}", answer.text);
    answer.body
}

fn state_of(server: &Server, topology: &str) -> String {
    let answer = server.client().get(&format!("/v1/topologies/{topology}"));
    answer.body["state"]
        .as_str()
        .unwrap_or("absent")
        .to_string()
}

#[test]
fn a_cluster_shares_modules_and_topologies_through_its_control_topic() {
    let broker = KafkaBroker::start();
    let brokers = broker.bootstrap();
    create_topic(&brokers, "cl-lines", 1, &[]).unwrap();
    create_topic(&brokers, "cl-words", 1, &[]).unwrap();
    let dirs: Vec<tempfile::TempDir> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let a = node(dirs[0].path(), &brokers, "a");
    let b = node(dirs[1].path(), &brokers, "b");
    let (ca, cb) = (a.client(), b.client());

    // A module through A: read back on A at once, with its control offset.
    let module = guest_bytes("split-words");
    assert!(
        module.len() > 4 * CHUNK_BYTES.parse::<usize>().unwrap(),
        "the test module must be cut into several chunks"
    );
    let pushed = ca.push("ops", &module);
    assert_eq!(pushed.status, 201, "{}", pushed.text);
    let offset = pushed.body["control_offset"].as_i64().unwrap();
    assert!(offset > 0, "{}", pushed.text);
    let on_a = ca.get("/v1/modules/ops/versions/1");
    assert_eq!(on_a.status, 200, "{}", on_a.text);
    // Identical bytes again: the existing version, nothing written.
    let again = ca.push("ops", &module);
    assert_eq!(again.status, 200, "{}", again.text);
    assert_eq!(again.body["version"], 1);

    // On B: the same version, the same bytes on its disk.
    let on_b = eventually("the module on node B", || {
        let answer = cb.get("/v1/modules/ops/versions/1");
        (answer.status == 200).then_some(answer.body)
    });
    assert_eq!(on_b["digest"], on_a.body["digest"]);
    assert_eq!(on_b["created_at"], on_a.body["created_at"]);
    let stored = std::fs::read(dirs[1].path().join("modules/ops/1.wasm")).unwrap();
    assert!(stored == module, "node B's copy differs from the upload");

    // Embedded streams are refused on a cluster's node, saying why.
    let refused = cb.put_topology(
        "local",
        "name: local\nsources: [{ name: in, stream: lines }]\n\
         operators: [{ name: split, module: ops, input: in }]\n\
         sinks: [{ name: out, kafka: { topic: cl-words }, input: split }]\n",
    );
    assert_eq!(refused.status, 422, "{}", refused.text);
    assert!(refused.text.contains("one node's disk"), "{}", refused.text);

    // A topology through B, read back on B at once, started through B.
    let put = cb.put_topology("clt", &topology_doc("clt", "cl-lines", "cl-words"));
    assert_eq!(put.status, 201, "{}", put.text);
    assert!(put.body["control_offset"].as_i64().unwrap() > offset);
    assert_eq!(put.body["modules"]["ops"], "ops@1");
    let started = cb.post_json("/v1/topologies/clt/start", &json!({}));
    assert_eq!(started.status, 200, "{}", started.text);
    assert_eq!(started.body["state"], "running", "{}", started.text);
    // Savepoints are per node: refused in cluster mode.
    let sp = cb.post_json("/v1/topologies/clt/stop", &json!({ "savepoint": "x" }));
    assert_eq!(sp.status, 400, "{}", sp.text);
    assert_eq!(sp.code(), "not_in_cluster");
    // A runs it too, and the members list says what each runs.
    eventually("clt running on node A", || {
        (state_of(&a, "clt") == "running").then_some(())
    });
    eventually("both members running clt", || {
        let view = cluster_view(&a);
        let members = view["members"].as_array()?.clone();
        let running = members
            .iter()
            .filter(|m| m["alive"] == true && m["running"] == json!(["clt"]))
            .count();
        (running == 2).then_some(())
    });
    // It processes input: its one partition is read by one of the nodes.
    produce_raw(&brokers, "cl-lines", &[(None, b"alpha beta gamma")]);
    eventually("clt's output", || {
        let out: u64 = [&ca, &cb]
            .iter()
            .flat_map(|c| {
                let view = c.get("/v1/topologies/clt");
                view.body["operators"]
                    .as_array()
                    .cloned()
                    .unwrap_or_default()
            })
            .map(|o| o["events_out"].as_u64().unwrap_or(0))
            .sum();
        (out >= 3).then_some(())
    });

    // Hostile records straight into the control topic (the broker itself
    // refuses records without a key in a compacted topic).
    let hex = "00".repeat(32);
    let chunk_key = format!("module/evil/1/{hex}/0");
    let manifest_key = format!("module/evil/1/{hex}");
    let cut_key = format!("module/cut/1/{}", "11".repeat(32));
    let cut_manifest = json!({ "digest": format!("sha256:{}", "11".repeat(32)), "size": 10, "chunks": 2, "created_at": 0 }).to_string();
    let bad_manifest =
        json!({ "digest": format!("sha256:{hex}"), "size": 5, "chunks": 1, "created_at": 0 })
            .to_string();
    produce_raw(
        &brokers,
        CONTROL_TOPIC,
        &[
            (Some(b"\xff\xfe"), b"x"),
            (Some(b"nonsense/key"), b"{}"),
            (Some(b"topology/ghost"), b"{not json"),
            (Some(b"desired/ghost"), b"[1,2]"),
            (Some(chunk_key.as_bytes()), b"hello"),
            (Some(manifest_key.as_bytes()), bad_manifest.as_bytes()),
            (Some(b"member/a"), b"{\"node\": 5}"),
            (Some(cut_key.as_bytes()), cut_manifest.as_bytes()),
        ],
    );
    // Both nodes keep going: a write after them is applied and answered.
    let second = cb.push("ops2", &guest_bytes("word-count"));
    assert_eq!(second.status, 201, "{}", second.text);
    eventually("ops2 on node A", || {
        (ca.get("/v1/modules/ops2").status == 200).then_some(())
    });
    for server in [&a, &b] {
        let view = cluster_view(server);
        let problems = view["problems"].as_array().unwrap();
        assert_eq!(problems.len(), 7, "{view}");
        let text = view["problems"].to_string();
        for says in [
            "not UTF-8",
            "unknown key",
            "topology record is not valid",
            "do not match the manifest",
            "chunk 0 of 2 is missing",
        ] {
            assert!(text.contains(says), "missing {says:?} in {text}");
        }
    }
    assert_eq!(ca.get("/v1/modules/evil").status, 404);
    assert_eq!(state_of(&a, "clt"), "running");

    // A node started later catches up: the module byte for byte, the
    // topology running, and the same hostile records reported.
    let c = node(dirs[2].path(), &brokers, "c");
    let cc = c.client();
    assert_eq!(
        cc.get("/v1/modules/ops/versions/1").body["digest"],
        on_a.body["digest"]
    );
    let stored = std::fs::read(dirs[2].path().join("modules/ops/1.wasm")).unwrap();
    assert!(stored == module, "node C's copy differs from the upload");
    eventually("clt running on node C", || {
        (state_of(&c, "clt") == "running").then_some(())
    });
    assert!(
        cluster_view(&c)["applied_offset"].as_i64().unwrap()
            >= second.body["control_offset"].as_i64().unwrap()
    );

    // Stop and delete through C reach A and B; an in-use module is refused.
    let in_use = cc.request("DELETE", "/v1/modules/ops/versions/1", None, &[]);
    assert_eq!(in_use.status, 409, "{}", in_use.text);
    let stopped = cc.post_json("/v1/topologies/clt/stop", &json!({}));
    assert_eq!(stopped.status, 200, "{}", stopped.text);
    assert_eq!(stopped.body["state"], "stopped");
    let deleted = cc.request("DELETE", "/v1/topologies/clt", None, &[]);
    assert_eq!(deleted.status, 204, "{}", deleted.text);
    assert_eq!(cc.get("/v1/topologies/clt").status, 404);
    let gone = cc.request("DELETE", "/v1/modules/ops/versions/1", None, &[]);
    assert_eq!(gone.status, 204, "{}", gone.text);
    for server in [&a, &b] {
        eventually("the topology and module gone on every node", || {
            let client = server.client();
            (client.get("/v1/topologies/clt").status == 404
                && client.get("/v1/modules/ops/versions/1").status == 404)
                .then_some(())
        });
    }
    assert!(!dirs[0].path().join("modules/ops/1.wasm").exists());

    // A clean stop removes the member from the others' view.
    c.stop();
    eventually("node c gone from the members", || {
        let view = cluster_view(&a);
        (!view["members"].to_string().contains("\"c\"")).then_some(())
    });

    // Tasks per partition: a 4-partition input shared by A and B through
    // the topology's group, exactly-once output equal to the oracle.
    create_topic(&brokers, "eo-lines", 4, &[]).unwrap();
    create_topic(&brokers, "eo-words", 4, &[]).unwrap();
    let lines: Vec<String> = (0..400)
        .map(|i| format!("w{} w{} w{}", i % 37, (i * 7) % 53, i % 5))
        .collect();
    let mut oracle: BTreeMap<String, u64> = BTreeMap::new();
    for line in &lines {
        for word in line.split_whitespace() {
            *oracle.entry(word.to_string()).or_insert(0) += 1;
        }
    }
    let keyed = |from: usize, to: usize| -> Vec<(String, String)> {
        (from..to)
            .map(|i| (format!("k{i}"), lines[i].clone()))
            .collect()
    };
    produce_keyed(&brokers, "eo-lines", &keyed(0, 200));
    // B is away while A alone reads all four partitions.
    b.stop();
    // Checkpoints far apart, none when the input goes quiet: what A read
    // is neither published nor committed to the source's group before B
    // comes back, so only the hand-over at the revocation tells B where
    // A's partitions stand.
    let doc = topology_doc("eo", "eo-lines", "eo-words")
        .replace(", delivery: at-least-once", "")
        .replace("interval_ms: 200", "interval_ms: 600000, idle_ms: 0");
    // `ops@1` was deleted above: the upload is version 2 on every node.
    let again = ca.push("ops", &module);
    assert_eq!(again.status, 201, "{}", again.text);
    assert_eq!(again.body["version"], 2);
    let put = ca.put_topology("eo", &doc);
    assert_eq!(put.status, 201, "{}", put.text);
    let started = ca.post_json("/v1/topologies/eo/start", &json!({}));
    assert_eq!(started.status, 200, "{}", started.text);
    let read_now = |client: &server::Http| -> u64 {
        let status = client.get("/v1/topologies/eo");
        status.body["sources"]
            .as_array()
            .map(|s| s.iter().filter_map(|x| x["events_read"].as_u64()).sum())
            .unwrap_or(0)
    };
    eventually("A alone through the first half", || {
        (read_now(&ca) >= 200).then_some(())
    });
    assert!(word_counts(&brokers, "eo-words").is_empty());
    // B comes back: it catches up, joins eo's group, and two partitions
    // move to it from A (A's offsets handed over first).
    let b = node(dirs[1].path(), &brokers, "b");
    let cb = b.client();
    // Each node holds some of the four partitions, together all of them.
    eventually("eo's partitions shared by A and B", || {
        let view = cluster_view(&a);
        let mut all = BTreeSet::new();
        let mut holders = 0;
        for m in view["members"].as_array()? {
            let held: Vec<i64> = m["partitions"]["eo"]["eo-lines"]
                .as_array()
                .map(|a| a.iter().filter_map(Value::as_i64).collect())
                .unwrap_or_default();
            holders += usize::from(!held.is_empty());
            all.extend(held);
        }
        (holders == 2 && all == BTreeSet::from([0, 1, 2, 3])).then_some(())
    });
    produce_keyed(&brokers, "eo-lines", &keyed(200, 400));
    // Each node read part of the second half. A's run went on through the
    // move (its count still holds the first half): only the two
    // partitions moved, the job was not restarted.
    eventually("the second half read by A and B", || {
        let (on_a, on_b) = (read_now(&ca), read_now(&cb));
        (on_a > 200 && on_b > 0 && on_a + on_b >= 400).then_some(())
    });
    let moves = cluster_view(&a)["moves"]["eo"].clone();
    assert_eq!(moves["job_starts"], 1, "{moves}");
    assert!(moves["while_running"].as_u64() >= Some(1), "{moves}");
    // Stopping publishes each node's last output.
    let stopped = cb.post_json("/v1/topologies/eo/stop", &json!({}));
    assert_eq!(stopped.status, 200, "{}", stopped.text);
    eventually("eo stopped on A", || {
        (state_of(&a, "eo") == "stopped").then_some(())
    });
    assert_eq!(word_counts(&brokers, "eo-words"), oracle);

    // Kill -9 of a node: after the group's session timeout its partitions
    // move to A, which reads them from where B's last hand-over left
    // them (B published nothing since: its checkpoints are far apart).
    let started = ca.post_json("/v1/topologies/eo/start", &json!({}));
    assert_eq!(started.status, 200, "{}", started.text);
    eventually("eo running on B again", || {
        (state_of(&b, "eo") == "running").then_some(())
    });
    let more: Vec<(String, String)> = (0..100)
        .map(|i| (format!("m{i}"), format!("x{} y{}", i % 3, i % 11)))
        .collect();
    let mut total = oracle.clone();
    for (_, line) in &more {
        for word in line.split_whitespace() {
            *total.entry(word.to_string()).or_insert(0) += 1;
        }
    }
    let killed = std::process::Command::new("kill")
        .args(["-9", &b.pid().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    produce_keyed(&brokers, "eo-lines", &more);
    eventually("all four partitions on A", || {
        let view = cluster_view(&a);
        let mine = view["members"]
            .as_array()?
            .iter()
            .find(|m| m["node"] == "a")?["partitions"]["eo"]["eo-lines"]
            .clone();
        (mine == json!([0, 1, 2, 3])).then_some(())
    });
    // B's partitions joined A's running job (started twice, by the
    // user): it was not restarted for them.
    eventually("A's job took B's partitions while it ran", || {
        let moves = cluster_view(&a)["moves"]["eo"].clone();
        (moves["job_starts"] == 2 && moves["while_running"].as_u64() >= Some(2)).then_some(())
    });
    read_to_end(&brokers, ("eo-lines", 4), ("eo", "lines"), &[&ca]);
    let stopped = ca.post_json("/v1/topologies/eo/stop", &json!({}));
    assert_eq!(stopped.status, 200, "{}", stopped.text);
    assert_eq!(word_counts(&brokers, "eo-words"), total);

    let b = keyed_state_moves_with_its_partitions(&brokers, &a, dirs[1].path());
    let started = std::time::Instant::now();
    rekeyed_and_co_partitioned_state(&brokers, &a, &b);
    event_time_crosses_a_repartition_topic_per_task(&brokers, &a, &b);
    eprintln!(
        "repartition and co-partitioning scenarios: {:.1} s",
        started.elapsed().as_secs_f64()
    );
    b.stop();
    counts_stay_exact_when_nodes_die_mid_run(&brokers);
}

/// A word count (state per word) over a 4-partition topic keyed by word:
/// A alone counts the first half; B joins and takes two partitions, whose
/// counts it restores from the changelog A wrote at its last checkpoint;
/// every word's counts in the `read_committed` output are 1, 2, ..., n
/// once each (a count restarted at 1 after the move, or counted twice,
/// fails). `GET /v1/cluster` shows each partition's holder and lag. A
/// state query on either node answers for every word, from the node that
/// holds it; a query marked forwarded is not forwarded again. Records not
/// partitioned by their key are refused at the checkpoint, saying why.
/// Answers node B, still running.
fn keyed_state_moves_with_its_partitions(
    brokers: &str,
    a: &Server,
    b_dir: &std::path::Path,
) -> Server {
    let ca = a.client();
    create_topic(brokers, "wc-in", 4, &[]).unwrap();
    create_topic(brokers, "wc-out", 4, &[]).unwrap();
    let words: Vec<(String, String)> = (0..600)
        .map(|i| {
            let w = format!("w{}", (i * 7) % 41);
            (w.clone(), w)
        })
        .collect();
    let mut oracle: BTreeMap<String, u64> = BTreeMap::new();
    for (w, _) in &words {
        *oracle.entry(w.clone()).or_insert(0) += 1;
    }
    let pushed = ca.push("counter", &guest_bytes("word-count"));
    assert_eq!(pushed.status, 201, "{}", pushed.text);
    let doc = word_count_doc("wc", "wc-in", "wc-out", 300);
    let put = ca.put_topology("wc", &doc);
    assert_eq!(put.status, 201, "{}", put.text);
    let started = ca.post_json("/v1/topologies/wc/start", &json!({}));
    assert_eq!(started.status, 200, "{}", started.text);
    produce_keyed(brokers, "wc-in", &words[..300]);
    // Beside it, a tumbling-window count whose windows are open when B
    // takes half its partitions.
    let keys = window_keys();
    let pushed = ca.push("windows", &guest_bytes("window-sum"));
    assert_eq!(pushed.status, 201, "{}", pushed.text);
    create_topic(brokers, "win-in", 4, &[]).unwrap();
    create_topic(brokers, "win-out", 4, &[]).unwrap();
    let put = ca.put_topology("win", &window_doc("win", "win-in", "win-out"));
    assert_eq!(put.status, 201, "{}", put.text);
    let started = ca.post_json("/v1/topologies/win/start", &json!({}));
    assert_eq!(started.status, 200, "{}", started.text);
    // Window [0, 10 s): three events per key; then one in [10 s, 20 s),
    // whose time closes the first window (fired once, count 3).
    produce_times(brokers, &keys, &[1_000, 2_000, 3_000]);
    read_to_end(brokers, ("win-in", 4), ("win", "sales"), &[&ca]);
    produce_times(brokers, &keys, &[11_000]);
    eventually("A alone fired the first windows", || {
        (records_of(brokers, "win-out").len() == keys.len()).then_some(())
    });
    eventually("A alone counted the first half", || {
        (records_of(brokers, "wc-out").len() == 300).then_some(())
    });
    // B joins: two partitions and their counts move to it.
    let b = node(b_dir, brokers, "b");
    let cb = b.client();
    eventually("wc's partitions shared by A and B", || {
        let view = cluster_view(a);
        let held = |node: &str| -> Option<usize> {
            let m = view["members"]
                .as_array()?
                .iter()
                .find(|m| m["node"] == node)?
                .clone();
            Some(m["partitions"]["wc"]["wc-in"].as_array()?.len())
        };
        (held("a")? > 0 && held("b")? > 0 && held("a")? + held("b")? == 4).then_some(())
    });
    produce_keyed(brokers, "wc-in", &words[300..]);
    let out = eventually("both halves counted", || {
        let out = records_of(brokers, "wc-out");
        (out.len() >= 600).then_some(out)
    });
    assert_counts(&out, &oracle);
    windows_move_with_their_timers_and_watermarks(brokers, &keys, &ca, &cb);

    // A state query on either node answers for every word, from the node
    // that holds the word's partition (forwarded once).
    let view = cluster_view(a);
    let mut owner: BTreeMap<i64, String> = BTreeMap::new();
    for m in view["members"].as_array().unwrap() {
        for p in m["partitions"]["wc"]["wc-in"].as_array().unwrap() {
            owner.insert(p.as_i64().unwrap(), m["node"].as_str().unwrap().to_string());
        }
    }
    assert_eq!(owner.len(), 4, "{view}");
    // B's view has the same holder for each partition, and no lag once
    // everything is read.
    eventually("wc's assignment without lag on B", || {
        let view = cluster_view(&b);
        let wc = view["assignment"]["wc"]["wc-in"].as_object()?.clone();
        let same = wc.iter().all(|(p, at)| {
            Some(&at["node"]) == p.parse().ok().map(|p: i64| json!(owner[&p])).as_ref()
        });
        (wc.len() == 4 && same && wc.values().all(|at| at["lag"] == 0)).then_some(())
    });
    let lag = &cluster_view(a)["members"];
    assert!(
        lag.to_string().contains("\"lag\":{\"wc\":{\"wc-in\":"),
        "{lag}"
    );
    let mut forwarded = BTreeSet::new();
    for (word, n) in &oracle {
        let path = format!("/v1/topologies/wc/operators/count/state/count?key={word}");
        let holder = &owner[&i64::from(weir_connectors::partition_of(word.as_bytes(), 4))];
        for (asked, client) in [("a", &ca), ("b", &cb)] {
            let answer = eventually("a node's view of the other's partitions", || {
                let answer = client.get(&path);
                (answer.status == 200).then_some(answer)
            });
            assert_eq!(
                answer.body["value"],
                json!(n),
                "{word} on {asked}: {}",
                answer.text
            );
            assert_eq!(
                answer.body["node"],
                json!(holder),
                "{word} on {asked}: {}",
                answer.text
            );
            if holder != asked {
                forwarded.insert(asked);
            }
        }
    }
    assert_eq!(
        forwarded,
        BTreeSet::from(["a", "b"]),
        "each node forwarded some"
    );
    // A forwarded query reaches only the holder: elsewhere it is refused,
    // never forwarded again.
    let (word, _) = oracle
        .iter()
        .find(|(w, _)| owner[&i64::from(weir_connectors::partition_of(w.as_bytes(), 4))] == "b")
        .unwrap();
    let stray = ca.get(&format!(
        "/v1/topologies/wc/operators/count/state/count?key={word}&forwarded=1"
    ));
    assert_eq!(stray.status, 503, "{}", stray.text);
    assert_eq!(
        stray.body["error"]["code"], "partition_unowned",
        "{}",
        stray.text
    );

    // Hostile: records the producer did not partition by their key (each
    // one in the partition after its key's). A node that counts a key
    // whose partition the other node holds refuses to checkpoint it, and
    // says why, rather than write state another node owns.
    create_topic(brokers, "wc-skew", 4, &[]).unwrap();
    create_topic(brokers, "wcx-out", 4, &[]).unwrap();
    let skewed = doc
        .replace("name: wc\n", "name: wcx\n")
        .replace("topic: wc-in", "topic: wc-skew")
        .replace("topic: wc-out", "topic: wcx-out");
    let put = ca.put_topology("wcx", &skewed);
    assert_eq!(put.status, 201, "{}", put.text);
    let started = ca.post_json("/v1/topologies/wcx/start", &json!({}));
    assert_eq!(started.status, 200, "{}", started.text);
    eventually("wcx's partitions shared by A and B", || {
        let view = cluster_view(&b);
        let at = view["assignment"]["wcx"]["wc-skew"].as_object()?.clone();
        let holders: BTreeSet<String> = at.values().map(|e| e["node"].to_string()).collect();
        (at.len() == 4 && holders.len() == 2).then_some(())
    });
    let producer: ThreadedProducer<DefaultProducerContext> = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .create()
        .unwrap();
    for (word, _) in oracle.iter().take(8) {
        let p = (weir_connectors::partition_of(word.as_bytes(), 4) + 1) % 4;
        let record = BaseRecord::<str, str>::to("wc-skew")
            .partition(p as i32)
            .key(word)
            .payload(word);
        producer.send(record).map_err(|(e, _)| e).unwrap();
    }
    producer.flush(Duration::from_secs(30)).unwrap();
    eventually("the misplaced keys refused", || {
        [&ca, &cb]
            .iter()
            .any(|c| {
                c.get("/v1/topologies/wcx")
                    .text
                    .contains("must be keyed like its Kafka input")
            })
            .then_some(())
    });
    for topology in ["wcx", "wc", "win"] {
        let stopped = cb.post_json(&format!("/v1/topologies/{topology}/stop"), &json!({}));
        assert_eq!(stopped.status, 200, "{}", stopped.text);
    }
    b
}

/// Keyed state that is not keyed like the input, on A and B at once:
/// `rp` counts words of lines keyed by line number (`split` re-keys each
/// word by itself, so `count` reads through its repartition topic,
/// `weir.t1.rp.count.repartition`), and `cp` counts words from two
/// topics of four partitions each (co-partitioned: the node that holds
/// partition p of one reads partition p of the other). Every word's
/// counts in the `read_committed` output are 1, 2, ..., n once each,
/// each node holds the same partition numbers of every input of a
/// topology, a state query on either node answers the oracle's count,
/// and the repartition records that were read are deleted. Hostile: a
/// repartition topic left with another partition count, and inputs of
/// unlike counts under keyed state, are refused at the start, saying
/// what to do.
fn rekeyed_and_co_partitioned_state(brokers: &str, a: &Server, b: &Server) {
    let (ca, cb) = (a.client(), b.client());
    for topic in ["rp-lines", "rp-out", "cp-a", "cp-b", "cp-out"] {
        create_topic(brokers, topic, 4, &[]).unwrap();
    }
    create_topic(brokers, "cp-six", 6, &[]).unwrap();
    create_topic(brokers, "weir.t1.rpx.count.repartition", 3, &[]).unwrap();
    let rekeyed = |name: &str| {
        format!(
            "name: {name}\n\
             checkpoint: {{ interval_ms: 200 }}\n\
             sources:\n\
             \x20 - {{ name: lines, kafka: {{ topic: rp-lines, format: text }} }}\n\
             operators:\n\
             \x20 - {{ name: split, module: ops, input: lines }}\n\
             \x20 - {{ name: count, module: counter, input: split, key_by: key }}\n\
             sinks:\n\
             \x20 - {{ name: out, kafka: {{ topic: rp-out }}, input: count }}\n"
        )
    };
    let co_partitioned = |name: &str, second: &str| {
        format!(
            "name: {name}\n\
             checkpoint: {{ interval_ms: 200 }}\n\
             sources:\n\
             \x20 - {{ name: a, kafka: {{ topic: cp-a, format: text }} }}\n\
             \x20 - {{ name: b, kafka: {{ topic: {second}, format: text }} }}\n\
             operators:\n\
             \x20 - {{ name: count, module: counter, input: [a, b], key_by: key }}\n\
             sinks:\n\
             \x20 - {{ name: out, kafka: {{ topic: cp-out }}, input: count }}\n"
        )
    };
    // Hostile starts first: nothing of them runs.
    for (name, doc, says) in [
        ("rpx", rekeyed("rpx"), "repartition topic has 3 partitions"),
        ("cpx", co_partitioned("cpx", "cp-six"), "`cp-six` has 6"),
    ] {
        let put = ca.put_topology(name, &doc);
        assert_eq!(put.status, 201, "{}", put.text);
        let refused = ca.post_json(&format!("/v1/topologies/{name}/start"), &json!({}));
        assert_ne!(refused.status, 200, "{}", refused.text);
        assert!(refused.text.contains(says), "{name}: {}", refused.text);
    }
    for (name, doc) in [("rp", rekeyed("rp")), ("cp", co_partitioned("cp", "cp-b"))] {
        let put = ca.put_topology(name, &doc);
        assert_eq!(put.status, 201, "{}", put.text);
        let started = ca.post_json(&format!("/v1/topologies/{name}/start"), &json!({}));
        assert_eq!(started.status, 200, "{}", started.text);
    }
    let repartition = "weir.t1.rp.count.repartition";
    eventually("rp and cp shared by A and B, inputs co-partitioned", || {
        let view = cluster_view(b);
        let mut holders = BTreeSet::new();
        for m in view["members"].as_array()? {
            for (topology, lead, other) in [("rp", "rp-lines", repartition), ("cp", "cp-a", "cp-b")]
            {
                let held = &m["partitions"][topology];
                if held[lead] != held[other] {
                    return None;
                }
                if held[lead].as_array().is_some_and(|ps| !ps.is_empty()) {
                    holders.insert((topology, m["node"].to_string()));
                }
            }
        }
        (holders.len() == 4).then_some(())
    });
    let lines: Vec<(String, String)> = (0..200)
        .map(|i| {
            (
                format!("l{i}"),
                format!("r{} r{} r{}", i % 23, (i * 5) % 31, i % 4),
            )
        })
        .collect();
    let words: Vec<(String, String)> = (0..300)
        .map(|i| {
            let w = format!("p{}", (i * 11) % 29);
            (w.clone(), w)
        })
        .collect();
    let mut rp_oracle: BTreeMap<String, u64> = BTreeMap::new();
    for (_, line) in &lines {
        for word in line.split_whitespace() {
            *rp_oracle.entry(word.to_string()).or_insert(0) += 1;
        }
    }
    let mut cp_oracle: BTreeMap<String, u64> = BTreeMap::new();
    for (w, _) in &words {
        *cp_oracle.entry(w.clone()).or_insert(0) += 1;
    }
    produce_keyed(brokers, "rp-lines", &lines);
    produce_keyed(brokers, "cp-a", &words[..150]);
    produce_keyed(brokers, "cp-b", &words[150..]);
    for (topic, oracle) in [("rp-out", &rp_oracle), ("cp-out", &cp_oracle)] {
        let total: u64 = oracle.values().sum();
        let out = eventually("every word counted", || {
            let out = records_of(brokers, topic);
            (out.len() as u64 >= total).then_some(out)
        });
        assert_counts(&out, oracle);
    }
    // A state query on either node answers for every re-keyed word.
    for (word, n) in &rp_oracle {
        let path = format!("/v1/topologies/rp/operators/count/state/count?key={word}");
        for client in [&ca, &cb] {
            let answer = eventually("a word's count", || {
                let answer = client.get(&path);
                (answer.status == 200).then_some(answer)
            });
            assert_eq!(answer.body["value"], json!(n), "{word}: {}", answer.text);
        }
    }
    // The repartition records read by committed checkpoints are deleted.
    let reader: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .create()
        .unwrap();
    eventually("the repartition topic purged", || {
        let purged: i64 = (0..4)
            .map(|p| {
                reader
                    .fetch_watermarks(repartition, p, Duration::from_secs(10))
                    .unwrap()
                    .0
            })
            .sum();
        (purged > 0).then_some(())
    });
    for topology in ["rp", "cp"] {
        let stopped = cb.post_json(&format!("/v1/topologies/{topology}/stop"), &json!({}));
        assert_eq!(stopped.status, 200, "{}", stopped.text);
    }
}

/// Event time through a repartition topic, on A and B at once: `rw` sums
/// sales per user in 10 s windows (`key_by: {field: user}`, so through
/// `weir.t1.rw.window.repartition`). A's partitions are 100 s ahead
/// when B's first sales come, at 5 s: each task's event time crosses the
/// topic in the marks its node writes with each checkpoint, and the
/// window's watermark is the least of them, so B's sales are on time and
/// every user's two windows fire once, with their counts. (Taken from
/// the records' timestamps, the watermark is at 100 s when B's sales are
/// read: they are late and dropped, and the first windows never fire.)
fn event_time_crosses_a_repartition_topic_per_task(brokers: &str, a: &Server, b: &Server) {
    let (ca, cb) = (a.client(), b.client());
    for topic in ["rw-in", "rw-out"] {
        create_topic(brokers, topic, 4, &[]).unwrap();
    }
    let doc = "name: rw\n\
               checkpoint: { interval_ms: 200 }\n\
               sources:\n\
               \x20 - { name: sales, kafka: { topic: rw-in, format: json, timestamp: { field: ts }, idle_timeout_ms: 600000 } }\n\
               operators:\n\
               \x20 - { name: window, module: windows, input: sales, key_by: { field: user }, config: { size_ms: 10000 } }\n\
               sinks:\n\
               \x20 - { name: out, kafka: { topic: rw-out }, input: window }\n";
    let put = ca.put_topology("rw", doc);
    assert_eq!(put.status, 201, "{}", put.text);
    let started = ca.post_json("/v1/topologies/rw/start", &json!({}));
    assert_eq!(started.status, 200, "{}", started.text);
    let on_a: BTreeSet<u32> = eventually("rw's partitions shared by A and B", || {
        let view = cluster_view(a);
        let at = view["assignment"]["rw"]["rw-in"].as_object()?.clone();
        let mine: BTreeSet<u32> = at
            .iter()
            .filter(|(_, e)| e["node"] == "a")
            .filter_map(|(p, _)| p.parse().ok())
            .collect();
        (at.len() == 4 && mine.len() == 2).then_some(mine)
    });
    let (keys_a, keys_b): (Vec<String>, Vec<String>) = window_keys()
        .into_iter()
        .partition(|k| on_a.contains(&weir_connectors::partition_of(k.as_bytes(), 4)));
    let users = ["u0", "u1", "u2"];
    let sales = |keys: &[String], ts: i64| -> Vec<(String, String)> {
        keys.iter()
            .flat_map(|k| {
                users.iter().map(move |u| {
                    (
                        k.clone(),
                        format!(r#"{{"user":"{u}","amount":1,"ts":{ts}}}"#),
                    )
                })
            })
            .collect()
    };
    let repartition = "weir.t1.rw.window.repartition";
    produce_keyed(brokers, "rw-in", &sales(&keys_a, 100_000));
    // A's sales reach the window before B's: through the repartition
    // topic (its marks have no key) into the window's instances.
    let written = keys_a.len() * users.len();
    eventually("A's sales in the repartition topic", || {
        let keyed = records_of(brokers, repartition)
            .iter()
            .filter(|(k, _)| !k.is_empty())
            .count();
        (keyed >= written).then_some(())
    });
    let window = |what: &str| -> u64 {
        [&ca, &cb]
            .iter()
            .flat_map(|c| {
                let status = c.get("/v1/topologies/rw");
                status.body["operators"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter(|o| o["name"] == "window")
                    .filter_map(|o| o[what].as_u64())
                    .collect::<Vec<_>>()
            })
            .sum()
    };
    eventually("A's sales in the window", || {
        (window("events_in") >= written as u64).then_some(())
    });
    produce_keyed(brokers, "rw-in", &sales(&keys_b, 5_000));
    // Every partition moves on to 300 s: both windows of each user close.
    let closing: Vec<(String, String)> = window_keys()
        .into_iter()
        .map(|k| (k, r#"{"user":"close","amount":1,"ts":300000}"#.to_string()))
        .collect();
    produce_keyed(brokers, "rw-in", &closing);
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let out = loop {
        let out = records_of(brokers, "rw-out");
        if out.len() >= 2 * users.len() {
            break out;
        }
        if std::time::Instant::now() > deadline {
            let status = |c: &server::Http| {
                let s = c.get("/v1/topologies/rw").body;
                json!({ "operators": s["operators"], "endpoints": s["endpoints"], "state": s["state"] })
            };
            panic!(
                "both windows of every user did not fire within 60 s; output {out:?}; A holds {on_a:?}; \
                 A: {}; B: {}; repartition topic: {:?}",
                status(&ca),
                status(&cb),
                records_of(brokers, repartition)
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let mut fired: BTreeMap<String, Vec<(i64, u64)>> = BTreeMap::new();
    for (key, value) in &out {
        let v: Value = serde_json::from_str(value).unwrap();
        fired
            .entry(key.clone())
            .or_default()
            .push((v["start"].as_i64().unwrap(), v["count"].as_u64().unwrap()));
    }
    for windows in fired.values_mut() {
        windows.sort();
    }
    let want: BTreeMap<String, Vec<(i64, u64)>> = users
        .iter()
        .map(|u| {
            (
                u.to_string(),
                vec![(0, keys_b.len() as u64), (100_000, keys_a.len() as u64)],
            )
        })
        .collect();
    assert_eq!(fired, want, "each user's windows once, none late");
    assert_eq!(window("late"), 0, "no sale was behind the watermark");
    let stopped = cb.post_json("/v1/topologies/rw/stop", &json!({}));
    assert_eq!(stopped.status, 200, "{}", stopped.text);
}

/// Eight keys, two in each of four partitions.
fn window_keys() -> Vec<String> {
    let mut per_partition = [0; 4];
    let mut keys = Vec::new();
    for k in 0.. {
        let key = format!("s{k}");
        let p = weir_connectors::partition_of(key.as_bytes(), 4) as usize;
        if per_partition[p] < 2 {
            per_partition[p] += 1;
            keys.push(key);
        }
        if keys.len() == 8 {
            return keys;
        }
    }
    unreachable!()
}

/// A tumbling-window count (`window-sum` as module `windows`, 10 s
/// windows) over `input` keyed by the record's key, event time from the
/// value's `ts`, to `output` (exactly-once).
fn window_doc(name: &str, input: &str, output: &str) -> String {
    format!(
        "name: {name}\n\
         checkpoint: {{ interval_ms: 200 }}\n\
         sources:\n\
         \x20 - {{ name: sales, kafka: {{ topic: {input}, format: json, timestamp: {{ field: ts }} }} }}\n\
         operators:\n\
         \x20 - {{ name: window, module: windows, input: sales, key_by: key, config: {{ size_ms: 10000 }} }}\n\
         sinks:\n\
         \x20 - {{ name: out, kafka: {{ topic: {output} }}, input: window }}\n"
    )
}

/// Writes, for each event time of `times` in turn, one event per key to
/// `win-in`.
fn produce_times(brokers: &str, keys: &[String], times: &[i64]) {
    let records: Vec<(String, String)> = times
        .iter()
        .flat_map(|t| {
            keys.iter()
                .map(move |k| (k.clone(), format!(r#"{{"amount":1,"ts":{t}}}"#)))
        })
        .collect();
    produce_keyed(brokers, "win-in", &records);
}

/// Waits until topology `name`'s source `source` has read every partition
/// of `topic` (`partitions` of them) to its end now, on whichever node of
/// `clients` holds it.
fn read_to_end(
    brokers: &str,
    (topic, partitions): (&str, i32),
    (name, source): (&str, &str),
    clients: &[&server::Http],
) {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .create()
        .unwrap();
    let ends: Vec<i64> = (0..partitions)
        .map(|p| {
            consumer
                .fetch_watermarks(topic, p, Duration::from_secs(10))
                .unwrap()
                .1
        })
        .collect();
    eventually(&format!("{topic} read to its end"), || {
        let mut at = vec![0i64; partitions as usize];
        for client in clients {
            let status = client.get(&format!("/v1/topologies/{name}"));
            let sales = status.body["endpoints"]
                .as_array()?
                .iter()
                .find(|e| e["name"] == source)?
                .clone();
            for split in sales["splits"].as_array()? {
                let p = split["split"].as_u64()? as usize;
                at[p] = at[p].max(split["position"].as_i64()?);
            }
        }
        (at.iter().zip(&ends).all(|(at, end)| at >= end)).then_some(())
    });
}

/// After B took two of `win`'s partitions (their open windows restored
/// from the changelog): an event per key for the window that already
/// fired must stay late on B too (its watermark starts where A's was, from
/// the changelog), another per key goes into the open window; a later
/// time closes it. Each key's windows fire once each, with the totals
/// across the move: [0, 10 s) 3 and [10 s, 20 s) 2. (Without the
/// watermark in the changelog, B counts the late events into a new first
/// window that fires a second time; without timers, the open windows
/// never fire on B.)
fn windows_move_with_their_timers_and_watermarks(
    brokers: &str,
    keys: &[String],
    ca: &server::Http,
    cb: &server::Http,
) {
    eventually("win's partitions shared by A and B", || {
        let view: Value = ca.get("/v1/cluster").body;
        let at = view["assignment"]["win"]["win-in"].as_object()?.clone();
        let holders: BTreeSet<String> = at.values().map(|e| e["node"].to_string()).collect();
        (at.len() == 4 && holders.len() == 2).then_some(())
    });
    produce_times(brokers, keys, &[5_000, 11_500]);
    read_to_end(brokers, ("win-in", 4), ("win", "sales"), &[ca, cb]);
    produce_times(brokers, keys, &[21_000]);
    let out = eventually("the second windows fired", || {
        let out = records_of(brokers, "win-out");
        (out.len() >= 2 * keys.len()).then_some(out)
    });
    let mut fired: BTreeMap<String, Vec<(i64, i64, u64)>> = BTreeMap::new();
    for (key, value) in &out {
        let v: Value = serde_json::from_str(value).unwrap();
        fired.entry(key.clone()).or_default().push((
            v["start"].as_i64().unwrap(),
            v["end"].as_i64().unwrap(),
            v["count"].as_u64().unwrap(),
        ));
    }
    let want: BTreeMap<String, Vec<(i64, i64, u64)>> = keys
        .iter()
        .map(|k| (k.clone(), vec![(0, 10_000, 3), (10_000, 20_000, 2)]))
        .collect();
    assert_eq!(
        fired, want,
        "each window once, with its total across the move"
    );
}

/// Exactly-once across crashes, with state: a word count over an
/// 8-partition topic on three nodes, while input flows. C dies inside a
/// transaction (`WEIR_FAULT=before-kafka-commit:6`: its output, changelog
/// records and input offsets are in the brokers' logs, not committed),
/// then B is killed with SIGKILL at whatever point it is. A ends with
/// all eight partitions, their counts restored from what the dead nodes
/// committed, and reads on from the offsets committed with them: every
/// word's counts in the `read_committed` output are 1, 2, ..., n once
/// each. B then starts again over its data directory and takes
/// partitions back; the counts go on exactly. The topology keeps a
/// standby copy of each partition (refused while A is alone), so the
/// moves restore from those copies where the new holder kept one; once
/// the input stops, every partition has its copy, caught up, on the node
/// that does not hold it. (A changelog or offsets
/// outside the transaction make the survivors count C's uncommitted
/// input twice, or read it again: the check fails, tried.)
fn counts_stay_exact_when_nodes_die_mid_run(brokers: &str) {
    const PARTITIONS: i32 = 8;
    // A cluster of its own: a node that joins replays the control topic's
    // history (earlier topologies started and stopped), and C's fault
    // must count only this scenario's transactions. Its topology has the
    // name of cluster t1's word count (`wc`, over 4 partitions): the two
    // clusters' changelogs, groups and transactional ids must not meet
    // (a changelog named after the topology alone is refused here for
    // its partition count, or restores the other cluster's counts).
    let member = |dir: &std::path::Path, id: &str, env: &[(&str, &str)]| {
        Server::start(
            dir,
            &[
                "--cluster",
                "t3",
                "--kafka-brokers",
                brokers,
                "--node-id",
                id,
            ],
            env,
        )
    };
    let dirs: Vec<tempfile::TempDir> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    create_topic(brokers, "cr-in", PARTITIONS, &[]).unwrap();
    create_topic(brokers, "cr-out", PARTITIONS, &[]).unwrap();
    let a = member(dirs[0].path(), "a", &[]);
    let ca = a.client();
    let pushed = ca.push("counter", &guest_bytes("word-count"));
    assert_eq!(pushed.status, 201, "{}", pushed.text);
    // A standby copy of each partition on another node: refused while A
    // is the cluster's only node.
    let doc = word_count_doc("wc", "cr-in", "cr-out", 200)
        .replace("checkpoint:", "cluster: { standbys: 1 }\ncheckpoint:");
    let refused = ca.put_topology("wc", &doc);
    assert_eq!(refused.status, 422, "{}", refused.text);
    assert!(
        refused.text.contains("cluster.standbys") && refused.text.contains("1 live"),
        "{}",
        refused.text
    );
    let b = member(dirs[1].path(), "b", &[]);
    let mut c = member(
        dirs[2].path(),
        "c",
        &[("WEIR_FAULT", "before-kafka-commit:6")],
    );
    eventually("A sees three live members", || {
        let view = cluster_view(&a);
        let live = view["members"]
            .as_array()?
            .iter()
            .filter(|m| m["alive"] == true)
            .count();
        (live == 3).then_some(())
    });
    let put = ca.put_topology("wc", &doc);
    assert_eq!(put.status, 201, "{}", put.text);
    let started = ca.post_json("/v1/topologies/wc/start", &json!({}));
    assert_eq!(started.status, 200, "{}", started.text);
    let holders = |view: &Value| -> BTreeMap<String, usize> {
        let mut out = BTreeMap::new();
        for (_, at) in view["assignment"]["wc"]["cr-in"]
            .as_object()
            .into_iter()
            .flatten()
        {
            *out.entry(at["node"].as_str().unwrap_or("?").to_string())
                .or_insert(0) += 1;
        }
        out
    };
    eventually("wc's partitions on A, B and C", || {
        let held = holders(&cluster_view(&a));
        (held.len() == 3 && held.values().sum::<usize>() == PARTITIONS as usize).then_some(())
    });
    let mut oracle: BTreeMap<String, u64> = BTreeMap::new();
    let words = words_of(3000, 13, &mut oracle);
    for (i, chunk) in words.chunks(100).enumerate() {
        produce_keyed(brokers, "cr-in", chunk);
        std::thread::sleep(Duration::from_millis(100));
        if i == 20 {
            let exit = eventually("C dead inside its sixth transaction", || c.try_wait());
            assert!(!exit.success(), "C exited with {exit}");
            let killed = std::process::Command::new("kill")
                .args(["-9", &b.pid().to_string()])
                .status()
                .unwrap();
            assert!(killed.success());
        }
    }
    eventually("all of wc's partitions on A", || {
        let held = holders(&cluster_view(&a));
        (held.get("a") == Some(&(PARTITIONS as usize))).then_some(())
    });
    // `weir cluster` shows the same: a row per partition, each on A.
    let listed = a.cli(&["cluster"], None);
    let text = String::from_utf8_lossy(&listed.stdout);
    assert!(listed.status.success(), "{text}");
    let rows: Vec<Vec<&str>> = text
        .lines()
        .filter(|l| l.starts_with("wc "))
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(rows.len(), PARTITIONS as usize, "{text}");
    for (p, row) in rows.iter().enumerate() {
        assert_eq!(row[..4], ["wc", "cr-in", &p.to_string(), "a"], "{text}");
    }
    let exact = |oracle: &BTreeMap<String, u64>| {
        let total: u64 = oracle.values().sum();
        let out = eventually("every word counted", || {
            let out = records_of_n(brokers, "cr-out", PARTITIONS);
            (out.len() as u64 >= total).then_some(out)
        });
        assert_counts(&out, oracle);
    };
    exact(&oracle);
    // B starts again over its data directory, whose state is behind what
    // its last transactions committed: partitions move back to it, it
    // takes their state from the changelog, and the counts go on.
    drop(b);
    let b = member(dirs[1].path(), "b", &[]);
    eventually("wc's partitions on A and B", || {
        let held = holders(&cluster_view(&b));
        (held.len() == 2 && held.values().sum::<usize>() == PARTITIONS as usize).then_some(())
    });
    let more = words_of(1000, 7, &mut oracle);
    produce_keyed(brokers, "cr-in", &more);
    exact(&oracle);
    // Once the input stops, each partition has a standby copy on the node
    // that does not hold it, at the changelog's end.
    eventually("wc's standby copies warm", || {
        let view = cluster_view(&a);
        let mut copies = BTreeSet::new();
        for m in view["members"]
            .as_array()?
            .iter()
            .filter(|m| m["alive"] == true)
        {
            let held: BTreeSet<String> = m["partitions"]["wc"]["cr-in"]
                .as_array()?
                .iter()
                .map(Value::to_string)
                .collect();
            for (p, lag) in m["standbys"]["wc"].as_object()? {
                if held.contains(p) || *lag != json!(0) {
                    return None;
                }
                copies.insert(p.clone());
            }
        }
        // The same per partition: one copy, not on its holder.
        let at = view["assignment"]["wc"]["cr-in"].as_object()?;
        let each = at.values().all(|held| {
            held["standbys"].as_array().is_some_and(|copies| {
                copies.len() == 1 && copies[0]["node"] != held["node"] && copies[0]["lag"] == 0
            })
        });
        (copies.len() == PARTITIONS as usize && at.len() == PARTITIONS as usize && each)
            .then_some(())
    });

    // A module upgrade through B while wc runs: every node restarts its
    // job on `counter@2` from the state its last transaction committed,
    // without a move of partitions. The counts go on from version 1's
    // (1..n exactly), and every partition's new counts come from
    // version 2, which marks its output.
    let cb = b.client();
    let pushed = cb.push("counter", &guest_bytes("word-count-v2"));
    assert_eq!(pushed.status, 201, "{}", pushed.text);
    let other_input = word_count_doc("wc", "cr-out", "cr-out", 200);
    let refused = cb.put_topology("wc", &other_input);
    assert_eq!(refused.status, 409, "{}", refused.text);
    assert_eq!(
        refused.body["error"]["code"], "upgrade_refused",
        "{}",
        refused.text
    );
    let upgraded = cb.put_topology("wc", &doc);
    assert_eq!(upgraded.status, 200, "{}", upgraded.text);
    assert_eq!(
        upgraded.body["modules"]["counter"], "counter@2",
        "{}",
        upgraded.text
    );
    for (node, client) in [("a", &ca), ("b", &cb)] {
        eventually(&format!("wc running counter@2 on {node}"), || {
            let t = client.get("/v1/topologies/wc").body;
            (t["modules"]["counter"] == "counter@2" && t["state"] == "running").then_some(())
        });
    }
    let before = oracle.clone();
    let last = words_of(400, 11, &mut oracle);
    produce_keyed(brokers, "cr-in", &last);
    let total: u64 = oracle.values().sum();
    let out = eventually("every word counted after the upgrade", || {
        let out = records_of_n(brokers, "cr-out", PARTITIONS);
        (out.len() as u64 >= total).then_some(out)
    });
    assert_counts(&out, &oracle);
    let mut upgraded_partitions = BTreeSet::new();
    for (word, value) in &out {
        let v: Value = serde_json::from_str(value).unwrap();
        let new = v["count"].as_u64().unwrap() > before.get(word).copied().unwrap_or(0);
        assert_eq!(
            v["version"] == 2,
            new,
            "version 2 counted exactly the new events: {value}"
        );
        if new {
            upgraded_partitions.insert(weir_connectors::partition_of(
                word.as_bytes(),
                PARTITIONS as u32,
            ));
        }
    }
    assert_eq!(
        upgraded_partitions.len(),
        PARTITIONS as usize,
        "every partition upgraded"
    );

    let stopped = ca.post_json("/v1/topologies/wc/stop", &json!({}));
    assert_eq!(stopped.status, 200, "{}", stopped.text);
    // No node runs it now: a state query says so, and to ask again.
    let unowned = cb.get("/v1/topologies/wc/operators/count/state/count?key=c1");
    assert_eq!(unowned.status, 503, "{}", unowned.text);
    assert_eq!(
        unowned.body["error"]["code"], "partition_unowned",
        "{}",
        unowned.text
    );
    drop((b, c));
    a.stop();
}

/// `n` records of the 97 words `c0`..`c96`, each keyed by itself (the
/// i-th is `c{(i * step) % 97}`), counted into `oracle`.
fn words_of(n: u64, step: u64, oracle: &mut BTreeMap<String, u64>) -> Vec<(String, String)> {
    (0..n)
        .map(|i| {
            let w = format!("c{}", (i * step) % 97);
            *oracle.entry(w.clone()).or_insert(0) += 1;
            (w.clone(), w)
        })
        .collect()
}

/// A word count (module `counter`, keyed by the record's key) from
/// `input` to `output`, checkpointed every `interval_ms`.
fn word_count_doc(name: &str, input: &str, output: &str, interval_ms: u64) -> String {
    format!(
        "name: {name}\n\
         checkpoint: {{ interval_ms: {interval_ms} }}\n\
         sources:\n\
         \x20 - {{ name: words, kafka: {{ topic: {input}, format: text }} }}\n\
         operators:\n\
         \x20 - {{ name: count, module: counter, input: words, key_by: key }}\n\
         sinks:\n\
         \x20 - {{ name: out, kafka: {{ topic: {output} }}, input: count }}\n"
    )
}

/// Each word's counts in a word count's output `out` are 1, 2, ..., n
/// once each, n its count in `oracle` (a count restarted, skipped or
/// repeated fails), and no other word is there.
fn assert_counts(out: &[(String, String)], oracle: &BTreeMap<String, u64>) {
    let mut counts: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    for (word, value) in out {
        let v: Value = serde_json::from_str(value).unwrap();
        assert_eq!(v["word"], json!(word), "{value}");
        counts
            .entry(word.clone())
            .or_default()
            .push(v["count"].as_u64().unwrap());
    }
    for (word, n) in oracle {
        let mut seen = counts.remove(word).unwrap_or_default();
        seen.sort_unstable();
        assert_eq!(seen, (1..=*n).collect::<Vec<_>>(), "the counts of {word}");
    }
    assert!(counts.is_empty(), "words nobody wrote: {counts:?}");
}

/// Every `(key, value)` of `topic` (4 partitions) a `read_committed`
/// reader sees now.
fn records_of(brokers: &str, topic: &str) -> Vec<(String, String)> {
    records_of_n(brokers, topic, 4)
}

/// Every `(key, value)` of `topic` (`partitions` partitions) a
/// `read_committed` reader sees now.
fn records_of_n(brokers: &str, topic: &str, partitions: i32) -> Vec<(String, String)> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", "weir-test-reader")
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "true")
        .set("isolation.level", "read_committed")
        .create()
        .unwrap();
    let mut list = TopicPartitionList::new();
    for p in 0..partitions {
        list.add_partition_offset(topic, p, Offset::Beginning)
            .unwrap();
    }
    consumer.assign(&list).unwrap();
    let mut open: BTreeSet<i32> = (0..partitions).collect();
    let mut out = Vec::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while !open.is_empty() && std::time::Instant::now() < deadline {
        match consumer.poll(Duration::from_millis(100)) {
            Some(Ok(m)) => out.push((
                String::from_utf8_lossy(m.key().unwrap_or_default()).into_owned(),
                String::from_utf8_lossy(m.payload().unwrap_or_default()).into_owned(),
            )),
            Some(Err(RdError::PartitionEOF(p))) => {
                open.remove(&p);
            }
            _ => {}
        }
    }
    assert!(open.is_empty(), "could not read {topic} to its end");
    out
}

/// Writes `(key, value)` records to `topic`.
fn produce_keyed(brokers: &str, topic: &str, records: &[(String, String)]) {
    let producer: ThreadedProducer<DefaultProducerContext> = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("partitioner", "murmur2_random")
        .create()
        .unwrap();
    for (key, value) in records {
        let record = BaseRecord::<str, str>::to(topic).key(key).payload(value);
        producer.send(record).map_err(|(e, _)| e).unwrap();
    }
    producer.flush(Duration::from_secs(30)).unwrap();
}

/// How often each key occurs in `topic` for a `read_committed` reader now.
fn word_counts(brokers: &str, topic: &str) -> BTreeMap<String, u64> {
    let mut counts = BTreeMap::new();
    for (key, _) in records_of(brokers, topic) {
        *counts.entry(key).or_insert(0) += 1;
    }
    counts
}
