# Tests of the keel command line. Included by CMakeLists.txt (inside if(KEEL_BUILD_TESTS), when
# the CLI is built); each part below is one self-contained, commented block.

# ==== keel onnx-test: ONNX backend node tests ==================================================
#
include(${CMAKE_CURRENT_LIST_DIR}/cli_expect.cmake) # keel_cli_expect: exit status and output

# keel_onnx_test(NAME RC "REGEX|REGEX..." ARG...): run `keel onnx-test ARG...` in the source tree,
# expect exit status RC and every regex in the output.
function(keel_onnx_test name rc regexes)
  keel_cli_expect(${name} ${CMAKE_CURRENT_SOURCE_DIR} ${rc} "${regexes}" onnx-test ${ARGN})
endfunction()

set(_onnx ${CMAKE_CURRENT_SOURCE_DIR}/tests/data/onnx)
set(_onnx_bad ${CMAKE_CURRENT_SOURCE_DIR}/tests/data/onnx-bad)
file(GLOB _onnx_norm_dirs LIST_DIRECTORIES true
  ${_onnx}/test_layer_normalization_* ${_onnx}/test_rms_normalization_* ${_onnx}/test_batchnorm_*)
list(LENGTH _onnx_norm_dirs _onnx_n)
if(_onnx_n EQUAL 0)
  message(WARNING "no LayerNormalization/RMSNormalization/BatchNormalization folders in ${_onnx}: onnx_node_tests will fail")
endif()

# (1) Every LayerNormalization, RMSNormalization and BatchNormalization folder passes, and none
# is left out: the total must count all of them. Then again on the portable scalar kernels.
keel_onnx_test(onnx_node_tests 0 "total: ${_onnx_n} passed, 0 failed" ${_onnx_norm_dirs})
keel_onnx_test(onnx_node_tests_scalar 0 "total: ${_onnx_n} passed, 0 failed" ${_onnx_norm_dirs})
set_tests_properties(onnx_node_tests_scalar PROPERTIES ENVIRONMENT KEEL_ISA=scalar)

# (2) Folders that must FAIL, with the reason, and exit status 1.
keel_onnx_test(onnx_bad_truncated_pb 1
  "FAIL <ANY>truncated_pb: test_data_set_0: input_0.pb: <ANY>exceeds|total: 0 passed, 1 failed"
  ${_onnx_bad}/truncated_pb)
keel_onnx_test(onnx_bad_no_model 1
  "FAIL <ANY>no_model: model.onnx: cannot open|total: 0 passed, 1 failed"
  ${_onnx_bad}/no_model)
keel_onnx_test(onnx_bad_wire_type 1
  "FAIL <ANY>bad_wire_type: model.onnx: invalid wire type 7|total: 0 passed, 1 failed"
  ${_onnx_bad}/bad_wire_type)
# BatchNormalization (inference mode, NCHW: features = channels) runs through
# keel_batchnorm_fwd: both of its folders PASS, named as BatchNormalization (test (1) counts
# them too; this one fails by name if they ever stop being run).
keel_onnx_test(onnx_batchnorm 0
  "PASS <ANY>test_batchnorm_example: BatchNormalization, axis 1, epsilon 1e-05|PASS <ANY>test_batchnorm_epsilon: BatchNormalization, axis 1, epsilon 0.01|total: 2 passed, 0 failed"
  ${_onnx}/test_batchnorm_example ${_onnx}/test_batchnorm_epsilon)
# Wrong expected values (one value off by 1e-3 relative) in Y, in InvStdDev and in RMS Y.
keel_onnx_test(onnx_bad_values 1
  "FAIL <ANY>wrong_y: test_data_set_0: Y\\[7\\] = |FAIL <ANY>wrong_invstddev: test_data_set_0: InvStdDev\\[1\\] = |FAIL <ANY>wrong_rms_y: test_data_set_0: Y\\[3\\] = |total: 0 passed, 3 failed"
  ${_onnx_bad}/wrong_y ${_onnx_bad}/wrong_invstddev ${_onnx_bad}/wrong_rms_y)
