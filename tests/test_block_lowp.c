/*
 * test_block_lowp: bf16/f16 tensors through the transformer-block operations (keel.h,
 * "Transformer blocks" and "Low precision"): fused add + LayerNorm / RMSNorm forward and
 * backward, LayerScale forward and backward, DyT forward and backward, on every instruction-set
 * path this machine runs, with 1 and 3 threads.
 *
 * Every configuration draws a dtype (f32, bf16, f16) for each tensor, a shape (dims around the
 * vector widths: 1, 7, 15, 16, 17, 33, 100, 1025), random strides (the padding of a bf16/f16
 * input holds NaN: a kernel reading past dim is caught) and the options (h stored or not,
 * alpha, lambda, bias, dh, saved statistics, accumulate, in place). Two checks:
 *  - exact, what keel.h defines: the call equals the float32 call on the widened inputs with
 *    each output rounded once to its dtype (accumulating into a bf16/f16 output adds in float32
 *    and rounds once), bit for bit; mean, rstd and the parameter gradients are the float32
 *    call's bits; nothing outside the rows is written.
 *  - against the float64 reference on the stored (widened) inputs: a bf16/f16 output element
 *    within 1 ulp of its dtype at the reference value (test_lowp's bound). The allowance of
 *    test_lowp, counted and printed: where the float32 computation's own error (|f32 - ref|;
 *    bounded by test_block_ops) exceeds half a dtype ulp, as for an element that cancels to far
 *    below its row, the element may be off by half a dtype ulp (at the larger of the reference
 *    and the float32 result) plus that error. Forwards: that
 *    error may be at most KEEL_BOUND_ROW_ULPS float32 ulps of the row's largest |ref|. The
 *    fused forwards' y is judged against the reference norm of keel's own float32 h (as
 *    test_block_ops does), h against the exact residual.
 */
#include <float.h>
#include <math.h>

#include "convert.h"
#include "keel_ref_block.h"
#include "test_common.h"

/* ---- tensors of any float dtype ------------------------------------------------------------- */

typedef struct tb {
    keel_dtype dt;
    size_t rows, dim, stride;
    unsigned char *p; /* (rows + 1) * stride elements */
} tb;

static size_t dsz(keel_dtype dt) { return dt == KEEL_F32 ? 4 : 2; }
static size_t tb_bytes(const tb *t) { return (t->rows + 1) * t->stride * dsz(t->dt); }

static float round_to(keel_dtype dt, float v)
{
    if (dt == KEEL_BF16)
        return keel_bf16_bits_to_f32(keel_f32_to_bf16_bits(v));
    if (dt == KEEL_F16)
        return keel_f16_bits_to_f32(keel_f32_to_f16_bits(v));
    return v;
}

static float tb_get(const tb *t, size_t i)
{
    if (t->dt == KEEL_F32) {
        float f;
        memcpy(&f, t->p + 4 * i, 4);
        return f;
    }
    uint16_t h;
    memcpy(&h, t->p + 2 * i, 2);
    return t->dt == KEEL_BF16 ? keel_bf16_bits_to_f32(h) : keel_f16_bits_to_f32(h);
}

static void tb_set(tb *t, size_t i, float v)
{
    if (t->dt == KEEL_F32) {
        memcpy(t->p + 4 * i, &v, 4);
        return;
    }
    const uint16_t h = t->dt == KEEL_BF16 ? keel_f32_to_bf16_bits(v) : keel_f32_to_f16_bits(v);
    memcpy(t->p + 2 * i, &h, 2);
}

static tb tb_new(keel_dtype dt, size_t rows, size_t dim, size_t stride)
{
    tb t = {dt, rows, dim, stride, NULL};
    t.p = malloc(tb_bytes(&t));
    if (!t.p)
        test_fatal("out of memory");
    memset(t.p, 0x5a, tb_bytes(&t));
    return t;
}

static tb tb_clone(const tb *s)
{
    tb t = *s;
    t.p = malloc(tb_bytes(s));
    if (!t.p)
        test_fatal("out of memory");
    memcpy(t.p, s->p, tb_bytes(s));
    return t;
}

static keel_tensor tb_tensor(const tb *t)
{
    keel_tensor k = {t->p, t->dt, t->stride};
    return k;
}

/* An input: rows of `kind` (values rounded to the dtype), NaN in the padding and spare row. */
static tb tb_input(keel_rng *rng, keel_dtype dt, keel_case_kind kind, size_t rows, size_t dim)
{
    const size_t stride = keel_rng_below(rng, 2) ? dim : dim + 1 + keel_rng_below(rng, 9);
    tb t = tb_new(dt, rows, dim, stride);
    float *row = test_alloc(dim);
    for (size_t i = 0; i < (rows + 1) * stride; i++)
        tb_set(&t, i, NAN);
    for (size_t r = 0; r < rows; r++) {
        keel_case_fill_row(rng, kind, row, dim);
        for (size_t j = 0; j < dim; j++)
            tb_set(&t, r * stride + j, row[j]);
    }
    free(row);
    return t;
}

