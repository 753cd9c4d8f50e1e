# Tests of the keel commands' number parsing and output failures (issue 23, findings 1, 4, 5):
# every bad number is refused by the one checked parser (src/cli/numarg.c) with exit status 2
# and a message naming the command, the option and the value. Included by tests/cli_tests.cmake.

include(${CMAKE_CURRENT_LIST_DIR}/cli_expect.cmake) # keel_cli_expect: exit status and output

# keel_input_test(NAME RC "REGEX|..." ARG...): run `keel ARG...` in the build tree (some write
# files), expect exit status RC and every regex in the output.
function(keel_input_test name rc regexes)
  keel_cli_expect(${name} ${CMAKE_CURRENT_BINARY_DIR} ${rc} "${regexes}" ${ARGN})
endfunction()

# (1) keel bench: a negative, huge or non-integer size never reaches the allocator (they were a
# heap overflow: "-1" read as 2^64 - 1, "1e3" as 1); nor does a product beyond 2^36 elements.
keel_input_test(cli_input_bench_rows_negative 2 "keel bench: --rows '-1' is not an integer in \\[1, 1073741824\\]"
  bench --rows -1 --dim 16)
keel_input_test(cli_input_bench_dim_negative 2 "keel bench: --dim '-5' is not an integer"
  bench --rows 16 --dim -5)
keel_input_test(cli_input_bench_rows_overflow 2 "keel bench: --rows '99999999999999999999' is not an integer"
  bench --rows 99999999999999999999 --dim 16)
keel_input_test(cli_input_bench_rows_exponent 2 "keel bench: --rows '1e3' is not an integer"
  bench --rows 1e3 --dim 16)
keel_input_test(cli_input_bench_too_large 2 "keel bench: --rows 1000000000 x --dim 1000000000 is 1000000000000000000 elements, more than 2\\^36"
  bench --rows 1000000000 --dim 1000000000)
keel_input_test(cli_input_bench_threads 2 "keel bench: --threads 'abc' is not an integer in \\[0, 1024\\]"
  bench --rows 16 --dim 16 --threads abc)
keel_input_test(cli_input_bench_reps 2 "keel bench: --reps '7x' is not an integer" bench --rows 16 --dim 16 --reps 7x)
keel_input_test(cli_input_bench_no_value 2 "keel bench: --dim needs a value" bench --rows 16 --dim)

# (4) keel threads, sample, monitor, study, train, check: 'abc', -1, 2^31, trailing characters
# and values out of range are errors (they meant 0, all cores or the default).
keel_input_test(cli_input_threads_abc 2 "keel threads: --threads 'abc' is not an integer" threads --threads abc)
keel_input_test(cli_input_threads_negative 2 "keel threads: --threads '-1' is not an integer" threads --threads -1)
keel_input_test(cli_input_threads_overflow 2 "keel threads: --threads '2147483648' is not an integer"
  threads --threads 2147483648)
keel_input_test(cli_input_sample_tokens 2 "keel sample: --tokens 'abc' is not an integer"
  sample --checkpoint none.ckpt --tokens abc)
keel_input_test(cli_input_sample_temperature 2 "keel sample: --temperature '0.8x' is not a number in \\(0, "
  sample --checkpoint none.ckpt --temperature 0.8x)
keel_input_test(cli_input_sample_seed 2 "keel sample: --seed '-1' is not an integer"
  sample --checkpoint none.ckpt --seed -1)
keel_input_test(cli_input_sample_threads 2 "keel sample: --threads '0' is not an integer in \\[1, 1024\\]"
  sample --checkpoint none.ckpt --threads 0)
keel_input_test(cli_input_monitor_bins 2 "keel monitor calibrate: --bins 'abc' is not an integer in \\[2, 65536\\]"
  monitor calibrate --checkpoint none.ckpt --text none.txt -o none.kmon --bins abc)
keel_input_test(cli_input_monitor_window 2 "keel monitor score: --window '99999999999' is not an integer"
  monitor score --checkpoint none.ckpt --baseline none.kmon --text none.txt --window 99999999999)
keel_input_test(cli_input_monitor_threads 2 "keel monitor score: --threads '-1' is not an integer"
  monitor score --checkpoint none.ckpt --baseline none.kmon --text none.txt --threads -1)
