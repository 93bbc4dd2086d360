/*
 * optim_new.c: making the optimiser a configuration selects, and what it will allocate
 * (see optim.h): the one place that knows every optimiser, so that the optimisers and
 * what they share (optim.c) do not know one another.
 */
#include "kfac/curvature.h"
#include "kfac/optim.h"
#include "kfac/status.h"

int kfac_optim_new(const struct kfac_optim_opts *opts, struct kfac_net *net, enum kfac_loss loss,
                   const struct kfac_rng *rng, struct kfac_optim **out)
{
    switch (opts->type) {
    case KFAC_OPTIM_SGD: *out = kfac_sgd_new(opts, net, loss); return 0;
    case KFAC_OPTIM_KFAC:
        /* The coupling of consecutive layers needs their cases in the same rows. */
        for (int i = 0; opts->curvature == KFAC_CURVATURE_TRIDIAGONAL && i < net->n_layers; i++)
            if (!net->layers[i].ops->couples)
                return kfac_error(KFAC_EINVAL,
                                  "optimizer.curvature = kfac-tridiag needs dense "
                                  "layers only, but layer %d is %s",
                                  i + 1, net->layers[i].ops->name);
        if (opts->inverse == KFAC_INVERSE_CHOLESKY &&
            opts->curvature == KFAC_CURVATURE_TRIDIAGONAL)
            return kfac_error(KFAC_EINVAL, "optimizer.inverse = cholesky: optimizer.curvature = "
                                           "kfac-tridiag needs the factors' eigendecompositions; "
                                           "use eigen or auto");
        if (opts->inverse_precision == KFAC_INVERSE_FLOAT && !kfac_inverses_by_cholesky(opts))
            return kfac_error(KFAC_EINVAL, "optimizer.inverse_precision = float sets the Cholesky "
                                           "inversions' arithmetic, but the inverses here come "
                                           "from eigendecompositions (optimizer.inverse = %s%s), "
                                           "which are kept in double",
                              opts->inverse == KFAC_INVERSE_EIGEN ? "eigen" : "auto",
                              opts->inverse == KFAC_INVERSE_EIGEN
                                  ? ""
                                  : " with optimizer.curvature = kfac-tridiag");
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
    /* Δ for each γ tried, δ's candidate, the best one and the previous step; J·δ₀ and a
     * scratch for a chunk. */
    double proposals = opts->gamma_every > 0 ? 3 : 1, variant = 0;
    if (opts->curvature == KFAC_CURVATURE_TRIDIAGONAL)
        variant = kfac_curvature_tridiag_bytes(net);
    else if (opts->gamma_every > 0) /* the other candidates' inverses */
        variant = kfac_curvature_spare_bytes(net, KFAC_SPARE_INVERSES);
    if (opts->curvature == KFAC_CURVATURE_KFOC) {
        int max_cases, kept;
        kfac_kfoc_room(opts, max_batch, kfac_comm_size(net->comm), &max_cases, &kept);
        variant += kfac_curvature_kfoc_bytes(net, max_cases, kept);
    }
    return ((proposals + 3) * n + 2.0 * max_batch * net->d_out) * sizeof(float) +
           kfac_curvature_bytes(net) + variant;
}