/* An output: random values (an accumulate adds to them) in the rows, sentinel bytes elsewhere. */
static tb tb_output(keel_rng *rng, keel_dtype dt, size_t rows, size_t dim)
{
    const size_t stride = keel_rng_below(rng, 2) ? dim : dim + 1 + keel_rng_below(rng, 9);
    tb t = tb_new(dt, rows, dim, stride);
    for (size_t r = 0; r < rows; r++)
        for (size_t j = 0; j < dim; j++)
            tb_set(&t, r * stride + j, (float)keel_rng_normal(rng));
    return t;
}

/* The widened rows as a float32 tensor of the same shape and stride (the twin call's). */
static tb tb_widen(const tb *s)
{
    tb t = tb_new(KEEL_F32, s->rows, s->dim, s->stride);
    for (size_t i = 0; i < (s->rows + 1) * s->stride; i++)
        tb_set(&t, i, tb_get(s, i));
    return t;
}

/* Dense double rows x dim. */
static double *tb_d(const tb *s)
{
    double *d = test_alloc_d(s->rows * s->dim + 1);
    for (size_t r = 0; r < s->rows; r++)
        for (size_t j = 0; j < s->dim; j++)
            d[r * s->dim + j] = (double)tb_get(s, r * s->stride + j);
    return d;
}

static void tb_free(tb *t)
{
    free(t->p);
    t->p = NULL;
}

/* ---- the checks --------------------------------------------------------------------------- */

static long elems_checked, allowance_used;
static double worst_ulps[3];

/* got (the low-precision call's output) == round(twin) in the rows, and untouched outside. */
static void check_exact(const char *where, const char *what, const tb *got, const tb *twin,
                        const tb *before)
{
    for (size_t r = 0; r <= got->rows; r++)
        for (size_t j = 0; j < got->stride; j++) {
            const size_t i = r * got->stride + j;
            const size_t es = dsz(got->dt);
            if (r == got->rows || j >= got->dim) {
                if (memcmp(got->p + i * es, before->p + i * es, es)) {
                    test_check(0, "%s: %s written outside its rows (row %zu col %zu)", where, what, r, j);
                    return;
                }
                continue;
            }
            const float want = round_to(got->dt, tb_get(twin, i)), g = tb_get(got, i);
            if (memcmp(&want, &g, 4) && !(isnan(want) && isnan(g))) {
                test_check(0, "%s: %s row %zu col %zu: got %.9g, want the float32 result rounded once %.9g",
                           where, what, r, j, (double)g, (double)want);
                return;
            }
        }
    test_check(1, "%s", what);
}

/* Float arrays equal bit for bit (NaN payloads aside). */
static void check_same(const char *where, const char *what, const float *a, const float *b, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (memcmp(a + i, b + i, 4) && !(isnan(a[i]) && isnan(b[i]))) {
            test_check(0, "%s: %s[%zu] %.9g, float32 call %.9g", where, what, i, (double)a[i], (double)b[i]);
            return;
        }
    test_check(1, "%s", what);
}

static double max_finite(keel_dtype dt)
{
    return dt == KEEL_F16 ? 65504.0 : dt == KEEL_BF16 ? 0x1.fep127 : (double)FLT_MAX;
}

/* The spacing of dt's numbers at |v| (test_lowp's ulp_of). */
static double ulp_of(keel_dtype dt, double v)
{
    if (dt == KEEL_F32)
        return keel_ulp32(v);
    const int p = dt == KEEL_F16 ? 10 : 7;
    const double min_normal = dt == KEEL_F16 ? 0x1p-14 : (double)FLT_MIN;
    v = fabs(v);
    if (!(v >= min_normal))
        return min_normal * ldexp(1.0, -p);
    if (v >= max_finite(dt))
        v = max_finite(dt);
    int e;
    frexp(v, &e);
    return ldexp(1.0, e - 1 - p);
}

/* A bf16/f16 output against the reference (rows x dim, dense); twin: the float32 result.
 * row_bound: the forwards' a-priori limit on the float32 error (KEEL_BOUND_ROW_ULPS float32
 * ulps of the row's largest |ref|), 0 for none. */
