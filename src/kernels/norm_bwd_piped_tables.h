/* The instance tables of the plain norms' backward row pipelines, written once for every SIMD
 * path: one instance of the body's ln_bwd_piped / rms_bwd_piped for each combination of its
 * flags (constants inside), over the body's row storage (kx_t: row_storage_simd.h). Included by f32_layernorm_simd.h with NORM_BWD_PIPED_LN defined, by
 * f32_rmsnorm_simd.h with NORM_BWD_PIPED_RMS, after the driver. */
#include "variants.h"

#ifdef NORM_BWD_PIPED_LN
/* LayerNorm: the 5 flags (dx, accumulate, gamma, dgamma, dbeta). */
typedef void (*ln_piped_fn)(size_t, size_t, const kx_t *, size_t, const kx_t *, size_t,
                            const float *, const float *, const float *, kx_t *, size_t, float *,
                            float *, int);
#define LN_PIPED_VARIANT(i)                                                                      \
    static void ln_piped_##i(size_t rows, size_t dim, const kx_t *dy, size_t dys,                \
                             const kx_t *x, size_t xs, const float *mean, const float *rstd,     \
                             const float *gamma, kx_t *dx, size_t dxs, float *dg, float *db,     \
                             int stream)                                                         \
    {                                                                                            \
        ln_bwd_piped(rows, dim, dy, dys, x, xs, mean, rstd, gamma, dx, dxs, dg, db, stream,      \
                     (i) & 1, ((i) >> 1) & 1, ((i) >> 2) & 1, ((i) >> 3) & 1, ((i) >> 4) & 1);   \
    }
KEEL_EACH32(LN_PIPED_VARIANT)
#undef LN_PIPED_VARIANT
static const ln_piped_fn ln_piped_table[32] = {KEEL_LIST32(ln_piped_)};
#undef NORM_BWD_PIPED_LN
#endif

#ifdef NORM_BWD_PIPED_RMS
/* RMSNorm: the 3 flags (accumulate, gamma, dgamma). */
typedef void (*rms_piped_fn)(size_t, size_t, const kx_t *, size_t, const kx_t *, size_t,
                             const float *, const float *, kx_t *, size_t, float *, int);
#define RMS_PIPED_VARIANT(i)                                                                     \
    static void rms_piped_##i(size_t rows, size_t dim, const kx_t *dy, size_t dys,               \
                              const kx_t *x, size_t xs, const float *rstd, const float *gamma,   \
                              kx_t *dx, size_t dxs, float *dg, int stream)                       \
    {                                                                                            \
        rms_bwd_piped(rows, dim, dy, dys, x, xs, rstd, gamma, dx, dxs, dg, stream, (i) & 1,      \
                      ((i) >> 1) & 1, ((i) >> 2) & 1);                                           \
    }
KEEL_EACH8(RMS_PIPED_VARIANT)
#undef RMS_PIPED_VARIANT
static const rms_piped_fn rms_piped_table[8] = {KEEL_LIST8(rms_piped_)};
#undef NORM_BWD_PIPED_RMS
#endif
