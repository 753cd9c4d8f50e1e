/* keel train: the model. Forward and backward of a decoder-only character transformer:
 * token + position embeddings, causal multi-head attention, GELU MLP, a tied or untied head.
 * Matrix products go through CBLAS (or a plain loop in a build without it, for the tests);
 * every normalization goes through keel. */
#define _POSIX_C_SOURCE 199309L
#include "model.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "alloc.h"
#include "rng.h"

#ifdef KEEL_TRAIN_HAVE_CBLAS
#include <cblas.h>
#endif

/* ---- names ---------------------------------------------------------------------------------- */
static const char *const norm_names[] = {"layernorm", "rmsnorm", "batchnorm", "dyt", "none"};
static const char *const place_names[] = {"pre", "post", "deepnorm", "sandwich"};

const char *tm_norm_name(tm_norm n) { return (unsigned)n < 5 ? norm_names[n] : "?"; }
const char *tm_place_name(tm_place p) { return (unsigned)p < 4 ? place_names[p] : "?"; }

int tm_norm_parse(const char *s, tm_norm *n)
{
    for (int i = 0; i < 5; i++)
        if (!strcmp(s, norm_names[i])) {
            *n = (tm_norm)i;
            return 0;
        }
    return -1;
}

int tm_place_parse(const char *s, tm_place *p)
{
    for (int i = 0; i < 4; i++)
        if (!strcmp(s, place_names[i])) {
            *p = (tm_place)i;
            return 0;
        }
    if (!strcmp(s, "peri")) {
        *p = TM_SANDWICH;
        return 0;
    }
    return -1;
}

int tm_have_cblas(void)
{
#ifdef KEEL_TRAIN_HAVE_CBLAS
    return 1;
#else
    return 0;
#endif
}

