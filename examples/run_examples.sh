#!/bin/sh
# Run the examples in the order a user would: ingest into a store while the
# read-only monitor watches it live, then look at the closed store.
# Fails (non-zero) on any unexpected output.
set -eu
ingest=$1
monitor=$2
dir=$(mktemp -d "${TMPDIR:-/tmp}/tg-examples.XXXXXX")
trap 'rm -rf "$dir"' EXIT INT TERM

"$ingest" "$dir/data" 5000 > "$dir/ingest.out" &
pid=$!
# The monitor needs the store to exist: wait for its log directory, made
# once the checkpoint is (bounded: 120 s).
i=0
while [ ! -d "$dir/data/wal" ]; do
  i=$((i + 1))
  [ $i -le 12000 ] || { echo "the ingest never created its store"; exit 1; }
  sleep 0.01
done
"$monitor" "$dir/data" 20 10 > "$dir/monitor.out"
wait $pid
cat "$dir/ingest.out" "$dir/monitor.out"
grep -qx "5000 tokens, 4999 connections, last LSN 9999" "$dir/ingest.out"
[ "$(wc -l < "$dir/monitor.out")" -eq 10 ]
# What the monitor saw only moved forward.
awk '{ lsn = $2 + 0; if (lsn < last) { print "LSN went back: " $0; exit 1 } last = lsn }' \
  "$dir/monitor.out"
# Closed: the whole log is durable, and the monitor shows all of it.
"$monitor" "$dir/data" 0 1 > "$dir/final.out"
cat "$dir/final.out"
grep -qx "LSN 9999: 5000 tokens, 4999 connections (checkpoint LSN 0)" "$dir/final.out"
echo "examples passed"
