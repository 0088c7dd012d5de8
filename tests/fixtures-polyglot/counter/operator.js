// Test fixture: forwards every event and counts it in the host's counter
// `events` (so the component imports `counter-add`). Built by `cargo xtask
// guests` against wit/ and against deliberately wrong copies of it.

import * as weir from '../../../sdk/js/weir.js';

class Counter extends weir.Operator {
  process(ctx, event) {
    weir.counterAdd('events', 1);
    ctx.forward(event);
  }
}

export const handler = weir.handler(Counter);
