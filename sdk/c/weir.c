/* The C SDK: the loop between the contract's column batches and an
 * author's one-event-at-a-time weir_process, value state per key slot,
 * roll-back of a failing event, and the text and JSON helpers of weir.h. */
#include "weir.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "operator.h"
#include "weir_unicode.h"

#define NO_SLOT 0xFFFFFFFFu
/* serde_json's nesting limit. */
#define MAX_JSON_DEPTH 128

/* ---- Memory: per-event allocations ---------------------------------------- */

/* Allocations made while an event is handled come from an arena that is
 * reset when the event is done: a pointer bump each, no malloc or free per
 * buffer. During weir_init they come from malloc and are never freed, so
 * the config lives for good. */
#define ARENA_CHUNK ((size_t)64 * 1024)
/* Alignment of every arena allocation, malloc's. */
#define ARENA_ALIGN ((size_t)16)

static struct {
    uint8_t *chunk;
    size_t used, cap;
    /* Retired chunks and allocations too large for a chunk: freed at the
     * next reset. */
    void **big;
    size_t big_len, big_cap;
    bool permanent;
} scratch = {NULL, 0, 0, NULL, 0, 0, true};

static void *xmalloc(size_t n) {
    void *p = malloc(n ? n : 1);
    if (!p) abort();
    return p;
}

static void *xrealloc(void *p, size_t n) {
    p = realloc(p, n ? n : 1);
    if (!p) abort();
    return p;
}

/* Grows *ptr (of elements of size `size`) to hold `need` of them. */
static void reserve(void **ptr, size_t *cap, size_t need, size_t size) {
    if (need <= *cap) return;
    size_t n = *cap ? *cap * 2 : 16;
    while (n < need) n *= 2;
    *ptr = xrealloc(*ptr, n * size);
    *cap = n;
}

static void scratch_track(void *p) {
    reserve((void **)&scratch.big, &scratch.big_cap, scratch.big_len + 1, sizeof(void *));
    scratch.big[scratch.big_len++] = p;
}

static void *scratch_alloc(size_t n) {
    if (scratch.permanent) return xmalloc(n);
    n = (n + ARENA_ALIGN - 1) & ~(ARENA_ALIGN - 1);
    if (n == 0) n = ARENA_ALIGN;
    if (n > scratch.cap - scratch.used) {
        if (n > ARENA_CHUNK / 4) {
            void *p = xmalloc(n);
            scratch_track(p);
            return p;
        }
        if (scratch.chunk) scratch_track(scratch.chunk);
        scratch.chunk = xmalloc(ARENA_CHUNK);
        scratch.cap = ARENA_CHUNK;
        scratch.used = 0;
    }
    void *p = scratch.chunk + scratch.used;
    scratch.used += n;
    return p;
}

/* Grows the arena allocation `p` of `old` bytes to `n` bytes in place when
 * it is the arena's last one and the chunk has room; false otherwise. */
static bool scratch_grow_in_place(void *p, size_t old, size_t n) {
    if (scratch.permanent || !p || !scratch.chunk) return false;
    old = (old + ARENA_ALIGN - 1) & ~(ARENA_ALIGN - 1);
    n = (n + ARENA_ALIGN - 1) & ~(ARENA_ALIGN - 1);
    if ((uint8_t *)p + old != scratch.chunk + scratch.used) return false;
    if (n - old > scratch.cap - scratch.used) return false;
    scratch.used += n - old;
    return true;
}

static void scratch_free_all(void) {
    for (size_t i = 0; i < scratch.big_len; i++) free(scratch.big[i]);
    scratch.big_len = 0;
    scratch.used = 0;
}

weir_err weir_errorf(const char *format, ...) {
    va_list args;
    va_start(args, format);
    int n = vsnprintf(NULL, 0, format, args);
    va_end(args);
    char *out = scratch_alloc(n > 0 ? (size_t)n + 1 : 1);
    va_start(args, format);
    vsnprintf(out, n > 0 ? (size_t)n + 1 : 1, format, args);
    va_end(args);
    return out;
}

/* ---- Text ----------------------------------------------------------------- */

weir_str weir_str_of(const char *s) {
    weir_str out = {s, strlen(s)};
    return out;
}

bool weir_str_eq(weir_str a, const char *b) {
    size_t n = strlen(b);
    return a.len == n && memcmp(a.ptr, b, n) == 0;
}

/* Decodes the code point at p[*i] (valid UTF-8 assumed) and moves *i on. */
static uint32_t utf8_next(const uint8_t *p, size_t *i) {
    uint8_t b = p[*i];
    if (b < 0x80) {
        *i += 1;
        return b;
    }
    if (b < 0xE0) {
        uint32_t c = ((uint32_t)(b & 0x1F) << 6) | (p[*i + 1] & 0x3F);
        *i += 2;
        return c;
    }
    if (b < 0xF0) {
        uint32_t c = ((uint32_t)(b & 0x0F) << 12) | ((uint32_t)(p[*i + 1] & 0x3F) << 6) | (p[*i + 2] & 0x3F);
        *i += 3;
        return c;
    }
    uint32_t c = ((uint32_t)(b & 0x07) << 18) | ((uint32_t)(p[*i + 1] & 0x3F) << 12) |
                 ((uint32_t)(p[*i + 2] & 0x3F) << 6) | (p[*i + 3] & 0x3F);
    *i += 4;
    return c;
}

/* Decodes the code point that ends just before p[*i] and moves *i back. */
static uint32_t utf8_prev(const uint8_t *p, size_t *i) {
    size_t start = *i - 1;
    while (start > 0 && (p[start] & 0xC0) == 0x80) start--;
    size_t at = start;
    uint32_t c = utf8_next(p, &at);
    *i = start;
    return c;
}

static size_t utf8_put(uint8_t *out, uint32_t c) {
    if (c < 0x80) {
        out[0] = (uint8_t)c;
        return 1;
    }
    if (c < 0x800) {
        out[0] = (uint8_t)(0xC0 | (c >> 6));
        out[1] = (uint8_t)(0x80 | (c & 0x3F));
        return 2;
    }
    if (c < 0x10000) {
        out[0] = (uint8_t)(0xE0 | (c >> 12));
        out[1] = (uint8_t)(0x80 | ((c >> 6) & 0x3F));
        out[2] = (uint8_t)(0x80 | (c & 0x3F));
        return 3;
    }
    out[0] = (uint8_t)(0xF0 | (c >> 18));
    out[1] = (uint8_t)(0x80 | ((c >> 12) & 0x3F));
    out[2] = (uint8_t)(0x80 | ((c >> 6) & 0x3F));
    out[3] = (uint8_t)(0x80 | (c & 0x3F));
    return 4;
}

bool weir_utf8_valid(const uint8_t *p, size_t len) {
    size_t i = 0;
    while (i < len) {
        uint8_t b = p[i];
        if (b < 0x80) {
            i++;
            continue;
        }
        size_t n;
        uint32_t c, min;
        if (b >= 0xC2 && b <= 0xDF) {
            n = 2, c = b & 0x1F, min = 0x80;
        } else if (b >= 0xE0 && b <= 0xEF) {
            n = 3, c = b & 0x0F, min = 0x800;
        } else if (b >= 0xF0 && b <= 0xF4) {
            n = 4, c = b & 0x07, min = 0x10000;
        } else {
            return false;
        }
        if (len - i < n) return false;
        for (size_t k = 1; k < n; k++) {
            if ((p[i + k] & 0xC0) != 0x80) return false;
            c = (c << 6) | (p[i + k] & 0x3F);
        }
        if (c < min || c > 0x10FFFF || (c >= 0xD800 && c <= 0xDFFF)) return false;
        i += n;
    }
    return true;
}

static bool in_ranges(const weir_range *ranges, size_t len, uint32_t c) {
    size_t lo = 0, hi = len;
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        if (c < ranges[mid].first) {
            hi = mid;
        } else if (c > ranges[mid].last) {
            lo = mid + 1;
        } else {
            return true;
        }
    }
    return false;
}

static bool is_white_space(uint32_t c) {
    return in_ranges(weir_white_space, weir_white_space_len, c);
}

