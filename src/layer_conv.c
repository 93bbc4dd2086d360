/*
 * layer_conv.c: the 2-D convolution as KFC sees it (Grosse & Martens 2016): the input
 * patches under the output positions form ā (one row per case and position, a 1
 * appended for the bias), so forward, backward and forward-mode products are each one
 * sgemm of the backend over the whole batch, plus im2col/col2im to move between maps and
 * patches (on the CPU backend's threads, kfac_parallel_for). A same-size convolution's input
 * gradient skips the patch matrix: one GEMM per tap, shifted onto the map.
 */
#include "kfac/layer.h"
#include "kfac/mat.h"
#include "kfac/parallel.h"

#include <string.h>

/* The taps [lo, hi) of a window of k starting at x0 that fall inside 0..n−1 (the rest
 * are padding); lo = hi when none does. */
static void window_span(int x0, int k, int n, int *lo, int *hi)
{
    *lo = x0 < 0 ? -x0 : 0;
    *hi = x0 + k > n ? n - x0 : k;
    if (*lo > k)
        *lo = k;
    if (*hi < *lo)
        *hi = *lo;
}

/* One im2col or col2im call, as the pool's parts see it: src is read and dst written, one
 * of them the maps (m × ld), the other the patch rows (m·oh·ow × ld). */
struct patches {
    const struct kfac_shape *in;
    int kh, kw, stride, pad;
    const float *src;
    int ld_src;
    float *dst;
    int ld_dst;
};

/* dst (n) = lo zeros, then src's hi − lo floats, then zeros: one tap row of a patch. The
 * runs are a few floats for a thin input (5 for LeNet-5's first layer), where a memcpy
 * and two memset calls per tap cost more than the copying; long runs (a wide layer's
 * 3·64 floats) still go to memcpy. */
static inline void copy_padded(float *restrict dst, const float *restrict src, size_t lo,
                               size_t hi, size_t n)
{
    size_t j = 0;
    for (; j < lo; j++)
        dst[j] = 0.0f;
    if (hi - lo >= 64) {
        memcpy(dst + lo, src, (hi - lo) * sizeof *dst);
        j = hi;
    }
    for (; j < hi; j++)
        dst[j] = src[j - lo];
    for (; j < n; j++)
        dst[j] = 0.0f;
}

/* im2col for the output rows [lo, hi) of the batch, row = case·oh + oy. */
static void im2col_rows(void *ctx, int lo, int hi)
{
    const struct patches *p = ctx;
    const struct kfac_shape *in = p->in;
    int c = in->c, kw = p->kw, oh = kfac_window_out(in->h, p->kh, p->stride, p->pad);
    int ow = kfac_window_out(in->w, kw, p->stride, p->pad);
    size_t n = (size_t)kw * c;
    for (int row = lo; row < hi; row++) {
        int b = row / oh, oy = row % oh;
        const float *xb = p->src + (size_t)b * p->ld_src;
        for (int ox = 0; ox < ow; ox++) {
            float *dst_row = p->dst + ((size_t)row * ow + ox) * p->ld_dst;
            int x0 = ox * p->stride - p->pad, lo_k, hi_k;
            window_span(x0, kw, in->w, &lo_k, &hi_k);
            for (int ky = 0; ky < p->kh; ky++) {
                int iy = oy * p->stride - p->pad + ky;
                float *dst = dst_row + (size_t)ky * n;
                if (iy < 0 || iy >= in->h)
                    copy_padded(dst, xb, 0, 0, n);
                else
                    copy_padded(dst, xb + ((size_t)iy * in->w + x0 + lo_k) * c, (size_t)lo_k * c,
                                (size_t)hi_k * c, n);
            }
        }
    }
}

void kfac_im2col(int m, const struct kfac_shape *in, int kh, int kw, int stride, int pad,
                 const float *x, int ld_x, float *out, int ld_out)
{
    struct patches p = {in, kh, kw, stride, pad, x, ld_x, out, ld_out};
    kfac_parallel_for(m * kfac_window_out(in->h, kh, stride, pad), im2col_rows, &p);
}

/* col2im for the cases [lo, hi): a case's patches overlap on its own map only. */
static void col2im_cases(void *ctx, int lo, int hi)
{
    const struct patches *p = ctx;
    const struct kfac_shape *in = p->in;
    int c = in->c, oh = kfac_window_out(in->h, p->kh, p->stride, p->pad);
    int ow = kfac_window_out(in->w, p->kw, p->stride, p->pad);
    size_t size = (size_t)in->h * in->w * c;
    for (int b = lo; b < hi; b++) {
        float *xb = p->dst + (size_t)b * p->ld_dst;
        memset(xb, 0, size * sizeof *xb);
        for (int oy = 0; oy < oh; oy++)
            for (int ox = 0; ox < ow; ox++) {
                const float *row = p->src + ((size_t)b * oh * ow + (size_t)oy * ow + ox) * p->ld_src;
                for (int ky = 0; ky < p->kh; ky++) {
                    int iy = oy * p->stride - p->pad + ky;
                    if (iy < 0 || iy >= in->h)
                        continue;
                    int x0 = ox * p->stride - p->pad, lo_k, hi_k;
                    window_span(x0, p->kw, in->w, &lo_k, &hi_k);
                    if (hi_k == lo_k)
                        continue;
                    const float *src = row + ((size_t)ky * p->kw + lo_k) * c;
                    float *dst = xb + ((size_t)iy * in->w + x0 + lo_k) * c;
                    for (size_t j = 0; j < (size_t)(hi_k - lo_k) * c; j++)
                        dst[j] += src[j];
                }
            }
    }
}

