//! The worker pool that runs every task of every topology: a fixed number
//! of worker threads take ready tasks from a queue (`sched.rs`) and run
//! one slice of each; one timer thread wakes tasks at a time they asked
//! for (processing-time timers, a source polling an input that cannot
//! notify, the coordinator's interval).
//!
//! Two lanes, each with its own workers and queue: `Compute` (sources,
//! operator chains, sinks whose output the coordinator publishes) and
//! `Blocking` (work that waits on I/O: the checkpoint coordinator's
//! durable commits, sinks that write as batches come, sources whose pull
//! waits on a broker), so an fsync never holds a worker that runs guests.
//!
//! A guest call may still hold a worker for its whole budget (seconds).
//! When every compute worker has been in one slice for longer than
//! [`STALL`] while tasks wait, a watchdog adds a temporary worker (at most
//! as many as there are workers), which ends once the queue is empty; and
//! the task that ran long is throttled (`sched.rs`).
//!
//! A task never blocks: it returns [`Slice::Wait`] and is woken by a
//! [`TaskWaker`] (a message in its inbox, space in a full output, a
//! timer, a control message). Per topology a [`TaskGroup`] counts the
//! live tasks (a run is over when none is left) and the worker time they
//! used.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, OnceLock};
use std::time::{Duration, Instant};

use crate::error::EngineError;
use crate::protocol::Abort;
use crate::sched::{Scheduler, Slice, Throttle};

/// A worker in one slice for this long counts as stuck (a guest call
/// running to its budget).
pub(crate) const STALL: Duration = Duration::from_millis(200);

/// How often the watchdog looks for stuck workers.
const WATCH_EVERY: Duration = Duration::from_millis(100);

/// Messages (chains, sinks) or batches (sources) one slice handles at most.
pub(crate) const SLICE_BUDGET: usize = 64;

/// A task that runs in slices on the pool.
pub(crate) trait Task: Send {
    /// Does at most `budget` units of work, never blocking; says whether
    /// more is ready, it waits for a wake, or it is over.
    fn run_slice(&mut self, budget: usize) -> Result<Slice, EngineError>;
}

/// How many workers a pool has.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolConfig {
    /// Threads running sources, operators and sinks (default: the number
    /// of cores).
    pub workers: usize,
    /// Threads for work that waits on I/O: checkpoint commits, sinks that
    /// write as they go, broker polls (default 2).
    pub blocking_workers: usize,
}

impl Default for PoolConfig {
    fn default() -> Self {
        PoolConfig {
            workers: std::thread::available_parallelism().map_or(2, |n| n.get()),
            blocking_workers: 2,
        }
    }
}

/// Which workers run a task.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Lane {
    Compute = 0,
    Blocking = 1,
}

/// A task as the pool holds it.
struct Pooled {
    /// `None` once dropped (before the group hears it finished).
    task: Option<Box<dyn Task>>,
    name: String,
    group: Arc<TaskGroup>,
    abort: Arc<Abort>,
    throttle: Throttle,
    /// Throttled: not to run before then.
    paused_until: Option<Instant>,
}

impl Pooled {
    fn run(&mut self) -> Slice {
        let Some(task) = self.task.as_mut() else {
            return Slice::Done;
        };
        let _span = tracing::debug_span!("task", task = %self.name).entered();
        match std::panic::catch_unwind(AssertUnwindSafe(|| task.run_slice(SLICE_BUDGET))) {
            Ok(Ok(slice)) => slice,
            Ok(Err(e)) => {
                self.abort.fail(e);
                Slice::Done
            }
            Err(_) => {
                self.abort.fail(EngineError::Internal(format!(
                    "task `{}` panicked",
                    self.name
                )));
                Slice::Done
            }
        }
    }
}

impl Drop for Pooled {
    fn drop(&mut self) {
        // The task's channels close first, then the run may be over.
        drop(self.task.take());
        self.group.finish();
    }
}

/// Called once, when a group's last task has ended.
pub(crate) type OnEnd = Box<dyn FnOnce() + Send>;

