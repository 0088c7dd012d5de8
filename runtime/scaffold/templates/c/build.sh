#!/bin/sh
# Builds {{name}}.wasm with the C SDK package's weir-c-build (clang-14 for
# wasm32-wasi, pkg-config, then wasm-tools or jco for the component step):
# unpack weir-sdk-c-<version>.tar.gz and put its bin/ on your PATH, or set
# WEIR_C_BUILD to that script; see {{weir}}/sdk/c/README.md.
set -eu
cd "$(dirname "$0")"
"${WEIR_C_BUILD:-weir-c-build}" {{name}}.wasm operator.c
