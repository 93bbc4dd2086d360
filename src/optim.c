/*
 * optim.c: what all optimisers share: the mini-batch objective and gradient, the
 * momentum schedule, gradient checks, and construction by type (see optim.h).
 */
#include "kfac/optim.h"
#include "kfac/curvature.h"
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

double kfac_gamma_min(const struct kfac_optim_opts *o)
{
    if (o->gamma_min > 0)
        return o->gamma_min;
    return o->l2 > 0 ? sqrt(o->l2) : KFAC_GAMMA_MIN_NO_L2;
}

double kfac_momentum_at(const struct kfac_optim_opts *o, long k)
{
    if (o->momentum_schedule == KFAC_MOMENTUM_FIXED)
        return o->momentum;
    double mu = 1.0 - pow(2.0, -1.0 - log2(floor((double)k / 250.0) + 1.0));
    return mu < o->momentum ? mu : o->momentum;
}

int kfac_check_finite(const struct kfac_net *net, const float *v, long k, const char *what)
{
    for (int i = 0; i < net->n_blocks; i++) {
        const struct kfac_layer *l = net->blocks[i];
        if (!kfac_all_finite(l->n_params, v + (l->W - net->params)))
            return kfac_error(KFAC_ENUMERIC,
                              "iteration %ld: the %s of layer %d is not finite; the "
                              "parameters were left unchanged",
                              k, what, l->index + 1);
    }
    return 0;
}

/* 1 when rows m × n (leading dimension ld) of x are all finite. */
static int rows_finite(int m, int n, const float *x, int ld)
{
    for (int i = 0; i < m; i++)
        if (!kfac_all_finite((size_t)n, x + (size_t)i * ld))
            return 0;
    return 1;
}

int kfac_objective_error(const struct kfac_net *net, const struct kfac_batch *b, long k)
{
    const char *tail = "; the parameters were left unchanged";
    if (!rows_finite(b->m, net->d_in, b->x, net->d_in))
        return kfac_error(KFAC_ENUMERIC, "iteration %ld: the objective is not finite: the "
                                         "batch's inputs are not%s",
                          k, tail);
    for (int i = 0; i < net->n_layers; i++) {
        const struct kfac_layer *l = &net->layers[i];
        if (!rows_finite(b->m, l->out_size, l->out, l->ld_out))
            return kfac_error(KFAC_ENUMERIC, "iteration %ld: the objective is not finite: the "
                                             "outputs of layer %d are the first that are not%s",
                              k, l->index + 1, tail);
    }
    if (!rows_finite(b->m, net->d_out, b->t, net->d_out))
        return kfac_error(KFAC_ENUMERIC, "iteration %ld: the objective is not finite: the "
                                         "batch's targets are not%s",
                          k, tail);
    return kfac_error(KFAC_ENUMERIC, "iteration %ld: the objective is not finite: the loss "
                                     "overflowed%s",
                      k, tail);
}

double kfac_fisher_dot(const struct kfac_net *net, enum kfac_loss loss, int m, const float *jv,
                       const float *jw, float *scratch)
{
    size_t n = (size_t)m * (size_t)net->d_out;
    kfac_loss_fisher_mul(loss, m, net->d_out, kfac_net_output(net), jw, scratch);
    return kfac_dot(n, jv, scratch) / m;
}

double kfac_model_change(const double *C, const double *g, double alpha, double mu)
{
    return 0.5 * (alpha * alpha * C[0] + 2.0 * alpha * mu * C[1] + mu * mu * C[3]) +
           alpha * g[0] + mu * g[1];
}

double kfac_model_solve(const double *C, const double *g, int n, double *alpha, double *mu)
{
    double det = C[0] * C[3] - C[1] * C[2];
    /* Positive definite to working precision; otherwise the previous step adds nothing the
     * model can trust, and the 1-D solve along Δ is used. */
    if (n == 2 && C[3] > 0 && det > 1e-12 * C[0] * C[3]) {
        *alpha = -(C[3] * g[0] - C[1] * g[1]) / det;
        *mu = -(C[0] * g[1] - C[2] * g[0]) / det;
    } else {
        *alpha = C[0] > 0 ? -g[0] / C[0] : 0.0;
        *mu = 0.0;
    }
    return 0.5 * (*alpha * g[0] + *mu * g[1]);
}

double kfac_lm_lambda(double lambda, double rho, long T1, double lambda_min)
{
    double omega = pow(19.0 / 20.0, (double)T1);
    if (isnan(rho) || rho < 0.25)
        lambda /= omega;
    else if (rho > 0.75)
        lambda *= omega;
    return lambda > lambda_min ? lambda : lambda_min;
}

int kfac_optim_new(const struct kfac_optim_opts *opts, struct kfac_net *net, enum kfac_loss loss,
                   const struct kfac_rng *rng, struct kfac_optim **out)
{
    switch (opts->type) {
    case KFAC_OPTIM_SGD:
        *out = kfac_sgd_new(opts, net, loss);
        return 0;
    case KFAC_OPTIM_KFAC:
        /* The coupling of consecutive layers needs their cases in the same rows. */
        for (int i = 0; opts->curvature == KFAC_CURVATURE_TRIDIAGONAL && i < net->n_layers; i++)
            if (net->layers[i].ops != &kfac_dense_ops)
                return kfac_error(KFAC_EINVAL, "optimizer.curvature = kfac-tridiag needs dense "
                                               "layers only, but layer %d is %s",
                                  i + 1, net->layers[i].ops->name);
        *out = kfac_kfac_new(opts, net, loss, rng);
        return 0;
    }
    return kfac_error(KFAC_EINVAL, "optimizer.type: unknown optimiser %d", opts->type);
}

double kfac_optim_bytes(const struct kfac_optim_opts *opts, const struct kfac_net *net,
                        int max_batch)
{
    double n = (double)net->n_params;
    if (opts->type != KFAC_OPTIM_KFAC)
        return 2 * n * sizeof(float); /* SGD's velocity and θ */
    /* δ, its candidate, the best one and the previous step; J·δ₀ and a scratch. */
    return (4 * n + 2.0 * max_batch * net->d_out) * sizeof(float) +
           kfac_curvature_bytes(net, opts->curvature == KFAC_CURVATURE_TRIDIAGONAL);
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
