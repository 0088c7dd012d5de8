//! The `weir` commands that drive a server over its REST API: `module`,
//! `topology`, `savepoint`, `produce`, `consume`, `state`, `dead-letter`,
//! `cluster`.
//!
//! Output: human-readable tables on stdout by default, the server's JSON
//! with `--json`; progress (uploads, waits) on stderr when it is a terminal.
//! Exit codes are [`Failure`]'s.

pub mod cluster;
pub mod letters;
pub mod listing;
pub mod modules;
pub mod state;
pub mod streams;
pub mod topologies;

use std::io::{IsTerminal, Read, Write};
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use clap::Args;
use serde_json::Value;

/// Where the server is and how to talk to it: flattened into each client
/// command (global within it, so `weir module --json ls` and `weir module
/// ls --json` both work), and not offered by `run` or `serve`.
#[derive(Args, Clone, Debug)]
pub struct ClientOpts {
    /// The server's URL.
    #[arg(
        long,
        env = "WEIR_SERVER",
        default_value = "http://127.0.0.1:7070",
        global = true
    )]
    pub server: String,
    /// Bearer token, when the server has one.
    #[arg(long, env = "WEIR_TOKEN", global = true, hide_env_values = true)]
    pub token: Option<String>,
    /// Print the server's JSON instead of tables.
    #[arg(long, global = true)]
    pub json: bool,
}

/// Why a client command failed; each kind has its exit code.
#[derive(Debug)]
pub enum Failure {
    /// The server refused the request as invalid (400, 413, 415, 422): 2.
    Invalid(String),
    /// Something named does not exist (404): 3.
    NotFound(String),
    /// The request conflicts with the current state (409): 4.
    Conflict(String),
    /// No token, or a wrong one (401): 5.
    Unauthorized(String),
    /// The server could not be reached: 6.
    Unreachable(String),
    /// The server failed (5xx): 7.
    Server(String),
    /// Anything else (a local file, a bad answer): 1.
    Other(String),
}

impl Failure {
    /// The same failure, its message followed by `context`.
    pub fn context(self, context: String) -> Failure {
        let add = |m: String| format!("{m} ({context})");
        match self {
            Failure::Invalid(m) => Failure::Invalid(add(m)),
            Failure::NotFound(m) => Failure::NotFound(add(m)),
            Failure::Conflict(m) => Failure::Conflict(add(m)),
            Failure::Unauthorized(m) => Failure::Unauthorized(add(m)),
            Failure::Unreachable(m) => Failure::Unreachable(add(m)),
            Failure::Server(m) => Failure::Server(add(m)),
            Failure::Other(m) => Failure::Other(add(m)),
        }
    }
}

impl Failure {
    pub fn exit_code(&self) -> ExitCode {
        ExitCode::from(match self {
            Failure::Other(_) => 1,
            Failure::Invalid(_) => 2,
            Failure::NotFound(_) => 3,
            Failure::Conflict(_) => 4,
            Failure::Unauthorized(_) => 5,
            Failure::Unreachable(_) => 6,
            Failure::Server(_) => 7,
        })
    }

    pub fn message(&self) -> &str {
        match self {
            Failure::Invalid(m)
            | Failure::NotFound(m)
            | Failure::Conflict(m)
            | Failure::Unauthorized(m)
            | Failure::Unreachable(m)
            | Failure::Server(m)
            | Failure::Other(m) => m,
        }
    }
}

impl From<std::io::Error> for Failure {
    fn from(e: std::io::Error) -> Self {
        Failure::Other(e.to_string())
    }
}

pub type Outcome = Result<(), Failure>;

/// A blocking client of one server.
pub struct Client {
    base: String,
    token: Option<String>,
    agent: ureq::Agent,
    pub json: bool,
}

/// A body to send.
pub enum Body<'a> {
    Empty,
    Json(&'a Value),
    Bytes(&'a [u8], &'static str),
}

/// The server's URL without a trailing `/`; `host:port` alone means
/// `http://host:port` (a URL with another scheme is kept, and fails with
/// the HTTP client's own message).
fn server_base(server: &str) -> String {
    let server = server.trim().trim_end_matches('/');
    if server.contains("://") {
        server.to_string()
    } else {
        format!("http://{server}")
    }
}

impl Client {
    pub fn new(opts: &ClientOpts) -> Client {
        let agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_connect(Some(Duration::from_secs(5)))
            .build()
            .into();
        Client {
            base: server_base(&opts.server),
            token: opts.token.clone(),
            agent,
            json: opts.json,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    fn auth<B>(&self, req: ureq::RequestBuilder<B>) -> ureq::RequestBuilder<B> {
        match &self.token {
            Some(t) => req.header("Authorization", format!("Bearer {t}")),
            None => req,
        }
    }

    fn unreachable(&self, e: ureq::Error) -> Failure {
        Failure::Unreachable(format!(
            "cannot reach the server at {}: {e} (start one with `weir serve`, or point --server / WEIR_SERVER at it)",
            self.base
        ))
    }

    /// Sends a request; returns the answer's JSON on success and the
    /// server's error as a [`Failure`] otherwise.
    pub fn call(&self, method: &str, path: &str, body: Body<'_>) -> Result<(u16, Value), Failure> {
        let (status, text) = self.call_text(method, path, body)?;
        let value: Value = if text.trim().is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).map_err(|e| {
                Failure::Other(format!("the server's answer is not JSON ({e}): {text}"))
            })?
        };
        Ok((status, value))
    }

