/*
 * bench_util.h: what the benchmarks share: the MNIST deep autoencoder they time, its
 * inputs, the backend a --device option names, the best-of-N timer every figure comes
 * from, and the reference throughput of that backend's sgemm on a square product,
 * measured in the same run as the figure it is compared with.
 */
#ifndef KFAC_BENCH_UTIL_H
#define KFAC_BENCH_UTIL_H

#include "kfac/backend.h"
#include "kfac/log.h"
#include "kfac/mat.h"
#include "kfac/net.h"
#include "kfac/optim.h"
#include "kfac/status.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* The MNIST deep autoencoder 784-1000-500-250-30-250-500-1000-784 (logistic, linear code
 * layer) with buffers for m cases and the paper's sparse initialisation. */
static inline struct kfac_net *bench_mnist_autoencoder(int m)
{
    static const struct kfac_layer_spec specs[] = {
        {.d_out = 1000, .act = KFAC_ACT_LOGISTIC}, {.d_out = 500, .act = KFAC_ACT_LOGISTIC},
        {.d_out = 250, .act = KFAC_ACT_LOGISTIC},  {.d_out = 30, .act = KFAC_ACT_LINEAR},
        {.d_out = 250, .act = KFAC_ACT_LOGISTIC},  {.d_out = 500, .act = KFAC_ACT_LOGISTIC},
        {.d_out = 1000, .act = KFAC_ACT_LOGISTIC}, {.d_out = 784, .act = KFAC_ACT_LOGISTIC}};
    struct kfac_net *net;
    if (kfac_net_new(784, specs, (int)(sizeof specs / sizeof *specs), &net))
        abort();
    kfac_net_reserve(net, m);
    struct kfac_rng rng;
    kfac_rng_seed(&rng, 1);
    kfac_net_init(net, KFAC_INIT_SPARSE, 15, &rng);
    return net;
}

/* m × 784 inputs like MNIST's: a fifth of the pixels lit, uniformly. */
static inline float *bench_mnist_inputs(int m, struct kfac_rng *rng)
{
    float *X = kfac_floats_new((size_t)m * 784);
    for (size_t i = 0; i < (size_t)m * 784; i++)
        X[i] = kfac_rng_uniform(rng) < 0.2 ? (float)kfac_rng_uniform(rng) : 0.0f;
    return X;
}

/* A leading "--device DEVICE" in argv (train.device's names): the backend it selects, with
 * *argc and *argv moved past it; else the CPU's. Exits with status 2 and the reason when
 * the device cannot be had, and warns (on stderr) when the backend runs far below its speed.
 * First, OpenBLAS's threads as kfac-train sets them (kfac_backend_cpu_prepare()). */
static inline const struct kfac_backend *bench_device(const char *prog, int *argc, char ***argv)
{
    kfac_backend_cpu_prepare(*argv);
    const struct kfac_backend *be = kfac_backend_cpu();
    if (*argc >= 3 && strcmp((*argv)[1], "--device") == 0) {
        if (kfac_backend_select((*argv)[2], "--device", &be)) {
            fprintf(stderr, "%s: %s\n", prog, kfac_last_error());
            exit(2);
        }
        (*argv)[2] = (*argv)[0];
        *argv += 2;
        *argc -= 2;
    }
    /* A ratio measured on kernels far below the machine's is no figure of the machine. */
    const char *why = be->speed_warning ? be->speed_warning() : NULL;
    if (why)
        fprintf(stderr, "%s: warning: %s\n", prog, why);
    return be;
}

/* bench_best_seconds(), with before(ctx) called ahead of each call of run and not timed
 * (e.g. to empty the caches), where before is not NULL. */
static inline double bench_best_seconds_after(void (*before)(void *ctx), void (*run)(void *ctx),
                                              void *ctx, int repeats)
{
    double best = 1e30;
    for (int r = 0; r < repeats + 1; r++) {
        if (before)
            before(ctx);
        double t = kfac_log_clock();
        run(ctx);
        t = kfac_log_clock() - t;
        if (r > 0 && t < best)
            best = t;
    }
    return best;
}

/* The least seconds of one call of run(ctx), of `repeats` calls after one more that is not
 * counted: that one wakes the thread pools and brings the operands into the caches. */
static inline double bench_best_seconds(void (*run)(void *ctx), void *ctx, int repeats)
{
    return bench_best_seconds_after(NULL, run, ctx, repeats);
}

/* One forward and backward pass of net on a batch through kfac_objective(), as training
 * calls it. */
struct bench_objective {
    struct kfac_net *net;
    enum kfac_loss loss;
    const struct kfac_batch *b;
};

static inline void bench_objective_run(void *ctx)
{
    struct bench_objective *o = ctx;
    kfac_objective(o->net, o->loss, 0, o->b, 1);
}

/* C (n × n) = A B through be's sgemm for A, B (n × n). */
struct bench_square {
    const struct kfac_backend *be;
    int n;
    float *A, *B, *C;
};

static inline void bench_square_run(void *ctx)
{
    struct bench_square *q = ctx;
    q->be->sgemm(KFAC_NO_TRANS, KFAC_NO_TRANS, q->n, q->n, q->n, 1.0f, q->A, q->n, q->B, q->n,
                 0.0f, q->C, q->n);
}

/* GFLOP/s of the best of `repeats` square products of size n through be's sgemm (the CPU:
 * cblas_sgemm; CUDA: cublasSgemm with its operands copied there and back each call). */
static inline double bench_sgemm_gflops(const struct kfac_backend *be, int n, int repeats)
{
    size_t nn = (size_t)n * n;
    struct bench_square q = {be, n, kfac_floats_new(nn), kfac_floats_new(nn), kfac_floats_new(nn)};
    for (size_t i = 0; i < nn; i++)
        q.A[i] = (float)(i % 7) * 0.1f, q.B[i] = (float)(i % 5) * 0.1f;
    double best = bench_best_seconds(bench_square_run, &q, repeats);
    kfac_floats_free(q.A);
    kfac_floats_free(q.B);
    kfac_floats_free(q.C);
    return 2.0 * n * n * (double)n / best * 1e-9;
}

#endif
