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

#include <stdint.h>

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

#endif
