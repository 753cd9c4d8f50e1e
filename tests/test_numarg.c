/* The checked number parser of the command-line options (src/cli/numarg.c, issue 23 finding 4):
 * what it takes and what it refuses, at the edges (the refusals print their message on stderr);
 * and the table-driven option loop built on it (keel_opts_parse). */
#include <float.h>
#include <math.h>

#include "numarg.h"
#include "test_common.h"

static void ints(void)
{
    static const struct {
        const char *v;
        int lo, hi, ok, want;
    } cases[] = {
        {"5", 1, 10, 1, 5},           {"+5", 1, 10, 1, 5},         {"0x10", 0, 100, 1, 16},
        {"007", 0, 10, 1, 7},         {"-3", -5, 5, 1, -3},        {"2147483647", 0, 2147483647, 1, 2147483647},
        {"-2147483648", -2147483647 - 1, 0, 1, -2147483647 - 1},
        {"abc", 0, 10, 0, 0},         {"", 0, 10, 0, 0},           {" 5", 0, 10, 0, 0},
        {"5 ", 0, 10, 0, 0},          {"1e3", 0, 10000, 0, 0},     {"1.0", 0, 10, 0, 0},
        {"-1", 0, 10, 0, 0},          {"11", 0, 10, 0, 0},         {"2147483648", 0, 2147483647, 0, 0},
        {"99999999999999999999", 0, 10, 0, 0}, {"0x", 0, 10, 0, 0}, {"--5", -10, 10, 0, 0},
        {"5abc", 0, 10, 0, 0},         {"0x0x10", 0, 100, 0, 0},    {"0X0X1", 0, 100, 0, 0},
        {"-0x0x1", -10, 10, 0, 0},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        int out = -12345;
        const int ok = keel_arg_int("test", "--n", cases[i].v, cases[i].lo, cases[i].hi, &out) == 0;
        test_check(ok == cases[i].ok && (!ok || out == cases[i].want) && (ok || out == -12345),
                   "keel_arg_int('%s', %d..%d): ok %d out %d, want ok %d out %d", cases[i].v, cases[i].lo,
                   cases[i].hi, ok, out, cases[i].ok, cases[i].want);
    }
    int out;
    test_check(keel_arg_int("test", "--n", NULL, 0, 10, &out) == -1, "a missing value is refused");
}

static void u64s(void)
{
    uint64_t out = 0;
    test_check(keel_arg_u64("test", "--seed", "18446744073709551615", 0, UINT64_MAX, &out) == 0 && out == UINT64_MAX,
               "2^64 - 1 is a u64");
    test_check(keel_arg_u64("test", "--seed", "18446744073709551616", 0, UINT64_MAX, &out) == -1, "2^64 is not");
    test_check(keel_arg_u64("test", "--seed", "-1", 0, UINT64_MAX, &out) == -1, "-1 is not a u64 (strtoull: 2^64-1)");
    test_check(keel_arg_u64("test", "--seed", "-0", 0, UINT64_MAX, &out) == 0 && out == 0, "-0 is 0");
    test_check(keel_arg_u64("test", "--rows", "0", 1, 10, &out) == -1, "below the range");
}

