/*
 * net.c: building a network from a layer spec, its buffers, and the forward, backward
 * and forward-mode passes over all layers (see net.h).
 */
#include "kfac/net.h"
#include "kfac/memory.h"
#include "kfac/mat.h"
#include "kfac/status.h"

#include <ctype.h>
#include <stdint.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Skips blanks at *p. */
static void skip_blanks(const char **p)
{
    while (isspace((unsigned char)**p))
        (*p)++;
}

/* Reads an integer in [lo, 1000000] at *p, advancing past it (and past blanks). */
static int parse_int(const char **p, int lo, int *out, const char *what, int index)
{
    skip_blanks(p);
    char *end;
    errno = 0;
    long v = strtol(*p, &end, 10);
    if (end == *p || errno || v < lo || v > 1000000)
        return kfac_error(KFAC_EINVAL, "%s %d: expected a %s between %d and 1000000 at '%.20s'",
                          index ? "layer" : "input", index, what, lo, *p);
    *out = (int)v;
    *p = end;
    skip_blanks(p);
    return 0;
}

static int parse_width(const char **p, int *out, int index)
{
    return parse_int(p, 1, out, "width", index);
}

/* Consumes the word w at *p (then blanks) if it is there. */
static int accept(const char **p, const char *w)
{
    size_t n = strlen(w);
    if (strncmp(*p, w, n) != 0)
        return 0;
    *p += n;
    skip_blanks(p);
    return 1;
}

/* K or KHxKW. */
static int parse_window(const char **p, int *kh, int *kw, int index)
{
    int rc = parse_width(p, kh, index);
    *kw = *kh;
    if (!rc && accept(p, "x"))
        rc = parse_width(p, kw, index);
    return rc;
}

/* The options and closing parenthesis of conv(...) or a pooling layer: ",stride=S" and,
 * for a convolution, ",pad=P", in any order. */
static int parse_options(const char **p, struct kfac_layer_spec *s, int index)
{
    int rc = 0;
    while (!rc && accept(p, ",")) {
        if (accept(p, "stride") && accept(p, "="))
            rc = parse_int(p, 1, &s->stride, "stride", index);
        else if (s->kind == KFAC_LAYER_CONV && accept(p, "pad") && accept(p, "="))
            rc = parse_int(p, 0, &s->pad, "padding", index);
        else
            rc = kfac_error(KFAC_EINVAL, "layer %d: unknown option at '%.20s' (expected %s)", index,
                            *p, s->kind == KFAC_LAYER_CONV ? "stride=S or pad=P" : "stride=S");
    }
    if (!rc && !accept(p, ")"))
        rc = kfac_error(KFAC_EINVAL, "layer %d: expected ')' at '%.20s'", index, *p);
    return rc;
}

/* ":ACTIVATION" at *p. */
static int parse_activation(const char **p, enum kfac_activation *act, int index)
{
    if (**p != ':')
        return kfac_error(KFAC_EINVAL,
                          "layer %d: expected WIDTH:ACTIVATION (e.g. 500:logistic), got '%.20s'",
                          index, *p);
    (*p)++;
    char name[32];
    size_t len = strcspn(*p, "- \t");
    if (len == 0 || len >= sizeof name)
        return kfac_error(KFAC_EINVAL, "layer %d: missing activation after ':'", index);
    memcpy(name, *p, len);
    name[len] = 0;
    *p += len;
    skip_blanks(p);
    int rc = kfac_activation_parse(name, act);
    return rc ? kfac_error(rc, "layer %d: %s", index, kfac_last_error()) : 0;
}

