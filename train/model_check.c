/* keel train: what a model configuration may be and what it costs, known before anything is
 * allocated (model.h: tm_config_check, tm_model_size, tm_model_bytes, tm_memory_check). */
#define _DEFAULT_SOURCE /* MAP_ANONYMOUS, MAP_NORESERVE */
#include <math.h>
#include <stdio.h>
#include <sys/mman.h>
#include <sys/resource.h>

#include "model.h"
#include "tool_error.h"

/* The command's own buffers beside the model (a text, its recording, the optimiser's first
 * steps): some room the probe keeps free for them. */
#define HEADROOM_BYTES ((double)(32 << 20))
/* No machine this runs on holds more; a configuration that needs more is refused outright (and
 * no size below can wrap around). */
#define MAX_BYTES 70368744177664.0 /* 2^46: 64 TiB */

keel_status tm_config_check(const tm_config *c)
{
    const char *bad = NULL, *rule = NULL;
    double v = 0;
#define BAD(name, value, why) (bad = (name), v = (double)(value), rule = (why))
    if (c->layers < 1 || c->layers > TM_MAX_LAYERS)
        BAD("layers", c->layers, "1..1024");
    else if (c->width < 1 || c->width > TM_MAX_WIDTH)
        BAD("width", c->width, "1..65536");
    else if (c->heads < 1 || c->heads > c->width || c->width % c->heads)
        BAD("heads", c->heads, "must divide the width");
    else if (c->seq < 1 || c->seq > TM_MAX_SEQ)
        BAD("seq", c->seq, "1..65536");
    else if (c->vocab < 2 || c->vocab > 256)
        BAD("vocab", c->vocab, "2..256");
    else if (c->tied != 0 && c->tied != 1)
        BAD("tied", c->tied, "0 or 1");
    else if ((unsigned)c->norm > TM_NORM_NONE)
        BAD("norm", c->norm, "0..4");
    else if ((unsigned)c->place > TM_SANDWICH)
        BAD("placement", c->place, "0..3");
    else if (!(c->layerscale >= 0 && c->layerscale <= TM_MAX_SETTING))
        BAD("layerscale", c->layerscale, "finite, 0..1e9");
    else if (!(c->eps >= 0 && c->eps <= TM_MAX_SETTING))
        BAD("eps", c->eps, "finite, 0..1e9");
#undef BAD
    if (!bad)
        return KEEL_OK;
    return tool_fail(KEEL_EINVAL, "invalid model setting: %s is %g (%s)", bad, v, rule);
}

static int use_nin(const tm_config *c) { return c->place == TM_PRE || c->place == TM_SANDWICH; }

/* norm instances per sublayer: pre 1 (in), sandwich 2 (in, out), post and DeepNorm 1 (res) */
static size_t norms_per_sub(const tm_config *c) { return c->place == TM_SANDWICH ? 2 : 1; }

void tm_model_size(const tm_config *c, size_t *nparams, size_t *nbuffers)
{
    const size_t C = (size_t)c->width, V = (size_t)c->vocab, T = (size_t)c->seq, L = (size_t)c->layers;
    /* one norm instance (model.c add_norm): gamma; beta (LayerNorm, BatchNorm, DyT); DyT's alpha;
     * BatchNorm's running mean and variance as buffers */
    const size_t norm_p = C + (c->norm == TM_NORM_LAYER || c->norm == TM_NORM_BATCH || c->norm == TM_NORM_DYT ? C : 0) +
                          (c->norm == TM_NORM_DYT ? 1 : 0);
    const size_t norm_b = c->norm == TM_NORM_BATCH ? 2 * C : 0;
    /* attention: w1 C x 3C, b1 3C, w2 C x C, b2 C; MLP: w1 C x 4C, b1 4C, w2 4C x C, b2 C */
    const size_t sub_p = (4 * C * C + 4 * C) + (8 * C * C + 5 * C);
    const size_t norms = 2 * L * norms_per_sub(c) + (use_nin(c) ? 1 : 0);
    *nparams = V * C + T * C + L * sub_p + norms * norm_p + (c->layerscale > 0 ? 2 * L * C : 0) +
               (c->tied ? 0 : V * C);
    *nbuffers = norms * norm_b;
}

double tm_model_bytes(const tm_config *c, int max_batch)
{
    size_t np, nb;
    tm_model_size(c, &np, &nb);
    const double C = c->width, T = c->seq, L = c->layers, V = c->vocab, rows = (double)max_batch * T;
    const double stats = 2.0 * (rows > C ? rows : C), rc = rows * C;
    double f = 2.0 * (double)np + (double)nb;          /* params, grads, buffers */
    f += (2 * L + 1) * rc + rc + 4 * rc + 4 * rc + T * T; /* x, dx, dtmp, dbig, datt */
    f += rows * V + 2 * rows;                           /* logits, tokens and targets */
    /* per sublayer: its norms' statistics and outputs (post, DeepNorm: h instead), f; attention
     * qkv, p (B x heads x T x T), att; MLP u, gl */
    const double norm_f = use_nin(c) ? (double)norms_per_sub(c) * (stats + rc) : stats + rc;
    f += L * (2 * (norm_f + rc) + (3 * rc + (double)max_batch * c->heads * T * T + rc) + 8 * rc);
    if (use_nin(c))
        f += stats + rc; /* the final norm */
    return 4.0 * f + (24 * L + 16) * sizeof(tm_tensor) + 2 * L * sizeof(tm_sub);
}

keel_status tm_memory_check(const tm_config *c, int max_batch, int threads)
{
    const double model = tm_model_bytes(c, max_batch);
    const int blas = tm_have_cblas() ? (threads < 1 ? 1 : threads) : 0;
    const double need = model + blas * (double)TM_BLAS_BUFFER_BYTES + HEADROOM_BYTES;
    const double mib = 1048576.0;
    if (need > MAX_BYTES) {
        tool_fail(KEEL_EINVAL, "the model (layers %d, width %d, batch %d, seq %d) would need %.3g GiB: too large",
                  c->layers, c->width, max_batch, c->seq, model / (1024 * mib));
        return KEEL_EINVAL;
    }
    void *p = mmap(NULL, (size_t)need, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (p != MAP_FAILED) {
        munmap(p, (size_t)need);
        return KEEL_OK;
    }
    struct rlimit rl;
    char limit[64] = "";
    if (getrlimit(RLIMIT_AS, &rl) == 0 && rl.rlim_cur != RLIM_INFINITY)
        snprintf(limit, sizeof limit, " (ulimit -v %llu)", (unsigned long long)(rl.rlim_cur / 1024));
    tool_fail(KEEL_ENOMEM, "not enough memory: the model (layers %d, width %d, batch %d, seq %d) needs about %.0f MiB and "
              "OpenBLAS %d x %.0f MiB of working buffers (one per thread), %.0f MiB in all with some headroom; "
              "this process cannot map that much more%s",
              c->layers, c->width, max_batch, c->seq, model / mib, blas, (double)TM_BLAS_BUFFER_BYTES / mib,
              need / mib, limit);
    return KEEL_ENOMEM;
}
