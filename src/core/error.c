#include "error.h"

#include <stdarg.h>
#include <stdio.h>

static _Thread_local char last_error[256];

keel_status keel_fail(keel_status status, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(last_error, sizeof last_error, fmt, ap);
    va_end(ap);
    return status;
}

void keel_clear_error(void) { last_error[0] = '\0'; }

const char *keel_last_error(void) { return last_error; }

const char *keel_status_str(keel_status status)
{
    switch (status) {
    case KEEL_OK: return "ok";
    case KEEL_ENULL: return "a required pointer is NULL";
    case KEEL_EINVAL: return "invalid argument";
    case KEEL_EUNSUPPORTED: return "not supported";
    case KEEL_ENOMEM: return "out of memory";
    case KEEL_EOVERFLOW: return "size overflows size_t";
    case KEEL_EISA: return "instruction set unknown or not available on this CPU";
    case KEEL_EIO: return "input/output error";
    case KEEL_EFORMAT: return "malformed, truncated or foreign data";
    case KEEL_ETHREAD: return "could not start a worker thread";
    case KEEL_EBUSY: return "the context is in use by another thread";
    }
    return "unknown status";
}

int keel_version(void) { return KEEL_VERSION_NUMBER; }

#define KEEL_STR2(x) #x
#define KEEL_STR(x) KEEL_STR2(x)
const char *keel_version_string(void)
{
    return KEEL_STR(KEEL_VERSION_MAJOR) "." KEEL_STR(KEEL_VERSION_MINOR) "." KEEL_STR(KEEL_VERSION_PATCH);
}
