/*
 * check_layer.c: the dense layer against naive loops (forward, backward, J·v), the
 * convolution and its input gradient against direct sums, im2col against its adjoint,
 * kfac_parallel_for's ranges and parts, pooling against naive loops, the activations
 * against their definitions and finite differences, and initialisation. (Gradients and J·v
 * of conv networks: check_net.c.)
 */
#include "kfac/layer.h"
#include "kfac/mat.h"
#include "kfac/parallel.h"
#include "kfac/net.h"
#include "kfac/status.h"
#include "testutil.h"

#include <math.h>

static const enum kfac_activation hidden_acts[] = {KFAC_ACT_LINEAR, KFAC_ACT_LOGISTIC,
                                                   KFAC_ACT_TANH, KFAC_ACT_RELU};

/* A one-layer network gives the layer its buffers. */
static struct kfac_net *one_layer(int d_in, int d_out, enum kfac_activation act, int m,
                                  struct kfac_rng *r)
{
    struct kfac_layer_spec spec = {.d_out = d_out, .act = act};
    struct kfac_net *net;
    ck_assert_int_eq(kfac_net_new(d_in, &spec, 1, &net), 0);
    kfac_net_reserve(net, m);
    fill_uniform(net->params, net->n_params, r, -1, 1);
    return net;
}

START_TEST(dense_forward_matches_loops)
{
    enum kfac_activation act = hidden_acts[_i];
    struct kfac_rng r;
    kfac_rng_seed(&r, 10 + (uint64_t)_i);
    int m = 5, din = 4, dout = 3;
    struct kfac_net *net = one_layer(din, dout, act, m, &r);
    float X[20];
    fill_uniform(X, 20, &r, -2, 2);
    kfac_net_forward(net, m, X);
    const struct kfac_layer *l = &net->layers[0];
    for (int c = 0; c < m; c++)
        for (int o = 0; o < dout; o++) {
            double s = l->W[o * (din + 1) + din];
            for (int j = 0; j < din; j++)
                s += (double)l->W[o * (din + 1) + j] * X[c * din + j];
            ck_assert_close(l->s[c * dout + o], s, 1e-5);
            ck_assert_close(kfac_net_output(net)[c * dout + o], test_phi(act, s), 1e-5);
        }
    kfac_net_free(net);
}
END_TEST

START_TEST(dense_backward_and_jvp_match_loops)
{
    struct kfac_rng r;
    kfac_rng_seed(&r, 11);
    int m = 6, din = 5, dout = 4, k = din + 1;
    struct kfac_net *net = one_layer(din, dout, KFAC_ACT_TANH, m, &r);
    struct kfac_layer *l = &net->layers[0];
    float X[30], din_buf[30], V[24], Rin[36];
    fill_uniform(X, 30, &r, -1, 1);
    fill_uniform(V, 24, &r, -1, 1);
    kfac_net_forward(net, m, X);
    fill_uniform(l->g, (size_t)m * dout, &r, -1, 1);
    l->ops->backward(l, m, 0.5f, l->dW, 0.0f, din_buf, din);
    for (int o = 0; o < dout; o++)
        for (int j = 0; j < k; j++) {
            double want = 0;
            for (int c = 0; c < m; c++)
                want += 0.5 * l->g[c * dout + o] * (j < din ? X[c * din + j] : 1.0);
            ck_assert_close(l->dW[o * k + j], want, 1e-5);
        }
    for (int c = 0; c < m; c++)
        for (int j = 0; j < din; j++) {
            double want = 0;
            for (int o = 0; o < dout; o++)
                want += (double)l->g[c * dout + o] * l->W[o * k + j];
            ck_assert_close(din_buf[c * din + j], want, 1e-5);
        }
    /* J·v with a varying input: r_s = r_in Wᵀ + ā Vᵀ. */
    fill_uniform(Rin, 36, &r, -1, 1);
    for (int c = 0; c < m; c++) {
        Rin[c * k + din] = 0;
        memcpy(l->r_in + c * k, Rin + c * k, (size_t)k * sizeof(float));
    }
    const float *Vs[1] = {V};
    l->ops->jvp(l, m, 1, Vs, 1);
    for (int c = 0; c < m; c++)
        for (int o = 0; o < dout; o++) {
            double want = 0;
            for (int j = 0; j < k; j++)
                want += (double)Rin[c * k + j] * l->W[o * k + j] +
                        (double)(j < din ? X[c * din + j] : 1.0) * V[o * k + j];
            ck_assert_close(l->r_s[c * dout + o], want, 1e-5);
        }
    kfac_net_free(net);
}
END_TEST

