//! JSON-lines files as a source and an exactly-once sink.
//!
//! [`FileSource`] reads one event per non-empty line; its position is the
//! number of events read, so a restore skips that many lines.
//! [`FileSink`] appends one line per event. Under checkpoints it is
//! exactly-once: it receives a checkpoint's output only after the
//! checkpoint committed, syncs it to disk, and at recovery cuts the file
//! back to the length recorded with the checkpoint before writing that
//! checkpoint's output again.

use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, BufWriter, Write};
use std::path::{Path, PathBuf};

use weir_io::{CheckpointRef, Position, Pull, Sink, Source};
use weir_types::{Batch, wire};

/// Events from a JSON-lines file (or any reader of lines).
pub struct FileSource {
    name: String,
    lines: Box<dyn BufRead + Send>,
    line_no: u64,
    /// Default timestamp of events without one.
    now: fn() -> i64,
}

impl FileSource {
    /// Opens `path`; events without a timestamp get `now()`.
    pub fn open(path: &Path, now: fn() -> i64) -> Result<FileSource, String> {
        let file =
            File::open(path).map_err(|e| format!("cannot open input {}: {e}", path.display()))?;
        Ok(FileSource::from_reader(
            path.display().to_string(),
            Box::new(BufReader::with_capacity(1 << 16, file)),
            now,
        ))
    }

    /// Events from lines of `reader`, named `name` in errors.
    pub fn from_reader(
        name: String,
        lines: Box<dyn BufRead + Send>,
        now: fn() -> i64,
    ) -> FileSource {
        FileSource {
            name,
            lines,
            line_no: 0,
            now,
        }
    }

    /// The next non-empty line, without its end.
    fn next_line(&mut self, buf: &mut String) -> Result<bool, String> {
        loop {
            buf.clear();
            let n = self
                .lines
                .read_line(buf)
                .map_err(|e| format!("cannot read {}: {e}", self.name))?;
            if n == 0 {
                return Ok(false);
            }
            self.line_no += 1;
            if !buf.trim().is_empty() {
                return Ok(true);
            }
        }
    }
}

impl Source for FileSource {
    fn seek(&mut self, position: &Position) -> Result<(), String> {
        let position = position.count()?;
        let mut buf = String::new();
        for read in 0..position {
            if !self.next_line(&mut buf)? {
                return Err(format!(
                    "{} has {read} events but the checkpoint read {position}: the input changed since",
                    self.name
                ));
            }
        }
        Ok(())
    }

    fn pull(&mut self) -> Result<Pull, String> {
        let mut buf = String::new();
        if !self.next_line(&mut buf)? {
            return Ok(Pull::End);
        }
        wire::parse_event(buf.trim_end(), (self.now)())
            .map(Pull::Event)
            .map_err(|e| format!("{}:{}: {e}", self.name, self.line_no))
    }
}

/// Events to a JSON-lines file, or to stdout.
pub struct FileSink {
    path: Option<PathBuf>,
    out: BufWriter<Box<dyn Write + Send>>,
    file: Option<File>,
}

impl FileSink {
    /// Writes to `path`, emptied first when `truncate` (a fresh run), else
    /// appended to (a run that recovers will cut it back itself).
    pub fn open(path: &Path, truncate: bool) -> Result<FileSink, String> {
        let file = OpenOptions::new()
            .create(true)
            .write(true)
            .truncate(truncate)
            .append(!truncate)
            .open(path)
            .map_err(|e| format!("cannot open output {}: {e}", path.display()))?;
        let writer = file
            .try_clone()
            .map_err(|e| format!("cannot open output {}: {e}", path.display()))?;
        Ok(FileSink {
            path: Some(path.to_path_buf()),
            out: BufWriter::with_capacity(1 << 16, Box::new(writer)),
            file: Some(file),
        })
    }

