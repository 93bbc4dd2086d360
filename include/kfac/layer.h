/*
 * layer.h: the layer interface, activations and weight initialisation.
 *
 * A layer with parameters maps rows of ā = [a, 1] (the homogeneous coordinate last, so
 * the bias is the last column of W, d_out × (d_in+1), as in the K-FAC papers) to
 * s = ā Wᵀ and out = φ(s). For a dense layer ā is the input itself, one row per case.
 * A convolution (Grosse & Martens 2016, "KFC") has n_pos = |T| rows per case: the input
 * patch under each output position, d_in = C_in·kh·kw values with a 1 appended, so that
 * s (one row per case and position) is one GEMM of the patch matrix with Wᵀ. Pooling
 * and flatten layers have no parameters (n_params = 0) and a linear activation.
 *
 * Activations are stored case by case, each case an h × w map of c channels in
 * position-major order ((y, x, channel), NHWC over a batch); a flat vector is c × 1 × 1.
 * The network (net.h) owns the buffers and points each layer at them: layer i's `out` is
 * layer i+1's `in`; a dense layer's `in` carries a last column of ones, written once
 * when the buffers are made.
 *
 * Layers never update their own weights: W and dW are views into the network's one
 * parameter block and one gradient block; the optimiser owns the step.
 */
#ifndef KFAC_LAYER_H
#define KFAC_LAYER_H

#include "kfac/rng.h"
#include <stddef.h>

enum kfac_activation {
    KFAC_ACT_LINEAR,
    KFAC_ACT_LOGISTIC,
    KFAC_ACT_TANH,
    KFAC_ACT_RELU,
    KFAC_ACT_SOFTMAX /* output layer only, with the softmax cross-entropy loss */
};

enum kfac_init {
    KFAC_INIT_SPARSE, /* k incoming N(0,1) weights per unit (×½ for tanh), biases 0 */
    KFAC_INIT_GLOROT, /* U(±sqrt(6/(fan_in+fan_out))), biases 0 */
    KFAC_INIT_HE      /* N(0, 2/fan_in), biases 0 */
};

/* "linear", "logistic", ... and back; parse returns KFAC_EINVAL on an unknown name. */
const char *kfac_activation_name(enum kfac_activation act);
int kfac_activation_parse(const char *name, enum kfac_activation *act);

/* The CPU kernels of the activations, which the CPU backend's activation operations are
 * (backend.h); the library calls them through its backend.
 * out (m × n, ld_out) = φ(s) (m × n, ld_s); softmax is taken along each row. */
void kfac_activation_forward(enum kfac_activation act, int m, int n, const float *s, int ld_s,
                             float *out, int ld_out);

/* y (m × n, ld_y) = φ'(s) ⊙ x (m × n, ld_x), with φ' written through out = φ(s)
 * (m × n, ld_out). y may be x. Not defined for softmax (its layer is the output, where
 * the loss supplies ∂ℓ/∂s directly). */
void kfac_activation_derivative_mul(enum kfac_activation act, int m, int n, const float *out,
                                    int ld_out, const float *x, int ld_x, float *y, int ld_y);

enum kfac_layer_kind {
    KFAC_LAYER_DENSE,    /* fully connected (layer_dense.c) */
    KFAC_LAYER_CONV,     /* 2-D convolution (layer_conv.c) */
    KFAC_LAYER_MAXPOOL,  /* max pooling (layer_pool.c) */
    KFAC_LAYER_AVGPOOL,  /* average pooling (layer_pool.c) */
    KFAC_LAYER_FLATTEN   /* the c × h × w map as a vector (layer_flatten.c) */
};

/* A per-case activation map: c channels of h × w, position-major (see above). */
struct kfac_shape {
    int c, h, w;
};

struct kfac_backend; /* backend.h */
struct kfac_layer;

