/*
 * optim.c: what all optimisers share: the mini-batch objective and gradient, the
 * momentum schedule, gradient checks, and construction by type (see optim.h).
 */
#include "kfac/optim.h"
#include "kfac/mat.h"
#include "kfac/status.h"

#include <math.h>

double kfac_objective(struct kfac_net *net, enum kfac_loss loss, double l2,
                      const struct kfac_batch *b, int want_grad)
{
    int m = b->m, n = net->d_out;
    kfac_net_forward(net, m, b->x);
    double h = kfac_loss_sum(loss, m, n, kfac_net_logits(net), b->t) / m;
    if (l2 > 0)
        h += 0.5 * l2 * kfac_sumsq(net->n_params, net->params);
    if (want_grad) {
        kfac_loss_grad(loss, m, n, kfac_net_output(net), b->t, kfac_net_output_grad(net));
        kfac_net_backward(net, m, 1.0f / (float)m, 1);
        if (l2 > 0)
            cblas_saxpy((int)net->n_params, (float)l2, net->params, 1, net->grads, 1);
    }
    return h;
}

double kfac_momentum_at(const struct kfac_optim_opts *o, long k)
{
    if (o->momentum_schedule == KFAC_MOMENTUM_FIXED)
        return o->momentum;
    double mu = 1.0 - pow(2.0, -1.0 - log2(floor((double)k / 250.0) + 1.0));
    return mu < o->momentum ? mu : o->momentum;
}

int kfac_check_gradient(const struct kfac_net *net, long k)
{
    for (int i = 0; i < net->n_layers; i++) {
        const struct kfac_layer *l = &net->layers[i];
        if (!kfac_all_finite(l->n_params, l->dW))
            return kfac_error(KFAC_ENUMERIC,
                              "iteration %ld: the gradient of layer %d is not finite; the "
                              "parameters were left unchanged (lower the learning rate?)",
                              k, i + 1);
    }
    return 0;
}

int kfac_optim_new(const struct kfac_optim_opts *opts, struct kfac_net *net, enum kfac_loss loss,
                   struct kfac_optim **out)
{
    switch (opts->type) {
    case KFAC_OPTIM_SGD:
        *out = kfac_sgd_new(opts, net, loss);
        return 0;
    }
    return kfac_error(KFAC_EINVAL, "optimizer.type: unknown optimiser %d", opts->type);
}

void kfac_optim_free(struct kfac_optim *o)
{
    if (o)
        o->ops->free(o);
}

int kfac_optim_n_columns(const struct kfac_optim *o)
{
    int n = 0;
    while (o->ops->columns[n])
        n++;
    return n;
}
