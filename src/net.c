/*
 * net.c: building a network from a layer spec, its buffers, and the forward, backward
 * and forward-mode passes over all layers (see net.h).
 */
#include "kfac/net.h"
#include "kfac/mat.h"
#include "kfac/status.h"

#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Reads a positive width at *p, advancing past it. */
static int parse_width(const char **p, int *out, const char *what, int index)
{
    while (isspace((unsigned char)**p))
        (*p)++;
    char *end;
    errno = 0;
    long v = strtol(*p, &end, 10);
    if (end == *p || errno || v < 1 || v > 1000000)
        return kfac_error(KFAC_EINVAL, "%s %d: expected a width between 1 and 1000000 at '%.20s'",
                          what, index, *p);
    *out = (int)v;
    *p = end;
    while (isspace((unsigned char)**p))
        (*p)++;
    return 0;
}

int kfac_net_parse_layers(const char *spec, int *d_in, struct kfac_layer_spec **specs,
                          int *n_layers)
{
    const char *p = spec;
    int rc = parse_width(&p, d_in, "input", 0);
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
        if ((rc = parse_width(&p, &s[n].d_out, "layer", n + 1)))
            goto fail;
        if (*p != ':') {
            rc = kfac_error(KFAC_EINVAL,
                            "layer %d: expected WIDTH:ACTIVATION (e.g. 500:logistic), got '%.20s'",
                            n + 1, p);
            goto fail;
        }
        p++;
        char name[32];
        size_t len = strcspn(p, "- \t");
        if (len == 0 || len >= sizeof name) {
            rc = kfac_error(KFAC_EINVAL, "layer %d: missing activation after ':'", n + 1);
            goto fail;
        }
        memcpy(name, p, len);
        name[len] = 0;
        p += len;
        while (isspace((unsigned char)*p))
            p++;
        if ((rc = kfac_activation_parse(name, &s[n].act))) {
            rc = kfac_error(rc, "layer %d: %s", n + 1, kfac_last_error());
            goto fail;
        }
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

void kfac_net_format_layers(int d_in, const struct kfac_layer_spec *specs, int n_layers, char *buf,
                            size_t size)
{
    size_t used = (size_t)snprintf(buf, size, "%d", d_in);
    for (int i = 0; i < n_layers && used < size; i++)
        used += (size_t)snprintf(buf + used, size - used, "-%d:%s", specs[i].d_out,
                                 kfac_activation_name(specs[i].act));
}

int kfac_net_new(int d_in, const struct kfac_layer_spec *specs, int n_layers,
                 struct kfac_net **out)
{
    *out = NULL;
    if (d_in < 1 || n_layers < 1)
        return kfac_error(KFAC_EINVAL, "a network needs an input width and at least one layer");
    for (int i = 0; i < n_layers; i++) {
        if (specs[i].d_out < 1)
            return kfac_error(KFAC_EINVAL, "layer %d: width must be at least 1", i + 1);
        if (specs[i].act == KFAC_ACT_SOFTMAX && i != n_layers - 1)
            return kfac_error(KFAC_EINVAL, "layer %d: softmax is only allowed on the output layer",
                              i + 1);
    }
    struct kfac_net *net = kfac_xcalloc(1, sizeof *net);
    net->n_layers = n_layers;
    net->layers = kfac_xcalloc((size_t)n_layers, sizeof *net->layers);
    net->d_in = d_in;
    net->d_out = specs[n_layers - 1].d_out;
    int width = d_in;
    for (int i = 0; i < n_layers; i++) {
        struct kfac_layer *l = &net->layers[i];
        l->ops = &kfac_dense_ops;
        l->d_in = width;
        l->d_out = specs[i].d_out;
        l->act = specs[i].act;
        l->n_params = (size_t)l->d_out * (size_t)(l->d_in + 1);
        net->n_params += l->n_params;
        width = l->d_out;
    }
    net->params = kfac_floats_new(net->n_params);
    net->grads = kfac_floats_new(net->n_params);
    size_t off = 0;
    for (int i = 0; i < n_layers; i++) {
        net->layers[i].W = net->params + off;
        net->layers[i].dW = net->grads + off;
        off += net->layers[i].n_params;
    }
    *out = net;
    return 0;
}

void kfac_net_free(struct kfac_net *net)
{
    if (!net)
        return;
    kfac_floats_free(net->buffers);
    kfac_floats_free(net->params);
    kfac_floats_free(net->grads);
    free(net->layers);
    free(net);
}

void kfac_net_reserve(struct kfac_net *net, int max_batch)
{
    if (max_batch <= net->max_batch)
        return;
    size_t m = (size_t)max_batch, total = 0;
    /* Per layer: abar and r_abar (d_in+1 each), s, g, r_s (d_out each); the last layer
     * also owns out and r_out, which elsewhere are the next layer's abar and r_abar. */
    for (int i = 0; i < net->n_layers; i++) {
        const struct kfac_layer *l = &net->layers[i];
        total += m * (2 * (size_t)(l->d_in + 1) + 3 * (size_t)l->d_out);
    }
    total += 2 * m * (size_t)net->d_out;
    kfac_floats_free(net->buffers);
    net->buffers = kfac_floats_new(total);
    net->max_batch = max_batch;
    float *p = net->buffers;
    for (int i = 0; i < net->n_layers; i++) {
        struct kfac_layer *l = &net->layers[i];
        size_t cols = (size_t)(l->d_in + 1);
        l->abar = p, p += m * cols;
        l->r_abar = p, p += m * cols;
        l->s = p, p += m * (size_t)l->d_out;
        l->g = p, p += m * (size_t)l->d_out;
        l->r_s = p, p += m * (size_t)l->d_out;
        for (size_t r = 0; r < m; r++)
            l->abar[r * cols + cols - 1] = 1.0f; /* the homogeneous coordinate; r_abar's stays 0 */
        if (i > 0) {
            net->layers[i - 1].out = l->abar;
            net->layers[i - 1].r_out = l->r_abar;
            net->layers[i - 1].ld_out = (int)cols;
        }
    }
    struct kfac_layer *last = &net->layers[net->n_layers - 1];
    last->out = p, p += m * (size_t)net->d_out;
    last->r_out = p;
    last->ld_out = net->d_out;
}

void kfac_net_init(struct kfac_net *net, enum kfac_init scheme, int sparse_k,
                   struct kfac_rng *rng)
{
    for (int i = 0; i < net->n_layers; i++) {
        struct kfac_layer *l = &net->layers[i];
        kfac_init_weights(l->W, l->d_out, l->d_in, l->d_out, scheme, sparse_k, l->act, rng);
    }
}

void kfac_net_forward(struct kfac_net *net, int m, const float *X)
{
    struct kfac_layer *first = &net->layers[0];
    kfac_mat_copy(m, net->d_in, X, net->d_in, first->abar, net->d_in + 1);
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

void kfac_net_backward(struct kfac_net *net, int m, float scale, int want_grads)
{
    for (int i = net->n_layers - 1; i >= 0; i--) {
        struct kfac_layer *l = &net->layers[i];
        struct kfac_layer *prev = i > 0 ? &net->layers[i - 1] : NULL;
        l->ops->backward(l, m, scale, want_grads ? l->dW : NULL, prev ? prev->g : NULL,
                         prev ? prev->d_out : 0);
        if (prev)
            kfac_activation_derivative_mul(prev->act, m, prev->d_out, prev->out, prev->ld_out,
                                           prev->g, prev->d_out, prev->g, prev->d_out);
    }
}

const float *kfac_net_jvp(struct kfac_net *net, int m, const float *V)
{
    const float *v = V;
    for (int i = 0; i < net->n_layers; i++) {
        struct kfac_layer *l = &net->layers[i];
        l->ops->jvp(l, m, v, i > 0);
        v += l->n_params;
        if (i < net->n_layers - 1)
            kfac_activation_derivative_mul(l->act, m, l->d_out, l->out, l->ld_out, l->r_s,
                                           l->d_out, l->r_out, l->ld_out);
    }
    return net->layers[net->n_layers - 1].r_s;
}
