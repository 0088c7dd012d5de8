//! The PostgreSQL sink (`postgres:` in a topology): each event becomes a
//! row of a table, appended (`append`) or replacing its key's row
//! (`upsert`), columns mapped from the event's key, timestamp or JSON
//! fields (`rows.rs`), written with multi-row statements (`sql.rs`).
//!
//! Exactly-once under checkpoints: the engine hands the sink checkpoint
//! n's rows only after n is durable in Weir, and the sink writes them in
//! one PostgreSQL transaction that also sets the sink's row of the
//! progress table `weir_sink_progress` to (lineage, n). A publish, or a
//! recovery's republish, whose checkpoint the progress row already holds
//! writes nothing, so a crash between the two commits neither loses nor
//! doubles rows; both modes check it (replaying n after n+1 would revert
//! upserted rows).
//!
//! Failures: a lost connection (or a server that refuses connections for
//! now) is retried with [`Backoff`]; when the database stays away the sink
//! fails and the topology restarts from its last checkpoint. A row the
//! database refuses (a value its column cannot hold, a NULL key) or an event
//! that cannot become a row (a mapped field missing) goes to the dead-letter
//! output with the reason (PostgreSQL's message and SQLSTATE); the rest of
//! the checkpoint is written. Dead letters are at-least-once. Any other
//! database error (no such table, wrong password) fails the topology with
//! the database's message.

mod rows;
mod sql;

use std::collections::HashMap;
use std::error::Error as StdError;

use postgres::types::{Format, IsNull, ToSql, Type, to_sql_checked};
use postgres::{Client, NoTls, Statement, Transaction};
use weir_io::{CheckpointRef, DeadLetter, DeadLetterFn, FailureContext, FailureKind, Sink};
use weir_topology::{PostgresModeDoc, PostgresSinkDoc};
use weir_types::{Batch, EventRef};

use weir_io::fault::{self, FaultPoint};

use crate::backoff::Backoff;
use rows::{ColumnSource, Row, fold_by_key, map_event};
use sql::TableSql;

/// Prepared `INSERT`s kept per connection (by row count).
const MAX_CACHED_STATEMENTS: usize = 8;

/// Why a PostgreSQL sink cannot be made from its settings.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PgSinkError {
    #[error(
        "postgres.url is not a PostgreSQL URL ({reason}): write `postgres://user:password@host:port/database`"
    )]
    Url { reason: String },
    #[error(
        "postgres.url is not set and there is no default: give `url`, or pass --postgres-url (WEIR_POSTGRES_URL)"
    )]
    NoUrl,
    #[error(
        "postgres.columns.{column}: {from:?} is not a value source: use `key`, `timestamp`, `$` or `$.field`"
    )]
    Column { column: String, from: String },
}

/// What a [`PgSink`] writes where.
#[derive(Debug, Clone)]
pub struct PgSinkConfig {
    /// The sink's row in the progress table: `<topology>/<sink>`.
    pub sink_id: String,
    /// The sink's name, in its dead letters.
    pub name: String,
    pub url: String,
    pub table: String,
    pub mode: PostgresModeDoc,
    pub key_columns: Vec<String>,
    /// Column, where its value comes from, its SQL type for `create_table`.
    pub columns: Vec<(String, String, Option<String>)>,
    pub create_table: bool,
    pub backoff: Backoff,
}

impl PgSinkConfig {
    /// The settings of `doc`, its URL or else `default_url`.
    pub fn from_doc(
        topology: &str,
        name: &str,
        doc: &PostgresSinkDoc,
        default_url: Option<&str>,
    ) -> Result<PgSinkConfig, PgSinkError> {
        let url = doc
            .url
            .as_deref()
            .or(default_url)
            .ok_or(PgSinkError::NoUrl)?
            .to_string();
        Ok(PgSinkConfig {
            sink_id: format!("{topology}/{name}"),
            name: name.to_string(),
            url,
            table: doc.table.clone(),
            mode: doc.mode,
            key_columns: doc.key_columns.clone(),
            columns: doc
                .columns
                .iter()
                .map(|(c, s)| {
                    (
                        c.clone(),
                        s.from().to_string(),
                        s.sql_type().map(str::to_string),
                    )
                })
                .collect(),
            create_table: doc.create_table.unwrap_or(false),
            backoff: Backoff::default(),
        })
    }
}

/// Writes events as rows of a PostgreSQL table.
pub struct PgSink {
    config: PgSinkConfig,
    connect: postgres::Config,
    sql: TableSql,
    sources: Vec<ColumnSource>,
    /// Positions of the key columns among the columns (upsert folding).
    key_positions: Vec<usize>,
    dead_letters: Option<DeadLetterFn>,
    connection: Option<Connection>,
}

/// One open connection and what was prepared on it.
struct Connection {
    client: Client,
    inserts: HashMap<usize, Statement>,
}

