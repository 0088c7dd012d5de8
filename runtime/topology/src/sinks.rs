//! Sinks outside Weir: a PostgreSQL table (`postgres:`) and an HTTP
//! endpoint (`http:`), as a topology document writes them, and their
//! checks (each problem with its path, e.g. `sinks[1].postgres.table`).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Longest PostgreSQL identifier (NAMEDATALEN − 1).
pub const MAX_IDENTIFIER_BYTES: usize = 63;
/// Most events one HTTP request carries (`http.batch`).
pub const MAX_HTTP_BATCH: usize = 10_000;

/// `postgres:`: rows of a table, one per event (append) or per key (upsert).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PostgresSinkDoc {
    /// `postgres://user:password@host:port/database`; unset: the server's
    /// `--postgres-url`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// `table` or `schema.table`.
    pub table: String,
    #[serde(default)]
    pub mode: PostgresModeDoc,
    /// The columns that identify a row (upsert: its conflict target).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub key_columns: Vec<String>,
    /// Column → where its value comes from.
    pub columns: BTreeMap<String, ColumnDoc>,
    /// Create the table (and its primary key on `key_columns`) when it
    /// does not exist.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub create_table: Option<bool>,
}

/// How events become rows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum PostgresModeDoc {
    /// One row per key: a later event replaces its key's row.
    #[default]
    Upsert,
    /// One row per event.
    Append,
}

/// Where a column's value comes from: `key` (the event's key as text),
/// `timestamp` (event time, ms since the epoch), or `$.a.b` (a field of the
/// JSON value; `$` is the whole value). The long form also gives the
/// column's SQL type for `create_table` (default: `text`, and `bigint`
/// for `timestamp`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum ColumnDoc {
    From(String),
    Typed {
        from: String,
        #[serde(rename = "type")]
        sql_type: String,
    },
}

impl ColumnDoc {
    pub fn from(&self) -> &str {
        match self {
            ColumnDoc::From(f) | ColumnDoc::Typed { from: f, .. } => f,
        }
    }

    pub fn sql_type(&self) -> Option<&str> {
        match self {
            ColumnDoc::From(_) => None,
            ColumnDoc::Typed { sql_type, .. } => Some(sql_type),
        }
    }
}

/// `http:`: POSTs events as JSON to an endpoint.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpSinkDoc {
    /// `http://host:port/path`.
    pub url: String,
    /// Headers of every request (e.g. `Authorization`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub headers: BTreeMap<String, String>,
    /// Events per request: 1 (default) posts each event as a JSON object,
    /// more posts a JSON array of up to this many.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub batch: Option<usize>,
    /// One request's time limit, ms (default 10000).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_ms: Option<u64>,
    /// Retries of a request that failed with a 5xx, 408, 429, a timeout or
    /// a lost connection, with a doubling backoff (default 8).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_retries: Option<u32>,
}

/// Whether `name` may be written into SQL as a quoted identifier.
pub fn is_sql_identifier(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
        && name.len() <= MAX_IDENTIFIER_BYTES
}

/// Whether `from` is a column source [`ColumnDoc`] accepts.
pub fn is_column_source(from: &str) -> bool {
    match from {
        "key" | "timestamp" | "$" => true,
        path => path
            .strip_prefix("$.")
            .is_some_and(|rest| rest.split('.').all(|field| !field.is_empty())),
    }
}

/// Whether `sql_type` is a plain type name (`bigint`, `numeric(12,2)`,
/// `double precision`, `text[]`), written into `CREATE TABLE` as it is.
fn is_sql_type(sql_type: &str) -> bool {
    !sql_type.trim().is_empty()
        && sql_type.len() <= 64
        && sql_type
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || " _(),[]".contains(c))
}

