/* `split-words` in C: the value is a JSON string; emits one event per
 * word, keyed by the word. Words are the pieces between Unicode white
 * space, lowercased, with ASCII punctuation trimmed from both ends; empty
 * pieces are dropped. The same semantics as guest-examples/rust/split-words. */
#include "weir.h"

weir_err weir_init(const weir_json *config, weir_setup *setup) {
    (void)config;
    (void)setup;
    return WEIR_OK;
}

weir_err weir_process(weir_ctx *ctx, const weir_event *event) {
    weir_json *value;
    if (weir_event_json(event, &value) || value->kind != WEIR_JSON_STRING)
        return "split-words expects the value to be a JSON string";
    weir_str piece;
    size_t at = 0;
    while (weir_next_word(value->as.str, &at, &piece)) {
        weir_str word = weir_trim_ascii_punct(weir_lowercase(piece));
        if (word.len == 0) continue;
        weir_bytes key = {(const uint8_t *)word.ptr, word.len};
        weir_buf *out = weir_buf_new();
        weir_buf_json_str(out, word);
        weir_emit(ctx, &key, weir_buf_bytes(out), event->timestamp);
    }
    return WEIR_OK;
}
