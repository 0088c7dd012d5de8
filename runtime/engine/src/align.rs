//! Barrier alignment and input tracking as plain state machines: no
//! channel, no thread, no clock but the one that measures how long an
//! alignment took. A task feeds them the messages it receives and does
//! what they say.
//!
//! - [`InputTracker`]: the inputs a task instance waits on; their
//!   watermarks (the task's is the minimum) and which have ended.
//! - [`Aligner`]: once an input delivered barrier n, its later messages are
//!   held back until every open input has delivered it too; then barrier n
//!   is aligned and the held messages are released in the order they came.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::{Duration, Instant};

use crate::protocol::Envelope;

/// The inputs a task instance waits on, for watermarks, alignment and the
/// end.
pub(crate) struct InputTracker {
    watermarks: BTreeMap<usize, i64>,
    closed: BTreeSet<usize>,
    /// Whether an input stopped (rather than ended).
    stopped: bool,
}

impl InputTracker {
    pub(crate) fn new(senders: &[usize]) -> Self {
        InputTracker {
            watermarks: senders.iter().map(|&s| (s, i64::MIN)).collect(),
            closed: BTreeSet::new(),
            stopped: false,
        }
    }
    fn senders(&self) -> impl Iterator<Item = usize> + '_ {
        self.watermarks.keys().copied()
    }
    fn is_closed(&self, sender: usize) -> bool {
        self.closed.contains(&sender)
    }
    /// Whether an input stopped (a stop, not the end of the input).
    pub(crate) fn stopping(&self) -> bool {
        self.stopped
    }
    /// The minimum watermark of the inputs (`i64::MAX` with none).
    pub(crate) fn watermark(&self) -> i64 {
        self.watermarks.values().copied().min().unwrap_or(i64::MAX)
    }
    /// Input `from` reached watermark `wm` (watermarks never go back).
    pub(crate) fn advance(&mut self, from: usize, wm: i64) {
        if let Some(w) = self.watermarks.get_mut(&from) {
            *w = (*w).max(wm);
        }
    }
    /// Marks an input ended (or stopped); true when all are.
    pub(crate) fn close(&mut self, from: usize, stopped: bool) -> bool {
        if !self.watermarks.contains_key(&from) {
            return false;
        }
        self.advance(from, i64::MAX);
        self.closed.insert(from);
        self.stopped |= stopped;
        self.closed.len() >= self.watermarks.len()
    }
}

/// Holds back the messages of inputs that delivered the barrier being
/// aligned.
pub(crate) struct Aligner {
    /// The barrier being aligned.
    id: Option<u64>,
    /// The inputs that delivered it.
    seen: BTreeSet<usize>,
    started: Instant,
    held: VecDeque<Envelope>,
}

impl Aligner {
    pub(crate) fn new() -> Self {
        Aligner {
            id: None,
            seen: BTreeSet::new(),
            started: Instant::now(),
            held: VecDeque::new(),
        }
    }

    fn blocks(&self, from: usize) -> bool {
        self.id.is_some() && self.seen.contains(&from)
    }

    /// A held message that is free again, oldest first: handle these before
    /// receiving more.
    pub(crate) fn release(&mut self) -> Option<Envelope> {
        let i = self.held.iter().position(|e| !self.blocks(e.from))?;
        self.held.remove(i)
    }

    /// A message just received: `Some` to handle it now, `None` when it is
    /// held back until the barrier being aligned is.
    pub(crate) fn offer(&mut self, envelope: Envelope) -> Option<Envelope> {
        if self.blocks(envelope.from) {
            self.held.push_back(envelope);
            None
        } else {
            Some(envelope)
        }
    }

    /// Barrier `id` arrived from `from`; `Some((id, time aligning))` when
    /// it is aligned.
    pub(crate) fn barrier(
        &mut self,
        from: usize,
        id: u64,
        inputs: &InputTracker,
    ) -> Option<(u64, Duration)> {
        if self.id != Some(id) {
            self.id = Some(id);
            self.seen.clear();
            self.started = Instant::now();
        }
        self.seen.insert(from);
        self.aligned(inputs)
    }

