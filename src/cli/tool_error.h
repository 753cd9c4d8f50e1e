/*
 * tool_error.h - the error message of keel's tools (the keel command, train/, monitor_cli/).
 *
 * The tools report errors the way the library does: a function returns a keel_status and the
 * message, naming what was wrong and the value, is kept per thread. The library's own message
 * (keel_last_error) stays the library's; a tool's message is set here and read with
 * tool_last_error(). A tool that passes on a library error copies keel_last_error() into its
 * message with tool_fail.
 */
#ifndef KEEL_CLI_TOOL_ERROR_H
#define KEEL_CLI_TOOL_ERROR_H

#include "keel.h"

/* Bytes of a message, with its terminating NUL; a longer one is cut. */
#define TOOL_ERROR_CAP 1200

#if defined(__GNUC__)
#define TOOL_PRINTF(a, b) __attribute__((format(printf, a, b)))
#else
#define TOOL_PRINTF(a, b)
#endif

/* Format the calling thread's message and return status. fmt may use tool_last_error() as an
 * argument (e.g. to prefix the message already there): it is formatted from a copy. */
keel_status tool_fail(keel_status status, const char *fmt, ...) TOOL_PRINTF(2, 3);

/* The calling thread's last message; "" if none since tool_clear_error. Never NULL. */
const char *tool_last_error(void);

void tool_clear_error(void);

#endif
