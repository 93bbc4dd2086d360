/*
 * layer.h: the layer interface, activations and weight initialisation.
 *
 * A layer maps its input a (m × d_in, one row per case) to s = ā Wᵀ and out = φ(s),
 * where ā = [a, 1] carries the homogeneous coordinate last, so the bias is the last
 * column of W (d_out × (d_in+1)), as in the K-FAC papers. The network (net.h) owns
 * the buffers and points each layer at them: layer i's `out` is layer i+1's `abar`,
 * whose last column of ones is written once when the buffers are made.
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

/* out (m × n, ld_out) = φ(s) (m × n, ld_s); softmax is taken along each row. */
void kfac_activation_forward(enum kfac_activation act, int m, int n, const float *s, int ld_s,
                             float *out, int ld_out);

/* y (m × n, ld_y) = φ'(s) ⊙ x (m × n, ld_x), with φ' written through out = φ(s)
 * (m × n, ld_out). y may be x. Not defined for softmax (its layer is the output, where
 * the loss supplies ∂ℓ/∂s directly). */
void kfac_activation_derivative_mul(enum kfac_activation act, int m, int n, const float *out,
                                    int ld_out, const float *x, int ld_x, float *y, int ld_y);

struct kfac_layer;

struct kfac_layer_ops {
    const char *name;
    /* s = ā Wᵀ and out = φ(s) for the first m cases. */
    void (*forward)(struct kfac_layer *l, int m);
    /* From g = ∂ℓ/∂s (m × d_out): dW (d_out × (d_in+1)) = scale · gᵀ ā when dW is not NULL;
     * din (m × d_in, ld_din) = g W[:, :d_in], the gradient for the input, when din is not NULL. */
    void (*backward)(struct kfac_layer *l, int m, float scale, float *dW, float *din, int ld_din);
    /* Forward mode: r_s = r_abar Wᵀ + ā Vᵀ for a direction V (d_out × (d_in+1)). When
     * input_varies is 0 the input does not depend on the parameters and r_abar is unused. */
    void (*jvp)(struct kfac_layer *l, int m, const float *V, int input_varies);
};

struct kfac_layer {
    const struct kfac_layer_ops *ops;
    int d_in, d_out;
    enum kfac_activation act;
    size_t n_params;   /* d_out × (d_in+1) */
    float *W;          /* d_out × (d_in+1): view into the network's parameters */
    float *dW;         /* d_out × (d_in+1): view into the network's gradients */
    /* Buffers for up to the network's max_batch cases, owned by the network: */
    float *abar;       /* max_batch × (d_in+1): input, ones in the last column */
    float *out;        /* max_batch × ld_out: φ(s) */
    int ld_out;        /* d_out + 1 when a layer follows (out is its abar), else d_out */
    float *s;          /* max_batch × d_out: pre-activations */
    float *g;          /* max_batch × d_out: ∂ℓ/∂s per case (not divided by m) */
    float *r_abar;     /* max_batch × (d_in+1): J·v at the input, zero last column */
    float *r_out;      /* max_batch × ld_out: J·v at out (the next layer's r_abar) */
    float *r_s;        /* max_batch × d_out: J·v at s */
};

/* The fully connected layer. */
extern const struct kfac_layer_ops kfac_dense_ops;

/* Fills W (rows × (fan_in+1), bias last) by the scheme; sparse_k is the number of
 * incoming weights per unit for KFAC_INIT_SPARSE (all of them when fan_in ≤ sparse_k). */
void kfac_init_weights(float *W, int rows, int fan_in, int fan_out, enum kfac_init scheme,
                       int sparse_k, enum kfac_activation act, struct kfac_rng *rng);

#endif
