/*
 * optim_kfac.c: K-FAC (Martens & Grosse 2015) as REFERENCE.md §2–§5 describe it. One
 * iteration k on a mini-batch of m cases:
 *   1. h(θ) and ∇h (L2 included) from a forward and a backward pass;
 *   2. Kronecker-factor statistics from the first ⌈τ1 m⌉ cases, with output gradients
 *      drawn from the model (or the real ones: the empirical Fisher), averaged with
 *      ε = min(1 − 1/k, cap); eigendecompositions on k ≤ 3 and every T3 iterations;
 *   3. for each γ tried (three every T2 iterations, else one), Δ = −F̂⁻¹∇h, then the
 *      exact-Fisher quadratic model over span{Δ, δ₀} on the first ⌈τ2 m⌉ cases for all
 *      of them in one pass (forward-mode products, no backward pass), which gives α, μ
 *      and M(δ) − M(0) for each;
 *   4. θ ← θ + δ (never rejected), and every T1 iterations λ from ρ; during the warm-up
 *      (start = warmup, REFERENCE.md §5), every iteration until ρ ≤ 3/4.
 * Nothing non-finite reaches the parameters: the gradient, the statistics and the step
 * are checked, and a failure leaves θ as it was.
 * Every pass takes chunks of at most the network's max_batch cases (train.chunk_size):
 * sums (the gradient, the statistics, the model's inner products) add up over chunks, and
 * on several ranks (comm.h) over the ranks' shares of the batch, one call each; every
 * decision is taken from the summed figures, so every rank takes the same step. And
 * a chunk whose forward pass the layer buffers still hold is not run again, so a batch
 * that fits in one chunk costs what it did before chunks.
 */
#include "kfac/curvature.h"
#include "kfac/log.h"
#include "kfac/mat.h"
#include "kfac/optim.h"
#include "kfac/status.h"

#include <float.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

struct kfac {
    struct kfac_optim base;
    struct kfac_curvature *curv;
    struct kfac_rng rng;       /* sampled targets */
    double lambda, lambda_min, gamma, gamma_min;
    double kfoc_cases;         /* cases in K-FOC's running mean (kfoc_average = running) */
    int have_prev;             /* prev holds the previous step δ₀ */
    int warm;                  /* λ's warm-up has not ended (start = warmup) */
    float *delta[3];           /* n_params each: Δ for each γ tried (one unless T2 > 0) */
    float *cand;               /* n_params: δ for the γ being tried */
    float *best;               /* n_params: the chosen δ */
    float *prev;               /* n_params: δ₀ */
    float *theta;              /* n_params: θ while candidates are evaluated (objective rule) */
    int chunk;                 /* the network's max_batch when this was made: the most
                                * cases the statistics and the model take per pass */
    float *j_prev;             /* chunk × d_out: J δ₀ of a chunk */
    float *scratch;            /* chunk × d_out */
    /* The cases of the batch whose forward pass the layer buffers hold: [held, held +
     * n_held) at the step's θ. */
    int held, n_held;
};

/* K-FOC logs one more column: the largest power-iteration count of the batch's fits. */
static const char *const kfac_columns[] = {
    "lambda", "gamma", "rho", "alpha", "mu", "model_change", "step_norm", "grad_norm",
    "t_stats", "t_inverse", "t_precond", "t_model", NULL};
static const char *const kfoc_columns[] = {
    "lambda", "gamma", "rho", "alpha", "mu", "model_change", "step_norm", "grad_norm",
    "t_stats", "t_inverse", "t_precond", "t_model", "kfoc_iterations", NULL};
enum { COL_LAMBDA, COL_GAMMA, COL_RHO, COL_ALPHA, COL_MU, COL_MODEL, COL_STEP, COL_GRAD,
       COL_T_STATS, COL_T_INVERSE, COL_T_PRECOND, COL_T_MODEL, COL_KFOC_ITER };

/* --- The quadratic model and λ's rule (optim.h). */

