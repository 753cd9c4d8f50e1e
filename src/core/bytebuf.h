/* The byte buffers of keel's file formats (monitor baselines, training checkpoints): a growing
 * writer and a reading cursor, little-endian fields of fixed width. The writer never fails
 * mid-way: after an allocation failure it sets oom and ignores what follows, so that a save
 * checks once, at the end. The reader does not check bounds: a loader checks the file's size
 * against its header before it reads a field. */
#ifndef KEEL_CORE_BYTEBUF_H
#define KEEL_CORE_BYTEBUF_H

#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "alloc.h"

typedef struct keel_bytebuf {
    unsigned char *p; /* the bytes written (keel_free() it) */
    size_t n, cap;
    int oom; /* an allocation failed: p holds what came before */
} keel_bytebuf;

static inline void keel_bb_put(keel_bytebuf *b, const void *src, size_t n)
{
    if (b->oom || n == 0)
        return;
    if (b->n + n > b->cap) {
        size_t cap = b->cap ? b->cap * 2 : 4096;
        while (cap < b->n + n)
            cap *= 2;
        unsigned char *q = keel_realloc(b->p, cap);
        if (!q) {
            b->oom = 1;
            return;
        }
        b->p = q;
        b->cap = cap;
    }
    memcpy(b->p + b->n, src, n);
    b->n += n;
}

static inline void keel_bb_put_u32(keel_bytebuf *b, uint32_t v)
{
    unsigned char c[4];
    for (int i = 0; i < 4; i++)
        c[i] = (unsigned char)(v >> (8 * i));
    keel_bb_put(b, c, 4);
}
static inline void keel_bb_put_u64(keel_bytebuf *b, uint64_t v)
{
    unsigned char c[8];
    for (int i = 0; i < 8; i++)
        c[i] = (unsigned char)(v >> (8 * i));
    keel_bb_put(b, c, 8);
}
static inline void keel_bb_put_i32(keel_bytebuf *b, int32_t v) { keel_bb_put_u32(b, (uint32_t)v); }
static inline void keel_bb_put_f32(keel_bytebuf *b, float v)
{
    uint32_t u;
    memcpy(&u, &v, 4);
    keel_bb_put_u32(b, u);
}
static inline void keel_bb_put_f64(keel_bytebuf *b, double v)
{
    uint64_t u;
    memcpy(&u, &v, 8);
    keel_bb_put_u64(b, u);
}

/* A cursor over n bytes at p (the caller keeps pos + width <= n). */
typedef struct keel_bytes_reader {
    const unsigned char *p;
    size_t n, pos;
} keel_bytes_reader;

static inline void keel_br_get(keel_bytes_reader *r, void *out, size_t n)
{
    memcpy(out, r->p + r->pos, n);
    r->pos += n;
}
static inline uint32_t keel_br_u32(keel_bytes_reader *r)
{
    uint32_t v = 0;
    for (int i = 0; i < 4; i++)
        v |= (uint32_t)r->p[r->pos + i] << (8 * i);
    r->pos += 4;
    return v;
}
static inline uint64_t keel_br_u64(keel_bytes_reader *r)
{
    uint64_t v = 0;
    for (int i = 0; i < 8; i++)
        v |= (uint64_t)r->p[r->pos + i] << (8 * i);
    r->pos += 8;
    return v;
}
static inline int32_t keel_br_i32(keel_bytes_reader *r) { return (int32_t)keel_br_u32(r); }
static inline float keel_br_f32(keel_bytes_reader *r)
{
    const uint32_t u = keel_br_u32(r);
    float v;
    memcpy(&v, &u, 4);
    return v;
}
static inline double keel_br_f64(keel_bytes_reader *r)
{
    const uint64_t u = keel_br_u64(r);
    double v;
    memcpy(&v, &u, 8);
    return v;
}

#endif
