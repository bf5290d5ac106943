#!/bin/sh
# The main job: install what is missing, build everything (Release), and run
# tg-stress with the reference workload (stress/configs/default.ini: 9,500,000
# tokens at 95% of a 10,000,000-token quota, 1,024,000,000 bytes, threshold
# 0.95, BALANCED) into a temporary directory that is removed afterwards.
# Extra arguments go to tg-stress (e.g. --json, --report FILE.jsonl,
# --plot FILE.png, --config strict).
set -eu
cd "$(dirname "$0")/.."
scripts/deps.sh
cmake -S . -B build -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build build -j"$(nproc)"
echo
echo "== tg-stress --config stress/configs/default.ini =="
exec ./build/tg-stress --config stress/configs/default.ini "$@"