/// Why an attempt to write failed.
enum Failure {
    /// The connection is gone or the server cannot take it now: retry.
    Lost(String),
    /// Retrying cannot help: the topology fails with this message.
    Fatal(String),
}

impl PgSink {
    /// A sink over `config`; connects at its first write. Dead letters go
    /// to `dead_letters` (without one, a refused row fails the topology).
    pub fn new(
        config: PgSinkConfig,
        dead_letters: Option<DeadLetterFn>,
    ) -> Result<PgSink, PgSinkError> {
        let mut connect: postgres::Config =
            config
                .url
                .parse()
                .map_err(|e: postgres::Error| PgSinkError::Url {
                    reason: e.to_string(),
                })?;
        if connect.get_connect_timeout().is_none() {
            connect.connect_timeout(std::time::Duration::from_secs(5));
        }
        connect.application_name("weir");
        let mut sources = Vec::with_capacity(config.columns.len());
        for (column, from, _) in &config.columns {
            sources.push(
                ColumnSource::parse(from).ok_or_else(|| PgSinkError::Column {
                    column: column.clone(),
                    from: from.clone(),
                })?,
            );
        }
        let names: Vec<String> = config.columns.iter().map(|(c, _, _)| c.clone()).collect();
        let upsert = config.mode == PostgresModeDoc::Upsert;
        let sql = TableSql::new(
            &config.table,
            &names,
            upsert.then_some(&config.key_columns[..]),
        );
        let key_positions = config
            .key_columns
            .iter()
            .filter_map(|k| names.iter().position(|c| c == k))
            .collect();
        Ok(PgSink {
            config,
            connect,
            sql,
            sources,
            key_positions,
            dead_letters,
            connection: None,
        })
    }

    /// Writes `batch`, recording `at` in the progress table when given;
    /// retries a lost connection, then fails.
    fn write_checkpoint(
        &mut self,
        at: Option<&CheckpointRef>,
        batch: &Batch,
    ) -> Result<(), String> {
        if batch.is_empty() {
            return Ok(());
        }
        let events: Vec<EventRef<'_>> = batch.iter().collect();
        let mut rows = Vec::with_capacity(events.len());
        let mut refused: Vec<(usize, String)> = Vec::new();
        for (i, event) in events.iter().enumerate() {
            match map_event(&self.sources, event) {
                Ok(values) => rows.push(Row { values, event: i }),
                Err(reason) => refused.push((i, reason)),
            }
        }
        if self.config.mode == PostgresModeDoc::Upsert {
            rows = fold_by_key(rows, &self.key_positions);
        }
        let mut retry = 0;
        loop {
            let attempt = self.open().and_then(|mut connection| {
                let written = self.try_write(&mut connection, at, &rows, &refused, &events);
                if written.is_ok() {
                    self.connection = Some(connection);
                }
                written
            });
            match attempt {
                Ok(()) => return Ok(()),
                Err(Failure::Fatal(message)) => return Err(message),
                Err(Failure::Lost(reason)) => {
                    let Some(wait) = self.config.backoff.wait(retry) else {
                        return Err(format!(
                            "sink `{}`: PostgreSQL stayed unreachable after {} retries ({reason}); the topology restarts from its last checkpoint",
                            self.config.name, self.config.backoff.retries
                        ));
                    };
                    tracing::warn!(sink = %self.config.name, retry, wait_ms = wait.as_millis() as u64, %reason, "PostgreSQL connection lost; retrying");
                    std::thread::sleep(wait);
                    retry += 1;
                }
            }
        }
    }

