/*
 * keel_cases.h - inputs and error measures shared by the tests and `keel check`, so that both
 * judge keel by one definition: a seedable RNG, generators of random and adversarial rows, and
 * the error of a float32 result against the float64 reference with the bounds it must meet.
 */
#ifndef KEEL_CASES_H
#define KEEL_CASES_H

#include <stddef.h>
#include <stdint.h>

/* ---- random numbers: xoshiro256** seeded through splitmix64 ------------------------------- */

typedef struct keel_rng {
    uint64_t s[4];
} keel_rng;

void keel_rng_seed(keel_rng *rng, uint64_t seed);
uint64_t keel_rng_next(keel_rng *rng);
double keel_rng_uniform(keel_rng *rng);          /* [0, 1), 53 random bits */
double keel_rng_range(keel_rng *rng, double lo, double hi); /* [lo, hi) */
double keel_rng_normal(keel_rng *rng);           /* standard normal (Box-Muller) */
size_t keel_rng_below(keel_rng *rng, size_t n);  /* [0, n), n > 0 */

/* ---- rows ---------------------------------------------------------------------------------- */

typedef enum keel_case_kind {
    KEEL_CASE_NORMAL,     /* N(0, s^2), s = 10^U(-2, 2) */
    KEEL_CASE_OFFSET_1E2, /* mean = +-1e2 * s: a float32 mean or E[x^2]-E[x]^2 starts to hurt */
    KEEL_CASE_OFFSET_1E4, /* mean = +-1e4 * s */
    KEEL_CASE_OFFSET_1E6, /* mean = +-1e6 * s: x carries ~4 bits below the offset */
    KEEL_CASE_TINY_VAR,   /* 1 + 1e-6 * N(0,1): variance 1e-12, below a usual eps */
    KEEL_CASE_CONSTANT,   /* one value repeated (magnitude 10^U(-30, 30)): y must be beta */
    KEEL_CASE_ZERO,       /* all zero: rstd = 1/sqrt(eps), never NaN */
    KEEL_CASE_HUGE,       /* 1e30 * N(0,1): x^2 overflows float32 */
    KEEL_CASE_TINY,       /* 1e-30 * N(0,1): x^2 underflows float32 */
    KEEL_CASE_MIXED,      /* every row one of the kinds above, at random */
    KEEL_CASE_COUNT
} keel_case_kind;

const char *keel_case_name(keel_case_kind kind);

/* Fills row[0..dim) with one row of the kind (MIXED picks a kind for this row). */
void keel_case_fill_row(keel_rng *rng, keel_case_kind kind, float *row, size_t dim);

/* gamma: random sign times U[0.5, 2); beta: U[-0.25, 0.25). With |gamma| >= 0.5 and a row's
 * largest |xhat| >= 1 (true whenever var >> eps), |beta| <= 0.25 cannot cancel a row's
 * largest |y| below half the largest |xhat * gamma|, so "ulps of the row's largest |y|" stays a
 * fair measure of the rounding of every element. */
void keel_case_fill_gamma(keel_rng *rng, float *gamma, size_t dim);
void keel_case_fill_beta(keel_rng *rng, float *beta, size_t dim);
/* N(0, 1) values: a random dy. (A dy chosen so that dx cancels to ~0 would make any bound in
 * ulps of the row's largest |dx| meaningless.) */
void keel_case_fill_normal(keel_rng *rng, float *v, size_t n);

/* A width in [1, max], log-uniform so that small and large widths are equally likely. */
size_t keel_case_random_width(keel_rng *rng, size_t max);

/* One complete test input. x and dy are rows x stride; the padding between dim and the stride
 * holds NaN, so a kernel that reads past a row's end poisons its result and is caught. */
typedef struct keel_case {
    keel_case_kind kind;
    size_t rows, dim;
    size_t x_stride, dy_stride;
    float eps;
    float *x;
    float *dy;
    float *gamma; /* dim, or NULL */
    float *beta;  /* dim, or NULL */
} keel_case;

/* Allocates and fills a case; 0, or -1 when memory ran out (nothing left allocated). */
int keel_case_make(keel_case *c, keel_rng *rng, keel_case_kind kind, size_t rows, size_t dim,
                   size_t x_stride, size_t dy_stride, int with_gamma, int with_beta, float eps);
