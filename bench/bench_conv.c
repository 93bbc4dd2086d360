/*
 * bench_conv.c: throughput of convolutional networks against cblas_sgemm on a square
 * product measured in the same run: one forward+backward pass (objective and gradient)
 * of LeNet-5 (configs/lenet5-mnist.ini's network) at batch 256, and forward+backward of
 * one wide convolution, 64 → 64 channels, 3×3, stride 1, padding 1, on 32×32 maps at
 * batch 32, with the gradient for its input (im2col, the forward and dW GEMMs, and one
 * GEMM per tap for the input gradient). Prints achieved GFLOP/s (the GEMMs' multiply-adds;
 * pooling and im2col count nothing) and the ratios; the target on the wide layer is a ratio
 * of at least 0.4. LeNet-5's time is also split by layer, and the wide layer's into its
 * parts.
 *
 *   bench/bench_conv [LENET_BATCH [WIDE_BATCH [REPEATS]]]
 */
#include "bench_util.h"
#include <cblas.h>
#include "kfac/net.h"
#include "kfac/optim.h"
#include "kfac/status.h"

#include <stdio.h>
#include <stdlib.h>

static struct kfac_net *build(const char *spec, int m, struct kfac_rng *rng)
{
    struct kfac_layer_spec *specs;
    struct kfac_shape in;
    int n;
    struct kfac_net *net = NULL;
    if (kfac_net_parse_layers(spec, &in, &specs, &n) == 0) {
        kfac_net_new_shaped(&in, specs, n, &net);
        free(specs);
    }
    if (!net) {
        fprintf(stderr, "bench_conv: %s\n", kfac_last_error());
        exit(1);
    }
    kfac_net_reserve(net, m);
    kfac_net_init(net, KFAC_INIT_HE, 15, rng);
    return net;
}

/* Multiply-adds ×2 of the layer's GEMMs for m cases: forward and dW, and din unless it
 * is the network's first layer. */
static double layer_flops(const struct kfac_layer *l, int m, int with_din)
{
    double rows = (double)m * l->n_pos, k = l->d_in + 1.0;
    return 2.0 * rows * l->d_out * (2.0 * k + (with_din ? l->d_in : 0));
}

/* What one timed call of conv_part_run() does to layer l on m cases: its forward pass
 * (forward), or only the forward pass's GEMM sᵀ = W āᵀ (gemm), then its backward pass
 * into dW and din where either is not NULL. */
struct conv_part {
    struct kfac_layer *l;
    int m, forward, gemm;
    float *dW, *din;
};

static void conv_part_run(void *ctx)
{
    struct conv_part *p = ctx;
    struct kfac_layer *l = p->l;
    int k = l->d_in + 1, rows = p->m * l->n_pos;
    if (p->forward)
        l->ops->forward(l, p->m);
    if (p->gemm)
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, l->d_out, rows, k, 1.0f, l->W, k,
                    l->abar, k, 0.0f, l->col, rows);
    if (p->dW || p->din)
        l->ops->backward(l, p->m, 1.0f, p->dW, 0.0f, p->din, l->in_size);
}

