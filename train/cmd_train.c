/* keel train / keel sample. */
#define _POSIX_C_SOURCE 200809L
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "checkpoint.h"
#include "commands_train.h"
#include "numarg.h"
#include "options.h"
#include "rng.h"

static void train_usage(FILE *to)
{
    fprintf(to, "usage: keel train [options]\n\n"
                "Trains a decoder-only character transformer whose normalizations are keel's.\n\n");
    tr_print_options(to);
}

int keel_cmd_train(int argc, char **argv)
{
    tr_opts o;
    tr_opts_default(&o);
    o.progress = isatty(2) ? 2 : 1;
    const char *data_path = NULL;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
            train_usage(stdout);
            return 0;
        }
        int r = tr_parse_option(&o, argc, argv, &i, &data_path);
        if (r < 0)
            return 2;
        if (r == 0) {
            fprintf(stderr, "keel train: unknown option '%s'\n\n", argv[i]);
            train_usage(stderr);
            return 2;
        }
    }
    if (tr_no_cblas("train"))
        return 1;
    tm_data d;
    if (tm_data_load(&d, data_path) != KEEL_OK) {
        fprintf(stderr, "keel train: %s\n", tool_last_error());
        return 1;
    }
    printf("keel train: %s, %zu characters (%zu train, %zu validation), vocabulary %d, unigram entropy %.3f nats\n",
           d.path, d.n, d.ntrain, d.n - d.ntrain, d.vocab, d.unigram_entropy);
    printf("model: %d layers, width %d, %d heads, seq %d, norm %s, placement %s, layerscale %g, %s head\n",
           o.mc.layers, o.mc.width, o.mc.heads, o.mc.seq, tm_norm_name(o.mc.norm), tm_place_name(o.mc.place),
           o.mc.layerscale, o.mc.tied ? "tied" : "untied");
    printf("training: batch %d, steps %d, lr %g, warm-up %d, decay %s, clip %g, seed %llu, threads %d\n",
           o.batch, o.steps, o.lr, o.warmup, o.cosine ? "cosine" : "none", o.clip,
           (unsigned long long)o.seed, o.threads);
    fflush(stdout);
    tr_result r;
    keel_status rc = tr_run(&o, &d, &r);
    tm_data_free(&d);
    if (rc != KEEL_OK) {
        fprintf(stderr, "keel train: %s\n", tool_last_error());
        return 1;
    }
    printf("done: %d steps, %zu parameters, final train loss %.4f (mean of the last 10%%), validation %.4f\n",
           r.steps_done, r.nparams, r.final_train, r.final_val);
    printf("speed: %.0f tokens/s, %.2f ms per step, %.1f%% of the step in normalization (keel)\n", r.tokens_per_s,
           1e3 * r.seconds / (r.steps_done - r.start_step > 0 ? r.steps_done - r.start_step : 1),
           100.0 * r.norm_seconds / (r.seconds > 0 ? r.seconds : 1));
    if (r.nan_step >= 0)
        printf("DIVERGED: non-finite loss at step %d%s%s\n", r.nan_step, r.nan_reason[0] ? ": " : "",
               r.nan_reason);
    if (o.log_path)
        printf("log: %s\n", o.log_path);
    if (o.save_path)
        printf("checkpoint: %s\n", o.save_path);
    int diverged = r.nan_step >= 0;
    tr_result_free(&r);
    return diverged ? 1 : 0;
}

#define SAMPLE_MAX_TOKENS 100000000

static void sample_usage(FILE *to)
{
    fprintf(to, "usage: keel sample --checkpoint FILE [--tokens N (500)] [--temperature F (0.8)]\n"
                "                   [--prompt TEXT (a newline)] [--seed N (1)] [--threads N (1)]\n\n"
                "Generates text from a checkpoint of keel train.\n");
}

