#!/bin/sh
# Build and run the whole test suite (cmocka tests driven by ctest).
#   scripts/test.sh                 Release build in build/
#   TG_SANITIZE=address scripts/test.sh   ASan+UBSan build in build-address/
#   TG_SANITIZE=thread scripts/test.sh    TSan build in build-thread/
# Extra arguments go to ctest (for example -R wal).
set -eu
cd "$(dirname "$0")/.."
scripts/deps.sh
san="${TG_SANITIZE:-}"
if [ -n "$san" ]; then
  dir="build-$san"
  # Sanitizer builds use clang when it is there: gcc 12's TSan rejects
  # atomic_thread_fence, and its UBSan null check at -O2 tests stale flags
  # after a thread-local address (a false "member access within null
  # pointer" in tg_span_begin, seen in CI).
  if [ -z "${CC:-}" ] && command -v clang >/dev/null; then
    export CC=clang
  fi
  cmake -S . -B "$dir" -DCMAKE_BUILD_TYPE=RelWithDebInfo \
    -DTG_SANITIZE="$san" -DTG_WERROR="${TG_WERROR:-OFF}" \
    -DTG_WITH_NATS="${TG_WITH_NATS:-AUTO}" >/dev/null
else
  dir="build"
  cmake -S . -B "$dir" -DCMAKE_BUILD_TYPE=Release -DTG_WERROR="${TG_WERROR:-OFF}" \
    -DTG_WITH_NATS="${TG_WITH_NATS:-AUTO}" >/dev/null
fi
cmake --build "$dir" -j"$(nproc)"
cd "$dir"
ctest --output-on-failure -j"$(nproc)" "$@"