/* ---- helpers -------------------------------------------------------------------------------- */
static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* A keel call of the forward or backward that fails (a checkpoint's DyT alpha of Inf, a
 * diverged run's, memory): the first failure of the pass is kept in m->error, the pass goes
 * on over outputs keel left unchanged, and tm_forward / tm_backward report it (the library's
 * convention: errors are values, nothing aborts on what a file or a run can hold). */
static void must(tm_model *m, keel_status st, const char *what)
{
    if (st != KEEL_OK && !m->error[0]) {
        m->error_status = st;
        snprintf(m->error, sizeof m->error, "%s failed: %s (%s)", what, keel_status_str(st),
                 keel_last_error());
    }
}

/* C[M,N] = alpha * op(A)[M,K] op(B)[K,N] + beta * C, row-major. */
static void gemm(int ta, int tb, int M, int N, int K, float alpha, const float *A, int lda,
                 const float *B, int ldb, float beta, float *C, int ldc)
{
#ifdef KEEL_TRAIN_HAVE_CBLAS
    cblas_sgemm(CblasRowMajor, ta ? CblasTrans : CblasNoTrans, tb ? CblasTrans : CblasNoTrans, M,
                N, K, alpha, A, lda, B, ldb, beta, C, ldc);
#else
    for (int i = 0; i < M; i++)
        for (int j = 0; j < N; j++) {
            float acc = 0.0f;
            for (int k = 0; k < K; k++) {
                float a = ta ? A[(size_t)k * lda + i] : A[(size_t)i * lda + k];
                float b = tb ? B[(size_t)j * ldb + k] : B[(size_t)k * ldb + j];
                acc += a * b;
            }
            float *c = &C[(size_t)i * ldc + j];
            *c = alpha * acc + (beta == 0.0f ? 0.0f : beta * *c);
        }
#endif
}

static void add_bias(float *y, const float *b, int rows, int n)
{
    for (int r = 0; r < rows; r++)
        for (int j = 0; j < n; j++)
            y[(size_t)r * n + j] += b[j];
}

static void colsum_acc(float *db, const float *dy, int rows, int n)
{
    for (int r = 0; r < rows; r++)
        for (int j = 0; j < n; j++)
            db[j] += dy[(size_t)r * n + j];
}

#define GELU_K 0.7978845608028654f /* sqrt(2/pi) */

/* tanh through expf (glibc's tanhf is several times slower and was a quarter of a step):
 * 1 - 2 / (e^(2u) + 1), exact to a few ulps, saturating cleanly for large |u|. */
static float fast_tanh(float u)
{
    if (u > 15.0f)
        return 1.0f;
    if (u < -15.0f)
        return -1.0f;
    return 1.0f - 2.0f / (expf(2.0f * u) + 1.0f);
}

static float gelu(float x)
{
    float u = GELU_K * (x + 0.044715f * x * x * x);
    return 0.5f * x * (1.0f + fast_tanh(u));
}

static float gelu_grad(float x)
{
    float u = GELU_K * (x + 0.044715f * x * x * x);
    float t = fast_tanh(u);
    return 0.5f * (1.0f + t) + 0.5f * x * (1.0f - t * t) * GELU_K * (1.0f + 3.0f * 0.044715f * x * x);
}

/* ---- construction --------------------------------------------------------------------------- */
static size_t add_tensor(tm_model *m, const char *name, int layer, size_t size, int decay)
{
    tm_tensor *t = &m->tensors[m->ntensors++];
    snprintf(t->name, sizeof t->name, "%s", name);
    t->off = m->nparams;
    t->size = size;
    t->layer = layer;
    t->decay = decay;
    m->nparams += size;
    return t->off;
}

static void add_norm(tm_model *m, tm_norm_inst *ni, const char *prefix, int layer, size_t rows)
{
    char name[32];
    size_t C = (size_t)m->cfg.width;
    snprintf(name, sizeof name, "%s.gamma", prefix);
    ni->gamma = add_tensor(m, name, layer, C, 0);
    if (m->cfg.norm == TM_NORM_LAYER || m->cfg.norm == TM_NORM_BATCH || m->cfg.norm == TM_NORM_DYT) {
        snprintf(name, sizeof name, "%s.beta", prefix);
        ni->beta = add_tensor(m, name, layer, C, 0);
    } else {
        ni->beta = (size_t)-1;
    }
    ni->alpha = (size_t)-1;
    if (m->cfg.norm == TM_NORM_DYT) {
        snprintf(name, sizeof name, "%s.alpha", prefix);
        ni->alpha = add_tensor(m, name, layer, 1, 0);
    }
    ni->run_mean = ni->run_var = (size_t)-1;
    if (m->cfg.norm == TM_NORM_BATCH) {
        ni->run_mean = m->nbuffers;
        ni->run_var = m->nbuffers + C;
        m->nbuffers += 2 * C;
    }
    (void)rows;
}

static int alloc_norm(tm_norm_inst *ni, size_t rows, size_t C, int own_out)
{
    size_t n = rows > C ? rows : C;
    ni->mean = keel_alloc_zero(n, sizeof(float));
    ni->rstd = keel_alloc_zero(n, sizeof(float));
    ni->out = own_out ? keel_alloc_zero(rows * C, sizeof(float)) : NULL;
    return ni->mean && ni->rstd && (!own_out || ni->out) ? 0 : -1;
}

static void free_norm(tm_norm_inst *ni, int own_out)
{
    keel_free(ni->mean);
    keel_free(ni->rstd);
    if (own_out)
        keel_free(ni->out);
}

static int use_nin(const tm_model *m) { return m->cfg.place == TM_PRE || m->cfg.place == TM_SANDWICH; }

keel_status tm_set_threads(tm_model *m, int threads)
{
    if (threads < 1)
        threads = 1;
#ifdef KEEL_TRAIN_HAVE_CBLAS
    openblas_set_num_threads(threads);
#endif
    return m && m->ctx ? keel_ctx_set_threads(m->ctx, threads) : KEEL_OK;
}

keel_status tm_create(tm_model *m, const tm_config *cfg, int max_batch, uint64_t seed, int threads)
{
    keel_status st;
    memset(m, 0, sizeof *m);
    m->cfg = *cfg;
    const int L = cfg->layers, C = cfg->width, V = cfg->vocab, T = cfg->seq;
    if ((st = tm_config_check(cfg)) != KEEL_OK)
        return st;
    if (max_batch < 1 || max_batch > TM_MAX_BATCH)
        return tool_fail(KEEL_EINVAL, "invalid batch %d (1..%d)", max_batch, TM_MAX_BATCH);
    if (cfg->norm == TM_NORM_BATCH && (size_t)max_batch * T < 2)
        return tool_fail(KEEL_EINVAL, "batchnorm needs at least 2 rows per batch");
    if ((st = tm_memory_check(cfg, max_batch, threads)) != KEEL_OK)
        return st;
    m->max_batch = max_batch;
    m->deep_alpha = cfg->place == TM_DEEPNORM ? (float)pow(2.0 * L, 0.25) : 1.0f;
    const size_t rows = (size_t)max_batch * T, Cz = (size_t)C;
    m->tensors = keel_alloc_zero((size_t)L * 24 + 16, sizeof(tm_tensor));
    m->sub = keel_alloc_zero((size_t)2 * L, sizeof(tm_sub));
    if (!m->tensors || !m->sub)
        goto oom;

    /* the parameter layout */
    m->wte = add_tensor(m, "wte", -1, (size_t)V * C, 1);
    m->wpe = add_tensor(m, "wpe", -1, (size_t)T * C, 1);
    for (int l = 0; l < L; l++) {
        char p[32];
        for (int k = 0; k < 2; k++) {
            tm_sub *s = &m->sub[2 * l + k];
            const char *kind = k ? "mlp" : "attn";
            size_t hidden = k ? 4 * Cz : 3 * Cz, outw = k ? Cz : Cz;
            if (use_nin(m)) {
                snprintf(p, sizeof p, "h%d.%s.norm_in", l, kind);
                add_norm(m, &s->nin, p, l, rows);
            }
            snprintf(p, sizeof p, "h%d.%s.w1", l, kind);
            s->w1 = add_tensor(m, p, l, Cz * hidden, 1);
            snprintf(p, sizeof p, "h%d.%s.b1", l, kind);
            s->b1 = add_tensor(m, p, l, hidden, 0);
            snprintf(p, sizeof p, "h%d.%s.w2", l, kind);
            s->w2 = add_tensor(m, p, l, (k ? hidden : Cz) * outw, 1);
            snprintf(p, sizeof p, "h%d.%s.b2", l, kind);
            s->b2 = add_tensor(m, p, l, outw, 0);
            if (cfg->place == TM_SANDWICH) {
                snprintf(p, sizeof p, "h%d.%s.norm_out", l, kind);
                add_norm(m, &s->nout, p, l, rows);
            }
            if (cfg->place == TM_POST || cfg->place == TM_DEEPNORM) {
                snprintf(p, sizeof p, "h%d.%s.norm", l, kind);
                add_norm(m, &s->nres, p, l, rows);
            }
            if (cfg->layerscale > 0) {
                snprintf(p, sizeof p, "h%d.%s.lambda", l, kind);
                s->ls = add_tensor(m, p, l, Cz, 0);
            }
        }
    }
    m->has_final = use_nin(m);
    if (m->has_final)
        add_norm(m, &m->nfinal, "norm_final", -1, rows);
    m->head = cfg->tied ? m->wte : add_tensor(m, "head", -1, (size_t)V * C, 1);

    m->params = keel_alloc_zero(m->nparams, sizeof(float));
    m->grads = keel_alloc_zero(m->nparams, sizeof(float));
    m->buffers = keel_alloc_zero(m->nbuffers ? m->nbuffers : 1, sizeof(float));
    if (!m->params || !m->grads || !m->buffers)
        goto oom;

    /* activations */
    m->x = keel_alloc_zero((size_t)(2 * L + 1) * rows * Cz, sizeof(float));
    m->dx = keel_alloc_zero(rows * Cz, sizeof(float));
    m->dtmp = keel_alloc_zero(4 * rows * Cz, sizeof(float));
    m->dbig = keel_alloc_zero(rows * 4 * Cz, sizeof(float));
    m->datt = keel_alloc_zero((size_t)T * T, sizeof(float));
    m->logits = keel_alloc_zero(rows * (size_t)V, sizeof(float));
    m->tokens = keel_alloc_zero(rows, sizeof(int));
    m->targets = keel_alloc_zero(rows, sizeof(int));
    if (!m->x || !m->dx || !m->dtmp || !m->dbig || !m->datt || !m->logits || !m->tokens || !m->targets)
        goto oom;
    for (int k = 0; k < 2 * L; k++) {
        tm_sub *s = &m->sub[k];
        if (use_nin(m) && alloc_norm(&s->nin, rows, Cz, 1))
            goto oom;
        if (cfg->place == TM_SANDWICH && alloc_norm(&s->nout, rows, Cz, 1))
            goto oom;
        if (!use_nin(m)) {
            if (alloc_norm(&s->nres, rows, Cz, 0))
                goto oom;
            if (!(s->h = keel_alloc_zero(rows * Cz, sizeof(float))))
                goto oom;
        }
        if (!(s->f = keel_alloc_zero(rows * Cz, sizeof(float))))
            goto oom;
        if (k % 2 == 0) {
            s->qkv = keel_alloc_zero(rows * 3 * Cz, sizeof(float));
            s->p = keel_alloc_zero((size_t)max_batch * cfg->heads * T * T, sizeof(float));
            s->att = keel_alloc_zero(rows * Cz, sizeof(float));
            if (!s->qkv || !s->p || !s->att)
                goto oom;
        } else {
            s->u = keel_alloc_zero(rows * 4 * Cz, sizeof(float));
            s->gl = keel_alloc_zero(rows * 4 * Cz, sizeof(float));
            if (!s->u || !s->gl)
                goto oom;
        }
    }
    if (m->has_final && alloc_norm(&m->nfinal, rows, Cz, 1))
        goto oom;

    /* initialisation */
    tm_rng rng = {seed * 0x2545F4914F6CDD1Dull + 17};
    float *P = m->params;
    const double deep_beta = cfg->place == TM_DEEPNORM ? pow(8.0 * L, -0.25) : 1.0;
    for (size_t i = 0; i < (size_t)V * C; i++)
        P[m->wte + i] = (float)(0.02 * tm_rng_normal(&rng));
    for (size_t i = 0; i < (size_t)T * C; i++)
        P[m->wpe + i] = (float)(0.02 * tm_rng_normal(&rng));
    for (int k = 0; k < 2 * L; k++) {
        tm_sub *s = &m->sub[k];
        if (k % 2 == 0) { /* Q, K, V: Xavier-normal C x C each; DeepNorm scales V (and W_o) by beta */
            double sd = sqrt(2.0 / (2.0 * C));
            for (size_t i = 0; i < Cz; i++)
                for (size_t j = 0; j < 3 * Cz; j++)
                    P[s->w1 + i * 3 * Cz + j] =
                        (float)(sd * (j >= 2 * Cz ? deep_beta : 1.0) * tm_rng_normal(&rng));
            for (size_t i = 0; i < Cz * Cz; i++)
                P[s->w2 + i] = (float)(sd * deep_beta * tm_rng_normal(&rng));
        } else {
            double sd = sqrt(2.0 / (5.0 * C));
            for (size_t i = 0; i < Cz * 4 * Cz; i++)
                P[s->w1 + i] = (float)(sd * deep_beta * tm_rng_normal(&rng));
            for (size_t i = 0; i < Cz * 4 * Cz; i++)
                P[s->w2 + i] = (float)(sd * deep_beta * tm_rng_normal(&rng));
        }
        if (cfg->layerscale > 0)
            for (size_t j = 0; j < Cz; j++)
                P[s->ls + j] = cfg->layerscale;
    }
    if (!cfg->tied)
        for (size_t i = 0; i < (size_t)V * C; i++)
            P[m->head + i] = (float)(0.02 * tm_rng_normal(&rng));
    /* norms: gamma 1, beta 0, DyT alpha 0.5; BatchNorm running variance 1 */
    for (int t = 0; t < m->ntensors; t++) {
        tm_tensor *tt = &m->tensors[t];
        size_t n = strlen(tt->name);
        if (n > 6 && !strcmp(tt->name + n - 6, ".gamma"))
            for (size_t j = 0; j < tt->size; j++)
                P[tt->off + j] = 1.0f;
        if (n > 6 && !strcmp(tt->name + n - 6, ".alpha"))
            P[tt->off] = 0.5f;
    }
    for (size_t i = 0; i < m->nbuffers; i += 2 * Cz)
        for (size_t j = 0; j < Cz; j++)
            m->buffers[i + Cz + j] = 1.0f;

    if ((st = keel_ctx_create(&m->ctx, threads < 1 ? 1 : threads)) != KEEL_OK) {
        tool_fail(st, "keel_ctx_create: %s", keel_last_error());
        tm_destroy(m);
        return st;
    }
    if ((st = tm_set_threads(m, threads)) != KEEL_OK) {
        tool_fail(st, "keel_ctx_set_threads: %s", keel_last_error());
        tm_destroy(m);
        return st;
    }
    m->training = 1;
    return KEEL_OK;
oom:
    tool_fail(KEEL_ENOMEM, "out of memory for the model (layers %d, width %d, batch %d, seq %d)", L, C,
              max_batch, T);
    tm_destroy(m);
    return KEEL_ENOMEM;
}

void tm_destroy(tm_model *m)
{
    if (m->sub) {
        for (int k = 0; k < 2 * m->cfg.layers; k++) {
            tm_sub *s = &m->sub[k];
            free_norm(&s->nin, 1);
            free_norm(&s->nout, 1);
            free_norm(&s->nres, 0);
            keel_free(s->h);
            keel_free(s->f);
            keel_free(s->qkv);
            keel_free(s->p);
            keel_free(s->att);
            keel_free(s->u);
            keel_free(s->gl);
        }
    }
    free_norm(&m->nfinal, 1);
    keel_free(m->sub);
    keel_free(m->tensors);
    keel_free(m->params);
    keel_free(m->grads);
    keel_free(m->buffers);
    keel_free(m->x);
    keel_free(m->dx);
    keel_free(m->dtmp);
    keel_free(m->dbig);
    keel_free(m->datt);
    keel_free(m->logits);
    keel_free(m->tokens);
    keel_free(m->targets);
    keel_ctx_destroy(m->ctx);
    memset(m, 0, sizeof *m);
}

/* ---- normalization through keel ------------------------------------------------------------- */
static const float *opt_param(const tm_model *m, size_t off) { return off == (size_t)-1 ? NULL : m->params + off; }
static float *opt_grad(tm_model *m, size_t off) { return off == (size_t)-1 ? NULL : m->grads + off; }

static const tm_norm_inst *slot_inst(const tm_model *m, int slot, int *sub, const char **role);

/* The per-channel statistics of a monitored norm's input, right after the norm read
 * it (still in cache: at the end of the forward, the inputs of every norm cost twice as much to
 * read again). The per-token statistics go at the end of the forward (tm_forward). */
static void monitor_channels(tm_model *m, const tm_norm_inst *ni, int rows)
{
    if (!m->monitor)
        return;
    double t0 = now_s();
    const int ns = tm_monitor_slots(m);
    for (int sl = 0; sl < ns; sl++) {
        int sub;
        const char *role;
        if (slot_inst(m, sl, &sub, &role) != ni)
            continue;
        if (keel_monitor_channel_width(m->monitor, sl) == m->cfg.width)
            must(m,
                 keel_monitor_observe_channels(m->monitor, sl, (size_t)rows, ni->in,
                                               (size_t)m->cfg.width),
                 "keel_monitor_observe_channels");
        break;
    }
    m->monitor_seconds += now_s() - t0;
}

static void norm_fwd(tm_model *m, tm_norm_inst *ni, const float *in, float *out, int rows)
{
    const size_t C = (size_t)m->cfg.width;
    ni->in = (float *)in;
    ni->out = out;
    double t0 = now_s();
    const float *g = m->params + ni->gamma;
    switch (m->cfg.norm) {
    case TM_NORM_LAYER:
        must(m, keel_layernorm_fwd(m->ctx, rows, C, keel_f32(in, C), keel_f32(out, C), g,
                                opt_param(m, ni->beta), m->cfg.eps, ni->mean, ni->rstd, 0), "keel_layernorm_fwd");
        break;
    case TM_NORM_RMS:
        must(m, keel_rmsnorm_fwd(m->ctx, rows, C, keel_f32(in, C), keel_f32(out, C), g, m->cfg.eps,
                              ni->rstd, 0), "keel_rmsnorm_fwd");
        break;
    case TM_NORM_BATCH:
        must(m, keel_batchnorm_fwd(m->ctx, rows, C, keel_f32(in, C), keel_f32(out, C), g,
                                opt_param(m, ni->beta), m->cfg.eps, m->training, 0.1f,
                                m->buffers + ni->run_mean, m->buffers + ni->run_var, NULL, ni->mean,
                                ni->rstd, 0), "keel_batchnorm_fwd");
        break;
    case TM_NORM_DYT:
        must(m, keel_dyt_fwd(m->ctx, rows, C, keel_f32(in, C), keel_f32(out, C), m->params[ni->alpha], g,
                          opt_param(m, ni->beta), 0), "keel_dyt_fwd");
        break;
    case TM_NORM_NONE:
        if (out != in)
            memcpy(out, in, (size_t)rows * C * sizeof(float));
        break;
    }
    m->norm_seconds += now_s() - t0;
    monitor_channels(m, ni, rows);
}

/* dx = (or +=, accumulate) the gradient through the norm; parameter gradients accumulate. */
static void norm_bwd(tm_model *m, tm_norm_inst *ni, const float *dy, float *dx, int accumulate, int rows)
{
    const size_t C = (size_t)m->cfg.width;
    unsigned fl = KEEL_FLAG_ACCUMULATE_DPARAMS | (accumulate ? KEEL_FLAG_ACCUMULATE_DX : 0);
    double t0 = now_s();
    const float *g = m->params + ni->gamma;
    switch (m->cfg.norm) {
    case TM_NORM_LAYER:
        must(m, keel_layernorm_bwd(m->ctx, rows, C, keel_f32(dy, C), keel_f32(ni->in, C), ni->mean, ni->rstd,
                                g, m->cfg.eps, keel_f32(dx, C), m->grads + ni->gamma,
                                opt_grad(m, ni->beta), fl), "keel_layernorm_bwd");
        break;
    case TM_NORM_RMS:
        must(m, keel_rmsnorm_bwd(m->ctx, rows, C, keel_f32(dy, C), keel_f32(ni->in, C), ni->rstd, g,
                              m->cfg.eps, keel_f32(dx, C), m->grads + ni->gamma, fl), "keel_rmsnorm_bwd");
        break;
    case TM_NORM_BATCH:
        must(m, keel_batchnorm_bwd(m->ctx, rows, C, keel_f32(dy, C), keel_f32(ni->in, C), ni->mean,
                                ni->rstd, g, m->cfg.eps, m->training, keel_f32(dx, C),
                                m->grads + ni->gamma, opt_grad(m, ni->beta), fl), "keel_batchnorm_bwd");
        break;
    case TM_NORM_DYT: {
        float da = 0.0f;
        must(m, keel_dyt_bwd(m->ctx, rows, C, keel_f32(dy, C), keel_f32(ni->in, C), m->params[ni->alpha], g,
                          keel_f32(dx, C), &da, m->grads + ni->gamma, opt_grad(m, ni->beta), fl),
             "keel_dyt_bwd");
        m->grads[ni->alpha] += da;
        break;
    }
    case TM_NORM_NONE: {
        size_t n = (size_t)rows * C;
        if (accumulate)
            for (size_t i = 0; i < n; i++)
                dx[i] += dy[i];
        else if (dx != dy)
            memcpy(dx, dy, n * sizeof(float));
        break;
    }
    }
    m->norm_seconds += now_s() - t0;
}

/* ---- the branches ----------------------------------------------------------------------------- */
static void attn_fwd(tm_model *m, tm_sub *s, const float *a, int B, int T)
{
    const int C = m->cfg.width, H = m->cfg.heads, hd = C / H, rows = B * T;
    const float *P = m->params;
    gemm(0, 0, rows, 3 * C, C, 1.0f, a, C, P + s->w1, 3 * C, 0.0f, s->qkv, 3 * C);
    add_bias(s->qkv, P + s->b1, rows, 3 * C);
    const float scale = 1.0f / sqrtf((float)hd);
    for (int b = 0; b < B; b++)
        for (int h = 0; h < H; h++) {
            const float *Q = s->qkv + (size_t)b * T * 3 * C + (size_t)h * hd;
            const float *K = Q + C, *Vv = Q + 2 * C;
            float *pm = s->p + ((size_t)b * H + h) * T * T;
            gemm(0, 1, T, T, hd, scale, Q, 3 * C, K, 3 * C, 0.0f, pm, T);
            for (int i = 0; i < T; i++) {
                float *row = pm + (size_t)i * T, mx = row[0];
                for (int j = 1; j <= i; j++)
                    mx = row[j] > mx ? row[j] : mx;
                double sum = 0.0;
                for (int j = 0; j <= i; j++) {
                    row[j] = expf(row[j] - mx);
                    sum += row[j];
                }
                float inv = (float)(1.0 / sum);
                for (int j = 0; j <= i; j++)
                    row[j] *= inv;
                for (int j = i + 1; j < T; j++)
                    row[j] = 0.0f;
            }
            gemm(0, 0, T, hd, T, 1.0f, pm, T, Vv, 3 * C, 0.0f, s->att + (size_t)b * T * C + (size_t)h * hd, C);
        }
    gemm(0, 0, rows, C, C, 1.0f, s->att, C, P + s->w2, C, 0.0f, s->f, C);
    add_bias(s->f, P + s->b2, rows, C);
}

/* df: gradient of the branch output; a: the branch input; da: written. */
static void attn_bwd(tm_model *m, tm_sub *s, const float *a, const float *df, float *da, int B, int T)
{
    const int C = m->cfg.width, H = m->cfg.heads, hd = C / H, rows = B * T;
    const float *P = m->params;
    float *G = m->grads;
    float *datt = m->dtmp + (size_t)2 * rows * C, *dqkv = m->dbig, *dp = m->datt;
    gemm(1, 0, C, C, rows, 1.0f, s->att, C, df, C, 1.0f, G + s->w2, C);
    colsum_acc(G + s->b2, df, rows, C);
    gemm(0, 1, rows, C, C, 1.0f, df, C, P + s->w2, C, 0.0f, datt, C);
    const float scale = 1.0f / sqrtf((float)hd);
    for (int b = 0; b < B; b++)
        for (int h = 0; h < H; h++) {
            size_t off = (size_t)b * T * 3 * C + (size_t)h * hd;
            const float *Q = s->qkv + off, *K = Q + C, *Vv = Q + 2 * C;
            const float *pm = s->p + ((size_t)b * H + h) * T * T;
            const float *dO = datt + (size_t)b * T * C + (size_t)h * hd;
            gemm(0, 1, T, T, hd, 1.0f, dO, C, Vv, 3 * C, 0.0f, dp, T);
            gemm(1, 0, T, hd, T, 1.0f, pm, T, dO, C, 0.0f, dqkv + off + 2 * C, 3 * C);
            for (int i = 0; i < T; i++) {
                const float *pr = pm + (size_t)i * T;
                float *dr = dp + (size_t)i * T;
                double dot = 0.0;
                for (int j = 0; j <= i; j++)
                    dot += (double)pr[j] * dr[j];
                for (int j = 0; j <= i; j++)
                    dr[j] = pr[j] * (dr[j] - (float)dot) * scale;
                for (int j = i + 1; j < T; j++)
                    dr[j] = 0.0f;
            }
            gemm(0, 0, T, hd, T, 1.0f, dp, T, K, 3 * C, 0.0f, dqkv + off, 3 * C);
            gemm(1, 0, T, hd, T, 1.0f, dp, T, Q, 3 * C, 0.0f, dqkv + off + C, 3 * C);
        }
    gemm(1, 0, C, 3 * C, rows, 1.0f, a, C, dqkv, 3 * C, 1.0f, G + s->w1, 3 * C);
    colsum_acc(G + s->b1, dqkv, rows, 3 * C);
    gemm(0, 1, rows, C, 3 * C, 1.0f, dqkv, 3 * C, P + s->w1, 3 * C, 0.0f, da, C);
}

static void mlp_fwd(tm_model *m, tm_sub *s, const float *a, int rows)
{
    const int C = m->cfg.width, F = 4 * C;
    const float *P = m->params;
    gemm(0, 0, rows, F, C, 1.0f, a, C, P + s->w1, F, 0.0f, s->u, F);
    add_bias(s->u, P + s->b1, rows, F);
    for (size_t i = 0; i < (size_t)rows * F; i++)
        s->gl[i] = gelu(s->u[i]);
    gemm(0, 0, rows, C, F, 1.0f, s->gl, F, P + s->w2, C, 0.0f, s->f, C);
    add_bias(s->f, P + s->b2, rows, C);
}

static void mlp_bwd(tm_model *m, tm_sub *s, const float *a, const float *df, float *da, int rows)
{
    const int C = m->cfg.width, F = 4 * C;
    const float *P = m->params;
    float *G = m->grads, *du = m->dbig;
    gemm(1, 0, F, C, rows, 1.0f, s->gl, F, df, C, 1.0f, G + s->w2, C);
    colsum_acc(G + s->b2, df, rows, C);
    gemm(0, 1, rows, F, C, 1.0f, df, C, P + s->w2, C, 0.0f, du, F);
    for (size_t i = 0; i < (size_t)rows * F; i++)
        du[i] *= gelu_grad(s->u[i]);
    gemm(1, 0, C, F, rows, 1.0f, a, C, du, F, 1.0f, G + s->w1, F);
    colsum_acc(G + s->b1, du, rows, F);
    gemm(0, 1, rows, C, F, 1.0f, du, F, P + s->w1, F, 0.0f, da, C);
}

/* ---- blocks ----------------------------------------------------------------------------------- */
static float *stream(tm_model *m, int k) { return m->x + (size_t)k * m->max_batch * m->cfg.seq * m->cfg.width; }
static int fused_norm(const tm_model *m) { return m->cfg.norm == TM_NORM_LAYER || m->cfg.norm == TM_NORM_RMS; }

/* The branch output r that enters the residual: f, or Norm_out(f) in sandwich. */
static const float *branch_out(const tm_model *m, const tm_sub *s)
{
    return m->cfg.place == TM_SANDWICH ? s->nout.out : s->f;
}

static void sub_fwd(tm_model *m, int k, int B, int T)
{
    tm_sub *s = &m->sub[k];
    const int rows = B * T;
    const size_t C = (size_t)m->cfg.width, n = (size_t)rows * C;
    const float *xin = stream(m, k);
    float *xout = stream(m, k + 1);
    const float *a = xin;
    if (use_nin(m)) {
        norm_fwd(m, &s->nin, xin, s->nin.out, rows);
        a = s->nin.out;
    }
    if (k % 2 == 0)
        attn_fwd(m, s, a, B, T);
    else
        mlp_fwd(m, s, a, rows);
    if (m->cfg.place == TM_SANDWICH)
        norm_fwd(m, &s->nout, s->f, s->nout.out, rows);
    const float *r = branch_out(m, s);
    const float *lambda = m->cfg.layerscale > 0 ? m->params + s->ls : NULL;
    if (use_nin(m)) { /* x + lambda * r */
        if (lambda)
            must(m, keel_layerscale_fwd(m->ctx, rows, C, keel_f32(xin, C), keel_f32(r, C), lambda,
                                     keel_f32(xout, C), 0), "keel_layerscale_fwd");
        else
            for (size_t i = 0; i < n; i++)
                xout[i] = xin[i] + r[i];
        return;
    }
    /* post-norm and DeepNorm: Norm(alpha * x + lambda * r) */
    const float alpha = m->deep_alpha;
    s->nres.in = s->h;
    s->nres.out = xout;
    if (fused_norm(m)) {
        keel_residual res = keel_residual_add(keel_f32(xin, C), keel_f32(r, C));
        res.alpha = alpha;
        res.lambda = lambda;
        double t0 = now_s();
        if (m->cfg.norm == TM_NORM_LAYER)
            must(m, keel_add_layernorm_fwd(m->ctx, rows, C, &res, keel_f32(s->h, C), keel_f32(xout, C),
                                        m->params + s->nres.gamma, m->params + s->nres.beta, m->cfg.eps,
                                        s->nres.mean, s->nres.rstd, 0), "keel_add_layernorm_fwd");
        else
            must(m, keel_add_rmsnorm_fwd(m->ctx, rows, C, &res, keel_f32(s->h, C), keel_f32(xout, C),
                                      m->params + s->nres.gamma, m->cfg.eps, s->nres.rstd, 0),
                 "keel_add_rmsnorm_fwd");
        m->norm_seconds += now_s() - t0;
        monitor_channels(m, &s->nres, rows);
        return;
    }
    for (size_t i = 0; i < n; i++) {
        float rr = lambda ? lambda[i % C] * r[i] : r[i];
        s->h[i] = alpha * xin[i] + rr;
    }
    norm_fwd(m, &s->nres, s->h, xout, rows);
}

/* m->dx holds the gradient of sublayer k's output; on return, of its input. */
static void sub_bwd(tm_model *m, int k, int B, int T)
{
    tm_sub *s = &m->sub[k];
    const int rows = B * T;
    const size_t C = (size_t)m->cfg.width, n = (size_t)rows * C;
    const float *xin = stream(m, k);
    float *dr = m->dtmp, *d1 = m->dtmp + n, *da = m->dtmp + 3 * n;
    const float *r = branch_out(m, s);
    const float *lambda = m->cfg.layerscale > 0 ? m->params + s->ls : NULL;
    float *dlambda = lambda ? m->grads + s->ls : NULL;
    if (use_nin(m)) { /* dx_in = dx_out (kept in m->dx), dr = lambda * dx_out */
        if (lambda)
            must(m, keel_layerscale_bwd(m->ctx, rows, C, keel_f32(m->dx, C), keel_f32(r, C), lambda, keel_none(),
                                     keel_f32(dr, C), dlambda, KEEL_FLAG_ACCUMULATE_DPARAMS),
                 "keel_layerscale_bwd");
        else
            memcpy(dr, m->dx, n * sizeof(float));
    } else {
        const float alpha = m->deep_alpha;
        if (fused_norm(m)) {
            keel_residual res = keel_residual_add(keel_f32(xin, C), keel_f32(r, C));
            res.alpha = alpha;
            res.lambda = lambda;
            keel_residual_grads gr;
            gr.dx = keel_f32(d1, C);
            gr.dr = keel_f32(dr, C);
            gr.dlambda = dlambda;
            gr.dbias = NULL;
            double t0 = now_s();
            if (m->cfg.norm == TM_NORM_LAYER)
                must(m, keel_add_layernorm_bwd(m->ctx, rows, C, keel_f32(m->dx, C), keel_none(), &res,
                                            keel_f32(s->h, C), s->nres.mean, s->nres.rstd,
                                            m->params + s->nres.gamma, m->cfg.eps, &gr,
                                            m->grads + s->nres.gamma, m->grads + s->nres.beta,
                                            KEEL_FLAG_ACCUMULATE_DPARAMS), "keel_add_layernorm_bwd");
            else
                must(m, keel_add_rmsnorm_bwd(m->ctx, rows, C, keel_f32(m->dx, C), keel_none(), &res,
                                          keel_f32(s->h, C), s->nres.rstd, m->params + s->nres.gamma,
                                          m->cfg.eps, &gr, m->grads + s->nres.gamma,
                                          KEEL_FLAG_ACCUMULATE_DPARAMS), "keel_add_rmsnorm_bwd");
            m->norm_seconds += now_s() - t0;
            memcpy(m->dx, d1, n * sizeof(float));
        } else {
            norm_bwd(m, &s->nres, m->dx, d1, 0, rows); /* d1 = dh */
            for (size_t i = 0; i < n; i++) {
                m->dx[i] = alpha * d1[i];
                if (lambda) {
                    dr[i] = lambda[i % C] * d1[i];
                    dlambda[i % C] += d1[i] * r[i];
                } else {
                    dr[i] = d1[i];
                }
            }
        }
    }
    const float *df = dr;
    if (m->cfg.place == TM_SANDWICH) {
        norm_bwd(m, &s->nout, dr, d1, 0, rows);
        df = d1;
    }
    const float *a = use_nin(m) ? s->nin.out : xin;
    if (k % 2 == 0)
        attn_bwd(m, s, a, df, da, B, T);
    else
        mlp_bwd(m, s, a, df, da, rows);
    if (use_nin(m))
        norm_bwd(m, &s->nin, da, m->dx, 1, rows);
    else
        for (size_t i = 0; i < n; i++)
            m->dx[i] += da[i];
}

/* ---- the whole model ------------------------------------------------------------------------- */
double tm_forward(tm_model *m, const int *tokens, const int *targets, int B, int T)
{
    const int C = m->cfg.width, V = m->cfg.vocab, L = m->cfg.layers, rows = B * T;
    m->B = B;
    m->T = T;
    m->error[0] = '\0';
    m->error_status = KEEL_OK;
    memcpy(m->tokens, tokens, (size_t)rows * sizeof(int));
    float *x0 = stream(m, 0);
    const float *P = m->params;
    for (int b = 0; b < B; b++)
        for (int t = 0; t < T; t++) {
            int tok = tokens[b * T + t];
            float *row = x0 + ((size_t)b * T + t) * C;
            for (int j = 0; j < C; j++)
                row[j] = P[m->wte + (size_t)tok * C + j] + P[m->wpe + (size_t)t * C + j];
        }
    for (int k = 0; k < 2 * L; k++)
        sub_fwd(m, k, B, T);
    const float *xl = stream(m, 2 * L);
    if (m->has_final) {
        norm_fwd(m, &m->nfinal, xl, m->nfinal.out, rows);
        m->xf = m->nfinal.out;
    } else {
        m->xf = (float *)xl;
    }
    if (m->monitor) { /* issue 8: the statistics the norms computed, to the monitor */
        double t0 = now_s();
        const int ns = tm_monitor_slots(m);
        for (int sl = 0; sl < ns; sl++) {
            const float *mu, *rs;
            tm_monitor_stats(m, sl, &mu, &rs);
            must(m, keel_monitor_observe(m->monitor, sl, (size_t)rows, mu, rs), "keel_monitor_observe");
        }
        m->monitor_seconds += now_s() - t0;
    }
    gemm(0, 1, rows, V, C, 1.0f, m->xf, C, P + m->head, C, 0.0f, m->logits, V);
    double loss = 0.0;
    for (int r = 0; r < rows; r++) {
        float *lg = m->logits + (size_t)r * V, mx = lg[0];
        for (int v = 1; v < V; v++)
            mx = lg[v] > mx ? lg[v] : mx;
        double sum = 0.0;
        for (int v = 0; v < V; v++) {
            lg[v] = expf(lg[v] - mx);
            sum += lg[v];
        }
        for (int v = 0; v < V; v++)
            lg[v] = (float)(lg[v] / sum);
        if (targets) {
            m->targets[r] = targets[r];
            double p = lg[targets[r]];
            loss -= log(p > 1e-30 ? p : 1e-30);
            if (mx != mx) /* NaN logits: report NaN, not a clamped loss */
                loss = NAN;
        }
    }
    if (m->error[0])
        return NAN;
    return targets ? loss / rows : 0.0;
}

const char *tm_error(const tm_model *m) { return m->error[0] ? m->error : NULL; }

int tm_backward(tm_model *m)
{
    const int C = m->cfg.width, V = m->cfg.vocab, L = m->cfg.layers, B = m->B, T = m->T, rows = B * T;
    memset(m->grads, 0, m->nparams * sizeof(float));
    float *dl = m->logits;
    const float inv = 1.0f / (float)rows;
    for (int r = 0; r < rows; r++) {
        dl[(size_t)r * V + m->targets[r]] -= 1.0f;
        for (int v = 0; v < V; v++)
            dl[(size_t)r * V + v] *= inv;
    }
    gemm(1, 0, V, C, rows, 1.0f, dl, V, m->xf, C, 1.0f, m->grads + m->head, C);
    if (m->has_final) {
        gemm(0, 0, rows, C, V, 1.0f, dl, V, m->params + m->head, C, 0.0f, m->dtmp, C);
        norm_bwd(m, &m->nfinal, m->dtmp, m->dx, 0, rows);
    } else {
        gemm(0, 0, rows, C, V, 1.0f, dl, V, m->params + m->head, C, 0.0f, m->dx, C);
    }
    for (int k = 2 * L - 1; k >= 0; k--)
        sub_bwd(m, k, B, T);
    float *G = m->grads;
    for (int b = 0; b < B; b++)
        for (int t = 0; t < T; t++) {
            int tok = m->tokens[b * T + t];
            const float *d = m->dx + ((size_t)b * T + t) * C;
            for (int j = 0; j < C; j++) {
                G[m->wte + (size_t)tok * C + j] += d[j];
                G[m->wpe + (size_t)t * C + j] += d[j];
            }
        }
    return m->error[0] ? -1 : 0;
}

/* ---- diagnostics ------------------------------------------------------------------------------ */
void tm_residual_norms(const tm_model *m, double *out)
{
    const int C = m->cfg.width, rows = m->B * m->T;
    for (int l = 0; l <= m->cfg.layers; l++) {
        const float *x = m->x + (size_t)(2 * l) * m->max_batch * m->cfg.seq * C;
        double acc = 0.0;
        for (int r = 0; r < rows; r++) {
            double s2 = 0.0;
            for (int j = 0; j < C; j++)
                s2 += (double)x[(size_t)r * C + j] * x[(size_t)r * C + j];
            acc += sqrt(s2);
        }
        out[l] = acc / rows;
    }
}

static double sumsq(const float *g, size_t n)
{
    double s = 0.0;
    for (size_t i = 0; i < n; i++)
        s += (double)g[i] * g[i];
    return s;
}

void tm_layer_grad_norms(const tm_model *m, double *out)
{
    for (int l = 0; l < m->cfg.layers; l++)
        out[l] = 0.0;
    for (int t = 0; t < m->ntensors; t++)
        if (m->tensors[t].layer >= 0)
            out[m->tensors[t].layer] += sumsq(m->grads + m->tensors[t].off, m->tensors[t].size);
    for (int l = 0; l < m->cfg.layers; l++)
        out[l] = sqrt(out[l]);
}

void tm_mlp_out_grad_norms(const tm_model *m, double *out)
{
    const size_t C = (size_t)m->cfg.width;
    for (int l = 0; l < m->cfg.layers; l++)
        out[l] = sqrt(sumsq(m->grads + m->sub[2 * l + 1].w2, 4 * C * C));
}

double tm_grad_norm(const tm_model *m) { return sqrt(sumsq(m->grads, m->nparams)); }

/* ---- the monitor's slots (issue 8) ------------------------------------------------------------ */
/* Slot -> norm instance (and its sublayer and role), in forward order. */
static const tm_norm_inst *slot_inst(const tm_model *m, int slot, int *sub, const char **role)
{
    if (m->cfg.norm != TM_NORM_LAYER && m->cfg.norm != TM_NORM_RMS)
        return NULL;
    int i = 0;
    for (int k = 0; k < 2 * m->cfg.layers; k++) {
        const tm_sub *s = &m->sub[k];
        *sub = k;
        if (use_nin(m) && i++ == slot) {
            *role = "in";
            return &s->nin;
        }
        if (m->cfg.place == TM_SANDWICH && i++ == slot) {
            *role = "out";
            return &s->nout;
        }
        if (!use_nin(m) && i++ == slot) {
            *role = "res";
            return &s->nres;
        }
    }
    *sub = -1;
    *role = "final";
    return m->has_final && i == slot ? &m->nfinal : NULL;
}

int tm_monitor_slots(const tm_model *m)
{
    if (m->cfg.norm != TM_NORM_LAYER && m->cfg.norm != TM_NORM_RMS)
        return 0;
    int per = m->cfg.place == TM_SANDWICH ? 2 : 1;
    return 2 * m->cfg.layers * per + (m->has_final ? 1 : 0);
}

void tm_monitor_stats(const tm_model *m, int slot, const float **mean, const float **rstd)
{
    int sub;
    const char *role;
    const tm_norm_inst *ni = slot_inst(m, slot, &sub, &role);
    *mean = ni && m->cfg.norm == TM_NORM_LAYER ? ni->mean : NULL;
    *rstd = ni ? ni->rstd : NULL;
}

const float *tm_monitor_input(const tm_model *m, int slot)
{
    int sub;
    const char *role;
    const tm_norm_inst *ni = slot_inst(m, slot, &sub, &role);
    return ni ? ni->in : NULL;
}

void tm_monitor_slot_name(const tm_model *m, int slot, char *buf, size_t len)
{
    int sub;
    const char *role;
    if (!slot_inst(m, slot, &sub, &role))
        snprintf(buf, len, "?%d", slot);
    else if (sub < 0)
        snprintf(buf, len, "final");
    else
        snprintf(buf, len, "L%d.%s.%s", sub / 2, sub % 2 ? "mlp" : "attn", role);
}