/// The problems of the `postgres:` settings at `path` (`sinks[i].postgres`).
/// `url_required`: there is no `--postgres-url` for sinks without one.
pub(crate) fn check_postgres(
    doc: &PostgresSinkDoc,
    path: &str,
    url_required: bool,
    error: &mut dyn FnMut(String, String),
) {
    match &doc.url {
        Some(url) if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) => {
            error(
                format!("{path}.url"),
                "must be a `postgres://user@host:port/database` URL".into(),
            );
        }
        None if url_required => error(
            format!("{path}.url"),
            "no PostgreSQL URL: give `url`, or start the server with --postgres-url (WEIR_POSTGRES_URL)"
                .into(),
        ),
        _ => {}
    }
    let parts: Vec<&str> = doc.table.split('.').collect();
    if parts.len() > 2 || !parts.iter().all(|p| is_sql_identifier(p)) {
        error(
            format!("{path}.table"),
            format!(
                "{:?} is not a table name: use `table` or `schema.table`, each 1-63 of A-Z a-z 0-9 _ (not starting with a digit)",
                doc.table
            ),
        );
    }
    if doc.columns.is_empty() {
        error(
            format!("{path}.columns"),
            "map at least one column, e.g. `{word: key, count: $.count}`".into(),
        );
    }
    for (column, source) in &doc.columns {
        let at = format!("{path}.columns.{column}");
        if !is_sql_identifier(column) {
            error(
                at.clone(),
                format!(
                    "{column:?} is not a column name: use 1-63 of A-Z a-z 0-9 _ (not starting with a digit)"
                ),
            );
        }
        if !is_column_source(source.from()) {
            error(
                at.clone(),
                format!(
                    "{:?} is not a value source: use `key`, `timestamp`, `$` or a JSON path like `$.user.id`",
                    source.from()
                ),
            );
        }
        if let Some(t) = source.sql_type()
            && !is_sql_type(t)
        {
            error(
                format!("{at}.type"),
                format!("{t:?} is not a SQL type name (like `bigint` or `numeric(12,2)`)"),
            );
        }
    }
    for (i, key) in doc.key_columns.iter().enumerate() {
        if !doc.columns.contains_key(key) {
            error(
                format!("{path}.key_columns[{i}]"),
                format!("{key:?} is not one of `columns`: map it there too"),
            );
        }
    }
    if doc.mode == PostgresModeDoc::Upsert && doc.key_columns.is_empty() {
        error(
            format!("{path}.key_columns"),
            "upsert needs the columns that identify a row (its conflict target), e.g. `[word]`; or use `mode: append`".into(),
        );
    }
    if doc.mode == PostgresModeDoc::Upsert
        && !doc.columns.is_empty()
        && doc.columns.keys().all(|c| doc.key_columns.contains(c))
    {
        error(
            format!("{path}.columns"),
            "an upsert needs a column that is not a key column to update".into(),
        );
    }
}

