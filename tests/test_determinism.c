/*
 * test_determinism: keel.h promises bitwise identical results for any thread count and on every
 * instruction-set path. Every output (y, mean, rstd, dx, dgamma, dbeta) of every operation is
 * compared bit for bit with a baseline (the first path, one thread) across thread counts
 * 1, 2, 3, 4, 7, two runs each, and every path this machine runs; on shapes with many rows (so
 * that rows are split between threads and dgamma/dbeta are gathered from partial sums) and wide
 * rows. Inputs are mixed adversarial rows, all finite (NaN payloads are not promised).
 */
#include "test_common.h"

typedef enum op_kind { OP_LAYERNORM, OP_RMSNORM } op_kind;

typedef struct shape {
    size_t rows, dim, pad; /* x and dy rows are dim + pad apart */
} shape;

static const shape shapes[] = {
    {1000, 333, 0}, {4097, 64, 0}, {3, 8191, 5}, {1, 65536, 0}, {129, 1025, 7}, {7, 1, 2},
};
static const int thread_counts[] = {1, 2, 3, 4, 7};

/* Every output of one forward and one backward (with the forward's statistics). */
typedef struct outputs {
    float *y, *mean, *rstd, *dx, *dgamma, *dbeta;
} outputs;

/* Every output set to the sentinel: a run that leaves part of an output unwritten cannot pass
 * on the previous run's bits; outputs an op does not produce (rmsnorm's mean and dbeta) stay
 * equal. */
static void outputs_reset(outputs *o, const shape *s)
{
    test_fill_sentinel(o->y, s->rows * s->dim);
    test_fill_sentinel(o->mean, s->rows);
    test_fill_sentinel(o->rstd, s->rows);
    test_fill_sentinel(o->dx, s->rows * s->dim);
    test_fill_sentinel(o->dgamma, s->dim);
    test_fill_sentinel(o->dbeta, s->dim);
}

static outputs outputs_alloc(const shape *s)
{
    outputs o;
    o.y = test_alloc(s->rows * s->dim);
    o.mean = test_alloc(s->rows);
    o.rstd = test_alloc(s->rows);
    o.dx = test_alloc(s->rows * s->dim);
    o.dgamma = test_alloc(s->dim);
    o.dbeta = test_alloc(s->dim);
    outputs_reset(&o, s);
    return o;
}

static void outputs_free(outputs *o)
{
    free(o->y);
    free(o->mean);
    free(o->rstd);
    free(o->dx);
    free(o->dgamma);
    free(o->dbeta);
}

static int run(keel_ctx *ctx, op_kind op, const keel_case *c, outputs *o)
{
    size_t rows = c->rows, dim = c->dim;
    keel_tensor x = keel_f32(c->x, c->x_stride), dy = keel_f32(c->dy, c->dy_stride);
    keel_tensor y = keel_f32(o->y, dim), dx = keel_f32(o->dx, dim);
    keel_status st;
    if (op == OP_LAYERNORM) {
        st = keel_layernorm_fwd(ctx, rows, dim, x, y, c->gamma, c->beta, c->eps, o->mean,
                                o->rstd, 0);
        if (st == KEEL_OK)
            st = keel_layernorm_bwd(ctx, rows, dim, dy, x, o->mean, o->rstd, c->gamma, c->eps,
                                    dx, o->dgamma, o->dbeta, 0);
    } else {
        st = keel_rmsnorm_fwd(ctx, rows, dim, x, y, c->gamma, c->eps, o->rstd, 0);
        if (st == KEEL_OK)
            st = keel_rmsnorm_bwd(ctx, rows, dim, dy, x, o->rstd, c->gamma, c->eps, dx,
                                  o->dgamma, 0);
    }
    return test_check(st == KEEL_OK, "%s %zu x %zu: %s (%s)",
                      op == OP_LAYERNORM ? "layernorm" : "rmsnorm", rows, dim,
                      keel_status_str(st), keel_last_error());
}