    /// Writes to stdout (never exactly-once: it cannot be cut back).
    pub fn stdout() -> FileSink {
        FileSink {
            path: None,
            out: BufWriter::new(Box::new(std::io::stdout())),
            file: None,
        }
    }

    fn name(&self) -> String {
        self.path
            .as_ref()
            .map_or_else(|| "stdout".into(), |p| p.display().to_string())
    }
}

impl Sink for FileSink {
    fn write(&mut self, batch: &Batch) -> Result<(), String> {
        let name = self.name();
        let err = |e: std::io::Error| format!("cannot write {name}: {e}");
        for e in batch.iter() {
            writeln!(self.out, "{}", wire::format_event(&e)).map_err(err)?;
        }
        self.out.flush().map_err(err)?;
        if let Some(file) = &self.file {
            file.sync_data().map_err(err)?;
        }
        Ok(())
    }

    fn exactly_once(&self) -> bool {
        self.file.is_some()
    }

    fn position(&mut self) -> Result<u64, String> {
        let name = self.name();
        match &self.file {
            Some(f) => f
                .metadata()
                .map(|m| m.len())
                .map_err(|e| format!("cannot read {name}: {e}")),
            None => Ok(0),
        }
    }

    fn recover(
        &mut self,
        _at: &CheckpointRef,
        position: u64,
        pending: &Batch,
    ) -> Result<(), String> {
        if let Some(file) = &self.file {
            let name = self.name();
            let len = file
                .metadata()
                .map_err(|e| format!("cannot read {name}: {e}"))?
                .len();
            if len < position {
                return Err(format!(
                    "{name} holds {len} bytes but {position} were committed: it was cut or replaced since"
                ));
            }
            file.set_len(position)
                .map_err(|e| format!("cannot cut {name} back to {position} bytes: {e}"))?;
        }
        self.write(pending)
    }
}

#[cfg(test)]
mod tests {
    use weir_types::Event;

    use super::*;

    fn at() -> CheckpointRef {
        CheckpointRef {
            lineage: "run".into(),
            id: 1,
        }
    }

    fn batch(values: &[&str]) -> Batch {
        values
            .iter()
            .map(|v| Event {
                value: v.as_bytes().to_vec(),
                ..Event::default()
            })
            .collect()
    }

    #[test]
    fn a_sink_recovers_to_a_position_and_republishes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out.jsonl");
        let mut sink = FileSink::open(&path, true).unwrap();
        sink.write(&batch(&["1", "2"])).unwrap();
        let base = sink.position().unwrap();
        sink.write(&batch(&["3"])).unwrap();
        // After a crash: the run reopens without truncating and recovers.
        let mut sink = FileSink::open(&path, false).unwrap();
        sink.recover(&at(), base, &batch(&["3"])).unwrap();
        sink.write(&batch(&["4"])).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        let values: Vec<&str> = text
            .lines()
            .map(|l| {
                l.split("\"value\":")
                    .nth(1)
                    .unwrap()
                    .split([',', '}'])
                    .next()
                    .unwrap()
            })
            .collect();
        assert_eq!(values, ["1", "2", "3", "4"]);
        assert!(sink.recover(&at(), 1 << 20, &Batch::default()).is_err());
    }

    #[test]
    fn a_source_seeks_by_events_not_lines() {
        let text = "{\"value\":1}\n\n{\"value\":2}\n{\"value\":3}\n";
        let mut source = FileSource::from_reader("t".into(), Box::new(text.as_bytes()), || 0);
        source.seek(&Position::Count(2)).unwrap();
        let Pull::Event(e) = source.pull().unwrap() else {
            panic!("expected an event")
        };
        assert_eq!(e.value, b"3");
        assert_eq!(source.pull().unwrap(), Pull::End);
        let mut short = FileSource::from_reader("t".into(), Box::new(text.as_bytes()), || 0);
        assert!(
            short
                .seek(&Position::Count(4))
                .unwrap_err()
                .contains("has 3 events")
        );
    }
}
