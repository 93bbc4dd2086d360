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

double kfac_dot(size_t n, const float *x, const float *y)
{
    double s = 0;
    for (size_t i = 0; i < n; i++)
        s += (double)x[i] * y[i];
    return s;
}

double kfac_sumsq(size_t n, const float *x)
{
    return kfac_dot(n, x, x);
}

int kfac_all_finite(size_t n, const float *x)
{
    for (size_t i = 0; i < n; i++)
        if (!isfinite(x[i]))
            return 0;
    return 1;
}

void kfac_mat_copy(int m, int n, const float *src, int ld_src, float *dst, int ld_dst)
{
    for (int i = 0; i < m; i++)
        memcpy(dst + (size_t)i * ld_dst, src + (size_t)i * ld_src, (size_t)n * sizeof(float));
}