/* One layer at *p (after its '-'). */
static int parse_layer(const char **p, struct kfac_layer_spec *s, int index)
{
    memset(s, 0, sizeof *s);
    s->kh = s->kw = s->stride = 1;
    skip_blanks(p);
    int rc;
    if (accept(p, "conv(")) {
        s->kind = KFAC_LAYER_CONV;
        if ((rc = parse_int(p, 1, &s->d_out, "channel count", index)))
            return rc;
        if (!accept(p, ","))
            return kfac_error(KFAC_EINVAL, "layer %d: expected conv(CHANNELS,WINDOW...) at '%.20s'",
                              index, *p);
        if ((rc = parse_window(p, &s->kh, &s->kw, index)) || (rc = parse_options(p, s, index)))
            return rc;
        return parse_activation(p, &s->act, index);
    }
    int max = accept(p, "maxpool(");
    if (max || accept(p, "avgpool(")) {
        s->kind = max ? KFAC_LAYER_MAXPOOL : KFAC_LAYER_AVGPOOL;
        s->stride = 0;
        if ((rc = parse_window(p, &s->kh, &s->kw, index)) || (rc = parse_options(p, s, index)))
            return rc;
        if (s->stride == 0) {
            if (s->kh != s->kw)
                return kfac_error(KFAC_EINVAL, "layer %d: a %dx%d pooling window needs stride=S",
                                  index, s->kh, s->kw);
            s->stride = s->kh;
        }
        return 0;
    }
    if (accept(p, "flatten")) {
        s->kind = KFAC_LAYER_FLATTEN;
        return 0;
    }
    if (!isdigit((unsigned char)**p))
        return kfac_error(KFAC_EINVAL,
                          "layer %d: expected WIDTH:ACTIVATION, conv(...), maxpool(...), "
                          "avgpool(...) or flatten at '%.20s'",
                          index, *p);
    if ((rc = parse_width(p, &s->d_out, index)))
        return rc;
    return parse_activation(p, &s->act, index);
}

int kfac_net_parse_layers(const char *spec, struct kfac_shape *in, struct kfac_layer_spec **specs,
                          int *n_layers)
{
    const char *p = spec;
    *in = (struct kfac_shape){0, 1, 1};
    int rc = parse_width(&p, &in->c, 0);
    if (!rc && accept(&p, "x")) {
        if (!(rc = parse_width(&p, &in->h, 0))) {
            if (!accept(&p, "x"))
                return kfac_error(KFAC_EINVAL, "input: expected CxHxW (e.g. 1x28x28) at '%.20s'",
                                  spec);
            rc = parse_width(&p, &in->w, 0);
        }
    }
    if (rc)
        return rc;
    int n = 0, cap = 8;
    struct kfac_layer_spec *s = kfac_xmalloc((size_t)cap * sizeof *s);
    while (*p) {
        if (*p != '-') {
            rc = kfac_error(KFAC_EINVAL, "layer %d: expected '-' before the next layer at '%.20s'",
                            n + 1, p);
            goto fail;
        }
        p++;
        if (n == cap)
            s = kfac_xrealloc(s, (size_t)(cap *= 2) * sizeof *s);
        if ((rc = parse_layer(&p, &s[n], n + 1)))
            goto fail;
        n++;
    }
    if (n == 0) {
        rc = kfac_error(KFAC_EINVAL, "no layers after the input width (expected e.g. 784-30:linear)");
        goto fail;
    }
    *specs = s;
    *n_layers = n;
    return 0;
fail:
    free(s);
    return rc;
}

void kfac_net_format_layers(const struct kfac_shape *in, const struct kfac_layer_spec *specs,
                            int n_layers, char *buf, size_t size)
{
    size_t used = in->h == 1 && in->w == 1
                      ? (size_t)snprintf(buf, size, "%d", in->c)
                      : (size_t)snprintf(buf, size, "%dx%dx%d", in->c, in->h, in->w);
    for (int i = 0; i < n_layers && used < size; i++) {
        const struct kfac_layer_spec *l = &specs[i];
        char win[32] = "";
        if (l->kh == l->kw)
            snprintf(win, sizeof win, "%d", l->kh);
        else
            snprintf(win, sizeof win, "%dx%d", l->kh, l->kw);
        switch (l->kind) {
        case KFAC_LAYER_DENSE:
            used += (size_t)snprintf(buf + used, size - used, "-%d:%s", l->d_out,
                                     kfac_activation_name(l->act));
            break;
        case KFAC_LAYER_CONV:
            used += (size_t)snprintf(buf + used, size - used, "-conv(%d,%s", l->d_out, win);
            if (l->stride != 1 && used < size)
                used += (size_t)snprintf(buf + used, size - used, ",stride=%d", l->stride);
            if (l->pad && used < size)
                used += (size_t)snprintf(buf + used, size - used, ",pad=%d", l->pad);
            if (used < size)
                used += (size_t)snprintf(buf + used, size - used, "):%s",
                                         kfac_activation_name(l->act));
            break;
        case KFAC_LAYER_MAXPOOL:
        case KFAC_LAYER_AVGPOOL:
            used += (size_t)snprintf(buf + used, size - used, "-%s(%s",
                                     l->kind == KFAC_LAYER_MAXPOOL ? "maxpool" : "avgpool", win);
            if ((l->kh != l->kw || l->stride != l->kh) && used < size)
                used += (size_t)snprintf(buf + used, size - used, ",stride=%d", l->stride);
            if (used < size)
                used += (size_t)snprintf(buf + used, size - used, ")");
            break;
        case KFAC_LAYER_FLATTEN:
            used += (size_t)snprintf(buf + used, size - used, "-flatten");
            break;
        }
    }
}