/// The live tasks of one topology and the worker time they used.
#[derive(Default)]
pub(crate) struct TaskGroup {
    live: Mutex<usize>,
    ended: Condvar,
    /// What to call when the last task ends.
    on_end: Mutex<Vec<OnEnd>>,
    /// Worker time spent in this group's slices, ns.
    pub(crate) busy_nanos: AtomicU64,
    /// Slices after which a task was paused for running long.
    pub(crate) throttled: AtomicU64,
}

impl TaskGroup {
    fn add(&self) {
        if let Ok(mut live) = self.live.lock() {
            *live += 1;
        }
    }

    fn finish(&self) {
        let over = match self.live.lock() {
            Ok(mut live) => {
                *live = live.saturating_sub(1);
                if *live == 0 {
                    self.ended.notify_all();
                }
                *live == 0
            }
            Err(_) => false,
        };
        if over {
            let calls = self
                .on_end
                .lock()
                .map(|mut c| std::mem::take(&mut *c))
                .unwrap_or_default();
            for call in calls {
                call();
            }
        }
    }

    /// Calls `f` when every task of the group is over (at once if they are).
    pub(crate) fn on_end(&self, f: OnEnd) {
        // Under `live`'s lock: a last task ending meanwhile either finds
        // `f` in the list or leaves `live` at 0 for this to see.
        let Ok(live) = self.live.lock() else {
            return f();
        };
        if *live == 0 {
            drop(live);
            return f();
        }
        if let Ok(mut calls) = self.on_end.lock() {
            calls.push(f);
        }
    }

    /// Whether every task of the group is over.
    pub(crate) fn is_finished(&self) -> bool {
        self.live.lock().map_or(true, |l| *l == 0)
    }

    /// Waits until every task of the group is over.
    pub(crate) fn wait(&self) {
        let Ok(mut live) = self.live.lock() else {
            return;
        };
        while *live > 0 {
            match self.ended.wait(live) {
                Ok(l) => live = l,
                Err(_) => return,
            }
        }
    }
}

struct LaneState {
    sched: Mutex<Scheduler<Pooled>>,
    ready: Condvar,
    /// When each live worker's current slice began (ns since the pool
    /// started, plus 1), 0 while it waits.
    slices: Mutex<Vec<Arc<AtomicU64>>>,
    /// Temporary workers alive.
    extra: AtomicU64,
}

#[derive(Default)]
struct Timers {
    heap: BinaryHeap<Reverse<(Instant, u64, usize)>>,
    /// The earliest pending wake of each task: a later one is not queued
    /// (the task asks again when it runs).
    earliest: HashMap<u64, Instant>,
}

struct Shared {
    lanes: [LaneState; 2],
    timers: Mutex<Timers>,
    timer_changed: Condvar,
    next_id: AtomicU64,
    shutdown: AtomicBool,
    /// Worker time spent in slices, ns, all lanes.
    busy_nanos: AtomicU64,
    started: Instant,
    /// Most temporary workers per lane.
    max_extra: u64,
}

impl Shared {
    fn wake(&self, id: u64, lane: usize) {
        let state = &self.lanes[lane];
        let ready = state.sched.lock().is_ok_and(|mut s| s.wake(id));
        if ready {
            state.ready.notify_one();
        }
    }

    fn wake_at(&self, id: u64, lane: usize, at: Instant) {
        let Ok(mut t) = self.timers.lock() else {
            return;
        };
        if t.earliest.get(&id).is_some_and(|&e| e <= at) {
            return;
        }
        t.earliest.insert(id, at);
        let first = t.heap.peek().is_none_or(|Reverse((e, _, _))| at < *e);
        t.heap.push(Reverse((at, id, lane)));
        if first {
            self.timer_changed.notify_one();
        }
    }

