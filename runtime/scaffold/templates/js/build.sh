#!/bin/sh
# Builds {{name}}.wasm with componentize-js 0.23.0 (npm install -g
# @bytecodealliance/componentize-js@0.23.0; $COMPONENTIZE_JS names another
# one): see {{weir}}/sdk/js/README.md. componentize-js reads only files
# under this folder, so the SDK is copied into weir-sdk/ first.
set -eu
cd "$(dirname "$0")"
mkdir -p weir-sdk
cp "{{weir}}/sdk/js/weir.js" "{{weir}}/sdk/js/weir_unicode.js" weir-sdk/
"${COMPONENTIZE_JS:-componentize-js}" operator.js --wit "{{weir}}/wit" --world-name operator \
    --disable http fetch-event -o {{name}}.wasm
