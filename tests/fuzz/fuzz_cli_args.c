/* Fuzz target: the command line's argument parsing (src/cli/numarg.c, train/options.c and the
 * option loops of the commands). docs/reliability.md, "Fuzzing".
 *
 * The input is a byte selecting what runs, then arguments separated by NUL bytes (at most 24).
 *  - numarg: every argument through keel_arg_int, keel_arg_u64, keel_arg_double and
 *    keel_arg_float with ranges from a table. The integer parsers are compared with a reference
 *    written from numarg.h's contract (optional sign, decimal or 0x hex digits and nothing
 *    else, within 64 bits and the range); the real ones must return a finite value within the
 *    range (open ends kept) that strtod gives for the whole string, and leave *out untouched
 *    on a refusal.
 *  - tr_parse_option (`keel train`'s options) over the arguments: it returns -1, 0 or 1,
 *    consumes at most the one value it names, and what it accepts is within the option's range.
 *  - a command (bench, threads, eps, onnx-test, train, sample, monitor calibrate, monitor score)
 *    run in this process on the arguments followed by two unknown options, which end every
 *    option loop with a usage error before any work (two: an option may take the first as its
 *    value). The exit status must be 2, or 0 when --help came first, or 1 for onnx-test after
 *    "--" (its folders then do not exist). */
#include "fuzz_common.h" /* first: it sets _POSIX_C_SOURCE */

#include <ctype.h>
#include <float.h>
#include <limits.h>
#include <math.h>

#include "commands.h"
#include "commands_monitor.h"
#include "commands_train.h"
#include "model.h"
#include "numarg.h"
#include "options.h"
#include "trainer.h"

enum { MAX_ARGS = 24 };

/* numarg.h's integer grammar: [+-]?(0[xX][0-9a-fA-F]+|[0-9]+), the magnitude within 64 bits. */
static int ref_integer(const char *v, int *neg, uint64_t *mag)
{
    const char *p = v;
    *neg = *p == '-';
    if (*p == '-' || *p == '+')
        p++;
    int hex = p[0] == '0' && (p[1] == 'x' || p[1] == 'X');
    if (hex)
        p += 2;
    if (!*p)
        return -1;
    uint64_t m = 0;
    for (; *p; p++) {
        int d;
        if (isdigit((unsigned char)*p))
            d = *p - '0';
        else if (hex && isxdigit((unsigned char)*p))
            d = tolower((unsigned char)*p) - 'a' + 10;
        else
            return -1;
        const uint64_t base = hex ? 16 : 10;
        if (m > (UINT64_MAX - (uint64_t)d) / base)
            return -1;
        m = m * base + (uint64_t)d;
    }
    *mag = m;
    return 0;
}

static const int int_ranges[][2] = {{1, 1 << 30}, {0, 1024},     {INT_MIN, INT_MAX},
                                    {-5, 5},      {2, 16777216}, {0, 0}};
static const uint64_t u64_ranges[][2] = {
    {0, UINT64_MAX}, {1, (uint64_t)1 << 30}, {5, 5}, {0, 100000000}};
static const struct {
    double lo, hi;
    int open;
} real_ranges[] = {{0, 1, KEEL_ARG_OPEN_LO | KEEL_ARG_OPEN_HI},
                   {0, 1e6, KEEL_ARG_OPEN_LO},
                   {0, FLT_MAX, 0},
                   {0, 1e9, 0},
                   {-1, 1, KEEL_ARG_OPEN_HI},
                   {-DBL_MAX, DBL_MAX, 0}};

