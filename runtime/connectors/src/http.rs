//! The HTTP sink (`http:` in a topology), for alerts and webhooks: POSTs
//! each event as a JSON object in Weir's wire format (`{"key", "value",
//! "timestamp", "headers"}`), or up to `batch` events as a JSON array, with
//! the document's headers.
//!
//! Delivery is at-least-once, made dedupable: every request carries an
//! `Idempotency-Key` header that names its events the same way on every
//! try and after every recovery (`<lineage>-<checkpoint>-<index of its first
//! event>` under checkpoints), so a receiver that remembers keys sees each
//! event once. A 5xx, 408, 429, a timeout or a lost connection is retried
//! with [`Backoff`]; when retries run out the sink fails and the topology
//! restarts from its last checkpoint, which posts the same requests again.
//! Any other answer (a 4xx: the receiver refuses these events) sends them
//! to the dead-letter output with the status and the start of the body.
//!
//! Not here: https (use a local TLS-terminating proxy for now).

use std::time::Duration;

use weir_io::{CheckpointRef, DeadLetter, DeadLetterFn, FailureContext, FailureKind, Sink};
use weir_topology::HttpSinkDoc;
use weir_types::Batch;
use weir_types::wire::format_event;

use crate::backoff::Backoff;

/// The header that names a request's events.
pub const IDEMPOTENCY_HEADER: &str = "Idempotency-Key";
/// Default time limit of one request.
pub const DEFAULT_HTTP_TIMEOUT: Duration = Duration::from_secs(10);
/// Most bytes of a refusing answer's body read, and characters of it kept
/// in a dead letter.
const MAX_ERROR_BODY_BYTES: u64 = 64 * 1024;
const MAX_ERROR_CHARS: usize = 512;

/// What an [`HttpSink`] posts where.
#[derive(Debug, Clone)]
pub struct HttpSinkConfig {
    /// The sink's name, in its dead letters.
    pub name: String,
    pub url: String,
    pub headers: Vec<(String, String)>,
    /// Events per request; 1 posts objects, more posts arrays.
    pub batch: usize,
    pub timeout: Duration,
    pub backoff: Backoff,
}

impl HttpSinkConfig {
    pub fn from_doc(name: &str, doc: &HttpSinkDoc) -> HttpSinkConfig {
        HttpSinkConfig {
            name: name.to_string(),
            url: doc.url.clone(),
            headers: doc
                .headers
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            batch: doc.batch.unwrap_or(1).max(1),
            timeout: doc
                .timeout_ms
                .map(Duration::from_millis)
                .unwrap_or(DEFAULT_HTTP_TIMEOUT),
            backoff: Backoff {
                retries: doc.max_retries.unwrap_or(Backoff::default().retries),
                ..Backoff::default()
            },
        }
    }
}

/// Posts events to an HTTP endpoint.
pub struct HttpSink {
    config: HttpSinkConfig,
    agent: ureq::Agent,
    dead_letters: Option<DeadLetterFn>,
    /// Names this process's requests when there are no checkpoints.
    run: String,
    /// Batches written without checkpoints so far.
    written: u64,
}

/// How one try of a request ended.
enum Answer {
    Accepted,
    /// Worth another try.
    Retry(String),
    /// The receiver refuses these events.
    Refused(String),
}

