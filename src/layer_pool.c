/*
 * layer_pool.c: max and average pooling over kh × kw windows of each channel, without
 * parameters, and the CPU kernels of the backend's pool operations. Maps are
 * position-major (layer.h); a window's maximum or mean is reduced over its taps one
 * channel at a time, in registers, with the cases split over kfac_parallel_for's threads.
 * Max pooling records where each maximum came from (the first, on ties), for backward and
 * forward mode.
 */
#include "kfac/backend.h"
#include "kfac/layer.h"
#include "kfac/parallel.h"

#include <string.h>

/* A pooling window over in-shaped maps: kh × kw taps, stride, no padding. */
struct pool {
    const struct kfac_shape *in;
    int kh, kw, stride, oh, ow;
};

static struct pool pool_of(const struct kfac_shape *in, int kh, int kw, int stride)
{
    return (struct pool){in,
                         kh,
                         kw,
                         stride,
                         kfac_window_out(in->h, kh, stride, 0),
                         kfac_window_out(in->w, kw, stride, 0)};
}

/* Runs the statements that follow it for each output offset o of a case's map (a
 * position and a channel), with i0 the input offset of that channel at its window's
 * first tap, then FOR_TAPS for the window's input offsets i. Channels run outside the
 * taps so that a window's reduction stays in registers. */
#define FOR_OUTPUTS(p, ...)                                                                        \
    do {                                                                                           \
        int c_ = (p)->in->c, w_ = (p)->in->w, st_ = (p)->stride;                                   \
        for (int oy = 0; oy < (p)->oh; oy++)                                                       \
            for (int ox = 0; ox < (p)->ow; ox++)                                                   \
                for (int ch = 0; ch < c_; ch++) {                                                  \
                    size_t o = ((size_t)oy * (p)->ow + ox) * c_ + ch;                              \
                    int i0 = (oy * st_ * w_ + ox * st_) * c_ + ch;                                 \
                    __VA_ARGS__                                                                    \
                }                                                                                  \
    } while (0)
#define FOR_TAPS(p, i0, ...)                                                                       \
    for (int ky = 0; ky < (p)->kh; ky++)                                                           \
        for (int kx = 0; kx < (p)->kw; kx++) {                                                     \
            int i = (i0) + (ky * (p)->in->w + kx) * (p)->in->c;                                    \
            __VA_ARGS__                                                                            \
        }

/* One reduction over the windows of the cases [lo, hi), as kfac_parallel_for() runs it:
 * x (ld_x per case) in, out (c·oh·ow per case) and, for max pooling, arg out. */
struct pool_job {
    struct pool p;
    const float *x;
    int ld_x;
    float *out;
    int *arg;
};

/* Each window's maximum and where it is: it starts as the first tap and gives way only to
 * a larger value, so ties keep the first. Selects, not branches: which tap wins is data. */
static void window_maxima(void *ctx, int lo, int hi)
{
    const struct pool_job *j = ctx;
    size_t n = (size_t)j->p.in->c * j->p.oh * j->p.ow;
    for (int b = lo; b < hi; b++) {
        const float *x = j->x + (size_t)b * j->ld_x;
        float *s = j->out + (size_t)b * n;
        int *arg = j->arg + (size_t)b * n;
        FOR_OUTPUTS(&j->p, {
            float best = x[i0];
            int at = i0;
            FOR_TAPS(&j->p, i0, {
                int larger = x[i] > best;
                best = larger ? x[i] : best;
                at = larger ? i : at;
            })
            s[o] = best;
            arg[o] = at;
        });
    }
}

/* Each window's mean, summed in the taps' order. */
static void window_means(void *ctx, int lo, int hi)
{
    const struct pool_job *j = ctx;
    size_t n = (size_t)j->p.in->c * j->p.oh * j->p.ow;
    float w = 1.0f / (float)(j->p.kh * j->p.kw);
    for (int b = lo; b < hi; b++) {
        const float *x = j->x + (size_t)b * j->ld_x;
        float *s = j->out + (size_t)b * n;
        FOR_OUTPUTS(&j->p, {
            float sum = 0.0f;
            FOR_TAPS(&j->p, i0, { sum += w * x[i]; })
            s[o] = sum;
        });
    }
}

void kfac_pool_max(int m, const struct kfac_shape *in, int kh, int kw, int stride, const float *x,
                   int ld_x, float *out, int *arg)
{
    struct pool_job j = {pool_of(in, kh, kw, stride), x, ld_x, out, arg};
    kfac_parallel_for(m, window_maxima, &j);
}

void kfac_pool_mean(int m, const struct kfac_shape *in, int kh, int kw, int stride, const float *x,
                    int ld_x, float *out)
{
    struct pool_job j = {pool_of(in, kh, kw, stride), x, ld_x, out, NULL};
    kfac_parallel_for(m, window_means, &j);
}

void kfac_pool_max_backward(int m, const struct kfac_shape *in, int kh, int kw, int stride,
                            const float *g, const int *arg, float *dx, int ld_dx)
{
    struct pool p = pool_of(in, kh, kw, stride);
    size_t n = (size_t)in->c * p.oh * p.ow, in_size = (size_t)in->c * in->h * in->w;
    for (int b = 0; b < m; b++) {
        float *d = dx + (size_t)b * ld_dx;
        const float *gb = g + (size_t)b * n;
        const int *ab = arg + (size_t)b * n;
        memset(d, 0, in_size * sizeof *d);
        for (size_t o = 0; o < n; o++)
            d[ab[o]] += gb[o];
    }
}

