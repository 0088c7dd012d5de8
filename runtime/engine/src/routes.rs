//! How a producing task instance's output reaches its consumers: forward
//! (instance i to instance i), rebalance (round-robin) or keyed (by key
//! group of the key, or of a JSON field that becomes the key), and the
//! broadcast of watermarks, barriers and the end to every consumer
//! instance.
//!
//! A send never blocks: what a full channel does not take waits in the
//! producer's outbox, in order, and the producer reads nothing new until
//! [`Outputs::flush`] has sent it all (backpressure); the channel wakes
//! the producer when there is room.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Instant;

use weir_types::{Batch, key_group_of};

use crate::chan::{Outlet, Sent};
use crate::metrics::InstanceMetrics;
use crate::pool::TaskWaker;
use crate::protocol::{Envelope, Msg, Origin};

/// How a producer's output reaches one consumer.
#[derive(Debug, Clone)]
pub(crate) enum RouteKind {
    /// To the consumer instance with the producer's index.
    Forward,
    /// Batches round-robin over the consumer's instances.
    Rebalance,
    /// By key group of the key (or of a JSON field, which becomes the key).
    Keyed {
        field: Option<String>,
        groups: u16,
        /// Consumer instance of each key group.
        owner: Arc<Vec<u16>>,
    },
}

#[derive(Clone)]
pub(crate) struct Route {
    pub(crate) kind: RouteKind,
    pub(crate) targets: Vec<Outlet>,
}

/// The outputs of one producing task instance.
pub(crate) struct Outputs {
    pub(crate) id: usize,
    pub(crate) index: usize,
    pub(crate) routes: Vec<Route>,
    pub(crate) next: usize,
    pub(crate) metrics: Option<Arc<InstanceMetrics>>,
    /// The producing task, woken when a full channel has room.
    pub(crate) waker: Option<TaskWaker>,
    /// `(route, target, message)` that full channels did not take yet.
    pub(crate) outbox: VecDeque<(usize, usize, Envelope)>,
    /// Since when the outbox has held something (backpressure time).
    pub(crate) blocked_since: Option<Instant>,
}

impl Outputs {
    /// Outputs over `routes`, nothing sent yet.
    pub(crate) fn new(id: usize, index: usize, routes: Vec<Route>) -> Self {
        Outputs {
            id,
            index,
            routes,
            next: index,
            metrics: None,
            waker: None,
            outbox: VecDeque::new(),
            blocked_since: None,
        }
    }

    /// Sends to target `target` of route `route`, or queues the message
    /// behind those already waiting. `Err`: the consumer is gone.
    fn send(&mut self, route: usize, target: usize, msg: Msg) -> Result<(), ()> {
        let envelope = Envelope { from: self.id, msg };
        if !self.outbox.is_empty() {
            self.outbox.push_back((route, target, envelope));
            return Ok(());
        }
        match self.routes[route].targets[target].try_send(envelope, self.waker.as_ref()) {
            Sent::Queued => Ok(()),
            Sent::Full(envelope) => {
                self.outbox.push_back((route, target, envelope));
                self.blocked_since.get_or_insert_with(Instant::now);
                Ok(())
            }
            Sent::Gone => Err(()),
        }
    }

    /// Sends what waits in the outbox: `Ok(true)` once all of it is sent,
    /// `Ok(false)` when a channel is still full (the task is woken when it
    /// has room), `Err` when a consumer is gone.
    pub(crate) fn flush(&mut self) -> Result<bool, ()> {
        while let Some((route, target, envelope)) = self.outbox.pop_front() {
            match self.routes[route].targets[target].try_send(envelope, self.waker.as_ref()) {
                Sent::Queued => {}
                Sent::Full(envelope) => {
                    self.outbox.push_front((route, target, envelope));
                    return Ok(false);
                }
                Sent::Gone => return Err(()),
            }
        }
        if let Some(since) = self.blocked_since.take()
            && let Some(m) = &self.metrics
        {
            InstanceMetrics::add(&m.blocked_nanos, since.elapsed().as_nanos() as u64);
        }
        Ok(true)
    }

    /// Sends a batch along every route. `Err` means a consumer is gone (the
    /// topology is stopping).
    pub(crate) fn batch(&mut self, batch: Batch) -> Result<(), ()> {
        self.batch_from(batch, None)
    }

