#!/bin/sh
# Installs what the build needs, when it is missing: libclang (always), and with --test
# also Debian's `prometheus` package (promtool and the server), which the metrics tests
# run against. A failed optional install only warns: those tests then say they skipped,
# unless SETTLED_REQUIRE_SYSTEM_TESTS=1 (CI) makes them fail.
#
# RocksDB's Rust bindings are generated at build time by bindgen, which loads libclang
# through clang-sys: a file named libclang.so or libclang-N.so. Debian ships that file in
# libclang-dev. A machine can hold other libraries whose names start with "libclang"
# (libclang-cpp.so.14, or libclang-N.so.1 without the unversioned link) and still fail
# the build, so this looks for the exact file names clang-sys accepts.
set -eu

libclang_dirs() {
    if [ -n "${LIBCLANG_PATH:-}" ]; then echo "$LIBCLANG_PATH"; fi
    if command -v llvm-config >/dev/null 2>&1; then llvm-config --libdir; fi
    ls -d /usr/lib/llvm-*/lib 2>/dev/null || true
    echo /usr/lib/x86_64-linux-gnu /usr/lib/aarch64-linux-gnu /usr/lib64 /usr/lib /usr/local/lib
}

have_libclang() {
    for dir in $(libclang_dirs); do
        for file in "$dir"/libclang.so "$dir"/libclang-[0-9]*.so; do
            if [ -e "$file" ]; then return 0; fi
        done
    done
    return 1
}

apt_install() {
    if ! command -v apt-get >/dev/null 2>&1; then
        return 1
    fi
    sudo=""
    if [ "$(id -u)" -ne 0 ]; then sudo="sudo"; fi
    $sudo apt-get update -qq &&
        DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "$@" >/dev/null
}

if [ "${1:-}" = "--test" ]; then
    if command -v promtool >/dev/null 2>&1 && command -v prometheus >/dev/null 2>&1; then
        exit 0
    fi
    echo "deps: installing prometheus (promtool and the server, for the metrics tests)"
    # Without recommends: they add node-exporter, which would take port 9100.
    if ! apt_install --no-install-recommends prometheus; then
        echo "deps: could not install prometheus; the tests that need it will say they skipped" >&2
    fi
    exit 0
fi

if have_libclang; then exit 0; fi

echo "deps: libclang (libclang.so, needed by RocksDB's bindings) is missing; installing libclang-dev"
if ! command -v apt-get >/dev/null 2>&1; then
    echo "deps: no apt-get here: install libclang (LLVM's C library) and set LIBCLANG_PATH to its directory" >&2
    exit 1
fi
if ! apt_install libclang-dev; then
    echo "deps: installing libclang-dev failed" >&2
    exit 1
fi

if ! have_libclang; then
    echo "deps: libclang-dev is installed but no libclang.so was found; set LIBCLANG_PATH" >&2
    exit 1
fi
echo "deps: libclang installed"
