/*
 * onednn_bench.c - oneDNN layer normalization (forward and backward, float32) on the cases of
 * `keel bench`, checked against a double-precision reference before it is timed.
 *
 * Build: cc -O2 -std=c11 -fopenmp onednn_bench.c -o onednn_bench -ldnnl -lm
 * It compiles against oneDNN 2.x (Debian's 2.6: operation descriptors, memory descriptors as
 * structs) and 3.x (the PyPI wheels' 3.2: primitive descriptors made directly, memory
 * descriptors as opaque handles), chosen by DNNL_VERSION_MAJOR; e.g. against the wheels:
 *   cc -O2 -std=c11 -fopenmp -I$PREFIX/include onednn_bench.c -o onednn3_bench \
 *      -L$PREFIX/lib -l:libdnnl.so.3 -Wl,-rpath,$PREFIX/lib -lm
 * RMSNorm: layer normalization's rms_norm flag arrived in oneDNN 3.3; 2.6 and 3.2 have none, and
 * their rows say so.
 * Usage: onednn_bench THREADS [--quick] [--dtype f32|bf16|f16|i8|lowp]
 *        onednn_bench --version   (the loaded library's dnnl_version(): "oneDNN 3.2.0 (cpu runtime OpenMP, ...)")
 *   --dtype  the tensors' dtype (default f32); lowp = bf16, f16 and i8. In bf16/f16, src, dst,
 *            diff_dst and diff_src are in that dtype (ops "layernorm fwd bf16", ...), scale,
 *            shift, their gradients and the statistics float32, as in keel; bytes counted at
 *            2 an element. i8 (int8 output) rows say why they are not run: oneDNN 2.6's layer
 *            normalization takes one data descriptor for src and dst (3.x would take an s8 dst with
 *            a static scale; not timed here).
 *
 * Prints Markdown table rows (no header) on stdout:
 *   | peer | op | rows x dim | us | GB/s | check (max rel err) |
 * progress on stderr. Bytes counted as keel bench does: forward reads x and writes y
 * (2 * rows * dim * 4), backward reads x and dy and writes dx (3 * rows * dim * 4).
 * The forward is prop_kind forward_training (it writes mean and variance, as keel bench's forward
 * writes mean and rstd); the backward is prop_kind backward with use_scale | use_shift, so it
 * computes dx, dscale and dshift from the forward's mean and variance.
 * Threads: Debian's libdnnl2 uses the OpenMP runtime (libgomp), so the count is set with
 * omp_set_num_threads (run.sh also sets OMP_NUM_THREADS).
 */
#define _POSIX_C_SOURCE 200809L
#include <math.h>
#include <omp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <oneapi/dnnl/dnnl.h>
#include <oneapi/dnnl/dnnl_version.h>

/* the API differences of 2.x and 3.x, behind md_t and three helpers */
#if DNNL_VERSION_MAJOR >= 3
typedef dnnl_memory_desc_t md_t; /* an opaque handle, created and destroyed */
#define MD(m) (m)
static dnnl_status_t md_make(md_t *md, int nd, const dnnl_dims_t dims, dnnl_data_type_t dt, dnnl_format_tag_t tag)
{
    return dnnl_memory_desc_create_with_tag(md, nd, dims, dt, tag);
}
static void md_free(md_t *md)
{
    if (*md)
        dnnl_memory_desc_destroy(*md);
    *md = NULL;
}
#else
typedef dnnl_memory_desc_t md_t; /* a struct */
#define MD(m) (&(m))
static dnnl_status_t md_make(md_t *md, int nd, const dnnl_dims_t dims, dnnl_data_type_t dt, dnnl_format_tag_t tag)
{
    return dnnl_memory_desc_init_by_tag(md, nd, dims, dt, tag);
}
static void md_free(md_t *md)
{
    (void)md;
}
#endif

#define EPS 1e-5f
#define TOL_FWD 1e-5
#define TOL_BWD 1e-4
/* bf16/f16: the output is rounded to the dtype, so the bound is the dtype's epsilon (2^-7,
 * 2^-10) relative to the row's largest value: one ulp there, twice the rounding alone; the
 * backward four. */
