/* keel train: the checkpoint loader's range checks (checkpoint_check.h). */
#include "checkpoint_check.h"

#include <math.h>
#include <string.h>

#include "trainer.h"

/* The training settings of the header: NULL when all are in range, else the field's name, its
 * value in *v and the rule in *rule. */
static const char *bad_setting(const tm_train_state *st, double *v, const char **rule)
{
#define BAD(name, value, why) return (*v = (double)(value), *rule = (why), (name))
    if (st->batch < 1 || st->batch > TM_MAX_BATCH)
        BAD("batch", st->batch, "1..1048576");
    if (st->steps < 1 || st->steps > TR_MAX_STEPS)
        BAD("steps", st->steps, "1..1e8");
    if (st->warmup < 0 || st->warmup > TR_MAX_STEPS)
        BAD("warmup", st->warmup, "0..1e8");
    if (st->cosine != 0 && st->cosine != 1)
        BAD("decay", st->cosine, "0 or 1");
    if (!(st->lr > 0 && st->lr <= TR_MAX_SETTING))
        BAD("lr", st->lr, "finite, > 0");
    if (!(st->min_frac >= 0 && st->min_frac <= 1))
        BAD("min-lr-frac", st->min_frac, "0..1");
    if (!(st->wd >= 0 && st->wd <= TR_MAX_SETTING))
        BAD("wd", st->wd, "finite, >= 0");
    if (!(st->beta1 >= 0 && st->beta1 < 1))
        BAD("beta1", st->beta1, "in [0, 1)");
    if (!(st->beta2 >= 0 && st->beta2 < 1))
        BAD("beta2", st->beta2, "in [0, 1)");
    if (!(st->clip >= 0 && st->clip <= TR_MAX_SETTING))
        BAD("clip", st->clip, "finite, >= 0");
    if (st->step < 0 || st->step > st->steps)
        BAD("step", st->step, "0..steps");
    if (st->vocab != st->cfg.vocab)
        BAD("vocabulary size", st->vocab, "the model's");
    int seen[256] = {0};
    for (int i = 0; i < st->vocab; i++)
        if (seen[st->chars[i]]++)
            BAD("vocabulary byte", st->chars[i], "each byte once");
#undef BAD
    return NULL;
}

/* The first of n floats at p that is not finite (or, nonneg, negative): its index, or n. */
static uint64_t first_bad(const unsigned char *p, uint64_t n, int nonneg, float *val)
{
    for (uint64_t i = 0; i < n; i++) {
        float x;
        memcpy(&x, p + i * sizeof(float), sizeof x);
        if (!isfinite(x) || (nonneg && x < 0)) {
            *val = x;
            return i;
        }
    }
    return n;
}

keel_status tm_ckpt_check(const char *path, const tm_train_state *st, const unsigned char *body, uint64_t np,
                          uint64_t nb)
{
    if (tm_config_check(&st->cfg) != KEEL_OK)
        return tool_fail(KEEL_EFORMAT, "%s: corrupt checkpoint: its header holds an %s", path, tool_last_error());
    double v = 0;
    const char *rule = NULL, *bad = bad_setting(st, &v, &rule);
    if (bad) {
        tool_fail(KEEL_EFORMAT, "%s: corrupt checkpoint: its header holds an invalid setting: %s is %g (%s)", path, bad,
                  v, rule);
        return KEEL_EFORMAT;
    }
    size_t want_np, want_nb;
    tm_model_size(&st->cfg, &want_np, &want_nb);
    if (np != want_np || nb != want_nb) {
        tool_fail(KEEL_EFORMAT, "%s: truncated or corrupt checkpoint: its header describes a model of %zu parameters "
                  "and %zu buffers (%.1f MB of data), the file holds %llu and %llu (%.1f MB)", path, want_np, want_nb,
                  (3.0 * (double)want_np + (double)want_nb) * 4e-6, (unsigned long long)np, (unsigned long long)nb,
                  (3.0 * (double)np + (double)nb) * 4e-6);
        return KEEL_EFORMAT;
    }
    /* params, AdamW m (finite), AdamW v (finite, >= 0), t, buffers (finite; BatchNorm's running
     * variances, the second half of each block of 2 x width, >= 0) */
    static const char *const what[3] = {"parameter", "AdamW first moment", "AdamW second moment"};
    for (int k = 0; k < 3; k++) {
        float x;
        uint64_t i = first_bad(body + (size_t)k * np * sizeof(float), np, k == 2, &x);
        if (i < np) {
            tool_fail(KEEL_EFORMAT, "%s: corrupt checkpoint: %s %llu of %llu is %g (must be finite%s)", path, what[k],
                      (unsigned long long)i, (unsigned long long)np, x, k == 2 ? " and >= 0" : "");
            return KEEL_EFORMAT;
        }
    }
    int64_t t;
    memcpy(&t, body + 3 * np * sizeof(float), sizeof t);
    if (t < 0 || t > TR_MAX_STEPS) {
        tool_fail(KEEL_EFORMAT, "%s: corrupt checkpoint: AdamW's step count is %lld (0..1e8)", path, (long long)t);
        return KEEL_EFORMAT;
    }
    const unsigned char *buf = body + 3 * np * sizeof(float) + sizeof t;
    const uint64_t C = (uint64_t)st->cfg.width;
    for (uint64_t b0 = 0; b0 < nb; b0 += 2 * C) {
        float x;
        uint64_t i = first_bad(buf + b0 * sizeof(float), C, 0, &x);
        if (i == C) /* the means are fine: the variances */
            i = C + first_bad(buf + (b0 + C) * sizeof(float), C, 1, &x);
        if (i < 2 * C) {
            tool_fail(KEEL_EFORMAT, "%s: corrupt checkpoint: BatchNorm running %s %llu is %g (must be finite%s)", path,
                      i < C ? "mean" : "variance", (unsigned long long)(b0 + i), x, i < C ? "" : " and >= 0");
            return KEEL_EFORMAT;
        }
    }
    return KEEL_OK;
}