    /// The timer thread: wakes tasks when their time comes.
    fn run_timers(&self) {
        let Ok(mut t) = self.timers.lock() else {
            return;
        };
        loop {
            if self.shutdown.load(Ordering::SeqCst) {
                return;
            }
            let now = Instant::now();
            let mut due = Vec::new();
            while let Some(&Reverse((at, id, lane))) = t.heap.peek() {
                if at > now {
                    break;
                }
                t.heap.pop();
                if t.earliest.get(&id) == Some(&at) {
                    t.earliest.remove(&id);
                }
                due.push((id, lane));
            }
            if !due.is_empty() {
                drop(t);
                for (id, lane) in due {
                    self.wake(id, lane);
                }
                t = match self.timers.lock() {
                    Ok(t) => t,
                    Err(_) => return,
                };
                continue;
            }
            let wait = t
                .heap
                .peek()
                .map(|Reverse((at, _, _))| at.saturating_duration_since(now));
            t = match wait {
                Some(wait) => match self.timer_changed.wait_timeout(t, wait) {
                    Ok((t, _)) => t,
                    Err(_) => return,
                },
                None => match self.timer_changed.wait(t) {
                    Ok(t) => t,
                    Err(_) => return,
                },
            };
        }
    }

    /// A worker of `lane`: runs slices until the pool shuts down (a
    /// temporary one: until the queue is empty).
    fn work(self: &Arc<Self>, lane: usize, temporary: bool) {
        let state = &self.lanes[lane];
        let slice_start = Arc::new(AtomicU64::new(0));
        if let Ok(mut s) = state.slices.lock() {
            s.push(slice_start.clone());
        }
        self.run_worker(lane, temporary, &slice_start);
        if let Ok(mut s) = state.slices.lock() {
            s.retain(|x| !Arc::ptr_eq(x, &slice_start));
        }
        if temporary {
            state.extra.fetch_sub(1, Ordering::SeqCst);
        }
    }

    fn run_worker(&self, lane: usize, temporary: bool, slice_start: &AtomicU64) {
        let state = &self.lanes[lane];
        loop {
            let next = {
                let Ok(mut s) = state.sched.lock() else {
                    return;
                };
                loop {
                    if self.shutdown.load(Ordering::SeqCst) {
                        return;
                    }
                    if let Some(next) = s.next() {
                        break next;
                    }
                    if temporary {
                        return;
                    }
                    s = match state.ready.wait(s) {
                        Ok(s) => s,
                        Err(_) => return,
                    };
                }
            };
            let (id, mut task) = next;
            if let Some(until) = task.paused_until.filter(|&u| u > Instant::now()) {
                // Throttled: back to sleep until the pause is over.
                if let Ok(mut s) = state.sched.lock() {
                    s.pause(id, task);
                }
                self.wake_at(id, lane, until);
                continue;
            }
            task.paused_until = None;
            let started = Instant::now();
            let since = started.saturating_duration_since(self.started);
            slice_start.store(since.as_nanos() as u64 + 1, Ordering::Relaxed);
            let mut slice = task.run();
            slice_start.store(0, Ordering::Relaxed);
            let took = started.elapsed();
            let nanos = took.as_nanos() as u64;
            self.busy_nanos.fetch_add(nanos, Ordering::Relaxed);
            task.group.busy_nanos.fetch_add(nanos, Ordering::Relaxed);
            if slice != Slice::Done
                && let Some(pause) = task.throttle.after(took)
            {
                task.group.throttled.fetch_add(1, Ordering::Relaxed);
                let until = Instant::now() + pause;
                task.paused_until = Some(until);
                if slice == Slice::More {
                    slice = Slice::Wait;
                    self.wake_at(id, lane, until);
                }
            }
            let finished = state
                .sched
                .lock()
                .map(|mut s| s.finished(id, task, slice).0);
            // Dropped outside the lock: it closes channels, which wakes.
            drop(finished);
        }
    }
}

