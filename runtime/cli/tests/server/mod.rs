//! Shared by the API tests: the real `weir serve` on an ephemeral port with
//! a temporary data directory, and a small HTTP client.

#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

/// A running `weir serve`.
pub struct Server {
    child: Child,
    pub url: String,
    pub token: Option<String>,
}

impl Server {
    /// Starts `weir serve` on 127.0.0.1:0 over `data`, with `extra` flags
    /// and `env`, and waits for its ready line.
    pub fn start(data: &Path, extra: &[&str], env: &[(&str, &str)]) -> Server {
        Server::launch(Command::new(env!("CARGO_BIN_EXE_weir")), data, extra, env)
    }

    /// [`Server::start`] with the open-files limit raised to `nofile` (or
    /// the hard limit, if lower) first: a server with many topologies
    /// holds a state file and stream segments for each.
    pub fn start_raising_nofile(data: &Path, extra: &[&str], nofile: u64) -> Server {
        let mut cmd = Command::new("sh");
        cmd.arg("-c")
            .arg(format!(
                "ulimit -n {nofile} 2>/dev/null || ulimit -n \"$(ulimit -Hn)\"; exec \"$0\" \"$@\""
            ))
            .arg(env!("CARGO_BIN_EXE_weir"));
        Server::launch(cmd, data, extra, &[])
    }

    fn launch(mut cmd: Command, data: &Path, extra: &[&str], env: &[(&str, &str)]) -> Server {
        cmd.args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
            .arg(data)
            .args(extra)
            .env_remove("WEIR_TOKEN")
            .env_remove("WEIR_LISTEN")
            .env_remove("WEIR_DATA_DIR")
            .env(
                "WEIR_LOG",
                std::env::var("TEST_WEIR_LOG").unwrap_or_else(|_| "warn".into()),
            )
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("spawn weir serve");
        let stdout = child.stdout.take().unwrap();
        let mut line = String::new();
        BufReader::new(stdout).read_line(&mut line).unwrap();
        let url = line
            .trim()
            .strip_prefix("weir serve: listening on ")
            .unwrap_or_else(|| panic!("unexpected ready line {line:?}"))
            .to_string();
        let token = env
            .iter()
            .find(|(k, _)| *k == "WEIR_TOKEN")
            .map(|(_, v)| v.to_string());
        Server { child, url, token }
    }

    /// Sends SIGTERM and waits for a clean exit.
    pub fn stop(mut self) {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                assert!(status.success(), "weir serve exited with {status}");
                return;
            }
            assert!(Instant::now() < deadline, "weir serve did not stop");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The server's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The exit status, when the server has exited.
    pub fn try_wait(&mut self) -> Option<std::process::ExitStatus> {
        self.child.try_wait().unwrap()
    }

    pub fn client(&self) -> Http {
        Http {
            base: self.url.clone(),
            token: self.token.clone(),
            // A connection per request: a pooled one the server has just
            // closed (after a refusal it answers with `Connection: close`)
            // would fail the next request for a reason no test names.
            agent: ureq::Agent::config_builder()
                .http_status_as_error(false)
                .max_idle_connections(0)
                .build()
                .into(),
        }
    }

    /// Runs the `weir` CLI against this server.
    pub fn cli(&self, args: &[&str], stdin: Option<&Path>) -> Output {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_weir"));
        cmd.args(args)
            .env("WEIR_SERVER", &self.url)
            .env_remove("WEIR_TOKEN")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        if let Some(t) = &self.token {
            cmd.env("WEIR_TOKEN", t);
        }
        match stdin {
            Some(p) => cmd.stdin(std::fs::File::open(p).unwrap()),
            None => cmd.stdin(Stdio::null()),
        };
        cmd.output().unwrap()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A blocking HTTP client that keeps every status.
pub struct Http {
    pub base: String,
    pub token: Option<String>,
    agent: ureq::Agent,
}

/// A response: status and body (JSON when it parses, else a string).
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub body: Value,
    pub text: String,
}

impl Answer {
    /// The error code of an error answer.
    pub fn code(&self) -> &str {
        self.body["error"]["code"].as_str().unwrap_or("")
    }
}

impl Http {
    /// The same client, giving up on a call after `limit` (a liveness
    /// deadline: a call that takes longer panics with a timeout).
    pub fn with_deadline(&self, limit: Duration) -> Http {
        Http {
            base: self.base.clone(),
            token: self.token.clone(),
            agent: ureq::Agent::config_builder()
                .http_status_as_error(false)
                .timeout_global(Some(limit))
                .build()
                .into(),
        }
    }