static void reals(void)
{
    double d = -1;
    float f = -1;
    test_check(keel_arg_double("test", "--x", "0.5", 0, 1, KEEL_ARG_OPEN_LO | KEEL_ARG_OPEN_HI, &d) == 0 && d == 0.5,
               "0.5 in (0, 1)");
    test_check(keel_arg_double("test", "--x", "1", 0, 1, KEEL_ARG_OPEN_HI, &d) == -1, "1 not in [0, 1)");
    test_check(keel_arg_double("test", "--x", "0", 0, 1, KEEL_ARG_OPEN_LO, &d) == -1, "0 not in (0, 1]");
    test_check(keel_arg_double("test", "--x", "0", 0, 1, 0, &d) == 0 && d == 0, "0 in [0, 1]");
    test_check(keel_arg_double("test", "--x", "1e-3", 0, 1, 0, &d) == 0 && d == 1e-3, "1e-3 is a number");
    test_check(keel_arg_double("test", "--x", "0x1p-2", 0, 1, 0, &d) == 0 && d == 0.25, "hex floats too");
    static const char *const bad[] = {"nan", "inf", "-inf", "1e400", "abc", "", " 1", "1 ", "0.5x", "1e"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        test_check(keel_arg_double("test", "--x", bad[i], -DBL_MAX, DBL_MAX, 0, &d) == -1, "'%s' is refused", bad[i]);
    test_check(keel_arg_double("test", "--x", "1e-400", 0, 1, 0, &d) == 0 && d == 0, "an underflow is 0");
    test_check(keel_arg_float("test", "--lr", "1e-50", 0, 1, KEEL_ARG_OPEN_LO, &f) == -1,
               "1e-50 > 0, but 0 as a float: refused");
    test_check(keel_arg_float("test", "--lr", "1e-3", 0, 1, KEEL_ARG_OPEN_LO, &f) == 0 && f == 1e-3f, "1e-3 as a float");
}

static int g_usage_out, g_usage_err; /* how often keel_opts_parse printed the usage, and where */

static void count_usage(FILE *to)
{
    if (to == stdout)
        g_usage_out++;
    else
        g_usage_err++;
}

/* One command line through a table of every kind; its result and the values it left. */
typedef struct parsed {
    int rc, n, flag;
    double x;
    const char *s;
} parsed;

static parsed parse_line(int argc, const char *const *args)
{
    parsed p = {-1, 7, 0, 0.5, NULL};
    const keel_opt table[] = {
        {"--n", KEEL_OPT_INT, &p.n, 1, 10, 0},
        {"--x", KEEL_OPT_DOUBLE, &p.x, 0, 1, KEEL_ARG_OPEN_LO | KEEL_ARG_OPEN_HI},
        {"--s", KEEL_OPT_STRING, &p.s, 0, 0, 0},
        {"-s", KEEL_OPT_STRING, &p.s, 0, 0, 0},
        {"--flag", KEEL_OPT_FLAG, &p.flag, 0, 0, 0},
    };
    char *argv[8];
    for (int i = 0; i < argc && i < 8; i++)
        argv[i] = (char *)args[i];
    g_usage_out = g_usage_err = 0;
    p.rc = keel_opts_parse("test", argc, argv, table, sizeof table / sizeof table[0], count_usage);
    return p;
}

static void options(void)
{
    const char *all[] = {"test", "--n", "3", "--flag", "--x", "0.25", "-s", "-h"};
    parsed p = parse_line(8, all);
    test_check(p.rc == KEEL_OPTS_OK && p.n == 3 && p.flag == 1 && p.x == 0.25 && p.s &&
                   !strcmp(p.s, "-h"),
               "every kind, an alias, a value that looks like an option: rc %d n %d flag %d x %g",
               p.rc, p.n, p.flag, p.x);
    const char *none[] = {"test"};
    p = parse_line(1, none);
    test_check(p.rc == KEEL_OPTS_OK && p.n == 7 && p.flag == 0 && p.x == 0.5 && !p.s,
               "no options: the defaults stay");
    const char *help[] = {"test", "--n", "3", "--help", "--n", "abc"};
    p = parse_line(6, help);
    test_check(p.rc == KEEL_OPTS_HELP && g_usage_out == 1 && g_usage_err == 0,
               "--help: the usage on stdout, before a later bad value");
    static const struct {
        int argc;
        const char *args[4];
        int usage; /* the usage printed on stderr (an unknown option or a missing value) */
    } bad[] = {
        {3, {"test", "--n", "0"}, 0},        {3, {"test", "--n", "abc"}, 0},
        {3, {"test", "--x", "1"}, 0},        {3, {"test", "--x", "nan"}, 0},
        {2, {"test", "--n"}, 1},             {3, {"test", "--what", "1"}, 1},
        {2, {"test", "--what"}, 1},          {3, {"test", "--flag", "--s"}, 1},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        p = parse_line(bad[i].argc, bad[i].args);
        test_check(p.rc == KEEL_OPTS_USAGE && g_usage_err == bad[i].usage && g_usage_out == 0,
                   "bad line %zu ('%s'): rc %d, usage on stderr %d times", i, bad[i].args[1], p.rc,
                   g_usage_err);
    }
}

int main(void)
{
    test_begin("test_numarg");
    ints();
    u64s();
    reals();
    options();
    return test_finish();
}