impl Shared {
    /// The watchdog: every [`WATCH_EVERY`], a lane whose workers are all
    /// stuck in long slices while tasks wait gets a temporary worker.
    fn watch(self: &Arc<Self>) {
        while !self.shutdown.load(Ordering::SeqCst) {
            std::thread::sleep(WATCH_EVERY);
            let now = Instant::now()
                .saturating_duration_since(self.started)
                .as_nanos() as u64;
            let stall = STALL.as_nanos() as u64;
            for (lane, state) in self.lanes.iter().enumerate() {
                let all_stuck = state.slices.lock().is_ok_and(|s| {
                    !s.is_empty()
                        && s.iter().all(|t| {
                            let t = t.load(Ordering::Relaxed);
                            t != 0 && now.saturating_sub(t) > stall
                        })
                });
                let waiting = state.sched.lock().map_or(0, |s| s.waiting());
                if all_stuck && waiting > 0 && state.extra.load(Ordering::SeqCst) < self.max_extra {
                    state.extra.fetch_add(1, Ordering::SeqCst);
                    let shared = self.clone();
                    let spawned = std::thread::Builder::new()
                        .name("weir-worker-extra".into())
                        .spawn(move || shared.work(lane, true));
                    if let Err(e) = spawned {
                        state.extra.fetch_sub(1, Ordering::SeqCst);
                        tracing::warn!(error = %e, "cannot add a worker while others are stuck");
                    } else {
                        tracing::debug!(
                            lane,
                            "every worker is stuck in a long slice: a temporary worker added"
                        );
                    }
                }
            }
        }
    }
}

/// Wakes one task of the pool: now, or at a given time.
#[derive(Clone)]
pub(crate) struct TaskWaker {
    shared: Arc<Shared>,
    id: u64,
    lane: usize,
}

impl TaskWaker {
    pub(crate) fn wake(&self) {
        self.shared.wake(self.id, self.lane);
    }

    /// Wakes the task at `at` (or earlier, when woken otherwise).
    pub(crate) fn wake_at(&self, at: Instant) {
        self.shared.wake_at(self.id, self.lane, at);
    }

    /// Wakes the task after `delay`.
    pub(crate) fn wake_after(&self, delay: Duration) {
        self.wake_at(Instant::now() + delay);
    }
}

/// Shuts the pool's threads down when the last handle goes.
struct Owner {
    shared: Arc<Shared>,
    config: PoolConfig,
}

impl Drop for Owner {
    fn drop(&mut self) {
        self.shared.shutdown.store(true, Ordering::SeqCst);
        for lane in &self.shared.lanes {
            lane.ready.notify_all();
            // Tasks left over are dropped here, not by a worker.
            let left = lane.sched.lock().map(|mut s| s.drain()).unwrap_or_default();
            drop(left);
        }
        self.shared.timer_changed.notify_all();
    }
}

/// A fixed set of worker threads running the tasks of any number of
/// topologies. Cheap to clone; the threads end when the last clone goes.
#[derive(Clone)]
pub struct WorkerPool {
    owner: Arc<Owner>,
}

static SHARED_POOL: OnceLock<WorkerPool> = OnceLock::new();

impl WorkerPool {
    /// Starts `config.workers` compute workers, `config.blocking_workers`
    /// blocking workers and the timer thread.
    pub fn new(config: PoolConfig) -> Result<WorkerPool, EngineError> {
        let config = PoolConfig {
            workers: config.workers.max(1),
            blocking_workers: config.blocking_workers.max(1),
        };
        let lane = || LaneState {
            sched: Mutex::new(Scheduler::default()),
            ready: Condvar::new(),
            slices: Mutex::new(Vec::new()),
            extra: AtomicU64::new(0),
        };
        let shared = Arc::new(Shared {
            lanes: [lane(), lane()],
            timers: Mutex::new(Timers::default()),
            timer_changed: Condvar::new(),
            next_id: AtomicU64::new(1),
            shutdown: AtomicBool::new(false),
            busy_nanos: AtomicU64::new(0),
            started: Instant::now(),
            max_extra: config.workers as u64,
        });
        let start = |name: String, body: Box<dyn FnOnce() + Send>| {
            std::thread::Builder::new()
                .name(name)
                .spawn(body)
                .map(drop)
                .map_err(|e| {
                    EngineError::Internal(format!(
                        "cannot start a worker thread: {e}; lower --workers or raise the thread limit"
                    ))
                })
        };
        for (lane, count, prefix) in [
            (Lane::Compute, config.workers, "weir-worker"),
            (Lane::Blocking, config.blocking_workers, "weir-blocking"),
        ] {
            for i in 0..count {
                let s = shared.clone();
                start(
                    format!("{prefix}-{i}"),
                    Box::new(move || s.work(lane as usize, false)),
                )?;
            }
        }
        let s = shared.clone();
        start("weir-timers".into(), Box::new(move || s.run_timers()))?;
        let s = shared.clone();
        start("weir-watchdog".into(), Box::new(move || s.watch()))?;
        Ok(WorkerPool {
            owner: Arc::new(Owner { shared, config }),
        })
    }