static void check_ref(const char *where, const char *what, const tb *got, const tb *twin,
                      const double *ref, int row_bound)
{
    if (got->dt == KEEL_F32)
        return;
    const int slot = got->dt == KEEL_BF16 ? 1 : 2;
    for (size_t r = 0; r < got->rows; r++) {
        double scale = 0.0;
        for (size_t j = 0; j < got->dim; j++)
            if (isfinite(ref[r * got->dim + j]))
                scale = fmax(scale, fabs(ref[r * got->dim + j]));
        for (size_t j = 0; j < got->dim; j++) {
            const size_t i = r * got->stride + j;
            const double g = tb_get(got, i), want = ref[r * got->dim + j], f = tb_get(twin, i);
            int ok;
            if (isnan(want) || isnan(g))
                ok = isnan(want) && isnan(g);
            else if (isinf(want))
                ok = g == want;
            else if (isinf(g))
                ok = (g > 0) == (want > 0) && fabs(want) >= max_finite(got->dt);
            else {
                const double e = fabs(g - want), u = ulp_of(got->dt, want);
                ok = e <= u;
                elems_checked++;
                if (ok && e / u > worst_ulps[slot])
                    worst_ulps[slot] = e / u;
                if (!ok) {
                    const double f32_err = fabs(f - want);
                    const int bounded = !row_bound || f32_err <= KEEL_BOUND_ROW_ULPS * keel_ulp32(scale);
                    /* got = round(f): within half a dtype ulp of f, at f's magnitude */
                    if (bounded && e <= 0.5 * fmax(u, ulp_of(got->dt, f)) + f32_err) {
                        ok = 1;
                        allowance_used++;
                    }
                }
            }
            if (!ok) {
                test_check(0, "%s: %s row %zu col %zu: got %.9g, ref %.17g (%.3g %s ulps; float32 %.9g)",
                           where, what, r, j, g, want, fabs(g - want) / ulp_of(got->dt, want),
                           keel_dtype_name(got->dt), f);
                return;
            }
        }
    }
    test_check(1, "%s", what);
}

/* ---- configurations ---------------------------------------------------------------------------- */

static const keel_dtype dtypes[3] = {KEEL_F32, KEEL_BF16, KEEL_F16};
static keel_dtype any_dtype(keel_rng *rng) { return dtypes[keel_rng_below(rng, 3)]; }
/* mostly low precision: the point of the test */
static keel_dtype low_dtype(keel_rng *rng) { return dtypes[keel_rng_below(rng, 5) ? 1 + keel_rng_below(rng, 2) : 0]; }

static keel_ctx *twin_ctx; /* scalar path, one thread: the float32 twin calls */

static float *opt_vec(keel_rng *rng, int want, size_t dim, double centre, double scale)
{
    if (!want)
        return NULL;
    float *v = test_alloc(dim);
    for (size_t j = 0; j < dim; j++)
        v[j] = (float)(centre + scale * keel_rng_normal(rng));
    return v;
}

static double *vec_d(const float *v, size_t dim)
{
    if (!v)
        return NULL;
    double *d = test_alloc_d(dim);
    for (size_t j = 0; j < dim; j++)
        d[j] = v[j];
    return d;
}

/* ---- fused add + norm ---- */

static void add_norm_case(keel_ctx *ctx, keel_rng *rng, int rms, size_t rows, size_t dim, const char *path)
{
    const keel_case_kind kind = keel_rng_below(rng, 3) ? KEEL_CASE_NORMAL : KEEL_CASE_MIXED;
    tb x = tb_input(rng, low_dtype(rng), kind, rows, dim), r = tb_input(rng, low_dtype(rng), KEEL_CASE_NORMAL, rows, dim);
    const int store_h = keel_rng_below(rng, 3) != 0, full = keel_rng_below(rng, 2);
    tb h = tb_output(rng, low_dtype(rng), rows, dim), y = tb_output(rng, low_dtype(rng), rows, dim);
    float *lambda = opt_vec(rng, full, dim, 0.1, 0.05), *bias = opt_vec(rng, full, dim, 0.0, 0.25);
    float *gamma = opt_vec(rng, keel_rng_below(rng, 2), dim, 1.0, 0.5);
    float *beta = opt_vec(rng, !rms && keel_rng_below(rng, 2), dim, 0.0, 0.25);
    const float alpha = full ? 2.6321480259f : 1.0f, eps = rms ? 1e-6f : 1e-5f;
    char where[256];
    snprintf(where, sizeof where, "add+%s fwd %s %zux%zu x %s r %s h %s y %s%s", rms ? "rmsnorm" : "layernorm", path,
             rows, dim, keel_dtype_name(x.dt), keel_dtype_name(r.dt), store_h ? keel_dtype_name(h.dt) : "-",
             keel_dtype_name(y.dt), full ? " alpha lambda bias" : "");

    /* the float32 twin */
    tb wx = tb_widen(&x), wr = tb_widen(&r), wh = tb_widen(&h), wy = tb_widen(&y);
    float *tmean = test_alloc(rows + 1), *trstd = test_alloc(rows + 1);
    keel_residual res = keel_residual_add(tb_tensor(&wx), tb_tensor(&wr));
    res.alpha = alpha;
    res.lambda = lambda;
    res.bias = bias;
    keel_status st = rms ? keel_add_rmsnorm_fwd(twin_ctx, rows, dim, &res, tb_tensor(&wh), tb_tensor(&wy), gamma, eps, trstd, 0)
                         : keel_add_layernorm_fwd(twin_ctx, rows, dim, &res, tb_tensor(&wh), tb_tensor(&wy), gamma, beta,
                                                  eps, tmean, trstd, 0);
    test_check(st == KEEL_OK, "%s: float32 twin: %s", where, keel_last_error());

    /* the call */
    tb h0 = tb_clone(&h), y0 = tb_clone(&y);
    float *mean = test_alloc(rows + 1), *rstd = test_alloc(rows + 1);
    res.x = tb_tensor(&x);
    res.r = tb_tensor(&r);
    const keel_tensor ht = store_h ? tb_tensor(&h) : keel_none();
    st = rms ? keel_add_rmsnorm_fwd(ctx, rows, dim, &res, ht, tb_tensor(&y), gamma, eps, rstd, 0)
             : keel_add_layernorm_fwd(ctx, rows, dim, &res, ht, tb_tensor(&y), gamma, beta, eps, mean, rstd, 0);
    if (test_check(st == KEEL_OK, "%s: %s (%s)", where, keel_status_str(st), keel_last_error())) {
        check_exact(where, "y", &y, &wy, &y0);
        if (store_h)
            check_exact(where, "h", &h, &wh, &h0);
        else
            check_exact(where, "h (not stored)", &h, &h0, &h0);
        check_same(where, "rstd", rstd, trstd, rows);
        if (!rms)
            check_same(where, "mean", mean, tmean, rows);
        /* the reference: h exact from the stored inputs, y from keel's float32 h */
        double *xd = tb_d(&x), *rd = tb_d(&r), *hd = tb_d(&wh), *ld = vec_d(lambda, dim), *bd = vec_d(bias, dim);
        double *gd = vec_d(gamma, dim), *bed = vec_d(beta, dim);
        double *href = test_alloc_d(rows * dim + 1), *yref = test_alloc_d(rows * dim + 1);
        keel_ref_residual_f64(rows, dim, xd, rd, alpha, ld, bd, href);
        if (rms)
            keel_ref_rmsnorm_fwd_f64(rows, dim, hd, gd, eps, yref, NULL);
        else
            keel_ref_layernorm_fwd_f64(rows, dim, hd, gd, bed, eps, yref, NULL, NULL);
        check_ref(where, "y", &y, &wy, yref, 1);
        if (store_h)
            check_ref(where, "h", &h, &wh, href, 1);
        double *all[] = {xd, rd, hd, ld, bd, gd, bed, href, yref};
        for (size_t i = 0; i < sizeof all / sizeof all[0]; i++)
            free(all[i]);
    }
    tb *tbs[] = {&x, &r, &h, &y, &wx, &wr, &wh, &wy, &h0, &y0};
    for (size_t i = 0; i < sizeof tbs / sizeof tbs[0]; i++)
        tb_free(tbs[i]);
    float *fs[] = {lambda, bias, gamma, beta, tmean, trstd, mean, rstd};
    for (size_t i = 0; i < sizeof fs / sizeof fs[0]; i++)
        free(fs[i]);
}

