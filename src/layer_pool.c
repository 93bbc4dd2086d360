/*
 * layer_pool.c: max and average pooling over kh × kw windows of each channel, without
 * parameters. Maps are position-major (layer.h); a window's maximum or mean is reduced
 * over its taps one channel at a time, in registers, with the cases split over
 * kfac_parallel_for's threads. Max pooling records where each maximum came from (the
 * first, on ties), for backward and forward mode.
 */
#include "kfac/layer.h"
#include "kfac/parallel.h"

#include <string.h>

/* Runs the statements that follow it for each output offset o of a case's map (a
 * position and a channel), with i0 the input offset of that channel at its window's
 * first tap, then FOR_TAPS for the window's input offsets i. Channels run outside the
 * taps so that a window's reduction stays in registers. */
#define FOR_OUTPUTS(l, ...)                                                                     \
    do {                                                                                        \
        int c_ = (l)->in_shape.c, w_ = (l)->in_shape.w, st_ = (l)->stride;                      \
        for (int oy = 0; oy < (l)->out_shape.h; oy++)                                           \
            for (int ox = 0; ox < (l)->out_shape.w; ox++)                                       \
                for (int ch = 0; ch < c_; ch++) {                                               \
                    size_t o = ((size_t)oy * (l)->out_shape.w + ox) * c_ + ch;                  \
                    int i0 = (oy * st_ * w_ + ox * st_) * c_ + ch;                              \
                    __VA_ARGS__                                                                 \
                }                                                                               \
    } while (0)
#define FOR_TAPS(l, i0, ...)                                                                    \
    for (int ky = 0; ky < (l)->kh; ky++)                                                        \
        for (int kx = 0; kx < (l)->kw; kx++) {                                                  \
            int i = (i0) + (ky * (l)->in_shape.w + kx) * (l)->in_shape.c;                       \
            __VA_ARGS__                                                                         \
        }

/* One reduction over the windows of the cases [lo, hi), as kfac_parallel_for() runs it:
 * x (ld_x per case) in, out (out_size per case) and, for max pooling, arg out. */
struct pool_job {
    const struct kfac_layer *l;
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
    size_t n = (size_t)j->l->out_size;
    for (int b = lo; b < hi; b++) {
        const float *x = j->x + (size_t)b * j->ld_x;
        float *s = j->out + (size_t)b * n;
        int *arg = j->arg + (size_t)b * n;
        FOR_OUTPUTS(j->l, {
            float best = x[i0];
            int at = i0;
            FOR_TAPS(j->l, i0, {
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
    size_t n = (size_t)j->l->out_size;
    float w = 1.0f / (float)(j->l->kh * j->l->kw);
    for (int b = lo; b < hi; b++) {
        const float *x = j->x + (size_t)b * j->ld_x;
        float *s = j->out + (size_t)b * n;
        FOR_OUTPUTS(j->l, {
            float sum = 0.0f;
            FOR_TAPS(j->l, i0, { sum += w * x[i]; })
            s[o] = sum;
        });
    }
}

static void maxpool_forward(struct kfac_layer *l, int m)
{
    struct pool_job j = {l, l->in, l->ld_in, l->s, l->argmax};
    kfac_parallel_for(m, window_maxima, &j);
    kfac_activation_forward(l->act, m, l->out_size, l->s, l->out_size, l->out, l->ld_out);
}

/* din (m × in_size) = g routed to each window's maximum. */
static void maxpool_backward(struct kfac_layer *l, int m, float scale, float *dW, float *din,
                             int ld_din)
{
    (void)scale, (void)dW;
    if (!din)
        return;
    size_t n = (size_t)l->out_size;
    for (int b = 0; b < m; b++) {
        float *d = din + (size_t)b * ld_din;
        const float *g = l->g + (size_t)b * n;
        const int *arg = l->argmax + (size_t)b * n;
        memset(d, 0, (size_t)l->in_size * sizeof *d);
        for (size_t o = 0; o < n; o++)
            d[arg[o]] += g[o];
    }
}

/* r_s = r_in at each window's maximum (zero when the input does not vary). */
static void maxpool_jvp(struct kfac_layer *l, int m, const float *V, int input_varies)
{
    (void)V;
    size_t n = (size_t)l->out_size;
    for (int b = 0; b < m; b++) {
        const float *r = l->r_in + (size_t)b * l->ld_in;
        const int *arg = l->argmax + (size_t)b * n;
        float *rs = l->r_s + (size_t)b * n;
        for (size_t o = 0; o < n; o++)
            rs[o] = input_varies ? r[arg[o]] : 0.0f;
    }
}

/* out (m × out_size) = the window means of x (m × ld_x). */
static void pool_means(const struct kfac_layer *l, int m, const float *x, int ld_x, float *out)
{
    struct pool_job j = {l, x, ld_x, out, NULL};
    kfac_parallel_for(m, window_means, &j);
}

static void avgpool_forward(struct kfac_layer *l, int m)
{
    pool_means(l, m, l->in, l->ld_in, l->s);
    kfac_activation_forward(l->act, m, l->out_size, l->s, l->out_size, l->out, l->ld_out);
}

/* din (m × in_size) = g spread evenly over each window. */
static void avgpool_backward(struct kfac_layer *l, int m, float scale, float *dW, float *din,
                             int ld_din)
{
    (void)scale, (void)dW;
    if (!din)
        return;
    size_t n = (size_t)l->out_size;
    float w = 1.0f / (float)(l->kh * l->kw);
    for (int b = 0; b < m; b++) {
        float *d = din + (size_t)b * ld_din;
        const float *g = l->g + (size_t)b * n;
        memset(d, 0, (size_t)l->in_size * sizeof *d);
        FOR_OUTPUTS(l, { FOR_TAPS(l, i0, { d[i] += w * g[o]; }) });
    }
}

static void avgpool_jvp(struct kfac_layer *l, int m, const float *V, int input_varies)
{
    (void)V;
    if (input_varies)
        pool_means(l, m, l->r_in, l->ld_in, l->r_s);
    else
        memset(l->r_s, 0, (size_t)m * l->out_size * sizeof *l->r_s);
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
