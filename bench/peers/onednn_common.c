/*
 * onednn_common.c - what the oneDNN peer programs share (onednn_bench.c, interleaved_bench.c):
 * the 2.x/3.x descriptor helpers, keel bench's input generator, the bf16/f16 conversions, the
 * float64 references, a case's buffers (lnbufs) and the layer normalization primitives over
 * them (onednn_ln). onednn_common.h documents each.
 */
#include "onednn_common.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#if DNNL_VERSION_MAJOR >= 3
dnnl_status_t md_make(md_t *md, int nd, const dnnl_dims_t dims, dnnl_data_type_t dt,
                      dnnl_format_tag_t tag)
{
    return dnnl_memory_desc_create_with_tag(md, nd, dims, dt, tag);
}

void md_free(md_t *md)
{
    if (*md)
        dnnl_memory_desc_destroy(*md);
    *md = NULL;
}
#else
dnnl_status_t md_make(md_t *md, int nd, const dnnl_dims_t dims, dnnl_data_type_t dt,
                      dnnl_format_tag_t tag)
{
    return dnnl_memory_desc_init_by_tag(md, nd, dims, dt, tag);
}

void md_free(md_t *md) { (void)md; }
#endif

/* keel bench's generator: uniform in [-1, 1) */
float *alloc_fill(size_t n, uint64_t *seed)
{
    float *p = aligned_alloc(64, ((n * sizeof(float)) + 63) & ~(size_t)63);
    if (!p)
        return NULL;
    for (size_t i = 0; i < n; i++) {
        *seed = *seed * 6364136223846793005ull + 1442695040888963407ull;
        p[i] = (float)((double)(*seed >> 40) / (double)(1ull << 24)) * 2.0f - 1.0f;
    }
    return p;
}

/* the bf16 and f16 bits of a float32 and back (round to nearest even; the inputs here are
 * finite and normal or subnormal, never NaN) */
static uint16_t f32_to_bf16(float f)
{
    uint32_t u;
    memcpy(&u, &f, 4);
    u += 0x7fffu + ((u >> 16) & 1u);
    return (uint16_t)(u >> 16);
}

static float bf16_to_f32(uint16_t h)
{
    const uint32_t u = (uint32_t)h << 16;
    float f;
    memcpy(&f, &u, 4);
    return f;
}

static float f16_to_f32(uint16_t h)
{
    const int e = (h >> 10) & 31, m = h & 1023;
    const float v = e ? ldexpf((float)(1024 + m), e - 25) : ldexpf((float)m, -24);
    return h & 0x8000 ? -v : v; /* no Inf/NaN among these inputs */
}

static uint16_t f32_to_f16(float f)
{
    /* f = sign * 2^e * 1.m: keep 10 fraction bits (fewer below 2^-14), round to nearest even;
     * the inputs are in [-1, 1), no overflow */
    const uint16_t sign = signbit(f) ? 0x8000 : 0;
    const float a = fabsf(f);
    if (a == 0)
        return sign;
    int e;
    frexpf(a, &e);      /* a = frac * 2^e, frac in [0.5, 1) */
    int q = e - 1 - 10; /* the quantum: 2^(e-1-10) for a normal f16 */
    if (q < -24)
        q = -24;                        /* subnormal: 2^-24 */
    const float scaled = ldexpf(a, -q); /* exact: a power-of-two scaling */
    float r = nearbyintf(scaled);       /* ties to even in the default rounding mode */
    const uint32_t k = (uint32_t)r;     /* k * 2^q, k <= 2048 */
    /* encode k * 2^q */
    if (q == -24 && k < 1024)
        return sign | (uint16_t)k;
    int ee = q + 10, kk = (int)k; /* value = kk * 2^(ee-10), kk in [1024, 2048] */
    if (kk == 2048)
        kk = 1024, ee++;
    return sign | (uint16_t)((ee + 15) << 10) | (uint16_t)(kk - 1024);
}

/* a tensor of n elements in dtype dt made from float32 values (the values it holds are then
 * the ones the reference reads back with load()) */
