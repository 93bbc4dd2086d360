/*
 * optim.c: what all optimisers share: the mini-batch objective and gradient, the
 * momentum schedule, gradient checks, and the calls through an optimiser's table (see
 * optim.h). Construction by type is optim_new.c's.
 */
#include "kfac/optim.h"
#include "kfac/mat.h"
#include "kfac/status.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

static double objective(struct kfac_net *net, enum kfac_loss loss, double l2,
                        const struct kfac_batch *b, int want_grad,
                        void (*each)(void *ctx, int first, int mc), void *ctx)
{
    int m = b->m, n = net->d_out, chunk = net->max_batch, total = kfac_batch_total(b);
    double sum = 0;
    if (want_grad && m == 0) /* a rank with no case of a batch smaller than the ranks */
        memset(net->grads, 0, net->n_params * sizeof *net->grads);
    /* The last chunk first, so that the buffers end with the first cases, which the
     * statistics and the quadratic model start from. */
    for (int first = m > 0 ? (m - 1) / chunk * chunk : -1; first >= 0; first -= chunk) {
        int mc = m - first < chunk ? m - first : chunk;
        const float *x = b->x + (size_t)first * net->d_in, *t = b->t + (size_t)first * n;
        kfac_net_forward(net, mc, x);
        sum += net->be->loss_sum(loss, mc, n, kfac_net_logits(net), t);
        if (want_grad) {
            net->be->loss_grad(loss, mc, n, kfac_net_output(net), t, kfac_net_output_grad(net));
            kfac_net_backward(net, mc, 1.0f / (float)total,
                              first + mc == m ? KFAC_GRADS_SET : KFAC_GRADS_ADD);
            if (each)
                each(ctx, first, mc);
        }
    }
    /* The ranks' shares: the gradient block in one call, before the L2 term that every
     * rank would add alike. */
    kfac_comm_sum_doubles(net->comm, KFAC_COMM_SCALARS, &sum, 1);
    if (want_grad)
        kfac_comm_sum_floats(net->comm, KFAC_COMM_GRADIENT, net->grads, net->n_params);
    double h = sum / total;
    if (l2 > 0)
        h += 0.5 * l2 * kfac_sumsq(net->n_params, net->params);
    if (want_grad && l2 > 0)
        net->be->saxpy((int)net->n_params, (float)l2, net->params, net->grads);
    return h;
}

double kfac_objective(struct kfac_net *net, enum kfac_loss loss, double l2,
                      const struct kfac_batch *b, int want_grad)
{
    return objective(net, loss, l2, b, want_grad, NULL, NULL);
}

double kfac_objective_each(struct kfac_net *net, enum kfac_loss loss, double l2,
                           const struct kfac_batch *b,
                           void (*each)(void *ctx, int first, int mc), void *ctx)
{
    return objective(net, loss, l2, b, 1, each, ctx);
}

double kfac_lambda_min(const struct kfac_optim_opts *o)
{
    if (o->lambda_min > 0)
        return o->lambda_min;
    return o->l2 < KFAC_DAMPING_MIN ? KFAC_DAMPING_MIN - o->l2 : 0.0;
}

double kfac_gamma_min(const struct kfac_optim_opts *o)
{
    if (o->gamma_min > 0)
        return o->gamma_min;
    return o->l2 > 0 ? sqrt(o->l2) : KFAC_GAMMA_MIN_NO_L2;
}

double kfac_gamma_start(const struct kfac_optim_opts *o)
{
    if (o->gamma > 0)
        return o->gamma;
    double gamma = sqrt(o->lambda + o->l2);
    if (o->start == KFAC_START_WARMUP)
        gamma = fmin(fmax(gamma, kfac_gamma_min(o)), o->gamma_max);
    return gamma;
}

int kfac_inverses_by_cholesky(const struct kfac_optim_opts *o)
{
    return o->inverse == KFAC_INVERSE_CHOLESKY ||
           (o->inverse == KFAC_INVERSE_AUTO && o->curvature != KFAC_CURVATURE_TRIDIAGONAL);
}

double kfac_momentum_at(const struct kfac_optim_opts *o, long k)
{
    if (o->momentum_schedule == KFAC_MOMENTUM_FIXED)
        return o->momentum;
    double mu = 1.0 - pow(2.0, -1.0 - log2(floor((double)k / 250.0) + 1.0));
    return mu < o->momentum ? mu : o->momentum;
}

int kfac_check_finite(const struct kfac_net *net, const float *v, long k, const char *what,
                      double *sumsq)
{
    /* A float's square is below 1.2e77, so n of them cannot overflow a double: the sum is
     * NaN or infinite only for a NaN or an infinity among them. */
    *sumsq = kfac_sumsq(net->n_params, v);
    if (isfinite(*sumsq))
        return 0;
    for (int i = 0; i < net->n_blocks; i++) {
        const struct kfac_layer *l = net->blocks[i];
        if (!kfac_all_finite(l->n_params, v + (l->W - net->params)))
            return kfac_error(KFAC_ENUMERIC,
                              "iteration %ld: the %s of layer %d is not finite; the "
                              "parameters were left unchanged",
                              k, what, l->index + 1);
    }
    abort(); /* a non-finite sum of finite blocks: the blocks do not cover v */
}

/* 1 when rows m × n (leading dimension ld) of x are all finite. */
static int rows_finite(int m, int n, const float *x, int ld)
{
    for (int i = 0; i < m; i++)
        if (!kfac_all_finite((size_t)n, x + (size_t)i * ld))
            return 0;
    return 1;
}

int kfac_objective_error(struct kfac_net *net, const struct kfac_batch *b, long k)
{
    const char *tail = "; the parameters were left unchanged";
    if (!rows_finite(b->m, net->d_in, b->x, net->d_in))
        return kfac_error(KFAC_ENUMERIC, "iteration %ld: the objective is not finite: the "
                                         "batch's inputs are not%s",
                          k, tail);
    /* The lowest layer with a non-finite output in any chunk. */
    int bad = net->n_layers, chunk = net->max_batch;
    for (int first = 0; first < b->m && bad > 0; first += chunk) {
        int mc = b->m - first < chunk ? b->m - first : chunk;
        kfac_net_forward(net, mc, b->x + (size_t)first * net->d_in);
        for (int i = 0; i < bad; i++) {
            const struct kfac_layer *l = &net->layers[i];
            if (!rows_finite(mc, l->out_size, l->out, l->ld_out)) {
                bad = i;
                break;
            }
        }
    }
    if (bad < net->n_layers)
        return kfac_error(KFAC_ENUMERIC, "iteration %ld: the objective is not finite: the "
                                         "outputs of layer %d are the first that are not%s",
                          k, net->layers[bad].index + 1, tail);
    if (!rows_finite(b->m, net->d_out, b->t, net->d_out))
        return kfac_error(KFAC_ENUMERIC, "iteration %ld: the objective is not finite: the "
                                         "batch's targets are not%s",
                          k, tail);
    return kfac_error(KFAC_ENUMERIC, "iteration %ld: the objective is not finite: the loss "
                                     "overflowed%s",
                      k, tail);
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