static void add_norm_bwd_case(keel_ctx *ctx, keel_rng *rng, int rms, size_t rows, size_t dim, const char *path)
{
    tb x = tb_input(rng, any_dtype(rng), KEEL_CASE_NORMAL, rows, dim), r = tb_input(rng, any_dtype(rng), KEEL_CASE_NORMAL, rows, dim);
    tb dy = tb_input(rng, low_dtype(rng), KEEL_CASE_NORMAL, rows, dim), dh = tb_input(rng, any_dtype(rng), KEEL_CASE_NORMAL, rows, dim);
    const int full = keel_rng_below(rng, 2), give_h = keel_rng_below(rng, 2), give_dh = keel_rng_below(rng, 3) != 0;
    const int stats = keel_rng_below(rng, 2), acc = keel_rng_below(rng, 3) == 0, want_dr = keel_rng_below(rng, 3) != 0;
    float *lambda = opt_vec(rng, full, dim, 0.1, 0.05), *bias = opt_vec(rng, full, dim, 0.0, 0.25);
    float *gamma = opt_vec(rng, keel_rng_below(rng, 2), dim, 1.0, 0.5);
    const float alpha = full ? 2.6321480259f : 1.0f, eps = rms ? 1e-6f : 1e-5f;
    /* h: the forward's, stored in a dtype of its own (the backward takes it as it is) */
    tb hs = tb_output(rng, any_dtype(rng), rows, dim);
    float *mean = test_alloc(rows + 1), *rstd = test_alloc(rows + 1);
    keel_residual res = keel_residual_add(tb_tensor(&x), tb_tensor(&r));
    res.alpha = alpha;
    res.lambda = lambda;
    res.bias = bias;
    {
        tb yy = tb_output(rng, KEEL_F32, rows, dim);
        keel_status st = rms ? keel_add_rmsnorm_fwd(ctx, rows, dim, &res, tb_tensor(&hs), tb_tensor(&yy), gamma, eps, rstd, 0)
                             : keel_add_layernorm_fwd(ctx, rows, dim, &res, tb_tensor(&hs), tb_tensor(&yy), gamma, NULL, eps,
                                                      mean, rstd, 0);
        test_check(st == KEEL_OK, "add+norm bwd: forward: %s", keel_last_error());
        tb_free(&yy);
    }
    tb dx = tb_output(rng, low_dtype(rng), rows, dim), dr = tb_output(rng, low_dtype(rng), rows, dim);
    char where[300];
    snprintf(where, sizeof where, "add+%s bwd %s %zux%zu dy %s dh %s h %s x %s r %s dx %s dr %s%s%s%s",
             rms ? "rmsnorm" : "layernorm", path, rows, dim, keel_dtype_name(dy.dt),
             give_dh ? keel_dtype_name(dh.dt) : "-", give_h ? keel_dtype_name(hs.dt) : "-", keel_dtype_name(x.dt),
             keel_dtype_name(r.dt), keel_dtype_name(dx.dt), want_dr ? keel_dtype_name(dr.dt) : "-",
             full ? " alpha lambda bias" : "", stats ? " stats" : "", acc ? " accumulate" : "");
    const unsigned flags = acc ? KEEL_FLAG_ACCUMULATE_DX | KEEL_FLAG_ACCUMULATE_DPARAMS : 0;
    const size_t np = 4 * dim;
    float *tp = test_alloc(np), *gp = test_alloc(np); /* dgamma, dbeta, dlambda, dbias */
    for (size_t i = 0; i < np; i++)
        tp[i] = gp[i] = (float)keel_rng_normal(rng);

    /* the float32 twin */
    tb wx = tb_widen(&x), wr = tb_widen(&r), wdy = tb_widen(&dy), wdh = tb_widen(&dh), whs = tb_widen(&hs);
    tb wdx = tb_widen(&dx), wdr = tb_widen(&dr);
    keel_residual wres = res;
    wres.x = tb_tensor(&wx);
    wres.r = tb_tensor(&wr);
    keel_residual_grads wg = {tb_tensor(&wdx), want_dr ? tb_tensor(&wdr) : keel_none(), full ? tp + 2 * dim : NULL,
                              full ? tp + 3 * dim : NULL};
    keel_status st = rms ? keel_add_rmsnorm_bwd(twin_ctx, rows, dim, tb_tensor(&wdy), give_dh ? tb_tensor(&wdh) : keel_none(),
                                                &wres, give_h ? tb_tensor(&whs) : keel_none(), stats ? rstd : NULL, gamma,
                                                eps, &wg, tp, flags)
                         : keel_add_layernorm_bwd(twin_ctx, rows, dim, tb_tensor(&wdy), give_dh ? tb_tensor(&wdh) : keel_none(),
                                                  &wres, give_h ? tb_tensor(&whs) : keel_none(), stats ? mean : NULL,
                                                  stats ? rstd : NULL, gamma, eps, &wg, tp, tp + dim, flags);
    test_check(st == KEEL_OK, "%s: float32 twin: %s", where, keel_last_error());

    tb dx0 = tb_clone(&dx), dr0 = tb_clone(&dr);
    keel_residual_grads g = {tb_tensor(&dx), want_dr ? tb_tensor(&dr) : keel_none(), full ? gp + 2 * dim : NULL,
                             full ? gp + 3 * dim : NULL};
    st = rms ? keel_add_rmsnorm_bwd(ctx, rows, dim, tb_tensor(&dy), give_dh ? tb_tensor(&dh) : keel_none(), &res,
                                    give_h ? tb_tensor(&hs) : keel_none(), stats ? rstd : NULL, gamma, eps, &g, gp, flags)
             : keel_add_layernorm_bwd(ctx, rows, dim, tb_tensor(&dy), give_dh ? tb_tensor(&dh) : keel_none(), &res,
                                      give_h ? tb_tensor(&hs) : keel_none(), stats ? mean : NULL, stats ? rstd : NULL,
                                      gamma, eps, &g, gp, gp + dim, flags);
    if (test_check(st == KEEL_OK, "%s: %s (%s)", where, keel_status_str(st), keel_last_error())) {
        check_exact(where, "dx", &dx, &wdx, &dx0);
        if (want_dr)
            check_exact(where, "dr", &dr, &wdr, &dr0);
        check_same(where, "dgamma, dbeta, dlambda, dbias", gp, tp, rms ? dim : 2 * dim);
        if (full)
            check_same(where, "dlambda, dbias", gp + 2 * dim, tp + 2 * dim, 2 * dim);
        /* the reference at the h the backward normalized: the stored h, or keel's float32 h */
        tb hf = tb_output(rng, KEEL_F32, rows, dim), yy = tb_output(rng, KEEL_F32, rows, dim);
        if (!give_h) {
            st = rms ? keel_add_rmsnorm_fwd(twin_ctx, rows, dim, &wres, tb_tensor(&hf), tb_tensor(&yy), gamma, eps, NULL, 0)
                     : keel_add_layernorm_fwd(twin_ctx, rows, dim, &wres, tb_tensor(&hf), tb_tensor(&yy), gamma, NULL, eps,
                                              NULL, NULL, 0);
            test_check(st == KEEL_OK, "%s: float32 h: %s", where, keel_last_error());
        }
        double *hd = tb_d(give_h ? &hs : &hf), *dyd = tb_d(&dy), *dhd = give_dh ? tb_d(&dh) : NULL, *rd = tb_d(&r);
        double *ld = vec_d(lambda, dim), *gd = vec_d(gamma, dim);
        double *dxr = test_alloc_d(rows * dim + 1), *drr = test_alloc_d(rows * dim + 1);
        const keel_ref_grads nout = {NULL, NULL, NULL, NULL, NULL};
        const keel_ref_res_grads rout = {dxr, drr, NULL, NULL, NULL, NULL};
        const int rc = rms ? keel_ref_add_rmsnorm_bwd_f64(rows, dim, dyd, dhd, hd, rd, alpha, ld, gd, eps, &nout, &rout, NULL)
                           : keel_ref_add_layernorm_bwd_f64(rows, dim, dyd, dhd, hd, rd, alpha, ld, gd, eps, &nout, &rout, NULL);
        if (rc)
            test_fatal("out of memory");
        if (acc) /* the reference of an accumulation: the stored old value plus the gradient */
            for (size_t i = 0; i < rows; i++)
                for (size_t j = 0; j < dim; j++) {
                    dxr[i * dim + j] += (double)tb_get(&dx0, i * dx0.stride + j);
                    drr[i * dim + j] += (double)tb_get(&dr0, i * dr0.stride + j);
                }
        check_ref(where, "dx", &dx, &wdx, dxr, 0);
        if (want_dr)
            check_ref(where, "dr", &dr, &wdr, drr, 0);
        double *all[] = {hd, dyd, dhd, rd, ld, gd, dxr, drr};
        for (size_t i = 0; i < sizeof all / sizeof all[0]; i++)
            free(all[i]);
        tb_free(&hf);
        tb_free(&yy);
    }
    tb *tbs[] = {&x, &r, &dy, &dh, &hs, &dx, &dr, &wx, &wr, &wdy, &wdh, &whs, &wdx, &wdr, &dx0, &dr0};
    for (size_t i = 0; i < sizeof tbs / sizeof tbs[0]; i++)
        tb_free(tbs[i]);
    float *fs[] = {lambda, bias, gamma, mean, rstd, tp, gp};
    for (size_t i = 0; i < sizeof fs / sizeof fs[0]; i++)
        free(fs[i]);
}

