#!/bin/sh
# Run the examples in the order a user would: ingest into a store while the
# read-only monitor watches it live, look at the closed store, then scan it
# page by page and back it up.
# Fails (non-zero) on any unexpected output.
set -eu
ingest=$1
monitor=$2
scan_backup=$3
dir=$(mktemp -d "${TMPDIR:-/tmp}/tg-examples.XXXXXX")
trap 'rm -rf "$dir"' EXIT INT TERM

"$ingest" "$dir/data" 20000 10 > "$dir/ingest.out" 2> "$dir/ingest.err" &
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
grep -qx "20000 tokens, 19999 connections, last LSN 2000" "$dir/ingest.out"
[ "$(wc -l < "$dir/monitor.out")" -eq 10 ]
# What the monitor saw only moved forward, a whole batch at a time: 10
# tokens per log record, each connected to the one before.
awk '{ lsn = $2 + 0; t = $3 + 0; c = $5 + 0
       if (lsn < last) { print "LSN went back: " $0; exit 1 }
       if (t != lsn * 10 || c != (t ? t - 1 : 0)) { print "not whole batches: " $0; exit 1 }
       last = lsn }' "$dir/monitor.out"
# Closed: the whole log is durable, and the monitor shows all of it.
"$monitor" "$dir/data" 0 1 > "$dir/final.out"
cat "$dir/final.out"
grep -qx "LSN 2000: 20000 tokens, 19999 connections (checkpoint LSN 0)" "$dir/final.out"
# Scan in pages of 1,000, then a backup that opens with the same state.
"$scan_backup" "$dir/data" "$dir/backup" > "$dir/scan.out" 2> "$dir/scan.err"
cat "$dir/scan.out"
grep -qx "scanned 20000 tokens in 20 pages, total weight 199990000" "$dir/scan.out"
grep -qx "backup $dir/backup: LSN 2000, 20000 tokens, 19999 connections" "$dir/scan.out"
echo "examples passed"
