/* keel train: checkpoints (format in checkpoint.h). */
#include "checkpoint.h"
#include "checkpoint_check.h"
#include "bytebuf.h"
#include "fnv1a.h"
#include "tool_error.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char MAGIC[8] = {'K', 'E', 'E', 'L', 'C', 'K', 'P', 'T'};

/* The header, field by field, in a fixed order and width (little-endian). */
static void put_header(keel_bytebuf *b, const tm_train_state *st)
{
    const tm_config *c = &st->cfg;
    keel_bb_put_i32(b, c->vocab);
    keel_bb_put_i32(b, c->layers);
    keel_bb_put_i32(b, c->width);
    keel_bb_put_i32(b, c->heads);
    keel_bb_put_i32(b, c->seq);
    keel_bb_put_i32(b, c->tied);
    keel_bb_put_i32(b, (int32_t)c->norm);
    keel_bb_put_i32(b, (int32_t)c->place);
    keel_bb_put_f32(b, c->layerscale);
    keel_bb_put_f32(b, c->eps);
    keel_bb_put_i32(b, st->batch);
    keel_bb_put_i32(b, st->steps);
    keel_bb_put_i32(b, st->warmup);
    keel_bb_put_i32(b, st->cosine);
    keel_bb_put_f32(b, st->lr);
    keel_bb_put_f32(b, st->min_frac);
    keel_bb_put_f32(b, st->wd);
    keel_bb_put_f32(b, st->beta1);
    keel_bb_put_f32(b, st->beta2);
    keel_bb_put_f32(b, st->clip);
    keel_bb_put_u64(b, st->seed);
    keel_bb_put_i32(b, st->step);
    keel_bb_put_u64(b, st->rng_state);
    keel_bb_put_i32(b, st->vocab);
    keel_bb_put(b, st->chars, 256);
}


keel_status tm_ckpt_save(const char *path, const tm_train_state *st, const tm_model *m,
                         const tm_adamw *opt)
{
    keel_bytebuf h = {0}, b = {0};
    put_header(&h, st);
    uint32_t ver = TM_CKPT_VERSION, hb = (uint32_t)h.n;
    keel_bb_put(&b, MAGIC, 8);
    keel_bb_put(&b, &ver, 4);
    keel_bb_put(&b, &hb, 4);
    keel_bb_put(&b, h.p, h.n);
    keel_bb_put_u64(&b, m->nparams);
    keel_bb_put_u64(&b, m->nbuffers);
    keel_bb_put(&b, m->params, m->nparams * sizeof(float));
    keel_bb_put(&b, opt->m, m->nparams * sizeof(float));
    keel_bb_put(&b, opt->v, m->nparams * sizeof(float));
    int64_t t = opt->t;
    keel_bb_put(&b, &t, 8);
    keel_bb_put(&b, m->buffers, m->nbuffers * sizeof(float));
    uint64_t sum = b.oom ? 0 : keel_fnv1a(b.p, b.n);
    keel_bb_put_u64(&b, sum);
    keel_free(h.p);
    if (b.oom || h.oom) {
        keel_free(b.p);
        tool_fail(KEEL_ENOMEM, "%s: out of memory writing the checkpoint", path);
        return KEEL_ENOMEM;
    }
    char tmp[1100];
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    FILE *f = fopen(tmp, "wb");
    int ok = f && fwrite(b.p, 1, b.n, f) == b.n;
    if (f && fclose(f))
        ok = 0;
    keel_free(b.p);
    if (!ok || rename(tmp, path)) {
        tool_fail(KEEL_EIO, "%s: cannot write the checkpoint: %s", path, strerror(errno));
        remove(tmp);
        return KEEL_EIO;
    }
    return KEEL_OK;
}

/* Reads and verifies the whole file: its bytes in *out (caller frees; NULL on an error) and the
 * header parsed. */