static void numarg(const char *v, unsigned sel)
{
    for (size_t k = 0; k < sizeof int_ranges / sizeof *int_ranges; k++) {
        const int lo = int_ranges[k][0], hi = int_ranges[k][1];
        int out = 12345, neg;
        uint64_t mag;
        const int rc = keel_arg_int("fuzz", "--opt", v, lo, hi, &out);
        const int want = ref_integer(v, &neg, &mag) == 0 && mag <= (uint64_t)INT64_MAX &&
                         (neg ? -(int64_t)mag : (int64_t)mag) >= lo &&
                         (neg ? -(int64_t)mag : (int64_t)mag) <= hi;
        FZ_CHECK(rc == (want ? 0 : -1), "keel_arg_int('%s', [%d, %d]) returned %d", v, lo, hi, rc);
        if (rc == 0)
            FZ_CHECK(out == (neg ? -(int64_t)mag : (int64_t)mag), "keel_arg_int('%s') gave %d", v,
                     out);
        else
            FZ_CHECK(out == 12345, "keel_arg_int('%s') refused it and changed *out", v);
    }
    for (size_t k = 0; k < sizeof u64_ranges / sizeof *u64_ranges; k++) {
        const uint64_t lo = u64_ranges[k][0], hi = u64_ranges[k][1];
        uint64_t out = 12345, mag;
        int neg;
        const int rc = keel_arg_u64("fuzz", "--opt", v, lo, hi, &out);
        const int want =
            ref_integer(v, &neg, &mag) == 0 && (!neg || mag == 0) && mag >= lo && mag <= hi;
        FZ_CHECK(rc == (want ? 0 : -1), "keel_arg_u64('%s', [%llu, %llu]) returned %d", v,
                 (unsigned long long)lo, (unsigned long long)hi, rc);
        FZ_CHECK(rc ? out == 12345 : out == mag, "keel_arg_u64('%s') gave %llu", v,
                 (unsigned long long)out);
    }
    for (size_t k = 0; k < sizeof real_ranges / sizeof *real_ranges; k++) {
        const double lo = real_ranges[k].lo, hi = real_ranges[k].hi;
        const int open = real_ranges[k].open;
        double d = 12345.0;
        float f = 12345.0f;
        const int rd = keel_arg_double("fuzz", "--opt", v, lo, hi, open, &d);
        const int rf = keel_arg_float("fuzz", "--opt", v, lo, hi, open, &f);
        FZ_CHECK(rd == 0 || rd == -1, "keel_arg_double returned %d", rd);
        FZ_CHECK(rf == 0 || rf == -1, "keel_arg_float returned %d", rf);
        if (rd == 0) {
            char *end;
            const double x = strtod(v, &end);
            FZ_CHECK(*v && !isspace((unsigned char)*v) && !*end && x == d,
                     "keel_arg_double('%s') gave %g", v, d);
            FZ_CHECK(isfinite(d) && (open & KEEL_ARG_OPEN_LO ? d > lo : d >= lo) &&
                         (open & KEEL_ARG_OPEN_HI ? d < hi : d <= hi),
                     "keel_arg_double('%s') gave %g, outside the range", v, d);
        } else {
            FZ_CHECK(d == 12345.0, "keel_arg_double('%s') refused it and changed *out", v);
            FZ_CHECK(rf == -1, "keel_arg_float('%s') took what keel_arg_double refused", v);
        }
        if (rf == 0)
            FZ_CHECK(isfinite(f) && f == (float)d && (open & KEEL_ARG_OPEN_LO ? f > lo : f >= lo) &&
                         (open & KEEL_ARG_OPEN_HI ? f < hi : f <= hi),
                     "keel_arg_float('%s') gave %g", v, (double)f);
        else
            FZ_CHECK(f == 12345.0f, "keel_arg_float('%s') refused it and changed *out", v);
    }
    /* no value at all (an option last on the line) */
    int i = 7;
    FZ_CHECK(keel_arg_int(sel & 1 ? "fuzz" : NULL, "--opt", NULL, 0, 10, &i) == -1 && i == 7,
             "keel_arg_int took a missing value");
}