bool weir_next_word(weir_str text, size_t *at, weir_str *piece) {
    const uint8_t *p = (const uint8_t *)text.ptr;
    size_t i = *at;
    while (i < text.len) {
        size_t next = i;
        if (!is_white_space(utf8_next(p, &next))) break;
        i = next;
    }
    if (i >= text.len) {
        *at = text.len;
        return false;
    }
    size_t start = i;
    while (i < text.len) {
        size_t next = i;
        if (is_white_space(utf8_next(p, &next))) break;
        i = next;
    }
    piece->ptr = text.ptr + start;
    piece->len = i - start;
    *at = i;
    return true;
}

/* The one-code-point lowercase of c (c itself when it has none). */
static uint32_t lower_simple(uint32_t c) {
    size_t lo = 0, hi = weir_lower_runs_len;
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        const weir_lower_run *r = &weir_lower_runs[mid];
        if (c < r->first) {
            hi = mid;
        } else if (c > r->last) {
            lo = mid + 1;
        } else {
            return (c - r->first) % r->stride == 0 ? (uint32_t)((int32_t)c + r->delta) : c;
        }
    }
    return c;
}

/* Whether the first code point from `i` on (forward or backward) that is
 * not case-ignorable is cased: the test of Rust's final-sigma rule. */
static bool ignorable_then_cased(const uint8_t *p, size_t len, size_t i, bool forward) {
    while (forward ? i < len : i > 0) {
        uint32_t c = forward ? utf8_next(p, &i) : utf8_prev(p, &i);
        if (!in_ranges(weir_case_ignorable, weir_case_ignorable_len, c)) {
            return in_ranges(weir_cased, weir_cased_len, c);
        }
    }
    return false;
}

weir_str weir_lowercase(weir_str text) {
    const uint8_t *p = (const uint8_t *)text.ptr;
    /* Lowercasing at most triples a code point's UTF-8 length (U+0130). */
    uint8_t *out = scratch_alloc(text.len * 3 + 1);
    size_t n = 0, i = 0;
    while (i < text.len) {
        size_t start = i;
        uint32_t c = utf8_next(p, &i);
        if (c == 0x3A3) { /* Σ */
            bool final = ignorable_then_cased(p, text.len, start, false) &&
                         !ignorable_then_cased(p, text.len, i, true);
            n += utf8_put(out + n, final ? 0x3C2 : 0x3C3);
            continue;
        }
        bool special = false;
        for (size_t k = 0; k < weir_lower_specials_len; k++) {
            if (weir_lower_specials[k].c == c) {
                memcpy(out + n, weir_lower_specials[k].utf8, weir_lower_specials[k].len);
                n += weir_lower_specials[k].len;
                special = true;
            }
        }
        if (!special) n += utf8_put(out + n, lower_simple(c));
    }
    weir_str s = {(const char *)out, n};
    return s;
}

static bool is_ascii_punct(char c) {
    return (c >= '!' && c <= '/') || (c >= ':' && c <= '@') || (c >= '[' && c <= '`') || (c >= '{' && c <= '~');
}

weir_str weir_trim_ascii_punct(weir_str text) {
    while (text.len && is_ascii_punct(text.ptr[0])) text.ptr++, text.len--;
    while (text.len && is_ascii_punct(text.ptr[text.len - 1])) text.len--;
    return text;
}

/* ---- Buffers -------------------------------------------------------------- */

weir_buf *weir_buf_new(void) {
    weir_buf *b = scratch_alloc(sizeof *b);
    b->ptr = NULL;
    b->len = b->cap = 0;
    return b;
}

/* Grows in place at the arena's end, or into a new event allocation (the
 * old one is freed with the event). */
static void buf_reserve(weir_buf *b, size_t more) {
    if (b->len + more <= b->cap) return;
    size_t n = b->cap ? b->cap * 2 : 64;
    while (n < b->len + more) n *= 2;
    if (scratch_grow_in_place(b->ptr, b->cap, n)) {
        b->cap = n;
        return;
    }
    uint8_t *p = scratch_alloc(n);
    if (b->len) memcpy(p, b->ptr, b->len);
    b->ptr = p;
    b->cap = n;
}

void weir_buf_put(weir_buf *b, const void *bytes, size_t len) {
    buf_reserve(b, len);
    if (len) memcpy(b->ptr + b->len, bytes, len);
    b->len += len;
}

void weir_buf_puts(weir_buf *b, const char *s) { weir_buf_put(b, s, strlen(s)); }

void weir_buf_printf(weir_buf *b, const char *format, ...) {
    va_list args;
    va_start(args, format);
    int n = vsnprintf(NULL, 0, format, args);
    va_end(args);
    if (n <= 0) return;
    buf_reserve(b, (size_t)n + 1);
    va_start(args, format);
    vsnprintf((char *)b->ptr + b->len, (size_t)n + 1, format, args);
    va_end(args);
    b->len += (size_t)n;
}

/* Writes `n` in decimal ending at `end`; returns where the digits start. */
static char *u64_digits(uint64_t n, char *end) {
    char *p = end;
    do {
        *--p = (char)('0' + n % 10);
        n /= 10;
    } while (n);
    return p;
}

void weir_buf_u64(weir_buf *b, uint64_t n) {
    char text[20];
    char *start = u64_digits(n, text + sizeof text);
    weir_buf_put(b, start, (size_t)(text + sizeof text - start));
}

void weir_buf_json_str(weir_buf *b, weir_str text) {
    static const char hex[] = "0123456789abcdef";
    weir_buf_put(b, "\"", 1);
    size_t run = 0;
    for (size_t i = 0; i < text.len; i++) {
        uint8_t c = (uint8_t)text.ptr[i];
        const char *esc = NULL;
        char u[6];
        switch (c) {
        case '"': esc = "\\\""; break;
        case '\\': esc = "\\\\"; break;
        case '\n': esc = "\\n"; break;
        case '\r': esc = "\\r"; break;
        case '\t': esc = "\\t"; break;
        case '\b': esc = "\\b"; break;
        case '\f': esc = "\\f"; break;
        default:
            if (c < 0x20) {
                memcpy(u, "\\u00", 4);
                u[4] = hex[c >> 4];
                u[5] = hex[c & 0xF];
            }
        }
        if (!esc && c >= 0x20) continue;
        weir_buf_put(b, text.ptr + run, i - run);
        if (esc) {
            weir_buf_puts(b, esc);
        } else {
            weir_buf_put(b, u, 6);
        }
        run = i + 1;
    }
    weir_buf_put(b, text.ptr + run, text.len - run);
    weir_buf_put(b, "\"", 1);
}

weir_bytes weir_buf_bytes(const weir_buf *b) {
    weir_bytes out = {b->ptr, b->len};
    return out;
}

/* ---- JSON ----------------------------------------------------------------- */

typedef struct {
    const uint8_t *p;
    size_t len, i;
    const char *error;
} parser;

static void skip_ws(parser *ps) {
    while (ps->i < ps->len) {
        uint8_t c = ps->p[ps->i];
        if (c != ' ' && c != '\t' && c != '\n' && c != '\r') break;
        ps->i++;
    }
}

static bool fail(parser *ps, const char *what) {
    if (!ps->error) ps->error = weir_errorf("%s at byte %zu", what, ps->i);
    return false;
}

static bool parse_value(parser *ps, weir_json *out, int depth);