struct kfac_layer_ops {
    const char *name;
    /* What the rest of the program asks of a layer type, so that none of it compares
     * ops tables: */
    int bias_column;    /* its input buffer holds ā = [a; 1], one row per case (dense) */
    int couples;        /* its ā and g are one row per case and it has parameters: the
                         * block-tridiagonal couplings and the Fisher pictures take it */
    int windowed;       /* it slides a kh × kw window with stride and padding */
    int flattens;       /* its output is its input map read as a vector */
    /* Extra buffers for m cases, beyond in, r_in, s, g and r_s: floats of its own, floats
     * of the scratch the layers share (the largest need counts), ints. NULL: none. */
    void (*buffer_sizes)(const struct kfac_layer *l, size_t m, size_t *own, size_t *shared,
                         size_t *ints);
    /* Takes those buffers (after in, r_in, s, g and r_s are set): its own floats from *p
     * and its ints from *q, advancing them, and the shared scratch. NULL: nothing. */
    void (*bind)(struct kfac_layer *l, size_t m, float **p, float *shared, int **q);
    /* s and out = φ(s) for the first m cases. */
    void (*forward)(struct kfac_layer *l, int m);
    /* From g = ∂ℓ/∂s (m × out_size): dW (d_out × (d_in+1)) = scale · gᵀ ā + beta · dW over
     * the m·n_pos rows when dW is not NULL (and the layer has parameters; beta 0 or 1, 1
     * adding a chunk's part to the earlier chunks'); din (m × in_size, ld_din) = the gradient
     * for the input, when din is not NULL. */
    void (*backward)(struct kfac_layer *l, int m, float scale, float *dW, float beta, float *din,
                     int ld_din);
    /* Forward mode for n_tan directions V[t] (d_out × (d_in+1) each) after a forward pass of
     * m cases, n_tan·m ≤ max_batch: rows [t·m, (t+1)·m) of r_s = ∂s/∂in · (the same rows of
     * r_in) + ∂s/∂W · V[t]. When input_varies is 0 the input does not depend on the
     * parameters and r_in is unused. */
    void (*jvp)(struct kfac_layer *l, int m, int n_tan, const float *const *V,
                int input_varies);
};

struct kfac_layer {
    const struct kfac_layer_ops *ops;
    const struct kfac_backend *be; /* the network's backend, for the layer's kernels */
    int index;               /* the layer's position in the network, from 0 */
    struct kfac_shape in_shape, out_shape;
    int in_size, out_size;   /* c·h·w of each: the widths of a case's input and output */
    int kh, kw, stride, pad; /* convolution and pooling window (dense: 1, 1, 1, 0) */
    int n_pos;               /* rows of ā and g per case: out_h·out_w for a convolution, else 1 */
    int d_in, d_out;         /* W is d_out × (d_in+1); conv: C_in·kh·kw and C_out; else 0 */
    enum kfac_activation act;
    size_t n_params;         /* d_out × (d_in+1) */
    float *W;                /* d_out × (d_in+1): view into the network's parameters */
    float *dW;               /* d_out × (d_in+1): view into the network's gradients */
    /* Buffers for up to the network's max_batch cases, owned by the network: */
    float *in;               /* max_batch × ld_in: the input (the previous layer's out) */
    int ld_in;               /* dense: d_in + 1 (ones in the last column); else in_size */
    float *abar;             /* max_batch·n_pos × (d_in+1): ā; dense: in; no parameters: NULL */
    float *out;              /* max_batch × ld_out: φ(s) */
    int ld_out;              /* the next layer's ld_in, or out_size for the last layer */
    float *s;                /* max_batch × out_size: pre-activations */
    float *g;                /* max_batch × out_size: ∂ℓ/∂s per case (not divided by m) */
    float *r_in;             /* max_batch × ld_in: J·v at the input, zero ones-column */
    float *r_out;            /* max_batch × ld_out: J·v at out (the next layer's r_in) */
    float *r_s;              /* max_batch × out_size: J·v at s */
    float *col;              /* conv: max_batch·n_pos × max(d_in, d_out) scratch (shared) */
    int *argmax;             /* max pooling: max_batch × out_size input offsets of the maxima */
};

