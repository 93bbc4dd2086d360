/*
 * bench_util.h: what the benchmarks share: the reference throughput of cblas_sgemm (or
 * cblas_dgemm) on a square product, measured in the same run as the figure it is compared
 * with.
 */
#ifndef KFAC_BENCH_UTIL_H
#define KFAC_BENCH_UTIL_H

#include <cblas.h>
#include "kfac/log.h"
#include "kfac/mat.h"
#include "kfac/status.h"
#include <stdlib.h>

/* GFLOP/s of the best of `repeats` square products of size n: cblas_dgemm when dbl, else
 * cblas_sgemm. */
static inline double bench_gemm_gflops(int n, int repeats, int dbl)
{
    size_t nn = (size_t)n * n, size = dbl ? sizeof(double) : sizeof(float);
    void *A = kfac_xcalloc(nn, size), *B = kfac_xcalloc(nn, size), *C = kfac_xcalloc(nn, size);
    for (size_t i = 0; i < nn; i++) {
        if (dbl)
            ((double *)A)[i] = (double)(i % 7) * 0.1, ((double *)B)[i] = (double)(i % 5) * 0.1;
        else
            ((float *)A)[i] = (float)(i % 7) * 0.1f, ((float *)B)[i] = (float)(i % 5) * 0.1f;
    }
    double best = 1e30;
    for (int r = 0; r < repeats + 1; r++) {
        double t = kfac_log_clock();
        if (dbl)
            cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, n, n, n, 1.0, A, n, B, n, 0.0,
                        C, n);
        else
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, n, n, n, 1.0f, A, n, B, n,
                        0.0f, C, n);
        t = kfac_log_clock() - t;
        if (r > 0 && t < best) /* the first call warms up the thread pool */
            best = t;
    }
    free(A);
    free(B);
    free(C);
    return 2.0 * n * n * (double)n / best * 1e-9;
}

static inline double bench_sgemm_gflops(int n, int repeats)
{
    return bench_gemm_gflops(n, repeats, 0);
}

#endif
