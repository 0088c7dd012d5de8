#!/bin/sh
# Builds {{name}}.wasm with componentize-py (pip install componentize-py==0.25.1;
# $COMPONENTIZE_PY names another one) and the installed weir-sdk package
# (pip install weir-sdk, or the wheel `cargo xtask sdk-packages` builds in
# {{weir}}/target/sdk-packages), both in the Python environment of $PYTHON
# (default python3): see {{weir}}/sdk/python/README.md.
set -eu
cd "$(dirname "$0")"
# Where weir_sdk is installed (found, not imported: it imports the bindings
# componentize-py generates).
sdk=$("${PYTHON:-python3}" -c 'import importlib.util, os
spec = importlib.util.find_spec("weir_sdk")
print(os.path.dirname(spec.origin) if spec else "")')
if [ -z "$sdk" ]; then
    echo "weir_sdk is not installed for ${PYTHON:-python3}: pip install weir-sdk (see README.md)" >&2
    exit 1
fi
"${COMPONENTIZE_PY:-componentize-py}" -d "{{weir}}/wit/0.2.0" -w operator componentize app \
    -p . -p "$sdk" -o {{name}}.wasm
