// `word-count` in JavaScript: counts events per key in the value state
// `count`; after each event emits {"word": <key>, "count": <new count>}
// keyed by the word. The same semantics as guest-examples/rust/word-count.

import * as weir from '../../../sdk/js/weir.js';
import { EventError, Operator } from '../../../sdk/js/weir.js';

class WordCount extends Operator {
  constructor(_config, setup) {
    super();
    this.count = setup.valueState('count');
  }

  process(ctx, event) {
    const word = event.keyStr();
    if (word === undefined) throw new EventError('word-count needs events keyed by a UTF-8 word');
    const count = this.count.get(ctx, 0) + 1;
    this.count.set(ctx, count);
    ctx.emitJson(event.key, { word, count }, event.timestamp);
  }
}

export const handler = weir.handler(WordCount);
