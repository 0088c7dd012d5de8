/* Test fixture: forwards every event and counts it in the host's counter
 * `events` (so the component imports `counter-add`). Built by `cargo xtask
 * guests` against wit/ and against deliberately wrong copies of it. */
#include "weir.h"

weir_err weir_init(const weir_json *config, weir_setup *setup) {
    (void)config;
    (void)setup;
    return WEIR_OK;
}

weir_err weir_process(weir_ctx *ctx, const weir_event *event) {
    weir_counter_add("events", 1);
    weir_forward(ctx, event);
    return WEIR_OK;
}