START_TEST(activation_derivative_by_finite_differences)
{
    enum kfac_activation act = hidden_acts[_i];
    float s[8] = {-3, -1, -0.2f, 0.3f, 0.7f, 1.5f, 2.5f, -0.6f}, out[8], x[8], y[8];
    kfac_activation_forward(act, 1, 8, s, 8, out, 8);
    for (int j = 0; j < 8; j++)
        x[j] = 1.0f;
    kfac_activation_derivative_mul(act, 1, 8, out, 8, x, 8, y, 8);
    for (int j = 0; j < 8; j++) {
        double h = 1e-4, fd = (test_phi(act, s[j] + h) - test_phi(act, s[j] - h)) / (2 * h);
        ck_assert_close(y[j], fd, 1e-4);
    }
}
END_TEST

START_TEST(softmax_is_stable_and_normalised)
{
    float s[6] = {1000, 999, -1000, 0, 1, 2}, p[6];
    kfac_activation_forward(KFAC_ACT_SOFTMAX, 2, 3, s, 3, p, 3);
    for (int c = 0; c < 2; c++) {
        double sum = 0;
        for (int j = 0; j < 3; j++) {
            ck_assert(isfinite(p[c * 3 + j]));
            sum += p[c * 3 + j];
        }
        ck_assert_close(sum, 1.0, 1e-6);
    }
    ck_assert_close(p[0], 1 / (1 + exp(-1.0)), 1e-6);
    ck_assert_close(p[5], exp(2.0) / (1 + exp(1.0) + exp(2.0)), 1e-6);
}
END_TEST

START_TEST(logistic_saturates_without_overflow)
{
    float s[6] = {-1000, -100, -20, 20, 100, 1000}, out[6];
    kfac_activation_forward(KFAC_ACT_LOGISTIC, 1, 6, s, 6, out, 6);
    ck_assert_float_eq(out[0], 0.0f);
    ck_assert_float_eq(out[1], 0.0f);
    double tail = 1 / (1 + exp(20.0)); /* relative accuracy far out in the tail */
    ck_assert_double_eq_tol(out[2], tail, 1e-6 * tail);
    ck_assert_float_eq(out[3], 1.0f);
    ck_assert_float_eq(out[5], 1.0f);
    for (int j = 0; j < 6; j++)
        ck_assert(isfinite(out[j]));
}
END_TEST

START_TEST(activation_names_round_trip)
{
    enum kfac_activation a;
    for (int i = KFAC_ACT_LINEAR; i <= KFAC_ACT_SOFTMAX; i++) {
        ck_assert_int_eq(kfac_activation_parse(kfac_activation_name(i), &a), 0);
        ck_assert_int_eq(a, i);
    }
    ck_assert_int_eq(kfac_activation_parse("sigmoid", &a), KFAC_EINVAL);
}
END_TEST

START_TEST(sparse_init)
{
    struct kfac_rng r;
    kfac_rng_seed(&r, 5);
    int rows = 200, fan_in = 100, cols = fan_in + 1;
    float *W = kfac_floats_new((size_t)rows * cols);
    double sq = 0;
    kfac_init_weights(W, rows, fan_in, rows, KFAC_INIT_SPARSE, 15, KFAC_ACT_LOGISTIC, &r);
    for (int i = 0; i < rows; i++) {
        int nz = 0;
        for (int j = 0; j < fan_in; j++) {
            nz += W[i * cols + j] != 0;
            sq += (double)W[i * cols + j] * W[i * cols + j];
        }
        ck_assert_int_eq(nz, 15);
        ck_assert_float_eq(W[i * cols + fan_in], 0); /* bias */
    }
    ck_assert_double_eq_tol(sq / (rows * 15), 1.0, 0.1);
    kfac_init_weights(W, rows, fan_in, rows, KFAC_INIT_SPARSE, 15, KFAC_ACT_TANH, &r);
    sq = 0;
    for (int i = 0; i < rows * cols; i++)
        sq += (double)W[i] * W[i];
    ck_assert_double_eq_tol(sq / (rows * 15), 0.25, 0.03); /* halved weights */
    /* Fewer inputs than connections: every input is used. */
    kfac_init_weights(W, 3, 4, 3, KFAC_INIT_SPARSE, 15, KFAC_ACT_LOGISTIC, &r);
    for (int i = 0; i < 3; i++)
        for (int j = 0; j < 4; j++)
            ck_assert_float_ne(W[i * 5 + j], 0);
    kfac_floats_free(W);
}
END_TEST

