/*
 * bench_kfac.c: the cost of a K-FAC iteration relative to an SGD iteration at the same batch size
 * on the MNIST deep autoencoder (784-1000-500-250-30-250-500-1000-784, Bernoulli output, sparse
 * initialisation), both measured in this run. K-FAC is timed over whole periods of T = T2 = T3
 * iterations (--period; the shipped 20), so the inversions (k mod T3 = 0), the γ trials (k mod T2
 * = 0) and the ρ evaluations (k mod T1 = 0) are amortised as in training; iterations 1–3, which
 * always decompose, are run first and not timed. The two are timed in interleaved rounds (T SGD
 * iterations, then one K-FAC period, each on its own copy of the network), so that a change in the
 * machine's load falls on both alike; each round gives a ratio. Prints first the multiply-adds of
 * each part of a K-FAC iteration at batch 1000 and the ratio they allow at the gradient pass's
 * rate (count_macs()); then, per batch size, the median seconds per iteration of each, the median
 * ratio over the rounds with its least and greatest (target ≤ 2.0), and K-FAC's breakdown (means):
 * gradient, statistics, inversions, preconditioning, the quadratic model and the rest (ρ, the
 * update). Then the same optimiser with K-FOC factors (curvature = kfoc) from the same start: its
 * seconds per iteration, its ratio to K-FAC's, its statistics time (the power iterations) and the
 * mean of its kfoc_iterations column. Then block-tridiagonal K-FAC (curvature = kfac-tridiag) from
 * the same start: seconds per iteration, the ratio to K-FAC's (target ≤ 1.5), and its statistics,
 * inversion and preconditioning times. Last, the GFLOP/s of the block-diagonal preconditioning's
 * GEMMs against the backend's sgemm on a square product (--device: the device's) and, round by
 * round, against the same calls timed alone after each K-FAC period (what the backend can do at
 * those shapes, in the same minute); each part's multiply-add rate beside the gradient pass's;
 * the statistics' merge into the double averages timed alone with the caches cold, beside a
 * copy of as many doubles on the same threads (the memory's rate); and, where 2⌈τ2 m⌉ ≤ m, the
 * model's forward-mode passes for its two tangents timed one at a time and stacked in one
 * pass, as the optimiser runs them.
 *
 *   bench/bench_kfac [--device DEVICE] [--period T] [--inverse-precision double|float]
 *                    [MODEL_FRACTION [ROUNDS [BATCH...]]]
 * defaults: T = 20, the Cholesky inversions in double and τ2 = 1/8 (the shipped
 * autoencoder configurations'), 5 rounds, batches 1000 and 4000. --inverse-precision
 * float inverts in float (optimizer.inverse_precision) where K-FAC and K-FOC invert;
 * block-tridiagonal K-FAC's inverses come from eigendecompositions in double either way.
 */
#include "kfac/curvature.h"
#include "kfac/log.h"
#include "kfac/mat.h"
#include "kfac/net.h"
#include "kfac/optim.h"
#include "kfac/parallel.h"
#include "kfac/status.h"
#include "bench_util.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum { MAX_ROUNDS = 100, MAX_PERIOD = 1000 };

/* The index of a named column of o's figures (it must exist). */
static int column(const struct kfac_optim *o, const char *name)
{
    for (int i = 0; o->ops->columns[i]; i++)
        if (strcmp(o->ops->columns[i], name) == 0)
            return i;
    abort();
}

/* Mean seconds per iteration of `iters` steps from k0 on; figures summed into sums. */
static double run(struct kfac_optim *o, const struct kfac_batch *b, long k0, long iters,
                  double *sums)
{
    int n_cols = kfac_optim_n_columns(o);
    double *fig = calloc((size_t)n_cols, sizeof *fig), h, total = 0;
    for (long k = k0; k < k0 + iters; k++) {
        double t = kfac_log_clock();
        if (o->ops->step(o, b, k, &h, fig)) {
            fprintf(stderr, "bench_kfac: step %ld failed\n", k);
            exit(1);
        }
        total += kfac_log_clock() - t;
        for (int i = 0; sums && i < n_cols; i++)
            sums[i] += fig[i];
    }
    free(fig);
    return total / (double)iters;
}

