# Tests of `keel eps` (src/cli/cmd_eps.c). Included by CMakeLists.txt inside if(KEEL_BUILD_TESTS)
# when the CLI is built (include(tests/cli_eps_tests.cmake OPTIONAL)).

include(${CMAKE_CURRENT_LIST_DIR}/cli_expect.cmake) # keel_cli_expect: exit status and output

# keel_eps_cli_test(NAME RC "REGEX|REGEX..." ARG...): run `keel eps ARG...`, expect exit status
# RC and every regex in the output.
function(keel_eps_cli_test name rc regexes)
  keel_cli_expect(${name} ${CMAKE_CURRENT_SOURCE_DIR} ${rc} "${regexes}" eps ${ARGN})
endfunction()

# BERT's eps in fp16 (pytorch#41527): rounds to 0, not representable, amplification 1e6,
# suggestion 1e-4 (f16's smallest normal 6.1e-5 rounded up to a power of ten), with the reasons.
keel_eps_cli_test(cli_eps_fp16_1e12 0
  "eps 1e-12 stored in f16|stored as +0: it rounds to zero|representable +NO|1/sqrt\\(eps\\) = 1e\\+06|below 1e-12|suggested eps +1e-04|why: the smallest power of ten|6.1e-05<ANY>is the smallest normal|verdict: NOT representable in f16"
  --dtype fp16 --eps 1e-12)
# the same in bf16: float32's exponent range, so representable; bf16's suggestion is 1e-5 (its
# rounding-noise variance (2^-7)^2/12 = 5.1e-6 rounded up)
keel_eps_cli_test(cli_eps_bf16_1e12 0
  "eps 1e-12 stored in bf16|representable +yes|suggested eps +1e-05|5.09e-06<ANY>is the noise variance|verdict: representable in bf16; below the suggested 1e-05"
  --dtype bf16 --eps 1e-12)
# float32: anything positive is representable; 1e-5 is fine there
keel_eps_cli_test(cli_eps_fp32 0
  "eps 1e-05 stored in f32|representable +yes|1/sqrt\\(eps\\) = 316.2|suggested eps +1e-14|verdict: fine for f32"
  --dtype=f32 --eps=1e-5)
# f16 with 1e-5: stored as a subnormal (within 1%)
keel_eps_cli_test(cli_eps_fp16_subnormal 0
  "stored as +1.00135803e-05 \\(\\+0.14% off\\): a subnormal|representable +yes|verdict: representable in f16 but subnormal"
  --dtype f16 --eps 1e-5)
# without --dtype: all three, default eps 1e-5
keel_eps_cli_test(cli_eps_all_dtypes 0
  "eps 1e-05 stored in f32|eps 1e-05 stored in bf16|eps 1e-05 stored in f16")
# eps 0 is allowed and unsafe everywhere
keel_eps_cli_test(cli_eps_zero 0 "amplification +unbounded|verdict: eps 0 is unsafe" --dtype bf16 --eps 0)

# usage: --help exits 0; bad dtype, bad eps, unknown option, missing value exit 2
keel_eps_cli_test(cli_eps_help 0 "usage: keel eps" --help)
keel_eps_cli_test(cli_eps_bad_dtype 2 "unknown dtype 'i8'" --dtype i8 --eps 1e-5)
keel_eps_cli_test(cli_eps_negative 2 "--eps '-1' is not" --dtype f16 --eps -1)
keel_eps_cli_test(cli_eps_not_a_number 2 "--eps 'abc' is not" --eps abc)
keel_eps_cli_test(cli_eps_nan 2 "--eps 'nan' is not" --eps nan)
keel_eps_cli_test(cli_eps_unknown_option 2 "unknown argument '--frobnicate'" --frobnicate)
keel_eps_cli_test(cli_eps_missing_value 2 "--dtype needs a value" --dtype)