void kfac_pool_mean_backward(int m, const struct kfac_shape *in, int kh, int kw, int stride,
                             const float *g, float *dx, int ld_dx)
{
    struct pool p = pool_of(in, kh, kw, stride);
    size_t n = (size_t)in->c * p.oh * p.ow, in_size = (size_t)in->c * in->h * in->w;
    float w = 1.0f / (float)(kh * kw);
    for (int b = 0; b < m; b++) {
        float *d = dx + (size_t)b * ld_dx;
        const float *gb = g + (size_t)b * n;
        memset(d, 0, in_size * sizeof *d);
        FOR_OUTPUTS(&p, {FOR_TAPS(&p, i0, { d[i] += w * gb[o]; })});
    }
}

void kfac_pool_gather(int m, int n, const float *x, int ld_x, const int *arg, float *out)
{
    for (int b = 0; b < m; b++) {
        const float *xb = x + (size_t)b * ld_x;
        const int *ab = arg + (size_t)b * n;
        float *ob = out + (size_t)b * n;
        for (int o = 0; o < n; o++)
            ob[o] = xb[ab[o]];
    }
}

/* The layers, through the network's backend. */

static void maxpool_forward(struct kfac_layer *l, int m)
{
    l->be->pool_max(m, &l->in_shape, l->kh, l->kw, l->stride, l->in, l->ld_in, l->s, l->argmax);
    l->be->activation_forward(l->act, m, l->out_size, l->s, l->out_size, l->out, l->ld_out);
}

/* din (m × in_size) = g routed to each window's maximum. */
static void maxpool_backward(struct kfac_layer *l, int m, float scale, float *dW, float beta,
                             float *din, int ld_din)
{
    (void)scale, (void)dW, (void)beta;
    if (din)
        l->be->pool_max_backward(m, &l->in_shape, l->kh, l->kw, l->stride, l->g, l->argmax, din,
                                 ld_din);
}

/* r_s = r_in at each window's maximum, tangent by tangent (n_tan blocks of m rows, the
 * maxima those of the m cases); zero when the input does not vary. */
static void maxpool_jvp(struct kfac_layer *l, int m, int n_tan, const float *const *V,
                        int input_varies)
{
    (void)V;
    for (int t = 0; input_varies && t < n_tan; t++)
        l->be->pool_gather(m, l->out_size, l->r_in + (size_t)t * m * l->ld_in, l->ld_in,
                           l->argmax, l->r_s + (size_t)t * m * l->out_size);
    if (!input_varies)
        l->be->sfill((size_t)n_tan * m * l->out_size, 0.0f, l->r_s);
}

static void avgpool_forward(struct kfac_layer *l, int m)
{
    l->be->pool_mean(m, &l->in_shape, l->kh, l->kw, l->stride, l->in, l->ld_in, l->s);
    l->be->activation_forward(l->act, m, l->out_size, l->s, l->out_size, l->out, l->ld_out);
}

/* din (m × in_size) = g spread evenly over each window. */
static void avgpool_backward(struct kfac_layer *l, int m, float scale, float *dW, float beta,
                             float *din, int ld_din)
{
    (void)scale, (void)dW, (void)beta;
    if (din)
        l->be->pool_mean_backward(m, &l->in_shape, l->kh, l->kw, l->stride, l->g, din, ld_din);
}

/* r_s = the window means of r_in, every tangent's rows in one call. */
static void avgpool_jvp(struct kfac_layer *l, int m, int n_tan, const float *const *V,
                        int input_varies)
{
    (void)V;
    if (input_varies)
        l->be->pool_mean(n_tan * m, &l->in_shape, l->kh, l->kw, l->stride, l->r_in, l->ld_in,
                         l->r_s);
    else
        l->be->sfill((size_t)n_tan * m * l->out_size, 0.0f, l->r_s);
}

/* Where each maximum came from: one int per output value. */
static void maxpool_buffer_sizes(const struct kfac_layer *l, size_t m, size_t *own,
                                 size_t *shared, size_t *ints)
{
    *own = 0, *shared = 0;
    *ints = m * (size_t)l->out_size;
}

static void maxpool_bind(struct kfac_layer *l, size_t m, float **p, float *shared, int **q)
{
    (void)p, (void)shared;
    l->argmax = *q, *q += m * (size_t)l->out_size;
}

const struct kfac_layer_ops kfac_maxpool_ops = {
    .name = "maxpool",
    .windowed = 1,
    .buffer_sizes = maxpool_buffer_sizes,
    .bind = maxpool_bind,
    .forward = maxpool_forward,
    .backward = maxpool_backward,
    .jvp = maxpool_jvp,
};

const struct kfac_layer_ops kfac_avgpool_ops = {
    .name = "avgpool",
    .windowed = 1,
    .forward = avgpool_forward,
    .backward = avgpool_backward,
    .jvp = avgpool_jvp,
};