/* KFAC_EINVAL naming layer i (from 0) when the count v of `what` exceeds KFAC_MAX_SIZE. */
static int bounded(int i, const char *what, int64_t v)
{
    if (v <= KFAC_MAX_SIZE)
        return 0;
    return kfac_error(KFAC_EINVAL, "layer %d: %s of %lld values per case is more than kfac-train "
                                   "supports (%d)",
                      i + 1, what, (long long)v, KFAC_MAX_SIZE);
}

static int64_t volume(const struct kfac_shape *s)
{
    return (int64_t)s->c * s->h * s->w;
}

/* Sets up layer l (index i of n) from its spec and input shape; KFAC_EINVAL when they do
 * not fit together or a size would pass KFAC_MAX_SIZE (every product is formed in 64 bits
 * and bounded before it is kept in an int). */
static int shape_layer(struct kfac_layer *l, const struct kfac_layer_spec *s, int i, int n,
                       const struct kfac_shape *in)
{
    int rc = bounded(i, "an input", volume(in));
    if (rc || (rc = bounded(i, "a width", s->d_out)) ||
        (rc = bounded(i, "a window", (int64_t)s->kh * s->kw)))
        return rc;
    l->index = i;
    l->in_shape = *in;
    l->kh = l->kw = l->stride = 1;
    l->pad = 0;
    l->n_pos = 1;
    l->act = s->act;
    if (s->act == KFAC_ACT_SOFTMAX && (i != n - 1 || s->kind != KFAC_LAYER_DENSE))
        return kfac_error(KFAC_EINVAL, "layer %d: softmax is only allowed on a dense output layer",
                          i + 1);
    switch (s->kind) {
    case KFAC_LAYER_DENSE:
        if (s->d_out < 1)
            return kfac_error(KFAC_EINVAL, "layer %d: width must be at least 1", i + 1);
        if (in->h != 1 || in->w != 1)
            return kfac_error(KFAC_EINVAL, "layer %d: a dense layer needs a vector input, but gets "
                                           "a %dx%dx%d map (put flatten before it)",
                              i + 1, in->c, in->h, in->w);
        l->ops = &kfac_dense_ops;
        l->d_in = in->c;
        l->d_out = s->d_out;
        l->out_shape = (struct kfac_shape){s->d_out, 1, 1};
        break;
    case KFAC_LAYER_CONV:
    case KFAC_LAYER_MAXPOOL:
    case KFAC_LAYER_AVGPOOL: {
        int conv = s->kind == KFAC_LAYER_CONV;
        if (conv && s->d_out < 1)
            return kfac_error(KFAC_EINVAL, "layer %d: a convolution needs at least 1 channel",
                              i + 1);
        if (s->kh < 1 || s->kw < 1 || s->stride < 1 || s->pad < 0 || s->pad >= s->kh ||
            s->pad >= s->kw)
            return kfac_error(KFAC_EINVAL, "layer %d: window %dx%d, stride %d and padding %d: "
                                           "expected a window and stride of at least 1 and a "
                                           "padding below the window",
                              i + 1, s->kh, s->kw, s->stride, s->pad);
        int oh = kfac_window_out(in->h, s->kh, s->stride, s->pad);
        int ow = kfac_window_out(in->w, s->kw, s->stride, s->pad);
        if (oh < 1 || ow < 1)
            return kfac_error(KFAC_EINVAL, "layer %d: a %dx%d window (padding %d) does not fit its "
                                           "%dx%dx%d input",
                              i + 1, s->kh, s->kw, s->pad, in->c, in->h, in->w);
        l->kh = s->kh;
        l->kw = s->kw;
        l->stride = s->stride;
        l->pad = s->pad;
        if ((rc = bounded(i, "an output map", (int64_t)(conv ? s->d_out : in->c) * oh * ow)) ||
            (rc = bounded(i, "a patch", (int64_t)in->c * s->kh * s->kw)))
            return rc;
        if (conv) {
            l->ops = &kfac_conv_ops;
            l->d_in = in->c * s->kh * s->kw;
            l->d_out = s->d_out;
            l->n_pos = oh * ow;
            l->out_shape = (struct kfac_shape){s->d_out, oh, ow};
        } else {
            l->ops = s->kind == KFAC_LAYER_MAXPOOL ? &kfac_maxpool_ops : &kfac_avgpool_ops;
            l->out_shape = (struct kfac_shape){in->c, oh, ow};
        }
        break;
    }
    case KFAC_LAYER_FLATTEN:
        l->ops = &kfac_flatten_ops;
        l->out_shape = (struct kfac_shape){in->c * in->h * in->w, 1, 1};
        break;
    }
    l->in_size = in->c * in->h * in->w;
    l->out_size = l->out_shape.c * l->out_shape.h * l->out_shape.w;
    l->n_params = l->d_out ? (size_t)l->d_out * (size_t)(l->d_in + 1) : 0;
    return 0;
}

