// `filter` in JavaScript: passes the events whose JSON object value
// satisfies `<field> <op> <value>` (config `field`, `op` one of gt, lt, eq,
// ne, and `value`), drops the rest. gt/lt compare two numbers numerically
// or two strings by code point; other pairs do not satisfy them. eq/ne
// compare JSON values (numbers numerically). A value that is not an object,
// or lacks the field, does not pass (even for ne); a value that is not JSON
// is an error. The same semantics as guest-examples/rust/filter.
//
// Values are read with `json.parseExact`, which keeps serde_json's number
// kinds, so that nested equality is the Rust one (`[50]` is not `[50.0]`).

import * as weir from '../../../sdk/js/weir.js';
import { Operator, compareCodePoints, json } from '../../../sdk/js/weir.js';

const OPS = ['gt', 'lt', 'eq', 'ne'];

/** -1, 0, 1, or undefined when the pair does not compare. */
function compare(a, b) {
  if (json.isNumber(a) && json.isNumber(b)) {
    const [x, y] = [a.toNumber(), b.toNumber()];
    return x < y ? -1 : x > y ? 1 : x === y ? 0 : undefined;
  }
  if (typeof a === 'string' && typeof b === 'string') return compareCodePoints(a, b);
  return undefined;
}

function equal(a, b) {
  if (json.isNumber(a) && json.isNumber(b)) return compare(a, b) === 0;
  return json.equal(a, b);
}

class Filter extends Operator {
  constructor(_config, setup) {
    super();
    const config = json.parseExact(setup.configText);
    if (!(config instanceof Map)) throw new Error('the config must be an object');
    for (const name of config.keys()) {
      if (!['field', 'op', 'value'].includes(name)) {
        throw new Error(`unknown field \`${name}\`, expected one of \`field\`, \`op\`, \`value\``);
      }
    }
    if (typeof config.get('field') !== 'string') throw new Error('missing field `field` (a string)');
    if (!OPS.includes(config.get('op'))) {
      throw new Error(`unknown variant \`${config.get('op')}\`, expected one of \`gt\`, \`lt\`, \`eq\`, \`ne\``);
    }
    if (!config.has('value')) throw new Error('missing field `value`');
    this.field = config.get('field');
    this.op = config.get('op');
    this.value = config.get('value');
  }

  process(ctx, event) {
    const value = json.parseExact(event.value);
    if (!(value instanceof Map) || !value.has(this.field)) return;
    const field = value.get(this.field);
    const pass = {
      gt: () => compare(field, this.value) === 1,
      lt: () => compare(field, this.value) === -1,
      eq: () => equal(field, this.value),
      ne: () => !equal(field, this.value),
    }[this.op]();
    if (pass) ctx.forward(event);
  }
}

export const handler = weir.handler(Filter);