void *to_dtype(const float *v, size_t n, dtype dt)
{
    if (dt == DT_F32)
        return (void *)v;
    uint16_t *p = aligned_alloc(64, ((n * 2) + 63) & ~(size_t)63);
    if (!p)
        return NULL;
    for (size_t i = 0; i < n; i++)
        p[i] = dt == DT_BF16 ? f32_to_bf16(v[i]) : f32_to_f16(v[i]);
    return p;
}

/* element i of a tensor of dtype dt, as float */
float load(const void *p, size_t i, dtype dt)
{
    switch (dt) {
    case DT_BF16:
        return bf16_to_f32(((const uint16_t *)p)[i]);
    case DT_F16:
        return f16_to_f32(((const uint16_t *)p)[i]);
    default:
        return ((const float *)p)[i];
    }
}

/* the float values of a tensor of dtype dt (a new array; p itself for float32) */
float *widen(const void *p, size_t n, dtype dt)
{
    if (dt == DT_F32)
        return (float *)p;
    float *f = malloc(n * sizeof *f);
    if (f)
        for (size_t i = 0; i < n; i++)
            f[i] = load(p, i, dt);
    return f;
}

/* the layer normalization primitive descriptors, forward_training and backward */
dnnl_status_t lnorm_fwd_pd(dnnl_primitive_desc_t *pd, dnnl_engine_t eng, md_t *data, md_t *stat,
                           unsigned flags)
{
#if DNNL_VERSION_MAJOR >= 3
    return dnnl_layer_normalization_forward_primitive_desc_create(
        pd, eng, dnnl_forward_training, *data, *data, *stat, EPS, flags, NULL);
#else
    dnnl_layer_normalization_desc_t d;
    const dnnl_status_t st = dnnl_layer_normalization_forward_desc_init(&d, dnnl_forward_training,
                                                                        data, stat, EPS, flags);
    return st != dnnl_success ? st : dnnl_primitive_desc_create(pd, &d, NULL, eng, NULL);
#endif
}

dnnl_status_t lnorm_bwd_pd(dnnl_primitive_desc_t *pd, dnnl_engine_t eng, md_t *data, md_t *stat,
                           unsigned flags, dnnl_primitive_desc_t hint)
{
#if DNNL_VERSION_MAJOR >= 3
    return dnnl_layer_normalization_backward_primitive_desc_create(
        pd, eng, dnnl_backward, *data, *data, *data, *stat, EPS, flags, hint, NULL);
#else
    dnnl_layer_normalization_desc_t d;
    const dnnl_status_t st = dnnl_layer_normalization_backward_desc_init(&d, dnnl_backward, data,
                                                                         data, stat, EPS, flags);
    return st != dnnl_success ? st : dnnl_primitive_desc_create(pd, &d, NULL, eng, hint);
#endif
}

/* max|out - ref| / max|ref| over n values; NaN in out sticks */
static double rel_vec(const float *out, const double *ref, size_t n)
{
    double emax = 0, rmax = 0;
    for (size_t j = 0; j < n; j++) {
        const double e = fabs((double)out[j] - ref[j]);
        if (!(e <= emax))
            emax = e;
        if (fabs(ref[j]) > rmax)
            rmax = fabs(ref[j]);
    }
    return emax / (rmax > 0 ? rmax : 1.0);
}

/* xhat of one row in double: (x - mean) * rstd, or x * rstd for RMSNorm (mean 0, rstd from the
 * mean square); returns rstd */
static double row_xhat(const float *xr, size_t d, int rms, double *xhat)
{
    double mu = 0;
    if (!rms) {
        for (size_t j = 0; j < d; j++)
            mu += xr[j];
        mu /= (double)d;
    }
    double v = 0;
    for (size_t j = 0; j < d; j++)
        v += (xr[j] - mu) * (xr[j] - mu);
    const double rstd = 1.0 / sqrt(v / (double)d + (double)EPS);
    for (size_t j = 0; j < d; j++)
        xhat[j] = (xr[j] - mu) * rstd;
    return rstd;
}

