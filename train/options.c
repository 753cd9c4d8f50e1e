/* keel train: command-line options of the trainer. */
#include "options.h"

#include <string.h>

#include "numarg.h"

int tr_no_cblas(const char *cmd)
{
    if (tm_have_cblas())
        return 0;
    fprintf(stderr, "keel %s: built without CBLAS: apt-get install libopenblas-dev, then rebuild keel\n", cmd);
    return 1;
}

/* The option's value through the one checked parser (numarg.h): 1, or -1 (message printed). */
static int want_int(const char *name, const char *v, int lo, int hi, int *out)
{
    return keel_arg_int("train", name, v, lo, hi, out) ? -1 : 1;
}

static int want_float(const char *name, const char *v, double lo, double hi, int open, float *out)
{
    return keel_arg_float("train", name, v, lo, hi, open, out) ? -1 : 1;
}

int tr_parse_option(tr_opts *o, int argc, char **argv, int *i, const char **data_path)
{
    const char *a = argv[*i];
    if (!strcmp(a, "--untied")) {
        o->mc.tied = 0;
        return 1;
    }
    if (!strcmp(a, "--tied")) {
        o->mc.tied = 1;
        return 1;
    }
    if (!strcmp(a, "--quiet")) {
        o->progress = 0;
        return 1;
    }
    static const char *const valued[] = {"--layers", "--width", "--heads", "--seq", "--batch", "--steps", "--lr",
                                         "--warmup", "--decay", "--min-lr-frac", "--wd", "--beta2", "--clip",
                                         "--seed", "--threads", "--norm", "--placement", "--layerscale", "--eps",
                                         "--data", "--log", "--save", "--resume", "--eval-every",
                                         "--eval-batches", "--eval-seed", "--stop-after", "--progress"};
    int known = 0;
    for (size_t k = 0; k < sizeof valued / sizeof valued[0]; k++)
        known |= !strcmp(a, valued[k]);
    if (!known)
        return 0;
    if (*i + 1 >= argc) {
        fprintf(stderr, "keel train: %s needs a value\n", a);
        return -1;
    }
    const char *v = argv[++*i];
    const int S = TR_MAX_STEPS;
    const double F = TR_MAX_SETTING;
    if (!strcmp(a, "--layers")) return want_int(a, v, 1, TM_MAX_LAYERS, &o->mc.layers);
    if (!strcmp(a, "--width")) return want_int(a, v, 1, TM_MAX_WIDTH, &o->mc.width);
    if (!strcmp(a, "--heads")) return want_int(a, v, 1, TM_MAX_WIDTH, &o->mc.heads);
    if (!strcmp(a, "--seq")) return want_int(a, v, 1, TM_MAX_SEQ, &o->mc.seq);
    if (!strcmp(a, "--batch")) return want_int(a, v, 1, TM_MAX_BATCH, &o->batch);
    if (!strcmp(a, "--steps")) return want_int(a, v, 1, S, &o->steps);
    if (!strcmp(a, "--lr")) return want_float(a, v, 0, F, KEEL_ARG_OPEN_LO, &o->lr);
    if (!strcmp(a, "--warmup")) return want_int(a, v, 0, S, &o->warmup);
    if (!strcmp(a, "--min-lr-frac")) return want_float(a, v, 0, 1, 0, &o->min_frac);
    if (!strcmp(a, "--wd")) return want_float(a, v, 0, F, 0, &o->wd);
    if (!strcmp(a, "--beta2")) return want_float(a, v, 0, 1, KEEL_ARG_OPEN_HI, &o->beta2);
    if (!strcmp(a, "--clip")) return want_float(a, v, 0, F, 0, &o->clip);
    if (!strcmp(a, "--threads")) return want_int(a, v, 1, KEEL_ARG_MAX_THREADS, &o->threads);
    if (!strcmp(a, "--layerscale")) return want_float(a, v, 0, TM_MAX_SETTING, 0, &o->mc.layerscale);
    if (!strcmp(a, "--eps")) return want_float(a, v, 0, TM_MAX_SETTING, 0, &o->mc.eps);
    if (!strcmp(a, "--eval-every")) return want_int(a, v, 0, S, &o->eval_every);
    if (!strcmp(a, "--eval-batches")) return want_int(a, v, 1, S, &o->eval_batches);
    if (!strcmp(a, "--stop-after")) return want_int(a, v, 0, S, &o->stop_after);
    if (!strcmp(a, "--seed")) return keel_arg_u64("train", a, v, 0, UINT64_MAX, &o->seed) ? -1 : 1;
    if (!strcmp(a, "--eval-seed")) return keel_arg_u64("train", a, v, 0, UINT64_MAX, &o->eval_seed) ? -1 : 1;
    if (!strcmp(a, "--decay")) {
        if (!strcmp(v, "cosine") || !strcmp(v, "none")) {
            o->cosine = !strcmp(v, "cosine");
            return 1;
        }
        fprintf(stderr, "keel train: --decay '%s': use cosine or none\n", v);
        return -1;
    }
    if (!strcmp(a, "--norm")) {
        if (tm_norm_parse(v, &o->mc.norm) == 0)
            return 1;
        fprintf(stderr, "keel train: --norm '%s': use layernorm, rmsnorm, batchnorm, dyt or none\n", v);
        return -1;
    }
    if (!strcmp(a, "--placement")) {
        if (tm_place_parse(v, &o->mc.place) == 0)
            return 1;
        fprintf(stderr, "keel train: --placement '%s': use pre, post, deepnorm or sandwich\n", v);
        return -1;
    }
    if (!strcmp(a, "--progress")) {
        if (!strcmp(v, "bar")) o->progress = 2;
        else if (!strcmp(v, "lines")) o->progress = 1;
        else if (!strcmp(v, "none")) o->progress = 0;
        else {
            fprintf(stderr, "keel train: --progress '%s': use bar, lines or none\n", v);
            return -1;
        }
        return 1;
    }
    if (!strcmp(a, "--data")) { *data_path = v; return 1; }
    if (!strcmp(a, "--log")) { o->log_path = v; return 1; }
    if (!strcmp(a, "--save")) { o->save_path = v; return 1; }
    if (!strcmp(a, "--resume")) { o->resume_path = v; return 1; }
    return 0;
}

