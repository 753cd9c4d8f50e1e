/*
 * keel eps [--dtype f32|bf16|f16] [--eps E]: what an eps means for a storage dtype, in words.
 *
 * For each dtype asked about (all three without --dtype) it prints keel_eps_check's report:
 * the eps as that dtype stores it (what a runtime that keeps eps in the tensor's dtype computes
 * with), the amplification 1/sqrt(eps) a constant row gets, the variance below which eps rather
 * than the row decides the output, and a suggested eps with the reasoning; then a one-line
 * verdict. keel itself always holds eps in float32 (keel.h, "Low precision").
 * Exit status: 0 after the report, 2 on a usage error, 1 if the check itself fails.
 */
#include <float.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "commands.h"
#include "keel.h"
#include "numarg.h"

static void usage(FILE *to)
{
    fprintf(to,
            "usage: keel eps [--dtype f32|bf16|f16] [--eps E]\n"
            "\n"
            "What an eps means once it is stored in a dtype, and an eps suited to that dtype.\n"
            "  --dtype D   f32 (fp32, float32), bf16 (bfloat16) or f16 (fp16, float16, half);\n"
            "              without it, all three\n"
            "  --eps E     the eps, finite and >= 0 (default 1e-5, PyTorch's LayerNorm default)\n"
            "  --help      this text\n"
            "\n"
            "Example: keel eps --dtype fp16 --eps 1e-12   (BERT's eps: 0 in fp16, pytorch#41527)\n"
            "keel holds eps in float32 whatever the tensors' dtype; the report is about runtimes\n"
            "that store eps in the tensor's dtype, and about how much a tiny eps amplifies.\n");
}

static int parse_dtype(const char *s, keel_dtype *out)
{
    static const struct {
        const char *name;
        keel_dtype dtype;
    } names[] = {{"f32", KEEL_F32},   {"fp32", KEEL_F32},     {"float32", KEEL_F32},
                 {"bf16", KEEL_BF16}, {"bfloat16", KEEL_BF16}, {"f16", KEEL_F16},
                 {"fp16", KEEL_F16},  {"float16", KEEL_F16},  {"half", KEEL_F16}};
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
        if (!strcmp(s, names[i].name)) {
            *out = names[i].dtype;
            return 1;
        }
    return 0;
}

/* Facts of a dtype for the text (the numbers keel_eps_check uses). */
typedef struct dtype_text {
    const char *name;       /* "f16" */
    int fraction_bits;
    double smallest_normal; /* 2^-14, 2^-126 */
    double smallest_subnormal;
} dtype_text;

static dtype_text text_of(keel_dtype d)
{
    switch (d) {
    case KEEL_BF16: return (dtype_text){"bf16", 7, 0x1p-126, 0x1p-133};
    case KEEL_F16: return (dtype_text){"f16", 10, 0x1p-14, 0x1p-24};
    default: return (dtype_text){"f32", 23, 0x1p-126, 0x1p-149};
    }
}