    /// One attempt: one transaction holding the rows and the progress row.
    fn try_write(
        &mut self,
        connection: &mut Connection,
        at: Option<&CheckpointRef>,
        rows: &[Row],
        unmapped: &[(usize, String)],
        events: &[EventRef<'_>],
    ) -> Result<(), Failure> {
        let sink = self.config.sink_id.clone();
        let name = self.config.name.clone();
        let per_statement = self.sql.rows_per_statement();
        let Connection { client, inserts } = connection;
        let mut tx = client.transaction().map_err(classify)?;
        if let Some(at) = at {
            let done = tx
                .query_opt(&sql::read_progress(), &[&sink])
                .map_err(classify)?
                .is_some_and(|row| {
                    let lineage: String = row.get(0);
                    let id: i64 = row.get(1);
                    lineage == at.lineage && u64::try_from(id).is_ok_and(|id| id >= at.id)
                });
            if done {
                tracing::debug!(sink = %name, checkpoint = at.id, "already in PostgreSQL");
                return Ok(());
            }
        }
        let mut refused = unmapped.to_vec();
        for chunk in rows.chunks(per_statement) {
            let statement = prepare(&mut tx, inserts, &self.sql, chunk.len())?;
            tx.batch_execute("SAVEPOINT weir_rows").map_err(classify)?;
            match tx.execute(&statement, &refs(&params(chunk))) {
                Ok(_) => tx
                    .batch_execute("RELEASE SAVEPOINT weir_rows")
                    .map_err(classify)?,
                Err(e) if is_row_error(&e) => {
                    // Find the rows it refused, one at a time.
                    tx.batch_execute("ROLLBACK TO SAVEPOINT weir_rows")
                        .map_err(classify)?;
                    let one = prepare(&mut tx, inserts, &self.sql, 1)?;
                    for row in chunk {
                        tx.batch_execute("SAVEPOINT weir_row").map_err(classify)?;
                        match tx.execute(&one, &refs(&params(std::slice::from_ref(row)))) {
                            Ok(_) => tx
                                .batch_execute("RELEASE SAVEPOINT weir_row")
                                .map_err(classify)?,
                            Err(e) if is_row_error(&e) => {
                                tx.batch_execute("ROLLBACK TO SAVEPOINT weir_row")
                                    .map_err(classify)?;
                                refused.push((row.event, database_message(&e)));
                            }
                            Err(e) => return Err(classify(e)),
                        }
                    }
                    tx.batch_execute("RELEASE SAVEPOINT weir_rows")
                        .map_err(classify)?;
                }
                Err(e) => return Err(classify(e)),
            }
        }
        if let Some(at) = at {
            let id = i64::try_from(at.id).map_err(|_| {
                Failure::Fatal(format!(
                    "checkpoint id {} is over PostgreSQL's bigint",
                    at.id
                ))
            })?;
            tx.execute(&sql::write_progress(), &[&sink, &at.lineage, &id])
                .map_err(classify)?;
        }
        // Before the commit: a crash from here on sends them again.
        refused.sort_by_key(|(i, _)| *i);
        for (i, reason) in &refused {
            self.dead_letter(&events[*i], reason)?;
        }
        let _ = fault::reach(FaultPoint::BeforePostgresCommit);
        tx.commit().map_err(classify)?;
        if !refused.is_empty() {
            tracing::warn!(sink = %name, refused = refused.len(), "rows refused, dead-lettered");
        }
        Ok(())
    }

    fn dead_letter(&mut self, event: &EventRef<'_>, reason: &str) -> Result<(), Failure> {
        let error = format!(
            "sink `{}` could not write this row: {reason}",
            self.config.name
        );
        let Some(send) = self.dead_letters.as_mut() else {
            return Err(Failure::Fatal(format!(
                "{error}; the topology has no dead-letter output to put it in"
            )));
        };
        send(&DeadLetter {
            operator: self.config.name.clone(),
            error,
            failed_at: weir_types::now_ms(),
            event: event.to_event(),
            context: FailureContext::of(FailureKind::Refused),
        })
        .map_err(|e| {
            Failure::Fatal(format!(
                "sink `{}`: cannot write a dead letter: {e}",
                self.config.name
            ))
        })
    }

    /// The open connection (taken out of the sink while in use), or a new
    /// one with the tables set up.
    fn open(&mut self) -> Result<Connection, Failure> {
        if let Some(c) = self.connection.take()
            && !c.client.is_closed()
        {
            return Ok(c);
        }
        let mut client = self.connect.connect(NoTls).map_err(classify)?;
        self.set_up(&mut client)?;
        Ok(Connection {
            client,
            inserts: HashMap::new(),
        })
    }

    /// Creates the progress table (and the target table with
    /// `create_table`) if missing, under a lock so sinks starting together
    /// do not race.
    fn set_up(&self, client: &mut Client) -> Result<(), Failure> {
        let mut tx = client.transaction().map_err(classify)?;
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&sql::DDL_LOCK])
            .map_err(classify)?;
        tx.batch_execute(&sql::create_progress_table())
            .map_err(classify)?;
        if self.config.create_table {
            let types: Vec<String> = self
                .config
                .columns
                .iter()
                .map(|(_, from, t)| match (t, from.as_str()) {
                    (Some(t), _) => t.clone(),
                    (None, "timestamp") => "bigint".into(),
                    (None, _) => "text".into(),
                })
                .collect();
            tx.batch_execute(&self.sql.create(&types, &self.config.key_columns))
                .map_err(|e| match classify(e) {
                    Failure::Fatal(m) => Failure::Fatal(format!(
                        "sink `{}`: cannot create table `{}`: {m}",
                        self.config.name, self.config.table
                    )),
                    lost => lost,
                })?;
        }
        tx.commit().map_err(classify)
    }
}

