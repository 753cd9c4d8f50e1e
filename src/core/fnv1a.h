/* FNV-1a, 64 bits: the checksum keel's files end with (monitor baselines, training checkpoints)
 * and the digest of the cross-architecture test. Not cryptographic: it catches truncation and
 * stray edits, and a writer who recomputes it can forge any file (the loaders range-check every
 * field, whatever the checksum says). */
#ifndef KEEL_CORE_FNV1A_H
#define KEEL_CORE_FNV1A_H

#include <stddef.h>
#include <stdint.h>

#define KEEL_FNV1A_START UINT64_C(0xcbf29ce484222325)

/* h with the n bytes at p hashed in (start from KEEL_FNV1A_START). */
static inline uint64_t keel_fnv1a_add(uint64_t h, const void *p, size_t n)
{
    const unsigned char *b = p;
    for (size_t i = 0; i < n; i++) {
        h ^= b[i];
        h *= UINT64_C(0x100000001b3);
    }
    return h;
}

/* The checksum of the n bytes at p. */
static inline uint64_t keel_fnv1a(const void *p, size_t n)
{
    return keel_fnv1a_add(KEEL_FNV1A_START, p, n);
}

#endif
