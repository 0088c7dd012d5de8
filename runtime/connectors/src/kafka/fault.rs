//! Crash points of the Kafka sink, for the crash tests:
//! `WEIR_FAULT=<point>[:N]` aborts the process (no unwinding, no cleanup:
//! what `kill -9` does) the N-th time (default the first) a sink reaches
//! `<point>` with output to publish. The variable is read once, when a
//! sink is created; without it nothing is checked.
//!
//! Points: `after-commit-before-publish` (Weir's checkpoint is durable,
//! nothing of it is in Kafka), `mid-publish` (half the records are in the
//! open transaction), `before-kafka-commit` (everything, marker included,
//! is in the open transaction).

/// Where a sink may be made to crash.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FaultPoint {
    AfterCommitBeforePublish,
    MidPublish,
    BeforeKafkaCommit,
}

impl FaultPoint {
    fn parse(name: &str) -> Option<FaultPoint> {
        match name {
            "after-commit-before-publish" => Some(FaultPoint::AfterCommitBeforePublish),
            "mid-publish" => Some(FaultPoint::MidPublish),
            "before-kafka-commit" => Some(FaultPoint::BeforeKafkaCommit),
            _ => None,
        }
    }
}

/// The crash point armed by `WEIR_FAULT`, and how many more times it is
/// passed before the crash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Fault {
    point: FaultPoint,
    remaining: u32,
}

impl Fault {
    /// The fault `WEIR_FAULT` arms, if any (a value that names no point is
    /// logged and ignored).
    pub fn from_env() -> Option<Fault> {
        let text = std::env::var("WEIR_FAULT").ok()?;
        let fault = Fault::parse(&text);
        if fault.is_none() {
            tracing::warn!(
                weir.fault = %text,
                "WEIR_FAULT names no crash point (after-commit-before-publish, mid-publish, \
                 before-kafka-commit, each with an optional :N); ignored"
            );
        }
        fault
    }

    fn parse(text: &str) -> Option<Fault> {
        let (name, n) = match text.split_once(':') {
            Some((name, n)) => (name, n.parse::<u32>().ok().filter(|n| *n > 0)?),
            None => (text, 1),
        };
        Some(Fault {
            point: FaultPoint::parse(name)?,
            remaining: n,
        })
    }

    /// Called at `point`: aborts the process when this is the armed
    /// point's N-th pass.
    pub fn reach(&mut self, point: FaultPoint) {
        if point != self.point {
            return;
        }
        self.remaining -= 1;
        if self.remaining == 0 {
            tracing::error!(weir.fault = ?point, "WEIR_FAULT: aborting the process here");
            std::process::abort();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_points_and_counts() {
        assert_eq!(
            Fault::parse("mid-publish:3"),
            Some(Fault {
                point: FaultPoint::MidPublish,
                remaining: 3
            })
        );
        assert_eq!(
            Fault::parse("before-kafka-commit").map(|f| f.remaining),
            Some(1)
        );
        assert_eq!(Fault::parse("mid-publish:0"), None);
        assert_eq!(Fault::parse("somewhere"), None);
        // Passing another point does not count down.
        let mut f = Fault::parse("mid-publish:2").unwrap();
        f.reach(FaultPoint::BeforeKafkaCommit);
        f.reach(FaultPoint::MidPublish);
        assert_eq!(f.remaining, 1);
    }
}