/* Sets up layers (n_specs) from the specs for input maps of shape *in and checks that
 * they fit together as a network, allocating nothing. */
static int shape_layers(const struct kfac_shape *in, const struct kfac_layer_spec *specs,
                        int n_specs, struct kfac_layer *layers)
{
    if (in->c < 1 || in->h < 1 || in->w < 1 || n_specs < 1)
        return kfac_error(KFAC_EINVAL, "a network needs an input width and at least one layer");
    struct kfac_shape cur = *in;
    int with_params = 0;
    for (int i = 0; i < n_specs; i++) {
        int rc = shape_layer(&layers[i], &specs[i], i, n_specs, &cur);
        if (rc)
            return rc;
        cur = layers[i].out_shape;
        with_params += layers[i].n_params > 0;
    }
    /* Maps are position-major inside, targets channel-major: they agree for one channel. */
    const struct kfac_layer *last = &layers[n_specs - 1];
    const struct kfac_shape *map = last->ops->flattens ? &last->in_shape : &last->out_shape;
    if (map->c > 1 && map->h * map->w > 1)
        return kfac_error(KFAC_EINVAL, "layer %d: a network that ends in a map of several "
                                       "channels is not supported (end with one channel, or "
                                       "with a dense layer)",
                          n_specs);
    if (with_params == 0)
        return kfac_error(KFAC_EINVAL, "the network has no layer with parameters (expected a "
                                       "dense or conv layer)");
    return 0;
}

int kfac_net_check_layers(const struct kfac_shape *in, const struct kfac_layer_spec *specs,
                          int n_specs)
{
    struct kfac_layer *layers = kfac_xcalloc(n_specs > 0 ? (size_t)n_specs : 1, sizeof *layers);
    int rc = shape_layers(in, specs, n_specs, layers);
    free(layers);
    return rc;
}

int kfac_net_new_shaped(const struct kfac_shape *in, const struct kfac_layer_spec *specs,
                        int n_specs, struct kfac_net **out)
{
    *out = NULL;
    struct kfac_net *net = kfac_xcalloc(1, sizeof *net);
    net->be = kfac_backend_cpu();
    net->n_layers = n_specs;
    net->layers = kfac_xcalloc(n_specs > 0 ? (size_t)n_specs : 1, sizeof *net->layers);
    net->blocks = kfac_xcalloc(n_specs > 0 ? (size_t)n_specs : 1, sizeof *net->blocks);
    int rc = shape_layers(in, specs, n_specs, net->layers);
    if (rc) {
        kfac_net_free(net);
        return rc;
    }
    net->in_shape = *in;
    net->d_in = in->c * in->h * in->w;
    net->d_out = net->layers[n_specs - 1].out_size;
    for (int i = 0; i < n_specs; i++) {
        net->n_params += net->layers[i].n_params;
        if (net->layers[i].n_params)
            net->blocks[net->n_blocks++] = &net->layers[i];
    }
    struct kfac_memory need = {0};
    kfac_memory_add(&need, "parameters and gradients", "model.layers",
                    2.0 * (double)net->n_params * sizeof(float));
    if ((rc = kfac_memory_check(&need, 0, NULL))) {
        kfac_net_free(net);
        return rc;
    }
    net->params = kfac_floats_new(net->n_params);
    net->grads = kfac_floats_new(net->n_params);
    size_t off = 0;
    for (int i = 0; i < n_specs; i++) {
        net->layers[i].be = net->be;
        net->layers[i].W = net->params + off;
        net->layers[i].dW = net->grads + off;
        off += net->layers[i].n_params;
    }
    *out = net;
    return 0;
}

