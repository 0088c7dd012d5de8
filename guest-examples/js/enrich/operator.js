// `enrich` in JavaScript: the event-time temporal join of
// guest-examples/rust/enrich, with byte-identical output.
//
// Input 0 carries transactions, input 1 profiles, both keyed by the same
// key (e.g. `key_by: {field: user}`). A transaction at time t is emitted
// once the watermark passes t, enriched with the key's profile valid at t
// (the one with the greatest time <= t), as
// {"txn":<transaction>,"profile":<profile or null>} with the transaction's
// key and time, so the output is the same whatever the arrival order
// within the sources' allowed out-of-orderness.
//
// State: map `pending` ([time, transaction text] -> how many) holds the
// transactions waiting for the watermark, with an event-time timer at each
// one's time; map `profiles` (time -> profile text) the profiles that can
// still be valid for a transaction to come. Map keys are stored as JSON, so
// the host orders entries by that text, not by time: onTimer sorts them.

import * as weir from '../../../sdk/js/weir.js';
import { Operator, compareCodePoints } from '../../../sdk/js/weir.js';

// The input that carries profiles; every other input carries transactions.
const PROFILES = 1;

class Enrich extends Operator {
  constructor(_config, setup) {
    super();
    this.pending = setup.mapState('pending');
    this.profiles = setup.mapState('profiles');
  }

  process(ctx, event) {
    const text = event.valueStr();
    const t = event.timestamp;
    if (event.input === PROFILES) {
      this.profiles.put(ctx, t, text);
      return;
    }
    const entry = [t, text];
    this.pending.put(ctx, entry, this.pending.get(ctx, entry, 0) + 1);
    ctx.registerTimer(t);
  }

  onTimer(ctx, timer) {
    // Sorted as the Rust example sorts: by time, then by the text's code
    // points (the order of its UTF-8 bytes, not of UTF-16 units).
    const due = this.pending
      .entries(ctx)
      .filter(([[t]]) => t <= timer.time)
      .sort(([[a, x]], [[b, y]]) => a - b || compareCodePoints(x, y));
    const profiles = this.profiles.entries(ctx).sort(([a], [b]) => a - b);
    const validAt = (t) => profiles.findLast(([pt]) => pt <= t);
    for (const [[t, txn], n] of due) {
      const valid = validAt(t);
      const out = `{"txn":${txn},"profile":${valid === undefined ? 'null' : valid[1]}}`;
      for (let i = 0; i < n; i++) ctx.emit(timer.key, out, t);
      this.pending.remove(ctx, [t, txn]);
    }
    // Profiles older than the one valid at the timer's time can serve no
    // transaction to come: those are behind the watermark.
    const newest = validAt(timer.time);
    if (newest !== undefined) {
      for (const [pt] of profiles) {
        if (pt < newest[0]) this.profiles.remove(ctx, pt);
      }
    }
  }
}

export const handler = weir.handler(Enrich);
