#include <keel.h>
#include <stdio.h>

int main(void)
{
    keel_ctx *ctx;
    keel_status st = keel_ctx_create(&ctx, 0); /* 0: one thread per core */
    if (st != KEEL_OK) {
        fprintf(stderr, "keel: %s\n", keel_last_error());
        return 1;
    }
    enum { ROWS = 2, DIM = 4 };
    const float x[ROWS * DIM] = {1, 2, 3, 4, 10, 10, 10, 10};
    const float gamma[DIM] = {1, 1, 2, 2}, beta[DIM] = {0, 0, 0.5f, 0.5f};
    float y[ROWS * DIM], mean[ROWS], rstd[ROWS];

    st = keel_layernorm_fwd(ctx, ROWS, DIM, keel_f32(x, DIM), keel_f32(y, DIM), gamma, beta,
                            1e-5f, mean, rstd, 0);
    if (st != KEEL_OK) {
        fprintf(stderr, "keel: %s\n", keel_last_error());
        keel_ctx_destroy(ctx);
        return 1;
    }
    for (int r = 0; r < ROWS; r++)
        printf("row %d: mean %g rstd %g y %g %g %g %g\n", r, mean[r], rstd[r], y[r * DIM],
               y[r * DIM + 1], y[r * DIM + 2], y[r * DIM + 3]);

    /* backward: gradients of sum(y * dy) with the saved statistics */
    const float dy[ROWS * DIM] = {1, 0, 0, 0, 0, 1, 0, 0};
    float dx[ROWS * DIM], dgamma[DIM], dbeta[DIM];
    st = keel_layernorm_bwd(ctx, ROWS, DIM, keel_f32(dy, DIM), keel_f32(x, DIM), mean, rstd, gamma,
                            1e-5f, keel_f32(dx, DIM), dgamma, dbeta, 0);
    printf("backward: %s, dx[0] %g, dgamma[0] %g, dbeta[0] %g\n", keel_status_str(st), dx[0],
           dgamma[0], dbeta[0]);
    keel_ctx_destroy(ctx);
    return st == KEEL_OK ? 0 : 1;
}