/// The prepared `INSERT` of `rows` rows (a few sizes kept per connection).
fn prepare(
    tx: &mut Transaction<'_>,
    cache: &mut HashMap<usize, Statement>,
    sql: &TableSql,
    rows: usize,
) -> Result<Statement, Failure> {
    if let Some(s) = cache.get(&rows) {
        return Ok(s.clone());
    }
    let statement = tx
        .prepare(&sql.insert(rows))
        .map_err(|e| match classify(e) {
            Failure::Fatal(m) if m.contains("42P01") => Failure::Fatal(format!(
                "{m}: create the table, or set `create_table: true` on the sink"
            )),
            other => other,
        })?;
    if cache.len() >= MAX_CACHED_STATEMENTS {
        cache.clear();
    }
    cache.insert(rows, statement.clone());
    Ok(statement)
}

/// A column value sent as text: PostgreSQL parses it into the column's
/// type (and refuses it with its own message when it cannot).
#[derive(Debug)]
struct TextParam<'a>(Option<&'a str>);

impl ToSql for TextParam<'_> {
    fn to_sql(
        &self,
        _ty: &Type,
        out: &mut bytes::BytesMut,
    ) -> Result<IsNull, Box<dyn StdError + Sync + Send>> {
        match self.0 {
            None => Ok(IsNull::Yes),
            Some(text) => {
                out.extend_from_slice(text.as_bytes());
                Ok(IsNull::No)
            }
        }
    }

    fn accepts(_ty: &Type) -> bool {
        true
    }

    fn encode_format(&self, _ty: &Type) -> Format {
        Format::Text
    }

    to_sql_checked!();
}

/// Bind parameters of `rows`, row by row.
fn params(rows: &[Row]) -> Vec<TextParam<'_>> {
    rows.iter()
        .flat_map(|r| r.values.iter().map(|v| TextParam(v.as_deref())))
        .collect()
}

fn refs<'a>(params: &'a [TextParam<'a>]) -> Vec<&'a (dyn ToSql + Sync)> {
    params.iter().map(|p| p as &(dyn ToSql + Sync)).collect()
}

/// Whether the database refused the data of a row (SQLSTATE class 22,
/// data exception, or 23, integrity constraint violation), as opposed to
/// the statement or the connection.
fn is_row_error(e: &postgres::Error) -> bool {
    e.as_db_error()
        .is_some_and(|db| matches!(&db.code().code()[..2], "22" | "23"))
}

/// The database's message of a refused row, with its detail and SQLSTATE.
fn database_message(e: &postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => match db.detail() {
            Some(detail) => format!(
                "{} ({detail}) [SQLSTATE {}]",
                db.message(),
                db.code().code()
            ),
            None => format!("{} [SQLSTATE {}]", db.message(), db.code().code()),
        },
        None => e.to_string(),
    }
}

/// A lost connection or a server not ready now is worth a retry; any
/// other database error is not.
fn classify(e: postgres::Error) -> Failure {
    match e.as_db_error() {
        None => Failure::Lost(match e.source() {
            Some(cause) => format!("{e}: {cause}"),
            None => e.to_string(),
        }),
        Some(db) => {
            let code = db.code().code();
            let transient = code.starts_with("08")
                || code.starts_with("53")
                || matches!(code, "57P01" | "57P02" | "57P03" | "40001" | "40P01");
            let message = database_message(&e);
            if transient {
                Failure::Lost(message)
            } else {
                Failure::Fatal(format!("PostgreSQL: {message}"))
            }
        }
    }
}

impl Sink for PgSink {
    /// Without checkpoints: each batch in a transaction of its own
    /// (at-least-once after a crash).
    fn write(&mut self, batch: &Batch) -> Result<(), String> {
        self.write_checkpoint(None, batch)
    }

    fn exactly_once(&self) -> bool {
        true
    }

    fn publish(&mut self, at: &CheckpointRef, batch: &Batch) -> Result<(), String> {
        self.write_checkpoint(Some(at), batch)
    }

    /// The rows of `at` unless the progress table says they are in.
    fn recover(
        &mut self,
        at: &CheckpointRef,
        _position: u64,
        pending: &Batch,
    ) -> Result<(), String> {
        self.write_checkpoint(Some(at), pending)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bad_url_and_a_missing_one_are_refused_with_how_to_fix_them() {
        let doc: PostgresSinkDoc = serde_json::from_str(
            r#"{"table": "t", "columns": {"k": "key", "n": "$.n"}, "key_columns": ["k"]}"#,
        )
        .unwrap();
        let err = PgSinkConfig::from_doc("topo", "out", &doc, None).unwrap_err();
        assert!(matches!(err, PgSinkError::NoUrl), "{err}");
        let config =
            PgSinkConfig::from_doc("topo", "out", &doc, Some("postgres://u@h:notaport/db"))
                .unwrap();
        assert_eq!(config.sink_id, "topo/out");
        let err = PgSink::new(config, None).err().unwrap();
        assert!(
            err.to_string()
                .starts_with("postgres.url is not a PostgreSQL URL"),
            "{err}"
        );
    }
}
