/* Unicode tables of the C SDK, generated from Rust's `char` methods (see
 * weir_unicode.c), so that C operators treat text as Rust operators do. */
#ifndef WEIR_UNICODE_H
#define WEIR_UNICODE_H

#include <stddef.h>
#include <stdint.h>

/* The code points first..last, inclusive. */
typedef struct { uint32_t first, last; } weir_range;

/* Code points first, first + stride, ..., last lowercase to c + delta. */
typedef struct { uint32_t first, last, stride; int32_t delta; } weir_lower_run;

/* A code point whose lowercase is several code points (UTF-8). */
typedef struct { uint32_t c; const char *utf8; size_t len; } weir_lower_special;

extern const weir_range weir_white_space[];
extern const size_t weir_white_space_len;
/* Case_Ignorable, and Cased minus Case_Ignorable: what the final-sigma
 * rule of lowercasing reads. */
extern const weir_range weir_case_ignorable[];
extern const size_t weir_case_ignorable_len;
extern const weir_range weir_cased[];
extern const size_t weir_cased_len;
extern const weir_lower_run weir_lower_runs[];
extern const size_t weir_lower_runs_len;
extern const weir_lower_special weir_lower_specials[];
extern const size_t weir_lower_specials_len;

#endif
