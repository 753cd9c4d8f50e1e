/* keel train under allocation failure (issue 23; the library's walk is tests/test_alloc_fail.c):
 * every allocation of the model build (tm_create, four norm/placement combinations), AdamW's
 * state, the checkpoint save, tm_ckpt_read_state and tm_ckpt_load is made to fail in turn
 * (src/core/alloc.h). Each time the call returns KEEL_ENOMEM with a message about memory
 * (tool_last_error), leaves nothing behind (a model zeroed, no checkpoint file or temporary,
 * the loaded model's parameters, AdamW state and buffers as they were), and the same call
 * again succeeds with the bytes of an uninjected run. LeakSanitizer (make test-asan) checks that every path frees what it took.
 * A training step (tm_forward + tm_backward on a fresh model, whose first keel calls grow the
 * context's scratch) is walked the same way: tm_error names the call and "out of memory", the
 * parameters are unchanged, and the step again gives the uninjected loss and gradients. */
#define _POSIX_C_SOURCE 200809L
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "../src/core/alloc.h" /* keel_alloc_fail_at (keel_train's src/core include is private) */
#include "adamw.h"
#include "checkpoint.h"
#include "data.h"
#include "model.h"
#include "test_common.h" /* test_read_file */

static int g_fail, g_pass;
static long g_points;

static void check(int ok, const char *what, long n)
{
    if (ok) {
        g_pass++;
        return;
    }
    g_fail++;
    printf("FAIL: %s (allocation %ld)\n", what, n);
}

static tm_config g_cfg;
static tm_train_state g_st;
static const char *g_ckpt = "test_train_alloc_fail.ckpt";
static const char *g_out = "test_train_alloc_fail.out.ckpt";
static const char *g_text = "test_train_alloc_fail.txt"; /* S_DATA's corpus */

enum { S_CREATE, S_ADAMW, S_SAVE, S_READ_STATE, S_LOAD, S_STEP, S_DATA };

typedef struct state {
    int which;
    tm_model m;
    tm_adamw opt;
    tm_train_state st;
    int built; /* m and opt hold a model (S_SAVE, S_LOAD, S_STEP) */
    double loss; /* S_STEP */
    tm_data data; /* S_DATA */
    unsigned char *snap;
    size_t nsnap;
} state;

/* The bytes a call's result is compared by: the model's parameters and buffers and AdamW's
 * state (malloc'd by the test, outside the count). */
static unsigned char *model_bytes(const state *s, size_t *n)
{
    size_t np = s->m.nparams, nb = s->m.nbuffers;
    *n = (3 * np + nb) * sizeof(float) + sizeof s->st;
    unsigned char *p = malloc(*n), *q = p;
    if (!p)
        return NULL;
    memcpy(q, s->m.params, np * sizeof(float)), q += np * sizeof(float);
    memcpy(q, s->m.buffers, nb * sizeof(float)), q += nb * sizeof(float);
    if (s->opt.m)
        memcpy(q, s->opt.m, np * sizeof(float));
    else
        memset(q, 0, np * sizeof(float));
    q += np * sizeof(float);
    if (s->opt.v)
        memcpy(q, s->opt.v, np * sizeof(float));
    else
        memset(q, 0, np * sizeof(float));
    q += np * sizeof(float);
    memcpy(q, &s->st, sizeof s->st);
    return p;
}

static void setup(state *s)
{
    memset(&s->m, 0, sizeof s->m);
    memset(&s->opt, 0, sizeof s->opt);
    memset(&s->st, 0, sizeof s->st);
    memset(&s->data, 0, sizeof s->data);
    s->built = 0;
    s->snap = NULL;
    if (s->which == S_SAVE || s->which == S_LOAD) {
        /* a model of other weights (seed 11) for the load to overwrite */
        if (tm_create(&s->m, &g_cfg, 2, 11, 1) != KEEL_OK ||
            tm_adamw_init(&s->opt, s->m.nparams, 0.9f, 0.99f, 1e-8f, 0.1f)) {
            printf("FATAL: %s\n", tool_last_error());
            exit(1);
        }
        for (size_t i = 0; i < s->m.nparams; i++)
            s->opt.m[i] = 0.25f, s->opt.v[i] = 0.5f;
        s->st = g_st;
        s->built = 1;
        s->snap = model_bytes(s, &s->nsnap);
    }
    if (s->which == S_STEP) { /* a fresh model: its first keel calls grow the context */
        if (tm_create(&s->m, &g_cfg, 2, 7, 1) != KEEL_OK) {
            printf("FATAL: %s\n", tool_last_error());
            exit(1);
        }
        s->built = 1;
        s->snap = model_bytes(s, &s->nsnap);
    }
    unlink(g_out);
}