int check_fwd(const bcase *c, const float *x, const float *y, const float *g, const float *b,
              int rms, double *err)
{
    const size_t d = c->dim;
    double *xhat = malloc(d * sizeof(double));
    if (!xhat)
        return -1;
    double worst = 0;
    for (size_t r = 0; r < c->rows; r++) {
        row_xhat(x + r * d, d, rms, xhat);
        for (size_t j = 0; j < d; j++)
            xhat[j] = xhat[j] * g[j] + (b ? b[j] : 0.0); /* now the reference y */
        const double rel = rel_vec(y + r * d, xhat, d);
        if (!(rel <= worst))
            worst = rel; /* NaN sticks */
    }
    free(xhat);
    *err = worst;
    return 0;
}

int check_bwd(const bcase *c, const float *x, const float *dy, const float *g, const float *dx,
              const float *dg, const float *db, int rms, double *e_dx, double *e_dg, double *e_db)
{
    const size_t d = c->dim;
    double *dg_ref = calloc(d, sizeof(double)), *db_ref = calloc(d, sizeof(double));
    double *xhat = malloc(d * sizeof(double)), *ref = malloc(d * sizeof(double));
    if (!dg_ref || !db_ref || !xhat || !ref) {
        free(dg_ref), free(db_ref), free(xhat), free(ref);
        return -1;
    }
    double worst = 0;
    for (size_t r = 0; r < c->rows; r++) {
        const float *dyr = dy + r * d;
        const double rstd = row_xhat(x + r * d, d, rms, xhat);
        double mg = 0, mgx = 0;
        for (size_t j = 0; j < d; j++) {
            const double gd = (double)dyr[j] * g[j];
            mg += gd;
            mgx += gd * xhat[j];
            dg_ref[j] += (double)dyr[j] * xhat[j];
            db_ref[j] += dyr[j];
        }
        /* RMSNorm's dx has no mean(g) term: its mean is not subtracted in the forward */
        mg = rms ? 0 : mg / (double)d;
        mgx /= (double)d;
        for (size_t j = 0; j < d; j++)
            ref[j] = rstd * ((double)dyr[j] * g[j] - mg - xhat[j] * mgx);
        const double rel = rel_vec(dx + r * d, ref, d);
        if (!(rel <= worst))
            worst = rel;
    }
    *e_dx = worst;
    *e_dg = rel_vec(dg, dg_ref, d);
    *e_db = db ? rel_vec(db, db_ref, d) : 0;
    free(dg_ref), free(db_ref), free(xhat), free(ref);
    return 0;
}

/* the worst of three errors, NaN if any is NaN */
static double worst3(double a, double b, double c)
{
    if (isnan(a) || isnan(b) || isnan(c))
        return NAN;
    const double m = a > b ? a : b;
    return m > c ? m : c;
}

int lnbufs_alloc(lnbufs *B, const bcase *c, dtype dt)
{
    memset(B, 0, sizeof *B);
    B->c = *c;
    B->dt = dt;
    const size_t n = c->rows * c->dim;
    uint64_t seed = 42;
    /* float32 values from keel bench's generator, in this order whatever the dtype, so every
     * lnbufs of a case holds the same inputs */
    float *xf = alloc_fill(n, &seed), *yf = alloc_fill(n, &seed), *dyf = alloc_fill(n, &seed);
    float *dxf = alloc_fill(n, &seed);
    B->mean = alloc_fill(c->rows, &seed), B->var = alloc_fill(c->rows, &seed);
    B->g = alloc_fill(c->dim, &seed), B->b = alloc_fill(c->dim, &seed);
    B->dg = alloc_fill(c->dim, &seed), B->db = alloc_fill(c->dim, &seed);
    int ok = xf && yf && dyf && dxf && B->mean && B->var && B->g && B->b && B->dg && B->db;
    if (ok) {
        B->x = to_dtype(xf, n, dt), B->y = to_dtype(yf, n, dt);
        B->dy = to_dtype(dyf, n, dt), B->dx = to_dtype(dxf, n, dt);
        ok = B->x && B->y && B->dy && B->dx;
    }
    if (dt != DT_F32) { /* the float32 values were copies; free those not taken over */
        free(xf), free(yf), free(dyf), free(dxf);
    } else if (!ok) {
        /* to_dtype was not reached or returned its argument: the pointers are the float32 ones */
        B->x = xf, B->y = yf, B->dy = dyf, B->dx = dxf;
    }
    if (ok) {
        B->xw = widen(B->x, n, dt), B->dyw = widen(B->dy, n, dt);
        ok = B->xw && B->dyw;
    }
    if (!ok)
        lnbufs_free(B);
    return ok ? 0 : -1;
}

