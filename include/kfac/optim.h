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

#include "kfac/checkpoint.h"
#include "kfac/curvature.h"
#include "kfac/data.h"
#include "kfac/loss.h"
#include "kfac/net.h"
#include "kfac/rng.h"

enum kfac_optim_type {
    KFAC_OPTIM_SGD,    /* SGD with Nesterov momentum */
    KFAC_OPTIM_KFAC    /* K-FAC natural gradient (optim_kfac.c) */
};

enum kfac_curvature_type {
    KFAC_CURVATURE_BLOCK_DIAGONAL,  /* one Kronecker-factored block per layer, K-FAC's factors */
    KFAC_CURVATURE_KFOC,            /* the same blocks with K-FOC_running factors */
    KFAC_CURVATURE_TRIDIAGONAL      /* K-FAC's factors and the cross factors of consecutive
                                     * layers: F̂⁻¹ block tridiagonal (paper §3.3) */
};

enum kfac_fisher {
    KFAC_FISHER_SAMPLED,    /* G from targets drawn from the model: the true Fisher */
    KFAC_FISHER_EMPIRICAL   /* G from the real targets */
};

enum kfac_step_rule {
    KFAC_STEP_MODEL,        /* α, μ minimise the exact-Fisher quadratic model */
    KFAC_STEP_FIXED         /* α = learning_rate, μ = momentum */
};

enum kfac_gamma_rule {
    KFAC_GAMMA_MODEL,       /* keep the γ whose step has the lowest M(δ) − M(0) */
    KFAC_GAMMA_OBJECTIVE    /* keep the γ whose step has the lowest h(θ + δ) */
};

enum kfac_start {
    KFAC_START_PAPER,       /* λ0 and γ0 = sqrt(λ0 + η) as KFAC3 has them */
    KFAC_START_WARMUP       /* λ's warm-up, and γ0 within [γ_min, γ_max] (REFERENCE.md §5) */
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
    /* K-FAC (REFERENCE.md §2–§5 names and defaults): */
    int curvature;            /* enum kfac_curvature_type */
    int fisher;               /* enum kfac_fisher */
    double stats_fraction;    /* τ1: statistics from the first ⌈τ1 m⌉ cases */
    double model_fraction;    /* τ2: the quadratic model on the first ⌈τ2 m⌉ cases */
    double stats_decay;       /* the cap on ε */
    long lambda_every;        /* T1 (0: λ fixed) */
    int start;                /* enum kfac_start */
    double lambda_warmup;     /* the warm-up's factor on λ while ρ > 3/4 */
    long lambda_warmup_max;   /* the warm-up's last iteration at the latest */
    long gamma_every;         /* T2 (0: γ fixed) */
    long inverse_every;       /* T3 */
    int inverse;              /* enum kfac_inverse_method */
    int inverse_precision;    /* enum kfac_inverse_precision (the Cholesky method's) */
    double lambda;            /* λ0 */
    double lambda_min;        /* 0 selects kfac_lambda_min()'s default */
    double gamma;             /* γ0; 0 selects sqrt(λ0 + η) */
    double gamma_min;         /* 0 selects kfac_gamma_min()'s default */
    double gamma_max;
    int gamma_rule;           /* enum kfac_gamma_rule */
    int pi_norm;              /* enum kfac_pi_norm */
    int step_rule;            /* enum kfac_step_rule */
    int use_momentum;         /* 0: μ = 0, the model is one-dimensional */
    int kfoc_max_iter;        /* K-FOC's n_max */
    double kfoc_tol;          /* K-FOC's δ */
    int kfoc_normalise;       /* enum kfac_kfoc_normalise: the unit-norm side of its fits */
    int kfoc_average;         /* enum kfac_kfoc_average: how its running factors average */
    /* On several ranks (train.preconditioning): 0, every rank forms every layer's damped
     * inverses and preconditions all of the gradient; 1, each its share of the layers,
     * then the preconditioned blocks are gathered (kfac_curvature_share_layers()). The
     * same results to the bit either way. */
    int by_layer;
    /* The largest whole batch the run takes (the trainer sets it; 0: none beyond a chunk on
     * every rank). It sizes the room K-FOC keeps for its statistics cases when a rank's
     * share of them exceeds a chunk. */
    int max_batch;
};

/* The mini-batch objective h at the current parameters; when want_grad is set the
 * network's gradient block receives ∇h. The passes take chunks of at most the network's
 * max_batch cases, the last chunk first: afterwards the layer buffers hold the passes of
 * the batch's first min(m, max_batch) cases (forward, and backward with want_grad). */
