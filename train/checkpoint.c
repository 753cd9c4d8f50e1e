/* keel train: checkpoints (format in checkpoint.h). */
#include "checkpoint.h"
#include "checkpoint_check.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char MAGIC[8] = {'K', 'E', 'E', 'L', 'C', 'K', 'P', 'T'};

/* The header, field by field, in a fixed order and width (little-endian hosts only). */
typedef struct buf {
    unsigned char *p;
    size_t n, cap;
    int oom;
} buf;

static void put(buf *b, const void *data, size_t n)
{
    if (b->oom)
        return;
    if (b->n + n > b->cap) {
        size_t cap = b->cap ? b->cap : 4096;
        while (cap < b->n + n)
            cap *= 2;
        unsigned char *p = realloc(b->p, cap);
        if (!p) {
            b->oom = 1;
            return;
        }
        b->p = p;
        b->cap = cap;
    }
    memcpy(b->p + b->n, data, n);
    b->n += n;
}

static void put_i32(buf *b, int32_t v) { put(b, &v, 4); }
static void put_f32(buf *b, float v) { put(b, &v, 4); }
static void put_u64(buf *b, uint64_t v) { put(b, &v, 8); }

static uint64_t fnv1a(const unsigned char *p, size_t n)
{
    uint64_t h = 0xcbf29ce484222325ull;
    for (size_t i = 0; i < n; i++) {
        h ^= p[i];
        h *= 0x100000001b3ull;
    }
    return h;
}

static void put_header(buf *b, const tm_train_state *st)
{
    const tm_config *c = &st->cfg;
    put_i32(b, c->vocab);
    put_i32(b, c->layers);
    put_i32(b, c->width);
    put_i32(b, c->heads);
    put_i32(b, c->seq);
    put_i32(b, c->tied);
    put_i32(b, (int32_t)c->norm);
    put_i32(b, (int32_t)c->place);
    put_f32(b, c->layerscale);
    put_f32(b, c->eps);
    put_i32(b, st->batch);
    put_i32(b, st->steps);
    put_i32(b, st->warmup);
    put_i32(b, st->cosine);
    put_f32(b, st->lr);
    put_f32(b, st->min_frac);
    put_f32(b, st->wd);
    put_f32(b, st->beta1);
    put_f32(b, st->beta2);
    put_f32(b, st->clip);
    put_u64(b, st->seed);
    put_i32(b, st->step);
    put_u64(b, st->rng_state);
    put_i32(b, st->vocab);
    put(b, st->chars, 256);
}


typedef struct rd {
    const unsigned char *p;
    size_t n, at;
} rd;

static void get(rd *r, void *out, size_t n)
{
    memcpy(out, r->p + r->at, n);
    r->at += n;
}

static int32_t get_i32(rd *r) { int32_t v; get(r, &v, 4); return v; }
static float get_f32(rd *r) { float v; get(r, &v, 4); return v; }
static uint64_t get_u64(rd *r) { uint64_t v; get(r, &v, 8); return v; }

int tm_ckpt_save(const char *path, const tm_train_state *st, const tm_model *m, const tm_adamw *opt,
                 char *err, size_t errlen)
{
    buf h = {0}, b = {0};
    put_header(&h, st);
    uint32_t ver = TM_CKPT_VERSION, hb = (uint32_t)h.n;
    put(&b, MAGIC, 8);
    put(&b, &ver, 4);
    put(&b, &hb, 4);
    put(&b, h.p, h.n);
    put_u64(&b, m->nparams);
    put_u64(&b, m->nbuffers);
    put(&b, m->params, m->nparams * sizeof(float));
    put(&b, opt->m, m->nparams * sizeof(float));
    put(&b, opt->v, m->nparams * sizeof(float));
    int64_t t = opt->t;
    put(&b, &t, 8);
    put(&b, m->buffers, m->nbuffers * sizeof(float));
    uint64_t sum = b.oom ? 0 : fnv1a(b.p, b.n);
    put_u64(&b, sum);
    free(h.p);
    if (b.oom || h.oom) {
        free(b.p);
        snprintf(err, errlen, "%s: out of memory writing the checkpoint", path);
        return -1;
    }
    char tmp[1100];
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    FILE *f = fopen(tmp, "wb");
    int ok = f && fwrite(b.p, 1, b.n, f) == b.n;
    if (f && fclose(f))
        ok = 0;
    free(b.p);
    if (!ok || rename(tmp, path)) {
        snprintf(err, errlen, "%s: cannot write the checkpoint: %s", path, strerror(errno));
        remove(tmp);
        return -1;
    }
    return 0;
}