    /// Sends a batch read by a source along every route, with its origin
    /// (split with the batch when a route splits it by key).
    pub(crate) fn batch_from(&mut self, batch: Batch, origin: Option<Origin>) -> Result<(), ()> {
        if batch.is_empty() {
            return Ok(());
        }
        let routes = self.routes.clone();
        let last = routes.len().saturating_sub(1);
        let mut batch = Some(batch);
        for (r, route) in routes.iter().enumerate() {
            // The last route takes the batch itself; the others a copy.
            let b = if r == last {
                batch.take().unwrap_or_default()
            } else {
                batch.clone().unwrap_or_default()
            };
            match &route.kind {
                RouteKind::Forward => {
                    let t = self.index.min(route.targets.len() - 1);
                    self.send(r, t, Msg::Batch(b, origin.clone()))?;
                }
                RouteKind::Rebalance => {
                    let t = self.next % route.targets.len();
                    self.next += 1;
                    self.send(r, t, Msg::Batch(b, origin.clone()))?;
                }
                RouteKind::Keyed {
                    field,
                    groups,
                    owner,
                } => {
                    let mut parts: Vec<Batch> = vec![Batch::default(); route.targets.len()];
                    // Which events of `b` each part holds, for their origin.
                    let mut picked: Vec<Vec<usize>> = vec![Vec::new(); route.targets.len()];
                    for (i, e) in b.iter().enumerate() {
                        let rekeyed = field
                            .as_ref()
                            .map(|f| weir_types::wire::field_key(e.value, f));
                        let key: Option<&[u8]> = match &rekeyed {
                            Some(k) => k.as_deref(),
                            None => e.key,
                        };
                        let t = match key {
                            Some(k) => owner[key_group_of(k, *groups).0 as usize] as usize,
                            None => 0,
                        };
                        if origin.is_some() {
                            picked[t].push(i);
                        }
                        let part = &mut parts[t];
                        let index = part.len() as u32;
                        part.headers.extend(
                            e.headers
                                .iter()
                                .map(|(_, n, v)| (index, n.clone(), v.clone())),
                        );
                        part.push(key, e.value, e.timestamp);
                    }
                    for (t, (part, picked)) in parts.into_iter().zip(picked).enumerate() {
                        if !part.is_empty() {
                            let origin = origin.as_ref().map(|o| o.select(picked.into_iter()));
                            self.send(r, t, Msg::Batch(part, origin))?;
                        }
                    }
                }
            }
        }
        Ok(())
    }

