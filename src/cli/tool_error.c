#include "tool_error.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

static _Thread_local char last_error[TOOL_ERROR_CAP];

keel_status tool_fail(keel_status status, const char *fmt, ...)
{
    char msg[TOOL_ERROR_CAP];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap); /* into a copy: an argument may be last_error itself */
    va_end(ap);
    memcpy(last_error, msg, sizeof msg);
    return status;
}

const char *tool_last_error(void) { return last_error; }

void tool_clear_error(void) { last_error[0] = '\0'; }
