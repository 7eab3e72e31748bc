#!/usr/bin/env bash
# `make fuzz-c`: builds the libFuzzer target (clang, ASan + UBSan) into build/c_agent_fuzz and
# runs it for SECONDS (default 60) from the checked-in seed corpus c_agent/fuzz/corpus.
# New inputs go to build/c_agent_fuzz/corpus, crashes to build/c_agent_fuzz/crash-*.
set -euo pipefail
cd "$(dirname "$0")/../.."
seconds="${1:-60}"
out=build/c_agent_fuzz
mkdir -p "$out/corpus"

# clang and its fuzzer runtime (Debian: clang, libclang-rt-dev), libsodium's headers
probe="$out/probe.c"
echo 'int LLVMFuzzerTestOneInput(const unsigned char *d, unsigned long n) { (void)d; (void)n; return 0; }' >"$probe"
if ! command -v clang >/dev/null 2>&1 || ! clang -fsanitize=fuzzer "$probe" -o "$out/probe" 2>/dev/null; then
    bash tools/apt-install.sh clang libclang-rt-dev
fi
[ -f /usr/include/sodium.h ] || bash tools/apt-install.sh libsodium-dev

src=c_agent/src
clang -std=c99 -g -O1 -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined \
    -Wall -Wextra -Werror -Ic_agent/include \
    c_agent/fuzz/fuzz_harcp.c "$src/har_msgpack.c" "$src/har_protocol.c" "$src/har_crypto.c" \
    "$src/har_crypto_sodium.c" "$src/har_keyfile.c" "$src/har_mqtt.c" \
    -lsodium -o "$out/fuzz_harcp"

echo "fuzzing for ${seconds} s (seeds: c_agent/fuzz/corpus)"
"$out/fuzz_harcp" -max_total_time="$seconds" -max_len=4096 -timeout=10 -print_final_stats=1 \
    -artifact_prefix="$out/" "$out/corpus" c_agent/fuzz/corpus