/* One check per output: bitwise equal to the baseline. */
static void compare(const char *where, const shape *s, const outputs *got, const outputs *base)
{
    const struct {
        const char *name;
        const float *a, *b;
        size_t n;
    } parts[] = {
        {"y", got->y, base->y, s->rows * s->dim},
        {"mean", got->mean, base->mean, s->rows},
        {"rstd", got->rstd, base->rstd, s->rows},
        {"dx", got->dx, base->dx, s->rows * s->dim},
        {"dgamma", got->dgamma, base->dgamma, s->dim},
        {"dbeta", got->dbeta, base->dbeta, s->dim},
    };
    for (size_t k = 0; k < sizeof parts / sizeof parts[0]; k++) {
        size_t i = test_first_diff(parts[k].a, parts[k].b, parts[k].n);
        test_check(i == parts[k].n, "%s: %s differs from the baseline at index %zu (%.9g vs %.9g)",
                   where, parts[k].name, i, i < parts[k].n ? (double)parts[k].a[i] : 0.0,
                   i < parts[k].n ? (double)parts[k].b[i] : 0.0);
    }
}

static void check_shape(keel_ctx *ctx, keel_rng *rng, const shape *s, op_kind op,
                        const keel_isa *isas, int n_isas)
{
    const char *name = op == OP_LAYERNORM ? "layernorm" : "rmsnorm";
    keel_case c;
    if (keel_case_make(&c, rng, KEEL_CASE_MIXED, s->rows, s->dim, s->dim + s->pad,
                       s->dim + s->pad, 1, op == OP_LAYERNORM, 1e-5f) != 0)
        test_fatal("out of memory");

    outputs base = outputs_alloc(s), got = outputs_alloc(s);
    test_set_isa(ctx, isas[0]);
    keel_ctx_set_threads(ctx, 1);
    if (run(ctx, op, &c, &base)) {
        for (int i = 0; i < n_isas; i++)
            for (size_t t = 0; t < sizeof thread_counts / sizeof thread_counts[0]; t++)
                for (int repeat = 0; repeat < 2; repeat++) {
                    char where[160];
                    snprintf(where, sizeof where, "%s %zu x %zu isa %s threads %d run %d", name,
                             s->rows, s->dim, keel_isa_name(isas[i]), thread_counts[t],
                             repeat + 1);
                    test_set_isa(ctx, isas[i]);
                    keel_status st = keel_ctx_set_threads(ctx, thread_counts[t]);
                    test_check(st == KEEL_OK && keel_ctx_threads(ctx) == thread_counts[t],
                               "%s: keel_ctx_set_threads gave %s, %d threads", where,
                               keel_status_str(st), keel_ctx_threads(ctx));
                    outputs_reset(&got, s);
                    if (run(ctx, op, &c, &got))
                        compare(where, s, &got, &base);
                }
    }
    outputs_free(&base);
    outputs_free(&got);
    keel_case_free(&c);
}

int main(void)
{
    keel_rng rng;
    keel_rng_seed(&rng, test_begin("test_determinism"));
    keel_isa isas[3];
    int n_isas = test_isas(isas);
    printf("paths:");
    for (int i = 0; i < n_isas; i++)
        printf(" %s", keel_isa_name(isas[i]));
    printf("\n");

    keel_ctx *ctx = test_ctx(1);
    /* every call is spread over the threads, however small (else the small shapes would all run
     * on one thread and the comparison across thread counts would prove nothing for them) */
    keel_status st0 = keel_ctx_set_min_parallel(ctx, 0);
    test_check(st0 == KEEL_OK && keel_ctx_min_parallel(ctx) == 0, "keel_ctx_set_min_parallel(ctx, 0): %s",
               keel_status_str(st0));
    for (size_t k = 0; k < sizeof shapes / sizeof shapes[0]; k++)
        for (int op = OP_LAYERNORM; op <= OP_RMSNORM; op++)
            check_shape(ctx, &rng, &shapes[k], (op_kind)op, isas, n_isas);
    keel_ctx_destroy(ctx);
    return test_finish();
}
