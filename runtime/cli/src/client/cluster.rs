//! `weir cluster`: a cluster node's view (`GET /v1/cluster`) as tables:
//! the members, who holds each input partition of each topology, its lag
//! and its standby copies (`node:lag`), and the control records the node
//! could not apply.

use serde_json::Value;

use super::{Body, Client, Outcome, cell, out, print_json, table};

/// `weir cluster`.
pub fn status(client: &Client) -> Outcome {
    let (_, v) = client.call("GET", "/v1/cluster", Body::Empty)?;
    if client.json {
        print_json(&v);
        return Ok(());
    }
    out(&render(&v));
    Ok(())
}

/// The tables of a `GET /v1/cluster` answer.
fn render(v: &Value) -> String {
    let mut text = format!(
        "cluster {} (control topic {}), asked node {}, which applied it to offset {}\n\n",
        cell(&v["cluster"]),
        cell(&v["topic"]),
        cell(&v["node"]),
        cell(&v["applied_offset"]),
    );
    let members: Vec<Vec<String>> = v["members"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|m| {
            let runs: Vec<&str> = m["running"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
                .collect();
            vec![
                cell(&m["node"]),
                cell(&m["address"]),
                cell(&m["version"]),
                cell(&m["applied_offset"]),
                if m["alive"] == true { "yes" } else { "no" }.to_string(),
                if runs.is_empty() {
                    "-".to_string()
                } else {
                    runs.join(",")
                },
            ]
        })
        .collect();
    text.push_str(&table(
        &["NODE", "ADDRESS", "VERSION", "APPLIED", "ALIVE", "RUNS"],
        &members,
    ));
    let mut partitions = Vec::new();
    for (topology, topics) in v["assignment"].as_object().into_iter().flatten() {
        for (topic, held) in topics.as_object().into_iter().flatten() {
            for (partition, at) in held.as_object().into_iter().flatten() {
                let standbys: Vec<String> = at["standbys"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|s| format!("{}:{}", cell(&s["node"]), cell(&s["lag"])))
                    .collect();
                partitions.push(vec![
                    topology.clone(),
                    topic.clone(),
                    partition.clone(),
                    cell(&at["node"]),
                    cell(&at["lag"]),
                    if standbys.is_empty() {
                        "-".to_string()
                    } else {
                        standbys.join(",")
                    },
                ]);
            }
        }
    }
    // Partitions in number order, not as text.
    partitions.sort_by_key(|row| {
        (
            row[0].clone(),
            row[1].clone(),
            row[2].parse::<i64>().unwrap_or(i64::MAX),
        )
    });
    if !partitions.is_empty() {
        text.push('\n');
        text.push_str(&table(
            &["TOPOLOGY", "TOPIC", "PARTITION", "NODE", "LAG", "STANDBYS"],
            &partitions,
        ));
    }
    let problems: Vec<Vec<String>> = v["problems"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|p| vec![cell(&p["offset"]), cell(&p["key"]), cell(&p["error"])])
        .collect();
    if !problems.is_empty() {
        text.push_str(&format!(
            "\n{} control record(s) this node could not apply:\n",
            problems.len()
        ));
        text.push_str(&table(&["OFFSET", "KEY", "ERROR"], &problems));
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn members_partitions_in_number_order_and_problems_are_shown() {
        let v = json!({
            "cluster": "prod", "topic": "weir-cluster-prod", "node": "a", "applied_offset": 7,
            "members": [
                { "node": "a", "address": "http://a", "version": "0.1.0", "applied_offset": 7, "alive": true, "running": ["wc"] },
                { "node": "b", "address": "http://b", "version": "0.1.0", "applied_offset": 5, "alive": false, "running": [] }
            ],
            "assignment": { "wc": { "in": {
                "10": { "node": "b", "lag": 3, "standbys": [{ "node": "a", "lag": 0 }] },
                "2": { "node": "a", "lag": null }
            } } },
            "problems": [ { "offset": 4, "key": "nonsense", "error": "an unknown key" } ]
        });
        let text = render(&v);
        assert!(text.starts_with("cluster prod (control topic weir-cluster-prod), asked node a"));
        let row = |start: &str| -> Vec<String> {
            let line = text.lines().find(|l| l.starts_with(start)).unwrap();
            line.split_whitespace().map(str::to_string).collect()
        };
        assert_eq!(row("a "), ["a", "http://a", "0.1.0", "7", "yes", "wc"]);
        assert_eq!(row("b "), ["b", "http://b", "0.1.0", "5", "no", "-"]);
        let partitions: Vec<Vec<String>> = text
            .lines()
            .filter(|l| l.starts_with("wc "))
            .map(|l| l.split_whitespace().map(str::to_string).collect())
            .collect();
        assert_eq!(
            partitions,
            [
                ["wc", "in", "2", "a", "-", "-"],
                ["wc", "in", "10", "b", "3", "a:0"]
            ],
            "in number order:\n{text}"
        );
        assert!(text.contains("1 control record(s) this node could not apply"));
        assert_eq!(row("4 "), ["4", "nonsense", "an", "unknown", "key"]);
    }
}