/* The layer types. */
extern const struct kfac_layer_ops kfac_dense_ops;
extern const struct kfac_layer_ops kfac_conv_ops;
extern const struct kfac_layer_ops kfac_maxpool_ops;
extern const struct kfac_layer_ops kfac_avgpool_ops;
extern const struct kfac_layer_ops kfac_flatten_ops;

/* Writes a shape as "C" for a vector (h = w = 1) or "CxHxW" into buf (size bytes). */
void kfac_shape_format(const struct kfac_shape *s, char *buf, size_t size);

/* Ones in the last column of x (rows × cols): ā's homogeneous coordinate. */
void kfac_set_ones_column(size_t rows, size_t cols, float *x);

/* The side of a window's output: ⌊(n + 2 pad − k)/stride⌋ + 1, or 0 when the window does
 * not fit. */
int kfac_window_out(int n, int k, int stride, int pad);

/* The CPU kernels of the window operations (the CPU backend's im2col, col2im and pool
 * operations, backend.h). Patch matrix of m cases of x (m × ld_x, each case an h × w × c map (position-major)):
 * row (case, oy, ox) of out (m·oh·ow × ld_out) holds the kh × kw × c window at
 * (oy·stride − pad, ox·stride − pad) in (ky, kx, channel) order, zero outside the map.
 * Columns from kh·kw·c on are left alone (ā's ones). */
void kfac_im2col(int m, const struct kfac_shape *in, int kh, int kw, int stride, int pad,
                 const float *x, int ld_x, float *out, int ld_out);

/* The adjoint of kfac_im2col(): dx (m × ld_x; its first c·h·w columns) = the sum of each
 * patch row of cols (m·oh·ow × ld_cols) scattered back onto the map. */
void kfac_col2im(int m, const struct kfac_shape *in, int kh, int kw, int stride, int pad,
                 const float *cols, int ld_cols, float *dx, int ld_x);

/* Pooling over the kh × kw windows (stride, no padding) of each channel of m maps x
 * (m × ld_x, each in-shaped), into out (m × n, n = c·oh·ow, position-major):
 * pool_max: each window's maximum (the first on ties) and, in arg (m × n), the offset of
 * the input it came from within its case's row; pool_mean: each window's mean. */
void kfac_pool_max(int m, const struct kfac_shape *in, int kh, int kw, int stride, const float *x,
                   int ld_x, float *out, int *arg);
void kfac_pool_mean(int m, const struct kfac_shape *in, int kh, int kw, int stride, const float *x,
                    int ld_x, float *out);
/* The adjoints: dx (m × ld_dx; its first c·h·w columns) = g (m × n) routed to each
 * window's maximum (by arg, m × n), or spread evenly over each window. */
void kfac_pool_max_backward(int m, const struct kfac_shape *in, int kh, int kw, int stride,
                            const float *g, const int *arg, float *dx, int ld_dx);
void kfac_pool_mean_backward(int m, const struct kfac_shape *in, int kh, int kw, int stride,
                             const float *g, float *dx, int ld_dx);
/* out (m × n) = x (m × ld_x) at the offsets arg (m × n): max pooling's forward-mode
 * product, the tangent at each window's maximum. */
void kfac_pool_gather(int m, int n, const float *x, int ld_x, const int *arg, float *out);

/* Fills W (rows × (fan_in+1), bias last) by the scheme; sparse_k is the number of
 * incoming weights per unit for KFAC_INIT_SPARSE (all of them when fan_in ≤ sparse_k). */
void kfac_init_weights(float *W, int rows, int fan_in, int fan_out, enum kfac_init scheme,
                       int sparse_k, enum kfac_activation act, struct kfac_rng *rng);

#endif