keel_input_test(cli_input_monitor_false_alarm 2 "keel monitor calibrate: --false-alarm 'abc' is not a number in \\(0, 1\\)"
  monitor calibrate --checkpoint none.ckpt --text none.txt -o none.kmon --false-alarm abc)
keel_input_test(cli_input_monitor_eval_threads 2 "keel monitor eval: --threads 'x' is not an integer"
  monitor eval --checkpoint none.ckpt --threads x)
# monitor cost and faults read their options from a table (keel_opts_parse, numarg.h): a bad
# value, an unknown option and a missing value each refused as before
keel_input_test(cli_input_monitor_cost_tokens 2 "keel monitor cost: --tokens '1' is not an integer in \\[2, 67108864\\]"
  monitor cost --checkpoint none.ckpt --text none.txt --tokens 1)
keel_input_test(cli_input_monitor_cost_unknown 2 "keel monitor cost: unknown option '--bins'|usage: keel monitor cost"
  monitor cost --checkpoint none.ckpt --text none.txt --bins 4)
keel_input_test(cli_input_monitor_faults_false_alarm 2 "keel monitor faults: --false-alarm '1' is not a number in \\(0, 1\\)"
  monitor faults --checkpoint none.ckpt --text none.txt --false-alarm 1)
keel_input_test(cli_input_monitor_faults_window 2 "keel monitor faults: --window '8' is not an integer in \\[16, 1048576\\]"
  monitor faults --checkpoint none.ckpt --text none.txt --window 8)
keel_input_test(cli_input_monitor_faults_no_value 2 "keel monitor faults: unknown option or missing value: '--tokens'"
  monitor faults --checkpoint none.ckpt --text none.txt --tokens)
keel_input_test(cli_input_study_steps 2 "keel study: --steps 'abc' is not an integer"
  study --data none.txt --steps abc)
# keel study's modes (issue 25): stages A and B, a budget of at least a minute, --quick alone;
# keel train's --eval-seed through the same parser
keel_input_test(cli_input_study_stage 2 "keel study: --stage 'C': use A \\(the grid\\) or B \\(the seeds\\)"
  study --data none.txt --stage C)
keel_input_test(cli_input_study_budget 2 "keel study: --budget-min '0' is not an integer in \\[1, 100000\\]"
  study --data none.txt --budget-min 0)
keel_input_test(cli_input_study_quick_stage 2 "keel study: --quick does not take --stage"
  study --data none.txt --quick --stage A)
keel_input_test(cli_input_train_eval_seed 2 "keel train: --eval-seed 'x' is not an integer"
  train --data none.txt --eval-seed x)
keel_input_test(cli_input_train_threads 2 "keel train: --threads '2147483648' is not an integer in \\[1, 1024\\]"
  train --data none.txt --threads 2147483648)
keel_input_test(cli_input_train_lr_underflow 2 "keel train: --lr '1e-50' is not a number in \\(0, "
  train --data none.txt --lr 1e-50)
keel_input_test(cli_input_check_threads 2 "keel check: --threads '1025' is not an integer in \\[0, 1024\\]"
  check --threads 1025)
keel_input_test(cli_input_eps_message 2 "keel eps: --eps 'nan' is not a number" eps --eps nan)
keel_input_test(cli_input_onnx_tolerance 2 "keel onnx-test: --atol '-1' is not a number"
  onnx-test --atol -1 none)

# (5) keel monitor score --plot without --csv (the data the plot draws) is a usage error; the
# output failures with a real model are tested by monitor_cli/test_monitor_cli.c.
keel_input_test(cli_input_monitor_plot_without_csv 2 "keel monitor score: --plot needs --csv FILE"
  monitor score --checkpoint none.ckpt --baseline none.kmon --text none.txt --plot none.png)
# ... and a --plot or --csv name with a quote in it, which would end gnuplot's quoted argument and
# run the rest as a shell command, is refused (exit 2) before anything runs.
keel_input_test(cli_input_monitor_plot_quote 2 "keel monitor score: --plot and --csv names go to gnuplot's command line"
  monitor score --checkpoint none.ckpt --baseline none.kmon --text none.txt --csv "x' $(touch injected) '.csv"
  --plot none.png)
