/* `large-amounts` in C: contract 0.2.0's side outputs and state TTL, as
 * guest-examples/python/large-amounts.
 *
 * Every event {"amount": n} (keyed) goes to the main output as
 * {"amount":n,"seen":k}, k counting the key's events while they come less
 * than `ttl_ms` (config, default 60000) of processing time apart; an amount
 * above `limit` (config, default 1000) also goes to side output `alerts`.
 * An event naming another output in "to" is sent there too: to an
 * undeclared one, it fails alone, saying which outputs exist. */
#include "weir.h"

static double limit = 1000;
static weir_value_state seen;

weir_err weir_init(const weir_json *config, weir_setup *setup) {
    const weir_json *l = weir_json_get(config, "limit");
    if (l) {
        if (!weir_json_is_number(l)) return "`limit` must be a number";
        limit = weir_json_f64(l);
    }
    uint64_t ttl_ms = 60000;
    const weir_json *t = weir_json_get(config, "ttl_ms");
    if (t) {
        if (t->kind != WEIR_JSON_UINT) return "`ttl_ms` must be a whole number of milliseconds";
        ttl_ms = t->as.uint;
    }
    weir_setup_side_output(setup, "alerts");
    seen = weir_setup_value_state_ttl(setup, "seen", weir_ttl_processing_time(ttl_ms));
    return WEIR_OK;
}

weir_err weir_process(weir_ctx *ctx, const weir_event *event) {
    weir_json *value;
    const weir_json *amount;
    if (weir_event_json(event, &value) || value->kind != WEIR_JSON_OBJECT ||
        !(amount = weir_json_get(value, "amount")) || !weir_json_is_number(amount))
        return "expected {\"amount\": <number>}";
    uint64_t n;
    weir_err err = weir_value_get_u64(ctx, seen, 0, &n);
    if (err) return err;
    if ((err = weir_value_set_u64(ctx, seen, n + 1))) return err;
    weir_buf *out = weir_buf_new();
    weir_buf_puts(out, "{\"amount\":");
    weir_buf_json(out, amount);
    weir_buf_puts(out, ",\"seen\":");
    weir_buf_u64(out, n + 1);
    weir_buf_puts(out, "}");
    const weir_bytes *key = event->has_key ? &event->key : NULL;
    if (weir_json_f64(amount) > limit &&
        (err = weir_emit_to(ctx, "alerts", key, weir_buf_bytes(out), event->timestamp)))
        return err;
    const weir_json *to = weir_json_get(value, "to");
    if (to) {
        if (to->kind != WEIR_JSON_STRING) return "\"to\" must name an output";
        weir_buf *name = weir_buf_new();
        weir_buf_put(name, to->as.str.ptr, to->as.str.len);
        weir_buf_put(name, "", 1);
        if ((err = weir_emit_to(ctx, (const char *)name->ptr, key, weir_buf_bytes(out), event->timestamp)))
            return err;
    }
    weir_emit(ctx, key, weir_buf_bytes(out), event->timestamp);
    return WEIR_OK;
}