START_TEST(glorot_and_he_init)
{
    struct kfac_rng r;
    kfac_rng_seed(&r, 6);
    int rows = 300, fan_in = 200, cols = fan_in + 1;
    float *W = kfac_floats_new((size_t)rows * cols);
    kfac_init_weights(W, rows, fan_in, rows, KFAC_INIT_GLOROT, 15, KFAC_ACT_TANH, &r);
    double bound = sqrt(6.0 / (fan_in + rows)), sq = 0;
    for (int i = 0; i < rows; i++) {
        for (int j = 0; j < fan_in; j++) {
            ck_assert(fabs(W[i * cols + j]) <= bound);
            sq += (double)W[i * cols + j] * W[i * cols + j];
        }
        ck_assert_float_eq(W[i * cols + fan_in], 0);
    }
    ck_assert_double_eq_tol(sq / (rows * fan_in), bound * bound / 3, 0.05 * bound * bound / 3);
    kfac_init_weights(W, rows, fan_in, rows, KFAC_INIT_HE, 15, KFAC_ACT_RELU, &r);
    sq = 0;
    for (int i = 0; i < rows; i++)
        for (int j = 0; j < fan_in; j++)
            sq += (double)W[i * cols + j] * W[i * cols + j];
    ck_assert_double_eq_tol(sq / (rows * fan_in), 2.0 / fan_in, 0.05 * 2.0 / fan_in);
    kfac_floats_free(W);
}
END_TEST

/* The forward pass on `threads` threads, so that kfac_parallel_for() splits im2col's image
 * rows and pooling's cases into uneven parts (the suites otherwise run on one). */
static void forward_on_threads(struct kfac_net *net, int m, const float *X, int threads)
{
    int was = net->be->threads();
    net->be->set_threads(threads);
    kfac_net_forward(net, m, X);
    net->be->set_threads(was);
}

/* x[b][c][y][x] of m cases of a C×H×W input given channel-major, 0 outside the map. */
static double pixel(const float *X, int C, int H, int W, int b, int c, int y, int x)
{
    if (y < 0 || y >= H || x < 0 || x >= W)
        return 0;
    return X[(((size_t)b * C + c) * H + y) * W + x];
}

/* The convolution's s against a direct convolution of the channel-major input, for
 * strides, padding and rectangular windows, and more outputs than patch entries (the
 * forward GEMM's transpose then fills more of the shared scratch than im2col does); W's
 * columns are (ky, kx, channel), bias last. */