# ... which pass once --atol allows it (the option is really used).
keel_onnx_test(onnx_atol_option 0 "total: 3 passed, 0 failed"
  --atol 1 ${_onnx_bad}/wrong_y ${_onnx_bad}/wrong_invstddev ${_onnx_bad}/wrong_rms_y)
# One bad folder among good ones: the good ones still PASS, the exit status is 1.
keel_onnx_test(onnx_bad_mixed 1
  "PASS <ANY>test_layer_normalization_4d_axis0: |FAIL <ANY>no_model: |PASS <ANY>test_rms_normalization_default_axis: |total: 2 passed, 1 failed"
  ${_onnx}/test_layer_normalization_4d_axis0 ${_onnx_bad}/no_model ${_onnx}/test_rms_normalization_default_axis)
# A folder that does not exist.
keel_onnx_test(onnx_bad_missing_dir 1 "FAIL <ANY>no_such_folder: |total: 0 passed, 1 failed"
  ${_onnx_bad}/no_such_folder)

# (3) Usage errors: exit status 2.
keel_onnx_test(onnx_usage_no_dir 2 "")
keel_onnx_test(onnx_usage_bad_rtol 2 "" --rtol abc ${_onnx}/test_layer_normalization_4d_axis0)
keel_onnx_test(onnx_usage_help 0 "usage: keel onnx-test" --help)
# ==== end of keel onnx-test ====================================================================

# ==== keel info, check, bench: the main job's commands ==========================================
# keel_cli_test(NAME RC "REGEX|..." ARG...): run `keel ARG...` in the source tree, expect exit
# status RC and every regex in the output.
function(keel_cli_test name rc regexes)
  keel_cli_expect(${name} ${CMAKE_CURRENT_SOURCE_DIR} ${rc} "${regexes}" ${ARGN})
endfunction()

keel_cli_test(cli_info 0 "keel [0-9]+[.][0-9]+[.][0-9]+|kernels: [a-z0-9]+ [(][0-9]+ in the kernel list[)]|  keel_f32_layernorm_fwd__[a-z0-9]+|  keel_f32_dyt_bwd__[a-z0-9]+|threads: [0-9]+" info)
# every op within its bound on every path the CPU has (exit 1 on any failure)
keel_cli_test(cli_check_all_isas 0 "PASS: every output within its bound" check --quick --all-isas)
set(_num "[0-9]+[.][0-9]+")
# us, GB/s, memcpy, stream, fraction of the copy floor; the own floor's GB/s, its stores (stream or
# plain) and the fraction of it
set(_vals "${_num} +${_num} +${_num} +${_num} +[0-9]+[.][0-9][0-9] +${_num} +[a-z]+ +[0-9]+[.][0-9][0-9]")
# The default (f32) rows, the block ops' included, each with its bytes (256 x 1024 float32
# elements: 1 MiB a tensor; LayerScale forward x, f -> h = 3.0, backward dh, f -> dx, df = 4.0,
# BatchNorm and DyT forward x -> y = 2.0, backward x, dy -> dx = 3.0) and numbers that parse.
keel_cli_test(cli_bench_small 0
  "layernorm fwd +256x1024 +2[.]0 +${_vals}|rmsnorm bwd +256x1024 +3[.]0 +${_vals}|add[+]ln fwd +256x1024 +4[.]0 +${_vals}|layerscale fwd +256x1024 +3[.]0 +${_vals}|layerscale bwd +256x1024 +4[.]0 +${_vals}|batchnorm fwd train +256x1024 +2[.]0 +${_vals}|batchnorm fwd infer +256x1024 +2[.]0 +${_vals}|batchnorm bwd train +256x1024 +3[.]0 +${_vals}|dyt fwd +256x1024 +2[.]0 +${_vals}|dyt bwd +256x1024 +3[.]0 +${_vals}"
  bench --rows 256 --dim 1024 --reps 3)
