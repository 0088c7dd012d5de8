#!/bin/sh
# Builds {{name}}.wasm with componentize-py (pip install componentize-py==0.25.1;
# $COMPONENTIZE_PY names another one): see {{weir}}/sdk/python/README.md.
set -eu
cd "$(dirname "$0")"
"${COMPONENTIZE_PY:-componentize-py}" -d "{{weir}}/wit" -w operator componentize app \
    -p . -p "{{weir}}/sdk/python" -o {{name}}.wasm