    pub fn request(
        &self,
        method: &str,
        path: &str,
        body: Option<(&[u8], &str)>,
        headers: &[(&str, &str)],
    ) -> Answer {
        let url = format!("{}{path}", self.base);
        let with = |mut req: ureq::RequestBuilder<ureq::typestate::WithBody>| {
            if let Some(t) = &self.token {
                req = req.header("Authorization", format!("Bearer {t}"));
            }
            for (k, v) in headers {
                req = req.header(*k, *v);
            }
            req
        };
        let without = |mut req: ureq::RequestBuilder<ureq::typestate::WithoutBody>| {
            if let Some(t) = &self.token {
                req = req.header("Authorization", format!("Bearer {t}"));
            }
            for (k, v) in headers {
                req = req.header(*k, *v);
            }
            req
        };
        let res = match method {
            "GET" => without(self.agent.get(&url)).call(),
            "DELETE" => without(self.agent.delete(&url)).call(),
            m => {
                let req = with(match m {
                    "PUT" => self.agent.put(&url),
                    "PATCH" => self.agent.patch(&url),
                    _ => self.agent.post(&url),
                });
                match body {
                    Some((b, ct)) => req.header("Content-Type", ct).send(b),
                    None => req.send_empty(),
                }
            }
        };
        let mut res = res.unwrap_or_else(|e| panic!("{method} {path}: {e}"));
        let status = res.status().as_u16();
        let text = res
            .body_mut()
            .with_config()
            .limit(256 << 20)
            .read_to_string()
            .unwrap_or_default();
        let body = serde_json::from_str(&text).unwrap_or(Value::String(text.clone()));
        Answer { status, body, text }
    }

    pub fn get(&self, path: &str) -> Answer {
        self.request("GET", path, None, &[])
    }

    pub fn post_json(&self, path: &str, body: &Value) -> Answer {
        self.request(
            "POST",
            path,
            Some((body.to_string().as_bytes(), "application/json")),
            &[],
        )
    }

    pub fn push(&self, name: &str, bytes: &[u8]) -> Answer {
        self.request(
            "POST",
            &format!("/v1/modules/{name}"),
            Some((bytes, "application/wasm")),
            &[],
        )
    }

    pub fn put_topology(&self, name: &str, text: &str) -> Answer {
        self.request(
            "PUT",
            &format!("/v1/topologies/{name}"),
            Some((text.as_bytes(), "application/yaml")),
            &[],
        )
    }

    pub fn produce(&self, stream: &str, lines: &str) -> Answer {
        self.request(
            "POST",
            &format!("/v1/streams/{stream}/events"),
            Some((lines.as_bytes(), "application/x-ndjson")),
            &[],
        )
    }

    /// Every event of `stream` from offset 0.
    pub fn events(&self, stream: &str) -> Vec<Value> {
        let mut all = Vec::new();
        let mut offset = 0;
        loop {
            let a = self.get(&format!(
                "/v1/streams/{stream}/events?offset={offset}&limit=1000"
            ));
            assert_eq!(a.status, 200, "{}", a.text);
            let events = a.body["events"].as_array().unwrap().clone();
            if events.is_empty() {
                return all;
            }
            offset = a.body["next_offset"].as_u64().unwrap();
            all.extend(events);
        }
    }
}

/// The word-count topology of the README.
pub fn word_count_yaml() -> String {
    std::fs::read_to_string(repo().join("guest-examples/topologies/word-count.yaml")).unwrap()
}

pub fn repo() -> PathBuf {
    weir_fixtures::repo_root()
}

/// The sample text, as JSON lines.
pub fn lines_jsonl() -> String {
    weir_fixtures::sample_lines()
}

/// Word counts of `jsonl` lines as split-words splits them.
pub fn expected_counts(jsonl: &str) -> std::collections::BTreeMap<String, u64> {
    weir_fixtures::word_counts(jsonl)
}

/// The highest count per word in the `counts` stream.
pub fn counts_of(events: &[Value]) -> std::collections::BTreeMap<String, u64> {
    let mut out = std::collections::BTreeMap::new();
    for e in events {
        let word = e["value"]["word"].as_str().unwrap().to_string();
        let n = e["value"]["count"].as_u64().unwrap();
        let best = out.entry(word).or_insert(0);
        *best = n.max(*best);
    }
    out
}

/// Polls `check` until it returns `Some` or 60 s pass.
pub fn eventually<T>(what: &str, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(v) = check() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}
