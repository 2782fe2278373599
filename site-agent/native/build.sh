#!/bin/sh
# Rebuilds simd-kernels.wasm from its C source. Needs clang and wasm-ld with the wasm32 target
# (Debian: apt-get install clang lld). The built module is committed, so installing fedssl needs neither.
set -eu
cd "$(dirname "$0")"
clang --target=wasm32 -O3 -msimd128 -nostdlib -ffreestanding -fno-builtin \
  -Wl,--no-entry -Wl,--import-memory -Wl,--strip-all \
  -o simd-kernels.wasm.tmp simd-kernels.c
# The module runs inside tfjs-backend-wasm's memory: it must own no data and use no stack there.
if llvm-objdump -h simd-kernels.wasm.tmp | grep -q ' DATA '; then
  echo "simd-kernels.c has static data: it would overwrite tfjs-backend-wasm's heap" >&2; exit 1
fi
if llvm-objdump -d simd-kernels.wasm.tmp | grep -q 'global\.'; then
  echo "simd-kernels.c uses the shadow stack: it would write into tfjs-backend-wasm's heap" >&2; exit 1
fi
mv simd-kernels.wasm.tmp simd-kernels.wasm
echo "built $(pwd)/simd-kernels.wasm ($(wc -c < simd-kernels.wasm) bytes) with $(clang --version | head -1)"
