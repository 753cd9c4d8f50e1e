/* keel info: version, what the CPU can run, the path chosen, the kernels it runs and the
 * threads. */
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
    /* the kernel list of the path (src/kernels/kernels.h), as the library names its kernels */
    int n = 0;
    while (keel_kernel_name(isa, n))
        n++;
    printf("kernels: %s (%d in the kernel list)\n", keel_isa_name(isa), n);
    for (int i = 0; i < n; i++)
        printf("  %s\n", keel_kernel_name(isa, i));
    printf("threads: %d\n", keel_ctx_threads(ctx));
    keel_ctx_destroy(ctx);
    return 0;
}
