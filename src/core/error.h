/* Errors are values: every public function returns a keel_status and, on failure, leaves a
 * message naming the argument and its bad value in a thread-local buffer (keel_last_error). */
#ifndef KEEL_CORE_ERROR_H
#define KEEL_CORE_ERROR_H

#include "keel.h"

#if defined(__GNUC__)
#define KEEL_PRINTF(a, b) __attribute__((format(printf, a, b)))
#else
#define KEEL_PRINTF(a, b)
#endif

/* Records the message and returns status, so a check reads: return keel_fail(KEEL_EINVAL, ...). */
keel_status keel_fail(keel_status status, const char *fmt, ...) KEEL_PRINTF(2, 3);
/* Clears the message at the start of a successful call path. */
void keel_clear_error(void);

#endif