int keel_cmd_sample(int argc, char **argv)
{
    const char *ckpt = NULL, *prompt = "\n";
    int ntok = 500, threads = 1;
    double temp = 0.8;
    uint64_t seed = 1;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            sample_usage(stdout);
            return 0;
        }
        if (i + 1 >= argc) {
            fprintf(stderr, "keel sample: unknown option or missing value: '%s'\n\n", a);
            sample_usage(stderr);
            return 2;
        }
        const char *v = argv[++i];
        int bad = 0;
        if (!strcmp(a, "--checkpoint")) ckpt = v;
        else if (!strcmp(a, "--prompt")) prompt = v;
        else if (!strcmp(a, "--tokens")) bad = keel_arg_int("sample", a, v, 0, SAMPLE_MAX_TOKENS, &ntok);
        else if (!strcmp(a, "--threads")) bad = keel_arg_int("sample", a, v, 1, KEEL_ARG_MAX_THREADS, &threads);
        else if (!strcmp(a, "--temperature"))
            bad = keel_arg_double("sample", a, v, 0, 1e6, KEEL_ARG_OPEN_LO, &temp);
        else if (!strcmp(a, "--seed")) bad = keel_arg_u64("sample", a, v, 0, UINT64_MAX, &seed);
        else {
            fprintf(stderr, "keel sample: unknown option '%s'\n\n", a);
            sample_usage(stderr);
            return 2;
        }
        if (bad)
            return 2;
    }
    if (!ckpt) {
        fprintf(stderr, "keel sample: --checkpoint FILE is required\n\n");
        sample_usage(stderr);
        return 2;
    }
    if (tr_no_cblas("sample"))
        return 1;
    tm_train_state st;
    if (tm_ckpt_read_state(ckpt, &st) != KEEL_OK) {
        fprintf(stderr, "keel sample: %s\n", tool_last_error());
        return 1;
    }
    tm_model m;
    if (tm_create(&m, &st.cfg, 1, 0, threads) != KEEL_OK ||
        (tm_ckpt_load(ckpt, &st, &m, NULL) != KEEL_OK && (tm_destroy(&m), 1))) {
        fprintf(stderr, "keel sample: %s\n", tool_last_error());
        return 1;
    }
    m.training = 0;
    int index[256];
    for (int c = 0; c < 256; c++)
        index[c] = -1;
    for (int v = 0; v < st.vocab; v++)
        index[st.chars[v]] = v;
    size_t plen = strlen(prompt), cap = plen + (size_t)ntok + 1;
    int *ctx = malloc(cap * sizeof(int));
    double *p = malloc((size_t)st.cfg.vocab * sizeof(double));
    if (!ctx || !p) {
        fprintf(stderr, "keel sample: out of memory for %d tokens\n", ntok);
        free(ctx);
        free(p);
        tm_destroy(&m);
        return 1;
    }
    int n = 0;
    for (size_t i = 0; i < plen; i++) {
        int id = index[(unsigned char)prompt[i]];
        if (id < 0) {
            fprintf(stderr, "keel sample: the prompt's character 0x%02x is not in the vocabulary; skipped\n",
                    (unsigned char)prompt[i]);
            continue;
        }
        ctx[n++] = id;
    }
    if (n == 0)
        ctx[n++] = 0;
    fputs(prompt, stdout);
    tm_rng rng = {seed * 0x9E3779B97F4A7C15ull + 3};
    const int V = st.cfg.vocab, T = st.cfg.seq;
    for (int k = 0; k < ntok; k++) {
        int len = n < T ? n : T;
        tm_forward(&m, ctx + n - len, NULL, 1, len);
        if (tm_error(&m)) {
            putchar('\n');
            fprintf(stderr, "keel sample: %s: %s\n", ckpt, tm_error(&m));
            free(p);
            free(ctx);
            tm_destroy(&m);
            return 1;
        }
        const float *pr = m.logits + (size_t)(len - 1) * V;
        double sum = 0.0;
        for (int v = 0; v < V; v++) {
            p[v] = pow(pr[v] > 0 ? pr[v] : 0.0, 1.0 / temp);
            sum += p[v];
        }
        double u = tm_rng_uniform(&rng) * sum, acc = 0.0;
        int pick = V - 1;
        for (int v = 0; v < V; v++) {
            acc += p[v];
            if (u < acc) {
                pick = v;
                break;
            }
        }
        ctx[n++] = pick;
        putchar(st.chars[pick]);
    }
    putchar('\n');
    free(p);
    free(ctx);
    tm_destroy(&m);
    return 0;
}
