/*
 * bench_util.h: what the benchmarks share: the reference throughput of cblas_sgemm on a
 * square product, measured in the same run as the figure it is compared with.
 */
#ifndef KFAC_BENCH_UTIL_H
#define KFAC_BENCH_UTIL_H

#include <cblas.h>
#include "kfac/log.h"
#include "kfac/mat.h"
#include "kfac/status.h"
#include <stdlib.h>

/* GFLOP/s of the best of `repeats` cblas_sgemm square products of size n. */
static inline double bench_sgemm_gflops(int n, int repeats)
{
    size_t nn = (size_t)n * n;
    float *A = kfac_floats_new(nn), *B = kfac_floats_new(nn), *C = kfac_floats_new(nn);
    for (size_t i = 0; i < nn; i++)
        A[i] = (float)(i % 7) * 0.1f, B[i] = (float)(i % 5) * 0.1f;
    double best = 1e30;
    for (int r = 0; r < repeats + 1; r++) {
        double t = kfac_log_clock();
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, n, n, n, 1.0f, A, n, B, n, 0.0f, C,
                    n);
        t = kfac_log_clock() - t;
        if (r > 0 && t < best) /* the first call warms up the thread pool */
            best = t;
    }
    kfac_floats_free(A);
    kfac_floats_free(B);
    kfac_floats_free(C);
    return 2.0 * n * n * (double)n / best * 1e-9;
}

#endif
