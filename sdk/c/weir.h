/* Write Weir stream operators in C.
 *
 * An operator defines three functions (weir_on_timer is optional):
 *
 *     weir_err weir_init(const weir_json *config, weir_setup *setup);
 *     weir_err weir_process(weir_ctx *ctx, const weir_event *event);
 *     weir_err weir_on_timer(weir_ctx *ctx, const weir_timer *timer);
 *
 * Each returns WEIR_OK, or an error message (a static string, or one made
 * with weir_errorf) for that event alone: its output and value-state writes
 * are dropped and the host applies the operator's error policy to it.
 *
 * The SDK hides the batch layout of the `weir:operator` contract (events
 * and the value state of the batch's keys travel column by column): you see
 * one event at a time, value state stored as JSON (readable by operators in
 * any language), and emit events through the context. Memory you get from
 * the SDK while handling an event (parsed JSON, buffers, lowercased text)
 * lives until that event is done; in weir_init it lives for good.
 *
 * Contract 0.2.0 (the default) adds an event's input index (event->input),
 * side outputs (weir_setup_side_output, weir_emit_to) and state time to
 * live (weir_setup_*_state_ttl). Built with -DWEIR_CONTRACT_0_1 against the
 * 0.1.0 WIT, the SDK makes a 0.1.0 component: every input is 0, and
 * declaring a side output or a TTL fails weir_init, saying so.
 *
 * Build: see README.md beside this file. */
#ifndef WEIR_H
#define WEIR_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* ---- Results ---------------------------------------------------------- */

/* NULL (WEIR_OK) on success, otherwise what went wrong. */
typedef const char *weir_err;
#define WEIR_OK ((weir_err)0)

/* An error message made like printf; valid until the event is done. */
weir_err weir_errorf(const char *format, ...) __attribute__((format(printf, 1, 2)));

/* ---- Bytes and text ----------------------------------------------------- */

/* Bytes that belong to someone else (the batch, a parsed value, a buffer). */
typedef struct {
    const uint8_t *ptr;
    size_t len;
} weir_bytes;

/* UTF-8 text that belongs to someone else; not NUL-terminated. */
typedef struct {
    const char *ptr;
    size_t len;
} weir_str;

/* A weir_str of a NUL-terminated string. */
weir_str weir_str_of(const char *s);
bool weir_str_eq(weir_str a, const char *b);
/* Whether the bytes are valid UTF-8, as Rust's str::from_utf8 checks it. */
bool weir_utf8_valid(const uint8_t *ptr, size_t len);

/* Splits text at Unicode white space (as Rust's str::split_whitespace):
 * stores the next non-empty piece at or after *at in *piece, moves *at past
 * it and returns true; returns false when no piece is left. */
bool weir_next_word(weir_str text, size_t *at, weir_str *piece);
/* The lowercase of text, by Unicode's full mapping with the final-sigma
 * rule (as Rust's str::to_lowercase). */
weir_str weir_lowercase(weir_str text);
/* text without ASCII punctuation at either end. */
weir_str weir_trim_ascii_punct(weir_str text);

/* ---- A growable buffer -------------------------------------------------- */

typedef struct {
    uint8_t *ptr;
    size_t len;
    size_t cap;
} weir_buf;

/* An empty buffer, freed when the event is done. */
weir_buf *weir_buf_new(void);
void weir_buf_put(weir_buf *b, const void *bytes, size_t len);
void weir_buf_puts(weir_buf *b, const char *s);
void weir_buf_printf(weir_buf *b, const char *format, ...) __attribute__((format(printf, 2, 3)));
/* Appends `n` in decimal (what printf's %llu writes, without its cost). */
void weir_buf_u64(weir_buf *b, uint64_t n);
/* Appends text as a JSON string, quoted and escaped as serde_json does. */
void weir_buf_json_str(weir_buf *b, weir_str text);
weir_bytes weir_buf_bytes(const weir_buf *b);

/* ---- JSON --------------------------------------------------------------- */

/* Numbers keep serde_json's three kinds (an integer that fits u64, one
 * that fits i64, or a double), so equality is serde_json's. */
typedef enum {
    WEIR_JSON_NULL,
    WEIR_JSON_BOOL,
    WEIR_JSON_UINT,
    WEIR_JSON_INT,
    WEIR_JSON_FLOAT,
    WEIR_JSON_STRING,
    WEIR_JSON_ARRAY,
    WEIR_JSON_OBJECT,
} weir_json_kind;