void kfac_col2im(int m, const struct kfac_shape *in, int kh, int kw, int stride, int pad,
                 const float *cols, int ld_cols, float *dx, int ld_x)
{
    struct patches p = {in, kh, kw, stride, pad, cols, ld_cols, dx, ld_x};
    kfac_parallel_for(m, col2im_cases, &p);
}

/* dst (rows × d_out) = ā Bᵀ for B (d_out × (d_in+1)), formed as its transpose B āᵀ
 * (d_out × rows, in col) and transposed into dst: OpenBLAS runs the wide, short GEMM
 * about 1.4× faster than the tall, narrow one at the widths convolutions have
 * (bench/bench_conv), far more than the copy costs. */
static void patch_product(struct kfac_layer *l, int rows, const float *B, float *dst)
{
    int k = l->d_in + 1;
    l->be->sgemm(KFAC_NO_TRANS, KFAC_TRANS, l->d_out, rows, k, 1.0f, B, k, l->abar, k, 0.0f, l->col,
                 rows);
    l->be->stranspose(l->d_out, rows, l->col, rows, dst, l->d_out);
}

/* ā (m·n_pos × (d_in+1)) = the patches of in; s (m·n_pos × d_out) = ā Wᵀ; out = φ(s). */
static void conv_forward(struct kfac_layer *l, int m)
{
    l->be->im2col(m, &l->in_shape, l->kh, l->kw, l->stride, l->pad, l->in, l->ld_in, l->abar,
                  l->d_in + 1);
    patch_product(l, m * l->n_pos, l->W, l->s);
    l->be->activation_forward(l->act, m, l->out_size, l->s, l->out_size, l->out, l->ld_out);
}

/* Whether the output map has the input's size and positions (stride 1, kh = kw = 2·pad + 1
 * each way): then tap (ky, kx) sends output row r of the batch to input row r + off, with
 * off = (ky − pad)·w + kx − pad, except where the tap falls off the map. */
static int conv_is_same(const struct kfac_layer *l)
{
    return l->stride == 1 && l->kh == 2 * l->pad + 1 && l->kw == 2 * l->pad + 1;
}

/* Copies, for tap (dy, dx) of a same-size convolution, the rows of x (m·h·w × c) that the
 * rows r of the tap's GEMM (r0 ≤ r < r1) whose tap falls off the map would land on
 * (r + off), to buf (restore = 0), or back from buf (restore = 1). */
static void tap_overflow_rows(const struct kfac_layer *l, int m, int dy, int dx, int r0, int r1,
                              float *x, float *buf, int restore)
{
    int h = l->in_shape.h, w = l->in_shape.w, c = l->in_shape.c, off = dy * w + dx;
    int y_lo = dy < 0 ? -dy : 0, y_hi = dy > 0 ? h - dy : h;
    int x_lo = dx < 0 ? (-dx < w ? -dx : w) : 0, x_hi = dx > 0 ? (dx < w ? w - dx : 0) : w;
    size_t run = (size_t)c * sizeof *x;
    for (int b = 0; b < m; b++)
        for (int y = 0; y < h; y++) {
            int r = (b * h + y) * w;
            /* The row's positions whose tap is off the map: all of them, or its two ends. */
            int spans[2][2] = {{0, x_lo}, {x_hi, w}};
            if (y < y_lo || y >= y_hi)
                spans[0][1] = w, spans[1][0] = w;
            for (int i = 0; i < 2; i++) {
                int lo = r + spans[i][0] > r0 ? r + spans[i][0] : r0;
                int hi = r + spans[i][1] < r1 ? r + spans[i][1] : r1;
                if (hi <= lo)
                    continue;
                float *at = x + (size_t)(lo + off) * c;
                size_t size = (size_t)(hi - lo) * run;
                if (restore)
                    memcpy(at, buf, size);
                else
                    memcpy(buf, at, size);
                buf += (size_t)(hi - lo) * c;
            }
        }
}

/* din (m·h·w × c) = g · W[:, :d_in] scattered back onto the map, for a same-size
 * convolution without the patch matrix: one GEMM per tap, g (rows × d_out) times the
 * tap's d_out × c slice of W, added into din shifted by the tap's offset. A row whose tap
 * falls off the map lands on a wrong row; those rows are kept in col before the GEMM and
 * put back after it (each input row takes one output row per tap). */
