#!/bin/sh
# Usage: install_test.sh BUILD_DIR EXAMPLE.c SCRATCH_DIR CC SOURCE_DIR
# Installs the build into SCRATCH_DIR/prefix and checks what is installed:
# the four programs (each answers --version; tg-stress finds its shipped
# configs from the new prefix) with their man pages and the licence, and no
# installed program carries the source or the build directory's path. Then
# builds EXAMPLE.c against the installed copy with pkg-config and with
# CMake's find_package, and runs both. Prints "pkg-config: <output>" and
# "find_package: <output>".
set -eu
build=$1 example=$2 scratch=$3 cc=$4 source=$5
rm -rf "$scratch"
mkdir -p "$scratch"
prefix="$scratch/prefix"
cmake --install "$build" --prefix "$prefix" >/dev/null
pc=$(dirname "$(find "$prefix" -name tokengraph.pc | head -n 1)")
libdir=$(dirname "$pc")
test -f "$libdir/libtokengraph.a"
test -f "$prefix/include/tokengraph/tokengraph.h"
for prog in tg-bench tg-stress tg-crash tg-replay tg-replica; do
  test -x "$prefix/bin/$prog"
  test -f "$prefix/share/man/man1/$prog.1"
  # Debug information names the sources by design; the program itself
  # (code, strings, constants) must not.
  objcopy --strip-debug "$prefix/bin/$prog" "$scratch/stripped"
  for path in "$(cd "$source" && pwd -P)" "$(cd "$build" && pwd -P)" "$source" "$build"; do
    if grep -q -F -- "$path" "$scratch/stripped"; then
      echo "installed $prog contains the path $path" >&2
      exit 1
    fi
  done
done
rm -f "$scratch/stripped"
test -f "$prefix/share/doc/tokengraph/LICENSE"
"$prefix/bin/tg-crash" --version | grep -q "^tg-crash "
# The shipped configs are found relative to the installed executable.
"$prefix/bin/tg-stress" --config default --check-config |
  grep -q -F "$prefix/bin/../share/tokengraph/configs/default.ini: ok"

# shellcheck disable=SC2046
"$cc" -o "$scratch/ex_pc" "$example" $(PKG_CONFIG_PATH="$pc" pkg-config --cflags --libs tokengraph)
printf 'pkg-config: '
LD_LIBRARY_PATH="$libdir" "$scratch/ex_pc"

mkdir -p "$scratch/consumer"
cp "$example" "$scratch/consumer/example.c"
cat > "$scratch/consumer/CMakeLists.txt" <<'CMK'
cmake_minimum_required(VERSION 3.18)
project(consumer C)
find_package(tokengraph REQUIRED)
add_executable(example example.c)
target_link_libraries(example PRIVATE tokengraph::tokengraph)
CMK
CC="$cc" cmake -S "$scratch/consumer" -B "$scratch/consumer/build" \
  -DCMAKE_PREFIX_PATH="$prefix" >/dev/null
cmake --build "$scratch/consumer/build" >/dev/null
printf 'find_package: '
LD_LIBRARY_PATH="$libdir" "$scratch/consumer/build/example"
