#!/bin/sh
# The dependency rules (docs/design.md) hold and are enforced by the build.
#   layering_test.sh CC LAYER_DIR SRC_DIR
# For every module M and every module X, a file compiled with M's include
# path (LAYER_DIR/M, exactly what CMake gives tg_M) that includes a header
# of X must compile when the rules below let M use X, and must fail with
# "No such file" when they do not. The same for the public headers. Also:
# no source in src/ reaches around the rules with a "../" include.
set -u
cc=$1 layers=$2 src=$3
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
fail=0

# The rules. Every module may use common; common uses nothing.
uses() {
  case $1 in
    common) echo "common" ;;
    token | guardian | wal | trace | repl) echo "common $1" ;;
    store) echo "common token guardian wal trace repl store" ;;
  esac
}
# Public headers a module may include (errors.h and version.h for all).
api() {
  case $1 in
    common | repl) echo "errors.h version.h" ;;
    wal) echo "errors.h version.h wal.h" ;;
    trace) echo "errors.h version.h trace.h" ;;
    # The token types and quota config live in tokengraph.h, which
    # includes wal.h for the log's configuration.
    token | guardian) echo "errors.h version.h tokengraph.h wal.h" ;;
    store) echo "errors.h version.h tokengraph.h wal.h trace.h" ;;
  esac
}
# repl exists only in a build with libnats (CMakeLists.txt).
modules="common token guardian wal trace store"
[ -d "$layers/repl" ] && modules="common token guardian wal trace repl store"
probe() { # $1 module, $2 include, $3 expected (ok|forbidden)
  printf '#include "%s"\nint tg_probe;\n' "$2" >"$tmp/p.c"
  if "$cc" -std=c11 -D_GNU_SOURCE -fsyntax-only -I "$layers/$1" "$tmp/p.c" \
       >"$tmp/out" 2>&1; then
    got=ok
  elif grep -q -e "No such file" -e "file not found" "$tmp/out"; then
    got=forbidden
  else
    got=error
    cat "$tmp/out"
  fi
  if [ "$got" != "$3" ]; then
    echo "FAIL: module $1 including $2: expected $3, got $got"
    fail=1
  else
    echo "ok: $1 -> $2 ($3)"
  fi
}

for m in $modules; do
  [ -d "$layers/$m" ] || { echo "FAIL: no include layer for module $m"; fail=1; continue; }
  for x in $modules; do
    hdr=$(cd "$src/$x" && ls *.h 2>/dev/null | head -n 1)
    [ -n "$hdr" ] || continue
    want=forbidden
    for u in $(uses "$m"); do [ "$u" = "$x" ] && want=ok; done
    probe "$m" "$x/$hdr" "$want"
  done
  for h in errors.h version.h tokengraph.h wal.h trace.h; do
    want=forbidden
    for a in $(api "$m"); do [ "$a" = "$h" ] && want=ok; done
    probe "$m" "tokengraph/$h" "$want"
  done
done

if grep -rn '#[[:space:]]*include[[:space:]]*"\.\./' "$src"; then
  echo "FAIL: a source includes a path with ../ (around the module rules)"
  fail=1
fi
[ $fail -eq 0 ] && echo "layering rules hold"
exit $fail