void keel_case_free(keel_case *c);

/* ---- error measures and bounds ------------------------------------------------------------- */

/* The spacing of float32 numbers at magnitude |m| (2^-149 below the normal range, the spacing
 * at FLT_MAX above it). */
double keel_ulp32(double m);

/* The worst error of got[0..n) against ref[0..n), in float32 ulps of m = the largest finite |ref|
 * (raised to `floor` when floor is larger, see keel_dx_scale). A NaN matches only a NaN and an
 * infinity only itself; a mismatch there is an infinite error. *worst (may be NULL) receives the
 * index of the worst element. */
double keel_err_ulps_row(const float *got, const double *ref, size_t n, double floor,
                         size_t *worst);

/* keel_err_ulps_row over `rows` rows: got with a row stride, ref dense (rows x dim), floors[r]
 * the floor of row r (floors NULL: none). *row and *index (may be NULL) locate the worst. */
double keel_err_ulps_rows(const float *got, size_t stride, const double *ref, size_t rows,
                          size_t dim, const double *floors, size_t *row, size_t *index);

/* The worst error of each got[i] in ulps of its own |ref[i]| (for mean and rstd). */
double keel_err_ulps_each(const float *got, const double *ref, size_t n, size_t *worst);

/* The worst |got[i] - ref[i]| / (FLT_EPSILON * mag[i]), for sums over rows (dgamma, dbeta): mag
 * is the sum of the |terms| added (keel_ref_grads dgamma_mag, dbeta_mag). mag 0 asks for an
 * exact result. */
double keel_err_sum(const float *got, const double *ref, const double *mag, size_t n,
                    size_t *worst);

/* The size of the terms a dx row is the difference of: rstd * max_j |dy[j] * gamma[j]| (gamma
 * NULL: 1). dx = rstd * (g - mean(g) - xhat * mean(g * xhat)) cancels by construction when the
 * width leaves no room beside 1 and xhat (LayerNorm dim <= 2 gives dx ~ 0 exactly, RMSNorm
 * dim 1 too) and often at dim 3; the rounding errors of a kernel are relative to these terms, not
 * to what is left after the cancellation, so the dx measure's floor is this scale. At larger
 * widths with random dy the row's largest |dx| is about this size anyway. */
double keel_dx_scale(size_t dim, const float *dy, const float *gamma, double rstd);
/* keel_dx_scale of each row: floors[r] from dy row r (dy_stride apart) and rstd[r]. */
void keel_dx_floors(size_t rows, size_t dim, const float *dy, size_t dy_stride,
                    const float *gamma, const double *rstd, double *floors);

/*
 * Bounds.
 * y and dx: 8 float32 ulps of the row's largest |ref|. An element goes through a few float
 * roundings (x - mean_hi, - mean_lo, * rstd, * gamma, + beta; or g - mean(g), xhat * b, -,
 * * rstd) and depends on float32 statistics (rstd, mean(g), mean(g*xhat): half an ulp each):
 * ~3-4 ulps worst, x2 where a small beta lowers the row's largest |y|. A mean held only in
 * float32 is off by up to half an ulp of the mean, ~1e6 * 2^-24 of the std at an offset of 1e6:
 * ~1e5 ulps of the output; E[x^2]-E[x]^2 fails by more (test_ops checks both stay caught).
 */
#define KEEL_BOUND_ROW_ULPS 8.0
/* mean and rstd: the double statistic rounded once to float32 (half an ulp) plus the double
 * arithmetic's error (~1e-9 ulps): within 1 ulp, and 2 leaves room for a rounding tie. */
#define KEEL_BOUND_STAT_ULPS 2.0
/* dgamma, dbeta in FLT_EPSILON units of the magnitude sum: a float sum of `rows` terms in any
 * order (per-block float partials combined in any tree) errs by at most (rows - 1) * 2^-24 of the
 * sum of |terms| (first order); each term dy * xhat carries ~5 roundings more (xhat's four, the
 * product's one); accumulating into the caller's array is one more addition: (rows + 5) * 2^-24
 * in all. Bound: (rows + 4) * FLT_EPSILON = (2 rows + 8) * 2^-24, about twice that. A wrong
 * formula or a float-only mean errs by O(1e-2) of the sum. */
double keel_bound_dparam(size_t rows);

#endif /* KEEL_CASES_H */