static keel_status run(state *s)
{
    switch (s->which) {
    case S_CREATE:
        return tm_create(&s->m, &g_cfg, 2, 7, 1);
    case S_ADAMW:
        if (tm_adamw_init(&s->opt, 1000, 0.9f, 0.99f, 1e-8f, 0.1f))
            return tool_fail(KEEL_ENOMEM, "out of memory");
        return KEEL_OK;
    case S_SAVE:
        return tm_ckpt_save(g_out, &s->st, &s->m, &s->opt);
    case S_READ_STATE:
        return tm_ckpt_read_state(g_ckpt, &s->st);
    case S_DATA:
        return tm_data_load(&s->data, g_text);
    case S_LOAD:
        return tm_ckpt_load(g_ckpt, &s->st, &s->m, &s->opt);
    case S_STEP: {
        static const int tok[16] = {1, 5, 9, 2, 14, 3, 3, 7, 0, 15, 8, 8, 4, 12, 6, 10};
        static const int tgt[16] = {5, 9, 2, 14, 3, 3, 7, 0, 15, 8, 8, 4, 12, 6, 10, 11};
        s->loss = tm_forward(&s->m, tok, tgt, 2, 8);
        if (!tm_error(&s->m))
            tm_backward(&s->m);
        if (tm_error(&s->m))
            return tool_fail(s->m.error_status, "%s", tm_error(&s->m));
        return KEEL_OK;
    }
    }
    return tool_fail(KEEL_EINVAL, "unknown scenario %d", s->which);
}

/* After a failed run: nothing left behind, nothing changed. */
static int unchanged(state *s)
{
    static const tm_model zero_m;
    static const tm_adamw zero_o;
    char tmp[300];
    snprintf(tmp, sizeof tmp, "%s.tmp", g_out);
    switch (s->which) {
    case S_CREATE:
        return memcmp(&s->m, &zero_m, sizeof zero_m) == 0; /* tm_destroy'd: all NULL */
    case S_ADAMW:
        return memcmp(&s->opt, &zero_o, sizeof zero_o) == 0 ||
               (s->opt.m == NULL && s->opt.v == NULL);
    case S_SAVE:
        return access(g_out, F_OK) != 0 && access(tmp, F_OK) != 0;
    case S_READ_STATE:
        return 1; /* the header is an output only (undefined after -1) */
    case S_DATA:
        return s->data.tok == NULL;
    case S_STEP: /* the parameters (BatchNorm's running statistics move with each forward) */
        return memcmp(s->m.params, s->snap, s->m.nparams * sizeof(float)) == 0;
    case S_LOAD: {
        /* the state header is an output; the model and AdamW must be untouched */
        size_t n;
        tm_train_state keep = s->st;
        s->st = g_st;
        unsigned char *now = model_bytes(s, &n);
        s->st = keep;
        int same = now && n == s->nsnap && memcmp(now, s->snap, n) == 0;
        free(now);
        return same;
    }
    }
    return 0;
}

static unsigned char *digest(state *s, size_t *n)
{
    switch (s->which) {
    case S_CREATE:
    case S_LOAD:
        return model_bytes(s, n);
    case S_ADAMW: {
        *n = 2000 * sizeof(float);
        unsigned char *p = malloc(*n);
        memcpy(p, s->opt.m, *n / 2);
        memcpy(p + *n / 2, s->opt.v, *n / 2);
        return p;
    }
    case S_SAVE:
        return test_read_file(g_out, n);
    case S_READ_STATE:
        *n = sizeof s->st;
        return memcpy(malloc(*n), &s->st, *n);
    case S_DATA: { /* the tokens and the vocabulary */
        *n = s->data.n * sizeof(int) + sizeof s->data.chars;
        unsigned char *p = malloc(*n);
        memcpy(p, s->data.tok, s->data.n * sizeof(int));
        memcpy(p + s->data.n * sizeof(int), s->data.chars, sizeof s->data.chars);
        return p;
    }
    case S_STEP: { /* the loss and the gradients */
        *n = sizeof s->loss + s->m.nparams * sizeof(float);
        unsigned char *p = malloc(*n);
        memcpy(p, &s->loss, sizeof s->loss);
        memcpy(p + sizeof s->loss, s->m.grads, s->m.nparams * sizeof(float));
        return p;
    }
    }
    return NULL;
}

static void teardown(state *s)
{
    if (s->which == S_CREATE || s->built)
        tm_destroy(&s->m);
    tm_adamw_free(&s->opt);
    tm_data_free(&s->data);
    free(s->snap);
    unlink(g_out);
}