/* ---- LayerScale ---- */

static void layerscale_case(keel_ctx *ctx, keel_rng *rng, size_t rows, size_t dim, const char *path)
{
    tb x = tb_input(rng, any_dtype(rng), KEEL_CASE_NORMAL, rows, dim), f = tb_input(rng, any_dtype(rng), KEEL_CASE_NORMAL, rows, dim);
    tb h = tb_output(rng, low_dtype(rng), rows, dim);
    const int inplace = keel_rng_below(rng, 4) == 0; /* h is x */
    float *lambda = opt_vec(rng, 1, dim, 0.1, 0.05);
    char where[200];
    snprintf(where, sizeof where, "layerscale fwd %s %zux%zu x %s f %s h %s%s", path, rows, dim, keel_dtype_name(x.dt),
             keel_dtype_name(f.dt), keel_dtype_name(inplace ? x.dt : h.dt), inplace ? " (in place)" : "");
    tb *out = inplace ? &x : &h;
    tb wx = tb_widen(&x), wf = tb_widen(&f), wout = tb_widen(out), out0 = tb_clone(out);
    double *xd = tb_d(&x), *fd = tb_d(&f);
    keel_status st = keel_layerscale_fwd(twin_ctx, rows, dim, tb_tensor(&wx), tb_tensor(&wf), lambda,
                                         inplace ? tb_tensor(&wx) : tb_tensor(&wout), 0);
    test_check(st == KEEL_OK, "%s: float32 twin: %s", where, keel_last_error());
    st = keel_layerscale_fwd(ctx, rows, dim, tb_tensor(&x), tb_tensor(&f), lambda, tb_tensor(out), 0);
    if (test_check(st == KEEL_OK, "%s: %s (%s)", where, keel_status_str(st), keel_last_error())) {
        const tb *twin = inplace ? &wx : &wout;
        check_exact(where, "h", out, twin, &out0);
        double *ref = test_alloc_d(rows * dim + 1);
        for (size_t i = 0; i < rows; i++)
            for (size_t j = 0; j < dim; j++)
                ref[i * dim + j] = xd[i * dim + j] + (double)lambda[j] * fd[i * dim + j];
        check_ref(where, "h", out, twin, ref, 1);
        free(ref);
    }
    free(xd);
    free(fd);

    /* backward: dh (bf16 here), f for dlambda; dx, df, each maybe in place of dh */
    tb dh = tb_input(rng, low_dtype(rng), KEEL_CASE_NORMAL, rows, dim);
    tb dx = tb_output(rng, low_dtype(rng), rows, dim), df = tb_output(rng, low_dtype(rng), rows, dim);
    const int acc = keel_rng_below(rng, 3) == 0, mode = (int)keel_rng_below(rng, 3); /* 1: dx is dh, 2: df is dh */
    tb *pdx = mode == 1 ? &dh : &dx, *pdf = mode == 2 ? &dh : &df;
    snprintf(where, sizeof where, "layerscale bwd %s %zux%zu dh %s f %s dx %s df %s%s%s", path, rows, dim,
             keel_dtype_name(dh.dt), keel_dtype_name(f.dt), keel_dtype_name(pdx->dt), keel_dtype_name(pdf->dt),
             mode ? " (in place)" : "", acc ? " accumulate" : "");
    float *tpart = test_alloc(dim), *gpart = test_alloc(dim);
    for (size_t j = 0; j < dim; j++)
        tpart[j] = gpart[j] = (float)keel_rng_normal(rng);
    const unsigned flags = acc ? KEEL_FLAG_ACCUMULATE_DX | KEEL_FLAG_ACCUMULATE_DPARAMS : 0;
    tb wdh = tb_widen(&dh), wdx = tb_widen(&dx), wdf = tb_widen(&df);
    tb *wpdx = mode == 1 ? &wdh : &wdx, *wpdf = mode == 2 ? &wdh : &wdf;
    tb dx0 = tb_clone(pdx), df0 = tb_clone(pdf);
    double *dhd = tb_d(&dh), *dx0d = tb_d(pdx), *df0d = tb_d(pdf);
    st = keel_layerscale_bwd(twin_ctx, rows, dim, tb_tensor(&wdh), tb_tensor(&wf), lambda, tb_tensor(wpdx),
                             tb_tensor(wpdf), tpart, flags);
    test_check(st == KEEL_OK, "%s: float32 twin: %s", where, keel_last_error());
    st = keel_layerscale_bwd(ctx, rows, dim, tb_tensor(&dh), tb_tensor(&f), lambda, tb_tensor(pdx), tb_tensor(pdf),
                             gpart, flags);
    if (test_check(st == KEEL_OK, "%s: %s (%s)", where, keel_status_str(st), keel_last_error())) {
        check_exact(where, "dx", pdx, wpdx, &dx0);
        check_exact(where, "df", pdf, wpdf, &df0);
        check_same(where, "dlambda", gpart, tpart, dim);
        double *rx = test_alloc_d(rows * dim + 1), *rf = test_alloc_d(rows * dim + 1);
        for (size_t i = 0; i < rows; i++)
            for (size_t j = 0; j < dim; j++) {
                const size_t k = i * dim + j;
                rx[k] = dhd[k] + (acc ? dx0d[k] : 0.0);
                rf[k] = (double)lambda[j] * dhd[k] + (acc ? df0d[k] : 0.0);
            }
        check_ref(where, "dx", pdx, wpdx, rx, 0);
        check_ref(where, "df", pdf, wpdf, rf, 0);
        free(rx);
        free(rf);
    }
    free(dhd);
    free(dx0d);
    free(df0d);
    tb *tbs[] = {&x, &f, &h, &wx, &wf, &wout, &out0, &dh, &dx, &df, &wdh, &wdx, &wdf, &dx0, &df0};
    for (size_t i = 0; i < sizeof tbs / sizeof tbs[0]; i++)
        tb_free(tbs[i]);
    free(lambda);
    free(tpart);
    free(gpart);
}

