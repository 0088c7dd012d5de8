//! Which task runs next, as a plain state machine (no threads, no clock):
//! the ready queue and the wake logic of the worker pool (`pool.rs`), and
//! the throttle that slows a task whose slices keep running long.
//!
//! A task is idle (nothing to do until woken), queued (in the ready queue,
//! once) or running (taken by a worker). A wake while it runs is
//! remembered, so a message that arrives between the task's last look at
//! its inbox and the end of its slice is never lost: the task is queued
//! again as its slice ends. The queue is first in, first out, so every
//! ready task gets a slice before any task gets two.

use std::collections::{HashMap, VecDeque};
use std::time::Duration;

/// What a slice of work left.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Slice {
    /// More work is ready now: queue the task again.
    More,
    /// Nothing to do until a wake (input, output space, a timer, a control
    /// message).
    Wait,
    /// The task is over.
    Done,
}

/// Where a task stands.
enum Slot<T> {
    Idle(T),
    Queued(T),
    Running {
        /// Woken while running: queue it again when its slice ends.
        woken: bool,
    },
}

/// Tasks by id and the ready queue.
pub(crate) struct Scheduler<T> {
    slots: HashMap<u64, Slot<T>>,
    ready: VecDeque<u64>,
}

impl<T> Default for Scheduler<T> {
    fn default() -> Self {
        Scheduler {
            slots: HashMap::new(),
            ready: VecDeque::new(),
        }
    }
}

impl<T> Scheduler<T> {
    /// Adds a task, queued (its first slice starts it).
    pub(crate) fn insert(&mut self, id: u64, task: T) {
        self.slots.insert(id, Slot::Queued(task));
        self.ready.push_back(id);
    }

    /// Wakes task `id`; true when it became ready (a worker should look).
    /// Waking a task that is gone, or not added yet, does nothing: its
    /// first slice sees whatever the wake was for.
    pub(crate) fn wake(&mut self, id: u64) -> bool {
        let Some(slot) = self.slots.get_mut(&id) else {
            return false;
        };
        match slot {
            Slot::Queued(_) => false,
            Slot::Running { woken } => {
                *woken = true;
                false
            }
            Slot::Idle(_) => {
                if let Some(Slot::Idle(task)) = self.slots.remove(&id) {
                    self.slots.insert(id, Slot::Queued(task));
                    self.ready.push_back(id);
                }
                true
            }
        }
    }

    /// The next ready task, taken out to run.
    pub(crate) fn next(&mut self) -> Option<(u64, T)> {
        while let Some(id) = self.ready.pop_front() {
            if let Some(Slot::Queued(task)) = self.slots.remove(&id) {
                self.slots.insert(id, Slot::Running { woken: false });
                return Some((id, task));
            }
        }
        None
    }

    /// Task `id` ended a slice with `slice`. A finished task is handed
    /// back, for the caller to drop outside its lock (dropping a task
    /// closes its channels, which wakes others). True in the second place
    /// when the task is queued again.
    pub(crate) fn finished(&mut self, id: u64, task: T, slice: Slice) -> (Option<T>, bool) {
        let woken = matches!(self.slots.get(&id), Some(Slot::Running { woken: true }));
        match slice {
            Slice::Done => {
                self.slots.remove(&id);
                (Some(task), false)
            }
            Slice::More => {
                self.slots.insert(id, Slot::Queued(task));
                self.ready.push_back(id);
                (None, true)
            }
            Slice::Wait if woken => {
                self.slots.insert(id, Slot::Queued(task));
                self.ready.push_back(id);
                (None, true)
            }
            Slice::Wait => {
                self.slots.insert(id, Slot::Idle(task));
                (None, false)
            }
        }
    }

    /// Puts a running task to sleep whatever woke it meanwhile (it is
    /// throttled: a timer wakes it when its pause is over).
    pub(crate) fn pause(&mut self, id: u64, task: T) {
        self.slots.insert(id, Slot::Idle(task));
    }

    /// Tasks ready and waiting for a worker.
    pub(crate) fn waiting(&self) -> usize {
        self.ready.len()
    }

    /// Tasks not finished.
    pub(crate) fn len(&self) -> usize {
        self.slots.len()
    }

    /// Takes every task out (the pool is shutting down).
    pub(crate) fn drain(&mut self) -> Vec<T> {
        self.ready.clear();
        self.slots
            .drain()
            .filter_map(|(_, s)| match s {
                Slot::Idle(t) | Slot::Queued(t) => Some(t),
                Slot::Running { .. } => None,
            })
            .collect()
    }
}

/// A slice longer than this counts as a long one for the throttle.
pub(crate) const LONG_SLICE: Duration = Duration::from_millis(20);

/// Long slices in a row after which a task is throttled.
pub(crate) const LONG_STREAK: u32 = 3;

/// A slice this long is throttled at once (guest calls running to their
/// budget: a slice is normally at most a few ms).
pub(crate) const VERY_LONG_SLICE: Duration = Duration::from_millis(250);