/* Reads and verifies the whole file; returns its bytes (caller frees) and the header parsed. */
static unsigned char *read_verified(const char *path, tm_train_state *st, size_t *len, size_t *body,
                                    char *err, size_t errlen)
{
    FILE *f = fopen(path, "rb");
    if (!f) {
        snprintf(err, errlen, "%s: cannot open the checkpoint: %s", path, strerror(errno));
        return NULL;
    }
    size_t cap = 1 << 16, n = 0;
    unsigned char *p = malloc(cap);
    while (p) {
        n += fread(p + n, 1, cap - n, f);
        if (n < cap)
            break;
        cap *= 2;
        unsigned char *q = realloc(p, cap);
        if (!q)
            free(p);
        p = q;
    }
    fclose(f);
    if (!p) {
        snprintf(err, errlen, "%s: out of memory reading the checkpoint", path);
        return NULL;
    }
    if (n < 16 || memcmp(p, MAGIC, 8)) {
        snprintf(err, errlen, "%s: not a keel checkpoint (no KEELCKPT magic at the start)", path);
        free(p);
        return NULL;
    }
    uint32_t ver, hb;
    memcpy(&ver, p + 8, 4);
    memcpy(&hb, p + 12, 4);
    if (ver != TM_CKPT_VERSION) {
        snprintf(err, errlen, "%s: checkpoint format version %u, this keel reads version %u", path,
                 (unsigned)ver, TM_CKPT_VERSION);
        free(p);
        return NULL;
    }
    buf probe = {0};
    tm_train_state zero;
    memset(&zero, 0, sizeof zero);
    put_header(&probe, &zero);
    size_t want_hb = probe.n;
    free(probe.p);
    if (hb != want_hb || n < 16 + (size_t)hb + 16 + 8) {
        snprintf(err, errlen, "%s: truncated or corrupt checkpoint (%zu bytes; header of %u bytes, "
                 "expected %zu)", path, n, (unsigned)hb, want_hb);
        free(p);
        return NULL;
    }
    rd r = {p, n, 16};
    tm_config *c = &st->cfg;
    memset(st, 0, sizeof *st);
    c->vocab = get_i32(&r);
    c->layers = get_i32(&r);
    c->width = get_i32(&r);
    c->heads = get_i32(&r);
    c->seq = get_i32(&r);
    c->tied = get_i32(&r);
    c->norm = (tm_norm)get_i32(&r);
    c->place = (tm_place)get_i32(&r);
    c->layerscale = get_f32(&r);
    c->eps = get_f32(&r);
    st->batch = get_i32(&r);
    st->steps = get_i32(&r);
    st->warmup = get_i32(&r);
    st->cosine = get_i32(&r);
    st->lr = get_f32(&r);
    st->min_frac = get_f32(&r);
    st->wd = get_f32(&r);
    st->beta1 = get_f32(&r);
    st->beta2 = get_f32(&r);
    st->clip = get_f32(&r);
    st->seed = get_u64(&r);
    st->step = get_i32(&r);
    st->rng_state = get_u64(&r);
    st->vocab = get_i32(&r);
    get(&r, st->chars, 256);
    uint64_t np = get_u64(&r), nb = get_u64(&r);
    size_t need = r.at + (3 * np + nb) * sizeof(float) + 8 + 8;
    if (np > ((size_t)1 << 34) || nb > ((size_t)1 << 34) || n != need) {
        snprintf(err, errlen, "%s: truncated or corrupt checkpoint (%zu bytes, %zu expected for %llu "
                 "parameters)", path, n, need, (unsigned long long)np);
        free(p);
        return NULL;
    }
    uint64_t sum;
    memcpy(&sum, p + n - 8, 8);
    if (sum != fnv1a(p, n - 8)) {
        snprintf(err, errlen, "%s: checksum mismatch: the checkpoint is corrupt", path);
        free(p);
        return NULL;
    }
    if (tm_ckpt_check(path, st, p + r.at, np, nb, err, errlen)) {
        free(p);
        return NULL;
    }
    *len = n;
    *body = r.at;
    return p;
}

int tm_ckpt_read_state(const char *path, tm_train_state *st, char *err, size_t errlen)
{
    size_t n, body;
    unsigned char *p = read_verified(path, st, &n, &body, err, errlen);
    free(p);
    return p ? 0 : -1;
}

int tm_ckpt_load(const char *path, tm_train_state *st, tm_model *m, tm_adamw *opt, char *err,
                 size_t errlen)
{
    size_t n, body;
    unsigned char *p = read_verified(path, st, &n, &body, err, errlen);
    if (!p)
        return -1;
    rd r = {p, n, body - 16};
    uint64_t np = get_u64(&r), nb = get_u64(&r);
    if (np != m->nparams || nb != m->nbuffers) {
        snprintf(err, errlen, "%s: %llu parameters and %llu buffers, the model built from its header has "
                 "%zu and %zu", path, (unsigned long long)np, (unsigned long long)nb, m->nparams, m->nbuffers);
        free(p);
        return -1;
    }
    get(&r, m->params, np * sizeof(float));
    if (opt) {
        get(&r, opt->m, np * sizeof(float));
        get(&r, opt->v, np * sizeof(float));
        int64_t t;
        get(&r, &t, 8);
        opt->t = (long)t;
    } else {
        r.at += 2 * np * sizeof(float) + 8;
    }
    get(&r, m->buffers, nb * sizeof(float));
    free(p);
    return 0;
}
