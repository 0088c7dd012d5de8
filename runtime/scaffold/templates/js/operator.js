// `{{name}}`: upper-cases the ASCII letters of a JSON string value and
// counts, per key, the events seen; emits {"seen": n, "text": ...} keyed
// as the input. Values that are not strings fail alone. The SDK is the
// weir-sdk npm package (its weir.d.ts gives editors the types).
// @ts-check

import * as weir from './node_modules/weir-sdk/weir.js';
import { EventError, Operator } from './node_modules/weir-sdk/weir.js';

class Upper extends Operator {
  /** @param {unknown} _config @param {weir.Setup} setup */
  constructor(_config, setup) {
    super();
    this.seen = setup.valueState('seen');
  }

  /** @param {weir.Context} ctx @param {weir.Event} event */
  process(ctx, event) {
    const text = event.json();
    if (typeof text !== 'string') throw new EventError('{{name}} expects the value to be a JSON string');
    // Value state needs a keyed input (`key_by` in a topology).
    const seen = this.seen.get(ctx, 0) + 1;
    this.seen.set(ctx, seen);
    const upper = text.replace(/[a-z]+/g, (s) => s.toUpperCase());
    ctx.emitJson(event.key, { seen, text: upper }, event.timestamp);
  }
}

export const handler = weir.handler(Upper);