typedef struct weir_json weir_json;
struct weir_json {
    weir_json_kind kind;
    union {
        bool boolean;
        uint64_t uint;
        int64_t sint;
        double num;
        weir_str str;
        /* Array items, or object members (each with its key in `key`). */
        struct {
            weir_json *items;
            size_t len;
        } list;
    } as;
    /* The member's name, in an object. */
    weir_str key;
};

/* Parses JSON text (serde_json's grammar: RFC 8259, whole input). */
weir_err weir_json_parse(const uint8_t *text, size_t len, weir_json **out);
bool weir_json_is_number(const weir_json *v);
/* A number as a double (as serde_json's as_f64). */
double weir_json_f64(const weir_json *v);
/* An object's member `name` (the last one if repeated), or NULL. */
const weir_json *weir_json_get(const weir_json *object, const char *name);
const weir_json *weir_json_member(const weir_json *object, weir_str name);
/* JSON equality as serde_json's `Value == Value`: objects as maps, numbers
 * equal only within one kind (so 50 != 50.0). */
bool weir_json_equal(const weir_json *a, const weir_json *b);
/* Appends the compact JSON text of v. */
void weir_buf_json(weir_buf *b, const weir_json *v);

/* ---- Events ------------------------------------------------------------- */

typedef struct {
    weir_str name;
    weir_bytes value;
} weir_header;

typedef struct {
    bool has_key;
    weir_bytes key;
    /* Compact JSON text on the wire, but any bytes may travel. */
    weir_bytes value;
    /* Event time, milliseconds since the Unix epoch. */
    int64_t timestamp;
    const weir_header *headers;
    size_t header_count;
    /* Which of the operator's inputs the event came from: its index in the
     * operator's `input` list in the topology (0 with one input). */
    uint32_t input;
} weir_event;

/* The key as UTF-8 text; false when there is no key or it is not UTF-8. */
bool weir_event_key_str(const weir_event *event, weir_str *key);
/* The value parsed as JSON; the error says why it is not. */
weir_err weir_event_json(const weir_event *event, weir_json **value);

typedef enum { WEIR_EVENT_TIME = 0, WEIR_PROCESSING_TIME = 1 } weir_time_domain;

typedef struct {
    weir_bytes key;
    int64_t time;
    weir_time_domain domain;
} weir_timer;

/* ---- Setup and state ---------------------------------------------------- */

typedef struct weir_setup weir_setup;
typedef struct weir_ctx weir_ctx;

/* A value state: one JSON value per key, travelling with each batch. */
typedef struct {
    uint32_t index;
} weir_value_state;

/* Map or list state, reached through host calls. */
typedef struct {
    const char *name;
} weir_map_state, weir_list_state;

/* Declares a value state (in weir_init); name must outlive the operator. */
weir_value_state weir_setup_value_state(weir_setup *setup, const char *name);
weir_map_state weir_setup_map_state(weir_setup *setup, const char *name);
weir_list_state weir_setup_list_state(weir_setup *setup, const char *name);

/* A state's time to live: an entry expires `ms` milliseconds after it was
 * last written (or read too, with refresh_on_read), in processing time (the
 * host's clock at each call) or in event time (the operator's watermark
 * against the event's timestamp or the timer's time). An expired entry
 * reads as absent at once; map entries and list items expire one by one. */
typedef struct {
    uint64_t ms;
    weir_time_domain domain;
    bool refresh_on_read;
} weir_ttl;

weir_ttl weir_ttl_processing_time(uint64_t ms);
weir_ttl weir_ttl_event_time(uint64_t ms);

/* The same states, with entries that expire after `ttl` (ms above 0;
 * otherwise weir_init fails, naming the state). */
weir_value_state weir_setup_value_state_ttl(weir_setup *setup, const char *name, weir_ttl ttl);
weir_map_state weir_setup_map_state_ttl(weir_setup *setup, const char *name, weir_ttl ttl);
weir_list_state weir_setup_list_state_ttl(weir_setup *setup, const char *name, weir_ttl ttl);

/* Declares side output `name` (copied), written with weir_emit_to. A
 * topology reads it as `<operator>.<name>` (`input: fraud.alerts`); the
 * operator's own name stays its main output. */
void weir_setup_side_output(weir_setup *setup, const char *name);

