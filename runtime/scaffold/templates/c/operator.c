/* `{{name}}`: upper-cases the ASCII letters of a JSON string value and
 * counts, per key, the events seen; emits {"seen": n, "text": ...} keyed
 * as the input. Values that are not strings fail alone. */
#include "weir.h"

static weir_value_state seen;

weir_err weir_init(const weir_json *config, weir_setup *setup) {
    (void)config; /* the topology's config, parsed */
    seen = weir_setup_value_state(setup, "seen");
    return WEIR_OK;
}

weir_err weir_process(weir_ctx *ctx, const weir_event *event) {
    weir_json *value;
    if (weir_event_json(event, &value) || value->kind != WEIR_JSON_STRING)
        return "{{name}} expects the value to be a JSON string";
    uint64_t n;
    weir_err err = weir_value_get_u64(ctx, seen, 0, &n); /* needs a keyed input */
    if (err) return err;
    if ((err = weir_value_set_u64(ctx, seen, n + 1))) return err;
    weir_buf *upper = weir_buf_new(); /* freed when the event is done */
    for (size_t i = 0; i < value->as.str.len; i++) {
        char c = value->as.str.ptr[i];
        if (c >= 'a' && c <= 'z') c = (char)(c - 'a' + 'A');
        weir_buf_put(upper, &c, 1);
    }
    weir_buf *out = weir_buf_new();
    weir_buf_printf(out, "{\"seen\":%llu,\"text\":", (unsigned long long)(n + 1));
    weir_buf_json_str(out, (weir_str){(const char *)upper->ptr, upper->len});
    weir_buf_puts(out, "}");
    weir_emit(ctx, event->has_key ? &event->key : NULL, weir_buf_bytes(out), event->timestamp);
    return WEIR_OK;
}
