/* The part of keel's lane vocabulary (lanes__avx2.h, lanes__avx512.h) that is the same on AVX2
 * and AVX-512. The elementwise kernels step through a row 8 floats at a time, a kl_f8: one ymm on
 * both paths (on AVX-512 not a zmm: keel's kernels stream rows as callers pass them, mostly not
 * 64-byte aligned, where every zmm store splits across two cache lines; measured, zmm made
 * LayerScale's backward, three output streams, 20-50% slower than ymm, and with aligned rows
 * both ran at the same speed); 8, not the 16 of kernels.h's reduction order, because a row of 24
 * floats in 16 + a masked 8 measured 40% slower than in three 8s. Loads, stores, streaming
 * stores and arithmetic are AVX instructions; the tails differ (AVX2 maskload / maskstore,
 * AVX-512VL mask registers) and live in the two ISA headers. Include only through them. */
#ifndef KEEL_KERNELS_LANES_YMM_H
#define KEEL_KERNELS_LANES_YMM_H

#include <immintrin.h>
#include <stddef.h>
#include <stdint.h>

typedef __m256 kl_f8;

KEEL_INLINE kl_f8 kl_zero(void) { return _mm256_setzero_ps(); }
KEEL_INLINE kl_f8 kl_load(const float *p) { return _mm256_loadu_ps(p); }
KEEL_INLINE void kl_store(float *p, kl_f8 v) { _mm256_storeu_ps(p, v); }

/* A streaming (non-temporal) store of 8 floats at p, 32-byte aligned; kl_stream_fence() after
 * the last one of a call, so that they are visible when it returns. */
KEEL_INLINE void kl_stream(float *p, kl_f8 v) { _mm256_stream_ps(p, v); }
KEEL_INLINE void kl_stream_fence(void) { _mm_sfence(); }

/* Element by element, each result rounded once (no FMA: the scalar kernels' bits). */
KEEL_INLINE kl_f8 kl_add(kl_f8 a, kl_f8 b) { return _mm256_add_ps(a, b); }
KEEL_INLINE kl_f8 kl_mul(kl_f8 a, kl_f8 b) { return _mm256_mul_ps(a, b); }

/* Whether a row starts a cache line (its streamed stores are then whole lines). */
KEEL_INLINE int kl_aligned64(const float *p) { return ((uintptr_t)p & 63) == 0; }

/* ---- the reduction unit's x86 part (kr_*: lanes__avx2.h, lanes__avx512.h) -------------------
 * Prefetch hints: into L1 (the row a pipeline reads next, KR_PIPE_AHEAD floats ahead) or into L2
 * (the next group's rows while the current ones are worked on in cache). A prefetch never
 * faults, so one past a row's end is harmless. */
KEEL_INLINE void kr_prefetch_l1(const float *p) { _mm_prefetch((const char *)p, _MM_HINT_T0); }
KEEL_INLINE void kr_prefetch_l2(const float *p) { _mm_prefetch((const char *)p, _MM_HINT_T1); }

/* The norms' row pipelines prefetch the row they read from memory this far ahead of the loads,
 * in floats (1 KiB, 16 lines; 128 and 512 measured within 5% at 4096x768 to 4096x4096). */
#define KR_PIPE_AHEAD 256

#endif
