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
//! accumulator, a JSON object keyed by the start), which travels with each
//! batch, so adding an event costs no host call; timers drive firing and
//! clean-up. In memory they are a short list sorted by start (a key rarely
//! has more than a few windows open), read and written in one pass each.
//! Since that state is read and written for every event, windows whose
//! state only this operator reads should opt in to the compact encoding
//! ([`Windows::new_encoded`] with [`Encoding::Compact`]): windows stored as
//! JSON before still read, so a savepoint taken before the switch restores.

use std::fmt;
use std::marker::PhantomData;

use serde::de::{DeserializeOwned, MapAccess, Visitor};
use serde::ser::SerializeMap;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::state::Encoding;
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

/// A key's open windows, sorted by start, each start once. Stored as the
/// JSON object `{"<start>": {"end": …, "acc": …}, …}` that a
/// `BTreeMap<i64, Slot>` gives (so state written by earlier versions reads
/// back unchanged).
struct Open<A>(Vec<(i64, Slot<A>)>);

impl<A> Open<A> {
    fn position(&self, start: i64) -> Result<usize, usize> {
        self.0.binary_search_by_key(&start, |(s, _)| *s)
    }

    fn remove(&mut self, start: i64) -> Option<Slot<A>> {
        self.position(start).ok().map(|i| self.0.remove(i).1)
    }

    /// Inserts or replaces the window at `start`.
    fn insert(&mut self, start: i64, slot: Slot<A>) {
        match self.position(start) {
            Ok(i) => self.0[i].1 = slot,
            Err(i) => self.0.insert(i, (start, slot)),
        }
    }
}

impl<A: Serialize> Serialize for Open<A> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(self.0.len()))?;
        for (start, slot) in &self.0 {
            map.serialize_entry(start, slot)?;
        }
        map.end()
    }
}

impl<'de, A: Deserialize<'de>> Deserialize<'de> for Open<A> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct OpenVisitor<A>(PhantomData<fn() -> A>);
        impl<'de, A: Deserialize<'de>> Visitor<'de> for OpenVisitor<A> {
            type Value = Open<A>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("an object of open windows by start")
            }
            fn visit_map<M: MapAccess<'de>>(self, mut map: M) -> Result<Open<A>, M::Error> {
                let mut open = Open(Vec::with_capacity(map.size_hint().unwrap_or(2)));
                while let Some((start, slot)) = map.next_entry()? {
                    open.insert(start, slot);
                }
                Ok(open)
            }
        }
        deserializer.deserialize_map(OpenVisitor(PhantomData))
    }
}

/// Keyed windows of one operator, declared in `init`.
pub struct Windows<A: Aggregate> {
    kind: WindowKind,
    allowed_lateness_ms: i64,
    aggregate: A,
    /// The key's open windows by start: a value state, so they travel
    /// with each batch (no host call per event).
    slots: ValueState<Open<A::Acc>>,
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
    /// Declares windows kept in value state `name`, stored as JSON. Sizes,
    /// slides and gaps must be positive, and a slide must divide its size.
    pub fn new(
        setup: &mut Setup,
        name: &str,
        kind: WindowKind,
        allowed_lateness_ms: i64,
        aggregate: A,
    ) -> Result<Self, String> {
        Self::new_encoded(
            setup,
            name,
            Encoding::Json,
            kind,
            allowed_lateness_ms,
            aggregate,
        )
    }

