/*
 * optim.h: optimisers. An optimiser owns one whole iteration: it evaluates the
 * mini-batch objective and gradient (and whatever curvature it needs) and moves the
 * network's parameters. Its state (velocity, curvature) lives with it, never in layers.
 *
 * The objective is h(θ) = (1/m) Σ_cases ℓ + (η/2)‖θ‖², η the L2 weight on all parameters.
 * After each step the network's parameter block holds the new iterate θ.
 */
#ifndef KFAC_OPTIM_H
#define KFAC_OPTIM_H

#include "kfac/data.h"
#include "kfac/loss.h"
#include "kfac/net.h"

enum kfac_optim_type {
    KFAC_OPTIM_SGD     /* SGD with Nesterov momentum */
};

enum kfac_momentum_schedule {
    KFAC_MOMENTUM_FIXED,     /* μ = momentum */
    KFAC_MOMENTUM_SUTSKEVER  /* μ_k = min(1 − 2^(−1−log2(⌊k/250⌋+1)), momentum) */
};

/* The [optimizer] section of a configuration. */
struct kfac_optim_opts {
    int type;                 /* enum kfac_optim_type */
    double learning_rate;     /* ε */
    double momentum;          /* μ, or its cap under the Sutskever schedule */
    int momentum_schedule;    /* enum kfac_momentum_schedule */
    double l2;                /* η */
};

/* The mini-batch objective h at the current parameters; when want_grad is set the
 * network's gradient block receives ∇h. b->m must not exceed the network's max_batch. */
double kfac_objective(struct kfac_net *net, enum kfac_loss loss, double l2,
                      const struct kfac_batch *b, int want_grad);

/* μ_k of the momentum schedule (k 1-based). */
double kfac_momentum_at(const struct kfac_optim_opts *o, long k);

struct kfac_optim;

struct kfac_optim_ops {
    const char *name;
    const char *const *columns;  /* names of the figures step() reports, NULL-terminated */
    /* One iteration k (1-based) on batch b: sets *objective (h at the point where the gradient
     * was taken) and figures (one per column). On KFAC_ENUMERIC the parameters are unchanged. */
    int (*step)(struct kfac_optim *o, const struct kfac_batch *b, long k, double *objective,
                double *figures);
    void (*free)(struct kfac_optim *o);
};

struct kfac_optim {
    const struct kfac_optim_ops *ops;
    struct kfac_net *net;       /* not owned */
    enum kfac_loss loss;
    struct kfac_optim_opts opts;
};

/* Makes the optimiser the options select for net and loss. */
int kfac_optim_new(const struct kfac_optim_opts *opts, struct kfac_net *net, enum kfac_loss loss,
                   struct kfac_optim **out);
void kfac_optim_free(struct kfac_optim *o);

/* The number of figures (log columns) the optimiser reports. */
int kfac_optim_n_columns(const struct kfac_optim *o);

/* KFAC_ENUMERIC with a message naming the iteration and the first layer whose gradient
 * block is not finite, or 0 when the whole gradient is finite. */
int kfac_check_gradient(const struct kfac_net *net, long k);

/* SGD with Nesterov momentum (optim_sgd.c). */
struct kfac_optim *kfac_sgd_new(const struct kfac_optim_opts *opts, struct kfac_net *net,
                                enum kfac_loss loss);

#endif