# --demo (make demo) stays short: the norms and the fused add+norm rows, not the other block ops.
keel_cli_test(cli_bench_demo_rows 0 "add[+]rms bwd +4096x1024 +64[.]0 +${_vals}" bench --demo --reps 3)
set_tests_properties(cli_bench_demo_rows PROPERTIES FAIL_REGULAR_EXPRESSION "layerscale|batchnorm|dyt")
# A plain keel bench runs the quick set (13 rows, said on stderr) with both floors' columns: the
# first and last rows there, none of the full table's other sizes or ops; --all is the full table.
keel_cli_test(cli_bench_quick 0
  "keel bench: 13 rows [(]the quick set|of copy +own GB/s +stores +of own|layerscale fwd +4096x16 +0[.]8 +${_vals}|layernorm bwd bf16 +4096x768 +18[.]0 +${_vals}|add[+]ln fwd +4096x1024 +64[.]0 +${_vals}|rmsnorm bwd +4096x4096 +192[.]0 +${_vals}"
  bench --reps 3)
set_tests_properties(cli_bench_quick PROPERTIES FAIL_REGULAR_EXPRESSION "x64 |256x1024|x8192|batchnorm|dyt|add, |post|fwd f16|>i8")
# --markdown: the own floor's three columns after the copy floor's (scripts/bench_combine.py reads
# them by position), the table in one piece (the progress line on stderr comes before it).
add_test(NAME cli_bench_markdown COMMAND $<TARGET_FILE:keel> bench --rows 64 --dim 256 --reps 3 --only "add+ln bwd" --markdown)
set(_md "[0-9]+[.][0-9]+ [|] ")
set_tests_properties(cli_bench_markdown PROPERTIES PASS_REGULAR_EXPRESSION
  "[|] fraction of copy floor [|] own floor GB/s [|] own floor stores [|] fraction of own floor [|]\n[|]---[|]---[|]---[|]---[|]---[|]---[|]---[|]---[|]---[|]---[|]---[|]\n[|] add[+]ln bwd [|] 64x256 [|] 0[.]2 [|] ${_md}${_md}${_md}${_md}[0-9]+[.][0-9][0-9] [|] ${_md}[a-z]+ [|] [0-9]+[.][0-9][0-9] [|]\n")
# A block op's call that fails fails the command (exit 1, the row and keel's message): BatchNorm
# training needs two rows or more.
keel_cli_test(cli_bench_block_fails 1 "" bench --rows 1 --dim 64 --reps 3)
add_test(NAME cli_bench_block_fails_message COMMAND $<TARGET_FILE:keel> bench --rows 1 --dim 64 --reps 3)
set_tests_properties(cli_bench_block_fails_message PROPERTIES PASS_REGULAR_EXPRESSION "batchnorm fwd train: keel_batchnorm_fwd: rows")
# --dtype: the low-precision rows appear, every value parses as a number, and the MiB column is
# the bytes the op must move in its dtypes (512 x 512 elements: bf16/f16 forward 2+2 bytes each
# = 1.0 MiB, backward 1.5; int8 output from f32 4+1 bytes = 1.25 MiB, + 4 bytes a row for the
# dynamic scale = 1.252; from bf16 2+1 = 0.75). Then a dtype it does not know: exit status 2.
keel_cli_test(cli_bench_dtype 0
  "layernorm fwd bf16 +512x512 +1[.]0 +${_vals}|layernorm bwd bf16 +512x512 +1[.]5 +${_vals}|rmsnorm fwd f16 +512x512 +1[.]0 +${_vals}|rmsnorm bwd f16 +512x512 +1[.]5 +${_vals}|layernorm fwd f32>i8 dyn +512x512 +1[.]3 +${_vals}|layernorm fwd f32>i8 static +512x512 +1[.]2 +${_vals}|rmsnorm fwd bf16>i8 dyn +512x512 +0[.]8 +${_vals}|rmsnorm fwd bf16>i8 static +512x512 +0[.]8 +${_vals}"
  bench --rows 512 --dim 512 --reps 3 --dtype bf16,f16,i8)
keel_cli_test(cli_bench_dtype_bad 2 "" bench --rows 64 --dim 64 --dtype bf16,bogus)
# --hot --norms (how scripts/bench.sh sets keel beside the peers): back-to-back calls, said in the
# header, and of the f32 rows only the four norms.
keel_cli_test(cli_bench_hot_norms 0
  "back-to-back calls [(]--hot[)]|layernorm fwd +256x256 +0[.]5 +${_vals}|rmsnorm bwd +256x256 +0[.]8 +${_vals}"
  bench --rows 256 --dim 256 --reps 3 --hot --norms)