START_TEST(conv_forward_matches_direct_convolution)
{
    static const char *specs[] = {"3x6x5-conv(4,3x2,stride=2,pad=1):tanh-flatten-1:linear",
                                  "2x5x5-conv(3,3):relu-flatten-1:linear",
                                  "1x7x6-conv(2,4x3,stride=3,pad=2):logistic-flatten-1:linear",
                                  "1x5x4-conv(7,2x1):relu-flatten-1:linear"};
    struct kfac_rng r;
    kfac_rng_seed(&r, 20 + (uint64_t)_i);
    int m = 3;
    struct kfac_net *net = spec_net(specs[_i], m, &r);
    const struct kfac_layer *l = &net->layers[0];
    int C = l->in_shape.c, H = l->in_shape.h, Wd = l->in_shape.w, O = l->d_out;
    int oh = l->out_shape.h, ow = l->out_shape.w, k = l->d_in + 1;
    float *X = kfac_floats_new((size_t)m * net->d_in);
    fill_uniform(X, (size_t)m * net->d_in, &r, -2, 2);
    forward_on_threads(net, m, X, 3);
    ck_assert_int_eq(l->n_pos, oh * ow);
    for (int b = 0; b < m; b++)
        for (int y = 0; y < oh; y++)
            for (int x = 0; x < ow; x++)
                for (int o = 0; o < O; o++) {
                    double s = l->W[o * k + k - 1];
                    for (int ky = 0; ky < l->kh; ky++)
                        for (int kx = 0; kx < l->kw; kx++)
                            for (int c = 0; c < C; c++)
                                s += l->W[o * k + (ky * l->kw + kx) * C + c] *
                                     pixel(X, C, H, Wd, b, c, y * l->stride - l->pad + ky,
                                           x * l->stride - l->pad + kx);
                    size_t at = (size_t)b * l->out_size + ((size_t)y * ow + x) * O + o;
                    ck_assert_close(l->s[at], s, 1e-5);
                    ck_assert_close(l->out[(size_t)b * l->ld_out + ((size_t)y * ow + x) * O + o],
                                    l->act == KFAC_ACT_RELU ? fmax(s, 0)
                                    : l->act == KFAC_ACT_TANH ? tanh(s)
                                                              : 1 / (1 + exp(-s)),
                                    1e-5);
                }
    kfac_floats_free(X);
    kfac_net_free(net);
}
END_TEST

/* The convolution's input gradient against the direct sum din[b, iy, ix, c] = Σ g[b, oy,
 * ox, o] W[o, (ky, kx, c)] over the taps that reach (iy, ix): same-size convolutions (the
 * per-tap GEMMs, with maps smaller than the window and several cases, whose rows a shifted
 * tap could otherwise reach) and a strided one (col2im). din starts as NaN: every element
 * must be written. */
START_TEST(conv_input_gradient_matches_direct_sum)
{
    static const char *specs[] = {"3x6x5-conv(4,3,pad=1):linear-flatten-1:linear",
                                  "2x5x7-conv(3,5,pad=2):linear-flatten-1:linear",
                                  "2x1x3-conv(2,3,pad=1):linear-flatten-1:linear",
                                  "1x2x1-conv(2,5,pad=2):linear-flatten-1:linear",
                                  "3x6x5-conv(4,3x2,stride=2,pad=1):linear-flatten-1:linear"};
    struct kfac_rng r;
    kfac_rng_seed(&r, 40 + (uint64_t)_i);
    int m = 3;
    struct kfac_net *net = spec_net(specs[_i], m, &r);
    struct kfac_layer *l = &net->layers[0];
    int C = l->in_shape.c, H = l->in_shape.h, Wd = l->in_shape.w, O = l->d_out;
    int oh = l->out_shape.h, ow = l->out_shape.w, k = l->d_in + 1;
    float *X = kfac_floats_new((size_t)m * net->d_in), *din = kfac_floats_new((size_t)m * l->in_size);
    fill_uniform(X, (size_t)m * net->d_in, &r, -1, 1);
    kfac_net_forward(net, m, X);
    fill_uniform(l->g, (size_t)m * l->out_size, &r, -1, 1);
    for (size_t i = 0; i < (size_t)m * l->in_size; i++)
        din[i] = NAN;
    l->ops->backward(l, m, 1.0f, NULL, 0.0f, din, l->in_size);
    for (int b = 0; b < m; b++)
        for (int iy = 0; iy < H; iy++)
            for (int ix = 0; ix < Wd; ix++)
                for (int c = 0; c < C; c++) {
                    double want = 0;
                    for (int oy = 0; oy < oh; oy++)
                        for (int ox = 0; ox < ow; ox++) {
                            int ky = iy - oy * l->stride + l->pad, kx = ix - ox * l->stride + l->pad;
                            if (ky < 0 || ky >= l->kh || kx < 0 || kx >= l->kw)
                                continue;
                            for (int o = 0; o < O; o++)
                                want += (double)l->g[(size_t)b * l->out_size + (oy * ow + ox) * O + o] *
                                        l->W[o * k + (ky * l->kw + kx) * C + c];
                        }
                    ck_assert_close(din[(size_t)b * l->in_size + ((size_t)iy * Wd + ix) * C + c],
                                    want, 1e-5);
                }
    kfac_floats_free(X);
    kfac_floats_free(din);
    kfac_net_free(net);
}
END_TEST

