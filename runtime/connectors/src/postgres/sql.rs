//! The SQL the PostgreSQL sink sends: quoted identifiers, the multi-row
//! `INSERT` (with `ON CONFLICT … DO UPDATE` for upserts), `CREATE TABLE`,
//! and the progress table that makes publishing exactly-once. Names were
//! checked by the topology's validation ([`weir_topology::is_sql_identifier`])
//! and are quoted as written.

/// One row per sink: the last checkpoint whose rows are in its table.
pub(crate) const PROGRESS_TABLE: &str = "weir_sink_progress";
/// Held while creating tables, so that two sinks starting together do not
/// race on `CREATE TABLE IF NOT EXISTS` (an arbitrary constant: "weir").
pub(crate) const DDL_LOCK: i64 = 0x7765_6972;
/// Most bind parameters of one statement (PostgreSQL's protocol limit).
const MAX_PARAMETERS: usize = 65_535;
/// Most rows of one `INSERT`.
pub(crate) const MAX_ROWS_PER_STATEMENT: usize = 1_000;

pub(crate) fn quote(identifier: &str) -> String {
    format!("\"{}\"", identifier.replace('"', "\"\""))
}

/// `table` or `schema.table`, each part quoted.
pub(crate) fn quote_table(table: &str) -> String {
    table.split('.').map(quote).collect::<Vec<_>>().join(".")
}

pub(crate) fn create_progress_table() -> String {
    format!(
        "CREATE TABLE IF NOT EXISTS {PROGRESS_TABLE} (\
         sink_id text PRIMARY KEY, \
         lineage text NOT NULL, \
         checkpoint_id bigint NOT NULL, \
         written_at timestamptz NOT NULL DEFAULT now())"
    )
}

pub(crate) fn read_progress() -> String {
    format!("SELECT lineage, checkpoint_id FROM {PROGRESS_TABLE} WHERE sink_id = $1 FOR UPDATE")
}

pub(crate) fn write_progress() -> String {
    format!(
        "INSERT INTO {PROGRESS_TABLE} (sink_id, lineage, checkpoint_id) VALUES ($1, $2, $3) \
         ON CONFLICT (sink_id) DO UPDATE SET lineage = EXCLUDED.lineage, \
         checkpoint_id = EXCLUDED.checkpoint_id, written_at = now()"
    )
}

/// The statements of one target table.
#[derive(Debug, Clone)]
pub(crate) struct TableSql {
    table: String,
    columns: Vec<String>,
    /// Conflict target of an upsert; `None` appends.
    upsert_keys: Option<Vec<String>>,
}

impl TableSql {
    pub(crate) fn new(table: &str, columns: &[String], upsert_keys: Option<&[String]>) -> TableSql {
        TableSql {
            table: quote_table(table),
            columns: columns.iter().map(|c| quote(c)).collect(),
            upsert_keys: upsert_keys.map(|k| k.iter().map(|c| quote(c)).collect()),
        }
    }

    /// Rows one statement carries, within the parameter limit.
    pub(crate) fn rows_per_statement(&self) -> usize {
        (MAX_PARAMETERS / self.columns.len().max(1)).clamp(1, MAX_ROWS_PER_STATEMENT)
    }

    /// `INSERT` of `rows` rows, parameters row by row.
    pub(crate) fn insert(&self, rows: usize) -> String {
        let width = self.columns.len();
        let mut sql = format!(
            "INSERT INTO {} ({}) VALUES ",
            self.table,
            self.columns.join(", ")
        );
        for r in 0..rows {
            if r > 0 {
                sql.push_str(", ");
            }
            sql.push('(');
            for c in 0..width {
                if c > 0 {
                    sql.push_str(", ");
                }
                sql.push_str(&format!("${}", r * width + c + 1));
            }
            sql.push(')');
        }
        if let Some(keys) = &self.upsert_keys {
            let updates: Vec<String> = self
                .columns
                .iter()
                .filter(|c| !keys.contains(c))
                .map(|c| format!("{c} = EXCLUDED.{c}"))
                .collect();
            sql.push_str(&format!(
                " ON CONFLICT ({}) DO UPDATE SET {}",
                keys.join(", "),
                updates.join(", ")
            ));
        }
        sql
    }

    /// `CREATE TABLE IF NOT EXISTS` with `types` per column, and a primary
    /// key on `keys` when there are any.
    pub(crate) fn create(&self, types: &[String], keys: &[String]) -> String {
        let mut parts: Vec<String> = self
            .columns
            .iter()
            .zip(types)
            .map(|(c, t)| format!("{c} {t}"))
            .collect();
        if !keys.is_empty() {
            let keys: Vec<String> = keys.iter().map(|k| quote(k)).collect();
            parts.push(format!("PRIMARY KEY ({})", keys.join(", ")));
        }
        format!(
            "CREATE TABLE IF NOT EXISTS {} ({})",
            self.table,
            parts.join(", ")
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn an_upsert_updates_every_column_but_its_keys() {
        let sql = TableSql::new(
            "app.totals",
            &names(&["user", "total"]),
            Some(&names(&["user"])),
        );
        assert_eq!(
            sql.insert(2),
            "INSERT INTO \"app\".\"totals\" (\"user\", \"total\") VALUES ($1, $2), ($3, $4) \
             ON CONFLICT (\"user\") DO UPDATE SET \"total\" = EXCLUDED.\"total\""
        );
        let append = TableSql::new("log", &names(&["n"]), None);
        assert_eq!(append.insert(1), "INSERT INTO \"log\" (\"n\") VALUES ($1)");
    }

    #[test]
    fn statements_stay_within_the_parameter_limit() {
        let wide: Vec<String> = (0..300).map(|i| format!("c{i}")).collect();
        let sql = TableSql::new("t", &wide, None);
        assert_eq!(sql.rows_per_statement(), 218);
        assert!(sql.rows_per_statement() * 300 <= MAX_PARAMETERS);
        assert_eq!(
            TableSql::new("t", &names(&["a"]), None).rows_per_statement(),
            MAX_ROWS_PER_STATEMENT
        );
    }

    #[test]
    fn create_table_names_types_and_the_primary_key() {
        let sql = TableSql::new("totals", &names(&["user", "total"]), None);
        assert_eq!(
            sql.create(&names(&["text", "bigint"]), &names(&["user"])),
            "CREATE TABLE IF NOT EXISTS \"totals\" (\"user\" text, \"total\" bigint, PRIMARY KEY (\"user\"))"
        );
    }
}