#define EPS_BF16 (1.0 / 128)
#define EPS_F16 (1.0 / 1024)
#define TIME_BUDGET_S 0.3
#define MAX_REPS 200
#define MIN_REPS 7
#define MIN_REPS_BIG 3
#define BIG_ELEMS ((size_t)1 << 26)

typedef struct {
    size_t rows, dim;
} bcase;

static const bcase all_cases[] = {
    {4096, 16}, {4096, 64}, {256, 1024}, {4096, 768}, {4096, 1024},
    {4096, 4096}, {1024, 8192}, {16384, 8192},
};
static const bcase quick_cases[] = {{4096, 768}};

static char peer[64];

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static int cmp_double(const void *a, const void *b)
{
    const double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* keel bench's generator: uniform in [-1, 1) */
static float *alloc_fill(size_t n, uint64_t *seed)
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

/* the storage dtypes: float32, bf16 and f16 bits (round to nearest even; the inputs here are
 * finite and normal or subnormal, never NaN) */
typedef enum { DT_F32, DT_BF16, DT_F16 } dtype;
static const char *const dt_suffix[] = {"", " bf16", " f16"};

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
    frexpf(a, &e); /* a = frac * 2^e, frac in [0.5, 1) */
    int q = e - 1 - 10; /* the quantum: 2^(e-1-10) for a normal f16 */
    if (q < -24)
        q = -24; /* subnormal: 2^-24 */
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
static void *to_dtype(const float *v, size_t n, dtype dt)
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
static float load(const void *p, size_t i, dtype dt)
{
    switch (dt) {
    case DT_BF16: return bf16_to_f32(((const uint16_t *)p)[i]);
    case DT_F16: return f16_to_f32(((const uint16_t *)p)[i]);
    default: return ((const float *)p)[i];
    }
}

/* the float values of a tensor of dtype dt (a new array; p itself for float32) */
static float *widen(const void *p, size_t n, dtype dt)
{
    if (dt == DT_F32)
        return (float *)p;
    float *f = malloc(n * sizeof *f);
    if (f)
        for (size_t i = 0; i < n; i++)
            f[i] = load(p, i, dt);
    return f;
}

static void print_row(const char *op, const char *shape, double us, double gbs, const char *check)
{
    if (us < 0)
        printf("| %s | %s | %s | - | - | %s |\n", peer, op, shape, check);
    else
        printf("| %s | %s | %s | %.1f | %.1f | %s |\n", peer, op, shape, us, gbs, check);
    fflush(stdout);
}

/* the layer normalization primitive descriptors, forward_training and backward */
static dnnl_status_t lnorm_fwd_pd(dnnl_primitive_desc_t *pd, dnnl_engine_t eng, md_t *data, md_t *stat,
                                  unsigned flags)
{
#if DNNL_VERSION_MAJOR >= 3
    return dnnl_layer_normalization_forward_primitive_desc_create(pd, eng, dnnl_forward_training, *data, *data,
                                                                  *stat, EPS, flags, NULL);
#else
    dnnl_layer_normalization_desc_t d;
    const dnnl_status_t st =
        dnnl_layer_normalization_forward_desc_init(&d, dnnl_forward_training, data, stat, EPS, flags);
    return st != dnnl_success ? st : dnnl_primitive_desc_create(pd, &d, NULL, eng, NULL);
#endif
}

static dnnl_status_t lnorm_bwd_pd(dnnl_primitive_desc_t *pd, dnnl_engine_t eng, md_t *data, md_t *stat,
                                  unsigned flags, dnnl_primitive_desc_t hint)
{
#if DNNL_VERSION_MAJOR >= 3
    return dnnl_layer_normalization_backward_primitive_desc_create(pd, eng, dnnl_backward, *data, *data, *data,
                                                                   *stat, EPS, flags, hint, NULL);
#else
    dnnl_layer_normalization_desc_t d;
    const dnnl_status_t st =
        dnnl_layer_normalization_backward_desc_init(&d, dnnl_backward, data, data, stat, EPS, flags);
    return st != dnnl_success ? st : dnnl_primitive_desc_create(pd, &d, NULL, eng, hint);
#endif
}

#define TRY(call)                                                                                  \
    do {                                                                                           \
        dnnl_status_t st_ = (call);                                                                \
        if (st_ != dnnl_success) {                                                                 \
            snprintf(err, sizeof err, "not run: %s failed (dnnl status %d)", #call, (int)st_);     \
            goto fail;                                                                             \
        }                                                                                          \
    } while (0)

static double time_exec(dnnl_primitive_t prim, dnnl_stream_t stream, int nargs, const dnnl_exec_arg_t *args,
                        int big)
{
    dnnl_primitive_execute(prim, stream, nargs, args); /* warm-up */
    dnnl_stream_wait(stream);
    double t0 = now_s();
    dnnl_primitive_execute(prim, stream, nargs, args);
    dnnl_stream_wait(stream);
    const double t1 = now_s() - t0;
    int reps = t1 > 0 ? (int)(TIME_BUDGET_S / t1) : MAX_REPS;
    if (reps > MAX_REPS)
        reps = MAX_REPS;
    if (reps < MIN_REPS)
        reps = MIN_REPS;
    if (big)
        reps = MIN_REPS_BIG;
    double *ts = malloc((size_t)reps * sizeof *ts);
    if (!ts)
        return -1;
    for (int r = 0; r < reps; r++) {
        t0 = now_s();
        dnnl_primitive_execute(prim, stream, nargs, args);
        dnnl_stream_wait(stream);
        ts[r] = now_s() - t0;
    }
    qsort(ts, (size_t)reps, sizeof *ts, cmp_double);
    const double m = reps % 2 ? ts[reps / 2] : 0.5 * (ts[reps / 2 - 1] + ts[reps / 2]);
    free(ts);
    return m;
}

/* worst over rows of max|y - ref| / max|ref| of the row */
static double check_fwd(const bcase *c, const float *x, const float *y, const float *g, const float *b)
{
    double worst = 0;
    for (size_t r = 0; r < c->rows; r++) {
        const float *xr = x + r * c->dim, *yr = y + r * c->dim;
        double s = 0;
        for (size_t j = 0; j < c->dim; j++)
            s += xr[j];
        const double mu = s / (double)c->dim;
        double v = 0;
        for (size_t j = 0; j < c->dim; j++)
            v += (xr[j] - mu) * (xr[j] - mu);
        const double rstd = 1.0 / sqrt(v / (double)c->dim + (double)EPS);
        double emax = 0, rmax = 0;
        for (size_t j = 0; j < c->dim; j++) {
            const double ref = (xr[j] - mu) * rstd * g[j] + b[j];
            const double e = fabs((double)yr[j] - ref);
            if (!(e <= emax))
                emax = e; /* NaN sticks */
            if (fabs(ref) > rmax)
                rmax = fabs(ref);
        }
        const double rel = emax / (rmax > 0 ? rmax : 1.0);
        if (!(rel <= worst))
            worst = rel;
    }
    return worst;
}

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

/* dx per row (centred form), dgamma and dbeta over all rows; returns 0 or -1 (out of memory) */
static int check_bwd(const bcase *c, const float *x, const float *dy, const float *g, const float *dx,
                     const float *dg, const float *db, double *e_dx, double *e_dg, double *e_db)
{
    const size_t d = c->dim;
    double *dg_ref = calloc(d, sizeof(double)), *db_ref = calloc(d, sizeof(double));
    double *xhat = malloc(d * sizeof(double));
    if (!dg_ref || !db_ref || !xhat) {
        free(dg_ref), free(db_ref), free(xhat);
        return -1;
    }
    double worst = 0;
    for (size_t r = 0; r < c->rows; r++) {
        const float *xr = x + r * d, *dyr = dy + r * d, *dxr = dx + r * d;
        double s = 0;
        for (size_t j = 0; j < d; j++)
            s += xr[j];
        const double mu = s / (double)d;
        double v = 0;
        for (size_t j = 0; j < d; j++)
            v += (xr[j] - mu) * (xr[j] - mu);
        const double rstd = 1.0 / sqrt(v / (double)d + (double)EPS);
        double mg = 0, mgx = 0;
        for (size_t j = 0; j < d; j++) {
            xhat[j] = (xr[j] - mu) * rstd;
            const double gd = (double)dyr[j] * g[j];
            mg += gd;
            mgx += gd * xhat[j];
            dg_ref[j] += (double)dyr[j] * xhat[j];
            db_ref[j] += dyr[j];
        }
        mg /= (double)d;
        mgx /= (double)d;
        double emax = 0, rmax = 0;
        for (size_t j = 0; j < d; j++) {
            const double ref = rstd * ((double)dyr[j] * g[j] - mg - xhat[j] * mgx);
            const double e = fabs((double)dxr[j] - ref);
            if (!(e <= emax))
                emax = e;
            if (fabs(ref) > rmax)
                rmax = fabs(ref);
        }
        const double rel = emax / (rmax > 0 ? rmax : 1.0);
        if (!(rel <= worst))
            worst = rel;
    }
    *e_dx = worst;
    *e_dg = rel_vec(dg, dg_ref, d);
    *e_db = rel_vec(db, db_ref, d);
    free(dg_ref), free(db_ref), free(xhat);
    return 0;
}

static void run_case(dnnl_engine_t eng, dnnl_stream_t stream, const bcase *c, dtype dt)
{
    char err[256] = "", shape[32], chk[160], op_f[40], op_b[40];
    snprintf(shape, sizeof shape, "%zux%zu", c->rows, c->dim);
    snprintf(op_f, sizeof op_f, "layernorm fwd%s", dt_suffix[dt]);
    snprintf(op_b, sizeof op_b, "layernorm bwd%s", dt_suffix[dt]);
    const size_t n = c->rows * c->dim, esize = dt == DT_F32 ? 4 : 2;
    const double tol_f = dt == DT_F32 ? TOL_FWD : dt == DT_BF16 ? EPS_BF16 : EPS_F16;
    const double tol_b = dt == DT_F32 ? TOL_BWD : 4 * (dt == DT_BF16 ? EPS_BF16 : EPS_F16);
    const int big = n >= BIG_ELEMS;
    uint64_t seed = 42;
    /* float32 values from keel bench's generator; x, dy (inputs) and y, dx (outputs) in dt */
    float *xf = alloc_fill(n, &seed), *yf = alloc_fill(n, &seed), *dyf = alloc_fill(n, &seed);
    float *dxf = alloc_fill(n, &seed), *mean = alloc_fill(c->rows, &seed), *var = alloc_fill(c->rows, &seed);
    float *g = alloc_fill(c->dim, &seed), *b = alloc_fill(c->dim, &seed);
    float *dg = alloc_fill(c->dim, &seed), *db = alloc_fill(c->dim, &seed);
    void *x = NULL, *y = NULL, *dy = NULL, *dx = NULL;
    float *xw = NULL, *dyw = NULL, *out = NULL; /* the inputs as stored, widened; an output widened */
    dnnl_primitive_desc_t fpd = NULL, bpd = NULL;
    dnnl_primitive_t fwd = NULL, bwd = NULL;
    dnnl_memory_t mx = NULL, my = NULL, mdy = NULL, mdx = NULL, mmean = NULL, mvar = NULL;
    dnnl_memory_t mg = NULL, mb = NULL, mdg = NULL, mdb = NULL;
    int fwd_done = 0;
    md_t data_md = {0}, stat_md = {0}, param_md = {0};
    if (!xf || !yf || !dyf || !dxf || !mean || !var || !g || !b || !dg || !db) {
        snprintf(err, sizeof err, "not run: out of memory");
        goto fail;
    }
    x = to_dtype(xf, n, dt), y = to_dtype(yf, n, dt), dy = to_dtype(dyf, n, dt), dx = to_dtype(dxf, n, dt);
    if (!x || !y || !dy || !dx) {
        snprintf(err, sizeof err, "not run: out of memory");
        goto fail;
    }
    xw = widen(x, n, dt), dyw = widen(dy, n, dt);
    if (!xw || !dyw) {
        snprintf(err, sizeof err, "not run: out of memory");
        goto fail;
    }

    const dnnl_data_type_t ddt = dt == DT_F32 ? dnnl_f32 : dt == DT_BF16 ? dnnl_bf16 : dnnl_f16;
    dnnl_dims_t ddims = {(dnnl_dim_t)c->rows, (dnnl_dim_t)c->dim};
    dnnl_dims_t sdims = {(dnnl_dim_t)c->rows};
    dnnl_dims_t pdims = {(dnnl_dim_t)c->dim};
    TRY(md_make(&data_md, 2, ddims, ddt, dnnl_ab));
    TRY(md_make(&stat_md, 1, sdims, dnnl_f32, dnnl_a));
    TRY(md_make(&param_md, 1, pdims, dnnl_f32, dnnl_a));
    const unsigned flags = dnnl_use_scale | dnnl_use_shift;

    {
        const dnnl_status_t st = lnorm_fwd_pd(&fpd, eng, &data_md, &stat_md, flags);
        if (st == dnnl_unimplemented) {
            snprintf(err, sizeof err, "not available: oneDNN %s has no CPU layer normalization for %s data",
                     peer + 7, dt == DT_F16 ? "f16" : dt == DT_BF16 ? "bf16" : "f32");
            goto fail;
        }
        TRY(st);
    }
    TRY(dnnl_primitive_create(&fwd, fpd));
    const char *fimpl = "?", *bimpl = "?";
    dnnl_primitive_desc_query(fpd, dnnl_query_impl_info_str, 0, &fimpl);
    {
        const dnnl_status_t st = lnorm_bwd_pd(&bpd, eng, &data_md, &stat_md, flags, fpd);
        if (st == dnnl_unimplemented) {
            /* the forward alone */
            snprintf(err, sizeof err, "not available: oneDNN %s has no CPU layer normalization backward for %s data",
                     peer + 7, dt == DT_F16 ? "f16" : "bf16");
        } else {
            TRY(st);
            TRY(dnnl_primitive_create(&bwd, bpd));
            dnnl_primitive_desc_query(bpd, dnnl_query_impl_info_str, 0, &bimpl);
        }
    }
    fprintf(stderr, "[onednn] %s%s: forward impl %s, backward impl %s\n", shape, dt_suffix[dt], fimpl,
            bwd ? bimpl : "(none)");

    TRY(dnnl_memory_create(&mx, MD(data_md), eng, x));
    TRY(dnnl_memory_create(&my, MD(data_md), eng, y));
    TRY(dnnl_memory_create(&mdy, MD(data_md), eng, dy));
    TRY(dnnl_memory_create(&mdx, MD(data_md), eng, dx));
    TRY(dnnl_memory_create(&mmean, MD(stat_md), eng, mean));
    TRY(dnnl_memory_create(&mvar, MD(stat_md), eng, var));
    TRY(dnnl_memory_create(&mg, MD(param_md), eng, g));
    TRY(dnnl_memory_create(&mb, MD(param_md), eng, b));
    TRY(dnnl_memory_create(&mdg, MD(param_md), eng, dg));
    TRY(dnnl_memory_create(&mdb, MD(param_md), eng, db));

    const dnnl_exec_arg_t fargs[] = {
        {DNNL_ARG_SRC, mx}, {DNNL_ARG_DST, my}, {DNNL_ARG_MEAN, mmean},
        {DNNL_ARG_VARIANCE, mvar}, {DNNL_ARG_SCALE, mg}, {DNNL_ARG_SHIFT, mb},
    };
    const dnnl_exec_arg_t bargs[] = {
        {DNNL_ARG_SRC, mx}, {DNNL_ARG_DIFF_DST, mdy}, {DNNL_ARG_MEAN, mmean},
        {DNNL_ARG_VARIANCE, mvar}, {DNNL_ARG_SCALE, mg}, {DNNL_ARG_SHIFT, mb},
        {DNNL_ARG_DIFF_SRC, mdx}, {DNNL_ARG_DIFF_SCALE, mdg}, {DNNL_ARG_DIFF_SHIFT, mdb},
    };
    const int nf = (int)(sizeof fargs / sizeof fargs[0]), nb = (int)(sizeof bargs / sizeof bargs[0]);
    const double gb_f = 2.0 * (double)(n * esize) / 1e9, gb_b = 3.0 * (double)(n * esize) / 1e9;

    /* forward: check, then time */
    TRY(dnnl_primitive_execute(fwd, stream, nf, fargs));
    TRY(dnnl_stream_wait(stream));
    out = widen(y, n, dt);
    if (!out) {
        snprintf(err, sizeof err, "not run: out of memory for the reference");
        goto fail;
    }
    const double e_y = check_fwd(c, xw, out, g, b);
    if (out != y)
        free(out);
    out = NULL;
    snprintf(chk, sizeof chk, "%s %.1e", e_y <= tol_f ? "ok" : "FAIL", e_y);
    double t = time_exec(fwd, stream, nf, fargs, big);
    print_row(op_f, shape, t * 1e6, gb_f / t, chk);
    fprintf(stderr, "[onednn] %s %s: %.1f us, err %.2e\n", op_f, shape, t * 1e6, e_y);
    fwd_done = 1;
    if (!bwd)
        goto fail; /* err says why */

    /* backward from the forward's mean and variance (the last forward run wrote them) */
    TRY(dnnl_primitive_execute(bwd, stream, nb, bargs));
    TRY(dnnl_stream_wait(stream));
    out = widen(dx, n, dt);
    double e_dx, e_dg, e_db;
    if (!out || check_bwd(c, xw, dyw, g, out, dg, db, &e_dx, &e_dg, &e_db)) {
        snprintf(err, sizeof err, "not run: out of memory for the reference");
        goto fail;
    }
    if (out != dx)
        free(out);
    out = NULL;
    double worst = e_dx > e_dg ? e_dx : e_dg;
    worst = worst > e_db ? worst : e_db;
    if (isnan(e_dx) || isnan(e_dg) || isnan(e_db))
        worst = NAN;
    snprintf(chk, sizeof chk, "%s %.1e (dx %.1e, dgamma %.1e, dbeta %.1e)", worst <= tol_b ? "ok" : "FAIL",
             worst, e_dx, e_dg, e_db);
    t = time_exec(bwd, stream, nb, bargs, big);
    print_row(op_b, shape, t * 1e6, gb_b / t, chk);
    fprintf(stderr, "[onednn] %s %s: %.1f us, err dx %.2e dg %.2e db %.2e\n", op_b, shape, t * 1e6, e_dx,
            e_dg, e_db);
    goto done;

fail:
    fprintf(stderr, "[onednn] %s%s: %s\n", shape, dt_suffix[dt], err);
    if (!fwd_done)
        print_row(op_f, shape, -1, 0, err);
    print_row(op_b, shape, -1, 0, err);
done:;
    if (out && out != y && out != dx)
        free(out);
    dnnl_memory_t mems[] = {mx, my, mdy, mdx, mmean, mvar, mg, mb, mdg, mdb};
    for (size_t i = 0; i < sizeof mems / sizeof mems[0]; i++)
        if (mems[i])
            dnnl_memory_destroy(mems[i]);
    if (fwd)
        dnnl_primitive_destroy(fwd);
    if (bwd)
        dnnl_primitive_destroy(bwd);
    if (fpd)
        dnnl_primitive_desc_destroy(fpd);
    md_free(&data_md), md_free(&stat_md), md_free(&param_md);
    if (bpd)
        dnnl_primitive_desc_destroy(bpd);
    if (dt != DT_F32) {
        free(x), free(y), free(dy), free(dx), free(xw), free(dyw);
    }
    free(xf), free(yf), free(dyf), free(dxf), free(mean), free(var), free(g), free(b), free(dg), free(db);
}

static void usage(void)
{
    fprintf(stderr, "usage: onednn_bench THREADS [--quick] [--dtype f32|bf16|f16|i8|lowp]\n");
}

int main(int argc, char **argv)
{
    if (argc == 2 && !strcmp(argv[1], "--version")) {
        /* the library this program loaded, as dnnl_version() reports it (run.sh logs it) */
        const dnnl_version_t *v = dnnl_version();
        printf("oneDNN %d.%d.%d (cpu runtime %s, git %s)\n", v->major, v->minor, v->patch,
               v->cpu_runtime == DNNL_RUNTIME_OMP ? "OpenMP" : v->cpu_runtime == DNNL_RUNTIME_TBB ? "TBB" : "other",
               v->hash);
        return 0;
    }
    int threads = argc > 1 ? atoi(argv[1]) : 0;
    int quick = 0;
    unsigned dts = 1u << DT_F32, i8 = 0;
    for (int i = 2; i < argc; i++) {
        if (!strcmp(argv[i], "--quick")) {
            quick = 1;
        } else if (!strcmp(argv[i], "--dtype") && i + 1 < argc) {
            const char *v = argv[++i];
            if (!strcmp(v, "f32"))
                dts = 1u << DT_F32;
            else if (!strcmp(v, "bf16"))
                dts = 1u << DT_BF16;
            else if (!strcmp(v, "f16"))
                dts = 1u << DT_F16;
            else if (!strcmp(v, "i8"))
                dts = 0, i8 = 1;
            else if (!strcmp(v, "lowp"))
                dts = 1u << DT_BF16 | 1u << DT_F16, i8 = 1;
            else {
                usage();
                return 2;
            }
        } else {
            usage();
            return 2;
        }
    }
    if (threads <= 0) {
        usage();
        return 2;
    }
    omp_set_num_threads(threads);
    const dnnl_version_t *v = dnnl_version();
    snprintf(peer, sizeof peer, "oneDNN %d.%d.%d", v->major, v->minor, v->patch);
    fprintf(stderr, "[onednn] %s (cpu runtime %s), %d OpenMP thread(s)\n", peer,
            v->cpu_runtime == DNNL_RUNTIME_OMP ? "OpenMP" : v->cpu_runtime == DNNL_RUNTIME_TBB ? "TBB" : "other",
            omp_get_max_threads());
    dnnl_engine_t eng;
    dnnl_stream_t stream;
    if (dnnl_engine_create(&eng, dnnl_cpu, 0) != dnnl_success ||
        dnnl_stream_create(&stream, eng, dnnl_stream_default_flags) != dnnl_success) {
        print_row("layernorm fwd", "all", -1, 0, "not run: cannot create the oneDNN CPU engine");
        print_row("layernorm bwd", "all", -1, 0, "not run: cannot create the oneDNN CPU engine");
        return 1;
    }
    const bcase *cases = quick ? quick_cases : all_cases;
    const size_t nc = quick ? 1 : sizeof all_cases / sizeof all_cases[0];
    char why[160], op[48];
    for (int dt = DT_F32; dt <= DT_F16; dt++) {
        if (!(dts & 1u << dt))
            continue;
        for (size_t i = 0; i < nc; i++)
            run_case(eng, stream, &cases[i], (dtype)dt);
        snprintf(why, sizeof why, "not available: oneDNN %d.%d has no RMSNorm (layer normalization's rms_norm flag came in 3.3)", v->major, v->minor);
        snprintf(op, sizeof op, "rmsnorm fwd%s", dt_suffix[dt]);
        print_row(op, "all", -1, 0, why);
        snprintf(op, sizeof op, "rmsnorm bwd%s", dt_suffix[dt]);
        print_row(op, "all", -1, 0, why);
    }
    if (i8) {
        /* keel bench's int8-output rows: x in f32 or bf16 -> int8 y, dynamic or static scale */
#if DNNL_VERSION_MAJOR >= 3
        /* 3.x takes separate src and dst descriptors (an s8 dst with a static scale), but there is
         * no per-row dynamic scale; not timed here */
        snprintf(why, sizeof why, "not measured: the int8-output layer normalization of oneDNN %d.%d is not timed here",
                 v->major, v->minor);
#else
        snprintf(why, sizeof why,
                 "not available: oneDNN %d.%d layer normalization has one data type for src and dst (no int8 output)",
                 v->major, v->minor);
#endif
        static const char *const i8_ops[] = {"layernorm fwd %s>i8 dyn", "layernorm fwd %s>i8 static",
                                             "rmsnorm fwd %s>i8 dyn", "rmsnorm fwd %s>i8 static"};
        for (int in = 0; in < 2; in++)
            for (int k = 0; k < 4; k++) {
                snprintf(op, sizeof op, i8_ops[k], in ? "bf16" : "f32");
                print_row(op, "all", -1, 0, why);
            }
    }
    dnnl_stream_destroy(stream);
    dnnl_engine_destroy(eng);
    return 0;
}
