/* keel train tests: a checkpoint of a freshly built model (saved without training, so without a
 * single BLAS call), and crafted copies of a file: bytes overwritten and the FNV-1a checksum
 * recomputed, as someone who wants the loader to take a file would do. */
#ifndef KEEL_TRAIN_TEST_CKPT_UTIL_H
#define KEEL_TRAIN_TEST_CKPT_UTIL_H

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "adamw.h"
#include "checkpoint.h"
#include "data.h"
#include "test_common.h" /* test_read_file, test_write_file (tests/, on the train tests' path) */

/* Byte offsets in a version-1 checkpoint (checkpoint.h): the header from 16 on, field by field. */
enum {
    TU_LAYERS = 20, TU_WIDTH = 24, TU_HEADS = 28, TU_NORM = 40, TU_EPS = 52, TU_BATCH = 56, TU_STEPS = 60,
    TU_LR = 72, TU_BETA2 = 88, TU_STEP = 104, TU_CHARS = 120, TU_NPARAMS = 376, TU_PARAMS = 392
};

/* Saves a checkpoint of a model of cfg (vocabulary: d's) built from seed 7, at step 0 of 10. */
static inline keel_status tu_write_fresh_ckpt(const char *path, const tm_config *cfg, const tm_data *d)
{
    tm_train_state st;
    memset(&st, 0, sizeof st);
    st.cfg = *cfg;
    st.cfg.vocab = d->vocab;
    tm_model m;
    keel_status rc = tm_create(&m, &st.cfg, 2, 7, 1);
    if (rc != KEEL_OK)
        return rc;
    tm_adamw opt;
    if (tm_adamw_init(&opt, m.nparams, 0.9f, 0.99f, 1e-8f, 0.1f)) {
        tm_destroy(&m);
        return tool_fail(KEEL_ENOMEM, "out of memory");
    }
    st.batch = 2, st.steps = 10, st.cosine = 1, st.lr = 1e-3f, st.min_frac = 0.1f, st.wd = 0.1f;
    st.beta1 = 0.9f, st.beta2 = 0.99f, st.seed = 1, st.rng_state = 1, st.vocab = d->vocab;
    memcpy(st.chars, d->chars, (size_t)d->vocab);
    rc = tm_ckpt_save(path, &st, &m, &opt);
    tm_adamw_free(&opt);
    tm_destroy(&m);
    return rc;
}

static inline uint64_t tu_fnv1a(const unsigned char *p, size_t n)
{
    uint64_t h = 0xcbf29ce484222325ull;
    for (size_t i = 0; i < n; i++) {
        h ^= p[i];
        h *= 0x100000001b3ull;
    }
    return h;
}

/* Writes src's bytes with len bytes at off replaced by val and the trailing 8-byte checksum
 * recomputed, to dst. 0 or -1. */
static inline int tu_craft(const char *src, const char *dst, size_t off, const void *val, size_t len)
{
    size_t n;
    unsigned char *p = test_read_file(src, &n);
    if (!p || n < 8 || off + len > n - 8) {
        free(p);
        return -1;
    }
    memcpy(p + off, val, len);
    uint64_t sum = tu_fnv1a(p, n - 8);
    memcpy(p + n - 8, &sum, 8);
    int rc = test_write_file(dst, p, n);
    free(p);
    return rc;
}

#endif
