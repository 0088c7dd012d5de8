//! How a producing task instance's output reaches its consumers: forward
//! (instance i to instance i), rebalance (round-robin) or keyed (by key
//! group of the key, or of a JSON field that becomes the key), and the
//! broadcast of watermarks, barriers and the end to every consumer
//! instance.

use std::sync::Arc;
use std::sync::mpsc::SyncSender;
use std::time::Instant;

use weir_types::{Batch, key_group_of};

use crate::metrics::InstanceMetrics;
use crate::tasks::{Envelope, Msg};

/// How a producer's output reaches one consumer.
#[derive(Clone)]
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
    pub(crate) targets: Vec<SyncSender<Envelope>>,
}

/// The outputs of one producing task instance.
pub(crate) struct Outputs {
    pub(crate) id: usize,
    pub(crate) index: usize,
    pub(crate) routes: Vec<Route>,
    pub(crate) next: usize,
    pub(crate) metrics: Option<Arc<InstanceMetrics>>,
}

impl Outputs {
    fn send(&self, target: &SyncSender<Envelope>, msg: Msg) -> Result<(), ()> {
        let start = Instant::now();
        let result = target.send(Envelope { from: self.id, msg }).map_err(|_| ());
        if let Some(m) = &self.metrics {
            InstanceMetrics::add(&m.blocked_nanos, start.elapsed().as_nanos() as u64);
        }
        result
    }

    /// Sends a batch along every route. `Err` means a consumer is gone (the
    /// topology is stopping).
    pub(crate) fn batch(&mut self, batch: Batch) -> Result<(), ()> {
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
                    self.send(&route.targets[t], Msg::Batch(b))?;
                }
                RouteKind::Rebalance => {
                    let t = self.next % route.targets.len();
                    self.next += 1;
                    self.send(&route.targets[t], Msg::Batch(b))?;
                }
                RouteKind::Keyed {
                    field,
                    groups,
                    owner,
                } => {
                    let mut parts: Vec<Batch> = vec![Batch::default(); route.targets.len()];
                    for e in b.iter() {
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
                        let part = &mut parts[t];
                        let index = part.len() as u32;
                        part.headers.extend(
                            e.headers
                                .iter()
                                .map(|(_, n, v)| (index, n.clone(), v.clone())),
                        );
                        part.push(key, e.value, e.timestamp);
                    }
                    for (t, part) in parts.into_iter().enumerate() {
                        if !part.is_empty() {
                            self.send(&route.targets[t], Msg::Batch(part))?;
                        }
                    }
                }
            }
        }
        Ok(())
    }

    /// Sends a watermark or the end to every consumer instance this
    /// producer feeds.
    pub(crate) fn broadcast(&self, make: impl Fn() -> Msg) -> Result<(), ()> {
        for route in &self.routes {
            match route.kind {
                RouteKind::Forward => {
                    let t = self.index.min(route.targets.len() - 1);
                    self.send(&route.targets[t], make())?;
                }
                _ => {
                    for target in &route.targets {
                        self.send(target, make())?;
                    }
                }
            }
        }
        Ok(())
    }
}
