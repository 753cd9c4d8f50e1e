/* keel info: version, what the CPU can run, the path chosen and the threads. */
#include <stdio.h>

#include "commands.h"
#include "keel.h"

int keel_cmd_info(int argc, char **argv)
{
    (void)argc;
    (void)argv;
    printf("keel %s (library %s, header %d)\n", keel_version_string(), keel_version_string(),
           KEEL_VERSION_NUMBER);
    printf("isa paths:");
    for (int i = KEEL_ISA_SCALAR; i <= KEEL_ISA_NEON; i++)
        printf(" %s=%s", keel_isa_name((keel_isa)i), keel_isa_available((keel_isa)i) ? "yes" : "no");
    printf("\n");
    keel_ctx *ctx;
    keel_status st = keel_ctx_create(&ctx, 0);
    if (st != KEEL_OK) {
        fprintf(stderr, "keel info: %s: %s\n", keel_status_str(st), keel_last_error());
        return 1;
    }
    const keel_isa isa = keel_ctx_isa(ctx);
    /* the neon path runs the scalar norms until they are converted (src/kernels/kernel_list.c) */
    const char *norms = isa == KEEL_ISA_NEON ? "scalar" : keel_isa_name(isa);
    printf("kernels: %s (keel_f32_layernorm_fwd__%s, keel_f32_layernorm_bwd__%s, keel_f32_rmsnorm_fwd__%s, keel_f32_rmsnorm_bwd__%s)\n",
           keel_isa_name(isa), norms, norms, norms, norms);
    if (isa == KEEL_ISA_NEON)
        printf("neon: LayerScale and DyT native; the norms, fused add + norm, BatchNorm and the "
               "bf16/f16 conversions run the scalar kernels (the same bits)\n");
    printf("threads: %d\n", keel_ctx_threads(ctx));
    keel_ctx_destroy(ctx);
    return 0;
}
