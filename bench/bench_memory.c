/*
 * bench_memory.c: what chunked passes cost and save. For the MNIST deep autoencoder with
 * K-FAC (the shipped configuration's τ1 = 1/8, τ2 = 1/4) at one batch size, and for each
 * chunk size (train.chunk_size), a child process builds the network with buffers for one
 * chunk, runs iterations 1–3 (which always decompose) untimed, then times ITERS more, and
 * exits; the parent reads the child's peak resident memory from wait4(). Prints, per
 * chunk, the seconds per iteration, their ratio to the unchunked run's (goal for chunk
 * 1000 at batch 10,000: at most 1.05), the peak resident memory, and the layer buffers'
 * share of it, so that the memory that no longer grows with the batch shows.
 *
 *   bench/bench_memory [BATCH [ITERS [CHUNK...]]]
 * defaults: batch 10000, 3 timed iterations, chunks BATCH 2000 1000 250.
 */
#include "bench_util.h"
#include "kfac/optim.h"

#include <stdio.h>
#include <stdlib.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

/* In the child: seconds per iteration of iterations 4 … 3 + iters at batch m in chunks. */
static double iterate(int m, int chunk, int iters)
{
    struct kfac_net *net = bench_mnist_autoencoder(chunk);
    struct kfac_rng rng;
    kfac_rng_seed(&rng, 2);
    float *X = bench_mnist_inputs(m, &rng);
    struct kfac_batch b = {.m = m, .x = X, .t = X};
    struct kfac_optim_opts kf = {
        .type = KFAC_OPTIM_KFAC, .l2 = 1e-5, .stats_fraction = 0.125, .model_fraction = 0.25,
        .stats_decay = 0.95, .lambda_every = 5, .gamma_every = 20, .inverse_every = 20,
        .lambda = 150, .gamma_max = 1, .use_momentum = 1, .start = KFAC_START_WARMUP,
        .lambda_warmup = 0.5, .lambda_warmup_max = 20};
    struct kfac_optim *o;
    if (kfac_optim_new(&kf, net, KFAC_LOSS_BERNOULLI, &rng, &o))
        abort();
    double fig[16], h, t = 0;
    for (long k = 1; k <= 3 + iters; k++) {
        double t0 = kfac_log_clock();
        if (o->ops->step(o, &b, k, &h, fig)) {
            fprintf(stderr, "bench_memory: step %ld failed: %s\n", k, kfac_last_error());
            exit(1);
        }
        if (k > 3)
            t += kfac_log_clock() - t0;
    }
    return t / iters;
}

int main(int argc, char **argv)
{
    int m = argc > 1 ? atoi(argv[1]) : 10000, iters = argc > 2 ? atoi(argv[2]) : 3;
    int defaults[4] = {m, 2000, 1000, 250}, n = argc > 3 ? argc - 3 : 4;
    if (m < 1 || iters < 1) {
        fprintf(stderr, "usage: bench_memory [BATCH [ITERS [CHUNK...]]]\n");
        return 2;
    }
    printf("# K-FAC on the MNIST autoencoder at batch %d in chunks: %d timed iterations after "
           "the first 3, one process per chunk\n",
           m, iters);
    printf("%-7s %9s %7s %11s %11s\n", "chunk", "s_iter", "/whole", "peak_MiB", "buffers_MiB");
    double whole = 0;
    for (int i = 0; i < n; i++) {
        int chunk = argc > 3 ? atoi(argv[3 + i]) : defaults[i];
        if (chunk < 1 || chunk > m) {
            fprintf(stderr, "bench_memory: a chunk is from 1 to the batch\n");
            return 2;
        }
        int fd[2];
        if (pipe(fd))
            return 1;
        fflush(stdout);
        pid_t pid = fork();
        if (pid < 0)
            return 1;
        if (pid == 0) {
            close(fd[0]);
            double s = iterate(m, chunk, iters);
            _exit(write(fd[1], &s, sizeof s) == sizeof s ? 0 : 1);
        }
        close(fd[1]);
        double s = 0;
        int status;
        struct rusage ru;
        if (read(fd[0], &s, sizeof s) != sizeof s || wait4(pid, &status, 0, &ru) != pid ||
            !WIFEXITED(status) || WEXITSTATUS(status) != 0) {
            fprintf(stderr, "bench_memory: the run in chunks of %d failed\n", chunk);
            return 1;
        }
        close(fd[0]);
        if (chunk == m)
            whole = s;
        struct kfac_net *shape = bench_mnist_autoencoder(1);
        double buffers = kfac_net_buffer_bytes(shape, chunk);
        kfac_net_free(shape);
        char ratio[16] = "-"; /* until the unchunked run has been timed */
        if (whole > 0)
            snprintf(ratio, sizeof ratio, "%.3f", s / whole);
        printf("%-7d %9.3f %7s %11.0f %11.0f\n", chunk, s, ratio, ru.ru_maxrss / 1024.0,
               buffers / 1048576.0);
    }
    return 0;
}