int kfac_net_new(int d_in, const struct kfac_layer_spec *specs, int n_specs,
                 struct kfac_net **out)
{
    struct kfac_shape in = {d_in, 1, 1};
    return kfac_net_new_shaped(&in, specs, n_specs, out);
}

void kfac_net_free(struct kfac_net *net)
{
    if (!net)
        return;
    kfac_floats_free(net->buffers);
    free(net->argmax);
    kfac_floats_free(net->params);
    kfac_floats_free(net->grads);
    free(net->layers);
    free(net->blocks);
    free(net);
}

/* The floats of the layer buffers for m cases, and the ints the layers ask for; col: the
 * floats of the scratch they share (the largest need). Per layer: in and r_in, s, g and
 * r_s, and what its type asks for; the last layer also owns out and r_out, which elsewhere
 * are the next layer's in and r_in. */
static void buffer_sizes(const struct kfac_net *net, size_t m, size_t *floats, size_t *ints,
                         size_t *col)
{
    size_t total = 0, n_ints = 0;
    *col = 0;
    for (int i = 0; i < net->n_layers; i++) {
        const struct kfac_layer *l = &net->layers[i];
        size_t ld_in = (size_t)l->in_size + (size_t)l->ops->bias_column;
        total += m * (2 * ld_in + 3 * (size_t)l->out_size);
        if (l->ops->buffer_sizes) {
            size_t own = 0, shared = 0, k = 0;
            l->ops->buffer_sizes(l, m, &own, &shared, &k);
            total += own;
            n_ints += k;
            *col = shared > *col ? shared : *col;
        }
    }
    *floats = total + 2 * m * (size_t)net->d_out + *col;
    *ints = n_ints;
}

double kfac_net_buffer_bytes(const struct kfac_net *net, int max_batch)
{
    size_t floats, ints, col;
    buffer_sizes(net, (size_t)max_batch, &floats, &ints, &col);
    return (double)floats * sizeof(float) + (double)ints * sizeof(int);
}

void kfac_net_reserve(struct kfac_net *net, int max_batch)
{
    if (max_batch <= net->max_batch)
        return;
    size_t m = (size_t)max_batch, total, n_argmax, col;
    buffer_sizes(net, m, &total, &n_argmax, &col);
    kfac_floats_free(net->buffers);
    free(net->argmax);
    net->buffers = kfac_floats_new(total);
    net->argmax = n_argmax ? kfac_xmalloc(n_argmax * sizeof *net->argmax) : NULL;
    net->max_batch = max_batch;
    float *p = net->buffers, *shared_col = p;
    p += col;
    int *q = net->argmax;
    for (int i = 0; i < net->n_layers; i++) {
        struct kfac_layer *l = &net->layers[i];
        l->ld_in = l->in_size + l->ops->bias_column;
        l->in = p, p += m * (size_t)l->ld_in;
        l->r_in = p, p += m * (size_t)l->ld_in;
        l->s = p, p += m * (size_t)l->out_size;
        l->g = p, p += m * (size_t)l->out_size;
        l->r_s = p, p += m * (size_t)l->out_size;
        l->abar = NULL;
        l->col = NULL;
        l->argmax = NULL;
        if (l->ops->bind)
            l->ops->bind(l, m, &p, shared_col, &q);
        if (i > 0) {
            net->layers[i - 1].out = l->in;
            net->layers[i - 1].r_out = l->r_in;
            net->layers[i - 1].ld_out = l->ld_in;
        }
    }
    struct kfac_layer *last = &net->layers[net->n_layers - 1];
    last->out = p, p += m * (size_t)net->d_out;
    last->r_out = p;
    last->ld_out = net->d_out;
}