set_tests_properties(cli_bench_hot_norms PROPERTIES FAIL_REGULAR_EXPRESSION "add[+]|layerscale|batchnorm|dyt")
# --only NAME, repeated: just those rows, in table order whatever the order given (a name with a
# comma and a space in it included); a name that is no row: exit status 2, the name and the rows
# there are.
keel_cli_test(cli_bench_only 0
  "add[+]ln fwd +256x256 +1[.]0 +${_vals}\nadd, ln fwd +256x256 +1[.]0 +${_vals}"
  bench --rows 256 --dim 256 --reps 3 --only "add, ln fwd" --only "add+ln fwd")
set_tests_properties(cli_bench_only PROPERTIES FAIL_REGULAR_EXPRESSION "layernorm|rmsnorm|add[+]rms|post|bwd|layerscale|batchnorm|dyt")
keel_cli_test(cli_bench_only_bad 2 "" bench --rows 64 --dim 64 --only "add+ln fwd" --only "add ln")
add_test(NAME cli_bench_only_bad_message COMMAND $<TARGET_FILE:keel> bench --rows 64 --dim 64 --only "add ln")
set_tests_properties(cli_bench_only_bad_message PROPERTIES PASS_REGULAR_EXPRESSION "--only 'add ln' names no row of this table; the rows are:\n  layernorm fwd\n")
# keel threads: the table of 1 thread against 2 at every size, and its conclusion for each op.
set(_num "[0-9]+[.][0-9]+")
keel_cli_test(cli_threads 0
  "ln fwd +2048 +${_num} +${_num} +${_num}x|ln bwd +1048576 +${_num} +${_num} +${_num}x|ln fwd: 2 threads <ANY>win|ln bwd: 2 threads <ANY>win"
  threads --threads 2)
keel_cli_test(cli_threads_bad 2 "" threads --bogus)
keel_cli_test(cli_unknown_command 2 "" no-such-command)
# A forced path that is unknown is an error, never a silent fallback.
add_test(NAME cli_isa_bogus COMMAND ${CMAKE_COMMAND} -E env KEEL_ISA=bogus $<TARGET_FILE:keel> info)
set_tests_properties(cli_isa_bogus PROPERTIES WILL_FAIL TRUE)
add_test(NAME cli_isa_bogus_message COMMAND ${CMAKE_COMMAND} -E env KEEL_ISA=bogus $<TARGET_FILE:keel> info)
set_tests_properties(cli_isa_bogus_message PROPERTIES PASS_REGULAR_EXPRESSION "KEEL_ISA=bogus: unknown path")
include(${CMAKE_CURRENT_LIST_DIR}/cli_eps_tests.cmake OPTIONAL)
# every command's number parsing, keel bench's sizes, monitor score's --plot (issue 23)
include(${CMAKE_CURRENT_LIST_DIR}/cli_input_tests.cmake)
# keel monitor: a truncated or foreign baseline is refused (exit 1) with a message naming the problem.
set(_mon_bad ${CMAKE_CURRENT_SOURCE_DIR}/tests/data/monitor-bad)
foreach(_bad truncated foreign)
  keel_cli_test(cli_monitor_${_bad}_status 1 "" monitor score --checkpoint none.ckpt
    --baseline ${_mon_bad}/${_bad}.kmon --text ${CMAKE_CURRENT_SOURCE_DIR}/data/README.md)
  add_test(NAME cli_monitor_${_bad}_message COMMAND $<TARGET_FILE:keel> monitor score --checkpoint none.ckpt
    --baseline ${_mon_bad}/${_bad}.kmon --text ${CMAKE_CURRENT_SOURCE_DIR}/data/README.md)
endforeach()
set_tests_properties(cli_monitor_truncated_message PROPERTIES PASS_REGULAR_EXPRESSION "truncated [(]40 bytes")
set_tests_properties(cli_monitor_foreign_message PROPERTIES PASS_REGULAR_EXPRESSION "not a keel monitor baseline")
# ==== end of keel info, check, bench ===========================================================