/* col2im is the adjoint of im2col: ⟨im2col(x), Y⟩ = ⟨x, col2im(Y)⟩. */
START_TEST(col2im_is_the_adjoint_of_im2col)
{
    struct kfac_rng r;
    kfac_rng_seed(&r, 23);
    struct kfac_shape in = {3, 7, 6};
    int m = 2, kh = 3, kw = 4, stride = 2, pad = 2;
    int oh = kfac_window_out(in.h, kh, stride, pad), ow = kfac_window_out(in.w, kw, stride, pad);
    int n = in.c * in.h * in.w, d = in.c * kh * kw, ld = d + 1, rows = m * oh * ow;
    float *x = kfac_floats_new((size_t)m * n), *P = kfac_floats_new((size_t)rows * ld),
          *Y = kfac_floats_new((size_t)rows * ld), *dx = kfac_floats_new((size_t)m * n);
    fill_uniform(x, (size_t)m * n, &r, -1, 1);
    fill_uniform(Y, (size_t)rows * ld, &r, -1, 1);
    kfac_im2col(m, &in, kh, kw, stride, pad, x, n, P, ld);
    kfac_col2im(m, &in, kh, kw, stride, pad, Y, ld, dx, n);
    double lhs = 0, rhs = 0;
    for (int i = 0; i < rows; i++)
        for (int j = 0; j < d; j++)
            lhs += (double)P[i * ld + j] * Y[i * ld + j];
    for (int i = 0; i < m * n; i++)
        rhs += (double)x[i] * dx[i];
    ck_assert_close(lhs, rhs, 1e-5);
    kfac_floats_free(x);
    kfac_floats_free(P);
    kfac_floats_free(Y);
    kfac_floats_free(dx);
}
END_TEST

/* kfac_parallel_for calls its function once on each element of [0, n), in parts that tile
 * the range, for ranges shorter and longer than the number of threads. */
static void count_range(void *ctx, int lo, int hi)
{
    int *count = ctx;
    ck_assert_int_lt(lo, hi);
    for (int i = lo; i < hi; i++)
        count[i]++;
}

START_TEST(parallel_for_covers_each_index_once)
{
    const struct kfac_backend *be = kfac_backend_cpu(); /* the pool serves its kernels */
    int threads = be->threads();
    static const int sizes[] = {0, 1, 2, 3, 7, 1000};
    int count[1000];
    for (int t = 1; t <= 4; t++) {
        be->set_threads(t);
        for (size_t s = 0; s < sizeof sizes / sizeof *sizes; s++) {
            memset(count, 0, sizeof count);
            kfac_parallel_for(sizes[s], count_range, count);
            for (int i = 0; i < 1000; i++)
                ck_assert_int_eq(count[i], i < sizes[s]);
        }
    }
    be->set_threads(threads);
}
END_TEST

/* kfac_parallel_for_parts takes as many parts as it is given (at most n), whatever the
 * backend's threads, and covers each element of [0, n) once. */
static void count_part(void *ctx, int lo, int hi)
{
    int *count = ctx; /* count[1000] counts the parts */
    ck_assert_int_lt(lo, hi);
    for (int i = lo; i < hi; i++)
        count[i]++;
    __atomic_fetch_add(&count[1000], 1, __ATOMIC_RELAXED);
}

START_TEST(parallel_for_parts_takes_its_parts)
{
    const struct kfac_backend *be = kfac_backend_cpu();
    int threads = be->threads();
    static const int sizes[] = {0, 1, 2, 3, 7, 1000};
    int count[1001];
    be->set_threads(1);
    for (int parts = 1; parts <= 4; parts++)
        for (size_t s = 0; s < sizeof sizes / sizeof *sizes; s++) {
            memset(count, 0, sizeof count);
            kfac_parallel_for_parts(sizes[s], parts, count_part, count);
            for (int i = 0; i < 1000; i++)
                ck_assert_int_eq(count[i], i < sizes[s]);
            ck_assert_int_eq(count[1000], sizes[s] < parts ? sizes[s] : parts);
        }
    be->set_threads(threads);
}
END_TEST