/* Σ_cases (J v)ᵀ F_R (J w) over the first m cases of the layer buffers. */
static double fisher_sum(const struct kfac_net *net, enum kfac_loss loss, int m, const float *jv,
                         const float *jw, float *scratch)
{
    size_t n = (size_t)m * (size_t)net->d_out;
    net->be->loss_fisher_mul(loss, m, net->d_out, kfac_net_output(net), jw, scratch);
    return kfac_dot(n, jv, scratch);
}

double kfac_fisher_dot(const struct kfac_net *net, enum kfac_loss loss, int m, const float *jv,
                       const float *jw, float *scratch)
{
    return fisher_sum(net, loss, m, jv, jw, scratch) / m;
}

double kfac_model_change(const double *C, const double *g, double alpha, double mu)
{
    return 0.5 * (alpha * alpha * C[0] + 2.0 * alpha * mu * C[1] + mu * mu * C[3]) + alpha * g[0] +
           mu * g[1];
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

double kfac_lm_lambda_warmup(double lambda, double rho, double factor, long T1,
                             double lambda_min, int *warm)
{
    if (rho > 0.75) {
        lambda *= factor;
        return lambda > lambda_min ? lambda : lambda_min;
    }
    *warm = 0;
    return kfac_lm_lambda(lambda, rho, T1, lambda_min);
}

int kfac_fraction_cases(double fraction, int m)
{
    int n = (int)ceil(fraction * m - 1e-9);
    return n < 1 ? 1 : n > m ? m : n;
}

/* Makes the layer buffers hold the forward pass of the batch's cases [first, first + mc)
 * at the current θ, running it unless they already do. */
static void hold(struct kfac *s, const struct kfac_batch *b, int first, int mc)
{
    struct kfac_net *net = s->base.net;
    if (first == s->held && mc <= s->n_held)
        return;
    kfac_net_forward(net, mc, b->x + (size_t)first * net->d_in);
    s->held = first;
    s->n_held = mc;
}

/* Step 2's statistics of the first ms cases of the whole batch, of which this rank holds
 * its first `mine`: taken by stats_chunk() in the gradient pass, chunk by chunk while each
 * chunk's forward pass is held, so that they cost no forward pass of their own. */
struct stats_pass {
    struct kfac *s;
    const struct kfac_batch *b;
    uint64_t key;    /* the targets' key (loss.h) */
    int ms, mine;
    int summed;      /* added up over chunks or ranks, rather than taken in one update */
    int keep;        /* K-FOC's, kept chunk by chunk for their fits */
    int started;     /* the batch's statistics have their first chunk */
    double seconds;  /* spent on them */
};

/* Sets up the pass for the batch (drawing its targets' key); KFAC_EINVAL where K-FOC's
 * statistics fit neither in one chunk nor in the room kept for them. */
static int stats_begin(struct kfac *s, const struct kfac_batch *b, long k, struct stats_pass *p)
{
    struct kfac_optim *o = &s->base;
    struct kfac_net *net = o->net;
    int ms = kfac_fraction_cases(o->opts.stats_fraction, kfac_batch_total(b));
    int ranks = kfac_comm_size(net->comm), most = kfac_batch_most(ms, ranks);
    int kfoc = o->opts.curvature == KFAC_CURVATURE_KFOC;
    if (kfoc && most > s->chunk && most > s->curv->kfoc.kept.K)
        return kfac_error(KFAC_EINVAL, "iteration %ld: K-FOC's statistics need all %d cases at "
                                       "once, and a chunk (train.chunk_size) holds %d and the "
                                       "optimiser keeps %d",
                          k, most, s->chunk, s->curv->kfoc.kept.K);
    /* A target per case, keyed by its place in the whole batch (loss.h). */
    uint64_t key = o->opts.fisher == KFAC_FISHER_SAMPLED ? kfac_rng_u64(&s->rng) : 0;
    *p = (struct stats_pass){.s = s, .b = b, .key = key, .ms = ms,
                             .mine = kfac_batch_share(b, ms),
                             .summed = !kfoc && (ranks > 1 || ms > s->chunk),
                             .keep = kfoc && most > s->chunk};
    return 0;
}

/* kfac_objective_each()'s call for the chunk [first, first + mc) that the buffers hold,
 * its gradient's backward pass done: the statistics of its cases among the first mine. */
static void stats_chunk(void *ctx, int first, int mc)
{
    struct stats_pass *p = ctx;
    if (first >= p->mine)
        return;
    struct kfac *s = p->s;
    struct kfac_optim *o = &s->base;
    struct kfac_net *net = o->net;
    double t0 = kfac_log_clock();
    if (mc > p->mine - first)
        mc = p->mine - first;
    /* The empirical Fisher's g are those of the real targets, which the buffers hold. */
    if (o->opts.fisher == KFAC_FISHER_SAMPLED) {
        net->be->loss_sample_grad(o->loss, mc, net->d_out, kfac_net_output(net), p->key,
                                  kfac_batch_place(p->b, first), kfac_batch_step(p->b),
                                  kfac_net_output_grad(net));
        kfac_net_backward(net, mc, 1.0f, KFAC_GRADS_NONE);
    }
    if (p->summed) {
        kfac_curvature_accumulate(s->curv, net, mc, p->ms, !p->started);
        p->started = 1;
    } else if (p->keep) {
        kfac_curvature_keep_kfoc(s->curv, net, first, mc);
    }
    p->seconds += kfac_log_clock() - t0;
}

/* Step 2, after the gradient pass: the statistics merged into the factors; decompositions
 * when due. */
static int update_curvature(struct kfac *s, struct stats_pass *p, long k, double *figures)
{
    struct kfac_optim *o = &s->base;
    struct kfac_net *net = o->net;
    int kfoc = o->opts.curvature == KFAC_CURVATURE_KFOC, ms = p->ms, summed = p->summed;
    double t0 = kfac_log_clock();
    if (summed && p->mine == 0) /* a rank without statistics cases adds zeros */
        kfac_curvature_accumulate(s->curv, net, 0, ms, 1);
    double eps = kfac_stats_decay(k, o->opts.stats_decay);
    if (kfoc && o->opts.kfoc_average == KFAC_KFOC_RUNNING)
        eps = s->kfoc_cases / (s->kfoc_cases + ms);
    int rc = summed ? kfac_curvature_merge_batch(s->curv, eps, k)
                    : kfac_curvature_update(s->curv, p->keep ? NULL : net, p->mine, eps, k);
    if (kfoc) {
        figures[COL_KFOC_ITER] = rc ? NAN : s->curv->kfoc.info.iterations;
        if (!rc)
            s->kfoc_cases += ms;
    }
    double t1 = kfac_log_clock();
    if (!rc && (k <= 3 || k % o->opts.inverse_every == 0))
        rc = kfac_curvature_decompose(s->curv, (enum kfac_pi_norm)o->opts.pi_norm, k);
    figures[COL_T_STATS] = p->seconds + t1 - t0;
    figures[COL_T_INVERSE] = kfac_log_clock() - t1;
    return rc;
}

/* The quadratic model's Fisher sums over the first mq cases of the whole batch, chunk by
 * chunk and over the ranks, for the n_gamma proposals s->delta: sums[i] = Σ (JΔ_i)ᵀ F_R
 * (JΔ_i), sums[n_gamma + i] = Σ (JΔ_i)ᵀ F_R (Jδ₀) and sums[2 n_gamma] = Σ (Jδ₀)ᵀ F_R (Jδ₀)
 * (the last ones zero before a first step). One forward pass per chunk serves every
 * tangent, and one forward-mode pass as many tangents as the buffers hold side by side
 * (all n_tan when n_tan times the chunk's model cases fit in a chunk: an ordinary
 * iteration's two for τ2 ≤ 1/2, a γ trial's four for τ2 ≤ 1/4, when the batch is one
 * chunk); one call sums the ranks'. */
static void model_sums(struct kfac *s, const struct kfac_batch *b, int mq, int n_gamma,
                       double *sums)
{
    struct kfac_net *net = s->base.net;
    enum kfac_loss loss = s->base.loss;
    int chunk = s->chunk, mine = kfac_batch_share(b, mq), d = net->d_out;
    double *dd = sums, *dp = sums + n_gamma, *pp = sums + 2 * n_gamma;
    const float *tangents[4]; /* δ₀ first, when there is one, then each Δ */
    int n_tan = 0, p = s->have_prev;
    if (p)
        tangents[n_tan++] = s->prev;
    for (int i = 0; i < n_gamma; i++)
        tangents[n_tan++] = s->delta[i];
    memset(sums, 0, (size_t)(2 * n_gamma + 1) * sizeof *sums);
    for (int first = 0; first < mine; first += chunk) {
        int mc = mine - first < chunk ? mine - first : chunk, per = chunk / mc;
        hold(s, b, first, mc);
        const float *j_prev = s->j_prev;
        for (int t0 = 0; t0 < n_tan; t0 += per) {
            int nt = n_tan - t0 < per ? n_tan - t0 : per;
            const float *J = kfac_net_jvp(net, mc, nt, tangents + t0);
            for (int t = t0; t < t0 + nt; t++) {
                const float *j = J + (size_t)(t - t0) * mc * d;
                if (p && t == 0) { /* kept for the Δ of later passes */
                    if (nt < n_tan)
                        memcpy(s->j_prev, j, (size_t)mc * d * sizeof *j);
                    else
                        j_prev = j;
                    *pp += fisher_sum(net, loss, mc, j, j, s->scratch);
                    continue;
                }
                dd[t - p] += fisher_sum(net, loss, mc, j, j, s->scratch);
                if (p)
                    dp[t - p] += fisher_sum(net, loss, mc, j, j_prev, s->scratch);
            }
        }
    }
    kfac_comm_sum_doubles(net->comm, KFAC_COMM_SCALARS, sums, (size_t)(2 * n_gamma + 1));
}

/* The step for the proposal Δ (s->delta[i]) with the model's sums for it: cand = αΔ + μδ₀
 * with its model change; *score ranks candidates, *cand_sq = |cand|² (NaN or infinite when
 * cand is not finite). gram: the Gram matrix of Δ, ∇h and (where there is one) δ₀,
 * kfac_gram()'s k × k with k = 3 or 2; c_prev = δ₀ᵀ(F + (λ + η)I)δ₀ from the model's sums. */
static void try_gamma(struct kfac *s, const struct kfac_batch *b, int i, double mq, double dd,
                      double dp, double c_prev, const double *gram, double *alpha, double *mu,
                      double *change, double *score, double *cand_sq)
{
    struct kfac_optim *o = &s->base;
    struct kfac_net *net = o->net;
    size_t n = net->n_params;
    const float *delta = s->delta[i];
    double damping = s->lambda + o->opts.l2;
    int k = s->have_prev ? 3 : 2;
    double C[4], g[2];
    C[0] = dd / mq + damping * gram[0];
    g[0] = gram[1];
    if (s->have_prev) {
        C[1] = C[2] = dp / mq + damping * gram[2];
        C[3] = c_prev;
        g[1] = gram[k + 2]; /* ∇hᵀδ₀ */
    } else {
        C[1] = C[2] = C[3] = g[1] = 0;
    }
    if (o->opts.step_rule == KFAC_STEP_MODEL) {
        *change = kfac_model_solve(C, g, s->have_prev ? 2 : 1, alpha, mu);
    } else {
        *alpha = o->opts.learning_rate;
        *mu = s->have_prev ? o->opts.momentum : 0.0;
        *change = kfac_model_change(C, g, *alpha, *mu);
    }
    /* δ = αΔ + μδ₀ (δ₀ is zero before the first step) */
    *cand_sq = kfac_combine(n, (float)*alpha, delta, (float)*mu, s->prev, s->cand);
    *score = *change;
    if (o->opts.gamma_rule == KFAC_GAMMA_OBJECTIVE) {
        memcpy(s->theta, net->params, n * sizeof *s->theta);
        net->be->saxpy((int)n, 1.0f, s->cand, net->params);
        *score = kfac_objective(net, o->loss, o->opts.l2, b, 0);
        if (isnan(*score))
            *score = INFINITY;
        memcpy(net->params, s->theta, n * sizeof *s->theta);
        s->n_held = 0; /* the buffers hold θ + δ's passes now */
    }
}

/* What an attempt may change besides the factors, as it was before the attempt. */
struct attempt {
    struct kfac_rng rng;
    double gamma, kfoc_cases;
};

/* After a failed attempt: the state before it (λ aside, which the caller raises), and rc. */
static int undo(struct kfac *s, int rc, const struct attempt *before)
{
    kfac_curvature_rollback(s->curv);
    s->rng = before->rng;
    s->gamma = before->gamma;
    s->kfoc_cases = before->kfoc_cases;
    return rc;
}

int kfac_gamma_candidates(double gamma, long T2, double gamma_min, double gamma_max,
                          double *out)
{
    double omega2 = pow(19.0 / 20.0, 0.5 * (double)T2);
    out[0] = fmax(omega2 * gamma, gamma_min);
    out[1] = fmin(gamma / omega2, gamma_max);
    out[2] = gamma;
    return 3;
}

static int kfac_step(struct kfac_optim *o, const struct kfac_batch *b, long k, double *objective,
                     double *figures)
{
    struct kfac *s = (struct kfac *)o;
    struct kfac_net *net = o->net;
    const struct kfac_optim_opts *op = &o->opts;
    size_t n = net->n_params;
    for (int i = 0; o->ops->columns[i]; i++)
        figures[i] = 0;
    figures[COL_RHO] = NAN;

    /* A failed attempt leaves no trace: its targets are drawn again, its statistics
     * unmerged and its γ untried, so that a retry counts its own batch once. */
    const struct attempt before = {s->rng, s->gamma, s->kfoc_cases};
    struct stats_pass stats;
    int rc = stats_begin(s, b, k, &stats);
    if (rc)
        return rc;
    double h = kfac_objective_each(net, o->loss, op->l2, b, stats_chunk, &stats);
    s->held = 0;
    s->n_held = b->m < net->max_batch ? b->m : net->max_batch;
    if (!isfinite(h)) {
        s->rng = before.rng; /* the targets' key is drawn again */
        return kfac_objective_error(net, b, k);
    }
    double grad_sq;
    rc = kfac_check_finite(net, net->grads, k, "gradient", &grad_sq);
    if (rc || (rc = update_curvature(s, &stats, k, figures)))
        return undo(s, rc, &before);

    /* The current γ goes last: when it is kept, its inverses are still in place next time
     * for the block-tridiagonal variant too, whose own inverses are not kept for the other
     * candidates (kfac_curvature_keep_inverses()). */
    double gammas[3] = {s->gamma, 0, 0};
    int n_gamma = 1;
    if (op->gamma_every > 0 && k % op->gamma_every == 0)
        n_gamma = kfac_gamma_candidates(s->gamma, op->gamma_every, s->gamma_min, op->gamma_max,
                                        gammas);
    for (int i = 0; i < n_gamma; i++) {
        double t0 = kfac_log_clock();
        if ((rc = kfac_curvature_invert(s->curv, gammas[i], k)))
            return undo(s, rc, &before);
        double t1 = kfac_log_clock();
        kfac_curvature_precondition(s->curv, net, net->grads, -1.0f, s->delta[i]);
        figures[COL_T_INVERSE] += t1 - t0;
        figures[COL_T_PRECOND] += kfac_log_clock() - t1;
    }

    double t0 = kfac_log_clock(), sums[7], c_prev = 0, step_sq = 0;
    int mq = kfac_fraction_cases(op->model_fraction, kfac_batch_total(b));
    model_sums(s, b, mq, n_gamma, sums);
    double best_score = INFINITY, alpha = 0, mu = 0, change = 0;
    for (int i = 0; i < n_gamma; i++) {
        /* ΔᵀΔ, Δᵀ∇h and Δᵀδ₀ in one pass over the parameters per Δ, which also yields the
         * γ-free ∇hᵀδ₀ and δ₀ᵀδ₀ (c_prev from the first pass's). */
        const float *xs[3] = {s->delta[i], net->grads, s->prev};
        double gram[9], a, u, c, score, sq;
        kfac_gram(n, s->have_prev ? 3 : 2, xs, gram);
        if (i == 0 && s->have_prev)
            c_prev = sums[2 * n_gamma] / mq + (s->lambda + op->l2) * gram[8];
        try_gamma(s, b, i, mq, sums[i], sums[n_gamma + i], c_prev, gram, &a, &u, &c, &score,
                  &sq);
        if (i == 0 || score < best_score) {
            float *t = s->best;
            s->best = s->cand;
            s->cand = t;
            best_score = score;
            alpha = a, mu = u, change = c, step_sq = sq;
            s->gamma = gammas[i];
        }
    }
    figures[COL_T_MODEL] += kfac_log_clock() - t0;
    if (!isfinite(step_sq) && (rc = kfac_check_finite(net, s->best, k, "step", &step_sq)))
        return undo(s, rc, &before); /* the check names the first layer that is not finite */
    net->be->saxpy((int)n, 1.0f, s->best, net->params);
    kfac_curvature_commit(s->curv); /* the step is taken: a later failure keeps its factors */

    if (op->lambda_every > 0 && (s->warm || k % op->lambda_every == 0)) {
        double h_new = kfac_objective(net, o->loss, op->l2, b, 0);
        double rho = h_new > h ? -INFINITY : (h_new - h) / change;
        figures[COL_RHO] = rho;
        if (s->warm) {
            s->lambda = kfac_lm_lambda_warmup(s->lambda, rho, op->lambda_warmup, op->lambda_every,
                                              s->lambda_min, &s->warm);
            s->warm = s->warm && k < op->lambda_warmup_max;
        } else
            s->lambda = kfac_lm_lambda(s->lambda, rho, op->lambda_every, s->lambda_min);
    }
    if (op->use_momentum) {
        float *t = s->prev;
        s->prev = s->best;
        s->best = t;
        s->have_prev = 1;
    }
    *objective = h;
    figures[COL_LAMBDA] = s->lambda;
    figures[COL_GAMMA] = s->gamma;
    figures[COL_ALPHA] = alpha;
    figures[COL_MU] = mu;
    figures[COL_MODEL] = change;
    figures[COL_STEP] = sqrt(step_sq);
    figures[COL_GRAD] = sqrt(grad_sq);
    return 0;
}

static double kfac_raise_damping(struct kfac_optim *o)
{
    struct kfac *s = (struct kfac *)o;
    s->lambda *= 10;
    s->warm = 0; /* the warm-up went too far: the paper's rule from here */
    return s->lambda;
}

static void kfac_state(struct kfac_optim *o, struct kfac_state *st)
{
    struct kfac *s = (struct kfac *)o;
    kfac_state_add(st, "kfac.rng", KFAC_STATE_RNG, &s->rng, 1);
    kfac_state_add_range(st, "kfac.lambda", KFAC_STATE_F64, &s->lambda, 1, 0, DBL_MAX);
    kfac_state_add_range(st, "kfac.gamma", KFAC_STATE_F64, &s->gamma, 1, DBL_MIN, DBL_MAX);
    kfac_state_add_range(st, "kfac.have_prev", KFAC_STATE_INT, &s->have_prev, 1, 0, 1);
    kfac_state_add_range(st, "kfac.warm", KFAC_STATE_INT, &s->warm, 1, 0, 1);
    kfac_state_add_range(st, "kfac.kfoc_cases", KFAC_STATE_F64, &s->kfoc_cases, 1, 0, DBL_MAX);
    kfac_state_add(st, "kfac.prev", KFAC_STATE_F32, s->prev, o->net->n_params);
    kfac_curvature_state(s->curv, st);
}

static void kfac_free(struct kfac_optim *o)
{
    struct kfac *s = (struct kfac *)o;
    kfac_curvature_free(s->curv);
    for (int i = 0; i < 3; i++)
        kfac_floats_free(s->delta[i]);
    kfac_floats_free(s->cand);
    kfac_floats_free(s->best);
    kfac_floats_free(s->prev);
    kfac_floats_free(s->theta);
    kfac_floats_free(s->j_prev);
    kfac_floats_free(s->scratch);
    free(s);
}

static const struct kfac_optim_ops kfac_ops = {
    .name = "kfac",
    .columns = kfac_columns,
    .step = kfac_step,
    .raise_damping = kfac_raise_damping,
    .state = kfac_state,
    .free = kfac_free,
};

static const struct kfac_optim_ops kfoc_ops = {
    .name = "kfac-kfoc",
    .columns = kfoc_columns,
    .step = kfac_step,
    .raise_damping = kfac_raise_damping,
    .state = kfac_state,
    .free = kfac_free,
};

void kfac_kfoc_room(const struct kfac_optim_opts *opts, int chunk, int ranks, int *max_cases,
                    int *kept)
{
    int ms = opts->max_batch > 0 ? kfac_fraction_cases(opts->stats_fraction, opts->max_batch) : 0;
    int most = kfac_batch_most(ms, ranks);
    *kept = most > chunk ? most : 0;
    *max_cases = (most > chunk ? most : chunk) * ranks;
}

struct kfac_optim *kfac_kfac_new(const struct kfac_optim_opts *opts, struct kfac_net *net,
                                 enum kfac_loss loss, const struct kfac_rng *rng)
{
    struct kfac *s = kfac_xcalloc(1, sizeof *s);
    s->base.ops = opts->curvature == KFAC_CURVATURE_KFOC ? &kfoc_ops : &kfac_ops;
    s->base.net = net;
    s->base.loss = loss;
    s->base.opts = *opts;
    s->rng = *rng;
    s->curv = kfac_curvature_new(net);
    s->chunk = net->max_batch;
    /* K-FOC's fits take a batch's statistics cases at once (stats_begin() refuses a batch
     * whose do not fit). */
    if (opts->curvature == KFAC_CURVATURE_KFOC) {
        int max_cases, kept;
        kfac_kfoc_room(opts, s->chunk, kfac_comm_size(net->comm), &max_cases, &kept);
        kfac_curvature_use_kfoc(s->curv, net, max_cases, kept, opts->kfoc_normalise,
                                opts->kfoc_max_iter, opts->kfoc_tol);
    }
    if (kfac_inverses_by_cholesky(opts))
        kfac_curvature_use_cholesky(s->curv, opts->inverse_precision == KFAC_INVERSE_FLOAT);
    if (opts->curvature == KFAC_CURVATURE_TRIDIAGONAL)
        kfac_curvature_reserve_tridiag(s->curv);
    if (opts->by_layer)
        kfac_curvature_share_layers(s->curv, net);
    if (opts->gamma_every > 0) /* the γ trial's candidates each inverted once */
        kfac_curvature_keep_inverses(s->curv, KFAC_SPARE_INVERSES);
    s->lambda = opts->lambda;
    s->warm = opts->start == KFAC_START_WARMUP && opts->lambda_every > 0;
    s->gamma = kfac_gamma_start(opts);
    s->lambda_min = kfac_lambda_min(opts);
    s->gamma_min = kfac_gamma_min(opts);
    size_t n = net->n_params, jn = (size_t)s->chunk * (size_t)net->d_out;
    for (int i = 0; i < (opts->gamma_every > 0 ? 3 : 1); i++)
        s->delta[i] = kfac_floats_new(n);
    s->cand = kfac_floats_new(n);
    s->best = kfac_floats_new(n);
    s->prev = kfac_floats_new(n);
    s->theta = opts->gamma_rule == KFAC_GAMMA_OBJECTIVE ? kfac_floats_new(n) : NULL;
    s->j_prev = kfac_floats_new(jn);
    s->scratch = kfac_floats_new(jn);
    return &s->base;
}
