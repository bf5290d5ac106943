#!/bin/sh
# Usage: install_test.sh BUILD_DIR EXAMPLE.c SCRATCH_DIR CC
# Installs the build into SCRATCH_DIR/prefix, then builds EXAMPLE.c against
# the installed copy with pkg-config and with CMake's find_package, and runs
# both. Prints "pkg-config: <output>" and "find_package: <output>".
set -eu
build=$1 example=$2 scratch=$3 cc=$4
rm -rf "$scratch"
mkdir -p "$scratch"
prefix="$scratch/prefix"
cmake --install "$build" --prefix "$prefix" >/dev/null
pc=$(dirname "$(find "$prefix" -name tokengraph.pc | head -n 1)")
libdir=$(dirname "$pc")
test -f "$libdir/libtokengraph.a"
test -f "$prefix/include/tokengraph/tokengraph.h"
test -x "$prefix/bin/tg-bench"

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