/* The current key's raw value: *present tells whether it is set. */
weir_err weir_value_get(weir_ctx *ctx, weir_value_state state, weir_bytes *value, bool *present);
/* Sets the current key's raw value (the bytes are copied). */
weir_err weir_value_set(weir_ctx *ctx, weir_value_state state, weir_bytes value);
weir_err weir_value_clear(weir_ctx *ctx, weir_value_state state);
/* Typed shortcuts over JSON: an unset state reads as `fallback`. */
weir_err weir_value_get_u64(weir_ctx *ctx, weir_value_state state, uint64_t fallback, uint64_t *out);
weir_err weir_value_set_u64(weir_ctx *ctx, weir_value_state state, uint64_t value);
weir_err weir_value_get_json(weir_ctx *ctx, weir_value_state state, weir_json **out);

/* Map state of the current key; keys and values are raw bytes (store
 * JSON to share them with other languages). Entries come ordered by their
 * map key bytes. */
weir_err weir_map_get(weir_ctx *ctx, weir_map_state map, weir_bytes map_key, weir_bytes *value, bool *present);
weir_err weir_map_put(weir_ctx *ctx, weir_map_state map, weir_bytes map_key, weir_bytes value);
weir_err weir_map_remove(weir_ctx *ctx, weir_map_state map, weir_bytes map_key);
/* All entries of the current key's map: *count of them, entry i being
 * (*keys)[i] -> (*values)[i], ordered by map key bytes. */
weir_err weir_map_entries(weir_ctx *ctx, weir_map_state map, const weir_bytes **keys, const weir_bytes **values,
                          size_t *count);
weir_err weir_map_clear(weir_ctx *ctx, weir_map_state map);
/* List state of the current key. */
weir_err weir_list_append(weir_ctx *ctx, weir_list_state list, weir_bytes item);
/* The items of the current key's list: *items points to *count of them. */
weir_err weir_list_get(weir_ctx *ctx, weir_list_state list, const weir_bytes **items, size_t *count);

/* ---- The context -------------------------------------------------------- */

/* Emits an event; key may be NULL (no key). The bytes are copied. */
void weir_emit(weir_ctx *ctx, const weir_bytes *key, weir_bytes value, int64_t timestamp);
/* Emits an event with headers. */
void weir_emit_with_headers(weir_ctx *ctx, const weir_bytes *key, weir_bytes value, int64_t timestamp,
                            const weir_header *headers, size_t header_count);
/* Emits the event as it came: key, value, timestamp and headers. */
void weir_forward(weir_ctx *ctx, const weir_event *event);
/* Emits an event to side output `output` (declared in weir_init with
 * weir_setup_side_output) instead of the main output; fails, naming the
 * declared outputs, when there is no such output. */
weir_err weir_emit_to(weir_ctx *ctx, const char *output, const weir_bytes *key, weir_bytes value, int64_t timestamp);

/* The key of the event or timer being handled; false without one. */
bool weir_ctx_key(const weir_ctx *ctx, weir_bytes *key);
/* The input of the event being handled (see weir_event.input; 0 while a
 * timer fires). */
uint32_t weir_ctx_input(const weir_ctx *ctx);
int64_t weir_ctx_watermark(const weir_ctx *ctx);
int64_t weir_ctx_processing_time(const weir_ctx *ctx);

/* Timers of the current key; they fire through weir_on_timer. */
weir_err weir_register_timer(weir_ctx *ctx, weir_time_domain domain, int64_t time);
weir_err weir_delete_timer(weir_ctx *ctx, weir_time_domain domain, int64_t time);

typedef enum { WEIR_TRACE, WEIR_DEBUG, WEIR_INFO, WEIR_WARN, WEIR_ERROR } weir_log_level;
/* A line in the host's log (target weir::guest). */
void weir_log(weir_log_level level, const char *message);
/* Adds to the operator's counter `name` in the host's metrics. */
void weir_counter_add(const char *name, uint64_t delta);

/* ---- What the operator defines ------------------------------------------ */

/* Called once with the topology's config (an object, `{}` when none). */
weir_err weir_init(const weir_json *config, weir_setup *setup);
weir_err weir_process(weir_ctx *ctx, const weir_event *event);
/* Optional: the SDK's default does nothing. */
weir_err weir_on_timer(weir_ctx *ctx, const weir_timer *timer);

#ifdef __cplusplus
}
#endif

#endif
