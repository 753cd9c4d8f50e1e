/* Random and adversarial inputs, and the error measures, shared by tests and `keel check`. */
#include "keel_cases.h"

#include <float.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

/* ---- random numbers ------------------------------------------------------------------------ */

/* splitmix64 spreads any seed (even 0) over the 256-bit xoshiro state, as its authors advise. */
static uint64_t splitmix64(uint64_t *x)
{
    uint64_t z = (*x += 0x9e3779b97f4a7c15u);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9u;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebu;
    return z ^ (z >> 31);
}

void keel_rng_seed(keel_rng *rng, uint64_t seed)
{
    for (int i = 0; i < 4; i++)
        rng->s[i] = splitmix64(&seed);
}

static uint64_t rotl(uint64_t x, int k)
{
    return (x << k) | (x >> (64 - k));
}

/* xoshiro256** (Blackman and Vigna). */
uint64_t keel_rng_next(keel_rng *rng)
{
    uint64_t *s = rng->s;
    uint64_t result = rotl(s[1] * 5, 7) * 9;
    uint64_t t = s[1] << 17;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rotl(s[3], 45);
    return result;
}

double keel_rng_uniform(keel_rng *rng)
{
    return (double)(keel_rng_next(rng) >> 11) * 0x1.0p-53;
}

double keel_rng_range(keel_rng *rng, double lo, double hi)
{
    return lo + (hi - lo) * keel_rng_uniform(rng);
}

double keel_rng_normal(keel_rng *rng)
{
    const double two_pi = 6.283185307179586;
    double u = 1.0 - keel_rng_uniform(rng); /* (0, 1]: log(u) is finite */
    double v = keel_rng_uniform(rng);
    return sqrt(-2.0 * log(u)) * cos(two_pi * v);
}

size_t keel_rng_below(keel_rng *rng, size_t n)
{
    return (size_t)(keel_rng_next(rng) % (uint64_t)n); /* the modulo bias is irrelevant here */
}

/* ---- rows ------------------------------------------------------------------------------------ */

static const char *const case_names[KEEL_CASE_COUNT] = {
    "normal", "offset1e2", "offset1e4", "offset1e6", "tinyvar",
    "constant", "zero", "huge1e30", "tiny1e-30", "mixed",
};

const char *keel_case_name(keel_case_kind kind)
{
    return (unsigned)kind < KEEL_CASE_COUNT ? case_names[kind] : "unknown";
}

static double random_sign(keel_rng *rng)
{
    return (keel_rng_next(rng) >> 63) ? -1.0 : 1.0;
}

/* N(offset * s, s^2) with s = 10^U(-2, 2): the offset in units of the standard deviation. */
static void fill_offset(keel_rng *rng, float *row, size_t dim, double offset)
{
    double s = pow(10.0, keel_rng_range(rng, -2.0, 2.0));
    double centre = random_sign(rng) * offset * s;
    for (size_t j = 0; j < dim; j++)
        row[j] = (float)(centre + s * keel_rng_normal(rng));
}

static void fill_scaled(keel_rng *rng, float *row, size_t dim, double scale)
{
    for (size_t j = 0; j < dim; j++)
        row[j] = (float)(scale * keel_rng_normal(rng));
}

