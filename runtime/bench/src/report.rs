//! The `RESULT key=value …` lines every workload prints for scripts, kept
//! as they are printed so that `--json FILE` writes the same records as
//! JSON objects (values that read as numbers become numbers).

use std::sync::Mutex;

use serde_json::{Map, Value};

static RECORDS: Mutex<Vec<Map<String, Value>>> = Mutex::new(Vec::new());

/// Prints `line` (`RESULT key=value …`) and keeps it for [`write_json`].
pub(crate) fn result(line: String) {
    println!("{line}");
    let mut record = Map::new();
    for pair in line.split_whitespace().skip(1) {
        let Some((key, value)) = pair.split_once('=') else {
            continue;
        };
        let value = if let Ok(n) = value.parse::<i64>() {
            Value::from(n)
        } else if let Some(x) = value.parse::<f64>().ok().filter(|x| x.is_finite()) {
            Value::from(x)
        } else {
            Value::from(value)
        };
        record.insert(key.to_string(), value);
    }
    RECORDS
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .push(record);
}

/// Writes every record so far to `path` as a JSON array, when one was
/// given.
pub(crate) fn write_json(path: Option<&str>) -> anyhow::Result<()> {
    if let Some(path) = path {
        let records = RECORDS.lock().unwrap_or_else(|p| p.into_inner());
        std::fs::write(path, serde_json::to_string_pretty(&*records)?)?;
        println!("{} records written to {path}", records.len());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_result_line_becomes_a_record_with_numbers() {
        result("RESULT workload=keyed events=5000000 ratio=0.534 language=c".into());
        let records = RECORDS.lock().unwrap();
        let last = records.last().unwrap();
        assert_eq!(last["workload"], "keyed");
        assert_eq!(last["events"], 5_000_000);
        assert_eq!(last["ratio"], 0.534);
        assert_eq!(last["language"], "c");
    }
}
