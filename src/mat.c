/*
 * mat.c: allocation and reductions for row-major float matrices (see mat.h).
 */
#include "kfac/mat.h"
#include "kfac/status.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

float *kfac_floats_new(size_t n)
{
    size_t bytes = (n ? n : 1) * sizeof(float);
    bytes = (bytes + 63) / 64 * 64;
    void *p = aligned_alloc(64, bytes);
    if (!p)
        kfac_out_of_memory(bytes);
    return memset(p, 0, bytes);
}

void kfac_floats_free(float *p)
{
    free(p);
}

void kfac_dots(size_t n, const float *x, int k, const float *const *ys, double *out)
{
    /* Eight independent accumulators per product: the compiler vectorises them, and the
     * sums do not wait on one addition's latency per element. */
    double acc[KFAC_DOTS_MAX][8] = {{0}};
    size_t i = 0;
    for (; i + 8 <= n; i += 8)
        for (int d = 0; d < k; d++)
            for (int j = 0; j < 8; j++)
                acc[d][j] += (double)x[i + j] * ys[d][i + j];
    for (int d = 0; d < k; d++) {
        double s = 0;
        for (size_t t = i; t < n; t++)
            s += (double)x[t] * ys[d][t];
        for (int j = 0; j < 8; j++)
            s += acc[d][j];
        out[d] = s;
    }
}

double kfac_dot(size_t n, const float *x, const float *y)
{
    double s;
    kfac_dots(n, x, 1, &y, &s);
    return s;
}

double kfac_sumsq(size_t n, const float *x)
{
    return kfac_dot(n, x, x);
}

int kfac_all_finite(size_t n, const float *x)
{
    /* x·0 is 0 for finite x and NaN for ±inf or NaN: a branch-free test per block, with
     * eight lanes the compiler vectorises. */
    size_t i = 0;
    for (; i + 1024 <= n; i += 1024) {
        float z[8] = {0};
        for (size_t j = i; j < i + 1024; j += 8)
            for (int l = 0; l < 8; l++)
                z[l] += x[j + l] * 0.0f;
        for (int l = 0; l < 8; l++)
            if (z[l] != 0)
                return 0;
    }
    for (; i < n; i++)
        if (!isfinite(x[i]))
            return 0;
    return 1;
}

void kfac_floats_to_doubles(size_t n, const float *x, double *out)
{
    for (size_t i = 0; i < n; i++)
        out[i] = x[i];
}

void kfac_mat_copy(int m, int n, const float *src, int ld_src, float *dst, int ld_dst)
{
    for (int i = 0; i < m; i++)
        memcpy(dst + (size_t)i * ld_dst, src + (size_t)i * ld_src, (size_t)n * sizeof(float));
}