    /// Sends a watermark or the end to every consumer instance this
    /// producer feeds.
    pub(crate) fn broadcast(&mut self, make: impl Fn() -> Msg) -> Result<(), ()> {
        for r in 0..self.routes.len() {
            let n = self.routes[r].targets.len();
            match self.routes[r].kind {
                RouteKind::Forward => self.send(r, self.index.min(n - 1), make())?,
                _ => {
                    for t in 0..n {
                        self.send(r, t, make())?;
                    }
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chan::{Inbox, channel};

    fn consumers(n: usize) -> (Vec<Outlet>, Vec<Inbox>) {
        (0..n).map(|_| channel(64)).unzip()
    }

    fn outputs(index: usize, kind: RouteKind, targets: Vec<Outlet>) -> Outputs {
        Outputs::new(40 + index, index, vec![Route { kind, targets }])
    }

    fn messages(rx: &Inbox) -> Vec<Envelope> {
        std::iter::from_fn(|| rx.try_recv().ok()).collect()
    }

    /// `(sender, keys)` of each batch waiting at `rx`.
    fn drain(rx: &Inbox) -> Vec<(usize, Vec<Option<Vec<u8>>>)> {
        messages(rx)
            .into_iter()
            .map(|e| match e.msg {
                Msg::Batch(b, _) => (
                    e.from,
                    b.iter().map(|ev| ev.key.map(<[u8]>::to_vec)).collect(),
                ),
                _ => (e.from, Vec::new()),
            })
            .collect()
    }

    fn batch(keys: &[&[u8]]) -> Batch {
        let mut b = Batch::default();
        for (i, &k) in keys.iter().enumerate() {
            b.push(
                Some(k),
                format!("{{\"user\":\"u{i}\"}}").as_bytes(),
                i as i64,
            );
        }
        b
    }

    #[test]
    fn keyed_routes_send_each_event_to_the_owner_of_its_key_group() {
        let groups = 16u16;
        let owner: Vec<u16> = (0..groups).map(|g| g % 3).collect();
        let (txs, rxs) = consumers(3);
        let kind = RouteKind::Keyed {
            field: None,
            groups,
            owner: Arc::new(owner.clone()),
        };
        let mut out = outputs(0, kind, txs);
        let keys: Vec<Vec<u8>> = (0..50).map(|i| format!("key-{i}").into_bytes()).collect();
        let refs: Vec<&[u8]> = keys.iter().map(Vec::as_slice).collect();
        out.batch(batch(&refs)).unwrap();
        let mut delivered = 0;
        for (t, rx) in rxs.iter().enumerate() {
            for (from, keys) in drain(rx) {
                assert_eq!(from, 40);
                for k in keys {
                    let k = k.expect("keyed");
                    assert_eq!(owner[key_group_of(&k, groups).0 as usize] as usize, t);
                    delivered += 1;
                }
            }
        }
        assert_eq!(delivered, 50, "every event goes exactly once");
    }

    #[test]
    fn a_field_key_by_rekeys_events_by_that_field() {
        let (txs, rxs) = consumers(1);
        let kind = RouteKind::Keyed {
            field: Some("user".into()),
            groups: 4,
            owner: Arc::new(vec![0; 4]),
        };
        let mut out = outputs(0, kind, txs);
        out.batch(batch(&[b"ignored", b"also"])).unwrap();
        let got = drain(&rxs[0]);
        assert_eq!(got[0].1, vec![Some(b"u0".to_vec()), Some(b"u1".to_vec())]);
        // The key's own cases: weir_types::wire::field_key's tests.
    }

    #[test]
    fn forward_goes_to_the_same_index_and_rebalance_round_robin() {
        let (txs, rxs) = consumers(3);
        let mut forward = outputs(2, RouteKind::Forward, txs.clone());
        forward.batch(batch(&[b"a"])).unwrap();
        forward.batch(batch(&[b"b"])).unwrap();
        assert_eq!(drain(&rxs[2]).len(), 2);
        assert!(drain(&rxs[0]).is_empty() && drain(&rxs[1]).is_empty());
        let mut spread = outputs(0, RouteKind::Rebalance, txs);
        for _ in 0..6 {
            spread.batch(batch(&[b"x"])).unwrap();
        }
        assert!(
            rxs.iter().all(|rx| drain(rx).len() == 2),
            "two batches each"
        );
    }

    #[test]
    fn broadcasts_reach_every_instance_except_across_a_forward_edge() {
        let (txs, rxs) = consumers(2);
        let (fwd, fwd_rx) = consumers(2);
        let mut out = outputs(1, RouteKind::Rebalance, txs);
        out.routes.push(Route {
            kind: RouteKind::Forward,
            targets: fwd,
        });
        out.broadcast(|| Msg::Watermark(9)).unwrap();
        assert!(rxs.iter().all(|rx| messages(rx).len() == 1));
        assert_eq!(messages(&fwd_rx[0]).len(), 0);
        assert_eq!(messages(&fwd_rx[1]).len(), 1);
    }

    #[test]
    fn a_gone_consumer_is_an_error_and_empty_batches_are_not_sent() {
        let (txs, rxs) = consumers(1);
        let mut out = outputs(0, RouteKind::Rebalance, txs);
        out.batch(Batch::default()).unwrap();
        assert!(drain(&rxs[0]).is_empty());
        drop(rxs);
        assert!(out.batch(batch(&[b"k"])).is_err());
        assert!(out.broadcast(|| Msg::End).is_err());
    }

    #[test]
    fn what_a_full_channel_refuses_waits_in_order_until_flushed() {
        let (tx, rx) = channel(1);
        let mut out = outputs(0, RouteKind::Rebalance, vec![tx]);
        out.batch(batch(&[b"a"])).unwrap();
        out.batch(batch(&[b"b"])).unwrap();
        out.broadcast(|| Msg::Watermark(5)).unwrap();
        assert_eq!(out.outbox.len(), 2, "the channel took one");
        assert_eq!(out.flush(), Ok(false), "still full");
        let mut got = Vec::new();
        loop {
            let e = rx.try_recv();
            let Ok(e) = e else { break };
            got.push(match e.msg {
                Msg::Batch(b, _) => format!("{:?}", b.iter().next().unwrap().key),
                Msg::Watermark(w) => format!("wm {w}"),
                _ => "other".into(),
            });
            out.flush().unwrap();
        }
        assert_eq!(got, ["Some([97])", "Some([98])", "wm 5"], "sent in order");
        assert!(out.outbox.is_empty() && out.blocked_since.is_none());
        drop(rx);
        out.batch(batch(&[b"c"])).unwrap_err();
    }
}
