/* `word-count` in C: counts events per key in the value state `count`;
 * after each event emits {"word": <key>, "count": <new count>} keyed by
 * the word. The same semantics as guest-examples/rust/word-count. */
#include "weir.h"

static weir_value_state count;

weir_err weir_init(const weir_json *config, weir_setup *setup) {
    (void)config;
    count = weir_setup_value_state(setup, "count");
    return WEIR_OK;
}

weir_err weir_process(weir_ctx *ctx, const weir_event *event) {
    weir_str word;
    if (!weir_event_key_str(event, &word)) return "word-count needs events keyed by a UTF-8 word";
    uint64_t n;
    weir_err err = weir_value_get_u64(ctx, count, 0, &n);
    if (err) return err;
    n += 1;
    if ((err = weir_value_set_u64(ctx, count, n))) return err;
    weir_buf *out = weir_buf_new();
    weir_buf_puts(out, "{\"word\":");
    weir_buf_json_str(out, word);
    weir_buf_puts(out, ",\"count\":");
    weir_buf_u64(out, n);
    weir_buf_puts(out, "}");
    weir_emit(ctx, &event->key, weir_buf_bytes(out), event->timestamp);
    return WEIR_OK;
}
