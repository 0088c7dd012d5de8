#!/bin/sh
# Builds {{name}}.wasm with componentize-js 0.23.0 (npm install -g
# @bytecodealliance/componentize-js@0.23.0; $COMPONENTIZE_JS names another
# one) from operator.js and the weir-sdk npm package in node_modules
# (npm install weir-sdk, or the tarball `cargo xtask sdk-packages` builds
# in {{weir}}/target/sdk-packages): see {{weir}}/sdk/js/README.md.
set -eu
cd "$(dirname "$0")"
if [ ! -f node_modules/weir-sdk/weir.js ]; then
    echo "weir-sdk is not installed here: npm install weir-sdk (see README.md)" >&2
    exit 1
fi
"${COMPONENTIZE_JS:-componentize-js}" operator.js --wit "{{weir}}/wit/0.2.0" --world-name operator \
    --disable http fetch-event -o {{name}}.wasm
