/* Timing helpers of the benchmark commands (keel bench, keel threads). */
#ifndef KEEL_CLI_BENCH_TIME_H
#define KEEL_CLI_BENCH_TIME_H

/* Seconds on the monotonic clock. */
double bench_now_s(void);
/* The median of v[0..n) (n > 0); sorts v. */
double bench_median(double *v, int n);

#endif