double kfac_objective(struct kfac_net *net, enum kfac_loss loss, double l2,
                      const struct kfac_batch *b, int want_grad);

/* kfac_objective() with the gradient, calling each(ctx, first, mc) after the backward pass
 * of each chunk [first, first + mc) of the batch, while the layer buffers hold it (last
 * chunk first): a second pass over the same cases needs no forward pass of its own. */
double kfac_objective_each(struct kfac_net *net, enum kfac_loss loss, double l2,
                           const struct kfac_batch *b,
                           void (*each)(void *ctx, int first, int mc), void *ctx);

/* ⌈fraction · m⌉ within [1, m]: the cases of a batch of m that the statistics (τ1) or the
 * quadratic model (τ2) take. */
int kfac_fraction_cases(double fraction, int m);

/* The floor on γ when optimizer.gamma_min is 0 and η is too: without one, γ can fall
 * until the damped inverses of vanishing factors overflow. */
#define KFAC_GAMMA_MIN_NO_L2 1e-4

/* The least damping λ + η the Levenberg-Marquardt rule leaves when optimizer.lambda_min
 * is 0. ρ is measured on the batch the model was fitted to, and it can stay above 3/4
 * while λ falls without bound; with η = 0 nothing then damps the model's directions of
 * vanishing curvature, and the steps can grow until they overflow. (A 64-16-64 autoencoder
 * without L2, batch 50, OpenBLAS's Prescott kernels: at iteration 6,743 without a floor,
 * 10,300 with 1e-8, not in 100,000 with 1e-7, 1e-6 or 1e-5.) */
#define KFAC_DAMPING_MIN 1e-6

/* λ_min: o->lambda_min when positive; else what keeps λ + η at KFAC_DAMPING_MIN or more
 * (0 when η is that already, as in the paper's runs, where η is 1e-5 or 5e-6: REFERENCE.md
 * §5, §9). */
double kfac_lambda_min(const struct kfac_optim_opts *o);

/* γ_min: o->gamma_min when positive; else sqrt(η) (REFERENCE.md §5), or
 * KFAC_GAMMA_MIN_NO_L2 when η = 0. */
double kfac_gamma_min(const struct kfac_optim_opts *o);

/* γ0: o->gamma when positive; else sqrt(λ0 + η), which the warm-up start clips to
 * [γ_min, γ_max], the range the γ rule keeps it in afterwards. */
double kfac_gamma_start(const struct kfac_optim_opts *o);

/* 1 when the damped inverses come by Cholesky inversions, 0 when from eigendecompositions:
 * optimizer.inverse as given, auto resolved (enum kfac_inverse_method). */
int kfac_inverses_by_cholesky(const struct kfac_optim_opts *o);

/* μ_k of the momentum schedule (k 1-based). */
double kfac_momentum_at(const struct kfac_optim_opts *o, long k);

struct kfac_optim;

struct kfac_optim_ops {
    const char *name;
    const char *const *columns;  /* names of the figures step() reports, NULL-terminated */
    /* One iteration k (1-based) on batch b: sets *objective (h at the point where the gradient
     * was taken) and figures (one per column). On KFAC_ENUMERIC the parameters and the
     * optimiser's state are as before the call (K-FAC: factors, random stream, γ), so a
     * retry of k starts from where this attempt did. */
    int (*step)(struct kfac_optim *o, const struct kfac_batch *b, long k, double *objective,
                double *figures);
    /* After a step failed with KFAC_ENUMERIC: makes the next try more cautious and returns
     * the new damping λ (K-FAC multiplies λ by 10). NULL: nothing to raise (SGD). */
    double (*raise_damping)(struct kfac_optim *o);
    /* Lists everything a later step depends on (checkpoint.h); scratch is left out. */
    void (*state)(struct kfac_optim *o, struct kfac_state *s);
    void (*free)(struct kfac_optim *o);
};

struct kfac_optim {
    const struct kfac_optim_ops *ops;
    struct kfac_net *net;       /* not owned */
    enum kfac_loss loss;
    struct kfac_optim_opts opts;
};

/* Makes the optimiser the options select for net and loss, after kfac_net_reserve() (its
 * buffers are sized for net->max_batch cases). rng seeds the optimiser's own stream (the
 * targets K-FAC samples); it is copied, not kept. */
int kfac_optim_new(const struct kfac_optim_opts *opts, struct kfac_net *net, enum kfac_loss loss,
                   const struct kfac_rng *rng, struct kfac_optim **out);
void kfac_optim_free(struct kfac_optim *o);

