#!/bin/sh
# Builds {{name}}.wasm with the Weir checkout's xtask (clang-14 for
# wasm32-wasi, the C SDK, wit-component): see {{weir}}/sdk/c/README.md.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
cd "{{weir}}"
cargo xtask build-c "$here" "$here/{{name}}.wasm"