/* Mean seconds of the gradient pass on its own (objective and gradient), for the breakdown. */
static double gradient_pass(const struct kfac_optim *o, const struct kfac_batch *b, long iters)
{
    double t = kfac_log_clock();
    for (long k = 0; k < iters; k++)
        kfac_objective(o->net, o->loss, o->opts.l2, b, 1);
    return (kfac_log_clock() - t) / (double)iters;
}

static int by_value(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* The median of x[0 … n) (n ≤ MAX_ROUNDS), x itself left as it was. */
static double median(const double *x, int n)
{
    double s[MAX_ROUNDS];
    memcpy(s, x, (size_t)n * sizeof *s);
    qsort(s, (size_t)n, sizeof *s, by_value);
    return n % 2 ? s[n / 2] : 0.5 * (s[n / 2 - 1] + s[n / 2]);
}

/* The least and the greatest of x[0 … n), n ≥ 1. */
static void extremes(const double *x, int n, double *least, double *most)
{
    *least = *most = x[0];
    for (int i = 1; i < n; i++) {
        *least = x[i] < *least ? x[i] : *least;
        *most = x[i] > *most ? x[i] : *most;
    }
}

/* Multiply-adds of one block-diagonal preconditioning of a layer of n_a inputs (bias
 * included) and n_g outputs: (G + γ/π I)⁻¹ (n_g × n_g) · V (n_g × n_a), then
 * · (Ā + γπ I)⁻¹ (n_a × n_a). */
static double precondition_macs(double na, double ng)
{
    return ng * ng * na + ng * na * na;
}

/* The quadratic model's forward-mode passes for two tangents over the first mq cases of
 * the net's last forward pass (2 mq ≤ the network's max_batch): one pass each, or one pass
 * of both stacked, as the optimiser runs them. */
struct model_passes {
    struct kfac_net *net;
    int mq, stacked;
};

static void model_passes_run(void *ctx)
{
    struct model_passes *p = ctx;
    const float *V[2] = {p->net->params, p->net->grads}; /* two directions of the right size */
    if (p->stacked)
        kfac_net_jvp(p->net, p->mq, 2, V);
    else
        for (int i = 0; i < 2; i++)
            kfac_net_jvp(p->net, p->mq, 1, V + i);
}

/* Best seconds of `repeats` rounds of model_passes_run() over the first mq cases X
 * (mq × d_in). */
static double model_passes(struct kfac_net *net, const float *X, int mq, int stacked,
                           int repeats)
{
    struct model_passes p = {net, mq, stacked};
    kfac_net_forward(net, mq, X);
    return bench_best_seconds(model_passes_run, &p, repeats);
}

/* The block-diagonal preconditioning of a net's gradient as the optimiser calls it, with
 * factors of its own of the net's shapes: two GEMMs per layer (precondition_macs()), of
 * `flops` in all. */
struct precondition {
    struct kfac_curvature *c;
    const struct kfac_net *net;
    float *out; /* n_params */
    double flops;
};

static struct precondition precondition_new(const struct kfac_net *net)
{
    struct precondition p = {kfac_curvature_new(net), net, kfac_floats_new(net->n_params), 0};
    for (int i = 0; i < p.c->n_blocks; i++) {
        struct kfac_factors *f = &p.c->f[i];
        size_t na = (size_t)f->n_a, ng = (size_t)f->n_g;
        for (size_t e = 0; e < na * na; e++) /* finite, normal and positive */
            f->A_inv[e] = (float)(e % 7 + 1) * 0.1f;
        for (size_t e = 0; e < ng * ng; e++)
            f->G_inv[e] = (float)(e % 5 + 1) * 0.1f;
        p.flops += 2 * precondition_macs((double)na, (double)ng);
    }
    return p;
}

static void precondition_free(struct precondition *p)
{
    kfac_floats_free(p->out);
    kfac_curvature_free(p->c);
}

static void precondition_run(void *ctx)
{
    struct precondition *p = ctx;
    kfac_curvature_precondition(p->c, p->net, p->net->grads, -1.0f, p->out);
}

/* GFLOP/s of p's preconditioning on its own: the best of `repeats` calls after one to
 * warm up. What the backend gives at those shapes, beside what they get in the loop. */
static double precondition_gflops(struct precondition *p, int repeats)
{
    return p->flops / bench_best_seconds(precondition_run, p, repeats) * 1e-9;
}

/* The statistics' merge into the factors' exponential averages as the optimiser runs it
 * (kfac_curvature_merge_batch(): per element of each factor's upper triangle, a double and a
 * float read and a double written), with factors of its own of the net's shapes; beside it,
 * a copy of as many doubles (one read and one written each), the machine's memory rate.
 * Both are timed with the caches cold, as the GEMMs between two merges leave them. */
struct merge {
    struct kfac_curvature *c;
    double *from, *to; /* elements */
    size_t elements;   /* in the upper triangles of every factor */
    char *sweep;       /* SWEEP_BYTES, written before each run to empty the caches */
};

enum { SWEEP_BYTES = 256 << 20 };

static struct merge merge_new(const struct kfac_net *net)
{
    struct merge q = {.c = kfac_curvature_new(net)};
    for (int i = 0; i < q.c->n_blocks; i++) {
        struct kfac_factors *f = &q.c->f[i];
        size_t na = (size_t)f->n_a, ng = (size_t)f->n_g;
        for (size_t e = 0; e < na * na; e++) /* finite, as the merge checks */
            f->batch_A[e] = 0.1f;
        for (size_t e = 0; e < ng * ng; e++)
            f->batch_G[e] = 0.1f;
        q.elements += na * (na + 1) / 2 + ng * (ng + 1) / 2;
    }
    q.from = calloc(q.elements, sizeof *q.from);
    q.to = calloc(q.elements, sizeof *q.to);
    q.sweep = calloc(SWEEP_BYTES, 1);
    if (!q.from || !q.to || !q.sweep) {
        fprintf(stderr, "bench_kfac: out of memory\n");
        exit(1);
    }
    for (size_t e = 0; e < q.elements; e++) /* written, so that no read meets the zero page */
        q.from[e] = 1.0;
    return q;
}

static void merge_free(struct merge *q)
{
    free(q->from);
    free(q->to);
    free(q->sweep);
    kfac_curvature_free(q->c);
}

/* Writes the sweep: the caches emptied of everything else, before a timed run. */
static void empty_caches(void *ctx)
{
    struct merge *q = ctx;
    memset(q->sweep, 1, SWEEP_BYTES);
}

static void merge_run(void *ctx)
{
    struct merge *q = ctx;
    if (kfac_curvature_merge_batch(q->c, 0.95, 100)) {
        fprintf(stderr, "bench_kfac: %s\n", kfac_last_error());
        exit(1);
    }
}

/* Part [lo, hi) of 1024 of the copy, so that it runs on the merge's threads. */
static void copy_part(void *ctx, int lo, int hi)
{
    struct merge *q = ctx;
    size_t a = q->elements * (size_t)lo / 1024, b = q->elements * (size_t)hi / 1024;
    memcpy(q->to + a, q->from + a, (b - a) * sizeof *q->to);
}

static void copy_run(void *ctx)
{
    kfac_parallel_for(1024, copy_part, ctx);
}

/* The parts of count_macs(): gradient, statistics, inverses, preconditioning, model, ρ. */
enum { N_PARTS = 6 };

/* Multiply-adds per K-FAC iteration on m cases with block-diagonal factors, in part[] (the
 * inverses counted twice in double, the rate the backends' double GEMMs run at, once in float);
 * returns their sum over the gradient pass's, the SGD iteration's count (its update is a
 * saxpy). Amortised as bench_kfac times them: an inversion every T3 and two more at each γ
 * trial every T2 (a multiple of T3), whose two extra proposals are preconditioned and
 * carried through the model; ρ's forward pass on the whole batch every T1. Per layer of
 * P = n_g n_a parameters: forward P, dW P and din P (none for the first layer) a case; the
 * sampled backward of the statistics cases din only, and the SYRKs (n_a² + n_g²)/2; dpotrf
 * and dpotri n³/2; the preconditioning n_g² n_a + n_g n_a²; a forward-mode tangent 2P (P
 * for the first layer, whose input has none). */
static double count_macs(const struct kfac_net *net, const struct kfac_optim_opts *o, int m,
                         double *part)
{
    double trials = o->gamma_every > 0 ? 1.0 / (double)o->gamma_every : 0;
    double ms = kfac_fraction_cases(o->stats_fraction, m);
    double mq = kfac_fraction_cases(o->model_fraction, m);
    double tangents = 2 + 2 * trials; /* δ₀ and Δ; a trial's two more Δ */
    double precision = o->inverse_precision == KFAC_INVERSE_FLOAT ? 1 : 2; /* the weight */
    for (int j = 0; j < N_PARTS; j++)
        part[j] = 0;
    for (int i = 0; i < net->n_blocks; i++) {
        double na = net->blocks[i]->d_in + 1.0, ng = net->blocks[i]->d_out, P = na * ng;
        double din = i == 0 ? 0 : P;
        part[0] += m * (2 * P + din);
        part[1] += ms * (din + 0.5 * (na * na + ng * ng));
        double inversions = 1.0 / (double)o->inverse_every + 2 * trials;
        part[2] += precision * 0.5 * (na * na * na + ng * ng * ng) * inversions;
        part[3] += precondition_macs(na, ng) * (1 + 2 * trials);
        part[4] += mq * tangents * (P + din);
        part[5] += o->lambda_every > 0 ? m * P / (double)o->lambda_every : 0;
    }
    double sum = 0;
    for (int j = 0; j < N_PARTS; j++)
        sum += part[j];
    return sum / part[0];
}

int main(int argc, char **argv)
{
    const struct kfac_backend *be = bench_device("bench_kfac", &argc, &argv);
    /* T2 = T3 = period: one inversion and one γ trial per period (the shipped 20). */
    long period = 20;
    int precision = KFAC_INVERSE_DOUBLE; /* the Cholesky inversions' (kfac-tridiag: eigen) */
    while (argc >= 3 && (strcmp(argv[1], "--period") == 0 ||
                         strcmp(argv[1], "--inverse-precision") == 0)) {
        if (strcmp(argv[1], "--period") == 0) {
            char *end;
            period = strtol(argv[2], &end, 10);
            period = *end ? 0 : period; /* refused below */
        } else {
            precision = strcmp(argv[2], "float") == 0    ? KFAC_INVERSE_FLOAT
                        : strcmp(argv[2], "double") == 0 ? KFAC_INVERSE_DOUBLE
                                                         : -1; /* refused below */
        }
        argv[2] = argv[0];
        argv += 2;
        argc -= 2;
    }
    double tau2 = argc > 1 ? atof(argv[1]) : 0.125;
    int rounds = argc > 2 ? atoi(argv[2]) : 5;
    int default_batches[] = {1000, 4000}, n_batches = argc > 3 ? argc - 3 : 2;
    if (tau2 <= 0 || tau2 > 1 || rounds < 1 || rounds > MAX_ROUNDS || period < 1 ||
        period > MAX_PERIOD || precision < 0) {
        fprintf(stderr, "usage: bench_kfac [--device DEVICE] [--period T] [--inverse-precision "
                        "double|float] [MODEL_FRACTION [ROUNDS [BATCH...]]] (1 <= T <= %d, "
                        "0 < MODEL_FRACTION <= 1, 1 <= ROUNDS <= %d)\n",
                MAX_PERIOD, MAX_ROUNDS);
        return 2;
    }
    struct kfac_optim_opts sgd = {.type = KFAC_OPTIM_SGD, .learning_rate = 1e-3, .momentum = 0.9,
                                  .l2 = 1e-5};
    struct kfac_optim_opts kf = {
        .type = KFAC_OPTIM_KFAC, .l2 = 1e-5, .stats_fraction = 0.125, .model_fraction = tau2,
        .stats_decay = 0.95, .lambda_every = 5, .gamma_every = period, .inverse_every = period,
        .lambda = 150, .gamma_max = 1, .use_momentum = 1, .kfoc_max_iter = KFAC_KFOC_MAX_ITER,
        .kfoc_tol = KFAC_KFOC_TOL, .inverse_precision = precision};
    printf("# K-FAC against SGD (Nesterov) per iteration on %s, MNIST autoencoder, tau2 = %g, "
           "%d interleaved rounds of %ld SGD iterations and one K-FAC period of T2 = T3 = %ld, "
           "Cholesky inversions in %s\n",
           be->name, tau2, rounds, period, period,
           precision == KFAC_INVERSE_FLOAT ? "float" : "double");
    /* The ratio that multiply-add counts alone allow, with the γ trial as configured and,
     * for comparison, half as often. */
    struct kfac_net *shape = bench_mnist_autoencoder(1);
    struct kfac_optim_opts half_trials = kf;
    half_trials.gamma_every = 2 * kf.inverse_every;
    double part[N_PARTS], part_half[N_PARTS];
    double floor = count_macs(shape, &kf, 1000, part);
    double floor_half = count_macs(shape, &half_trials, 1000, part_half);
    kfac_net_free(shape);
    printf("# multiply-adds per iteration at batch 1000 (GMAC, double's counted twice): "
           "gradient %.2f, statistics %.2f, inverses %.2f, preconditioning %.2f, model %.2f, "
           "rho %.2f: K-FAC/SGD >= %.2f if every part ran at the gradient pass's rate "
           "(%.2f with the gamma trial every %ld)\n",
           part[0] * 1e-9, part[1] * 1e-9, part[2] * 1e-9, part[3] * 1e-9, part[4] * 1e-9,
           part[5] * 1e-9, floor, floor_half, half_trials.gamma_every);
    double sgemm_rate = bench_sgemm_gflops(be, 2000, 3);
    printf("%-6s %9s %9s %6s %5s %5s | %8s %8s %8s %8s %8s %8s | %9s %6s %8s %7s | %9s %6s "
           "%8s %8s %8s\n",
           "batch", "sgd_s", "kfac_s", "ratio", "least", "most", "grad", "stats", "inverse",
           "precond", "model", "rest", "kfoc_s", "/kfac", "stats", "power", "tri_s", "/kfac",
           "stats", "inverse", "precond");
    for (int bi = 0; bi < n_batches; bi++) {
        int m = argc > 3 ? atoi(argv[3 + bi]) : default_batches[bi];
        if (m < 1) {
            fprintf(stderr, "bench_kfac: batch sizes must be positive\n");
            return 2;
        }
        /* SGD on a network of its own, so that its rounds leave K-FAC's trajectory alone. */
        struct kfac_net *net = bench_mnist_autoencoder(m), *net_sgd = bench_mnist_autoencoder(m);
        kfac_net_set_backend(net, be);
        kfac_net_set_backend(net_sgd, be);
        struct kfac_rng rng;
        kfac_rng_seed(&rng, 2);
        float *X = bench_mnist_inputs(m, &rng);
        struct kfac_batch b = {.m = m, .x = X, .t = X};

        struct kfac_optim *o, *o_sgd;
        kfac_optim_new(&sgd, net_sgd, KFAC_LOSS_BERNOULLI, &rng, &o_sgd);
        run(o_sgd, &b, 1, 3, NULL); /* warm-up */

        /* K-FAC in rounds beside SGD; then K-FOC and block-tridiagonal K-FAC over one
         * period each, from the same start. k = 4 … 3 + T (and each later period) contains
         * one k mod T = 0 iteration, like any T consecutive ones. */
        static const int variants[3] = {KFAC_CURVATURE_BLOCK_DIAGONAL, KFAC_CURVATURE_KFOC,
                                        KFAC_CURVATURE_TRIDIAGONAL};
        double t_opt[3], per[3][8], t_grad = 0, t_sgd[MAX_ROUNDS], t_kfac[MAX_ROUNDS];
        double ratio[MAX_ROUNDS], kfac_mean = 0, in_loop[MAX_ROUNDS], alone[MAX_ROUNDS];
        double macs[N_PARTS], rel[N_PARTS];
        count_macs(net, &kf, m, macs);
        struct precondition pre = precondition_new(net);
        for (int v = 0; v < 3; v++) {
            kf.curvature = variants[v];
            /* kfac-tridiag's inverses come from eigendecompositions, in double. */
            kf.inverse_precision = v == 2 ? KFAC_INVERSE_DOUBLE : precision;
            kfac_rng_seed(&rng, 3);
            kfac_net_init(net, KFAC_INIT_SPARSE, 15, &rng);
            if (kfac_optim_new(&kf, net, KFAC_LOSS_BERNOULLI, &rng, &o)) {
                fprintf(stderr, "bench_kfac: %s\n", kfac_last_error());
                return 1;
            }
            int n_cols = kfac_optim_n_columns(o), n_rounds = v ? 1 : rounds;
            double *sums = calloc((size_t)n_cols, sizeof *sums);
            run(o, &b, 1, 3, NULL);
            if (v == 0) {
                int cp = column(o, "t_precond");
                for (int r = 0; r < rounds; r++) {
                    t_sgd[r] = run(o_sgd, &b, 4 + period * r, period, NULL);
                    double before = sums[cp];
                    t_kfac[r] = run(o, &b, 4 + period * r, period, sums);
                    ratio[r] = t_kfac[r] / t_sgd[r];
                    kfac_mean += t_kfac[r] / rounds;
                    /* The preconditioning's GFLOP/s in this period (its one γ trial
                     * included, as macs[3] amortises it), and on its own straight after:
                     * the machine's speed on these shapes moves by a fifth from minute to
                     * minute, so the two are compared round by round. */
                    in_loop[r] = 2 * macs[3] * period / (sums[cp] - before) * 1e-9;
                    alone[r] = precondition_gflops(&pre, 3);
                }
                t_grad = gradient_pass(o, &b, period);
                t_opt[0] = median(t_kfac, rounds);
            } else {
                t_opt[v] = run(o, &b, 4, period, sums);
            }
            int c = column(o, "t_stats");
            for (int j = 0; j < 4; j++) /* stats, inverse, precond, model */
                per[v][j] = sums[c + j] / ((double)period * n_rounds);
            per[v][4] = v == 1 ? sums[column(o, "kfoc_iterations")] / period : 0;
            free(sums);
            kfac_optim_free(o);
        }
        kfac_optim_free(o_sgd);
        kfac_net_free(net_sgd);
        double rest = kfac_mean - t_grad - per[0][0] - per[0][1] - per[0][2] - per[0][3];
        double least, most;
        extremes(ratio, rounds, &least, &most);
        /* The breakdown is of the mean K-FAC iteration; "rest" is what it leaves of it. */
        printf("%-6d %9.4f %9.4f %6.2f %5.2f %5.2f | %8.4f %8.4f %8.4f %8.4f %8.4f %8.4f | %9.4f "
               "%6.2f %8.4f %7.1f | %9.4f %6.2f %8.4f %8.4f %8.4f\n",
               m, median(t_sgd, rounds), t_opt[0], median(ratio, rounds), least, most, t_grad,
               per[0][0], per[0][1], per[0][2], per[0][3], rest, t_opt[1],
               t_opt[1] / t_opt[0], per[1][0], per[1][4], t_opt[2], t_opt[2] / t_opt[0],
               per[2][0], per[2][1], per[2][2]);
        /* The block-diagonal preconditioning's GEMMs: per layer (G + γ/π I)⁻¹ V then
         * ·(Ā + γπ I)⁻¹, in float; one call an iteration and two more at each γ trial. */
        double rate = 2 * macs[3] / per[0][2] * 1e-9, of_alone[MAX_ROUNDS];
        double alone_least, alone_most;
        extremes(alone, rounds, &alone_least, &alone_most);
        for (int r = 0; r < rounds; r++)
            of_alone[r] = in_loop[r] / alone[r];
        precondition_free(&pre);
        printf("# batch %d: the preconditioning's GEMMs run at %.1f GFLOP/s, %.2f of "
               "the backend's sgemm's %.1f (2000^3); round by round, %.2f (median) of the "
               "same calls alone (%.1f, least %.1f, most %.1f)\n",
               m, rate, rate / sgemm_rate, sgemm_rate, median(of_alone, rounds),
               median(alone, rounds), alone_least, alone_most);
        /* Each part's multiply-add rate beside the gradient pass's: where the time goes
         * beyond the counts ("rest" is mostly ρ's forward pass). */
        for (int j = 1; j < N_PARTS; j++)
            rel[j] = macs[j] / (j < 5 ? per[0][j - 1] : rest) / (macs[0] / t_grad);
        printf("# batch %d: multiply-add rate over the gradient pass's: statistics %.2f, "
               "inverses %.2f, preconditioning %.2f, model %.2f, rest %.2f\n",
               m, rel[1], rel[2], rel[3], rel[4], rel[5]);
        /* The statistics' merge alone, beside a copy at the memory's rate: how much of
         * t_stats is the traffic of the double averages rather than the SYRKs' work. */
        struct merge q = merge_new(net);
        merge_run(&q); /* with the timer's uncounted call, both of its buffers written */
        double t_merge = bench_best_seconds_after(empty_caches, merge_run, &q, 3);
        double t_copy = bench_best_seconds_after(empty_caches, copy_run, &q, 3);
        printf("# batch %d: the statistics' merge into the double averages takes %.2f ms "
               "alone, caches cold (%.0f MB at %.1f GB/s), %.2f of t_stats; a copy of as "
               "many doubles runs at %.1f GB/s\n",
               m, t_merge * 1e3, 20e-6 * (double)q.elements,
               20e-9 * (double)q.elements / t_merge, t_merge / per[0][0],
               16e-9 * (double)q.elements / t_copy);
        merge_free(&q);
        /* What stacking the model's two tangents into one forward-mode pass saves. */
        int mq = kfac_fraction_cases(tau2, m);
        if (2 * mq <= m) {
            double apart = model_passes(net, X, mq, 0, 5), joint = model_passes(net, X, mq, 1, 5);
            printf("# batch %d: the model's forward-mode passes for its two tangents of %d "
                   "cases take %.2f ms one at a time, %.2f ms stacked in one pass: %.2f ms "
                   "saved (%.1f%% of t_model)\n",
                   m, mq, apart * 1e3, joint * 1e3, (apart - joint) * 1e3,
                   100 * (apart - joint) / per[0][3]);
        }
        fflush(stdout);
        kfac_floats_free(X);
        kfac_net_free(net);
    }
    return 0;
}
