/* keel train: checkpoints. A versioned little-endian binary file:
 *   "KEELCKPT" | u32 version (1) | u32 header bytes | header (the model and training settings,
 *   the step, the data sampler's state, the vocabulary) | u64 nparams | u64 nbuffers |
 *   params, AdamW m, AdamW v (float32 each) | buffers (BatchNorm running statistics) |
 *   u64 FNV-1a 64 checksum of every byte before it.
 * A file that is short, of another format or version, or whose checksum fails is refused with a
 * message that says which; so is one whose fields are out of range after the checksum (a setting
 * keel train would refuse, a size other than the header's model has, a weight or moment that is
 * not finite, a negative second moment or variance: checkpoint_check.c). Both readers check the
 * whole file before anything is built from it. */
#ifndef KEEL_TRAIN_CHECKPOINT_H
#define KEEL_TRAIN_CHECKPOINT_H

#include <stdint.h>

#include "adamw.h"
#include "model.h"
#include "tool_error.h"

#define TM_CKPT_VERSION 1u

typedef struct tm_train_state {
    tm_config cfg;
    int32_t batch, steps, warmup, cosine;
    float lr, min_frac, wd, beta1, beta2, clip;
    uint64_t seed;
    int32_t step;       /* steps done */
    uint64_t rng_state; /* the training batch sampler */
    int32_t vocab;
    unsigned char chars[256];
} tm_train_state;

/* The functions return a keel_status and on an error set tool_last_error() (tool_error.h):
 * KEEL_EIO (the file cannot be opened or written), KEEL_EFORMAT (not a checkpoint, another
 * version, truncated, corrupt, out of range), KEEL_ENOMEM. */

/* Writes atomically (a temporary file renamed). */
keel_status tm_ckpt_save(const char *path, const tm_train_state *st, const tm_model *m,
                         const tm_adamw *opt);
/* Reads the header only (to build the model). */
keel_status tm_ckpt_read_state(const char *path, tm_train_state *st);
/* Reads everything into a model built from the state's cfg (and opt, when not NULL). */
keel_status tm_ckpt_load(const char *path, tm_train_state *st, tm_model *m, tm_adamw *opt);

#endif
