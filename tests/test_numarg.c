/* The checked number parser of the command-line options (src/cli/numarg.c, issue 23 finding 4):
 * what it takes and what it refuses, at the edges (the refusals print their message on stderr). */
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

int main(void)
{
    test_begin("test_numarg");
    ints();
    u64s();
    reals();
    return test_finish();
}