    /// Whether the barrier being aligned has come from every open input
    /// (asked again when an input ends).
    pub(crate) fn aligned(&mut self, inputs: &InputTracker) -> Option<(u64, Duration)> {
        let id = self.id?;
        if inputs
            .senders()
            .all(|s| self.seen.contains(&s) || inputs.is_closed(s))
        {
            self.id = None;
            self.seen.clear();
            Some((id, self.started.elapsed()))
        } else {
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::Msg;

    /// A small deterministic generator (xorshift), so failures replay.
    struct Rng(u64);
    impl Rng {
        fn below(&mut self, n: usize) -> usize {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            (self.0 % n as u64) as usize
        }
    }

    /// What a task saw, in the order it handled it.
    #[derive(Debug, PartialEq, Eq, Clone, Copy)]
    enum Seen {
        /// Data message `seq` of input `from`, sent between barriers
        /// `epoch` and `epoch + 1`.
        Data {
            from: usize,
            epoch: u64,
            seq: u32,
        },
        Aligned(u64),
    }

    fn data(from: usize, epoch: u64, seq: u32) -> Envelope {
        // The epoch and sequence ride in the watermark field.
        Envelope {
            from,
            msg: Msg::Watermark(((epoch as i64) << 32) | seq as i64),
        }
    }

    /// Drives an aligner and tracker the way a task does, over `inputs`
    /// each sending `epochs` barriers with data around them (and maybe
    /// ending early), delivered in a random interleaving.
    fn run(seed: u64, inputs: usize, epochs: u64) -> (Vec<Seen>, Vec<Vec<u64>>) {
        let mut rng = Rng(seed | 1);
        // Each input's message sequence; `ends_after[i]`: its barriers.
        let mut queues: Vec<VecDeque<Envelope>> = Vec::new();
        let mut sent: Vec<Vec<u64>> = Vec::new();
        for from in 0..inputs {
            let last = if rng.below(4) == 0 {
                rng.below(epochs as usize + 1) as u64
            } else {
                epochs
            };
            let mut q = VecDeque::new();
            let mut seq = 0;
            for epoch in 0..=last {
                if epoch > 0 {
                    q.push_back(Envelope {
                        from,
                        msg: Msg::Barrier(epoch),
                    });
                }
                for _ in 0..rng.below(4) {
                    q.push_back(data(from, epoch, seq));
                    seq += 1;
                }
            }
            q.push_back(Envelope {
                from,
                msg: Msg::End,
            });
            queues.push(q);
            sent.push((1..=last).collect());
        }
        let senders: Vec<usize> = (0..inputs).collect();
        let mut tracker = InputTracker::new(&senders);
        let mut aligner = Aligner::new();
        let mut seen = Vec::new();
        loop {
            let envelope = match aligner.release() {
                Some(e) => e,
                None => {
                    let open: Vec<usize> = (0..inputs).filter(|&i| !queues[i].is_empty()).collect();
                    if open.is_empty() {
                        break;
                    }
                    let i = open[rng.below(open.len())];
                    let e = queues[i].pop_front().expect("open queue");
                    match aligner.offer(e) {
                        Some(e) => e,
                        None => continue,
                    }
                }
            };
            let from = envelope.from;
            match envelope.msg {
                Msg::Watermark(v) => seen.push(Seen::Data {
                    from,
                    epoch: (v >> 32) as u64,
                    seq: v as u32,
                }),
                Msg::Barrier(id) => {
                    if let Some((id, _)) = aligner.barrier(from, id, &tracker) {
                        seen.push(Seen::Aligned(id));
                    }
                }
                Msg::End => {
                    tracker.close(from, false);
                    if let Some((id, _)) = aligner.aligned(&tracker) {
                        seen.push(Seen::Aligned(id));
                    }
                }
                _ => unreachable!("the test sends no other message"),
            }
        }
        (seen, sent)
    }

    #[test]
    fn random_interleavings_of_barriers_keep_every_epoch_apart() {
        for seed in 1..400u64 {
            let inputs = 1 + (seed % 4) as usize;
            let epochs = 1 + seed % 5;
            let (seen, sent) = run(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15), inputs, epochs);
            // Model: barrier n aligns exactly once, in order, when every
            // input that sent it has: so before it, all data of epochs < n;
            // after it, none.
            let longest = sent.iter().map(|s| s.len() as u64).max().unwrap_or(0);
            let aligned: Vec<u64> = seen
                .iter()
                .filter_map(|s| match s {
                    Seen::Aligned(id) => Some(*id),
                    _ => None,
                })
                .collect();
            assert_eq!(
                aligned,
                (1..=longest).collect::<Vec<_>>(),
                "seed {seed}: {seen:?}"
            );
            let mut current = 0;
            let mut last_seq = vec![None; inputs];
            for s in &seen {
                match *s {
                    Seen::Aligned(id) => current = id,
                    Seen::Data { from, epoch, seq } => {
                        assert_eq!(
                            epoch, current,
                            "seed {seed}: data of epoch {epoch} handled in epoch {current}: {seen:?}"
                        );
                        assert!(
                            last_seq[from].is_none_or(|l| l < seq),
                            "seed {seed}: input {from} reordered"
                        );
                        last_seq[from] = Some(seq);
                    }
                }
            }
        }
    }

    #[test]
    fn a_held_input_is_released_in_order_once_aligned() {
        let tracker = InputTracker::new(&[1, 2]);
        let mut aligner = Aligner::new();
        assert!(aligner.barrier(1, 7, &tracker).is_none());
        assert!(
            aligner.offer(data(1, 1, 0)).is_none(),
            "held after its barrier"
        );
        assert!(aligner.offer(data(1, 1, 1)).is_none());
        assert!(
            aligner.offer(data(2, 0, 0)).is_some(),
            "the other input flows"
        );
        assert!(aligner.release().is_none(), "nothing free before alignment");
        assert_eq!(aligner.barrier(2, 7, &tracker).map(|(id, _)| id), Some(7));
        let order: Vec<i64> = std::iter::from_fn(|| aligner.release())
            .map(|e| match e.msg {
                Msg::Watermark(v) => v,
                _ => unreachable!(),
            })
            .collect();
        assert_eq!(order, vec![1 << 32, (1 << 32) | 1]);
    }

    #[test]
    fn an_ended_input_counts_as_aligned() {
        let mut tracker = InputTracker::new(&[1, 2]);
        let mut aligner = Aligner::new();
        assert!(aligner.barrier(1, 3, &tracker).is_none());
        assert!(!tracker.close(2, false));
        assert_eq!(aligner.aligned(&tracker).map(|(id, _)| id), Some(3));
        assert!(aligner.aligned(&tracker).is_none(), "aligned once");
    }

    #[test]
    fn the_watermark_is_the_minimum_of_open_inputs_and_never_goes_back() {
        let mut tracker = InputTracker::new(&[1, 2]);
        assert_eq!(tracker.watermark(), i64::MIN);
        tracker.advance(1, 50);
        tracker.advance(2, 20);
        assert_eq!(tracker.watermark(), 20);
        tracker.advance(2, 10);
        assert_eq!(tracker.watermark(), 20, "a lower watermark is ignored");
        tracker.advance(9, 5);
        assert_eq!(tracker.watermark(), 20, "unknown senders are ignored");
        assert!(!tracker.close(2, false));
        assert_eq!(
            tracker.watermark(),
            50,
            "an ended input no longer holds it back"
        );
        assert!(tracker.close(1, true));
        assert!(tracker.stopping());
        assert_eq!(tracker.watermark(), i64::MAX);
    }
}