    /// The process's pool, started on first use with the configuration
    /// given to [`WorkerPool::configure_shared`] or the default.
    pub fn shared() -> &'static WorkerPool {
        SHARED_POOL.get_or_init(|| {
            WorkerPool::new(PoolConfig::default()).unwrap_or_else(|e| {
                panic!("the worker pool cannot start: {e}");
            })
        })
    }

    /// Sets the process's pool size before its first use; an error once
    /// it runs (call it at start-up, before any topology starts).
    pub fn configure_shared(config: PoolConfig) -> Result<(), EngineError> {
        let pool = WorkerPool::new(config)?;
        SHARED_POOL.set(pool).map_err(|_| {
            EngineError::Internal(
                "the worker pool is already running: set its size before starting topologies"
                    .into(),
            )
        })
    }

    pub fn config(&self) -> PoolConfig {
        self.owner.config
    }

    /// Worker time spent running slices since the pool started.
    pub fn busy(&self) -> Duration {
        Duration::from_nanos(self.owner.shared.busy_nanos.load(Ordering::Relaxed))
    }

    /// Tasks on the pool, all topologies.
    pub fn tasks(&self) -> usize {
        self.owner
            .shared
            .lanes
            .iter()
            .map(|l| l.sched.lock().map_or(0, |s| s.len()))
            .sum()
    }

    /// Threads the pool runs: its workers of both lanes, temporary
    /// workers, the timer and the watchdog.
    pub fn threads(&self) -> usize {
        let extra: u64 = self
            .owner
            .shared
            .lanes
            .iter()
            .map(|l| l.extra.load(Ordering::Relaxed))
            .sum();
        self.owner.config.workers + self.owner.config.blocking_workers + 2 + extra as usize
    }

    /// A waker for a task about to be added on `lane` (its id is fixed
    /// now, so channels can name their consumer before it starts).
    pub(crate) fn waker(&self, lane: Lane) -> TaskWaker {
        TaskWaker {
            shared: self.owner.shared.clone(),
            id: self.owner.shared.next_id.fetch_add(1, Ordering::Relaxed),
            lane: lane as usize,
        }
    }

    /// Adds `task` under `waker`'s id; it runs its first slice soon. Its
    /// error, or panic, stops the run through `abort`.
    pub(crate) fn spawn(
        &self,
        waker: &TaskWaker,
        name: String,
        task: Box<dyn Task>,
        group: &Arc<TaskGroup>,
        abort: &Arc<Abort>,
    ) {
        group.add();
        let pooled = Pooled {
            task: Some(task),
            name,
            group: group.clone(),
            abort: abort.clone(),
            throttle: Throttle::default(),
            paused_until: None,
        };
        let state = &self.owner.shared.lanes[waker.lane];
        if let Ok(mut s) = state.sched.lock() {
            s.insert(waker.id, pooled);
        }
        state.ready.notify_one();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc::channel;

    /// Counts down, one unit per slice, asking to run again until zero.
    struct Countdown {
        left: u32,
        done: std::sync::mpsc::Sender<()>,
    }

    impl Task for Countdown {
        fn run_slice(&mut self, _: usize) -> Result<Slice, EngineError> {
            self.left -= 1;
            if self.left == 0 {
                let _ = self.done.send(());
                return Ok(Slice::Done);
            }
            Ok(Slice::More)
        }
    }

    fn pool(workers: usize) -> WorkerPool {
        WorkerPool::new(PoolConfig {
            workers,
            blocking_workers: 1,
        })
        .unwrap()
    }

    #[test]
    fn more_tasks_than_workers_all_run_to_their_end() {
        let pool = pool(2);
        let group = Arc::new(TaskGroup::default());
        let abort = Arc::new(Abort::default());
        let (tx, rx) = channel();
        for _ in 0..50 {
            let w = pool.waker(Lane::Compute);
            let task = Countdown {
                left: 20,
                done: tx.clone(),
            };
            pool.spawn(&w, "countdown".into(), Box::new(task), &group, &abort);
        }
        group.wait();
        assert_eq!(rx.try_iter().count(), 50);
        assert!(group.is_finished());
        assert!(group.busy_nanos.load(Ordering::Relaxed) > 0);
    }

    #[test]
    fn the_end_of_a_group_is_told_once_and_at_once_when_it_is_over() {
        let pool = pool(1);
        let group = Arc::new(TaskGroup::default());
        let abort = Arc::new(Abort::default());
        let w = pool.waker(Lane::Compute);
        pool.spawn(
            &w,
            "sleeper".into(),
            Box::new(Sleeper { slept: false }),
            &group,
            &abort,
        );
        let (tx, rx) = channel();
        let told = tx.clone();
        group.on_end(Box::new(move || told.send("first").unwrap()));
        assert!(
            rx.recv_timeout(Duration::from_millis(100)).is_err(),
            "told before its task ended"
        );
        w.wake();
        assert_eq!(rx.recv_timeout(Duration::from_secs(10)), Ok("first"));
        group.wait();
        // Asked once it is over: told at once, and the first is not told again.
        group.on_end(Box::new(move || tx.send("late").unwrap()));
        assert_eq!(rx.try_iter().collect::<Vec<_>>(), ["late"]);
    }

    /// Waits once, then ends when woken.
    struct Sleeper {
        slept: bool,
    }

    impl Task for Sleeper {
        fn run_slice(&mut self, _: usize) -> Result<Slice, EngineError> {
            if self.slept {
                return Ok(Slice::Done);
            }
            self.slept = true;
            Ok(Slice::Wait)
        }
    }

    #[test]
    fn a_waiting_task_runs_again_only_when_woken_now_or_by_the_timer() {
        let pool = pool(1);
        let abort = Arc::new(Abort::default());
        let now = Arc::new(TaskGroup::default());
        let w = pool.waker(Lane::Compute);
        pool.spawn(
            &w,
            "now".into(),
            Box::new(Sleeper { slept: false }),
            &now,
            &abort,
        );
        std::thread::sleep(Duration::from_millis(50));
        assert!(!now.is_finished(), "waits for its wake");
        w.wake();
        now.wait();
        let timed = Arc::new(TaskGroup::default());
        let w = pool.waker(Lane::Blocking);
        pool.spawn(
            &w,
            "timed".into(),
            Box::new(Sleeper { slept: false }),
            &timed,
            &abort,
        );
        let started = Instant::now();
        w.wake_after(Duration::from_millis(30));
        timed.wait();
        assert!(started.elapsed() >= Duration::from_millis(30));
    }

    struct Failing;

    impl Task for Failing {
        fn run_slice(&mut self, _: usize) -> Result<Slice, EngineError> {
            Err(EngineError::Internal("boom".into()))
        }
    }

    struct Panicking;

    impl Task for Panicking {
        fn run_slice(&mut self, _: usize) -> Result<Slice, EngineError> {
            panic!("a bug in a task")
        }
    }

    #[test]
    fn a_failing_or_panicking_task_stops_its_run_and_the_workers_go_on() {
        let pool = pool(1);
        let group = Arc::new(TaskGroup::default());
        let abort = Arc::new(Abort::default());
        pool.spawn(
            &pool.waker(Lane::Compute),
            "f".into(),
            Box::new(Failing),
            &group,
            &abort,
        );
        group.wait();
        assert!(abort.stopped());
        let first = abort.error.lock().unwrap().take().unwrap();
        assert!(first.to_string().contains("boom"), "{first}");
        let abort = Arc::new(Abort::default());
        pool.spawn(
            &pool.waker(Lane::Compute),
            "p".into(),
            Box::new(Panicking),
            &group,
            &abort,
        );
        group.wait();
        let err = abort.error.lock().unwrap().take().unwrap();
        assert!(err.to_string().contains("task `p` panicked"), "{err}");
        let (tx, rx) = channel();
        let task = Countdown { left: 1, done: tx };
        pool.spawn(
            &pool.waker(Lane::Compute),
            "c".into(),
            Box::new(task),
            &group,
            &abort,
        );
        group.wait();
        assert_eq!(rx.try_iter().count(), 1, "the worker survived the panic");
    }

    /// Each slice spins for `spin`, forever.
    struct Hog {
        spin: Duration,
    }

    impl Task for Hog {
        fn run_slice(&mut self, _: usize) -> Result<Slice, EngineError> {
            let until = Instant::now() + self.spin;
            while Instant::now() < until {
                std::hint::spin_loop();
            }
            Ok(Slice::More)
        }
    }

    /// One slice spinning for `spin`, then over.
    struct Stuck {
        spin: Duration,
    }

    impl Task for Stuck {
        fn run_slice(&mut self, _: usize) -> Result<Slice, EngineError> {
            let until = Instant::now() + self.spin;
            while Instant::now() < until {
                std::hint::spin_loop();
            }
            Ok(Slice::Done)
        }
    }

    #[test]
    fn a_waiting_task_gets_a_temporary_worker_while_every_worker_is_stuck() {
        let pool = pool(1);
        let group = Arc::new(TaskGroup::default());
        let abort = Arc::new(Abort::default());
        let stuck = Stuck {
            spin: Duration::from_secs(3),
        };
        pool.spawn(
            &pool.waker(Lane::Compute),
            "stuck".into(),
            Box::new(stuck),
            &group,
            &abort,
        );
        std::thread::sleep(Duration::from_millis(50));
        let (tx, rx) = channel();
        let quick = Countdown { left: 1, done: tx };
        pool.spawn(
            &pool.waker(Lane::Compute),
            "quick".into(),
            Box::new(quick),
            &group,
            &abort,
        );
        assert!(
            rx.recv_timeout(Duration::from_millis(2_500)).is_ok(),
            "the quick task waited for the stuck one's slice to end"
        );
        group.wait();
        assert!(
            pool.threads() <= 1 + 1 + 2 + 1,
            "at most one temporary worker"
        );
    }

    #[test]
    fn a_task_whose_slices_keep_running_long_is_throttled() {
        let pool = pool(1);
        let group = Arc::new(TaskGroup::default());
        let abort = Arc::new(Abort::default());
        let hog = Hog {
            spin: crate::sched::LONG_SLICE + Duration::from_millis(5),
        };
        let started = Instant::now();
        pool.spawn(
            &pool.waker(Lane::Compute),
            "hog".into(),
            Box::new(hog),
            &group,
            &abort,
        );
        std::thread::sleep(Duration::from_millis(600));
        let busy = Duration::from_nanos(group.busy_nanos.load(Ordering::Relaxed));
        let elapsed = started.elapsed();
        assert!(group.throttled.load(Ordering::Relaxed) > 0);
        // Unthrottled it would use the whole worker (busy ≈ elapsed).
        assert!(
            busy.as_secs_f64() < 0.8 * elapsed.as_secs_f64(),
            "a throttled task gets about half a worker: it got {busy:?} of {elapsed:?}"
        );
    }
}