void lnbufs_free(lnbufs *B)
{
    if (B->xw != B->x)
        free(B->xw);
    if (B->dyw != B->dy)
        free(B->dyw);
    free(B->x), free(B->y), free(B->dy), free(B->dx);
    free(B->mean), free(B->var), free(B->g), free(B->b), free(B->dg), free(B->db);
    memset(B, 0, sizeof *B);
}

int lnbufs_check(const lnbufs *B, int bwd, int rms, char *chk, size_t len)
{
    const size_t n = B->c.rows * B->c.dim;
    const double eps = B->dt == DT_BF16 ? EPS_BF16 : EPS_F16;
    const double tol = B->dt == DT_F32 ? (bwd ? TOL_BWD : TOL_FWD) : (bwd ? 4 : 1) * eps;
    float *out = widen(bwd ? B->dx : B->y, n, B->dt);
    double e = 0, e_dg = 0, e_db = 0;
    int rc = -1;
    if (out)
        rc = bwd ? check_bwd(&B->c, B->xw, B->dyw, B->g, out, B->dg, rms ? NULL : B->db, rms, &e,
                             &e_dg, &e_db)
                 : check_fwd(&B->c, B->xw, out, B->g, rms ? NULL : B->b, rms, &e);
    if (out != (bwd ? B->dx : B->y))
        free(out);
    if (rc) {
        snprintf(chk, len, "not checked: out of memory for the reference");
        return -1;
    }
    const double worst = worst3(e, e_dg, e_db);
    const char *verdict = worst <= tol ? "ok" : "FAIL";
    if (!bwd)
        snprintf(chk, len, "%s %.1e", verdict, worst);
    else if (rms)
        snprintf(chk, len, "%s %.1e (dx %.1e, dgamma %.1e)", verdict, worst, e, e_dg);
    else
        snprintf(chk, len, "%s %.1e (dx %.1e, dgamma %.1e, dbeta %.1e)", verdict, worst, e, e_dg,
                 e_db);
    return worst <= tol ? 0 : 1;
}