static void train_options(int argc, char **argv)
{
    tr_opts o;
    tr_opts_default(&o);
    const char *data = NULL;
    for (int i = 0; i < argc; i++) {
        const int at = i;
        const int r = tr_parse_option(&o, argc, argv, &i, &data);
        FZ_CHECK(r >= -1 && r <= 1, "tr_parse_option returned %d", r);
        FZ_CHECK(i == at || (r != 0 && i == at + 1 && i < argc),
                 "tr_parse_option moved i %d -> %d (r %d)", at, i, r);
        if (r < 0)
            return;
        const tm_config *c = &o.mc;
        FZ_CHECK(c->layers >= 1 && c->layers <= TM_MAX_LAYERS && c->width >= 1 &&
                     c->width <= TM_MAX_WIDTH && c->heads >= 1 && c->heads <= TM_MAX_WIDTH &&
                     c->seq >= 1 && c->seq <= TM_MAX_SEQ,
                 "tr_parse_option accepted a model setting out of range");
        FZ_CHECK(o.batch >= 1 && o.batch <= TM_MAX_BATCH && o.steps >= 1 &&
                     o.steps <= TR_MAX_STEPS && o.lr > 0 && isfinite(o.lr) && o.beta2 >= 0 &&
                     o.beta2 < 1 && o.min_frac >= 0 && o.min_frac <= 1 && isfinite(c->eps) &&
                     c->eps >= 0 && isfinite(c->layerscale) && o.threads >= 1 &&
                     o.threads <= KEEL_ARG_MAX_THREADS,
                 "tr_parse_option accepted a training setting out of range");
    }
}

static int has_arg(int argc, char **argv, const char *s)
{
    for (int i = 0; i < argc; i++)
        if (!strcmp(argv[i], s))
            return 1;
    return 0;
}

static void command(unsigned sel, int argc, char **args)
{
    static char names[][16] = {"bench", "threads", "eps",     "onnx-test",
                               "train", "sample",  "monitor", "monitor"};
    static char calibrate[] = "calibrate", score[] = "score", stop[] = "--keel-fuzz-stop";
    char *argv[MAX_ARGS + 5];
    int n = 0;
    const unsigned which = sel % 8;
    argv[n++] = names[which];
    if (which == 6)
        argv[n++] = calibrate;
    else if (which == 7)
        argv[n++] = score;
    for (int i = 0; i < argc; i++)
        argv[n++] = args[i];
    argv[n++] = stop;
    argv[n++] = stop;
    argv[n] = NULL;
    int rc;
    switch (which) {
    case 0:
        rc = keel_cmd_bench(n, argv);
        break;
    case 1:
        rc = keel_cmd_threads(n, argv);
        break;
    case 2:
        rc = keel_cmd_eps(n, argv);
        break;
    case 3:
        rc = keel_cmd_onnx_test(n, argv);
        break;
    case 4:
        rc = keel_cmd_train(n, argv);
        break;
    case 5:
        rc = keel_cmd_sample(n, argv);
        break;
    default:
        rc = keel_cmd_monitor(n, argv);
        break;
    }
    const int help = has_arg(argc, args, "--help") || has_arg(argc, args, "-h");
    const int dashdash = which == 3 && has_arg(argc, args, "--");
    FZ_CHECK(rc == 2 || (rc == 0 && help) || (rc == 1 && dashdash), "keel %s exits %d",
             names[which], rc);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static int ready;
    if (!ready) {
        fz_quiet_stdio();
        ready = 1;
    }
    if (size < 1 || size > 4096)
        return 0;
    const unsigned sel = data[0];
    /* the arguments: NUL-separated, each a copy (commands may keep pointers into argv) */
    char *buf = malloc(size + 1);
    if (!buf)
        return 0;
    memcpy(buf, data + 1, size - 1);
    buf[size - 1] = '\0';
    char *args[MAX_ARGS];
    int argc = 0;
    for (char *p = buf; p < buf + size && argc < MAX_ARGS;) {
        args[argc++] = p;
        p += strlen(p) + 1;
        if (p >= buf + size - 1)
            break;
    }
    switch ((sel >> 3) % 4) {
    case 0:
    case 1:
        for (int i = 0; i < argc; i++)
            numarg(args[i], sel);
        break;
    case 2:
        train_options(argc, args);
        break;
    default:
        command(sel, argc, args);
        break;
    }
    free(buf);
    return 0;
}