static int hex_digit(uint8_t c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

static bool parse_hex4(parser *ps, uint32_t *out) {
    if (ps->len - ps->i < 4) return fail(ps, "EOF while parsing a string");
    uint32_t v = 0;
    for (int k = 0; k < 4; k++) {
        int d = hex_digit(ps->p[ps->i++]);
        if (d < 0) return fail(ps, "invalid escape");
        v = (v << 4) | (uint32_t)d;
    }
    *out = v;
    return true;
}

static bool parse_string(parser *ps, weir_str *out) {
    ps->i++; /* the opening quote */
    size_t start = ps->i;
    /* Fast path: no escapes, the string is a slice of the input. */
    while (ps->i < ps->len && ps->p[ps->i] != '"' && ps->p[ps->i] != '\\' && ps->p[ps->i] >= 0x20) ps->i++;
    if (ps->i >= ps->len) return fail(ps, "EOF while parsing a string");
    if (ps->p[ps->i] == '"') {
        if (!weir_utf8_valid(ps->p + start, ps->i - start)) return fail(ps, "invalid unicode code point");
        out->ptr = (const char *)ps->p + start;
        out->len = ps->i - start;
        ps->i++;
        return true;
    }
    weir_buf *b = weir_buf_new();
    weir_buf_put(b, ps->p + start, ps->i - start);
    for (;;) {
        if (ps->i >= ps->len) return fail(ps, "EOF while parsing a string");
        uint8_t c = ps->p[ps->i];
        if (c == '"') {
            ps->i++;
            break;
        }
        if (c < 0x20) return fail(ps, "control character (\\u0000-\\u001F) found while parsing a string");
        if (c != '\\') {
            weir_buf_put(b, &c, 1);
            ps->i++;
            continue;
        }
        ps->i++;
        if (ps->i >= ps->len) return fail(ps, "EOF while parsing a string");
        uint8_t e = ps->p[ps->i++];
        uint8_t ch;
        switch (e) {
        case '"': ch = '"'; break;
        case '\\': ch = '\\'; break;
        case '/': ch = '/'; break;
        case 'b': ch = '\b'; break;
        case 'f': ch = '\f'; break;
        case 'n': ch = '\n'; break;
        case 'r': ch = '\r'; break;
        case 't': ch = '\t'; break;
        case 'u': {
            uint32_t cp;
            if (!parse_hex4(ps, &cp)) return false;
            if (cp >= 0xDC00 && cp <= 0xDFFF) return fail(ps, "unexpected end of hex escape");
            if (cp >= 0xD800 && cp <= 0xDBFF) {
                uint32_t lo;
                if (ps->len - ps->i < 2 || ps->p[ps->i] != '\\' || ps->p[ps->i + 1] != 'u')
                    return fail(ps, "lone leading surrogate in hex escape");
                ps->i += 2;
                if (!parse_hex4(ps, &lo)) return false;
                if (lo < 0xDC00 || lo > 0xDFFF) return fail(ps, "lone leading surrogate in hex escape");
                cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
            }
            uint8_t enc[4];
            weir_buf_put(b, enc, utf8_put(enc, cp));
            continue;
        }
        default: return fail(ps, "invalid escape");
        }
        weir_buf_put(b, &ch, 1);
    }
    if (!weir_utf8_valid(b->ptr, b->len)) return fail(ps, "invalid unicode code point");
    out->ptr = (const char *)b->ptr;
    out->len = b->len;
    return true;
}

static bool is_digit(uint8_t c) { return c >= '0' && c <= '9'; }

static bool parse_number(parser *ps, weir_json *out) {
    size_t start = ps->i;
    bool negative = ps->p[ps->i] == '-';
    if (negative) ps->i++;
    if (ps->i >= ps->len || !is_digit(ps->p[ps->i])) return fail(ps, "invalid number");
    bool overflow = false;
    uint64_t sig = 0;
    if (ps->p[ps->i] == '0') {
        ps->i++;
        if (ps->i < ps->len && is_digit(ps->p[ps->i])) return fail(ps, "invalid number");
    } else {
        while (ps->i < ps->len && is_digit(ps->p[ps->i])) {
            uint64_t d = ps->p[ps->i++] - '0';
            if (sig > (UINT64_MAX - d) / 10) overflow = true;
            sig = sig * 10 + d;
        }
    }
    bool integer = true;
    if (ps->i < ps->len && ps->p[ps->i] == '.') {
        integer = false;
        ps->i++;
        if (ps->i >= ps->len || !is_digit(ps->p[ps->i])) return fail(ps, "invalid number");
        while (ps->i < ps->len && is_digit(ps->p[ps->i])) ps->i++;
    }
    if (ps->i < ps->len && (ps->p[ps->i] == 'e' || ps->p[ps->i] == 'E')) {
        integer = false;
        ps->i++;
        if (ps->i < ps->len && (ps->p[ps->i] == '+' || ps->p[ps->i] == '-')) ps->i++;
        if (ps->i >= ps->len || !is_digit(ps->p[ps->i])) return fail(ps, "invalid number");
        while (ps->i < ps->len && is_digit(ps->p[ps->i])) ps->i++;
    }
    if (integer && !overflow) {
        if (!negative) {
            out->kind = WEIR_JSON_UINT;
            out->as.uint = sig;
            return true;
        }
        if (sig != 0 && sig <= (uint64_t)1 << 63) {
            out->kind = WEIR_JSON_INT;
            out->as.sint = sig == (uint64_t)1 << 63 ? INT64_MIN : -(int64_t)sig;
            return true;
        }
    }
    char *text = scratch_alloc(ps->i - start + 1);
    memcpy(text, ps->p + start, ps->i - start);
    text[ps->i - start] = 0;
    double v = strtod(text, NULL);
    if (isinf(v)) return fail(ps, "number out of range");
    out->kind = WEIR_JSON_FLOAT;
    out->as.num = v;
    return true;
}

static bool literal(parser *ps, const char *word) {
    size_t n = strlen(word);
    if (ps->len - ps->i < n || memcmp(ps->p + ps->i, word, n) != 0) return fail(ps, "expected value");
    ps->i += n;
    return true;
}

/* Items of an array or object, gathered then copied to their final place. */
static bool parse_items(parser *ps, weir_json *out, int depth, bool object) {
    uint8_t close = object ? '}' : ']';
    weir_json *items = NULL;
    size_t len = 0, cap = 0;
    ps->i++;
    skip_ws(ps);
    bool ok = true;
    if (ps->i < ps->len && ps->p[ps->i] == close) {
        ps->i++;
    } else {
        for (;;) {
            weir_json item;
            memset(&item, 0, sizeof item);
            skip_ws(ps);
            if (object) {
                if (ps->i >= ps->len || ps->p[ps->i] != '"') {
                    ok = fail(ps, "key must be a string");
                    break;
                }
                if (!(ok = parse_string(ps, &item.key))) break;
                skip_ws(ps);
                if (ps->i >= ps->len || ps->p[ps->i] != ':') {
                    ok = fail(ps, "expected `:`");
                    break;
                }
                ps->i++;
            }
            if (!(ok = parse_value(ps, &item, depth + 1))) break;
            reserve((void **)&items, &cap, len + 1, sizeof *items);
            items[len++] = item;
            skip_ws(ps);
            if (ps->i < ps->len && ps->p[ps->i] == ',') {
                ps->i++;
                continue;
            }
            if (ps->i < ps->len && ps->p[ps->i] == close) {
                ps->i++;
                break;
            }
            ok = fail(ps, object ? "expected `,` or `}`" : "expected `,` or `]`");
            break;
        }
    }
    if (ok) {
        out->kind = object ? WEIR_JSON_OBJECT : WEIR_JSON_ARRAY;
        out->as.list.len = len;
        out->as.list.items = scratch_alloc(len * sizeof *items);
        if (len) memcpy(out->as.list.items, items, len * sizeof *items);
    }
    free(items);
    return ok;
}

static bool parse_value(parser *ps, weir_json *out, int depth) {
    if (depth > MAX_JSON_DEPTH) return fail(ps, "recursion limit exceeded");
    skip_ws(ps);
    if (ps->i >= ps->len) return fail(ps, "EOF while parsing a value");
    uint8_t c = ps->p[ps->i];
    switch (c) {
    case 'n':
        out->kind = WEIR_JSON_NULL;
        return literal(ps, "null");
    case 't':
        out->kind = WEIR_JSON_BOOL;
        out->as.boolean = true;
        return literal(ps, "true");
    case 'f':
        out->kind = WEIR_JSON_BOOL;
        out->as.boolean = false;
        return literal(ps, "false");
    case '"':
        out->kind = WEIR_JSON_STRING;
        return parse_string(ps, &out->as.str);
    case '[': return parse_items(ps, out, depth, false);
    case '{': return parse_items(ps, out, depth, true);
    default:
        if (c == '-' || is_digit(c)) return parse_number(ps, out);
        return fail(ps, "expected value");
    }
}

weir_err weir_json_parse(const uint8_t *text, size_t len, weir_json **out) {
    parser ps = {text, len, 0, NULL};
    weir_json *v = scratch_alloc(sizeof *v);
    memset(v, 0, sizeof *v);
    if (!parse_value(&ps, v, 1)) return ps.error;
    skip_ws(&ps);
    if (ps.i != len) {
        fail(&ps, "trailing characters");
        return ps.error;
    }
    *out = v;
    return WEIR_OK;
}

bool weir_json_is_number(const weir_json *v) {
    return v->kind == WEIR_JSON_UINT || v->kind == WEIR_JSON_INT || v->kind == WEIR_JSON_FLOAT;
}

double weir_json_f64(const weir_json *v) {
    switch (v->kind) {
    case WEIR_JSON_UINT: return (double)v->as.uint;
    case WEIR_JSON_INT: return (double)v->as.sint;
    case WEIR_JSON_FLOAT: return v->as.num;
    default: return NAN;
    }
}

const weir_json *weir_json_member(const weir_json *object, weir_str name) {
    if (!object || object->kind != WEIR_JSON_OBJECT) return NULL;
    for (size_t i = object->as.list.len; i-- > 0;) {
        const weir_json *m = &object->as.list.items[i];
        if (m->key.len == name.len && memcmp(m->key.ptr, name.ptr, name.len) == 0) return m;
    }
    return NULL;
}

const weir_json *weir_json_get(const weir_json *object, const char *name) {
    return weir_json_member(object, weir_str_of(name));
}

/* Whether member i is the last one of its name (the one a map keeps). */
static bool last_of_name(const weir_json *object, size_t i) {
    return weir_json_member(object, object->as.list.items[i].key) == &object->as.list.items[i];
}

static size_t distinct_members(const weir_json *object) {
    size_t n = 0;
    for (size_t i = 0; i < object->as.list.len; i++) n += last_of_name(object, i);
    return n;
}

bool weir_json_equal(const weir_json *a, const weir_json *b) {
    if (a->kind != b->kind) return false;
    switch (a->kind) {
    case WEIR_JSON_NULL: return true;
    case WEIR_JSON_BOOL: return a->as.boolean == b->as.boolean;
    case WEIR_JSON_UINT: return a->as.uint == b->as.uint;
    case WEIR_JSON_INT: return a->as.sint == b->as.sint;
    case WEIR_JSON_FLOAT: return a->as.num == b->as.num;
    case WEIR_JSON_STRING:
        return a->as.str.len == b->as.str.len && memcmp(a->as.str.ptr, b->as.str.ptr, a->as.str.len) == 0;
    case WEIR_JSON_ARRAY:
        if (a->as.list.len != b->as.list.len) return false;
        for (size_t i = 0; i < a->as.list.len; i++)
            if (!weir_json_equal(&a->as.list.items[i], &b->as.list.items[i])) return false;
        return true;
    case WEIR_JSON_OBJECT:
        if (distinct_members(a) != distinct_members(b)) return false;
        for (size_t i = 0; i < a->as.list.len; i++) {
            if (!last_of_name(a, i)) continue;
            const weir_json *other = weir_json_member(b, a->as.list.items[i].key);
            if (!other || !weir_json_equal(&a->as.list.items[i], other)) return false;
        }
        return true;
    }
    return false;
}

void weir_buf_json(weir_buf *b, const weir_json *v) {
    switch (v->kind) {
    case WEIR_JSON_NULL: weir_buf_puts(b, "null"); break;
    case WEIR_JSON_BOOL: weir_buf_puts(b, v->as.boolean ? "true" : "false"); break;
    case WEIR_JSON_UINT: weir_buf_printf(b, "%llu", (unsigned long long)v->as.uint); break;
    case WEIR_JSON_INT: weir_buf_printf(b, "%lld", (long long)v->as.sint); break;
    case WEIR_JSON_FLOAT:
        /* Shortest text that reads back the same double. */
        for (int digits = 1; digits <= 17; digits++) {
            char text[40];
            snprintf(text, sizeof text, "%.*g", digits, v->as.num);
            if (strtod(text, NULL) == v->as.num || digits == 17) {
                weir_buf_puts(b, text);
                break;
            }
        }
        break;
    case WEIR_JSON_STRING: weir_buf_json_str(b, v->as.str); break;
    case WEIR_JSON_ARRAY:
    case WEIR_JSON_OBJECT: {
        bool object = v->kind == WEIR_JSON_OBJECT;
        weir_buf_puts(b, object ? "{" : "[");
        bool first = true;
        for (size_t i = 0; i < v->as.list.len; i++) {
            if (object && !last_of_name(v, i)) continue;
            if (!first) weir_buf_puts(b, ",");
            first = false;
            if (object) {
                weir_buf_json_str(b, v->as.list.items[i].key);
                weir_buf_puts(b, ":");
            }
            weir_buf_json(b, &v->as.list.items[i]);
        }
        weir_buf_puts(b, object ? "}" : "]");
        break;
    }
    }
}

/* ---- Events --------------------------------------------------------------- */

bool weir_event_key_str(const weir_event *event, weir_str *key) {
    if (!event->has_key || !weir_utf8_valid(event->key.ptr, event->key.len)) return false;
    key->ptr = (const char *)event->key.ptr;
    key->len = event->key.len;
    return true;
}

weir_err weir_event_json(const weir_event *event, weir_json **value) {
    weir_err err = weir_json_parse(event->value.ptr, event->value.len, value);
    return err ? weir_errorf("invalid JSON: %s", err) : WEIR_OK;
}

/* ---- Setup ---------------------------------------------------------------- */

/* A state declared with a time to live. */
typedef struct {
    uint8_t kind; /* 0 value, 1 map, 2 list: the contract's state-kind */
    const char *name;
    weir_ttl ttl;
} ttl_decl;

enum { KIND_VALUE, KIND_MAP, KIND_LIST };

struct weir_setup {
    const char **names;
    size_t len, cap;
    char **outputs;
    size_t outputs_len, outputs_cap;
    ttl_decl *ttls;
    size_t ttls_len, ttls_cap;
    /* The first wrong declaration, reported by init. */
    weir_err error;
};

/* The side outputs declared in weir_init: output k + 1 is side_outputs[k]. */
static char **side_outputs;
static size_t side_output_count;

weir_ttl weir_ttl_processing_time(uint64_t ms) {
    weir_ttl ttl = {ms, WEIR_PROCESSING_TIME, false};
    return ttl;
}

weir_ttl weir_ttl_event_time(uint64_t ms) {
    weir_ttl ttl = {ms, WEIR_EVENT_TIME, false};
    return ttl;
}

static void setup_ttl(weir_setup *setup, uint8_t kind, const char *name, weir_ttl ttl) {
    if (ttl.ms == 0 && !setup->error)
        setup->error = weir_errorf("the TTL of state \"%s\" is 0 ms: give weir_ttl_processing_time(ms) or "
                                   "weir_ttl_event_time(ms) a time above 0",
                                   name);
    if (ttl.domain != WEIR_EVENT_TIME && ttl.domain != WEIR_PROCESSING_TIME && !setup->error)
        setup->error = weir_errorf("the TTL of state \"%s\" has no time domain: make it with "
                                   "weir_ttl_processing_time or weir_ttl_event_time",
                                   name);
    for (size_t i = 0; i < setup->ttls_len; i++) {
        if (setup->ttls[i].kind == kind && strcmp(setup->ttls[i].name, name) == 0) {
            setup->ttls[i].ttl = ttl;
            return;
        }
    }
    reserve((void **)&setup->ttls, &setup->ttls_cap, setup->ttls_len + 1, sizeof *setup->ttls);
    ttl_decl d = {kind, name, ttl};
    setup->ttls[setup->ttls_len++] = d;
}

void weir_setup_side_output(weir_setup *setup, const char *name) {
    for (size_t i = 0; i < setup->outputs_len; i++)
        if (strcmp(setup->outputs[i], name) == 0) return;
    reserve((void **)&setup->outputs, &setup->outputs_cap, setup->outputs_len + 1, sizeof *setup->outputs);
    size_t n = strlen(name);
    char *copy = xmalloc(n + 1);
    memcpy(copy, name, n + 1);
    setup->outputs[setup->outputs_len++] = copy;
}

weir_value_state weir_setup_value_state(weir_setup *setup, const char *name) {
    weir_value_state st;
    for (size_t i = 0; i < setup->len; i++) {
        if (strcmp(setup->names[i], name) == 0) {
            st.index = (uint32_t)i;
            return st;
        }
    }
    reserve((void **)&setup->names, &setup->cap, setup->len + 1, sizeof *setup->names);
    setup->names[setup->len] = name;
    st.index = (uint32_t)setup->len++;
    return st;
}

weir_map_state weir_setup_map_state(weir_setup *setup, const char *name) {
    (void)setup;
    weir_map_state st = {name};
    return st;
}

weir_list_state weir_setup_list_state(weir_setup *setup, const char *name) {
    (void)setup;
    weir_list_state st = {name};
    return st;
}

weir_value_state weir_setup_value_state_ttl(weir_setup *setup, const char *name, weir_ttl ttl) {
    setup_ttl(setup, KIND_VALUE, name, ttl);
    return weir_setup_value_state(setup, name);
}

weir_map_state weir_setup_map_state_ttl(weir_setup *setup, const char *name, weir_ttl ttl) {
    setup_ttl(setup, KIND_MAP, name, ttl);
    return weir_setup_map_state(setup, name);
}

weir_list_state weir_setup_list_state_ttl(weir_setup *setup, const char *name, weir_ttl ttl) {
    setup_ttl(setup, KIND_LIST, name, ttl);
    return weir_setup_list_state(setup, name);
}

/* ---- The context of one call ---------------------------------------------- */

/* A value state cell as written in this call: len -2 untouched, -1
 * cleared, else `len` bytes at `at` of the call's written bytes. */
typedef struct {
    int32_t len;
    size_t at;
} written;

typedef struct {
    uint32_t cell;
    written before;
} undo;

struct weir_ctx {
    weir_operator_types_call_context_t call;
    size_t state_count;
    /* The cells as they came: lengths, and their byte offsets. */
    const int32_t *cell_lens;
    size_t *cell_at;
    const uint8_t *cell_bytes;
    size_t cell_count;
    written *writes;
    uint8_t *write_bytes;
    size_t write_len, write_cap;
    undo *undos;
    size_t undo_len, undo_cap;
    /* The batch's input (0 for timers). */
    uint32_t input;
    /* The event or timer being handled. */
    bool has_key;
    weir_bytes key;
    uint32_t slot;
    /* The output the next emitted event goes to (0: main). */
    uint32_t target;
    /* Output, column by column; `targets` holds each event's output. */
    int64_t *timestamps;
    int32_t *key_lens;
    uint32_t *value_lens;
    uint32_t *targets;
    size_t events, events_cap;
    uint8_t *keys, *values;
    size_t keys_len, keys_cap, values_len, values_cap;
    weir_operator_types_header_t *headers;
    size_t headers_len, headers_cap;
    weir_operator_types_event_error_t *errors;
    size_t errors_len, errors_cap;
};

static void append_bytes(uint8_t **buf, size_t *len, size_t *cap, const uint8_t *bytes, size_t n) {
    reserve((void **)buf, cap, *len + n, 1);
    if (n) memcpy(*buf + *len, bytes, n);
    *len += n;
}

static void copy_to_string(operator_string_t *out, const void *bytes, size_t len) {
    out->ptr = xmalloc(len);
    if (len) memcpy(out->ptr, bytes, len);
    out->len = len;
}

void weir_emit_with_headers(weir_ctx *ctx, const weir_bytes *key, weir_bytes value, int64_t timestamp,
                            const weir_header *headers, size_t header_count) {
    if (ctx->events == ctx->events_cap) {
        size_t need = ctx->events + 1, cap = ctx->events_cap;
        reserve((void **)&ctx->timestamps, &cap, need, sizeof *ctx->timestamps);
        cap = ctx->events_cap;
        reserve((void **)&ctx->key_lens, &cap, need, sizeof *ctx->key_lens);
        cap = ctx->events_cap;
        reserve((void **)&ctx->value_lens, &cap, need, sizeof *ctx->value_lens);
        cap = ctx->events_cap;
        reserve((void **)&ctx->targets, &cap, need, sizeof *ctx->targets);
        ctx->events_cap = cap;
    }
    for (size_t h = 0; h < header_count; h++) {
        reserve((void **)&ctx->headers, &ctx->headers_cap, ctx->headers_len + 1, sizeof *ctx->headers);
        weir_operator_types_header_t *out = &ctx->headers[ctx->headers_len++];
        out->event = (uint32_t)ctx->events;
        copy_to_string(&out->name, headers[h].name.ptr, headers[h].name.len);
        operator_string_t v;
        copy_to_string(&v, headers[h].value.ptr, headers[h].value.len);
        out->value.ptr = v.ptr;
        out->value.len = v.len;
    }
    ctx->timestamps[ctx->events] = timestamp;
    ctx->targets[ctx->events] = ctx->target;
    if (key) {
        ctx->key_lens[ctx->events] = (int32_t)key->len;
        append_bytes(&ctx->keys, &ctx->keys_len, &ctx->keys_cap, key->ptr, key->len);
    } else {
        ctx->key_lens[ctx->events] = -1;
    }
    ctx->value_lens[ctx->events] = (uint32_t)value.len;
    append_bytes(&ctx->values, &ctx->values_len, &ctx->values_cap, value.ptr, value.len);
    ctx->events++;
}

void weir_emit(weir_ctx *ctx, const weir_bytes *key, weir_bytes value, int64_t timestamp) {
    weir_emit_with_headers(ctx, key, value, timestamp, NULL, 0);
}

void weir_forward(weir_ctx *ctx, const weir_event *event) {
    weir_emit_with_headers(ctx, event->has_key ? &event->key : NULL, event->value, event->timestamp,
                           event->headers, event->header_count);
}

weir_err weir_emit_to(weir_ctx *ctx, const char *output, const weir_bytes *key, weir_bytes value, int64_t timestamp) {
    for (size_t i = 0; i < side_output_count; i++) {
        if (strcmp(side_outputs[i], output) == 0) {
            ctx->target = (uint32_t)i + 1;
            weir_emit(ctx, key, value, timestamp);
            ctx->target = 0;
            return WEIR_OK;
        }
    }
    weir_buf *msg = weir_buf_new();
    weir_buf_puts(msg, "no side output ");
    weir_buf_json_str(msg, weir_str_of(output));
    weir_buf_puts(msg, ": declare it in weir_init with weir_setup_side_output (declared: [");
    for (size_t i = 0; i < side_output_count; i++) {
        if (i) weir_buf_puts(msg, ", ");
        weir_buf_json_str(msg, weir_str_of(side_outputs[i]));
    }
    weir_buf_put(msg, "])", 3);
    return (weir_err)msg->ptr;
}

bool weir_ctx_key(const weir_ctx *ctx, weir_bytes *key) {
    if (ctx->has_key) *key = ctx->key;
    return ctx->has_key;
}

uint32_t weir_ctx_input(const weir_ctx *ctx) { return ctx->input; }

int64_t weir_ctx_watermark(const weir_ctx *ctx) { return ctx->call.watermark; }
int64_t weir_ctx_processing_time(const weir_ctx *ctx) { return ctx->call.processing_time; }

static const char NEEDS_KEY[] =
    "state needs a keyed event, and this one has no key: key the operator's input (key_by)";

/* The cell of `state` for the current key. */
static weir_err cell_of(weir_ctx *ctx, weir_value_state state, uint32_t *cell) {
    if (!ctx->has_key || ctx->slot == NO_SLOT) return NEEDS_KEY;
    if (state.index >= ctx->state_count) return "unknown value state: declare it in weir_init";
    *cell = ctx->slot * (uint32_t)ctx->state_count + state.index;
    return WEIR_OK;
}

weir_err weir_value_get(weir_ctx *ctx, weir_value_state state, weir_bytes *value, bool *present) {
    uint32_t cell;
    weir_err err = cell_of(ctx, state, &cell);
    if (err) return err;
    written w = ctx->writes[cell];
    if (w.len == -2) {
        *present = ctx->cell_lens[cell] >= 0;
        value->ptr = ctx->cell_bytes + ctx->cell_at[cell];
        value->len = *present ? (size_t)ctx->cell_lens[cell] : 0;
    } else {
        *present = w.len >= 0;
        value->ptr = ctx->write_bytes + w.at;
        value->len = *present ? (size_t)w.len : 0;
    }
    return WEIR_OK;
}

static weir_err write_cell(weir_ctx *ctx, weir_value_state state, const weir_bytes *value) {
    uint32_t cell;
    weir_err err = cell_of(ctx, state, &cell);
    if (err) return err;
    reserve((void **)&ctx->undos, &ctx->undo_cap, ctx->undo_len + 1, sizeof *ctx->undos);
    ctx->undos[ctx->undo_len].cell = cell;
    ctx->undos[ctx->undo_len++].before = ctx->writes[cell];
    written w = {-1, ctx->write_len};
    if (value) {
        w.len = (int32_t)value->len;
        append_bytes(&ctx->write_bytes, &ctx->write_len, &ctx->write_cap, value->ptr, value->len);
    }
    ctx->writes[cell] = w;
    return WEIR_OK;
}

weir_err weir_value_set(weir_ctx *ctx, weir_value_state state, weir_bytes value) {
    return write_cell(ctx, state, &value);
}

weir_err weir_value_clear(weir_ctx *ctx, weir_value_state state) { return write_cell(ctx, state, NULL); }

weir_err weir_value_get_json(weir_ctx *ctx, weir_value_state state, weir_json **out) {
    weir_bytes raw;
    bool present;
    weir_err err = weir_value_get(ctx, state, &raw, &present);
    if (err) return err;
    if (!present) {
        *out = NULL;
        return WEIR_OK;
    }
    err = weir_json_parse(raw.ptr, raw.len, out);
    return err ? weir_errorf("value state holds invalid JSON: %s", err) : WEIR_OK;
}

/* `raw` as a JSON unsigned integer when it is plain digits that fit u64
 * (no sign, fraction, exponent or leading zero): most counters. */
static bool plain_u64(weir_bytes raw, uint64_t *out) {
    if (raw.len == 0 || raw.len > 19 || (raw.len > 1 && raw.ptr[0] == '0')) return false;
    uint64_t n = 0;
    for (size_t i = 0; i < raw.len; i++) {
        uint8_t c = raw.ptr[i];
        if (c < '0' || c > '9') return false;
        n = n * 10 + (uint64_t)(c - '0');
    }
    *out = n;
    return true;
}

weir_err weir_value_get_u64(weir_ctx *ctx, weir_value_state state, uint64_t fallback, uint64_t *out) {
    weir_bytes raw;
    bool present;
    weir_err err = weir_value_get(ctx, state, &raw, &present);
    if (err) return err;
    if (!present) {
        *out = fallback;
        return WEIR_OK;
    }
    if (plain_u64(raw, out)) return WEIR_OK;
    /* Anything else (whitespace, 20 digits, not a number): the parser
     * decides, with its messages. */
    weir_json *v;
    err = weir_value_get_json(ctx, state, &v);
    if (err) return err;
    if (v->kind != WEIR_JSON_UINT) return "value state does not hold an unsigned integer";
    *out = v->as.uint;
    return WEIR_OK;
}

weir_err weir_value_set_u64(weir_ctx *ctx, weir_value_state state, uint64_t value) {
    char text[20];
    char *start = u64_digits(value, text + sizeof text);
    weir_bytes raw = {(const uint8_t *)start, (size_t)(text + sizeof text - start)};
    return weir_value_set(ctx, state, raw);
}

/* ---- Host calls ----------------------------------------------------------- */

static weir_err state_error(weir_operator_state_state_error_t *e) {
    weir_err out;
    switch (e->tag) {
    case WEIR_OPERATOR_STATE_STATE_ERROR_KEY_NOT_OWNED: out = "state: key not owned by this instance"; break;
    case WEIR_OPERATOR_STATE_STATE_ERROR_TOO_LARGE: out = weir_errorf("state: larger than %u bytes", e->val.too_large); break;
    default: out = weir_errorf("state unavailable: %.*s", (int)e->val.unavailable.len, e->val.unavailable.ptr);
    }
    weir_operator_state_state_error_free(e);
    return out;
}

/* Host-call arguments borrowed from the SDK's own bytes. */
static operator_string_t host_str(const char *s) {
    operator_string_t out = {(uint8_t *)s, strlen(s)};
    return out;
}

static operator_list_u8_t host_bytes(weir_bytes b) {
    operator_list_u8_t out = {(uint8_t *)b.ptr, b.len};
    return out;
}

/* A copy of host-owned bytes in event memory. */
static weir_bytes scratch_copy(const operator_list_u8_t *list) {
    uint8_t *p = scratch_alloc(list->len);
    if (list->len) memcpy(p, list->ptr, list->len);
    weir_bytes out = {p, list->len};
    return out;
}

/* Copies host-owned bytes into event memory and frees them. */
static weir_bytes take_bytes(operator_list_u8_t *list) {
    weir_bytes out = scratch_copy(list);
    operator_list_u8_free(list);
    return out;
}

weir_err weir_map_get(weir_ctx *ctx, weir_map_state map, weir_bytes map_key, weir_bytes *value, bool *present) {
    if (!ctx->has_key) return NEEDS_KEY;
    operator_string_t name = host_str(map.name);
    operator_list_u8_t key = host_bytes(ctx->key), mk = host_bytes(map_key);
    operator_option_list_u8_t ret;
    weir_operator_state_state_error_t e;
    if (!weir_operator_state_map_get(&name, &key, &mk, &ret, &e)) return state_error(&e);
    *present = ret.is_some;
    if (ret.is_some) {
        *value = take_bytes(&ret.val);
    } else {
        value->ptr = NULL;
        value->len = 0;
    }
    return WEIR_OK;
}

weir_err weir_map_put(weir_ctx *ctx, weir_map_state map, weir_bytes map_key, weir_bytes value) {
    if (!ctx->has_key) return NEEDS_KEY;
    operator_string_t name = host_str(map.name);
    operator_list_u8_t key = host_bytes(ctx->key), mk = host_bytes(map_key), v = host_bytes(value);
    weir_operator_state_state_error_t e;
    return weir_operator_state_map_put(&name, &key, &mk, &v, &e) ? WEIR_OK : state_error(&e);
}

weir_err weir_map_remove(weir_ctx *ctx, weir_map_state map, weir_bytes map_key) {
    if (!ctx->has_key) return NEEDS_KEY;
    operator_string_t name = host_str(map.name);
    operator_list_u8_t key = host_bytes(ctx->key), mk = host_bytes(map_key);
    weir_operator_state_state_error_t e;
    return weir_operator_state_map_remove(&name, &key, &mk, &e) ? WEIR_OK : state_error(&e);
}

weir_err weir_map_entries(weir_ctx *ctx, weir_map_state map, const weir_bytes **keys, const weir_bytes **values,
                          size_t *count) {
    if (!ctx->has_key) return NEEDS_KEY;
    operator_string_t name = host_str(map.name);
    operator_list_u8_t key = host_bytes(ctx->key);
    operator_list_tuple2_list_u8_list_u8_t ret;
    weir_operator_state_state_error_t e;
    if (!weir_operator_state_map_entries(&name, &key, &ret, &e)) return state_error(&e);
    weir_bytes *ks = scratch_alloc(ret.len * sizeof *ks);
    weir_bytes *vs = scratch_alloc(ret.len * sizeof *vs);
    for (size_t i = 0; i < ret.len; i++) {
        ks[i] = scratch_copy(&ret.ptr[i].f0);
        vs[i] = scratch_copy(&ret.ptr[i].f1);
    }
    *keys = ks;
    *values = vs;
    *count = ret.len;
    operator_list_tuple2_list_u8_list_u8_free(&ret);
    return WEIR_OK;
}

weir_err weir_map_clear(weir_ctx *ctx, weir_map_state map) {
    if (!ctx->has_key) return NEEDS_KEY;
    operator_string_t name = host_str(map.name);
    operator_list_u8_t key = host_bytes(ctx->key);
    weir_operator_state_state_error_t e;
    return weir_operator_state_map_clear(&name, &key, &e) ? WEIR_OK : state_error(&e);
}

weir_err weir_list_append(weir_ctx *ctx, weir_list_state list, weir_bytes item) {
    if (!ctx->has_key) return NEEDS_KEY;
    operator_string_t name = host_str(list.name);
    operator_list_u8_t key = host_bytes(ctx->key), v = host_bytes(item);
    weir_operator_state_state_error_t e;
    return weir_operator_state_list_append(&name, &key, &v, &e) ? WEIR_OK : state_error(&e);
}

weir_err weir_list_get(weir_ctx *ctx, weir_list_state list, const weir_bytes **items, size_t *count) {
    if (!ctx->has_key) return NEEDS_KEY;
    operator_string_t name = host_str(list.name);
    operator_list_u8_t key = host_bytes(ctx->key);
    operator_list_list_u8_t ret;
    weir_operator_state_state_error_t e;
    if (!weir_operator_state_list_get(&name, &key, &ret, &e)) return state_error(&e);
    weir_bytes *out = scratch_alloc(ret.len * sizeof *out);
    for (size_t i = 0; i < ret.len; i++) out[i] = scratch_copy(&ret.ptr[i]);
    *items = out;
    *count = ret.len;
    operator_list_list_u8_free(&ret);
    return WEIR_OK;
}

weir_err weir_register_timer(weir_ctx *ctx, weir_time_domain domain, int64_t time) {
    if (!ctx->has_key) return NEEDS_KEY;
    operator_list_u8_t key = host_bytes(ctx->key);
    weir_operator_state_state_error_t e;
    return weir_operator_timers_register((uint8_t)domain, &key, time, &e) ? WEIR_OK : state_error(&e);
}

weir_err weir_delete_timer(weir_ctx *ctx, weir_time_domain domain, int64_t time) {
    if (!ctx->has_key) return NEEDS_KEY;
    operator_list_u8_t key = host_bytes(ctx->key);
    weir_operator_state_state_error_t e;
    return weir_operator_timers_delete((uint8_t)domain, &key, time, &e) ? WEIR_OK : state_error(&e);
}

void weir_log(weir_log_level level, const char *message) {
    operator_string_t m = host_str(message);
    weir_operator_context_log((uint8_t)level, &m);
}

void weir_counter_add(const char *name, uint64_t delta) {
    operator_string_t n = host_str(name);
    weir_operator_context_counter_add(&n, delta);
}

/* ---- The handler exports -------------------------------------------------- */

static size_t state_count;

__attribute__((weak)) weir_err weir_on_timer(weir_ctx *ctx, const weir_timer *timer) {
    (void)ctx;
    (void)timer;
    return WEIR_OK;
}

static void set_error(operator_string_t *err, const char *message) {
    copy_to_string(err, message, strlen(message));
}

bool exports_weir_operator_handler_init(operator_string_t *config, exports_weir_operator_handler_operator_spec_t *ret,
                                        operator_string_t *err) {
    /* The config text stays allocated: parsed strings point into it. */
    scratch.permanent = true;
    weir_json *parsed;
    size_t start = 0;
    while (start < config->len && (config->ptr[start] == ' ' || config->ptr[start] == '\n' ||
                                   config->ptr[start] == '\t' || config->ptr[start] == '\r'))
        start++;
    weir_err e = start == config->len ? weir_json_parse((const uint8_t *)"{}", 2, &parsed)
                                      : weir_json_parse(config->ptr, config->len, &parsed);
    if (e) {
        set_error(err, weir_errorf("invalid config: %s", e));
        scratch.permanent = false;
        return false;
    }
    weir_setup setup;
    memset(&setup, 0, sizeof setup);
    e = weir_init(parsed, &setup);
    if (!e) e = setup.error;
#ifdef WEIR_CONTRACT_0_1
    if (!e && (setup.outputs_len || setup.ttls_len))
        e = "side outputs and state TTL need contract weir:operator@0.2.0, and this operator is built against "
            "0.1.0: build it against wit/0.2.0 (without WEIR_CONTRACT_0_1)";
#endif
    scratch.permanent = false;
    if (e) {
        set_error(err, weir_errorf("invalid config: %s", e));
        scratch_free_all();
        for (size_t i = 0; i < setup.outputs_len; i++) free(setup.outputs[i]);
        free(setup.outputs);
        free(setup.ttls);
        free(setup.names);
        return false;
    }
    state_count = setup.len;
    ret->value_states.len = setup.len;
    ret->value_states.ptr = xmalloc(setup.len * sizeof *ret->value_states.ptr);
    for (size_t i = 0; i < setup.len; i++)
        copy_to_string(&ret->value_states.ptr[i], setup.names[i], strlen(setup.names[i]));
    free(setup.names);
    /* The names stay for weir_emit_to; init runs once per instance. */
    side_outputs = setup.outputs;
    side_output_count = setup.outputs_len;
#ifndef WEIR_CONTRACT_0_1
    ret->outputs.len = setup.outputs_len;
    ret->outputs.ptr = xmalloc(setup.outputs_len * sizeof *ret->outputs.ptr);
    for (size_t i = 0; i < setup.outputs_len; i++)
        copy_to_string(&ret->outputs.ptr[i], setup.outputs[i], strlen(setup.outputs[i]));
    ret->ttls.len = setup.ttls_len;
    ret->ttls.ptr = xmalloc(setup.ttls_len * sizeof *ret->ttls.ptr);
    for (size_t i = 0; i < setup.ttls_len; i++) {
        const ttl_decl *d = &setup.ttls[i];
        weir_operator_types_state_ttl_t *out = &ret->ttls.ptr[i];
        out->kind = d->kind;
        copy_to_string(&out->name, d->name, strlen(d->name));
        out->ttl_ms = d->ttl.ms;
        out->domain = (uint8_t)d->ttl.domain;
        out->refresh = d->ttl.refresh_on_read ? WEIR_OPERATOR_TYPES_TTL_REFRESH_ON_READ_AND_WRITE
                                              : WEIR_OPERATOR_TYPES_TTL_REFRESH_ON_WRITE;
    }
#endif
    free(setup.ttls);
    return true;
}

/* Sets up ctx over the call's state cells; false when they are malformed. */
static bool ctx_begin_call(weir_ctx *ctx, weir_operator_types_call_context_t call,
                           const weir_operator_types_state_cells_t *cells, size_t slots, operator_string_t *err) {
    memset(ctx, 0, sizeof *ctx);
    ctx->call = call;
    ctx->state_count = state_count;
    ctx->cell_count = slots * state_count;
    if (cells->lens.len != ctx->cell_count) {
        set_error(err, weir_errorf("malformed input from the host: %zu state cells sent, %zu expected",
                                   cells->lens.len, ctx->cell_count));
        return false;
    }
    ctx->cell_lens = cells->lens.ptr;
    ctx->cell_bytes = cells->bytes.ptr;
    ctx->cell_at = xmalloc(ctx->cell_count * sizeof *ctx->cell_at);
    ctx->writes = xmalloc(ctx->cell_count * sizeof *ctx->writes);
    size_t at = 0;
    for (size_t i = 0; i < ctx->cell_count; i++) {
        ctx->cell_at[i] = at;
        if (ctx->cell_lens[i] > 0) at += (size_t)ctx->cell_lens[i];
        ctx->writes[i].len = -2;
    }
    if (at != cells->bytes.len) {
        set_error(err, "malformed input from the host: state lengths do not add up to the bytes sent");
        free(ctx->cell_at);
        free(ctx->writes);
        return false;
    }
    return true;
}

typedef struct {
    size_t events, keys, values, headers;
} mark;

static mark ctx_mark(weir_ctx *ctx) {
    ctx->undo_len = 0;
    mark m = {ctx->events, ctx->keys_len, ctx->values_len, ctx->headers_len};
    return m;
}

/* Drops what the failed item emitted and wrote, and records its error. */
static void ctx_fail(weir_ctx *ctx, mark m, size_t index, weir_err message) {
    ctx->events = m.events;
    ctx->keys_len = m.keys;
    ctx->values_len = m.values;
    while (ctx->headers_len > m.headers) weir_operator_types_header_free(&ctx->headers[--ctx->headers_len]);
    while (ctx->undo_len > 0) {
        undo *u = &ctx->undos[--ctx->undo_len];
        ctx->writes[u->cell] = u->before;
    }
    reserve((void **)&ctx->errors, &ctx->errors_cap, ctx->errors_len + 1, sizeof *ctx->errors);
    weir_operator_types_event_error_t *e = &ctx->errors[ctx->errors_len++];
    e->index = (uint32_t)index;
    copy_to_string(&e->message, message, strlen(message));
}

/* Hands the call's output over (the bindings free it after the call). */
static void ctx_finish(weir_ctx *ctx, exports_weir_operator_handler_call_output_t *ret) {
    weir_operator_types_event_batch_t *ev = &ret->events;
    ev->timestamps.ptr = ctx->timestamps;
    ev->timestamps.len = ctx->events;
    ev->key_lens.ptr = ctx->key_lens;
    ev->key_lens.len = ctx->events;
    ev->keys.ptr = ctx->keys;
    ev->keys.len = ctx->keys_len;
    ev->value_lens.ptr = ctx->value_lens;
    ev->value_lens.len = ctx->events;
    ev->values.ptr = ctx->values;
    ev->values.len = ctx->values_len;
    ev->headers.ptr = ctx->headers;
    ev->headers.len = ctx->headers_len;
    ret->errors.ptr = ctx->errors;
    ret->errors.len = ctx->errors_len;
#ifndef WEIR_CONTRACT_0_1
    /* An operator that sent everything to the main output says nothing. */
    bool side = false;
    for (size_t i = 0; i < ctx->events && !side; i++) side = ctx->targets[i] != 0;
    if (side) {
        ret->outputs.ptr = ctx->targets;
        ret->outputs.len = ctx->events;
    } else {
        ret->outputs.ptr = NULL;
        ret->outputs.len = 0;
        free(ctx->targets);
    }
#else
    free(ctx->targets);
#endif
    size_t changed = 0, bytes = 0;
    for (size_t i = 0; i < ctx->cell_count; i++) {
        if (ctx->writes[i].len == -2) continue;
        changed++;
        if (ctx->writes[i].len > 0) bytes += (size_t)ctx->writes[i].len;
    }
    weir_operator_types_state_changes_t *st = &ret->state;
    st->cells.ptr = xmalloc(changed * sizeof(uint32_t));
    st->lens.ptr = xmalloc(changed * sizeof(int32_t));
    st->bytes.ptr = xmalloc(bytes);
    st->cells.len = st->lens.len = changed;
    st->bytes.len = bytes;
    size_t j = 0, at = 0;
    for (size_t i = 0; i < ctx->cell_count; i++) {
        written w = ctx->writes[i];
        if (w.len == -2) continue;
        st->cells.ptr[j] = (uint32_t)i;
        st->lens.ptr[j++] = w.len;
        if (w.len > 0) {
            memcpy(st->bytes.ptr + at, ctx->write_bytes + w.at, (size_t)w.len);
            at += (size_t)w.len;
        }
    }
    free(ctx->cell_at);
    free(ctx->writes);
    free(ctx->write_bytes);
    free(ctx->undos);
}

bool exports_weir_operator_handler_process(exports_weir_operator_handler_process_input_t *input,
                                           exports_weir_operator_handler_call_output_t *ret,
                                           operator_string_t *err) {
    weir_operator_types_event_batch_t *ev = &input->events;
    size_t n = ev->timestamps.len;
    bool slotted = input->key_slots.len != 0;
    bool ok = false;
    weir_ctx ctx;
    weir_header *headers = NULL;
    if (ev->key_lens.len != n || ev->value_lens.len != n || (slotted && input->key_slots.len != n)) {
        set_error(err, "malformed input from the host: batch columns differ in length");
        goto done;
    }
    size_t keys_total = 0, values_total = 0;
    for (size_t i = 0; i < n; i++) {
        if (ev->key_lens.ptr[i] > 0) keys_total += (size_t)ev->key_lens.ptr[i];
        values_total += ev->value_lens.ptr[i];
    }
    if (keys_total != ev->keys.len || values_total != ev->values.len) {
        set_error(err, "malformed input from the host: key or value lengths do not add up to the bytes sent");
        goto done;
    }
    if (!ctx_begin_call(&ctx, input->context, &input->state, input->slot_count, err)) goto done;
#ifndef WEIR_CONTRACT_0_1
    ctx.input = input->input;
#endif
    headers = xmalloc(ev->headers.len * sizeof *headers);
    for (size_t h = 0; h < ev->headers.len; h++) {
        headers[h].name.ptr = (const char *)ev->headers.ptr[h].name.ptr;
        headers[h].name.len = ev->headers.ptr[h].name.len;
        headers[h].value.ptr = ev->headers.ptr[h].value.ptr;
        headers[h].value.len = ev->headers.ptr[h].value.len;
    }
    size_t key_at = 0, value_at = 0, next_header = 0;
    for (size_t i = 0; i < n; i++) {
        weir_event event;
        memset(&event, 0, sizeof event);
        int32_t kl = ev->key_lens.ptr[i];
        event.has_key = kl >= 0;
        if (event.has_key) {
            event.key.ptr = ev->keys.ptr + key_at;
            event.key.len = (size_t)kl;
            key_at += (size_t)kl;
        }
        event.value.ptr = ev->values.ptr + value_at;
        event.value.len = ev->value_lens.ptr[i];
        value_at += event.value.len;
        event.timestamp = ev->timestamps.ptr[i];
        event.input = ctx.input;
        size_t first_header = next_header;
        while (next_header < ev->headers.len && ev->headers.ptr[next_header].event == i) next_header++;
        event.headers = headers + first_header;
        event.header_count = next_header - first_header;
        uint32_t slot = slotted ? input->key_slots.ptr[i] : NO_SLOT;
        if (slot != NO_SLOT && slot >= input->slot_count) {
            set_error(err, weir_errorf("malformed input from the host: key slot %u of event %zu is out of range",
                                       slot, i));
            ctx_finish(&ctx, ret);
            exports_weir_operator_handler_call_output_free(ret);
            goto done;
        }
        ctx.has_key = event.has_key;
        ctx.key = event.key;
        ctx.slot = slot;
        mark m = ctx_mark(&ctx);
        weir_err e = weir_process(&ctx, &event);
        if (e) ctx_fail(&ctx, m, i, e);
        scratch_free_all();
    }
    ctx_finish(&ctx, ret);
    ok = true;
done:
    free(headers);
    scratch_free_all();
    exports_weir_operator_handler_process_input_free(input);
    return ok;
}

bool exports_weir_operator_handler_on_timer(exports_weir_operator_handler_timer_input_t *input,
                                            exports_weir_operator_handler_call_output_t *ret,
                                            operator_string_t *err) {
    weir_operator_types_fired_timers_t *t = &input->timers;
    size_t n = t->times.len, slots = input->key_lens.len;
    bool ok = false;
    weir_ctx ctx;
    size_t *key_at = xmalloc((slots + 1) * sizeof *key_at);
    if (t->domains.len != n || t->key_slots.len != n) {
        set_error(err, "malformed input from the host: timer columns differ in length");
        goto done;
    }
    key_at[0] = 0;
    for (size_t s = 0; s < slots; s++) {
        int32_t l = input->key_lens.ptr[s];
        key_at[s + 1] = key_at[s] + (l > 0 ? (size_t)l : 0);
    }
    if (key_at[slots] != input->keys.len) {
        set_error(err, "malformed input from the host: key lengths do not add up to the bytes sent");
        goto done;
    }
    if (!ctx_begin_call(&ctx, input->context, &input->state, slots, err)) goto done;
    for (size_t i = 0; i < n; i++) {
        uint32_t slot = t->key_slots.ptr[i];
        if (slot >= slots || input->key_lens.ptr[slot] < 0) {
            set_error(err, weir_errorf("malformed input from the host: timer %zu has no key in slot %u", i, slot));
            ctx_finish(&ctx, ret);
            exports_weir_operator_handler_call_output_free(ret);
            goto done;
        }
        weir_timer timer;
        timer.key.ptr = input->keys.ptr + key_at[slot];
        timer.key.len = (size_t)input->key_lens.ptr[slot];
        timer.time = t->times.ptr[i];
        timer.domain = (weir_time_domain)t->domains.ptr[i];
        ctx.has_key = true;
        ctx.key = timer.key;
        ctx.slot = slot;
        mark m = ctx_mark(&ctx);
        weir_err e = weir_on_timer(&ctx, &timer);
        if (e) ctx_fail(&ctx, m, i, e);
        scratch_free_all();
    }
    ctx_finish(&ctx, ret);
    ok = true;
done:
    free(key_at);
    scratch_free_all();
    exports_weir_operator_handler_timer_input_free(input);
    return ok;
}
