/* keel train: a small deterministic random number generator (splitmix64) and Gaussian draws. */
#ifndef KEEL_TRAIN_RNG_H
#define KEEL_TRAIN_RNG_H

#include <math.h>
#include <stdint.h>

typedef struct tm_rng {
    uint64_t s;
} tm_rng;

static inline uint64_t tm_rng_next(tm_rng *r)
{
    uint64_t z = (r->s += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

/* Uniform in [0, 1) with 53 random bits. */
static inline double tm_rng_uniform(tm_rng *r)
{
    return (double)(tm_rng_next(r) >> 11) * (1.0 / 9007199254740992.0);
}

/* Uniform integer in [0, n). n > 0. */
static inline uint64_t tm_rng_below(tm_rng *r, uint64_t n)
{
    return (uint64_t)(tm_rng_uniform(r) * (double)n) % n;
}

/* Standard normal (Box-Muller, one value per call). */
static inline double tm_rng_normal(tm_rng *r)
{
    double u1 = tm_rng_uniform(r), u2 = tm_rng_uniform(r);
    if (u1 < 1e-300)
        u1 = 1e-300;
    return sqrt(-2.0 * log(u1)) * cos(6.283185307179586 * u2);
}

#endif