/* Max and average pooling against naive loops, with a stride below the window; inputs
 * on a grid of halves, so that windows hold ties and max pooling must route each window
 * to its first largest tap (in ky, kx order). */
START_TEST(pooling_matches_loops)
{
    static const char *specs[] = {"2x7x6-maxpool(3,stride=2)-flatten-1:linear",
                                  "2x7x6-avgpool(3,stride=2)-flatten-1:linear",
                                  "3x4x6-maxpool(2x3,stride=1)-flatten-1:linear"};
    struct kfac_rng r;
    kfac_rng_seed(&r, 30 + (uint64_t)_i);
    int m = 5;
    struct kfac_net *net = spec_net(specs[_i], m, &r);
    const struct kfac_layer *l = &net->layers[0];
    int C = l->in_shape.c, H = l->in_shape.h, Wd = l->in_shape.w;
    float *X = kfac_floats_new((size_t)m * net->d_in);
    fill_uniform(X, (size_t)m * net->d_in, &r, -2, 2);
    for (size_t i = 0; i < (size_t)m * net->d_in; i++)
        X[i] = floorf(2 * X[i]) / 2;
    forward_on_threads(net, m, X, 3);
    int ties = 0;
    for (int b = 0; b < m; b++)
        for (int y = 0; y < l->out_shape.h; y++)
            for (int x = 0; x < l->out_shape.w; x++)
                for (int c = 0; c < C; c++) {
                    double mx = -INFINITY, sum = 0;
                    int at = -1, n_max = 0;
                    for (int ky = 0; ky < l->kh; ky++)
                        for (int kx = 0; kx < l->kw; kx++) {
                            int iy = y * l->stride + ky, ix = x * l->stride + kx;
                            double v = pixel(X, C, H, Wd, b, c, iy, ix);
                            n_max = v == mx ? n_max + 1 : v > mx ? 1 : n_max;
                            if (v > mx)
                                mx = v, at = (iy * Wd + ix) * C + c;
                            sum += v;
                        }
                    size_t o = ((size_t)y * l->out_shape.w + x) * C + c;
                    double want = l->ops == &kfac_maxpool_ops ? mx : sum / (l->kh * l->kw);
                    ck_assert_close(l->out[(size_t)b * l->ld_out + o], want, 1e-6);
                    if (l->ops == &kfac_maxpool_ops) {
                        ck_assert_int_eq(l->argmax[(size_t)b * l->out_size + o], at);
                        ties += n_max > 1;
                    }
                }
    if (l->ops == &kfac_maxpool_ops)
        ck_assert_int_gt(ties, 10);
    kfac_floats_free(X);
    kfac_net_free(net);
}
END_TEST

static Suite *layer_suite(void)
{
    Suite *s = suite_create("layer");
    TCase *tc = tcase_create("core");
    tcase_add_loop_test(tc, dense_forward_matches_loops, 0, 4);
    tcase_add_test(tc, dense_backward_and_jvp_match_loops);
    tcase_add_loop_test(tc, conv_forward_matches_direct_convolution, 0, 4);
    tcase_add_loop_test(tc, conv_input_gradient_matches_direct_sum, 0, 5);
    tcase_add_test(tc, col2im_is_the_adjoint_of_im2col);
    tcase_add_test(tc, parallel_for_covers_each_index_once);
    tcase_add_test(tc, parallel_for_parts_takes_its_parts);
    tcase_add_loop_test(tc, pooling_matches_loops, 0, 3);
    tcase_add_loop_test(tc, activation_derivative_by_finite_differences, 0, 4);
    tcase_add_test(tc, softmax_is_stable_and_normalised);
    tcase_add_test(tc, logistic_saturates_without_overflow);
    tcase_add_test(tc, activation_names_round_trip);
    suite_add_tcase(s, tc);
    TCase *init = tcase_create("init");
    tcase_add_test(init, sparse_init);
    tcase_add_test(init, glorot_and_he_init);
    suite_add_tcase(s, init);
    return s;
}

KFAC_TEST_MAIN(layer_suite)