static void conv_input_grad_same(struct kfac_layer *l, int m, float *din)
{
    int k = l->d_in + 1, c = l->in_shape.c, w = l->in_shape.w, p = l->pad;
    int rows = m * l->n_pos, centre = p * l->kw + p;
    l->be->sgemm(KFAC_NO_TRANS, KFAC_NO_TRANS, rows, c, l->d_out, 1.0f, l->g, l->d_out,
                 l->W + (size_t)centre * c, k, 0.0f, din, c);
    for (int ky = 0; ky < l->kh; ky++)
        for (int kx = 0; kx < l->kw; kx++) {
            int dy = ky - p, dx = kx - p, off = dy * w + dx;
            if (dy == 0 && dx == 0)
                continue;
            int r0 = off < 0 ? -off : 0, r1 = off > 0 ? rows - off : rows;
            if (r1 <= r0)
                continue;
            tap_overflow_rows(l, m, dy, dx, r0, r1, din, l->col, 0);
            l->be->sgemm(KFAC_NO_TRANS, KFAC_NO_TRANS, r1 - r0, c, l->d_out, 1.0f,
                         l->g + (size_t)r0 * l->d_out, l->d_out,
                         l->W + (size_t)(ky * l->kw + kx) * c, k, 1.0f,
                         din + (size_t)(r0 + off) * c, c);
            tap_overflow_rows(l, m, dy, dx, r0, r1, din, l->col, 1);
        }
}

/* dW (d_out × (d_in+1)) = scale · gᵀ (d_out × m·n_pos) · ā + beta · dW; din (m × ld_din) =
 * col2im(g · W[:, :d_in]), the col2im folded into the GEMMs for a same-size convolution. */
static void conv_backward(struct kfac_layer *l, int m, float scale, float *dW, float beta,
                          float *din, int ld_din)
{
    int k = l->d_in + 1, rows = m * l->n_pos;
    if (dW)
        l->be->sgemm(KFAC_TRANS, KFAC_NO_TRANS, l->d_out, k, rows, scale, l->g, l->d_out, l->abar,
                     k, beta, dW, k);
    if (!din)
        return;
    if (conv_is_same(l) && ld_din == l->in_size) {
        conv_input_grad_same(l, m, din);
        return;
    }
    l->be->sgemm(KFAC_NO_TRANS, KFAC_NO_TRANS, rows, l->d_in, l->d_out, 1.0f, l->g, l->d_out, l->W,
                 k, 0.0f, l->col, l->d_in);
    l->be->col2im(m, &l->in_shape, l->kh, l->kw, l->stride, l->pad, l->col, l->d_in, din, ld_din);
}

/* For each tangent t < n_tan, its m·n_pos rows of r_s = ā V[t]ᵀ + patches(its m cases of
 * r_in) · W[:, :d_in]ᵀ: the patches of every tangent in col (once patch_product() is done
 * with it) and one product with W. */
static void conv_jvp(struct kfac_layer *l, int m, int n_tan, const float *const *V,
                     int input_varies)
{
    int k = l->d_in + 1, rows = m * l->n_pos;
    for (int t = 0; t < n_tan; t++)
        patch_product(l, rows, V[t], l->r_s + (size_t)t * rows * l->d_out);
    if (input_varies) {
        l->be->im2col(n_tan * m, &l->in_shape, l->kh, l->kw, l->stride, l->pad, l->r_in,
                      l->ld_in, l->col, l->d_in);
        l->be->sgemm(KFAC_NO_TRANS, KFAC_TRANS, n_tan * rows, l->d_out, l->d_in, 1.0f, l->col,
                     l->d_in, l->W, k, 1.0f, l->r_s, l->d_out);
    }
}

/* ā, one row per case and position; the shared im2col scratch, wide enough for the input
 * patches and for the transposed output. */
static void conv_buffer_sizes(const struct kfac_layer *l, size_t m, size_t *own, size_t *shared,
                              size_t *ints)
{
    size_t rows = m * (size_t)l->n_pos, width = (size_t)(l->d_in > l->d_out ? l->d_in : l->d_out);
    *own = rows * (size_t)(l->d_in + 1);
    *shared = rows * width;
    *ints = 0;
}

static void conv_bind(struct kfac_layer *l, size_t m, float **p, float *shared, int **q)
{
    (void)q;
    size_t rows = m * (size_t)l->n_pos, cols = (size_t)(l->d_in + 1);
    l->abar = *p, *p += rows * cols;
    kfac_set_ones_column(rows, cols, l->abar);
    l->col = shared;
}

const struct kfac_layer_ops kfac_conv_ops = {
    .name = "conv",
    .windowed = 1,
    .buffer_sizes = conv_buffer_sizes,
    .bind = conv_bind,
    .forward = conv_forward,
    .backward = conv_backward,
    .jvp = conv_jvp,
};
