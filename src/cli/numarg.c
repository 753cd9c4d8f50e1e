/* The checked number parser of the command-line options and the table-driven option loop
 * (numarg.h). */
#include "numarg.h"

#include <ctype.h>
#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void say(const char *cmd, const char *opt, const char *v, const char *what)
{
    if (v)
        fprintf(stderr, "keel%s%s: %s '%s' is not %s\n", cmd ? " " : "", cmd ? cmd : "", opt, v, what);
    else
        fprintf(stderr, "keel%s%s: %s needs a value (%s)\n", cmd ? " " : "", cmd ? cmd : "", opt, what);
}

/* The magnitude of an integer written in decimal or 0x hex, the whole string; *neg for a
 * leading '-'. 0, or -1 when it is no integer or does not fit 64 bits. */
static int parse_magnitude(const char *v, int *neg, uint64_t *mag)
{
    if (!v)
        return -1;
    *neg = *v == '-';
    const char *p = v + (*v == '-' || *v == '+');
    int base = 10;
    if (p[0] == '0' && (p[1] == 'x' || p[1] == 'X')) {
        base = 16;
        p += 2;
    }
    if (!*p)
        return -1;
    /* every character a digit of the base: strtoull would skip spaces, take a sign of its own
     * and, in base 16, a second 0x ("0x0x10" was 16; found by tests/fuzz/fuzz_cli_args) */
    for (const char *q = p; *q; q++)
        if (base == 16 ? !isxdigit((unsigned char)*q) : !isdigit((unsigned char)*q))
            return -1;
    char *end;
    errno = 0;
    unsigned long long x = strtoull(p, &end, base);
    if (errno || *end)
        return -1;
    *mag = (uint64_t)x;
    return 0;
}

int keel_arg_u64(const char *cmd, const char *opt, const char *v, uint64_t lo, uint64_t hi, uint64_t *out)
{
    int neg;
    uint64_t mag;
    if (parse_magnitude(v, &neg, &mag) || (neg && mag != 0) || mag < lo || mag > hi) {
        char what[96];
        snprintf(what, sizeof what, "an integer in [%" PRIu64 ", %" PRIu64 "]", lo, hi);
        say(cmd, opt, v, what);
        return -1;
    }
    *out = mag;
    return 0;
}

int keel_arg_int(const char *cmd, const char *opt, const char *v, int lo, int hi, int *out)
{
    int neg;
    uint64_t mag;
    int ok = parse_magnitude(v, &neg, &mag) == 0 && mag <= (uint64_t)INT64_MAX;
    int64_t x = ok ? (neg ? -(int64_t)mag : (int64_t)mag) : 0;
    if (!ok || x < lo || x > hi) {
        char what[96];
        snprintf(what, sizeof what, "an integer in [%d, %d]", lo, hi);
        say(cmd, opt, v, what);
        return -1;
    }
    *out = (int)x;
    return 0;
}

static int in_range(double x, double lo, double hi, int open)
{
    const int lo_ok = open & KEEL_ARG_OPEN_LO ? x > lo : x >= lo;
    const int hi_ok = open & KEEL_ARG_OPEN_HI ? x < hi : x <= hi;
    return isfinite(x) && lo_ok && hi_ok;
}

static void say_real(const char *cmd, const char *opt, const char *v, double lo, double hi, int open)
{
    char what[96];
    snprintf(what, sizeof what, "a number in %c%g, %g%c", open & KEEL_ARG_OPEN_LO ? '(' : '[', lo, hi,
             open & KEEL_ARG_OPEN_HI ? ')' : ']');
    say(cmd, opt, v, what);
}

int keel_arg_double(const char *cmd, const char *opt, const char *v, double lo, double hi, int open,
                    double *out)
{
    char *end = NULL;
    double x = NAN;
    if (v && *v && !isspace((unsigned char)*v)) {
        errno = 0;
        x = strtod(v, &end);
        if (*end || (errno == ERANGE && fabs(x) > 1.0)) /* an underflow to 0 or a subnormal is a number */
            x = NAN;
    }
    if (!in_range(x, lo, hi, open)) {
        say_real(cmd, opt, v, lo, hi, open);
        return -1;
    }
    *out = x;
    return 0;
}

int keel_arg_float(const char *cmd, const char *opt, const char *v, double lo, double hi, int open, float *out)
{
    double x;
    if (keel_arg_double(cmd, opt, v, lo, hi, open, &x))
        return -1;
    const float f = (float)x;
    if (!in_range((double)f, lo, hi, open)) { /* 1e-50 > 0, but as a float it is 0 */
        say_real(cmd, opt, v, lo, hi, open);
        return -1;
    }
    *out = f;
    return 0;
}

static const keel_opt *find_opt(const keel_opt *opts, size_t n, const char *name)
{
    for (size_t k = 0; k < n; k++)
        if (!strcmp(opts[k].name, name))
            return &opts[k];
    return NULL;
}

int keel_opts_parse(const char *cmd, int argc, char **argv, const keel_opt *opts, size_t n,
                    void (*usage)(FILE *to))
{
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            if (usage)
                usage(stdout);
            return KEEL_OPTS_HELP;
        }
        const keel_opt *o = find_opt(opts, n, a);
        if (o && o->kind == KEEL_OPT_FLAG) {
            *(int *)o->out = 1;
            continue;
        }
        /* every other option takes the next argument, whatever it looks like (a value may start
         * with '-'); the last argument cannot be an option with its value */
        if (!o || i + 1 >= argc) {
            if (i + 1 >= argc)
                fprintf(stderr, "keel %s: unknown option or missing value: '%s'\n\n", cmd, a);
            else
                fprintf(stderr, "keel %s: unknown option '%s'\n\n", cmd, a);
            if (usage)
                usage(stderr);
            return KEEL_OPTS_USAGE;
        }
        const char *v = argv[++i];
        int bad = 0;
        switch (o->kind) {
        case KEEL_OPT_INT:
            bad = keel_arg_int(cmd, a, v, (int)o->lo, (int)o->hi, (int *)o->out);
            break;
        case KEEL_OPT_DOUBLE:
            bad = keel_arg_double(cmd, a, v, o->lo, o->hi, o->open, (double *)o->out);
            break;
        case KEEL_OPT_STRING:
            *(const char **)o->out = v;
            break;
        case KEEL_OPT_FLAG: /* taken above */
            break;
        }
        if (bad)
            return KEEL_OPTS_USAGE;
    }
    return KEEL_OPTS_OK;
}
