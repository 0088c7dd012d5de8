//! Event-time windows on keyed state and timers: tumbling, sliding and
//! session windows with an aggregate and allowed lateness, as Flink
//! defines them.
//!
//! A window is `[start, end)`. It **fires** (its result is emitted) when
//! the watermark reaches `end - 1`. With allowed lateness `L`, its state is
//! kept until the watermark reaches `end - 1 + L`: an event arriving in that
//! time updates the window and its result is emitted again at once; an
//! event for a window already past that is dropped and counted in the
//! counter `late_dropped`.
//!
//! A key's open windows live in one value state (window start →
//! accumulator), which travels with each batch, so adding an event costs
//! no host call; timers drive firing and clean-up.

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use std::collections::BTreeMap;

use crate::{Context, Error, Setup, TimeDomain, Timer, ValueState};

/// How events are grouped into windows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WindowKind {
    /// Back-to-back windows of `size_ms`.
    Tumbling { size_ms: i64 },
    /// Windows of `size_ms` starting every `slide_ms`; an event belongs to
    /// `size_ms / slide_ms` of them.
    Sliding { size_ms: i64, slide_ms: i64 },
    /// A window per burst of events, closed by `gap_ms` without one.
    Session { gap_ms: i64 },
}

/// Folds a window's events into an accumulator and reads its result.
pub trait Aggregate {
    type Input;
    type Acc: Serialize + DeserializeOwned + Default;
    type Output;
    fn add(&self, acc: &mut Self::Acc, input: Self::Input);
    /// Combines two accumulators (session windows merging).
    fn merge(&self, acc: &mut Self::Acc, other: Self::Acc);
    fn result(&self, acc: &Self::Acc) -> Self::Output;
}

/// A window's result.
#[derive(Debug, Clone, PartialEq)]
pub struct WindowResult<O> {
    pub start: i64,
    pub end: i64,
    pub value: O,
}

#[derive(Serialize, Deserialize)]
struct Slot<A> {
    end: i64,
    acc: A,
}

/// Keyed windows of one operator, declared in `init`.
pub struct Windows<A: Aggregate> {
    kind: WindowKind,
    allowed_lateness_ms: i64,
    aggregate: A,
    /// The key's open windows by start: a value state, so they travel
    /// with each batch (no host call per event).
    slots: ValueState<BTreeMap<i64, Slot<A::Acc>>>,
}

impl<A: Aggregate> std::fmt::Debug for Windows<A> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Windows")
            .field("kind", &self.kind)
            .field("allowed_lateness_ms", &self.allowed_lateness_ms)
            .finish_non_exhaustive()
    }
}

impl<A: Aggregate> Windows<A> {
    /// Declares windows kept in value state `name`. Sizes, slides and gaps
    /// must be positive, and a slide must divide its size.
    pub fn new(
        setup: &mut Setup,
        name: &str,
        kind: WindowKind,
        allowed_lateness_ms: i64,
        aggregate: A,
    ) -> Result<Self, String> {
        match kind {
            WindowKind::Tumbling { size_ms } if size_ms <= 0 => {
                return Err("window size must be positive".into());
            }
            WindowKind::Sliding { size_ms, slide_ms }
                if size_ms <= 0 || slide_ms <= 0 || size_ms % slide_ms != 0 =>
            {
                return Err(
                    "sliding windows need positive sizes, the slide dividing the size".into(),
                );
            }
            WindowKind::Session { gap_ms } if gap_ms <= 0 => {
                return Err("session gap must be positive".into());
            }
            _ => {}
        }
        if allowed_lateness_ms < 0 {
            return Err("allowed lateness must not be negative".into());
        }
        Ok(Windows {
            kind,
            allowed_lateness_ms,
            aggregate,
            slots: setup.value_state(name),
        })
    }

    /// The windows an event at `t` belongs to, as `(start, end)`.
    fn assign(&self, t: i64) -> Vec<(i64, i64)> {
        match self.kind {
            WindowKind::Tumbling { size_ms } => {
                let start = t - t.rem_euclid(size_ms);
                vec![(start, start + size_ms)]
            }
            WindowKind::Sliding { size_ms, slide_ms } => {
                let last = t - t.rem_euclid(slide_ms);
                (0..size_ms / slide_ms)
                    .map(|i| last - i * slide_ms)
                    .map(|start| (start, start + size_ms))
                    .collect()
            }
            WindowKind::Session { gap_ms } => vec![(t, t + gap_ms)],
        }
    }

    /// Registers the window's timers: firing (unless the watermark is past
    /// it already: a late update is emitted at once instead) and clean-up.
    fn schedule(&self, ctx: &mut Context<'_>, end: i64) -> Result<(), Error> {
        if ctx.watermark() < end - 1 {
            ctx.register_timer(TimeDomain::EventTime, end - 1)?;
        }
        if self.allowed_lateness_ms > 0 {
            ctx.register_timer(TimeDomain::EventTime, end - 1 + self.allowed_lateness_ms)?;
        }
        Ok(())
    }

