# keel_cli_expect(NAME WORKDIR RC "REGEX|REGEX..." ARG...): a test that runs `keel ARG...` in
# WORKDIR and checks BOTH its exit status (exactly RC: a crash is never it) and its output (the
# standard output and error together must match every regex), which neither WILL_FAIL (any
# non-zero status, a crash included, would pass) nor PASS_REGULAR_EXPRESSION (ignores the status)
# does alone. The regexes are separated by '|', so they cannot use '|' themselves; <ANY> in them
# stands for any characters within one line, so that no newline travels on the command line.
# The command line tests (cli_tests.cmake, cli_eps_tests.cmake, cli_input_tests.cmake) all go
# through it.
#
# This file is also the script (cmake -P) each such test runs, with KEEL_CLI_CMD (the command,
# arguments separated by '|'), KEEL_CLI_EXPECT_RC and KEEL_CLI_EXPECT_REGEX.
if(CMAKE_SCRIPT_MODE_FILE AND DEFINED KEEL_CLI_EXPECT_RC)
  string(REPLACE "|" ";" _cmd "${KEEL_CLI_CMD}")
  execute_process(COMMAND ${_cmd} RESULT_VARIABLE _rc OUTPUT_VARIABLE _out ERROR_VARIABLE _err)
  message("${_out}${_err}")
  if(NOT "${_rc}" STREQUAL "${KEEL_CLI_EXPECT_RC}")
    message(FATAL_ERROR "exit status '${_rc}', expected ${KEEL_CLI_EXPECT_RC}")
  endif()
  string(REPLACE "<ANY>" "[^\n]*" _regexes "${KEEL_CLI_EXPECT_REGEX}")
  string(REPLACE "|" ";" _regexes "${_regexes}")
  foreach(_re IN LISTS _regexes)
    if(NOT "${_out}${_err}" MATCHES "${_re}")
      message(FATAL_ERROR "the output does not match '${_re}'")
    endif()
  endforeach()
  return()
endif()

set(_keel_cli_expect_script ${CMAKE_CURRENT_LIST_FILE})

function(keel_cli_expect name workdir rc regexes)
  set(_cmd "$<TARGET_FILE:keel>")
  foreach(_a IN LISTS ARGN)
    string(APPEND _cmd "|${_a}")
  endforeach()
  add_test(NAME ${name}
    COMMAND ${CMAKE_COMMAND}
      "-DKEEL_CLI_CMD=${_cmd}"
      "-DKEEL_CLI_EXPECT_RC=${rc}"
      "-DKEEL_CLI_EXPECT_REGEX=${regexes}"
      -P ${_keel_cli_expect_script}
    WORKING_DIRECTORY ${workdir})
endfunction()
