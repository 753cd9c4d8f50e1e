/* keel train: AdamW (decoupled weight decay) and the learning-rate schedule. */
#ifndef KEEL_TRAIN_ADAMW_H
#define KEEL_TRAIN_ADAMW_H

#include "model.h"

typedef struct tm_adamw {
    float beta1, beta2, eps, wd;
    float *m, *v; /* nparams each */
    long t;       /* steps taken */
} tm_adamw;

int tm_adamw_init(tm_adamw *o, size_t nparams, float beta1, float beta2, float eps, float wd);
void tm_adamw_free(tm_adamw *o);
/* One step on m->params with m->grads at learning rate lr. Weight decay only on tensors with
 * decay set (matrices and embeddings). */
void tm_adamw_step(tm_adamw *o, tm_model *m, float lr);
/* Linear warm-up from lr/warmup (step 0) to lr (step warmup - 1), then (cosine != 0) a cosine
 * decay from lr (step warmup) to lr * min_frac at the last step, total - 1. step counts from 0. */
float tm_lr_at(int step, int total, int warmup, float lr, int cosine, float min_frac);

#endif