void keel_case_fill_row(keel_rng *rng, keel_case_kind kind, float *row, size_t dim)
{
    switch (kind) {
    case KEEL_CASE_OFFSET_1E2:
        fill_offset(rng, row, dim, 1e2);
        break;
    case KEEL_CASE_OFFSET_1E4:
        fill_offset(rng, row, dim, 1e4);
        break;
    case KEEL_CASE_OFFSET_1E6:
        fill_offset(rng, row, dim, 1e6);
        break;
    case KEEL_CASE_TINY_VAR:
        for (size_t j = 0; j < dim; j++)
            row[j] = (float)(1.0 + 1e-6 * keel_rng_normal(rng));
        break;
    case KEEL_CASE_CONSTANT: {
        float c = (float)(random_sign(rng) * pow(10.0, keel_rng_range(rng, -30.0, 30.0)));
        for (size_t j = 0; j < dim; j++)
            row[j] = c;
        break;
    }
    case KEEL_CASE_ZERO:
        memset(row, 0, dim * sizeof(float));
        break;
    case KEEL_CASE_HUGE:
        fill_scaled(rng, row, dim, 1e30);
        break;
    case KEEL_CASE_TINY:
        fill_scaled(rng, row, dim, 1e-30);
        break;
    case KEEL_CASE_MIXED:
        keel_case_fill_row(rng, (keel_case_kind)keel_rng_below(rng, KEEL_CASE_MIXED), row, dim);
        break;
    case KEEL_CASE_NORMAL:
    default:
        fill_offset(rng, row, dim, 0.0);
        break;
    }
}

void keel_case_fill_gamma(keel_rng *rng, float *gamma, size_t dim)
{
    for (size_t j = 0; j < dim; j++)
        gamma[j] = (float)(random_sign(rng) * keel_rng_range(rng, 0.5, 2.0));
}

void keel_case_fill_beta(keel_rng *rng, float *beta, size_t dim)
{
    for (size_t j = 0; j < dim; j++)
        beta[j] = (float)keel_rng_range(rng, -0.25, 0.25);
}

void keel_case_fill_normal(keel_rng *rng, float *v, size_t n)
{
    for (size_t i = 0; i < n; i++)
        v[i] = (float)keel_rng_normal(rng);
}

size_t keel_case_random_width(keel_rng *rng, size_t max)
{
    double w = exp(keel_rng_uniform(rng) * log((double)max + 1.0));
    size_t width = (size_t)w;
    return width < 1 ? 1 : width > max ? max : width;
}

/* rows x stride floats: each row's first dim values from fill_row (dy: normal), the padding
 * NaN. */
static float *make_rows(keel_rng *rng, keel_case_kind kind, int is_dy, size_t rows, size_t dim,
                        size_t stride)
{
    size_t n = rows * stride;
    float *m = malloc((n > 0 ? n : 1) * sizeof(float));
    if (!m)
        return NULL;
    for (size_t r = 0; r < rows; r++) {
        float *row = m + r * stride;
        if (is_dy)
            keel_case_fill_normal(rng, row, dim);
        else
            keel_case_fill_row(rng, kind, row, dim);
        for (size_t j = dim; j < stride; j++)
            row[j] = NAN;
    }
    return m;
}

static float *make_params(keel_rng *rng, int wanted, size_t dim,
                          void (*fill)(keel_rng *, float *, size_t), int *failed)
{
    if (!wanted)
        return NULL;
    float *p = malloc(dim * sizeof(float));
    if (!p) {
        *failed = 1;
        return NULL;
    }
    fill(rng, p, dim);
    return p;
}

int keel_case_make(keel_case *c, keel_rng *rng, keel_case_kind kind, size_t rows, size_t dim,
                   size_t x_stride, size_t dy_stride, int with_gamma, int with_beta, float eps)
{
    int failed = 0;
    memset(c, 0, sizeof *c);
    c->kind = kind;
    c->rows = rows;
    c->dim = dim;
    c->x_stride = x_stride;
    c->dy_stride = dy_stride;
    c->eps = eps;
    c->x = make_rows(rng, kind, 0, rows, dim, x_stride);
    c->dy = make_rows(rng, kind, 1, rows, dim, dy_stride);
    c->gamma = make_params(rng, with_gamma, dim, keel_case_fill_gamma, &failed);
    c->beta = make_params(rng, with_beta, dim, keel_case_fill_beta, &failed);
    if (failed || !c->x || !c->dy) {
        keel_case_free(c);
        return -1;
    }
    return 0;
}

void keel_case_free(keel_case *c)
{
    free(c->x);
    free(c->dy);
    free(c->gamma);
    free(c->beta);
    memset(c, 0, sizeof *c);
}

