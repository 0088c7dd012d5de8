/* `filter` in C: passes the events whose JSON object value satisfies
 * `<field> <op> <value>` (config `field`, `op` one of gt, lt, eq, ne, and
 * `value`), drops the rest. gt/lt compare two numbers numerically or two
 * strings by code point; other pairs do not satisfy them. eq/ne compare
 * JSON values (numbers numerically). A value that is not an object, or
 * lacks the field, does not pass (even for ne); a value that is not JSON is
 * an error. The same semantics as guest-examples/rust/filter. */
#include <string.h>

#include "weir.h"

typedef enum { GT, LT, EQ, NE } filter_op;

static struct {
    weir_str field;
    filter_op op;
    const weir_json *value;
} config;

weir_err weir_init(const weir_json *cfg, weir_setup *setup) {
    (void)setup;
    if (cfg->kind != WEIR_JSON_OBJECT) return "the config must be an object";
    for (size_t i = 0; i < cfg->as.list.len; i++) {
        weir_str name = cfg->as.list.items[i].key;
        if (!weir_str_eq(name, "field") && !weir_str_eq(name, "op") && !weir_str_eq(name, "value"))
            return weir_errorf("unknown field `%.*s`, expected one of `field`, `op`, `value`", (int)name.len,
                               name.ptr);
    }
    const weir_json *field = weir_json_get(cfg, "field");
    const weir_json *op = weir_json_get(cfg, "op");
    config.value = weir_json_get(cfg, "value");
    if (!field || field->kind != WEIR_JSON_STRING) return "missing field `field` (a string)";
    if (!op || op->kind != WEIR_JSON_STRING) return "missing field `op` (one of gt, lt, eq, ne)";
    if (!config.value) return "missing field `value`";
    static const char *const names[] = {"gt", "lt", "eq", "ne"};
    size_t which = 0;
    while (which < 4 && !weir_str_eq(op->as.str, names[which])) which++;
    if (which == 4)
        return weir_errorf("unknown variant `%.*s`, expected one of `gt`, `lt`, `eq`, `ne`", (int)op->as.str.len,
                           op->as.str.ptr);
    config.op = (filter_op)which;
    config.field = field->as.str; /* the config lives for good */
    return WEIR_OK;
}

/* -1, 0 or 1; 2 when the pair does not compare. */
static int compare(const weir_json *a, const weir_json *b) {
    if (weir_json_is_number(a) && weir_json_is_number(b)) {
        double x = weir_json_f64(a), y = weir_json_f64(b);
        return x < y ? -1 : x > y ? 1 : x == y ? 0 : 2;
    }
    if (a->kind == WEIR_JSON_STRING && b->kind == WEIR_JSON_STRING) {
        /* UTF-8 byte order is code point order. */
        size_t n = a->as.str.len < b->as.str.len ? a->as.str.len : b->as.str.len;
        int c = memcmp(a->as.str.ptr, b->as.str.ptr, n);
        if (c == 0) return a->as.str.len < b->as.str.len ? -1 : a->as.str.len > b->as.str.len;
        return c < 0 ? -1 : 1;
    }
    return 2;
}

static bool equal(const weir_json *a, const weir_json *b) {
    if (weir_json_is_number(a) && weir_json_is_number(b)) return compare(a, b) == 0;
    return weir_json_equal(a, b);
}

weir_err weir_process(weir_ctx *ctx, const weir_event *event) {
    weir_json *value;
    weir_err err = weir_event_json(event, &value);
    if (err) return err;
    const weir_json *field = weir_json_member(value, config.field);
    if (!field) return WEIR_OK;
    bool pass = false;
    switch (config.op) {
    case GT: pass = compare(field, config.value) == 1; break;
    case LT: pass = compare(field, config.value) == -1; break;
    case EQ: pass = equal(field, config.value); break;
    case NE: pass = !equal(field, config.value); break;
    }
    if (pass) weir_forward(ctx, event);
    return WEIR_OK;
}