/* A lower bound of the bytes kfac_optim_new() allocates for net with buffers for
 * max_batch cases: its vectors and, for K-FAC, the factors (curvature.h). */
double kfac_optim_bytes(const struct kfac_optim_opts *opts, const struct kfac_net *net,
                        int max_batch);

/* The number of figures (log columns) the optimiser reports. */
int kfac_optim_n_columns(const struct kfac_optim *o);

/* KFAC_ENUMERIC with a message naming the iteration, `what` ("gradient", "step") and the
 * first layer whose block of v (n_params, laid out as net->params) is not finite, or 0
 * when all of v is finite, with its sum of squares in *sumsq: one pass over v decides
 * (its sum of squares is finite exactly when every element is), a second one only finds
 * the layer. */
int kfac_check_finite(const struct kfac_net *net, const float *v, long k, const char *what,
                      double *sumsq);

/* KFAC_ENUMERIC for a non-finite objective of batch b at iteration k: the message names
 * what went first: the batch's inputs, a layer's outputs (found by running the forward
 * pass again, chunk by chunk), the batch's targets, or the loss itself. */
int kfac_objective_error(struct kfac_net *net, const struct kfac_batch *b, long k);

/* The quadratic model (REFERENCE.md §4). (1/m) Σ_cases (J v)ᵀ F_R (J w) for the first m
 * cases of the last forward pass: jv and jw (m × d_out) are J·v and J·w at the logits
 * (kfac_net_jvp), F_R the loss's output Fisher at the predictions. scratch: m × d_out. */
double kfac_fisher_dot(const struct kfac_net *net, enum kfac_loss loss, int m, const float *jv,
                       const float *jw, float *scratch);

/* α and μ minimising M(αΔ + μδ₀) = ½ [α μ] C [α μ]ᵀ + [α μ]·g, where C (2 × 2, row-major) holds
 * ΔᵀCΔ, ΔᵀCδ₀, δ₀ᵀCΔ, δ₀ᵀCδ₀ and g = (∇hᵀΔ, ∇hᵀδ₀). With n = 1 (no previous step) or a
 * 2 × 2 system that is not positive definite, the 1-D solve α = −g₀/C₀₀, μ = 0. Returns
 * M(δ) − M(0) = ½(α g₀ + μ g₁). */
double kfac_model_solve(const double *C, const double *g, int n, double *alpha, double *mu);

/* M(αΔ + μδ₀) − M(0) for any α, μ (the fixed-step rule). */
double kfac_model_change(const double *C, const double *g, double alpha, double mu);

/* The Levenberg–Marquardt rule applied every T1 iterations: ρ < 1/4 (or NaN) multiplies
 * λ by (20/19)^T1, ρ > 3/4 by (19/20)^T1; the result is at least lambda_min. */
double kfac_lm_lambda(double lambda, double rho, long T1, double lambda_min);

/* The warm-up's rule, before the paper's (REFERENCE.md §4): while *warm, every iteration's
 * ρ > 3/4 multiplies λ by factor (< 1; the result at least lambda_min); the first ρ that
 * is not (a NaN included) ends the warm-up (*warm = 0) and is taken by kfac_lm_lambda()
 * with T1. Returns the new λ. */
double kfac_lm_lambda_warmup(double lambda, double rho, double factor, long T1,
                             double lambda_min, int *warm);

/* The γ values K-FAC tries every T2 iterations (REFERENCE.md §5), in the order it tries
 * them: out[0] = max(ω₂γ, γ_min), out[1] = min(γ/ω₂, γ_max), out[2] = γ, with
 * ω₂ = (19/20)^(T2/2); the current γ goes last, so that its inverses are still in place when
 * it is kept. Returns 3. */
int kfac_gamma_candidates(double gamma, long T2, double gamma_min, double gamma_max,
                          double *out);

/* SGD with Nesterov momentum (optim_sgd.c). */
struct kfac_optim *kfac_sgd_new(const struct kfac_optim_opts *opts, struct kfac_net *net,
                                enum kfac_loss loss);

/* K-FAC (optim_kfac.c). */
struct kfac_optim *kfac_kfac_new(const struct kfac_optim_opts *opts, struct kfac_net *net,
                                 enum kfac_loss loss, const struct kfac_rng *rng);

/* K-FOC's room for chunks of `chunk` cases on `ranks` ranks: the most cases its fits take
 * (of all ranks together) and the cases a rank keeps chunk by chunk (0 when its share of
 * the statistics cases of opts->max_batch fits in one chunk). */
void kfac_kfoc_room(const struct kfac_optim_opts *opts, int chunk, int ranks, int *max_cases,
                    int *kept);

#endif