    /// Sends a request; returns the answer's text as the server wrote it
    /// (key order kept) on success, the server's error as a [`Failure`]
    /// otherwise.
    pub fn call_text(
        &self,
        method: &str,
        path: &str,
        body: Body<'_>,
    ) -> Result<(u16, String), Failure> {
        let url = self.url(path);
        let result = match (method, body) {
            ("GET", _) => self.auth(self.agent.get(&url)).call(),
            ("DELETE", _) => self.auth(self.agent.delete(&url)).call(),
            (m, body) => {
                let req = match m {
                    "PUT" => self.agent.put(&url),
                    _ => self.agent.post(&url),
                };
                let req = self.auth(req);
                match body {
                    Body::Empty => req.send_empty(),
                    Body::Json(v) => req
                        .header("Content-Type", "application/json")
                        .send(v.to_string().as_bytes()),
                    Body::Bytes(b, ct) => req.header("Content-Type", ct).send(b),
                }
            }
        };
        let mut res = result.map_err(|e| self.unreachable(e))?;
        let status = res.status().as_u16();
        let text = res
            .body_mut()
            .with_config()
            .limit(256 << 20)
            .read_to_string()
            .map_err(|e| Failure::Other(format!("cannot read the server's answer: {e}")))?;
        if status < 400 {
            return Ok((status, text));
        }
        let value = serde_json::from_str(&text).unwrap_or(Value::Null);
        Err(failure_of(status, &value))
    }

    /// A streaming GET (server-sent events): the body as a reader.
    pub fn stream(&self, path: &str) -> Result<impl Read + use<>, Failure> {
        let req = self
            .auth(self.agent.get(self.url(path)))
            .header("Accept", "text/event-stream");
        let mut res = req.call().map_err(|e| self.unreachable(e))?;
        let status = res.status().as_u16();
        if status >= 400 {
            let text = res.body_mut().read_to_string().unwrap_or_default();
            let value = serde_json::from_str(&text).unwrap_or(Value::Null);
            return Err(failure_of(status, &value));
        }
        Ok(res.into_body().into_reader())
    }
}

/// The server's error answer as a [`Failure`], its message and details
/// kept.
fn failure_of(status: u16, value: &Value) -> Failure {
    let error = &value["error"];
    let code = error["code"].as_str().unwrap_or("error");
    let mut message = format!(
        "{} ({code}, HTTP {status})",
        error["message"]
            .as_str()
            .unwrap_or("the server gave no reason")
    );
    if let Some(problems) = error["details"]["problems"].as_array() {
        for p in problems {
            message.push_str(&format!(
                "\n  {}: {}: {}",
                p["severity"].as_str().unwrap_or("error"),
                p["path"].as_str().unwrap_or(""),
                p["message"].as_str().unwrap_or("")
            ));
        }
    }
    match status {
        401 => Failure::Unauthorized(message),
        404 => Failure::NotFound(message),
        409 => Failure::Conflict(message),
        s if s >= 500 => Failure::Server(message),
        _ => Failure::Invalid(message),
    }
}

/// Writes to stdout, ignoring a closed pipe (`weir consume | head`).
pub fn out(text: &str) {
    let mut stdout = std::io::stdout().lock();
    let _ = stdout.write_all(text.as_bytes());
    let _ = stdout.flush();
}

/// Prints `value` as pretty JSON.
pub fn print_json(value: &Value) {
    out(&format!(
        "{}\n",
        serde_json::to_string_pretty(value).unwrap_or_default()
    ));
}

/// A table with a header row, columns padded to their widest cell.
pub fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            widths[i] = widths[i].max(cell.chars().count());
        }
    }
    let line = |cells: Vec<String>| {
        let mut s = String::new();
        for (i, c) in cells.iter().enumerate() {
            if i + 1 == cells.len() {
                s.push_str(c);
            } else {
                s.push_str(&format!("{c:<w$}  ", w = widths[i]));
            }
        }
        s.trim_end().to_string() + "\n"
    };
    let mut text = line(header.iter().map(|h| h.to_string()).collect());
    for row in rows {
        text.push_str(&line(row.clone()));
    }
    text
}

/// A cell from a JSON field (`-` when absent).
pub fn cell(value: &Value) -> String {
    match value {
        Value::Null => "-".into(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// A spinner with elapsed time on stderr while something slow runs; only
/// when stderr is a terminal. Cleared when dropped.
pub struct Progress {
    done: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Progress {
    pub fn start(what: String) -> Progress {
        let done = Arc::new(AtomicBool::new(false));
        let thread = std::io::stderr().is_terminal().then(|| {
            let done = done.clone();
            std::thread::spawn(move || {
                let started = Instant::now();
                let frames = ['|', '/', '-', '\\'];
                let mut i = 0;
                while !done.load(Ordering::Relaxed) {
                    eprint!(
                        "\r{} {what} {:.1}s",
                        frames[i % frames.len()],
                        started.elapsed().as_secs_f64()
                    );
                    i += 1;
                    std::thread::sleep(Duration::from_millis(100));
                }
                eprint!("\r\x1b[2K");
            })
        });
        Progress { done, thread }
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        self.done.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Encodes a path segment (names are restricted, but keys are not).
pub fn encode(segment: &str) -> String {
    let mut out = String::new();
    for b in segment.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_server_without_a_scheme_is_http() {
        assert_eq!(server_base("127.0.0.1:7481"), "http://127.0.0.1:7481");
        assert_eq!(server_base("https://w.example/"), "https://w.example");
        assert_eq!(server_base("http://localhost:1/"), "http://localhost:1");
    }
}
