//! The bounded channel between task instances on the worker pool. Unlike
//! a blocking channel, a full channel does not hold the sender's thread:
//! [`Outlet::try_send`] hands the message back and remembers the sender's
//! waker, which is woken when the consumer makes room (backpressure
//! without blocking a worker). A send wakes the consumer. The consumer
//! sees the channel closed once every [`Outlet`] is gone; senders see it
//! gone once the [`Inbox`] is.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};

use crate::pool::TaskWaker;
use crate::protocol::Envelope;

struct Inner {
    queue: VecDeque<Envelope>,
    capacity: usize,
    /// The task that reads the channel.
    consumer: Option<TaskWaker>,
    /// Senders that found it full, woken when there is room.
    waiting: Vec<TaskWaker>,
    outlets: usize,
    inbox_alive: bool,
}

struct Shared(Mutex<Inner>);

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding this lock cannot leave the queue half
        // changed: take it over.
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// What became of a message sent.
pub(crate) enum Sent {
    Queued,
    /// The channel is full: the message comes back; the sender is woken
    /// when there is room.
    Full(Envelope),
    /// The consumer is gone.
    Gone,
}

/// Why nothing was received.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RecvError {
    Empty,
    /// Empty, and every sender is gone.
    Closed,
}

/// The sending end; clone it for each producer.
pub(crate) struct Outlet(Arc<Shared>);

/// The receiving end, owned by the consumer task.
pub(crate) struct Inbox(Arc<Shared>);

/// A channel holding at most `capacity` messages (at least 1).
pub(crate) fn channel(capacity: usize) -> (Outlet, Inbox) {
    let shared = Arc::new(Shared(Mutex::new(Inner {
        queue: VecDeque::new(),
        capacity: capacity.max(1),
        consumer: None,
        waiting: Vec::new(),
        outlets: 1,
        inbox_alive: true,
    })));
    (Outlet(shared.clone()), Inbox(shared))
}

impl Outlet {
    /// Sends unless the channel is full; when full, `sender` (if any) is
    /// woken once there is room.
    pub(crate) fn try_send(&self, envelope: Envelope, sender: Option<&TaskWaker>) -> Sent {
        let mut inner = self.0.lock();
        if !inner.inbox_alive {
            return Sent::Gone;
        }
        if inner.queue.len() >= inner.capacity {
            if let Some(w) = sender {
                inner.waiting.push(w.clone());
            }
            return Sent::Full(envelope);
        }
        inner.queue.push_back(envelope);
        let consumer = inner.consumer.clone();
        drop(inner);
        if let Some(c) = consumer {
            c.wake();
        }
        Sent::Queued
    }

    /// Sends whatever the capacity (a rare message from outside the
    /// topology, such as a state query, which must not wait on the
    /// topology's backpressure). False when the consumer is gone.
    pub(crate) fn force_send(&self, envelope: Envelope) -> bool {
        let mut inner = self.0.lock();
        if !inner.inbox_alive {
            return false;
        }
        inner.queue.push_back(envelope);
        let consumer = inner.consumer.clone();
        drop(inner);
        if let Some(c) = consumer {
            c.wake();
        }
        true
    }
}

impl Clone for Outlet {
    fn clone(&self) -> Self {
        self.0.lock().outlets += 1;
        Outlet(self.0.clone())
    }
}

impl Drop for Outlet {
    fn drop(&mut self) {
        let mut inner = self.0.lock();
        inner.outlets -= 1;
        let consumer = (inner.outlets == 0)
            .then(|| inner.consumer.clone())
            .flatten();
        drop(inner);
        if let Some(c) = consumer {
            c.wake();
        }
    }
}

impl Inbox {
    /// Names the task woken by each message.
    pub(crate) fn set_consumer(&self, consumer: TaskWaker) {
        self.0.lock().consumer = Some(consumer);
    }

    /// The oldest message, if any; a sender waiting for room is woken.
    pub(crate) fn try_recv(&self) -> Result<Envelope, RecvError> {
        let mut inner = self.0.lock();
        let Some(envelope) = inner.queue.pop_front() else {
            return Err(if inner.outlets == 0 {
                RecvError::Closed
            } else {
                RecvError::Empty
            });
        };
        let waiting = std::mem::take(&mut inner.waiting);
        drop(inner);
        for w in waiting {
            w.wake();
        }
        Ok(envelope)
    }
}