    /// As [`Windows::new`], with the open windows stored in `encoding`
    /// ([`Encoding::Compact`]: less work per event; windows stored in the
    /// other encoding still read).
    pub fn new_encoded(
        setup: &mut Setup,
        name: &str,
        encoding: Encoding,
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
            slots: setup.value_state_encoded(name, encoding),
        })
    }

    /// The windows an event at `t` belongs to, as `(start, end)`, latest
    /// start first.
    fn assign(&self, t: i64) -> impl Iterator<Item = (i64, i64)> + use<A> {
        let (latest, count, step, size) = match self.kind {
            WindowKind::Tumbling { size_ms } => (t - t.rem_euclid(size_ms), 1, 0, size_ms),
            WindowKind::Sliding { size_ms, slide_ms } => (
                t - t.rem_euclid(slide_ms),
                size_ms / slide_ms,
                slide_ms,
                size_ms,
            ),
            WindowKind::Session { gap_ms } => (t, 1, 0, gap_ms),
        };
        (0..count).map(move |i| {
            let start = latest - i * step;
            (start, start + size)
        })
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
        let mut slots = self.slots.get(ctx)?.unwrap_or(Open(Vec::new()));
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
                    .0
                    .iter()
                    .filter(|(s, slot)| *s < end && start < slot.end)
                    .map(|(s, _)| *s)
                    .collect();
                for s in overlapping {
                    if let Some(slot) = slots.remove(s) {
                        self.unschedule(ctx, slot.end)?;
                        self.aggregate.merge(&mut acc, slot.acc);
                        start = start.min(s);
                        end = end.max(slot.end);
                    }
                }
            } else if let Some(slot) = slots.remove(start) {
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
        let mut slots = self.slots.get(ctx)?.unwrap_or(Open(Vec::new()));
        let mut fired = Vec::new();
        for (start, slot) in &slots.0 {
            if slot.end - 1 == timer.time {
                fired.push(WindowResult {
                    start: *start,
                    end: slot.end,
                    value: self.aggregate.result(&slot.acc),
                });
            }
        }
        slots
            .0
            .retain(|(_, slot)| slot.end - 1 + self.allowed_lateness_ms > timer.time);
        if slots.0.is_empty() {
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
        assert_eq!(w.assign(0).collect::<Vec<_>>(), vec![(0, 1000)]);
        assert_eq!(w.assign(1999).collect::<Vec<_>>(), vec![(1000, 2000)]);
        assert_eq!(w.assign(-1).collect::<Vec<_>>(), vec![(-1000, 0)]);
        let w = windows(WindowKind::Sliding {
            size_ms: 1000,
            slide_ms: 250,
        });
        assert_eq!(
            w.assign(1100).collect::<Vec<_>>(),
            vec![(1000, 2000), (750, 1750), (500, 1500), (250, 1250)]
        );
    }

    #[test]
    fn open_windows_are_stored_as_the_map_earlier_versions_wrote() {
        use std::collections::BTreeMap;
        // State written before the list: a BTreeMap by start.
        let mut before: BTreeMap<i64, Slot<i64>> = BTreeMap::new();
        before.insert(2000, Slot { end: 3000, acc: 5 });
        before.insert(-1000, Slot { end: 0, acc: 1 });
        before.insert(1000, Slot { end: 2000, acc: 7 });
        let stored = serde_json::to_string(&before).unwrap();
        assert_eq!(
            stored,
            r#"{"-1000":{"end":0,"acc":1},"1000":{"end":2000,"acc":7},"2000":{"end":3000,"acc":5}}"#
        );
        let open: Open<i64> = serde_json::from_str(&stored).unwrap();
        let starts: Vec<i64> = open.0.iter().map(|(s, _)| *s).collect();
        assert_eq!(starts, vec![-1000, 1000, 2000]);
        assert_eq!(serde_json::to_string(&open).unwrap(), stored);
        // Out of order or repeated starts (not written by the SDK) still
        // read as the map would read them: sorted, the last one kept.
        let odd: Open<i64> = serde_json::from_str(
            r#"{"5":{"end":6,"acc":1},"1":{"end":2,"acc":2},"5":{"end":6,"acc":3}}"#,
        )
        .unwrap();
        assert_eq!(
            serde_json::to_string(&odd).unwrap(),
            r#"{"1":{"end":2,"acc":2},"5":{"end":6,"acc":3}}"#
        );
        assert!(serde_json::from_str::<Open<i64>>(r#"{"x":{"end":1,"acc":1}}"#).is_err());
    }

    #[test]
    fn open_windows_stored_as_json_read_back_in_the_compact_encoding() {
        // A savepoint taken before an operator opted in holds JSON; after
        // the switch the same bytes read, and are written back compact.
        let json = br#"{"1000":{"end":2000,"acc":7},"2000":{"end":3000,"acc":5}}"#;
        let open: Open<i64> = crate::state::decode_value(json).unwrap();
        let mut compact = Vec::new();
        crate::state::encode_value(Encoding::Compact, &open, &mut compact).unwrap();
        assert!(compact.len() < json.len() / 3, "{compact:?}");
        let back: Open<i64> = crate::state::decode_value(&compact).unwrap();
        assert_eq!(serde_json::to_vec(&back).unwrap(), json);
    }

    #[test]
    fn open_windows_insert_and_remove_keep_the_order() {
        let mut open: Open<i64> = Open(Vec::new());
        for start in [30, 10, 20, 10] {
            open.insert(
                start,
                Slot {
                    end: start + 10,
                    acc: start,
                },
            );
        }
        assert_eq!(
            open.0.iter().map(|(s, _)| *s).collect::<Vec<_>>(),
            vec![10, 20, 30]
        );
        assert_eq!(open.remove(20).map(|s| s.acc), Some(20));
        assert!(open.remove(20).is_none());
        assert_eq!(
            open.0.iter().map(|(s, _)| *s).collect::<Vec<_>>(),
            vec![10, 30]
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