static void walk(const char *name, int which)
{
    static state s;
    tool_clear_error();
    s.which = which;
    setup(&s);
    keel_alloc_fail_at(0);
    keel_status rc = run(&s);
    long count = keel_alloc_fail_at(-1);
    if (rc) {
        check(0, name, 0);
        printf("  uninjected run failed: %s\n", tool_last_error());
        teardown(&s);
        return;
    }
    size_t nref;
    unsigned char *ref = digest(&s, &nref);
    teardown(&s);
    check(count > 0, "no allocation counted", 0);
    printf("  %-44s %3ld allocation%s walked\n", name, count, count == 1 ? "" : "s");
    g_points += count;
    for (long n = 1; n <= count; n++) {
        setup(&s);
        tool_clear_error();
        keel_alloc_fail_at(n);
        rc = run(&s);
        long reached = keel_alloc_fail_at(-1);
        char what[1500];
        snprintf(what, sizeof what, "%s: allocation reached", name);
        check(reached >= n, what, n);
        const char *msg = tool_last_error();
        snprintf(what, sizeof what, "%s: KEEL_ENOMEM with a message about memory (got %d: '%s')", name,
                 (int)rc, msg);
        check(rc == KEEL_ENOMEM && (strstr(msg, "memory") || strstr(msg, "allocate")), what, n);
        snprintf(what, sizeof what, "%s: nothing changed, nothing left behind", name);
        check(unchanged(&s), what, n);
        if (which == S_CREATE) /* a failed tm_create leaves a zeroed model: build it again */
            memset(&s.m, 0, sizeof s.m);
        if (which == S_ADAMW)
            tm_adamw_free(&s.opt);
        tool_clear_error();
        rc = run(&s);
        snprintf(what, sizeof what, "%s: rerun succeeds (%s)", name, tool_last_error());
        check(rc == KEEL_OK, what, n);
        if (rc == KEEL_OK) {
            size_t ngot;
            unsigned char *got = digest(&s, &ngot);
            snprintf(what, sizeof what, "%s: rerun gives the uninjected bytes", name);
            check(got && ngot == nref && memcmp(got, ref, nref) == 0, what, n);
            free(got);
        }
        teardown(&s);
    }
    free(ref);
}

int main(void)
{
    const struct {
        tm_norm norm;
        tm_place place;
        const char *name;
    } builds[4] = {{TM_NORM_LAYER, TM_PRE, "tm_create (LayerNorm, pre, LayerScale)"},
                   {TM_NORM_RMS, TM_POST, "tm_create (RMSNorm, post)"},
                   {TM_NORM_BATCH, TM_SANDWICH, "tm_create (BatchNorm, sandwich)"},
                   {TM_NORM_DYT, TM_DEEPNORM, "tm_create (DyT, DeepNorm)"}};
    g_cfg = (tm_config){16, 1, 8, 2, 8, 0, TM_NORM_LAYER, TM_PRE, 0.1f, 1e-5f};
    for (int b = 0; b < 4; b++) {
        g_cfg.norm = builds[b].norm;
        g_cfg.place = builds[b].place;
        g_cfg.layerscale = b == 0 ? 0.1f : 0.0f;
        g_cfg.tied = b == 1;
        walk(builds[b].name, S_CREATE);
    }
    const char *steps[4] = {"training step (LayerNorm, pre, LayerScale)", "training step (RMSNorm, post)",
                            "training step (BatchNorm, sandwich)", "training step (DyT, DeepNorm)"};
    for (int b = 0; b < 4; b++) {
        g_cfg.norm = builds[b].norm;
        g_cfg.place = builds[b].place;
        g_cfg.layerscale = b == 0 ? 0.1f : 0.0f;
        g_cfg.tied = b == 1;
        walk(steps[b], S_STEP);
    }
    walk("tm_adamw_init", S_ADAMW);

    /* the checkpoint the readers read: a fresh model of seed 7 (BatchNorm: buffers travel too) */
    g_cfg = (tm_config){16, 1, 8, 2, 8, 0, TM_NORM_BATCH, TM_PRE, 0.1f, 1e-5f};
    memset(&g_st, 0, sizeof g_st);
    g_st.cfg = g_cfg;
    g_st.batch = 2, g_st.steps = 10, g_st.cosine = 1, g_st.lr = 1e-3f, g_st.min_frac = 0.1f;
    g_st.wd = 0.1f, g_st.beta1 = 0.9f, g_st.beta2 = 0.99f, g_st.seed = 1, g_st.rng_state = 1;
    g_st.vocab = g_cfg.vocab;
    for (int i = 0; i < g_cfg.vocab; i++)
        g_st.chars[i] = (unsigned char)('a' + i);
    tm_model m;
    tm_adamw opt;
    if (tm_create(&m, &g_cfg, 2, 7, 1) != KEEL_OK ||
        tm_adamw_init(&opt, m.nparams, 0.9f, 0.99f, 1e-8f, 0.1f) ||
        tm_ckpt_save(g_ckpt, &g_st, &m, &opt) != KEEL_OK) {
        printf("FATAL: %s\n", tool_last_error());
        return 1;
    }
    tm_adamw_free(&opt);
    tm_destroy(&m);
    walk("tm_ckpt_save", S_SAVE);
    walk("tm_ckpt_read_state", S_READ_STATE);
    walk("tm_ckpt_load", S_LOAD);
    unlink(g_ckpt);

    /* the corpus loader (keel train --data): a short text of its own */
    FILE *f = fopen(g_text, "w");
    for (int i = 0; f && i < 40; i++)
        fputs("To be, or not to be. ", f);
    if (!f || fclose(f)) {
        printf("FATAL: cannot write %s\n", g_text);
        return 1;
    }
    walk("tm_data_load", S_DATA);
    unlink(g_text);
    printf("%ld allocation points walked; %d passed, %d failed\n", g_points, g_pass, g_fail);
    return g_fail ? 1 : 0;
}
