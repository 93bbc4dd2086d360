/*
 * net.h: a feed-forward network of layers with one parameter block and one gradient
 * block, and whole-batch forward, backward and forward-mode (J·v) passes.
 *
 * Layer spec syntax (the `layers` key of the configuration): the input, then the layers,
 * separated by '-':
 *     784-1000:logistic-500:logistic-30:linear-500:logistic-784:logistic
 *     1x28x28-conv(6,5,pad=2):relu-maxpool(2)-conv(16,5):relu-maxpool(2)-flatten-120:relu-84:relu-10:softmax
 * The input is a width or a map C×H×W written CxHxW. A layer is one of
 *     WIDTH:ACT                         dense (needs a flat input: after flatten)
 *     conv(C,K[,stride=S][,pad=P]):ACT  C output channels, K or KHxKW window (stride 1, pad 0)
 *     maxpool(K[,stride=S]), avgpool(K[,stride=S])   stride defaults to the window
 *     flatten                           the map as a vector
 * Input rows are C×H×W in channel-major order (as IDX N×H×W and NPY N×C×H×W files hold
 * them); inside the network maps are position-major (layer.h). Parameters are laid out
 * layer after layer, each W row-major d_out × (d_in+1).
 */
#ifndef KFAC_NET_H
#define KFAC_NET_H

#include "kfac/comm.h"
#include "kfac/backend.h"
#include "kfac/layer.h"
#include <stddef.h>

/* The most values a layer's input, output map, patch or width may hold per case: every
 * shape product is checked against it in 64 bits, so sizes kept in an int never wrap. */
#define KFAC_MAX_SIZE 100000000

struct kfac_layer_spec {
    int d_out;                  /* dense: width; conv: output channels; else unused */
    enum kfac_activation act;   /* pooling and flatten: linear */
    enum kfac_layer_kind kind;  /* zero: dense */
    int kh, kw, stride, pad;    /* conv and pooling windows */
};

struct kfac_net {
    const struct kfac_backend *be; /* the run's compute backend (the CPU's unless set) */
    struct kfac_comm *comm;    /* the ranks a batch is shared by (comm.h); NULL: this
                                * process alone. Not owned. */
    int n_layers;
    struct kfac_layer *layers; /* n_layers */
    int n_blocks;              /* the layers with parameters: what curvature works on */
    struct kfac_layer **blocks; /* n_blocks, in order */
    struct kfac_shape in_shape;
    int d_in, d_out;           /* widths of a case's input and output */
    size_t n_params;
    float *params;             /* n_params: every layer's W, in order */
    float *grads;              /* n_params: the matching gradients */
    int max_batch;             /* cases the layer buffers hold (kfac_net_reserve) */
    float *buffers;            /* the one allocation behind every layer buffer */
    int *argmax;               /* the one allocation behind the max-pooling indices */
};

/* Parses a layer spec. On success *specs (n_layers, caller frees) and *in are set.
 * Errors name the offending part and what was expected. */
int kfac_net_parse_layers(const char *spec, struct kfac_shape *in, struct kfac_layer_spec **specs,
                          int *n_layers);

/* Writes the spec back in the syntax above into buf (size bytes). */
void kfac_net_format_layers(const struct kfac_shape *in, const struct kfac_layer_spec *specs,
                            int n_layers, char *buf, size_t size);

/* A network with zeroed parameters and no buffers for input maps of shape *in. KFAC_EINVAL
 * (and NULL in *out), naming the layer, for a softmax anywhere but on a dense last layer,
 * a width below 1, a dense layer on a map (flatten first), a convolution or pooling on a
 * vector, or a window that does not fit its input; naming model.layers and the bytes
 * when the parameters and gradients need more memory than there is (memory.h). */
int kfac_net_new_shaped(const struct kfac_shape *in, const struct kfac_layer_spec *specs,
                        int n_specs, struct kfac_net **out);

/* The checks of kfac_net_new_shaped() alone, allocating nothing: for validating a
 * configuration. */
int kfac_net_check_layers(const struct kfac_shape *in, const struct kfac_layer_spec *specs,
                          int n_specs);

/* The same for a flat input of d_in values. */
int kfac_net_new(int d_in, const struct kfac_layer_spec *specs, int n_specs,
                 struct kfac_net **out);
void kfac_net_free(struct kfac_net *net);

/* The bytes kfac_net_reserve(net, max_batch) allocates. */
double kfac_net_buffer_bytes(const struct kfac_net *net, int max_batch);

/* Makes the layer buffers hold at least max_batch cases (allocates; call outside loops). */
void kfac_net_reserve(struct kfac_net *net, int max_batch);

/* Makes be the backend of the network and of its layers (before any curvature or
 * optimiser is made for it: those take the network's backend when they are made). */
void kfac_net_set_backend(struct kfac_net *net, const struct kfac_backend *be);

void kfac_net_init(struct kfac_net *net, enum kfac_init scheme, int sparse_k,
                   struct kfac_rng *rng);

/* Forward pass of m ≤ max_batch cases X (m × d_in, each row C×H×W channel-major).
 * Afterwards kfac_net_output() holds the predictions and the last layer's s the output
 * pre-activations (logits). */
void kfac_net_forward(struct kfac_net *net, int m, const float *X);

/* m × d_out predictions φ(s) of the last forward pass. */
const float *kfac_net_output(const struct kfac_net *net);

/* m × d_out output pre-activations of the last forward pass. */
const float *kfac_net_logits(const struct kfac_net *net);

/* m × d_out buffer for ∂ℓ/∂s at the output: filled by the caller (the loss) before backward. */
float *kfac_net_output_grad(struct kfac_net *net);

/* What kfac_net_backward() does with the gradient block. */
enum kfac_grads {
    KFAC_GRADS_NONE,  /* leaves it alone */
    KFAC_GRADS_SET,   /* grads = scale · Σ_cases ∂ℓ/∂θ (scale = 1/m gives the mean) */
    KFAC_GRADS_ADD    /* grads += the same: a chunk of a batch after the earlier chunks */
};

/* Backward pass after a forward pass of the same m cases: every layer's g = ∂ℓ/∂s, and the
 * gradient block as `grads` says. */
void kfac_net_backward(struct kfac_net *net, int m, float scale, enum kfac_grads grads);

/* Forward-mode pass after a forward pass of the same m cases, for n_tan parameter
 * directions V[t] (n_params each) at once, n_tan·m ≤ max_batch: J·V[t] at the output
 * pre-activations, returned as rows [t·m, (t+1)·m) of an (n_tan·m × d_out) array. Where the
 * directions share W (its products with each layer's input tangent) one call serves all. */
const float *kfac_net_jvp(struct kfac_net *net, int m, int n_tan, const float *const *V);

#endif
