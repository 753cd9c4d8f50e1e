# shellcheck shell=sh
# shellcheck disable=SC2154,SC2034 # py, cc, root come from the caller; dnnl3_* go back to it
# onednn3.sh - oneDNN 3.2 from PyPI for the peer benchmarks, sourced by run.sh and
# interleaved.sh (not run on its own). The caller sets py (the Python interpreter), cc (the C
# compiler) and a log function (a line on stderr).
#
# dnnl3_setup: finds the wheels onednn-cpu-gomp + onednn-devel-cpu-gomp 2023.2.0 (oneDNN 3.2 on
# OpenMP) under a Python prefix, installs them with pip when missing (as root, else --user), and
# sets dnnl3_prefix, or dnnl3_missing (why not) and returns 1.
# dnnl3_build OUT CFLAGS-AND-SOURCES...: compiles a program with src/cli/bench_time.c against them
# (headers, libdnnl.so.3 with an rpath to it, -fopenmp, -lm), logs the libraries it loads, and
# returns 1 if it fails.

# the wheels put include/oneapi/dnnl/ and lib/libdnnl.so.3 under a Python prefix (sys.prefix, or
# the user base / the scheme's data path for --user and Debian's /usr/local)
ONEDNN3_PIP="onednn-cpu-gomp==2023.2.0 onednn-devel-cpu-gomp==2023.2.0"
find_dnnl3() {
    for p in $("$py" -c 'import site, sys, sysconfig; print(sys.prefix, sysconfig.get_path("data"), site.USER_BASE)' 2>/dev/null); do
        if [ -f "$p/lib/libdnnl.so.3" ] &&
            grep -q 'define DNNL_VERSION_MAJOR 3' "$p/include/oneapi/dnnl/dnnl_version.h" 2>/dev/null; then
            echo "$p"
            return 0
        fi
    done
    return 1
}

dnnl3_setup() {
    dnnl3_missing="" dnnl3_prefix=""
    if ! command -v "$py" >/dev/null 2>&1; then
        dnnl3_missing="$py not found (the oneDNN 3.x wheels are installed with pip)"
        return 1
    fi
    dnnl3_prefix=$(find_dnnl3) && return 0
    log "pip install $ONEDNN3_PIP"
    if [ "$(id -u)" = 0 ]; then user_flag=""; else user_flag="--user"; fi
    # shellcheck disable=SC2086
    "$py" -m pip install $user_flag $ONEDNN3_PIP >&2 || log "pip install of the oneDNN 3.x wheels failed"
    dnnl3_prefix=$(find_dnnl3) && return 0
    dnnl3_missing="the oneDNN 3.x wheels ($ONEDNN3_PIP) did not install (no include/oneapi/dnnl and lib/libdnnl.so.3 under the Python prefix)"
    return 1
}

dnnl3_build() {
    out=$1
    shift
    mkdir -p "$(dirname "$out")"
    log "building $out against $dnnl3_prefix"
    # the wheels' libdnnl.so.3 links the system's libgomp.so.1; -fopenmp gives the program the same
    # src/cli/bench_time.c: the clock and the median of keel's own benchmarks
    "$cc" -O2 -std=c11 -fopenmp -I"$dnnl3_prefix/include" -I"$root/src/cli" "$@" \
        "$root/src/cli/bench_time.c" -o "$out" \
        -L"$dnnl3_prefix/lib" -l:libdnnl.so.3 -Wl,-rpath,"$dnnl3_prefix/lib" -lm >&2 || return 1
    if command -v ldd >/dev/null 2>&1; then
        log "oneDNN 3.x: $(ldd "$out" | grep -o 'lib\(dnnl\|gomp\|iomp5\|tbb\)[^ ]* => [^ ]*' | sort -u | tr '\n' ' ')"
    fi
}