/// The problems of the `http:` settings at `path` (`sinks[i].http`).
pub(crate) fn check_http(doc: &HttpSinkDoc, path: &str, error: &mut dyn FnMut(String, String)) {
    let host = doc.url.strip_prefix("http://").unwrap_or("");
    if host.is_empty() || host.starts_with('/') {
        let hint = if doc.url.starts_with("https://") {
            "https is not supported yet: post to an http:// endpoint (a local TLS proxy)"
        } else {
            "must be an `http://host:port/path` URL"
        };
        error(format!("{path}.url"), hint.into());
    }
    for (name, value) in &doc.headers {
        let token = !name.is_empty()
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b));
        if !token {
            error(
                format!("{path}.headers"),
                format!("{name:?} is not a header name"),
            );
        }
        if value.bytes().any(|b| b == b'\r' || b == b'\n' || b == 0) {
            error(
                format!("{path}.headers.{name}"),
                "a header value cannot hold a line break".into(),
            );
        }
    }
    if let Some(n) = doc.batch
        && !(1..=MAX_HTTP_BATCH).contains(&n)
    {
        error(
            format!("{path}.batch"),
            format!("{n} events per request: use 1 to {MAX_HTTP_BATCH}"),
        );
    }
    if doc.timeout_ms == Some(0) {
        error(format!("{path}.timeout_ms"), "must be more than 0".into());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn problems(check: impl FnOnce(&mut dyn FnMut(String, String))) -> Vec<String> {
        let mut found = Vec::new();
        check(&mut |path, message| found.push(format!("{path}: {message}")));
        found
    }

    #[test]
    fn postgres_settings_are_checked_field_by_field() {
        let doc: PostgresSinkDoc = serde_yaml_ng::from_str(
            "{ url: 'mysql://x', table: 'a.b.c', key_columns: [word, nope],
               columns: { word: key, 'bad name': '$.', n: { from: '$.n', type: 'int; drop' } } }",
        )
        .unwrap();
        let found = problems(|e| check_postgres(&doc, "sinks[0].postgres", false, e));
        for expected in [
            "sinks[0].postgres.url: must be",
            "sinks[0].postgres.table: \"a.b.c\" is not a table name",
            "sinks[0].postgres.columns.bad name: \"bad name\" is not a column name",
            "sinks[0].postgres.columns.bad name: \"$.\" is not a value source",
            "sinks[0].postgres.columns.n.type: \"int; drop\" is not a SQL type",
            "sinks[0].postgres.key_columns[1]: \"nope\" is not one of `columns`",
        ] {
            assert!(
                found.iter().any(|f| f.starts_with(expected)),
                "{expected} not in {found:#?}"
            );
        }
        assert_eq!(found.len(), 6, "{found:#?}");
    }

    #[test]
    fn an_upsert_needs_keys_and_a_url_from_somewhere() {
        let doc: PostgresSinkDoc =
            serde_yaml_ng::from_str("{ table: totals, columns: { user: key, total: '$.total' } }")
                .unwrap();
        assert_eq!(doc.mode, PostgresModeDoc::Upsert);
        let found = problems(|e| check_postgres(&doc, "p", true, e));
        assert_eq!(found.len(), 2, "{found:#?}");
        assert!(
            found[0].starts_with("p.url: no PostgreSQL URL"),
            "{found:#?}"
        );
        assert!(
            found[1].starts_with("p.key_columns: upsert needs"),
            "{found:#?}"
        );
        let mut append = doc.clone();
        append.mode = PostgresModeDoc::Append;
        assert!(problems(|e| check_postgres(&append, "p", false, e)).is_empty());
    }

    #[test]
    fn the_example_topology_is_valid_with_a_server_url() {
        let doc = crate::parse_topology(include_str!(
            "../../../guest-examples/topologies/totals-to-postgres.yaml"
        ))
        .unwrap();
        let problems = crate::validate_topology(&doc, &());
        assert!(problems.is_empty(), "{problems:#?}");
        let without_url = crate::ValidateOptions {
            postgres_url_required: true,
            ..crate::ValidateOptions::default()
        };
        let local = crate::validate_topology_with(&doc, &(), without_url);
        assert_eq!(local.len(), 1, "{local:#?}");
        assert_eq!(local[0].path, "sinks[0].postgres.url");
    }

    #[test]
    fn http_settings_are_checked_field_by_field() {
        let doc: HttpSinkDoc = serde_yaml_ng::from_str(
            "{ url: 'https://hooks.example/x', headers: { 'Bad Name': v, X-Ok: \"a\\nb\" }, batch: 0, timeout_ms: 0 }",
        )
        .unwrap();
        let found = problems(|e| check_http(&doc, "h", e));
        assert_eq!(found.len(), 5, "{found:#?}");
        assert!(found[0].contains("https is not supported"), "{found:#?}");
        let ok: HttpSinkDoc =
            serde_yaml_ng::from_str("{ url: 'http://127.0.0.1:9/alerts', batch: 10 }").unwrap();
        assert!(problems(|e| check_http(&ok, "h", e)).is_empty());
    }
}
