/* `enrich` in C: the event-time temporal join of guest-examples/rust/enrich,
 * with byte-identical output.
 *
 * Input 0 carries transactions, input 1 profiles, both keyed by the same
 * key (e.g. `key_by: {field: user}`). A transaction at time t is emitted
 * once the watermark passes t, enriched with the key's profile valid at t
 * (the one with the greatest time <= t), as
 * {"txn":<transaction>,"profile":<profile or null>} with the transaction's
 * key and time, so the output is the same whatever the arrival order within
 * the sources' allowed out-of-orderness.
 *
 * State: map `pending` ((time, transaction text) -> how many) holds the
 * transactions waiting for the watermark, with an event-time timer at each
 * one's time; map `profiles` (time -> profile text) the profiles that can
 * still be valid for a transaction to come. Map keys start with the time as
 * 8 bytes that order as the times do, and the host returns entries ordered
 * by key bytes: (time, text) order, as the Rust example sorts them. */
#include "weir.h"

/* The input that carries profiles; every other input carries transactions. */
#define PROFILES 1u
#define TIME_LEN 8

static weir_map_state pending, profiles;

/* t as 8 big-endian bytes with the sign bit flipped: byte order is time order. */
static void put_time(uint8_t out[TIME_LEN], int64_t t) {
    uint64_t u = (uint64_t)t ^ 0x8000000000000000u;
    for (int i = TIME_LEN - 1; i >= 0; i--) {
        out[i] = (uint8_t)u;
        u >>= 8;
    }
}

static weir_err get_time(weir_bytes key, int64_t *t) {
    if (key.len < TIME_LEN) return "enrich: a state key shorter than its time";
    uint64_t u = 0;
    for (int i = 0; i < TIME_LEN; i++) u = (u << 8) | key.ptr[i];
    *t = (int64_t)(u ^ 0x8000000000000000u);
    return WEIR_OK;
}

weir_err weir_init(const weir_json *config, weir_setup *setup) {
    (void)config;
    pending = weir_setup_map_state(setup, "pending");
    profiles = weir_setup_map_state(setup, "profiles");
    return WEIR_OK;
}

weir_err weir_process(weir_ctx *ctx, const weir_event *event) {
    if (!weir_utf8_valid(event->value.ptr, event->value.len)) return "the value is not UTF-8";
    uint8_t t[TIME_LEN];
    put_time(t, event->timestamp);
    if (event->input == PROFILES) return weir_map_put(ctx, profiles, (weir_bytes){t, TIME_LEN}, event->value);
    weir_buf *entry = weir_buf_new();
    weir_buf_put(entry, t, TIME_LEN);
    weir_buf_put(entry, event->value.ptr, event->value.len);
    weir_bytes raw;
    bool present;
    weir_err err = weir_map_get(ctx, pending, weir_buf_bytes(entry), &raw, &present);
    if (err) return err;
    uint64_t n = 0;
    if (present) {
        weir_json *count;
        if ((err = weir_json_parse(raw.ptr, raw.len, &count))) return err;
        if (count->kind != WEIR_JSON_UINT) return "enrich: a pending count is not a number";
        n = count->as.uint;
    }
    weir_buf *next = weir_buf_new();
    weir_buf_u64(next, n + 1);
    if ((err = weir_map_put(ctx, pending, weir_buf_bytes(entry), weir_buf_bytes(next)))) return err;
    return weir_register_timer(ctx, WEIR_EVENT_TIME, event->timestamp);
}

weir_err weir_on_timer(weir_ctx *ctx, const weir_timer *timer) {
    const weir_bytes *due_keys, *due_counts, *profile_times, *profile_texts;
    size_t due_len, profile_len;
    weir_err err = weir_map_entries(ctx, pending, &due_keys, &due_counts, &due_len);
    if (!err) err = weir_map_entries(ctx, profiles, &profile_times, &profile_texts, &profile_len);
    if (err) return err;
    /* Profiles before `next` are valid at the current transaction's time. */
    size_t next = 0;
    for (size_t i = 0; i < due_len; i++) {
        int64_t t;
        if ((err = get_time(due_keys[i], &t))) return err;
        if (t > timer->time) break;
        int64_t pt;
        while (next < profile_len && !(err = get_time(profile_times[next], &pt)) && pt <= t) next++;
        if (err) return err;
        weir_buf *out = weir_buf_new();
        weir_buf_puts(out, "{\"txn\":");
        weir_buf_put(out, due_keys[i].ptr + TIME_LEN, due_keys[i].len - TIME_LEN);
        weir_buf_puts(out, ",\"profile\":");
        if (next > 0)
            weir_buf_put(out, profile_texts[next - 1].ptr, profile_texts[next - 1].len);
        else
            weir_buf_puts(out, "null");
        weir_buf_puts(out, "}");
        weir_json *count;
        if ((err = weir_json_parse(due_counts[i].ptr, due_counts[i].len, &count))) return err;
        if (count->kind != WEIR_JSON_UINT) return "enrich: a pending count is not a number";
        for (uint64_t k = 0; k < count->as.uint; k++) weir_emit(ctx, &timer->key, weir_buf_bytes(out), t);
        if ((err = weir_map_remove(ctx, pending, due_keys[i]))) return err;
    }
    /* Profiles older than the one valid at the timer's time can serve no
     * transaction to come: those are behind the watermark. */
    size_t valid = 0;
    int64_t pt;
    while (valid < profile_len && !(err = get_time(profile_times[valid], &pt)) && pt <= timer->time) valid++;
    if (err) return err;
    for (size_t i = 0; i + 1 < valid; i++)
        if ((err = weir_map_remove(ctx, profiles, profile_times[i]))) return err;
    return WEIR_OK;
}
