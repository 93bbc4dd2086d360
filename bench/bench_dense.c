/*
 * bench_dense.c: throughput of one forward+backward pass (objective and gradient) of the
 * MNIST deep autoencoder, 784-1000-500-250-30-250-500-1000-784, at batch 1000, against
 * the backend's sgemm on a square product measured in the same run (cblas_sgemm; with
 * --device cuda, cublasSgemm). Prints achieved GFLOP/s and the ratio; the target on a
 * 2-core machine is a ratio of at least 0.6.
 *
 *   bench/bench_dense [--device DEVICE] [BATCH [REPEATS]]
 */
#include "bench_util.h"
#include "kfac/net.h"
#include "kfac/optim.h"

#include <stdio.h>
#include <stdlib.h>

int main(int argc, char **argv)
{
    const struct kfac_backend *be = bench_device("bench_dense", &argc, &argv);
    int m = argc > 1 ? atoi(argv[1]) : 1000, repeats = argc > 2 ? atoi(argv[2]) : 10;
    if (m < 1 || repeats < 1) {
        fprintf(stderr, "usage: bench_dense [--device DEVICE] [BATCH [REPEATS]]\n");
        return 2;
    }
    struct kfac_net *net = bench_mnist_autoencoder(m);
    kfac_net_set_backend(net, be);
    int n_layers = net->n_layers;
    struct kfac_rng rng;
    kfac_rng_seed(&rng, 1);
    float *X = kfac_floats_new((size_t)m * 784);
    for (size_t i = 0; i < (size_t)m * 784; i++)
        X[i] = (float)kfac_rng_uniform(&rng);
    struct kfac_batch b = {.m = m, .x = X, .t = X};

    /* Forward: one product per layer; backward: dW for every layer, din for all but the first. */
    double flops = 0;
    for (int i = 0; i < n_layers; i++) {
        const struct kfac_layer *l = &net->layers[i];
        double one = 2.0 * m * l->d_out * (double)(l->d_in + 1);
        flops += one * (i == 0 ? 2 : 3);
    }
    struct bench_objective pass = {net, KFAC_LOSS_BERNOULLI, &b};
    double best = bench_best_seconds(bench_objective_run, &pass, repeats);
    double net_gflops = flops / best * 1e-9, ref = bench_sgemm_gflops(be, 2000, repeats);
    printf("mnist autoencoder forward+backward on %s, batch %d: %.1f ms, %.2f GFLOP/s\n", be->name,
           m, best * 1e3, net_gflops);
    printf("%s sgemm 2000x2000x2000: %.2f GFLOP/s\n", be->name, ref);
    printf("ratio: %.3f (target >= 0.6)\n", net_gflops / ref);
    kfac_floats_free(X);
    kfac_net_free(net);
    return 0;
}
