/*
 * onednn_common.h - shared by the oneDNN peer programs: onednn_bench.c (oneDNN alone, its own
 * table) and interleaved_bench.c (keel and oneDNN 3.x timed in turns in one process). Both link
 * onednn_common.c. It compiles against oneDNN 2.x (operation descriptors, memory descriptors as
 * structs) and 3.x (primitive descriptors made directly, memory descriptors as opaque handles),
 * chosen by DNNL_VERSION_MAJOR.
 */
#ifndef KEEL_PEERS_ONEDNN_COMMON_H
#define KEEL_PEERS_ONEDNN_COMMON_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include <oneapi/dnnl/dnnl.h>
#include <oneapi/dnnl/dnnl_version.h>

/* the API differences of 2.x and 3.x, behind md_t, MD() and md_make / md_free */
typedef dnnl_memory_desc_t md_t; /* 3.x: an opaque handle, created and destroyed; 2.x: a struct */
#if DNNL_VERSION_MAJOR >= 3
#define MD(m) (m)
#else
#define MD(m) (&(m))
#endif
dnnl_status_t md_make(md_t *md, int nd, const dnnl_dims_t dims, dnnl_data_type_t dt,
                      dnnl_format_tag_t tag);
void md_free(md_t *md);

/* the layer normalization primitive descriptors: forward_training (it writes mean and variance)
 * and backward (dx, dscale, dshift from the forward's mean and variance) */
dnnl_status_t lnorm_fwd_pd(dnnl_primitive_desc_t *pd, dnnl_engine_t eng, md_t *data, md_t *stat,
                           unsigned flags);
dnnl_status_t lnorm_bwd_pd(dnnl_primitive_desc_t *pd, dnnl_engine_t eng, md_t *data, md_t *stat,
                           unsigned flags, dnnl_primitive_desc_t hint);

/* a dnnl call that must succeed: otherwise `err` (a char array in scope) says which, and the
 * function jumps to its `fail` label */
#define TRY(call)                                                                                  \
    do {                                                                                           \
        dnnl_status_t st_ = (call);                                                                \
        if (st_ != dnnl_success) {                                                                 \
            snprintf(err, sizeof err, "not run: %s failed (dnnl status %d)", #call, (int)st_);     \
            goto fail;                                                                             \
        }                                                                                          \
    } while (0)

#define EPS 1e-5f
#define TOL_FWD 1e-5
#define TOL_BWD 1e-4
/* bf16/f16: the output is rounded to the dtype, so the bound is the dtype's epsilon (2^-7,
 * 2^-10) relative to the row's largest value: one ulp there, twice the rounding alone; the
 * backward four. */
#define EPS_BF16 (1.0 / 128)
#define EPS_F16 (1.0 / 1024)

typedef struct {
    size_t rows, dim;
} bcase;

/* n floats from keel bench's generator, uniform in [-1, 1), 64-byte aligned (free()) */
float *alloc_fill(size_t n, uint64_t *seed);

/* the storage dtypes: float32, bf16 and f16 bits */
typedef enum { DT_F32, DT_BF16, DT_F16 } dtype;
/* a tensor of n elements in dtype dt made from float32 values: a new 64-byte aligned array, or v
 * itself for float32; NULL when out of memory */
void *to_dtype(const float *v, size_t n, dtype dt);
/* element i of a tensor of dtype dt, as float */
float load(const void *p, size_t i, dtype dt);
/* the float values of a tensor of dtype dt: a new array, or p itself for float32 */
float *widen(const void *p, size_t n, dtype dt);

/* The float64 references (x, y, dy, dx as float values; gamma, beta float32). rms != 0:
 * RMSNorm (no mean, no beta, b and db NULL). Errors: per row max|out - ref| / max|ref| of the
 * row, the worst row; dgamma and dbeta count as one row each. The backward uses the centred form
 * dx = rstd * (g - mean(g) - xhat * mean(g * xhat)), g = dy * gamma (RMSNorm: without mean(g)).
 * Return 0, or -1 when out of memory. */
int check_fwd(const bcase *c, const float *x, const float *y, const float *g, const float *b,
              int rms, double *err);
int check_bwd(const bcase *c, const float *x, const float *dy, const float *g, const float *dx,
              const float *dg, const float *db, int rms, double *e_dx, double *e_dg, double *e_db);

/* The tensors of one case for one library: x, y, dy, dx in dtype dt (from keel bench's
 * generator with a fixed seed: every lnbufs of a case holds the same values, in its own
 * memory), mean and var (oneDNN's variance; keel's rstd), gamma g, beta b, dg, db float32, and
 * the inputs as stored, widened to float (xw, dyw) for the references. */
typedef struct {
    bcase c;
    dtype dt;
    void *x, *y, *dy, *dx;
    float *xw, *dyw;
    float *mean, *var, *g, *b, *dg, *db;
} lnbufs;
/* 0, or -1 when out of memory (nothing left allocated) */
int lnbufs_alloc(lnbufs *B, const bcase *c, dtype dt);
void lnbufs_free(lnbufs *B);
/* checks y (bwd 0) or dx, dgamma, dbeta (bwd 1; rms: no dbeta) against the float64 reference and
 * writes "ok 1.2e-07" or "FAIL ..." to chk (the backward with each error); tolerances: float32
 * TOL_FWD / TOL_BWD, bf16/f16 the dtype's epsilon forward, four times it backward. Returns 0
 * (pass), 1 (FAIL) or -1 (out of memory, chk says so). */
int lnbufs_check(const lnbufs *B, int bwd, int rms, char *chk, size_t len);

/* oneDNN layer normalization on one lnbufs: forward_training and backward (use_scale |
 * use_shift) primitives and their memory objects over the lnbufs' arrays */
#define ONEDNN_LN_NMEM 10
#define ONEDNN_LN_NFARGS 6
#define ONEDNN_LN_NBARGS 9
typedef struct {
    md_t data_md, stat_md, param_md;
    dnnl_primitive_desc_t fpd, bpd;
    dnnl_primitive_t fwd, bwd; /* bwd NULL: no backward for this dtype (the reason in why) */
    const char *fimpl, *bimpl; /* the implementations oneDNN picked ("?" if unknown) */
    dnnl_memory_t mem[ONEDNN_LN_NMEM];
    dnnl_exec_arg_t fargs[ONEDNN_LN_NFARGS], bargs[ONEDNN_LN_NBARGS];
} onednn_ln;
/* 0 (why empty, or why the backward is missing), or -1: why says why (all released) */
int onednn_ln_create(onednn_ln *P, dnnl_engine_t eng, lnbufs *B, char *why, size_t len);
/* one forward (bwd 0) or backward run, waited for */
dnnl_status_t onednn_ln_run(onednn_ln *P, dnnl_stream_t stream, int bwd);
void onednn_ln_destroy(onednn_ln *P);
/* "OpenMP", "TBB" or "other" */
const char *onednn_runtime_name(const dnnl_version_t *v);

#endif