static void report(keel_dtype dtype, float eps, const keel_eps_info *in)
{
    const dtype_text t = text_of(dtype);
    printf("eps %.6g stored in %s\n", (double)eps, t.name);

    /* 1. storage */
    if (dtype == KEEL_F32)
        printf("  stored as        %.9g: the float32 nearest the value given, which is what keel\n"
               "                   computes with for every dtype\n", (double)in->eps_in_dtype);
    else if (in->eps_in_dtype == 0.0f && eps > 0.0f)
        printf("  stored as        0: it rounds to zero (the smallest positive %s value is %.3g). A runtime that\n"
               "                   keeps eps in %s computes 1/sqrt(var + 0): an all-zero row gives 0 * Inf\n"
               "                   = NaN (pytorch#41527); keel holds eps in float32 and gives beta there.\n",
               t.name, t.smallest_subnormal, t.name);
    else
        printf("  stored as        %.9g (%+.2g%% off)%s\n", (double)in->eps_in_dtype,
               eps > 0.0f ? 100.0 * ((double)in->eps_in_dtype - (double)eps) / (double)eps : 0.0,
               in->subnormal_in_dtype ? ": a subnormal there, with few significant bits" : "");
    printf("  representable    %s\n",
           in->representable ? "yes (nonzero and within 1%)"
                             : (eps == 0.0f ? "no (eps is 0)" : "NO (zero, or more than 1% off)"));

    /* 2. what eps does to a row */
    if (isinf(in->max_amplification))
        printf("  amplification    unbounded: with eps 0 a constant row divides by sqrt(0)\n");
    else
        printf("  amplification    1/sqrt(eps) = %.4g: the rstd of a constant row, and the gain on its\n"
               "                   gradients\n", in->max_amplification);
    printf("  eps dominates    rows whose variance is below %.3g (std %.3g): there eps, not the\n"
           "                   row's spread, sets the scale of the output\n",
           in->dominance_variance, sqrt(in->dominance_variance));
    printf("  rounding noise   variance %.3g: %s's rounding error on unit-scale values, (2^-%d)^2 / 12\n",
           in->dtype_noise_variance, t.name, t.fraction_bits);

    /* 3. the suggestion and why */
    const double floor_eps = fmax(t.smallest_normal, in->dtype_noise_variance);
    printf("  suggested eps    %.0e\n", (double)in->suggested_eps);
    printf("    why: the smallest power of ten at least as large as both %s's smallest normal\n"
           "    number, %.3g (so eps is stored with all of %s's %d fraction bits), and the\n"
           "    variance of %s's rounding noise, %.3g (so a row that is constant up to rounding\n"
           "    noise is not amplified into unit-scale output); the larger, %.3g, is %s.\n",
           t.name, t.smallest_normal, t.name, t.fraction_bits, t.name, in->dtype_noise_variance,
           floor_eps, floor_eps == t.smallest_normal ? "the smallest normal" : "the noise variance");

    /* 4. the verdict */
    if (eps == 0.0f)
        printf("  verdict: eps 0 is unsafe in any dtype (a constant row gives NaN); use %.0e.\n",
               (double)in->suggested_eps);
    else if (in->eps_in_dtype == 0.0f)
        printf("  verdict: NOT representable in %s (eps_in_dtype 0): unsafe for any runtime that stores "
               "eps in %s; use %.0e there, or keep eps in float32 as keel does.\n",
               t.name, t.name, (double)in->suggested_eps);
    else if (!in->representable)
        printf("  verdict: NOT representable in %s (stored as %.3g); use %.0e, or keep eps in float32.\n",
               t.name, (double)in->eps_in_dtype, (double)in->suggested_eps);
    else if (in->subnormal_in_dtype)
        printf("  verdict: representable in %s but subnormal there (few digits); %.0e is safer.\n", t.name,
               (double)in->suggested_eps);
    else if (eps < in->suggested_eps)
        printf("  verdict: representable in %s; below the suggested %.0e, so a near-constant row is "
               "amplified up to %.3g times.\n", t.name, (double)in->suggested_eps, in->max_amplification);
    else
        printf("  verdict: fine for %s (representable, at or above the suggested %.0e).\n", t.name,
               (double)in->suggested_eps);
}

int keel_cmd_eps(int argc, char **argv)
{
    int have_dtype = 0;
    keel_dtype dtype = KEEL_F32;
    double eps_d = 1e-5;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *value = NULL;
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            usage(stdout);
            return 0;
        }
        const int is_dtype = !strncmp(a, "--dtype", 7) && (a[7] == '\0' || a[7] == '=');
        const int is_eps = !strncmp(a, "--eps", 5) && (a[5] == '\0' || a[5] == '=');
        if (!is_dtype && !is_eps) {
            fprintf(stderr, "keel eps: unknown argument '%s'\n\n", a);
            usage(stderr);
            return 2;
        }
        const size_t n = is_dtype ? 7 : 5;
        if (a[n] == '=') {
            value = a + n + 1;
        } else if (i + 1 < argc) {
            value = argv[++i];
        } else {
            fprintf(stderr, "keel eps: %s needs a value\n\n", a);
            usage(stderr);
            return 2;
        }
        if (is_dtype) {
            if (!parse_dtype(value, &dtype)) {
                fprintf(stderr, "keel eps: unknown dtype '%s' (f32, bf16 or f16; i8 holds no eps)\n", value);
                return 2;
            }
            have_dtype = 1;
        } else {
            if (keel_arg_double("eps", "--eps", value, 0.0, FLT_MAX, 0, &eps_d))
                return 2;
        }
    }
    const float eps = (float)eps_d;
    if (fabs((double)eps - eps_d) > 1e-6 * eps_d) /* below float32's normal range */
        printf("eps %.6g as float32 (how keel holds it): %.6g\n\n", eps_d, (double)eps);

    static const keel_dtype all[3] = {KEEL_F32, KEEL_BF16, KEEL_F16};
    for (int k = 0; k < 3; k++) {
        const keel_dtype d = have_dtype ? dtype : all[k];
        keel_eps_info info;
        const keel_status st = keel_eps_check(d, eps, &info);
        if (st != KEEL_OK) {
            fprintf(stderr, "keel eps: %s: %s\n", keel_status_str(st), keel_last_error());
            return 1;
        }
        if (k > 0)
            printf("\n");
        report(d, eps, &info);
        if (have_dtype)
            break;
    }
    return 0;
}
