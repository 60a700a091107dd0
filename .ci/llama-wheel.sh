#!/usr/bin/env bash
# Build llama-cpp-python's wheel once (no binary wheel on PyPI: ~10 min of cmake + g++ on 2 cores) into a
# cache folder that later runs on this machine reuse; prints the wheel's path on the last line.
# Only the library is built: llava/mtmd, llama.cpp's tools, examples, tests and server are not needed
# by the Python bindings.
set -euo pipefail
version=0.3.36
dir=${MOLE_WHEEL_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/mole-lsp-ci/wheels}
mkdir -p "$dir"
wheel=$(ls "$dir"/llama_cpp_python-"$version"-*.whl 2>/dev/null | head -n 1 || true)
if [ -z "$wheel" ]; then
  tmp=$(mktemp -d)
  CMAKE_ARGS="-DLLAVA_BUILD=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_TOOLS=OFF -DLLAMA_BUILD_SERVER=OFF" \
    CMAKE_BUILD_PARALLEL_LEVEL=$(nproc) \
    python3 -m pip wheel -q --no-deps "llama-cpp-python==$version" -w "$tmp" >&2
  mv "$tmp"/llama_cpp_python-"$version"-*.whl "$dir"/   # a finished wheel only: an interrupted build leaves none
  rm -rf "$tmp"
  wheel=$(ls "$dir"/llama_cpp_python-"$version"-*.whl | head -n 1)
fi
echo "$wheel"