impl Drop for Inbox {
    fn drop(&mut self) {
        let mut inner = self.0.lock();
        inner.inbox_alive = false;
        inner.queue.clear();
        let waiting = std::mem::take(&mut inner.waiting);
        drop(inner);
        for w in waiting {
            w.wake();
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use super::*;
    use crate::pool::{Lane, PoolConfig, Task, TaskGroup, WorkerPool};
    use crate::protocol::{Abort, Msg};
    use crate::sched::Slice;

    fn msg(n: i64) -> Envelope {
        Envelope {
            from: 0,
            msg: Msg::Watermark(n),
        }
    }

    fn watermark(e: Envelope) -> i64 {
        match e.msg {
            Msg::Watermark(n) => n,
            _ => panic!("not a watermark"),
        }
    }

    #[test]
    fn a_full_channel_hands_the_message_back_and_keeps_order() {
        let (tx, rx) = channel(2);
        assert!(matches!(tx.try_send(msg(1), None), Sent::Queued));
        assert!(matches!(tx.try_send(msg(2), None), Sent::Queued));
        let Sent::Full(back) = tx.try_send(msg(3), None) else {
            panic!("expected the channel to be full");
        };
        assert_eq!(watermark(back), 3);
        assert_eq!(watermark(rx.try_recv().unwrap()), 1);
        assert!(matches!(tx.try_send(msg(3), None), Sent::Queued));
        assert_eq!(watermark(rx.try_recv().unwrap()), 2);
        assert_eq!(watermark(rx.try_recv().unwrap()), 3);
        assert_eq!(rx.try_recv().err(), Some(RecvError::Empty));
        assert!(tx.force_send(msg(4)) && tx.force_send(msg(5)) && tx.force_send(msg(6)));
        assert_eq!(
            rx.try_recv().map(watermark).unwrap(),
            4,
            "forced past capacity"
        );
    }

    #[test]
    fn the_consumer_sees_the_end_when_every_sender_is_gone_and_senders_see_it_gone() {
        let (tx, rx) = channel(4);
        let tx2 = tx.clone();
        assert!(matches!(tx.try_send(msg(1), None), Sent::Queued));
        drop(tx);
        drop(tx2);
        assert_eq!(watermark(rx.try_recv().unwrap()), 1, "what was sent stays");
        assert_eq!(rx.try_recv().err(), Some(RecvError::Closed));
        let (tx, rx) = channel(4);
        drop(rx);
        assert!(matches!(tx.try_send(msg(1), None), Sent::Gone));
        assert!(!tx.force_send(msg(1)));
    }

    /// Sends `total` numbered messages into a channel of capacity 1,
    /// waiting when it is full.
    struct Producer {
        out: Outlet,
        next: i64,
        total: i64,
        held: Option<Envelope>,
        me: crate::pool::TaskWaker,
    }

    impl Task for Producer {
        fn run_slice(&mut self, budget: usize) -> Result<Slice, crate::EngineError> {
            for _ in 0..budget {
                let e = match self.held.take() {
                    Some(e) => e,
                    None if self.next < self.total => {
                        self.next += 1;
                        msg(self.next)
                    }
                    None => return Ok(Slice::Done),
                };
                match self.out.try_send(e, Some(&self.me)) {
                    Sent::Queued => {}
                    Sent::Full(e) => {
                        self.held = Some(e);
                        return Ok(Slice::Wait);
                    }
                    Sent::Gone => return Ok(Slice::Done),
                }
            }
            Ok(Slice::More)
        }
    }

    /// Receives until the channel closes, checking the order.
    struct Consumer {
        rx: Inbox,
        seen: Arc<Mutex<Vec<i64>>>,
    }

    impl Task for Consumer {
        fn run_slice(&mut self, budget: usize) -> Result<Slice, crate::EngineError> {
            for _ in 0..budget {
                match self.rx.try_recv() {
                    Ok(e) => self.seen.lock().unwrap().push(watermark(e)),
                    Err(RecvError::Empty) => return Ok(Slice::Wait),
                    Err(RecvError::Closed) => return Ok(Slice::Done),
                }
            }
            Ok(Slice::More)
        }
    }

    #[test]
    fn a_producer_and_consumer_on_one_worker_pass_everything_through_a_tiny_channel() {
        // One worker: a blocking send would deadlock here; waiting and
        // waking must hand the turn back and forth.
        let pool = WorkerPool::new(PoolConfig {
            workers: 1,
            blocking_workers: 1,
        })
        .unwrap();
        let (tx, rx) = channel(1);
        let group = Arc::new(TaskGroup::default());
        let abort = Arc::new(Abort::default());
        let seen = Arc::new(Mutex::new(Vec::new()));
        let cw = pool.waker(Lane::Compute);
        rx.set_consumer(cw.clone());
        let pw = pool.waker(Lane::Compute);
        let producer = Producer {
            out: tx,
            next: 0,
            total: 500,
            held: None,
            me: pw.clone(),
        };
        pool.spawn(&pw, "producer".into(), Box::new(producer), &group, &abort);
        let consumer = Consumer {
            rx,
            seen: seen.clone(),
        };
        pool.spawn(&cw, "consumer".into(), Box::new(consumer), &group, &abort);
        let waited = std::time::Instant::now();
        while !group.is_finished() && waited.elapsed() < Duration::from_secs(30) {
            std::thread::sleep(Duration::from_millis(5));
        }
        assert!(
            group.is_finished(),
            "stuck: {} seen",
            seen.lock().unwrap().len()
        );
        assert_eq!(*seen.lock().unwrap(), (1..=500).collect::<Vec<_>>());
    }
}
