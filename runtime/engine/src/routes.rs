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
    /// What the consumer reads: `(output, input)` pairs, output 0 the main
    /// output and `k` the producer's side output `k - 1`, input the index
    /// in the consumer's `input` list.
    pub(crate) feeds: Vec<(usize, u32)>,
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

    /// Sends a batch of the main output along every route that reads it.
    /// `Err` means a consumer is gone (the topology is stopping).
    #[cfg(test)]
    pub(crate) fn batch(&mut self, batch: Batch) -> Result<(), ()> {
        self.emit_from(batch, Vec::new(), None)
    }

    /// Sends a batch read by a source along every route, with its origin
    /// (split with the batch when a route splits it by key).
    pub(crate) fn batch_from(&mut self, batch: Batch, origin: Option<Origin>) -> Result<(), ()> {
        self.emit_from(batch, Vec::new(), origin)
    }

    /// Sends the main output `main` and the side outputs `side` (in
    /// declaration order) along every route, each to the consumer input
    /// that reads it. `Err` means a consumer is gone.
    pub(crate) fn emit(&mut self, main: Batch, side: Vec<Batch>) -> Result<(), ()> {
        self.emit_from(main, side, None)
    }

    /// [`Outputs::emit`], with the origin of the main output when it was
    /// read by a source (side outputs come from operators only).
    fn emit_from(
        &mut self,
        main: Batch,
        side: Vec<Batch>,
        origin: Option<Origin>,
    ) -> Result<(), ()> {
        let mut outputs: Vec<Option<Batch>> = std::iter::once(main)
            .chain(side)
            .map(|b| (!b.is_empty()).then_some(b))
            .collect();
        if outputs.iter().all(Option::is_none) {
            return Ok(());
        }
        // How many feeds still want each output: the last one takes the
        // batch itself, the others a copy.
        let mut uses = vec![0usize; outputs.len()];
        for route in &self.routes {
            for &(o, _) in &route.feeds {
                if let Some(u) = uses.get_mut(o) {
                    *u += 1;
                }
            }
        }
        for r in 0..self.routes.len() {
            for f in 0..self.routes[r].feeds.len() {
                let (o, input) = self.routes[r].feeds[f];
                let Some(slot) = outputs.get_mut(o) else {
                    continue;
                };
                uses[o] -= 1;
                let b = if uses[o] == 0 {
                    slot.take()
                } else {
                    slot.clone()
                };
                let Some(b) = b else { continue };
                let origin = if o == 0 { origin.as_ref() } else { None };
                self.route(r, b, input, origin)?;
            }
        }
        Ok(())
    }

    /// Sends `b` along route `r` to its consumer's input `input`.
    fn route(&mut self, r: usize, b: Batch, input: u32, origin: Option<&Origin>) -> Result<(), ()> {
        let route = &self.routes[r];
        let n = route.targets.len();
        let sends: Vec<(usize, Batch, Option<Origin>)> = match &route.kind {
            RouteKind::Forward => vec![(self.index.min(n - 1), b, origin.cloned())],
            RouteKind::Rebalance => vec![(self.next % n, b, origin.cloned())],
            // One consumer instance takes every event: only the keys can
            // change, so the batch's other columns go on as they are.
            RouteKind::Keyed { field, .. } if n == 1 => {
                let b = match field {
                    Some(f) => rekeyed(b, f),
                    None => b,
                };
                vec![(0, b, origin.cloned())]
            }
            RouteKind::Keyed {
                field,
                groups,
                owner,
            } => {
                // Room for an even share each, so that parts rarely grow.
                let share = b.len() / n + b.len() / (4 * n) + 1;
                let bytes = b.values.len() / n + b.values.len() / (4 * n);
                let mut parts: Vec<Batch> =
                    (0..n).map(|_| Batch::with_capacity(share, bytes)).collect();
                // Which events of `b` each part holds, for their origin.
                let mut picked: Vec<Vec<usize>> = vec![Vec::new(); n];
                for (i, e) in b.iter().enumerate() {
                    let rekeyed = field
                        .as_ref()
                        .map(|f| weir_types::wire::field_key_ref(e.value, f));
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
                parts
                    .into_iter()
                    .zip(picked)
                    .enumerate()
                    .filter(|(_, (part, _))| !part.is_empty())
                    .map(|(t, (part, picked))| {
                        (t, part, origin.map(|o| o.select(picked.into_iter())))
                    })
                    .collect()
            }
        };
        if matches!(route.kind, RouteKind::Rebalance) {
            self.next += 1;
        }
        for (t, batch, origin) in sends {
            let msg = Msg::Batch {
                batch,
                input,
                origin,
            };
            self.send(r, t, msg)?;
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

/// `b` with each event keyed by field `field` of its value (no key when
/// the value has no such field), everything else kept.
fn rekeyed(mut b: Batch, field: &str) -> Batch {
    let mut key_lens = Vec::with_capacity(b.len());
    let mut keys = Vec::with_capacity(b.keys.len().max(b.len() * 8));
    for e in b.iter() {
        match weir_types::wire::field_key_ref(e.value, field) {
            Some(k) => {
                key_lens.push(k.len() as i32);
                keys.extend_from_slice(&k);
            }
            None => key_lens.push(-1),
        }
    }
    b.key_lens = key_lens;
    b.keys = keys;
    b
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chan::{Inbox, channel};

    fn consumers(n: usize) -> (Vec<Outlet>, Vec<Inbox>) {
        (0..n).map(|_| channel(64)).unzip()
    }

    fn outputs(index: usize, kind: RouteKind, targets: Vec<Outlet>) -> Outputs {
        Outputs::new(
            40 + index,
            index,
            vec![Route {
                kind,
                targets,
                feeds: vec![(0, 0)],
            }],
        )
    }

    fn messages(rx: &Inbox) -> Vec<Envelope> {
        std::iter::from_fn(|| rx.try_recv().ok()).collect()
    }

    /// `(sender, keys)` of each batch waiting at `rx`.
    fn drain(rx: &Inbox) -> Vec<(usize, Vec<Option<Vec<u8>>>)> {
        messages(rx)
            .into_iter()
            .map(|e| match e.msg {
                Msg::Batch { batch: b, .. } => (
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

    /// An event as a consumer got it: time, key, value, headers.
    type Delivered = (i64, Option<Vec<u8>>, Vec<u8>, Vec<(String, Vec<u8>)>);

    #[test]
    fn a_field_key_by_keeps_values_headers_and_times_and_unkeys_what_lacks_the_field() {
        for instances in [1, 3] {
            let (txs, rxs) = consumers(instances);
            let kind = RouteKind::Keyed {
                field: Some("user".into()),
                groups: 8,
                owner: Arc::new((0..8).map(|g| g % instances as u16).collect()),
            };
            let mut out = outputs(0, kind, txs);
            let mut b = batch(&[b"k0", b"k1", b"k2", b"k3"]);
            b.push(Some(b"k4"), br#"{"other":1}"#, 4);
            b.push(None, b"not json", 5);
            b.headers.push((1, "h".into(), b"v".to_vec()));
            let sent = b.clone();
            out.batch(b).unwrap();
            let mut got: Vec<Delivered> = Vec::new();
            for rx in &rxs {
                for e in messages(rx) {
                    if let Msg::Batch { batch, .. } = e.msg {
                        got.extend(batch.iter().map(|ev| {
                            let headers = ev.headers.iter().map(|(_, n, v)| (n.clone(), v.clone()));
                            (
                                ev.timestamp,
                                ev.key.map(<[u8]>::to_vec),
                                ev.value.to_vec(),
                                headers.collect(),
                            )
                        }));
                    }
                }
            }
            got.sort();
            assert_eq!(got.len(), 6, "{instances} instances");
            let sent: Vec<_> = sent.iter().collect();
            for (i, (t, key, value, headers)) in got.into_iter().enumerate() {
                let e = &sent[i];
                assert_eq!((t, value.as_slice()), (e.timestamp, e.value));
                let expected = (i < 4).then(|| format!("u{i}").into_bytes());
                assert_eq!(key, expected, "event {i}, {instances} instances");
                let want: Vec<(String, Vec<u8>)> = if i == 1 {
                    vec![("h".into(), b"v".to_vec())]
                } else {
                    vec![]
                };
                assert_eq!(headers, want, "event {i}, {instances} instances");
            }
        }
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
            feeds: vec![(0, 0)],
        });
        out.broadcast(|| Msg::Watermark(9)).unwrap();
        assert!(rxs.iter().all(|rx| messages(rx).len() == 1));
        assert_eq!(messages(&fwd_rx[0]).len(), 0);
        assert_eq!(messages(&fwd_rx[1]).len(), 1);
    }

    #[test]
    fn side_outputs_reach_the_inputs_that_read_them_and_main_and_side_share_a_route() {
        let (txs, rxs) = consumers(1);
        let (sink_tx, sink_rx) = consumers(1);
        let mut out = outputs(0, RouteKind::Forward, txs);
        // The operator reads main as input 1 and side output 2 as input 0;
        // a sink reads side output 1 only.
        out.routes[0].feeds = vec![(0, 1), (2, 0)];
        out.routes.push(Route {
            kind: RouteKind::Rebalance,
            targets: sink_tx,
            feeds: vec![(1, 0)],
        });
        out.emit(
            batch(&[b"main"]),
            vec![batch(&[b"side1"]), batch(&[b"side2"])],
        )
        .unwrap();
        let got: Vec<(u32, Vec<u8>)> = messages(&rxs[0])
            .into_iter()
            .map(|e| match e.msg {
                Msg::Batch { batch, input, .. } => {
                    (input, batch.iter().next().unwrap().key.unwrap().to_vec())
                }
                _ => panic!("not a batch"),
            })
            .collect();
        assert_eq!(got, vec![(1, b"main".to_vec()), (0, b"side2".to_vec())]);
        let sunk = drain(&sink_rx[0]);
        assert_eq!(sunk.len(), 1);
        assert_eq!(sunk[0].1, vec![Some(b"side1".to_vec())]);
        // An output nobody reads is dropped; nothing more was sent.
        out.emit(Batch::default(), vec![Batch::default(), Batch::default()])
            .unwrap();
        assert_eq!(messages(&rxs[0]).len(), 0);
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
                Msg::Batch { batch: b, .. } => format!("{:?}", b.iter().next().unwrap().key),
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