/* (a local buffer for TRY, copied to the caller's at the end) */
int onednn_ln_create(onednn_ln *P, dnnl_engine_t eng, lnbufs *B, char *why, size_t len)
{
    char err[256] = "";
    memset(P, 0, sizeof *P);
    P->fimpl = P->bimpl = "?";
    const dtype dt = B->dt;
    const char *dtn = dt == DT_F16 ? "f16" : dt == DT_BF16 ? "bf16" : "f32";
    const dnnl_version_t *v = dnnl_version();
    const dnnl_data_type_t ddt = dt == DT_F32 ? dnnl_f32 : dt == DT_BF16 ? dnnl_bf16 : dnnl_f16;
    dnnl_dims_t ddims = {(dnnl_dim_t)B->c.rows, (dnnl_dim_t)B->c.dim};
    dnnl_dims_t sdims = {(dnnl_dim_t)B->c.rows};
    dnnl_dims_t pdims = {(dnnl_dim_t)B->c.dim};
    TRY(md_make(&P->data_md, 2, ddims, ddt, dnnl_ab));
    TRY(md_make(&P->stat_md, 1, sdims, dnnl_f32, dnnl_a));
    TRY(md_make(&P->param_md, 1, pdims, dnnl_f32, dnnl_a));
    const unsigned flags = dnnl_use_scale | dnnl_use_shift;

    dnnl_status_t st = lnorm_fwd_pd(&P->fpd, eng, &P->data_md, &P->stat_md, flags);
    if (st == dnnl_unimplemented) {
        snprintf(err, sizeof err,
                 "not available: oneDNN %d.%d.%d has no CPU layer normalization for %s data",
                 v->major, v->minor, v->patch, dtn);
        goto fail;
    }
    TRY(st);
    TRY(dnnl_primitive_create(&P->fwd, P->fpd));
    dnnl_primitive_desc_query(P->fpd, dnnl_query_impl_info_str, 0, &P->fimpl);
    st = lnorm_bwd_pd(&P->bpd, eng, &P->data_md, &P->stat_md, flags, P->fpd);
    if (st == dnnl_unimplemented) {
        /* the forward alone; why says so */
        snprintf(err, sizeof err,
                 "not available: oneDNN %d.%d.%d has no CPU layer normalization backward for %s "
                 "data",
                 v->major, v->minor, v->patch, dtn);
    } else {
        TRY(st);
        TRY(dnnl_primitive_create(&P->bwd, P->bpd));
        dnnl_primitive_desc_query(P->bpd, dnnl_query_impl_info_str, 0, &P->bimpl);
    }

    void *const bufs[ONEDNN_LN_NMEM] = {B->x,   B->y, B->dy, B->dx, B->mean,
                                        B->var, B->g, B->b,  B->dg, B->db};
    for (int i = 0; i < ONEDNN_LN_NMEM; i++) {
        const md_t *md = i < 4 ? &P->data_md : i < 6 ? &P->stat_md : &P->param_md;
        TRY(dnnl_memory_create(&P->mem[i], MD(*md), eng, bufs[i]));
    }
    /* mem: x, y, dy, dx, mean, var, g, b, dg, db */
    const dnnl_exec_arg_t fargs[] = {
        {DNNL_ARG_SRC, P->mem[0]},      {DNNL_ARG_DST, P->mem[1]},   {DNNL_ARG_MEAN, P->mem[4]},
        {DNNL_ARG_VARIANCE, P->mem[5]}, {DNNL_ARG_SCALE, P->mem[6]}, {DNNL_ARG_SHIFT, P->mem[7]},
    };
    const dnnl_exec_arg_t bargs[] = {
        {DNNL_ARG_SRC, P->mem[0]},        {DNNL_ARG_DIFF_DST, P->mem[2]},
        {DNNL_ARG_MEAN, P->mem[4]},       {DNNL_ARG_VARIANCE, P->mem[5]},
        {DNNL_ARG_SCALE, P->mem[6]},      {DNNL_ARG_SHIFT, P->mem[7]},
        {DNNL_ARG_DIFF_SRC, P->mem[3]},   {DNNL_ARG_DIFF_SCALE, P->mem[8]},
        {DNNL_ARG_DIFF_SHIFT, P->mem[9]},
    };
    memcpy(P->fargs, fargs, sizeof fargs);
    memcpy(P->bargs, bargs, sizeof bargs);
    snprintf(why, len, "%s", err);
    return 0;
fail:
    snprintf(why, len, "%s", err);
    onednn_ln_destroy(P);
    return -1;
}

dnnl_status_t onednn_ln_run(onednn_ln *P, dnnl_stream_t stream, int bwd)
{
    const dnnl_status_t st =
        bwd ? dnnl_primitive_execute(P->bwd, stream, ONEDNN_LN_NBARGS, P->bargs)
            : dnnl_primitive_execute(P->fwd, stream, ONEDNN_LN_NFARGS, P->fargs);
    return st != dnnl_success ? st : dnnl_stream_wait(stream);
}

void onednn_ln_destroy(onednn_ln *P)
{
    for (int i = 0; i < ONEDNN_LN_NMEM; i++)
        if (P->mem[i])
            dnnl_memory_destroy(P->mem[i]);
    if (P->fwd)
        dnnl_primitive_destroy(P->fwd);
    if (P->bwd)
        dnnl_primitive_destroy(P->bwd);
    if (P->fpd)
        dnnl_primitive_desc_destroy(P->fpd);
    if (P->bpd)
        dnnl_primitive_desc_destroy(P->bpd);
    md_free(&P->data_md), md_free(&P->stat_md), md_free(&P->param_md);
    memset(P, 0, sizeof *P);
}

const char *onednn_runtime_name(const dnnl_version_t *v)
{
    return v->cpu_runtime == DNNL_RUNTIME_OMP   ? "OpenMP"
           : v->cpu_runtime == DNNL_RUNTIME_TBB ? "TBB"
                                                : "other";
}