int main(int argc, char **argv)
{
    kfac_backend_cpu_prepare(argv);
    int m = argc > 1 ? atoi(argv[1]) : 256, mw = argc > 2 ? atoi(argv[2]) : 32,
        repeats = argc > 3 ? atoi(argv[3]) : 10;
    if (m < 1 || mw < 1 || repeats < 1) {
        fprintf(stderr, "usage: bench_conv [LENET_BATCH [WIDE_BATCH [REPEATS]]]\n");
        return 2;
    }
    struct kfac_rng rng;
    kfac_rng_seed(&rng, 1);

    /* LeNet-5 through kfac_objective, as training calls it. */
    struct kfac_net *net = build("1x28x28-conv(6,5,pad=2):relu-maxpool(2)-conv(16,5):relu-"
                                 "maxpool(2)-flatten-120:relu-84:relu-10:softmax",
                                 m, &rng);
    float *X = kfac_floats_new((size_t)m * 784), *T = kfac_floats_new((size_t)m * 10);
    for (size_t i = 0; i < (size_t)m * 784; i++)
        X[i] = (float)kfac_rng_uniform(&rng);
    for (int i = 0; i < m; i++)
        T[i * 10 + i % 10] = 1.0f;
    struct kfac_batch b = {.m = m, .x = X, .t = T};
    double flops = 0;
    for (int i = 0; i < net->n_blocks; i++)
        flops += layer_flops(net->blocks[i], m, i > 0);
    struct bench_objective pass = {net, KFAC_LOSS_SOFTMAX, &b};
    double best = bench_best_seconds(bench_objective_run, &pass, repeats);
    double lenet = flops / best * 1e-9;
    printf("LeNet-5 forward+backward, batch %d: %.2f ms, %.2f GFLOP/s\n", m, best * 1e3, lenet);
    /* Its layers one by one, in the pass's order, on the g the last pass left: where the
     * time goes in a network of thin convolutions, pooling and small dense layers. */
    int widest = 0;
    for (int i = 1; i < net->n_layers; i++)
        widest = net->layers[i].in_size > widest ? net->layers[i].in_size : widest;
    float *layer_din = kfac_floats_new((size_t)m * widest);
    for (int i = 0; i < net->n_layers; i++) {
        struct kfac_layer *l = &net->layers[i];
        struct conv_part fwd_part = {l, m, 1, 0, NULL, NULL};
        struct conv_part bwd_part = {l, m, 0, 0, l->dW, i > 0 ? layer_din : NULL};
        double fwd = bench_best_seconds(conv_part_run, &fwd_part, repeats);
        double bwd = bench_best_seconds(conv_part_run, &bwd_part, repeats);
        printf("  layer %d %s: forward %.2f ms, backward %.2f ms\n", i + 1, l->ops->name, fwd * 1e3,
               bwd * 1e3);
    }
    kfac_floats_free(layer_din);
    kfac_floats_free(X);
    kfac_floats_free(T);
    kfac_net_free(net);

    /* The wide convolution alone: forward, then backward with dW and the input's gradient. */
    net = build("64x32x32-conv(64,3,pad=1):relu-flatten-10:softmax", mw, &rng);
    struct kfac_layer *l = &net->layers[0];
    X = kfac_floats_new((size_t)mw * net->d_in);
    float *din = kfac_floats_new((size_t)mw * l->in_size);
    for (size_t i = 0; i < (size_t)mw * net->d_in; i++)
        X[i] = (float)kfac_rng_uniform(&rng) - 0.5f;
    kfac_net_forward(net, mw, X);
    for (size_t i = 0; i < (size_t)mw * l->out_size; i++)
        l->g[i] = (float)kfac_rng_uniform(&rng) - 0.5f;
    flops = layer_flops(l, mw, 1);
    /* The whole, then its parts: the forward pass (im2col, GEMM, transpose, activation)
     * and its GEMM alone (sᵀ = W āᵀ), dW's GEMM, and the input gradient (per-tap GEMMs,
     * this being a same-size convolution). The parts' ms show where the rest goes. */
    enum { WHOLE, FORWARD, FORWARD_GEMM, DW, DIN, N_PARTS };
    static const char *names[N_PARTS] = {"forward+backward", "forward", "forward's GEMM alone",
                                         "dW", "input gradient"};
    const struct conv_part parts[N_PARTS] = {
        [WHOLE] = {l, mw, 1, 0, l->dW, din}, [FORWARD] = {l, mw, 1, 0, NULL, NULL},
        [FORWARD_GEMM] = {l, mw, 0, 1, NULL, NULL}, [DW] = {l, mw, 0, 0, l->dW, NULL},
        [DIN] = {l, mw, 0, 0, NULL, din}};
    double part_best[N_PARTS];
    for (int part = 0; part < N_PARTS; part++) {
        struct conv_part p = parts[part];
        part_best[part] = bench_best_seconds(conv_part_run, &p, repeats);
    }
    double wide = flops / part_best[WHOLE] * 1e-9;
    double ref = bench_sgemm_gflops(kfac_backend_cpu(), 2000, repeats);
    printf("conv 64->64 3x3 pad 1 on 32x32, forward+backward with din, batch %d: %.2f ms, "
           "%.2f GFLOP/s\n",
           mw, part_best[WHOLE] * 1e3, wide);
    for (int part = FORWARD; part < N_PARTS; part++)
        printf("  %s: %.2f ms\n", names[part], part_best[part] * 1e3);
    printf("cblas_sgemm 2000x2000x2000: %.2f GFLOP/s\n", ref);
    printf("ratio LeNet-5: %.3f\n", lenet / ref);
    printf("ratio wide conv: %.3f (target >= 0.4)\n", wide / ref);
    kfac_floats_free(X);
    kfac_floats_free(din);
    kfac_net_free(net);
    return 0;
}
