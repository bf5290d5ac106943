#!/bin/sh
# The main job: install what is missing, build everything (Release), and run
# the token benchmark with the reference workload's quota configuration.
set -eu
cd "$(dirname "$0")/.."
scripts/deps.sh
cmake -S . -B build -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build build -j"$(nproc)"
echo
echo "== tg-bench tokens (9,500,000 tokens, guardian inline) =="
./build/tg-bench tokens