static keel_status read_verified(const char *path, tm_train_state *st, unsigned char **out, size_t *len,
                                 size_t *body)
{
    *out = NULL;
    FILE *f = fopen(path, "rb");
    if (!f) {
        tool_fail(KEEL_EIO, "%s: cannot open the checkpoint: %s", path, strerror(errno));
        return KEEL_EIO;
    }
    size_t cap = 1 << 16, n = 0;
    unsigned char *p = keel_alloc(cap);
    while (p) {
        n += fread(p + n, 1, cap - n, f);
        if (n < cap)
            break;
        cap *= 2;
        unsigned char *q = keel_realloc(p, cap);
        if (!q)
            keel_free(p);
        p = q;
    }
    fclose(f);
    if (!p) {
        tool_fail(KEEL_ENOMEM, "%s: out of memory reading the checkpoint", path);
        return KEEL_ENOMEM;
    }
    if (n < 16 || memcmp(p, MAGIC, 8)) {
        tool_fail(KEEL_EFORMAT, "%s: not a keel checkpoint (no KEELCKPT magic at the start)", path);
        keel_free(p);
        return KEEL_EFORMAT;
    }
    uint32_t ver, hb;
    memcpy(&ver, p + 8, 4);
    memcpy(&hb, p + 12, 4);
    if (ver != TM_CKPT_VERSION) {
        tool_fail(KEEL_EFORMAT, "%s: checkpoint format version %u, this keel reads version %u", path,
                  (unsigned)ver, TM_CKPT_VERSION);
        keel_free(p);
        return KEEL_EFORMAT;
    }
    keel_bytebuf probe = {0};
    tm_train_state zero;
    memset(&zero, 0, sizeof zero);
    put_header(&probe, &zero);
    size_t want_hb = probe.n;
    int probe_oom = probe.oom;
    keel_free(probe.p);
    if (probe_oom) { /* else want_hb is 0 and an intact file is called "corrupt" */
        tool_fail(KEEL_ENOMEM, "%s: out of memory reading the checkpoint", path);
        keel_free(p);
        return KEEL_ENOMEM;
    }
    if (hb != want_hb || n < 16 + (size_t)hb + 16 + 8) {
        tool_fail(KEEL_EFORMAT, "%s: truncated or corrupt checkpoint (%zu bytes; header of %u bytes, "
                  "expected %zu)", path, n, (unsigned)hb, want_hb);
        keel_free(p);
        return KEEL_EFORMAT;
    }
    keel_bytes_reader r = {p, n, 16};
    tm_config *c = &st->cfg;
    memset(st, 0, sizeof *st);
    c->vocab = keel_br_i32(&r);
    c->layers = keel_br_i32(&r);
    c->width = keel_br_i32(&r);
    c->heads = keel_br_i32(&r);
    c->seq = keel_br_i32(&r);
    c->tied = keel_br_i32(&r);
    c->norm = (tm_norm)keel_br_i32(&r);
    c->place = (tm_place)keel_br_i32(&r);
    c->layerscale = keel_br_f32(&r);
    c->eps = keel_br_f32(&r);
    st->batch = keel_br_i32(&r);
    st->steps = keel_br_i32(&r);
    st->warmup = keel_br_i32(&r);
    st->cosine = keel_br_i32(&r);
    st->lr = keel_br_f32(&r);
    st->min_frac = keel_br_f32(&r);
    st->wd = keel_br_f32(&r);
    st->beta1 = keel_br_f32(&r);
    st->beta2 = keel_br_f32(&r);
    st->clip = keel_br_f32(&r);
    st->seed = keel_br_u64(&r);
    st->step = keel_br_i32(&r);
    st->rng_state = keel_br_u64(&r);
    st->vocab = keel_br_i32(&r);
    keel_br_get(&r, st->chars, 256);
    uint64_t np = keel_br_u64(&r), nb = keel_br_u64(&r);
    size_t need = r.pos + (3 * np + nb) * sizeof(float) + 8 + 8;
    if (np > ((size_t)1 << 34) || nb > ((size_t)1 << 34) || n != need) {
        tool_fail(KEEL_EFORMAT, "%s: truncated or corrupt checkpoint (%zu bytes, %zu expected for %llu "
                  "parameters)", path, n, need, (unsigned long long)np);
        keel_free(p);
        return KEEL_EFORMAT;
    }
    uint64_t sum;
    memcpy(&sum, p + n - 8, 8);
    if (sum != keel_fnv1a(p, n - 8)) {
        tool_fail(KEEL_EFORMAT, "%s: checksum mismatch: the checkpoint is corrupt", path);
        keel_free(p);
        return KEEL_EFORMAT;
    }
    const keel_status cst = tm_ckpt_check(path, st, p + r.pos, np, nb);
    if (cst != KEEL_OK) {
        keel_free(p);
        return cst;
    }
    *len = n;
    *body = r.pos;
    *out = p;
    return KEEL_OK;
}

keel_status tm_ckpt_read_state(const char *path, tm_train_state *st)
{
    size_t n, body;
    unsigned char *p;
    const keel_status rst = read_verified(path, st, &p, &n, &body);
    keel_free(p);
    return rst;
}

keel_status tm_ckpt_load(const char *path, tm_train_state *st, tm_model *m, tm_adamw *opt)
{
    size_t n, body;
    unsigned char *p;
    const keel_status rst = read_verified(path, st, &p, &n, &body);
    if (rst != KEEL_OK)
        return rst;
    keel_bytes_reader r = {p, n, body - 16};
    uint64_t np = keel_br_u64(&r), nb = keel_br_u64(&r);
    if (np != m->nparams || nb != m->nbuffers) {
        tool_fail(KEEL_EFORMAT, "%s: %llu parameters and %llu buffers, the model built from its header has "
                  "%zu and %zu", path, (unsigned long long)np, (unsigned long long)nb, m->nparams, m->nbuffers);
        keel_free(p);
        return KEEL_EFORMAT;
    }
    keel_br_get(&r, m->params, np * sizeof(float));
    if (opt) {
        keel_br_get(&r, opt->m, np * sizeof(float));
        keel_br_get(&r, opt->v, np * sizeof(float));
        int64_t t;
        keel_br_get(&r, &t, 8);
        opt->t = (long)t;
    } else {
        r.pos += 2 * np * sizeof(float) + 8;
    }
    keel_br_get(&r, m->buffers, nb * sizeof(float));
    keel_free(p);
    return KEEL_OK;
}