/* ---- error measures ---------------------------------------------------------------------------- */

double keel_ulp32(double m)
{
    m = fabs(m);
    if (!(m >= FLT_MIN)) /* subnormal, zero (or NaN): the fixed spacing of the subnormals */
        return 0x1.0p-149;
    if (m >= FLT_MAX)
        return 0x1.0p104;
    int e;
    frexp(m, &e); /* m = f * 2^e with f in [0.5, 1): float32 spacing there is 2^(e-24) */
    return ldexp(1.0, e - 24);
}

/* |got - ref| with NaN matching only NaN and an infinity only itself: else +inf. */
static double abs_diff(float got, double ref)
{
    if (isnan(ref) || isnan(got))
        return isnan(ref) && isnan(got) ? 0.0 : INFINITY;
    if (isinf(ref) || isinf(got))
        return (double)got == ref ? 0.0 : INFINITY;
    return fabs((double)got - ref);
}

double keel_err_ulps_row(const float *got, const double *ref, size_t n, double floor,
                         size_t *worst)
{
    double m = isfinite(floor) ? fabs(floor) : 0.0;
    for (size_t i = 0; i < n; i++)
        if (isfinite(ref[i]) && fabs(ref[i]) > m)
            m = fabs(ref[i]);
    double ulp = keel_ulp32(m), err = 0.0;
    size_t at = 0;
    for (size_t i = 0; i < n; i++) {
        double e = abs_diff(got[i], ref[i]) / ulp;
        if (e > err) {
            err = e;
            at = i;
        }
    }
    if (worst)
        *worst = at;
    return err;
}

double keel_err_ulps_rows(const float *got, size_t stride, const double *ref, size_t rows,
                          size_t dim, const double *floors, size_t *row, size_t *index)
{
    double err = 0.0;
    size_t at_row = 0, at = 0;
    for (size_t r = 0; r < rows; r++) {
        size_t j;
        double e = keel_err_ulps_row(got + r * stride, ref + r * dim, dim,
                                     floors ? floors[r] : 0.0, &j);
        if (e > err) {
            err = e;
            at_row = r;
            at = j;
        }
    }
    if (row)
        *row = at_row;
    if (index)
        *index = at;
    return err;
}

double keel_err_ulps_each(const float *got, const double *ref, size_t n, size_t *worst)
{
    double err = 0.0;
    size_t at = 0;
    for (size_t i = 0; i < n; i++) {
        double e = abs_diff(got[i], ref[i]) / keel_ulp32(ref[i]);
        if (e > err) {
            err = e;
            at = i;
        }
    }
    if (worst)
        *worst = at;
    return err;
}

double keel_err_sum(const float *got, const double *ref, const double *mag, size_t n,
                    size_t *worst)
{
    double err = 0.0;
    size_t at = 0;
    for (size_t i = 0; i < n; i++) {
        double d = abs_diff(got[i], ref[i]);
        double e = d == 0.0 ? 0.0 : mag[i] > 0.0 ? d / (FLT_EPSILON * mag[i]) : INFINITY;
        if (e > err) {
            err = e;
            at = i;
        }
    }
    if (worst)
        *worst = at;
    return err;
}

double keel_dx_scale(size_t dim, const float *dy, const float *gamma, double rstd)
{
    double g = 0.0;
    for (size_t j = 0; j < dim; j++) {
        double t = fabs((double)dy[j] * (gamma ? (double)gamma[j] : 1.0));
        if (t > g)
            g = t;
    }
    return fabs(rstd) * g;
}

void keel_dx_floors(size_t rows, size_t dim, const float *dy, size_t dy_stride,
                    const float *gamma, const double *rstd, double *floors)
{
    for (size_t r = 0; r < rows; r++)
        floors[r] = keel_dx_scale(dim, dy + r * dy_stride, gamma, rstd[r]);
}

double keel_bound_dparam(size_t rows)
{
    return (double)rows + 4.0;
}
