//! Fault points, for the crash tests: one switch, `WEIR_FAULT`, read once
//! per process, that every crash and error injection goes through.
//!
//! `WEIR_FAULT=<point>[:N]`: at an abort point, the process aborts (no
//! unwinding, no cleanup: what `kill -9` does) the N-th time (default the
//! first) it passes `<point>`; at an error point, the first N passes fail
//! with an injected I/O error and later ones go on. Without the variable
//! nothing is checked beyond one load.
//!
//! Abort points: `after-commit-before-publish` (the checkpoint
//! coordinator: Weir's checkpoint is durable, no sink has published its
//! output), `checkpoint-commit` (the coordinator, inside the commit step,
//! before the durable commit), `mid-publish` and `before-kafka-commit`
//! (the Kafka sink: half the records / everything in the open
//! transaction; a cluster node's transaction passes `before-kafka-commit`
//! too, with output, changelog records and offsets in it),
//! `before-postgres-commit` (the PostgreSQL sink: rows
//! written, transaction open). Error points: `checkpoint-commit-error` (a
//! checkpoint commit is refused as with EIO, before redb writes anything)
//! and `checkpoint-redb-error` (redb's own checkpoint commit fails: the
//! state database's storage reports EIO from its first sync, so redb fails
//! the commit and refuses every later write until the database is
//! reopened, as after a real write error).

use std::sync::Mutex;
use std::sync::OnceLock;

/// A named place where the tests may make the process fail.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum FaultPoint {
    AfterCommitBeforePublish,
    CheckpointCommit,
    CheckpointCommitError,
    CheckpointRedbError,
    MidPublish,
    BeforeKafkaCommit,
    BeforePostgresCommit,
}

const POINTS: [(&str, FaultPoint); 7] = [
    (
        "after-commit-before-publish",
        FaultPoint::AfterCommitBeforePublish,
    ),
    ("checkpoint-commit", FaultPoint::CheckpointCommit),
    ("checkpoint-commit-error", FaultPoint::CheckpointCommitError),
    ("checkpoint-redb-error", FaultPoint::CheckpointRedbError),
    ("mid-publish", FaultPoint::MidPublish),
    ("before-kafka-commit", FaultPoint::BeforeKafkaCommit),
    ("before-postgres-commit", FaultPoint::BeforePostgresCommit),
];

impl FaultPoint {
    pub fn name(self) -> &'static str {
        POINTS
            .iter()
            .find(|(_, p)| *p == self)
            .map_or("?", |(n, _)| n)
    }

    /// Whether passing the point fails (an injected error) rather than
    /// aborting the process.
    fn injects_error(self) -> bool {
        matches!(
            self,
            FaultPoint::CheckpointCommitError | FaultPoint::CheckpointRedbError
        )
    }
}

/// The armed point and how many passes are left.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Armed {
    point: FaultPoint,
    remaining: u32,
}

fn parse(text: &str) -> Option<Armed> {
    let (name, n) = match text.split_once(':') {
        Some((name, n)) => (name, n.parse::<u32>().ok().filter(|n| *n > 0)?),
        None => (text, 1),
    };
    let point = POINTS.iter().find(|(n, _)| *n == name)?.1;
    Some(Armed {
        point,
        remaining: n,
    })
}

fn armed() -> &'static Mutex<Option<Armed>> {
    static ARMED: OnceLock<Mutex<Option<Armed>>> = OnceLock::new();
    ARMED.get_or_init(|| {
        let text = std::env::var("WEIR_FAULT").ok();
        let armed = text.as_deref().and_then(parse);
        if let (Some(text), None) = (&text, &armed) {
            let names: Vec<&str> = POINTS.iter().map(|(n, _)| *n).collect();
            tracing::warn!(
                weir.fault = %text,
                "WEIR_FAULT names no fault point ({}, each with an optional :N); ignored",
                names.join(", ")
            );
        }
        Mutex::new(armed)
    })
}

/// Whether `point` is the armed one (a sink may then make what the crash
/// interrupts visible first, e.g. flush a producer).
pub fn is_armed(point: FaultPoint) -> bool {
    armed()
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .as_ref()
        .is_some_and(|a| a.point == point)
}

/// Passes `point`: aborts the process when this is the armed abort
/// point's N-th pass; returns an injected error while the armed error
/// point has failures left; does nothing otherwise.
pub fn reach(point: FaultPoint) -> Result<(), std::io::Error> {
    let mut guard = armed().lock().unwrap_or_else(|p| p.into_inner());
    let Some(a) = guard.as_mut().filter(|a| a.point == point) else {
        return Ok(());
    };
    if point.injects_error() {
        a.remaining -= 1;
        if a.remaining == 0 {
            *guard = None;
        }
        tracing::warn!(
            weir.fault = point.name(),
            "WEIR_FAULT: injecting an I/O error"
        );
        return Err(std::io::Error::other(format!(
            "injected by WEIR_FAULT={}",
            point.name()
        )));
    }
    a.remaining -= 1;
    if a.remaining == 0 {
        tracing::error!(
            weir.fault = point.name(),
            "WEIR_FAULT: aborting the process here"
        );
        std::process::abort();
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_points_and_counts() {
        assert_eq!(
            parse("mid-publish:3"),
            Some(Armed {
                point: FaultPoint::MidPublish,
                remaining: 3
            })
        );
        assert_eq!(
            parse("checkpoint-commit-error").map(|a| (a.point, a.remaining)),
            Some((FaultPoint::CheckpointCommitError, 1))
        );
        assert_eq!(parse("mid-publish:0"), None);
        assert_eq!(parse("somewhere"), None);
        for (name, point) in POINTS {
            assert_eq!(point.name(), name);
            assert_eq!(parse(name).map(|a| a.point), Some(point));
        }
    }
}
