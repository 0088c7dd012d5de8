#!/bin/sh
# Builds {{name}}.wasm with the Weir checkout's xtask (mainline Go for
# wasip1, then wit-component): see {{weir}}/sdk/go/README.md.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
cd "{{weir}}"
cargo xtask build-go "$here" "$here/{{name}}.wasm"