/* ---- DyT ---- */

static void dyt_case(keel_ctx *ctx, keel_rng *rng, size_t rows, size_t dim, const char *path)
{
    tb x = tb_input(rng, low_dtype(rng), keel_rng_below(rng, 2) ? KEEL_CASE_NORMAL : KEEL_CASE_MIXED, rows, dim);
    tb y = tb_output(rng, low_dtype(rng), rows, dim);
    float *gamma = opt_vec(rng, keel_rng_below(rng, 2), dim, 1.0, 0.5);
    float *beta = opt_vec(rng, keel_rng_below(rng, 2), dim, 0.0, 0.25);
    const float alpha = (float)keel_rng_range(rng, 0.1, 2.0);
    char where[200];
    snprintf(where, sizeof where, "dyt fwd %s %zux%zu x %s y %s alpha %g", path, rows, dim, keel_dtype_name(x.dt),
             keel_dtype_name(y.dt), (double)alpha);
    tb wx = tb_widen(&x), wy = tb_widen(&y), y0 = tb_clone(&y);
    double *xd = tb_d(&x), *gd = vec_d(gamma, dim), *bd = vec_d(beta, dim);
    keel_status st = keel_dyt_fwd(twin_ctx, rows, dim, tb_tensor(&wx), tb_tensor(&wy), alpha, gamma, beta, 0);
    test_check(st == KEEL_OK, "%s: float32 twin: %s", where, keel_last_error());
    st = keel_dyt_fwd(ctx, rows, dim, tb_tensor(&x), tb_tensor(&y), alpha, gamma, beta, 0);
    if (test_check(st == KEEL_OK, "%s: %s (%s)", where, keel_status_str(st), keel_last_error())) {
        check_exact(where, "y", &y, &wy, &y0);
        double *ref = test_alloc_d(rows * dim + 1);
        keel_ref_dyt_fwd_f64(rows, dim, xd, alpha, gd, bd, ref);
        check_ref(where, "y", &y, &wy, ref, 1);
        free(ref);
    }
    /* backward */
    tb dy = tb_input(rng, low_dtype(rng), KEEL_CASE_NORMAL, rows, dim), dx = tb_output(rng, low_dtype(rng), rows, dim);
    const int acc = keel_rng_below(rng, 3) == 0, inplace = keel_rng_below(rng, 4) == 0; /* dx is dy */
    tb *pdx = inplace ? &dy : &dx;
    snprintf(where, sizeof where, "dyt bwd %s %zux%zu dy %s x %s dx %s%s%s", path, rows, dim, keel_dtype_name(dy.dt),
             keel_dtype_name(x.dt), keel_dtype_name(pdx->dt), inplace ? " (in place)" : "", acc ? " accumulate" : "");
    const unsigned flags = acc ? KEEL_FLAG_ACCUMULATE_DX | KEEL_FLAG_ACCUMULATE_DPARAMS : 0;
    float tp[3 * 1025 + 1], gpv[3 * 1025 + 1];
    for (size_t i = 0; i < 2 * dim + 1; i++)
        tp[i] = gpv[i] = (float)keel_rng_normal(rng);
    tb wdy = tb_widen(&dy), wdx = tb_widen(&dx), dx0 = tb_clone(pdx);
    tb *wpdx = inplace ? &wdy : &wdx;
    double *dyd = tb_d(&dy), *dx0d = tb_d(pdx);
    st = keel_dyt_bwd(twin_ctx, rows, dim, tb_tensor(&wdy), tb_tensor(&wx), alpha, gamma, tb_tensor(wpdx), tp + 2 * dim,
                      tp, tp + dim, flags);
    test_check(st == KEEL_OK, "%s: float32 twin: %s", where, keel_last_error());
    st = keel_dyt_bwd(ctx, rows, dim, tb_tensor(&dy), tb_tensor(&x), alpha, gamma, tb_tensor(pdx), gpv + 2 * dim, gpv,
                      gpv + dim, flags);
    if (test_check(st == KEEL_OK, "%s: %s (%s)", where, keel_status_str(st), keel_last_error())) {
        check_exact(where, "dx", pdx, wpdx, &dx0);
        check_same(where, "dgamma, dbeta, dalpha", gpv, tp, 2 * dim + 1);
        double *ref = test_alloc_d(rows * dim + 1);
        const keel_ref_dyt_grads out = {ref, NULL, NULL, NULL, NULL, NULL, NULL};
        keel_ref_dyt_bwd_f64(rows, dim, dyd, xd, alpha, gd, &out);
        if (acc)
            for (size_t k = 0; k < rows * dim; k++)
                ref[k] += dx0d[k];
        check_ref(where, "dx", pdx, wpdx, ref, 0);
        free(ref);
    }
    free(xd);
    free(gd);
    free(bd);
    free(dyd);
    free(dx0d);
    tb *tbs[] = {&x, &y, &wx, &wy, &y0, &dy, &dx, &wdy, &wdx, &dx0};
    for (size_t i = 0; i < sizeof tbs / sizeof tbs[0]; i++)
        tb_free(tbs[i]);
    free(gamma);
    free(beta);
}

