# The fuzz targets (tests/fuzz, docs/reliability.md "Fuzzing"), included by the top-level
# CMakeLists.txt after the library, the command line and train/ are defined.
#
# Every build: each target linked with replay_main.c as <target>_replay, and a ctest fuzz_<target>
# that runs it once over tests/fuzz/corpus/<target>/ (in the sanitizer build of make test-asan
# and make test-fuzz, every corpus file under ASan + UBSan).
# With -DKEEL_FUZZ=ON (clang only; make fuzz, which also puts -fsanitize=fuzzer-no-link in
# CMAKE_C_FLAGS so that the library is instrumented for libFuzzer's coverage guidance), each
# target is also linked with -fsanitize=fuzzer as <target>_fuzzer.
if(NOT KEEL_BUILD_TESTS)
  return()
endif()
option(KEEL_FUZZ "Also link the fuzz targets with libFuzzer (clang)" OFF)

set(KEEL_FUZZ_DIR ${CMAKE_CURRENT_SOURCE_DIR}/tests/fuzz)
set(KEEL_FUZZ_TARGETS fuzz_api fuzz_baseline)
if(TARGET keel_tool)
  list(APPEND KEEL_FUZZ_TARGETS fuzz_onnx_pb)
  if(TARGET keel_train)
    list(APPEND KEEL_FUZZ_TARGETS fuzz_checkpoint fuzz_cli_args)
  endif()
endif()

if(KEEL_FUZZ)
  # The kernels (src/kernels) are built without ASan, UBSan, coverage or debug information in the
  # libFuzzer build: clang took more than 20 minutes a file at -O1 -g with ASan on this 2-core
  # machine (the AVX2/AVX-512 intrinsics inline into huge functions). Their memory errors are the
  # replay's to catch (the gcc sanitizer build instruments them: make test-asan, test-fuzz) and
  # fuzz_api's guard bytes catch any write outside an output; libFuzzer's guidance covers the
  # rest of the library (validation, staging, threads), the command line and the loaders.
  file(GLOB KEEL_FUZZ_PLAIN CONFIGURE_DEPENDS ${CMAKE_CURRENT_SOURCE_DIR}/src/kernels/*.c)
  set_property(SOURCE ${KEEL_FUZZ_PLAIN} APPEND PROPERTY COMPILE_OPTIONS -fno-sanitize=all -g0)
endif()

foreach(t ${KEEL_FUZZ_TARGETS})
  if(NOT EXISTS ${KEEL_FUZZ_DIR}/${t}.c)
    continue()
  endif()
  set(variants ${t}_replay)
  if(KEEL_FUZZ)
    list(APPEND variants ${t}_fuzzer)
  endif()
  foreach(v ${variants})
    if(v MATCHES "_replay$")
      add_executable(${v} ${KEEL_FUZZ_DIR}/${t}.c ${KEEL_FUZZ_DIR}/replay_main.c)
    else()
      add_executable(${v} ${KEEL_FUZZ_DIR}/${t}.c)
      target_link_options(${v} PRIVATE -fsanitize=fuzzer)
    endif()
    target_include_directories(${v} PRIVATE include src src/core src/cli train monitor_cli ${KEEL_FUZZ_DIR})
    target_compile_options(${v} PRIVATE ${KEEL_WARNINGS})
    target_link_libraries(${v} PRIVATE keel_static m Threads::Threads)
    if(t STREQUAL "fuzz_onnx_pb")
      target_link_libraries(${v} PRIVATE keel_tool)
    elseif(t STREQUAL "fuzz_checkpoint" OR t STREQUAL "fuzz_cli_args")
      target_link_libraries(${v} PRIVATE keel_tool keel_train keel_monitor_cli)
    endif()
  endforeach()
  add_test(NAME fuzz_${t} COMMAND ${t}_replay ${KEEL_FUZZ_DIR}/corpus/${t}
           WORKING_DIRECTORY ${CMAKE_CURRENT_BINARY_DIR})
  set_tests_properties(fuzz_${t} PROPERTIES TIMEOUT 300 LABELS fuzz)
endforeach()
