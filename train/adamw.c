/* keel train: AdamW and the learning-rate schedule. */
#include "adamw.h"

#include <math.h>
#include <stdlib.h>

#include "alloc.h"

int tm_adamw_init(tm_adamw *o, size_t nparams, float beta1, float beta2, float eps, float wd)
{
    o->beta1 = beta1;
    o->beta2 = beta2;
    o->eps = eps;
    o->wd = wd;
    o->t = 0;
    o->m = keel_alloc_zero(nparams ? nparams : 1, sizeof(float));
    o->v = keel_alloc_zero(nparams ? nparams : 1, sizeof(float));
    if (o->m && o->v)
        return 0;
    /* Its callers (trainer.c, the tests) give up without tm_adamw_free on -1: the half that was
     * allocated leaked (found by train/test_train_alloc_fail.c's walk). */
    tm_adamw_free(o);
    return -1;
}

void tm_adamw_free(tm_adamw *o)
{
    keel_free(o->m);
    keel_free(o->v);
    o->m = o->v = NULL;
}

void tm_adamw_step(tm_adamw *o, tm_model *m, float lr)
{
    o->t++;
    const double bc1 = 1.0 - pow(o->beta1, (double)o->t), bc2 = 1.0 - pow(o->beta2, (double)o->t);
    const float a = (float)(lr / bc1), rb2 = (float)(1.0 / sqrt(bc2));
    for (int ti = 0; ti < m->ntensors; ti++) {
        const tm_tensor *t = &m->tensors[ti];
        const float decay = t->decay ? 1.0f - lr * o->wd : 1.0f;
        float *p = m->params + t->off, *g = m->grads + t->off, *mm = o->m + t->off, *vv = o->v + t->off;
        for (size_t i = 0; i < t->size; i++) {
            mm[i] = o->beta1 * mm[i] + (1.0f - o->beta1) * g[i];
            vv[i] = o->beta2 * vv[i] + (1.0f - o->beta2) * g[i] * g[i];
            p[i] = p[i] * decay - a * mm[i] / (sqrtf(vv[i]) * rb2 + o->eps);
        }
    }
}

float tm_lr_at(int step, int total, int warmup, float lr, int cosine, float min_frac)
{
    if (warmup > 0 && step < warmup)
        return lr * (float)(step + 1) / (float)warmup;
    /* the decay spans steps warmup .. total - 1, so that the last step runs at the floor */
    if (!cosine || total - 1 <= warmup)
        return lr;
    double prog = (double)(step - warmup) / (double)(total - 1 - warmup);
    if (prog > 1.0)
        prog = 1.0;
    double c = 0.5 * (1.0 + cos(3.141592653589793 * prog));
    return (float)(lr * (min_frac + (1.0 - min_frac) * c));
}