/* ---- main ------------------------------------------------------------------------------------ */

int main(void)
{
    keel_rng rng;
    keel_rng_seed(&rng, test_begin("test_block_lowp"));
    twin_ctx = test_ctx(1);
    test_set_isa(twin_ctx, KEEL_ISA_SCALAR);
    keel_isa isas[3];
    const int n_isas = test_isas(isas);
    static const size_t dims[] = {1, 7, 15, 16, 17, 33, 100, 1025};
    static const int threads[] = {1, 3};
    keel_ctx *ctx = test_ctx(1);
    for (int i = 0; i < n_isas; i++)
        for (size_t t = 0; t < sizeof threads / sizeof threads[0]; t++) {
            test_set_isa(ctx, isas[i]);
            keel_ctx_set_threads(ctx, threads[t]);
            char path[64];
            snprintf(path, sizeof path, "isa %s threads %d", keel_isa_name(isas[i]), threads[t]);
            const long failed_before = test_failed_;
            for (size_t d = 0; d < sizeof dims / sizeof dims[0]; d++)
                for (int rep = 0; rep < 3; rep++) {
                    /* enough rows, now and then, for several threads and several staging blocks */
                    const size_t rows = rep == 2 ? 2048 / dims[d] + 40 + keel_rng_below(&rng, 30) : 1 + keel_rng_below(&rng, 12);
                    add_norm_case(ctx, &rng, rep & 1, rows, dims[d], path);
                    add_norm_bwd_case(ctx, &rng, rep & 1, rows, dims[d], path);
                    layerscale_case(ctx, &rng, rows, dims[d], path);
                    dyt_case(ctx, &rng, rows, dims[d], path);
                }
            printf("%s: %ld failures\n", path, test_failed_ - failed_before);
        }
    printf("%ld bf16/f16 elements against the float64 reference: worst %.3g bf16 ulps, %.3g f16 ulps within the "
           "1-ulp bound; %ld elements (%.2g%%) used the float32-error allowance\n",
           elems_checked, worst_ulps[1], worst_ulps[2], allowance_used,
           elems_checked ? 100.0 * (double)allowance_used / (double)elems_checked : 0.0);
    keel_ctx_destroy(ctx);
    keel_ctx_destroy(twin_ctx);
    return test_finish();
}