/// Slows a task whose slices keep running long (a guest using its whole
/// call budget call after call): after [`LONG_STREAK`] long slices in a
/// row, or one of [`VERY_LONG_SLICE`], each long slice is followed by a
/// pause as long as the slice, so the task gets at most half of a worker
/// and other tasks' turns come round.
#[derive(Debug, Default)]
pub(crate) struct Throttle {
    streak: u32,
}

impl Throttle {
    /// Records a slice that took `took`; the pause before the task may run
    /// again, if it is throttled.
    pub(crate) fn after(&mut self, took: Duration) -> Option<Duration> {
        if took < LONG_SLICE {
            self.streak = 0;
            return None;
        }
        self.streak = self.streak.saturating_add(1);
        (self.streak >= LONG_STREAK || took >= VERY_LONG_SLICE).then_some(took)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::Rng;

    #[test]
    fn a_new_task_runs_once_then_waits_for_a_wake() {
        let mut s = Scheduler::default();
        s.insert(1, "a");
        let (id, t) = s.next().expect("queued at insert");
        assert_eq!((id, t), (1, "a"));
        assert!(s.next().is_none(), "running, not queued twice");
        assert_eq!(s.finished(1, t, Slice::Wait), (None, false));
        assert!(s.next().is_none(), "idle until woken");
        assert!(s.wake(1));
        assert_eq!(s.next(), Some((1, "a")));
    }

    #[test]
    fn a_wake_while_running_queues_the_task_again_when_its_slice_ends() {
        let mut s = Scheduler::default();
        s.insert(7, ());
        let (_, t) = s.next().unwrap();
        assert!(!s.wake(7), "running: remembered, no worker needed");
        assert!(!s.wake(7));
        assert_eq!(s.finished(7, t, Slice::Wait), (None, true));
        assert!(s.next().is_some(), "the wake was not lost");
        assert!(s.next().is_none(), "and queued once only");
    }

    #[test]
    fn waking_a_queued_gone_or_unknown_task_does_nothing() {
        let mut s = Scheduler::default();
        s.insert(1, ());
        assert!(!s.wake(1), "already queued");
        assert!(!s.wake(99), "never added");
        let (_, t) = s.next().unwrap();
        assert_eq!(s.finished(1, t, Slice::Done), (Some(()), false));
        assert!(!s.wake(1), "finished");
        assert_eq!(s.len(), 0);
        assert!(s.next().is_none());
    }

    #[test]
    fn ready_tasks_take_turns_first_in_first_out() {
        let mut s = Scheduler::default();
        for id in 0..3 {
            s.insert(id, id);
        }
        let mut order = Vec::new();
        for _ in 0..6 {
            let (id, t) = s.next().unwrap();
            order.push(id);
            s.finished(id, t, Slice::More);
        }
        assert_eq!(
            order,
            [0, 1, 2, 0, 1, 2],
            "a busy task cannot starve others"
        );
    }

    #[test]
    fn random_wakes_and_slices_never_lose_or_duplicate_a_task() {
        // Model: a task must run after every wake that came after its last
        // slice began; no task is ever queued twice.
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        let mut s: Scheduler<u64> = Scheduler::default();
        let n = 8u64;
        let mut running: Vec<(u64, u64)> = Vec::new();
        let mut owed = vec![true; n as usize]; // a wake not yet served
        for id in 0..n {
            s.insert(id, id);
        }
        for _ in 0..5_000 {
            match rng.below(3) {
                0 => {
                    let id = rng.below(n as usize) as u64;
                    s.wake(id);
                    owed[id as usize] = true;
                }
                1 => {
                    if let Some((id, t)) = s.next() {
                        assert_eq!(id, t);
                        assert!(
                            !running.iter().any(|(r, _)| *r == id),
                            "task {id} runs twice at once"
                        );
                        owed[id as usize] = false;
                        running.push((id, t));
                    }
                }
                _ => {
                    if !running.is_empty() {
                        let (id, t) = running.remove(rng.below(running.len()));
                        s.finished(id, t, Slice::Wait);
                    }
                }
            }
        }
        for (id, t) in running.drain(..) {
            s.finished(id, t, Slice::Wait);
        }
        let mut ran = vec![false; n as usize];
        while let Some((id, t)) = s.next() {
            ran[id as usize] = true;
            s.finished(id, t, Slice::Wait);
        }
        for id in 0..n as usize {
            assert!(!owed[id] || ran[id], "task {id} was woken but never ran");
        }
    }

    #[test]
    fn a_task_is_throttled_after_a_streak_of_long_slices_only() {
        let mut t = Throttle::default();
        let long = LONG_SLICE * 2;
        assert_eq!(t.after(long), None);
        assert_eq!(t.after(long), None);
        assert_eq!(t.after(long), Some(long), "third long slice in a row");
        assert_eq!(
            t.after(long * 2),
            Some(long * 2),
            "pause as long as the slice"
        );
        assert_eq!(
            t.after(Duration::from_millis(1)),
            None,
            "a short one resets"
        );
        assert_eq!(t.after(long), None);
        assert_eq!(
            t.after(VERY_LONG_SLICE),
            Some(VERY_LONG_SLICE),
            "one very long slice is enough"
        );
    }
}
