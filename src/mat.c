/*
 * mat.c: allocation and reductions for row-major float matrices (see mat.h).
 */
#include "kfac/mat.h"
#include "kfac/status.h"
#include "vecmath.h"

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

/* kfac_dots() for k products, k a constant where it is inlined: eight independent
 * accumulators per product, which the compiler vectorises and keeps in registers, so the
 * sums do not wait on one addition's latency per element. */
static inline __attribute__((always_inline)) void dots_of(size_t n, const float *x, int k,
                                                          const float *const *ys, double *out)
{
    double acc[KFAC_DOTS_MAX][8] = {{0}};
    const float *y[KFAC_DOTS_MAX];
    for (int d = 0; d < k; d++)
        y[d] = ys[d];
    size_t i = 0;
    for (; i + 8 <= n; i += 8)
        for (int d = 0; d < k; d++)
            for (int j = 0; j < 8; j++)
                acc[d][j] += (double)x[i + j] * y[d][i + j];
    for (int d = 0; d < k; d++) {
        double s = 0;
        for (size_t t = i; t < n; t++)
            s += (double)x[t] * y[d][t];
        for (int j = 0; j < 8; j++)
            s += acc[d][j];
        out[d] = s;
    }
}

_Static_assert(KFAC_DOTS_MAX == 4, "kfac_dots() has a case for each k");

KFAC_VECTOR_KERNEL
void kfac_dots(size_t n, const float *x, int k, const float *const *ys, double *out)
{
    switch (k) {
    case 1: dots_of(n, x, 1, ys, out); break;
    case 2: dots_of(n, x, 2, ys, out); break;
    case 3: dots_of(n, x, 3, ys, out); break;
    case 4: dots_of(n, x, 4, ys, out); break;
    default: break; /* k outside 1 … KFAC_DOTS_MAX: mat.h */
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

KFAC_VECTOR_KERNEL
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
