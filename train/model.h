/* keel train: a decoder-only character transformer whose every normalization goes through keel.
 * Row-major float32 throughout. A linear layer stores W as [in][out]: y = x W + b. */
#ifndef KEEL_TRAIN_MODEL_H
#define KEEL_TRAIN_MODEL_H

#include <stddef.h>
#include <stdint.h>

#include "keel.h"
#include "tool_error.h"

typedef enum tm_norm { TM_NORM_LAYER = 0, TM_NORM_RMS, TM_NORM_BATCH, TM_NORM_DYT, TM_NORM_NONE } tm_norm;
typedef enum tm_place { TM_PRE = 0, TM_POST, TM_DEEPNORM, TM_SANDWICH } tm_place;

const char *tm_norm_name(tm_norm n);
const char *tm_place_name(tm_place p);
int tm_norm_parse(const char *s, tm_norm *n);   /* 0 ok, -1 unknown */
int tm_place_parse(const char *s, tm_place *p);

typedef struct tm_config {
    int vocab, layers, width, heads, seq; /* seq: the longest context */
    int tied;                             /* 1: the head is the token embedding transposed */
    tm_norm norm;
    tm_place place;
    float layerscale; /* 0: off; > 0: LayerScale on, lambda initialised to this */
    float eps;        /* of LayerNorm, RMSNorm and BatchNorm */
} tm_config;

/* One named parameter tensor inside the flat parameter array. */
typedef struct tm_tensor {
    char name[32];
    size_t off, size;
    int layer; /* -1: outside the blocks */
    int decay; /* AdamW weight decay applies (matrices and embeddings) */
} tm_tensor;

/* A normalization instance: offsets of its parameters and its saved statistics. */
typedef struct tm_norm_inst {
    size_t gamma, beta, alpha; /* offsets into params (alpha: DyT's scalar) */
    size_t run_mean, run_var;  /* offsets into buffers (BatchNorm) */
    float *in, *out;           /* forward input (not owned) and output (owned, rows x width) */
    float *mean, *rstd;        /* rows (LN/RMS) or width (BN) floats */
} tm_norm_inst;

typedef struct tm_sub { /* one sublayer (attention or MLP) of one block: its activations */
    tm_norm_inst nin, nout, nres; /* nin: pre/sandwich; nout: sandwich; nres: post/deepnorm */
    float *f;  /* branch output, rows x width */
    float *h;  /* post/deepnorm: alpha*x + lambda*r, the norm's input */
    /* attention */
    float *qkv, *p, *att;
    /* MLP */
    float *u, *gl;
    /* parameter offsets */
    size_t w1, b1, w2, b2, ls;
} tm_sub;

typedef struct tm_model {
    tm_config cfg;
    int max_batch;
    size_t nparams, nbuffers;
    float *params, *grads, *buffers;
    tm_tensor *tensors;
    int ntensors;
    size_t wte, wpe, head; /* head == wte when tied */
    tm_sub *sub;           /* 2 per layer: [2l] attention, [2l+1] MLP */
    tm_norm_inst nfinal;   /* pre and sandwich only */
    int has_final;
    float *x;      /* (layers*2 + 1) residual streams, rows x width each: x[k] enters sublayer k */
    float *dx, *dtmp, *dtmp2, *dbig, *dbig2; /* backward scratch */
    float *xf;     /* the head's input */
    float *logits; /* rows x vocab: probabilities after the forward */
    float *datt;   /* scratch T x T */
    int *tokens, *targets;
    int B, T;      /* of the last forward */
    int training;  /* BatchNorm: batch statistics (1) or running statistics (0) */
    keel_ctx *ctx;
    double norm_seconds; /* time inside keel's normalization calls, accumulated */
    float deep_alpha;
    /* Optional (issue 8): when set, every forward passes each LayerNorm/RMSNorm's per-token
     * statistics to this monitor, one slot per norm (tm_monitor_slots); not owned. */
    keel_monitor *monitor;
    double monitor_seconds; /* time spent feeding the monitor, accumulated */
    /* The first keel call of the last forward or backward that failed, with keel's message;
     * empty when none did (tm_error). */
    char error[320];
    keel_status error_status; /* its status, KEEL_OK when none */
} tm_model;

/* What a configuration may be, whoever gives it (keel train's options, a checkpoint's header,
 * the study): checked by tm_create before anything is allocated (model_check.c). */
#define TM_MAX_LAYERS 1024
#define TM_MAX_WIDTH 65536 /* also the most heads */
#define TM_MAX_SEQ 65536
#define TM_MAX_BATCH 1048576
#define TM_MAX_SETTING 1e9 /* the largest layerscale and eps */