impl HttpSink {
    pub fn new(config: HttpSinkConfig, dead_letters: Option<DeadLetterFn>) -> HttpSink {
        let agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(config.timeout))
            .build()
            .into();
        let started = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        HttpSink {
            config,
            agent,
            dead_letters,
            run: format!("run{}-{started:x}", std::process::id()),
            written: 0,
        }
    }

    /// Posts `batch` in requests of up to `batch` events, keyed
    /// `<prefix>-<index of the first event>`.
    fn post_all(&mut self, prefix: &str, batch: &Batch) -> Result<(), String> {
        let events: Vec<String> = batch.iter().map(|e| format_event(&e)).collect();
        let all: Vec<_> = batch.iter().collect();
        for (n, chunk) in events.chunks(self.config.batch).enumerate() {
            let first = n * self.config.batch;
            let body = if self.config.batch == 1 {
                chunk[0].clone()
            } else {
                format!("[{}]", chunk.join(","))
            };
            let key = format!("{prefix}-{first}");
            if let Some(reason) = self.post(&key, body)? {
                for event in &all[first..first + chunk.len()] {
                    self.dead_letter(event.to_event(), &reason)?;
                }
            }
        }
        Ok(())
    }

    /// One request, retried; `Some(reason)` when the receiver refused it.
    fn post(&self, key: &str, body: String) -> Result<Option<String>, String> {
        let mut retry = 0;
        loop {
            match self.try_post(key, &body) {
                Answer::Accepted => return Ok(None),
                Answer::Refused(reason) => return Ok(Some(reason)),
                Answer::Retry(reason) => {
                    let Some(wait) = self.config.backoff.wait(retry) else {
                        return Err(format!(
                            "sink `{}`: POST {} failed after {} retries ({reason}); the topology restarts from its last checkpoint",
                            self.config.name, self.config.url, self.config.backoff.retries
                        ));
                    };
                    tracing::warn!(sink = %self.config.name, retry, wait_ms = wait.as_millis() as u64, %reason, "POST failed; retrying");
                    std::thread::sleep(wait);
                    retry += 1;
                }
            }
        }
    }

    fn try_post(&self, key: &str, body: &str) -> Answer {
        let mut request = self
            .agent
            .post(&self.config.url)
            .header("Content-Type", "application/json")
            .header(IDEMPOTENCY_HEADER, key);
        for (name, value) in &self.config.headers {
            request = request.header(name, value);
        }
        match request.send(body) {
            Err(e) => Answer::Retry(e.to_string()),
            Ok(mut response) => {
                let status = response.status().as_u16();
                if (200..300).contains(&status) {
                    return Answer::Accepted;
                }
                let text = response
                    .body_mut()
                    .with_config()
                    .limit(MAX_ERROR_BODY_BYTES)
                    .read_to_string()
                    .unwrap_or_default();
                let text: String = text.trim().chars().take(MAX_ERROR_CHARS).collect();
                let reason = format!("HTTP {status}: {text}");
                if status >= 500 || status == 408 || status == 429 {
                    Answer::Retry(reason)
                } else {
                    Answer::Refused(reason)
                }
            }
        }
    }

    fn dead_letter(&mut self, event: weir_types::Event, reason: &str) -> Result<(), String> {
        let error = format!(
            "sink `{}`: {} refused this event: {reason}",
            self.config.name, self.config.url
        );
        let Some(send) = self.dead_letters.as_mut() else {
            return Err(format!(
                "{error}; the topology has no dead-letter output to put it in"
            ));
        };
        send(&DeadLetter {
            operator: self.config.name.clone(),
            error,
            failed_at: weir_types::now_ms(),
            event,
            context: FailureContext::of(FailureKind::Refused),
        })
    }
}

impl Sink for HttpSink {
    /// Without checkpoints: keys name this process and its batches.
    fn write(&mut self, batch: &Batch) -> Result<(), String> {
        if batch.is_empty() {
            return Ok(());
        }
        self.written += 1;
        let prefix = format!("{}-w{}", self.run, self.written);
        self.post_all(&prefix, batch)
    }

    /// Gets checkpoints' events after their commit, so that their keys
    /// stay the same across recoveries.
    fn exactly_once(&self) -> bool {
        true
    }

    fn publish(&mut self, at: &CheckpointRef, batch: &Batch) -> Result<(), String> {
        if batch.is_empty() {
            return Ok(());
        }
        self.post_all(&format!("{}-{}", at.lineage, at.id), batch)
    }

    /// Posts `at`'s events again under the same keys: the receiver dedupes
    /// what it already has.
    fn recover(
        &mut self,
        at: &CheckpointRef,
        _position: u64,
        pending: &Batch,
    ) -> Result<(), String> {
        self.post_all(&format!("{}-{}", at.lineage, at.id), pending)
    }
}
