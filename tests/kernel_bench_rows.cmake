# The ctest kernel_bench_rows (registered in CMakeLists.txt, run as `cmake -P` with
# -DBENCH=<keel_kernel_bench> -DKERNELS_H=<src/kernels/kernels.h>): keel_kernel_bench has a row
# for EVERY kernel of the kernel list. The names are read from KEEL_KERNEL_LIST in kernels.h
# itself (not from the program), compared with the program's --list, and a tiny run
# (--reps 1 --shape 8x16 --ms 1) must exit 0 and print exactly one table row "<name> 8x16 ..."
# for each of them. Times are never checked.
if(NOT BENCH OR NOT KERNELS_H)
  message(FATAL_ERROR "usage: cmake -DBENCH=keel_kernel_bench -DKERNELS_H=kernels.h -P ${CMAKE_CURRENT_LIST_FILE}")
endif()

# The entries X(op, neon) of the list: from "#define KEEL_KERNEL_LIST(X)" to the first blank line.
file(READ ${KERNELS_H} _h)
string(FIND "${_h}" "#define KEEL_KERNEL_LIST(X)" _at)
if(_at LESS 0)
  message(FATAL_ERROR "${KERNELS_H}: no #define KEEL_KERNEL_LIST(X)")
endif()
string(SUBSTRING "${_h}" ${_at} -1 _list)
string(FIND "${_list}" "\n\n" _end)
string(SUBSTRING "${_list}" 0 ${_end} _list)
string(REGEX MATCHALL "X\\(([a-z0-9_]+), *[a-z0-9_]+\\)" _entries "${_list}")
set(_names "")
foreach(_e IN LISTS _entries)
  string(REGEX REPLACE "X\\(([a-z0-9_]+),.*" "\\1" _n "${_e}")
  list(APPEND _names ${_n})
endforeach()
list(LENGTH _names _count)
if(_count EQUAL 0)
  message(FATAL_ERROR "${KERNELS_H}: no X(op, neon) entry found in KEEL_KERNEL_LIST")
endif()

# The program's own list: the same names in the same order.
execute_process(COMMAND ${BENCH} --list RESULT_VARIABLE _rc OUTPUT_VARIABLE _out ERROR_VARIABLE _err)
if(NOT _rc STREQUAL "0")
  message(FATAL_ERROR "keel_kernel_bench --list: exit status '${_rc}'\n${_out}${_err}")
endif()
string(STRIP "${_out}" _out)
string(REPLACE "\n" ";" _listed "${_out}")
if(NOT "${_listed}" STREQUAL "${_names}")
  message(FATAL_ERROR "keel_kernel_bench --list gives\n  ${_listed}\nkernels.h lists\n  ${_names}")
endif()

# A tiny run: a row for every kernel, exit status 0.
execute_process(COMMAND ${BENCH} --reps 1 --shape 8x16 --ms 1
                RESULT_VARIABLE _rc OUTPUT_VARIABLE _out ERROR_VARIABLE _err)
message("${_out}${_err}")
if(NOT _rc STREQUAL "0")
  message(FATAL_ERROR "keel_kernel_bench --reps 1 --shape 8x16: exit status '${_rc}'")
endif()
set(_missing "")
foreach(_n IN LISTS _names)
  string(REGEX MATCHALL "(^|\n)${_n} +8x16 [^\n]*" _rows "${_out}")
  list(LENGTH _rows _nrows)
  if(NOT _nrows EQUAL 1)
    list(APPEND _missing "${_n} (${_nrows} rows)")
  endif()
endforeach()
if(_missing)
  message(FATAL_ERROR "keel_kernel_bench: not exactly one row for: ${_missing}")
endif()
message("keel_kernel_bench: a row for each of the ${_count} kernels of the list")