    fn unschedule(&self, ctx: &mut Context<'_>, end: i64) -> Result<(), Error> {
        ctx.delete_timer(TimeDomain::EventTime, end - 1)?;
        if self.allowed_lateness_ms > 0 {
            ctx.delete_timer(TimeDomain::EventTime, end - 1 + self.allowed_lateness_ms)?;
        }
        Ok(())
    }

    /// Adds an input at event time `t` to the current key's windows.
    /// Returns the results of windows that had already fired and are
    /// updated by this late input (to emit now).
    pub fn add(
        &self,
        ctx: &mut Context<'_>,
        t: i64,
        input: A::Input,
    ) -> Result<Vec<WindowResult<A::Output>>, Error>
    where
        A::Input: Clone,
    {
        let watermark = ctx.watermark();
        let mut updated = Vec::new();
        let mut dropped = false;
        let mut slots = self.slots.get(ctx)?.unwrap_or_default();
        for (mut start, mut end) in self.assign(t) {
            if watermark >= end - 1 + self.allowed_lateness_ms {
                dropped = true;
                continue;
            }
            let mut acc = A::Acc::default();
            // Timers are registered once per window, when it is created.
            let mut new_window = true;
            if let WindowKind::Session { .. } = self.kind {
                // Merge every session this one overlaps.
                let overlapping: Vec<i64> = slots
                    .iter()
                    .filter(|(s, slot)| **s < end && start < slot.end)
                    .map(|(s, _)| *s)
                    .collect();
                for s in overlapping {
                    if let Some(slot) = slots.remove(&s) {
                        self.unschedule(ctx, slot.end)?;
                        self.aggregate.merge(&mut acc, slot.acc);
                        start = start.min(s);
                        end = end.max(slot.end);
                    }
                }
            } else if let Some(slot) = slots.remove(&start) {
                acc = slot.acc;
                new_window = false;
            }
            self.aggregate.add(&mut acc, input.clone());
            if watermark >= end - 1 {
                updated.push(WindowResult {
                    start,
                    end,
                    value: self.aggregate.result(&acc),
                });
            }
            slots.insert(start, Slot { end, acc });
            if new_window {
                self.schedule(ctx, end)?;
            }
        }
        self.slots.set(ctx, &slots)?;
        if dropped {
            crate::counter_add("late_dropped", 1);
        }
        Ok(updated)
    }

    /// Handles a timer of the current key: returns the windows that fire
    /// now, and drops those past their lateness.
    pub fn on_timer(
        &self,
        ctx: &mut Context<'_>,
        timer: &Timer<'_>,
    ) -> Result<Vec<WindowResult<A::Output>>, Error> {
        let mut slots = self.slots.get(ctx)?.unwrap_or_default();
        let mut fired = Vec::new();
        for (start, slot) in &slots {
            if slot.end - 1 == timer.time {
                fired.push(WindowResult {
                    start: *start,
                    end: slot.end,
                    value: self.aggregate.result(&slot.acc),
                });
            }
        }
        slots.retain(|_, slot| slot.end - 1 + self.allowed_lateness_ms > timer.time);
        if slots.is_empty() {
            self.slots.clear(ctx)?;
        } else {
            self.slots.set(ctx, &slots)?;
        }
        Ok(fired)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Sum;
    impl Aggregate for Sum {
        type Input = i64;
        type Acc = i64;
        type Output = i64;
        fn add(&self, acc: &mut i64, input: i64) {
            *acc += input;
        }
        fn merge(&self, acc: &mut i64, other: i64) {
            *acc += other;
        }
        fn result(&self, acc: &i64) -> i64 {
            *acc
        }
    }

    fn windows(kind: WindowKind) -> Windows<Sum> {
        Windows::new(&mut Setup::default(), "w", kind, 0, Sum).unwrap()
    }

    #[test]
    fn tumbling_and_sliding_assignment() {
        let w = windows(WindowKind::Tumbling { size_ms: 1000 });
        assert_eq!(w.assign(0), vec![(0, 1000)]);
        assert_eq!(w.assign(1999), vec![(1000, 2000)]);
        assert_eq!(w.assign(-1), vec![(-1000, 0)]);
        let w = windows(WindowKind::Sliding {
            size_ms: 1000,
            slide_ms: 250,
        });
        assert_eq!(
            w.assign(1100),
            vec![(1000, 2000), (750, 1750), (500, 1500), (250, 1250)]
        );
    }

    #[test]
    fn bad_shapes_are_refused() {
        let mut setup = Setup::default();
        assert!(
            Windows::new(&mut setup, "w", WindowKind::Tumbling { size_ms: 0 }, 0, Sum).is_err()
        );
        assert!(
            Windows::new(
                &mut setup,
                "w",
                WindowKind::Sliding {
                    size_ms: 1000,
                    slide_ms: 300
                },
                0,
                Sum
            )
            .is_err()
        );
        assert!(
            Windows::new(&mut setup, "w", WindowKind::Session { gap_ms: 10 }, -1, Sum).is_err()
        );
    }
}
