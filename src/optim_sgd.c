/*
 * optim_sgd.c: the baseline, SGD with Nesterov momentum (Sutskever et al. 2013):
 *     v ← μ v − ε ∇h(θ + μ v),   θ ← θ + v
 * with a fixed μ or Sutskever's schedule. The gradient is taken at the look-ahead point;
 * between steps the parameter block holds θ itself.
 */
#include "kfac/mat.h"
#include "kfac/optim.h"
#include "kfac/status.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

struct sgd {
    struct kfac_optim base;
    float *velocity;   /* n_params: v */
    float *theta;      /* n_params: θ while the parameters hold the look-ahead point */
};

static const char *const sgd_columns[] = {"lr", "mu", "grad_norm", "step_norm", NULL};

static int sgd_step(struct kfac_optim *o, const struct kfac_batch *b, long k, double *objective,
                    double *figures)
{
    struct sgd *s = (struct sgd *)o;
    struct kfac_net *net = o->net;
    int n = (int)net->n_params;
    float mu = (float)kfac_momentum_at(&o->opts, k), lr = (float)o->opts.learning_rate;
    memcpy(s->theta, net->params, (size_t)n * sizeof(float));
    net->be->saxpy(n, mu, s->velocity, net->params);
    double h = kfac_objective(net, o->loss, o->opts.l2, b, 1);
    double grad_sq;
    int rc = isfinite(h) ? kfac_check_finite(net, net->grads, k, "gradient", &grad_sq)
                         : kfac_objective_error(net, b, k);
    if (rc) {
        memcpy(net->params, s->theta, (size_t)n * sizeof(float));
        return rc;
    }
    net->be->sscal(n, mu, s->velocity);
    net->be->saxpy(n, -lr, net->grads, s->velocity);
    memcpy(net->params, s->theta, (size_t)n * sizeof(float));
    net->be->saxpy(n, 1.0f, s->velocity, net->params);
    *objective = h;
    figures[0] = lr;
    figures[1] = mu;
    figures[2] = sqrt(grad_sq);
    figures[3] = sqrt(kfac_sumsq((size_t)n, s->velocity));
    return 0;
}

static void sgd_state(struct kfac_optim *o, struct kfac_state *st)
{
    struct sgd *s = (struct sgd *)o;
    kfac_state_add(st, "sgd.velocity", KFAC_STATE_F32, s->velocity, o->net->n_params);
}

static void sgd_free(struct kfac_optim *o)
{
    struct sgd *s = (struct sgd *)o;
    kfac_floats_free(s->velocity);
    kfac_floats_free(s->theta);
    free(s);
}

static const struct kfac_optim_ops sgd_ops = {
    .name = "sgd",
    .columns = sgd_columns,
    .step = sgd_step,
    .state = sgd_state,
    .free = sgd_free,
};

struct kfac_optim *kfac_sgd_new(const struct kfac_optim_opts *opts, struct kfac_net *net,
                                enum kfac_loss loss)
{
    struct sgd *s = kfac_xcalloc(1, sizeof *s);
    s->base.ops = &sgd_ops;
    s->base.net = net;
    s->base.loss = loss;
    s->base.opts = *opts;
    s->velocity = kfac_floats_new(net->n_params);
    s->theta = kfac_floats_new(net->n_params);
    return &s->base;
}
