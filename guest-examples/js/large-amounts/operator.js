// `large-amounts` in JavaScript: contract 0.2.0's side outputs and state
// TTL, as guest-examples/python/large-amounts.
//
// Every event {"amount": n} (keyed) goes to the main output as
// {"amount":n,"seen":k}, k counting the key's events while they come less
// than `ttl_ms` (config, default 60000) of processing time apart; an
// amount above `limit` (config, default 1000) also goes to side output
// `alerts`. An event naming another output in "to" is sent there too: to
// an undeclared one, it fails alone, saying which outputs exist.

import * as weir from '../../../sdk/js/weir.js';
import { EventError, Operator, Ttl } from '../../../sdk/js/weir.js';

class LargeAmounts extends Operator {
  constructor(config, setup) {
    super();
    this.limit = config.limit ?? 1000;
    setup.sideOutput('alerts');
    this.seen = setup.valueState('seen', { ttl: Ttl.processingTime(config.ttl_ms ?? 60000) });
  }

  process(ctx, event) {
    const value = event.json();
    if (typeof value !== 'object' || value === null || typeof value.amount !== 'number') {
      throw new EventError('expected {"amount": <number>}');
    }
    const seen = this.seen.get(ctx, 0) + 1;
    this.seen.set(ctx, seen);
    const out = { amount: value.amount, seen };
    if (value.amount > this.limit) ctx.emitJsonTo('alerts', event.key, out);
    if ('to' in value) ctx.emitJsonTo(value.to, event.key, out);
    ctx.emitJson(event.key, out);
  }
}

export const handler = weir.handler(LargeAmounts);