void kfac_net_set_backend(struct kfac_net *net, const struct kfac_backend *be)
{
    net->be = be;
    for (int i = 0; i < net->n_layers; i++)
        net->layers[i].be = be;
}

void kfac_net_init(struct kfac_net *net, enum kfac_init scheme, int sparse_k,
                   struct kfac_rng *rng)
{
    for (int i = 0; i < net->n_blocks; i++) {
        struct kfac_layer *l = net->blocks[i];
        /* A convolution's unit feeds d_out·kh·kw outputs' worth of weights (Glorot's fan-out). */
        kfac_init_weights(l->W, l->d_out, l->d_in, l->d_out * l->kh * l->kw, scheme, sparse_k,
                          l->act, rng);
    }
}

void kfac_net_forward(struct kfac_net *net, int m, const float *X)
{
    struct kfac_layer *first = &net->layers[0];
    const struct kfac_shape *in = &net->in_shape;
    if (in->c == 1 || in->h * in->w == 1) {
        kfac_mat_copy(m, net->d_in, X, net->d_in, first->in, first->ld_in);
    } else {
        /* Channel-major rows (C×H×W) to position-major maps. */
        size_t hw = (size_t)in->h * in->w;
        for (int b = 0; b < m; b++) {
            const float *x = X + (size_t)b * net->d_in;
            float *y = first->in + (size_t)b * first->ld_in;
            for (int ch = 0; ch < in->c; ch++)
                for (size_t j = 0; j < hw; j++)
                    y[j * in->c + ch] = x[(size_t)ch * hw + j];
        }
    }
    for (int i = 0; i < net->n_layers; i++)
        net->layers[i].ops->forward(&net->layers[i], m);
}

const float *kfac_net_output(const struct kfac_net *net)
{
    return net->layers[net->n_layers - 1].out;
}

const float *kfac_net_logits(const struct kfac_net *net)
{
    return net->layers[net->n_layers - 1].s;
}

float *kfac_net_output_grad(struct kfac_net *net)
{
    return net->layers[net->n_layers - 1].g;
}

void kfac_net_backward(struct kfac_net *net, int m, float scale, enum kfac_grads grads)
{
    /* Below the first layer with parameters no gradient is needed. */
    int first = net->blocks[0]->index;
    for (int i = net->n_layers - 1; i >= first; i--) {
        struct kfac_layer *l = &net->layers[i];
        struct kfac_layer *prev = i > first ? &net->layers[i - 1] : NULL;
        l->ops->backward(l, m, scale, grads != KFAC_GRADS_NONE && l->n_params ? l->dW : NULL,
                         grads == KFAC_GRADS_ADD ? 1.0f : 0.0f, prev ? prev->g : NULL,
                         prev ? prev->out_size : 0);
        if (prev)
            net->be->activation_derivative_mul(prev->act, m, prev->out_size, prev->out,
                                               prev->ld_out, prev->g, prev->out_size, prev->g,
                                               prev->out_size);
    }
}

const float *kfac_net_jvp(struct kfac_net *net, int m, int n_tan, const float *const *V)
{
    enum { MOST = 8 }; /* the model takes at most 4: δ₀ and three γ's Δ */
    const float *v[MOST];
    if (n_tan < 1 || n_tan > MOST || (size_t)n_tan * m > (size_t)net->max_batch)
        abort(); /* a caller's bug: the buffers do not hold them */
    memcpy(v, V, (size_t)n_tan * sizeof *v);
    int first = net->blocks[0]->index;
    for (int i = first; i < net->n_layers; i++) {
        struct kfac_layer *l = &net->layers[i];
        l->ops->jvp(l, m, n_tan, v, i > first);
        for (int t = 0; t < n_tan; t++)
            v[t] += l->n_params;
        for (int t = 0; i < net->n_layers - 1 && t < n_tan; t++)
            net->be->activation_derivative_mul(l->act, m, l->out_size, l->out, l->ld_out,
                                               l->r_s + (size_t)t * m * l->out_size,
                                               l->out_size,
                                               l->r_out + (size_t)t * m * l->ld_out, l->ld_out);
    }
    return net->layers[net->n_layers - 1].r_s;
}
