/* The one checked parser for the numbers in the options of every keel command (src/cli and
 * train/). The whole value must be the number: no leading space, no trailing characters, no
 * exponent or fraction in an integer, no sign where the range has none, no overflow, and the
 * number within the range given. Otherwise the parser prints one message, naming the command,
 * the option, the value and what it expects:
 *     keel bench: --rows '-1' is not an integer in [1, 1073741824]
 * and returns -1; the command then exits with status 2 (a usage error). Integers are decimal,
 * or hexadecimal after 0x. Reals are finite (no nan, no inf). */
#ifndef KEEL_CLI_NUMARG_H
#define KEEL_CLI_NUMARG_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "keel.h" /* KEEL_MAX_THREADS */

/* The most threads an option may ask for: the library's own limit (above it, a typing error). */
#define KEEL_ARG_MAX_THREADS KEEL_MAX_THREADS

/* Bounds of a real range: closed unless these flags open an end. */
enum { KEEL_ARG_OPEN_LO = 1, KEEL_ARG_OPEN_HI = 2 };

/* cmd: the subcommand's name for the message ("bench"; NULL: just "keel"); opt: the option as
 * typed ("--rows"); v: its value (NULL: the option came without one). 0 and *out set, or -1. */
int keel_arg_int(const char *cmd, const char *opt, const char *v, int lo, int hi, int *out);
int keel_arg_u64(const char *cmd, const char *opt, const char *v, uint64_t lo, uint64_t hi, uint64_t *out);
int keel_arg_double(const char *cmd, const char *opt, const char *v, double lo, double hi, int open,
                    double *out);
/* The same for a float: lo and hi must be within float's range. */
int keel_arg_float(const char *cmd, const char *opt, const char *v, double lo, double hi, int open, float *out);

/* ---- a command's options from a table ------------------------------------------------------
 * The loop every command wrote out by hand (one strcmp and one keel_arg_* call per option), once:
 * the command lists its options and keel_opts_parse walks argv against the list. */

typedef enum keel_opt_kind {
    KEEL_OPT_INT,    /* out: int *, a keel_arg_int in [lo, hi] */
    KEEL_OPT_DOUBLE, /* out: double *, a keel_arg_double in lo, hi with open's ends open */
    KEEL_OPT_STRING, /* out: const char **, the value as typed */
    KEEL_OPT_FLAG    /* out: int *, set to 1; the only kind without a value */
} keel_opt_kind;

typedef struct keel_opt {
    const char *name; /* as typed, "--tokens"; two entries with one out give an alias ("-o") */
    keel_opt_kind kind;
    void *out;
    double lo, hi; /* the range of an INT or DOUBLE (every int is exact in a double) */
    int open;      /* a DOUBLE's KEEL_ARG_OPEN_LO | KEEL_ARG_OPEN_HI */
} keel_opt;

/* What keel_opts_parse returns: go on, stop with status 0 (the help was printed) or with 2. */
enum { KEEL_OPTS_OK = 0, KEEL_OPTS_HELP = 1, KEEL_OPTS_USAGE = 2 };

/* Parses argv[1..argc-1] against the n options of opts; cmd names the command in the messages
 * ("monitor cost": "keel monitor cost: ..."). --help or -h where an option is expected: usage
 * to stdout, KEEL_OPTS_HELP. An option that is not in the table: "keel CMD: unknown option 'X'",
 * or, as the last argument, "keel CMD: unknown option or missing value: 'X'" (the same for an
 * option of the table whose value is missing), a blank line and usage to stderr, KEEL_OPTS_USAGE.
 * A value the option's kind refuses: keel_arg_*'s message, KEEL_OPTS_USAGE. An option given
 * twice keeps its last value. usage may be NULL (nothing printed). */
int keel_opts_parse(const char *cmd, int argc, char **argv, const keel_opt *opts, size_t n,
                    void (*usage)(FILE *to));

#endif