/* KEEL_OK when tm_create can build cfg: layers, width, heads (dividing the width), seq within
 * the limits above, vocab 2..256, tied 0 or 1, a known norm and placement, layerscale and eps
 * finite in [0, TM_MAX_SETTING]. Else KEEL_EINVAL with tool_last_error() (tool_error.h)
 * naming the field and its value. */
keel_status tm_config_check(const tm_config *cfg);
/* The parameters and buffers (BatchNorm's running statistics) tm_create lays out for a valid
 * cfg, counted without allocating anything. */
void tm_model_size(const tm_config *cfg, size_t *nparams, size_t *nbuffers);
/* About the bytes tm_create allocates for a valid cfg and max_batch (a double: it may exceed
 * what size_t holds). */
double tm_model_bytes(const tm_config *cfg, int max_batch);
/* OpenBLAS maps a working buffer of this size for each thread that runs a matrix product and,
 * when the mapping fails, retries for ever (its memory.c): a process under `ulimit -v` that
 * cannot map it hangs inside BLAS. */
#define TM_BLAS_BUFFER_BYTES ((size_t)128 << 20)
/* KEEL_OK when this process may still map the model's bytes, one BLAS buffer per thread and
 * some headroom (a probe: the address space reserved and released at once, nothing
 * committed); else KEEL_ENOMEM (KEEL_EINVAL past 64 TiB) with tool_last_error() saying what
 * was needed and the address-space limit (ulimit -v). tm_create calls it first, so that a
 * model that cannot fit is refused before BLAS is ever called. */
keel_status tm_memory_check(const tm_config *cfg, int max_batch, int threads);

/* Allocates a model for batches of up to max_batch sequences of cfg->seq tokens and initialises
 * its parameters from seed. threads: keel's and BLAS's thread count. Returns KEEL_OK, or a
 * status with tool_last_error() (a cfg tm_config_check refuses, memory tm_memory_check finds
 * missing, an allocation that fails, keel's context). */
keel_status tm_create(tm_model *m, const tm_config *cfg, int max_batch, uint64_t seed, int threads);
void tm_destroy(tm_model *m);

/* Forward over B sequences of T <= seq tokens. targets NULL: logits only (probabilities in
 * m->logits), returns 0. Otherwise returns the mean cross-entropy (nats). When a keel call
 * fails (a parameter it refuses: DyT's alpha gone Inf, a checkpoint's crafted one), returns
 * NaN and tm_error says which call and why; the logits are then not to be used. */
double tm_forward(tm_model *m, const int *tokens, const int *targets, int B, int T);
/* Backward of the last forward with targets: grads = d(loss)/d(params) (overwritten). 0, or
 * -1 when a keel call failed (tm_error; the gradients are then not to be used). */
int tm_backward(tm_model *m);
/* NULL when the last forward (and backward, if one followed it) ran every keel call; else
 * "keel_dyt_fwd failed: invalid argument (keel_dyt_fwd: alpha (inf) must be finite)". */
const char *tm_error(const tm_model *m);

/* Diagnostics of the last forward / backward. */
void tm_residual_norms(const tm_model *m, double *out);  /* layers + 1: mean row L2 norm entering each block, and after the last */
void tm_layer_grad_norms(const tm_model *m, double *out); /* layers: L2 norm of each block's gradient */
void tm_mlp_out_grad_norms(const tm_model *m, double *out); /* layers: L2 norm of each block's last MLP weight gradient */
double tm_grad_norm(const tm_model *m);

/* The monitor's slots: every LayerNorm/RMSNorm of a forward, in order (per sublayer: its input
 * norm (pre, sandwich), its output norm (sandwich), its residual norm (post, DeepNorm); then the
 * final norm). 0 for BatchNorm, DyT and none (no per-token statistics). */
int tm_monitor_slots(const tm_model *m);
/* The statistics of slot's norm in the last forward (mean NULL for RMSNorm); rows = B*T. */
void tm_monitor_stats(const tm_model *m, int slot, const float **mean, const float **rstd);
/* A name such as "L0.attn.in", "L3.mlp.res" or "final". */
/* The input of the norm of a monitor slot in the last forward: rows x width (the monitor's
 * per-channel statistics); NULL for a slot that does not exist. */
const float *tm_monitor_input(const tm_model *m, int slot);
void tm_monitor_slot_name(const tm_model *m, int slot, char *buf, size_t len);

/* Threads of BLAS and keel (threads < 1: 1). KEEL_OK, or keel's status when its context cannot
 * start them (keel_last_error; it keeps the threads it had). */
keel_status tm_set_threads(tm_model *m, int threads);
int tm_have_cblas(void);

#endif