void tr_print_options(FILE *to)
{
    fprintf(to,
            "model:\n"
            "  --layers N (4) --width N (128) --heads N (4) --seq N (64: context length)\n"
            "  --norm layernorm|rmsnorm|batchnorm|dyt|none (layernorm)\n"
            "  --placement pre|post|deepnorm|sandwich (pre; sandwich is Peri-LN)\n"
            "  --layerscale F (0: off; else LayerScale with lambda initialised to F)\n"
            "  --untied (separate output head; tied by default) --eps F (1e-5)\n"
            "optimisation (AdamW):\n"
            "  --batch N (16) --steps N (500) --lr F (1e-3) --warmup N (0)\n"
            "  --decay cosine|none (cosine from the end of the warm-up to lr * --min-lr-frac, 0.1,\n"
            "    at the last step) --wd F (0.1) --beta2 F (0.99; AdamW beta1 0.9, eps 1e-8)\n"
            "  --clip F (0: off; clipping hides instability) --seed N (1) --threads N (1)\n"
            "data and output:\n"
            "  --data FILE (the bundled Tiny Shakespeare; first 90%% train, last 10%% validation)\n"
            "  --log FILE.csv (step, lr, train and validation loss, gradient norm, per-layer gradient\n"
            "    norms, residual-stream norm by depth)\n"
            "  --eval-every N (100) --eval-batches N (8: the same batches at every evaluation)\n"
            "  --eval-seed N (0: the validation batches follow --seed; any other N: the same fixed\n"
            "    batches for every run, whatever its --seed)\n"
            "  --save FILE (checkpoint at the end) --resume FILE (continue a checkpoint to --steps)\n"
            "  --stop-after N (stop after step N, as if interrupted; with --save, to resume later)\n"
            "  --progress bar|lines|none (a bar on a terminal, lines otherwise) --quiet\n");
}
