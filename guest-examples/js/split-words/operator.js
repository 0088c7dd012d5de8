// `split-words` in JavaScript: the value is a JSON string; emits one event
// per word, keyed by the word. Words are the pieces between Unicode white
// space, lowercased, with ASCII punctuation trimmed from both ends; empty
// pieces are dropped. The same semantics as guest-examples/rust/split-words.

import * as weir from '../../../sdk/js/weir.js';
import { EventError, Operator, json, lowercase, trimAsciiPunct, words } from '../../../sdk/js/weir.js';

class SplitWords extends Operator {
  process(ctx, event) {
    let text;
    try {
      text = json.parseExact(event.value); // refuses what serde_json refuses
    } catch {
      text = undefined;
    }
    if (typeof text !== 'string') throw new EventError('split-words expects the value to be a JSON string');
    for (const piece of words(text)) {
      const word = trimAsciiPunct(lowercase(piece));
      if (word !== '') ctx.emitJson(word, word, event.timestamp);
    }
  }
}

export const handler = weir.handler(SplitWords);
