/*
 * curvature_kfoc.c: Frobenius-optimal Kronecker factors by power iteration (K-FOC,
 * Algorithms 1 and 2 of Schnaus, Lee & Triebel 2021), for the optimiser's K-FOC factors
 * and for the Fisher-error measurement (fisher_error.c), see curvature.h and
 * REFERENCE.md §7; and the rows both keep chunk by chunk for the fits that take every case
 * at once.
 */
#include "kfac/curvature.h"
#include "curvature_internal.h"
#include "kfac/mat.h"
#include "kfac/status.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* X (n × n) = I/sqrt(n): a positive definite start of unit Frobenius norm. */
static void unit_identity(int n, double *X)
{
    memset(X, 0, sizeof(double) * (size_t)n * n);
    for (int i = 0; i < n; i++)
        X[(size_t)i * n + i] = 1.0 / sqrt((double)n);
}

/* X ← X/‖X‖_F, then the distance to prev (n × n); prev ← X. */
static double normalise_step(const struct kfac_backend *be, int n, double *X, double *prev)
{
    size_t n2 = (size_t)n * n;
    double norm = sqrt(kfac_frob2(be, n2, X)), change = 0;
    for (size_t i = 0; i < n2; i++) {
        X[i] = norm > 0 ? X[i] / norm : 0;
        change += (X[i] - prev[i]) * (X[i] - prev[i]);
        prev[i] = X[i];
    }
    return sqrt(change);
}

/* One half-step of the power iteration, from side `from` (0: L, 1: R) to the other:
 * out = Σ_k ⟨terms_from[k], in⟩ terms_to[k], whatever form the terms take. */
typedef void (*half_step)(const void *ctx, int from, const double *in, double *out);

static void power_iterate(const struct kfac_backend *be, const void *ctx, half_step half,
                          const int n[2], int side, int max_iter, double tol, int warm, double *L,
                          double *R, double *prev, struct kfac_kfoc_info *info)
{
    /* N: the factor kept at unit norm (side `side`), S: the one that carries the scale. */
    double *N = side ? R : L, *S = side ? L : R;
    int nn = n[side];
    size_t n2 = (size_t)nn * nn;
    double norm = warm ? sqrt(kfac_frob2(be, n2, N)) : 0;
    if (norm > 0 && isfinite(norm))
        be->dscal((int)n2, 1.0 / norm, N);
    else
        unit_identity(nn, N);
    memcpy(prev, N, sizeof(double) * n2);
    info->iterations = 0;
    info->converged = 0;
    info->change = INFINITY;
    while (info->iterations < max_iter) {
        half(ctx, side, N, S);
        half(ctx, 1 - side, S, N);
        info->iterations++;
        info->change = normalise_step(be, nn, N, prev);
        if (info->change < tol) {
            info->converged = 1;
            break;
        }
    }
    half(ctx, side, N, S); /* S for the final N: the optimal scale, since ‖N‖_F = 1 */
}

/* Algorithm 1 on explicit terms: side 0 holds the L_k (n[0] × n[0]), side 1 the R_k. */
struct explicit_terms {
    const struct kfac_backend *be;
    int n_terms, n[2];
    const double *const *terms[2];
};

static void explicit_half(const void *ctx, int from, const double *in, double *out)
{
    const struct explicit_terms *t = ctx;
    int to = 1 - from;
    size_t n_from = (size_t)t->n[from] * t->n[from], n_to = (size_t)t->n[to] * t->n[to];
    memset(out, 0, sizeof(double) * n_to);
    for (int k = 0; k < t->n_terms; k++)
        t->be->daxpy((int)n_to, kfac_inner(t->be, n_from, t->terms[from][k], in), t->terms[to][k], out);
}

void kfac_kron_fit(const struct kfac_backend *be, int n_terms, int nl, int nr,
                   const double *const *Ls, const double *const *Rs, int side, int max_iter,
                   double tol, int warm, double *L, double *R, double *work,
                   struct kfac_kfoc_info *info)
{
    struct explicit_terms t = {be, n_terms, {nl, nr}, {Ls, Rs}};
    power_iterate(be, &t, explicit_half, t.n, side, max_iter, tol, warm, L, R, work, info);
}

size_t kfac_kfoc_work_size(int K, int T, int n_a, int n_g)
{
    size_t k = (size_t)K, a = (size_t)n_a, g = (size_t)n_g, n = a > g ? a : g;
    if (T > 1)
        return k * a * g + n * n; /* tmp, prev */
    return k * n + k + n * n; /* tmp, q, prev */
}

/* X (n_g × K × n_a) with X[o, k, :] = Σ_t G[kT + t, o] A[kT + t, :]: case k's gradient
 * X_k = G_kᵀ A_k, one GEMM per case (the cases' position sums are independent). */
void kfac_case_gradients(const struct kfac_backend *be, int K, int T, int n_a, const double *A,
                         int n_g, const double *G, double *X)
{
    int ld = K * n_a;
    for (int k = 0; k < K; k++)
        be->dgemm(KFAC_TRANS, KFAC_NO_TRANS, n_g, n_a, T, 1.0, G + (size_t)k * T * n_g, n_g,
                  A + (size_t)k * T * n_a, n_a, 0.0, X + (size_t)k * n_a, ld);
}

/* q_k = x_kᵀ M x_k for the rows of X (K × n) and a symmetric M (n × n); tmp: K × n. */
void kfac_quadratic_forms(const struct kfac_backend *be, int K, int n, const double *X,
                          const double *M, double *tmp, double *q)
{
    be->dsymm(KFAC_RIGHT, K, n, 1.0, M, n, X, n, 0.0, tmp, n);
    for (int k = 0; k < K; k++)
        q[k] = kfac_inner(be, (size_t)n, X + (size_t)k * n, tmp + (size_t)k * n);
}

/* out (n × n) = (1/K) Σ_k w_k x_k x_kᵀ = (1/K) Xᵀ diag(w) X; tmp: K × n. */
static void weighted_moment(const struct kfac_backend *be, int K, int n, const double *X,
                            const double *w, double *tmp, double *out)
{
    for (int k = 0; k < K; k++)
        for (int j = 0; j < n; j++)
            tmp[(size_t)k * n + j] = w[k] * X[(size_t)k * n + j];
    be->dgemm(KFAC_TRANS, KFAC_NO_TRANS, n, n, K, 1.0 / K, X, n, tmp, n, 0.0, out, n);
}

/* Algorithm 2: the terms are (ā_k ā_kᵀ/K) ⊗ (g_k g_kᵀ), so ⟨ā_k ā_kᵀ, L⟩ = ā_kᵀ L ā_k and a
 * half-step is per-case quadratic forms on one side, a weighted moment on the other. */
struct layer_terms {
    const struct kfac_backend *be;
    int K, n[2];            /* side 0: ā (n_a), side 1: g (n_g) */
    const double *X[2];     /* K × n[side] */
    double *tmp, *q;        /* K × max(n_a, n_g), K */
};

static void layer_half(const void *ctx, int from, const double *in, double *out)
{
    const struct layer_terms *t = ctx;
    int to = 1 - from;
    kfac_quadratic_forms(t->be, t->K, t->n[from], t->X[from], in, t->tmp, t->q);
    weighted_moment(t->be, t->K, t->n[to], t->X[to], t->q, t->tmp, out);
}

/* Algorithm 2 with the per-case gradients X_k of a convolution, X (n_g × K × n_a): a
 * half-step is R = (1/K) Σ_k X_k L X_kᵀ or L = (1/K) Σ_k X_kᵀ R X_k, two GEMMs each, by
 * reading X as n_g × (K·n_a) or as (n_g·K) × n_a. */
struct case_terms {
    const struct kfac_backend *be;
    int K, n_a, n_g;
    const double *X;
    double *tmp;            /* n_g × K × n_a */
};

static void case_half(const void *ctx, int from, const double *in, double *out)
{
    const struct kfac_backend *be = ((const struct case_terms *)ctx)->be;
    const struct case_terms *t = ctx;
    int K = t->K, na = t->n_a, ng = t->n_g, wide = K * na;
    if (from == 0) {
        be->dsymm(KFAC_RIGHT, ng * K, na, 1.0, in, na, t->X, na, 0.0, t->tmp, na);
        be->dgemm(KFAC_NO_TRANS, KFAC_TRANS, ng, ng, wide, 1.0 / K, t->tmp, wide, t->X, wide, 0.0,
                  out, ng);
    } else {
        be->dsymm(KFAC_LEFT, ng, wide, 1.0, in, ng, t->X, wide, 0.0, t->tmp, wide);
        be->dgemm(KFAC_TRANS, KFAC_NO_TRANS, na, na, ng * K, 1.0 / K, t->X, na, t->tmp, na, 0.0,
                  out, na);
    }
}

void kfac_case_half_step(const struct kfac_backend *be, int K, int n_a, int n_g, const double *X,
                         int from, const double *in, double *out, double *tmp)
{
    struct case_terms t = {be, K, n_a, n_g, X, tmp};
    case_half(&t, from, in, out);
}

void kfac_kfoc_fit(const struct kfac_fisher_block *b, int side, int max_iter, double tol,
                   int warm, double *L, double *R, double *work, struct kfac_kfoc_info *info)
{
    const int n[2] = {b->n_a, b->n_g};
    if (b->X) {
        struct case_terms t = {b->be, b->K, b->n_a, b->n_g, b->X, work};
        double *prev = work + (size_t)b->K * b->n_a * b->n_g;
        power_iterate(b->be, &t, case_half, n, side, max_iter, tol, warm, L, R, prev, info);
        return;
    }
    size_t nmax = (size_t)(b->n_a > b->n_g ? b->n_a : b->n_g);
    struct layer_terms t = {b->be,        b->K, {b->n_a, b->n_g},
                            {b->A, b->G}, work, work + (size_t)b->K * nmax};
    double *prev = t.q + b->K;
    power_iterate(b->be, &t, layer_half, n, side, max_iter, tol, warm, L, R, prev, info);
}

/* Doubles of kfac_kfoc_running_fit()'s work space. */
size_t kfac_kfoc_running_work_size(int na, int ng)
{
    size_t a2 = (size_t)na * na, g2 = (size_t)ng * ng;
    return a2 + g2 + (a2 > g2 ? a2 : g2);
}

/* Kept rows (curvature.h). */
static size_t kept_floats(const struct kfac_net *net, int K, size_t *at)
{
    size_t n = 0;
    for (int i = 0; i < net->n_blocks; i++) {
        const struct kfac_layer *l = net->blocks[i];
        size_t rows = (size_t)K * (size_t)l->n_pos;
        if (at)
            at[2 * i] = n, at[2 * i + 1] = n + rows * (size_t)(l->d_in + 1);
        n += rows * (size_t)(l->d_in + 1 + l->d_out);
    }
    return n;
}

double kfac_kept_rows_bytes(const struct kfac_net *net, int K)
{
    return K > 0 ? (double)kept_floats(net, K, NULL) * sizeof(float) +
                       2.0 * net->n_blocks * sizeof(size_t)
                 : 0;
}

void kfac_kept_rows_reserve(struct kfac_kept_rows *k, const struct kfac_net *net, int K)
{
    kfac_kept_rows_free(k);
    if (K <= 0)
        return;
    k->K = K;
    k->at = kfac_xmalloc(2 * (size_t)net->n_blocks * sizeof *k->at);
    k->rows = kfac_xmalloc(kept_floats(net, K, k->at) * sizeof *k->rows);
}

void kfac_kept_rows_free(struct kfac_kept_rows *k)
{
    free(k->rows);
    free(k->at);
    *k = (struct kfac_kept_rows){0};
}

void kfac_kept_rows_put(struct kfac_kept_rows *k, const struct kfac_net *net, int first, int m)
{
    for (int i = 0; i < net->n_blocks; i++) {
        const struct kfac_layer *l = net->blocks[i];
        size_t T = (size_t)l->n_pos, na = (size_t)l->d_in + 1, ng = (size_t)l->d_out;
        memcpy(k->rows + k->at[2 * i] + (size_t)first * T * na, l->abar,
               (size_t)m * T * na * sizeof *k->rows);
        memcpy(k->rows + k->at[2 * i + 1] + (size_t)first * T * ng, l->g,
               (size_t)m * T * ng * sizeof *k->rows);
    }
}

/* What K-FOC's fits of up to K cases of all ranks together need as scratch, over layers
 * of n_pos T, n_a and n_g: the largest layer's, in doubles. */
struct kfoc_room {
    size_t a, g, x, n, work; /* ā, g, per-case gradients, a side, the fit's scratch */
};

static void room_for_layer(struct kfoc_room *r, int K, int T, int na, int ng)
{
    size_t k = (size_t)K, t = (size_t)T, a = (size_t)na, g = (size_t)ng;
    size_t w = kfac_kfoc_work_size(K, T, na, ng), run = kfac_kfoc_running_work_size(na, ng);
    size_t x = T > 1 ? k * a * g : 0;
    r->a = k * t * a > r->a ? k * t * a : r->a;
    r->g = k * t * g > r->g ? k * t * g : r->g;
    r->x = x > r->x ? x : r->x;
    r->n = a > r->n ? a : r->n;
    r->n = g > r->n ? g : r->n;
    w = w > run ? w : run; /* the running fit's new L̂, R̂ and its prev live in work too */
    r->work = w > r->work ? w : r->work;
}

double kfac_curvature_kfoc_bytes(const struct kfac_net *net, int max_cases, int kept_cases)
{
    struct kfoc_room r = {0};
    for (int i = 0; i < net->n_blocks; i++) {
        const struct kfac_layer *l = net->blocks[i];
        room_for_layer(&r, max_cases, l->n_pos, l->d_in + 1, l->d_out);
    }
    return (double)(r.a + r.g + r.x + 2 * r.n * r.n + r.work) * sizeof(double) +
           kfac_kept_rows_bytes(net, kept_cases);
}

/* The scratch kfac_curvature_update_kfoc() needs for fits of up to max_cases cases. */
static void reserve(struct kfac_curvature *c, int max_cases)
{
    if (max_cases <= c->kfoc.max_cases)
        return;
    struct kfoc_room r = {0};
    for (int i = 0; i < c->n_blocks; i++) {
        const struct kfac_factors *f = &c->f[i];
        room_for_layer(&r, max_cases, f->n_pos, f->n_a, f->n_g);
    }
    c->kfoc.a = kfac_xrealloc(c->kfoc.a, r.a * sizeof *c->kfoc.a);
    c->kfoc.g = kfac_xrealloc(c->kfoc.g, r.g * sizeof *c->kfoc.g);
    free(c->kfoc.X);
    c->kfoc.X = r.x ? kfac_xmalloc(r.x * sizeof *c->kfoc.X) : NULL;
    c->kfoc.L = kfac_xrealloc(c->kfoc.L, r.n * r.n * sizeof *c->kfoc.L);
    c->kfoc.R = kfac_xrealloc(c->kfoc.R, r.n * r.n * sizeof *c->kfoc.R);
    c->kfoc.work = kfac_xrealloc(c->kfoc.work, r.work * sizeof *c->kfoc.work);
    c->kfoc.max_cases = max_cases;
}

void kfac_curvature_keep_kfoc(struct kfac_curvature *c, const struct kfac_net *net, int at,
                              int m)
{
    kfac_kept_rows_put(&c->kfoc.kept, net, at, m);
}

/* K-FOC_running's aggregation (curvature_internal.h). */
void kfac_kfoc_running_fit(const struct kfac_backend *be, int na, int ng, double *L_run,
                           double *R_run, double eps, double *L, double *R, int side, int max_iter,
                           double tol, double *work)
{
    size_t na2 = (size_t)na * na, ng2 = (size_t)ng * ng;
    double *new_L = work, *new_R = work + na2, *prev = new_R + ng2;
    be->dscal((int)ng2, eps, R_run);
    be->dscal((int)ng2, 1.0 - eps, R);
    const double *Ls[2] = {L_run, L}, *Rs[2] = {R_run, R};
    struct kfac_kfoc_info info;
    if (side)
        memcpy(new_R, R_run, ng2 * sizeof *new_R);
    else
        memcpy(new_L, L_run, na2 * sizeof *new_L);
    kfac_kron_fit(be, 2, na, ng, Ls, Rs, side, max_iter, tol, 1, new_L, new_R, prev, &info);
    memcpy(L_run, new_L, na2 * sizeof *new_L);
    memcpy(R_run, new_R, ng2 * sizeof *new_R);
}

/* Layer i's ā and g rows for the fits: those of the layer buffers, or with net NULL the
 * kept ones. */
static void rows_of(const struct kfac_curvature *c, const struct kfac_net *net, int i,
                    const float **a, const float **g)
{
    const struct kfac_kept_rows *k = &c->kfoc.kept;
    *a = net ? net->blocks[i]->abar : k->rows + k->at[2 * i];
    *g = net ? net->blocks[i]->g : k->rows + k->at[2 * i + 1];
}

int kfac_curvature_update_kfoc(struct kfac_curvature *c, const struct kfac_net *net, int m,
                               double eps, long k, int side, int max_iter, double tol,
                               struct kfac_kfoc_info *info)
{
    /* The first layer with a non-finite ā or g on any rank: 2(blocks − i) − side, so that
     * the ranks' largest is the lowest layer's. */
    long bad = 0;
    for (int i = 0; i < c->n_blocks && !bad; i++) {
        const struct kfac_factors *f = &c->f[i];
        const float *a, *g;
        rows_of(c, net, i, &a, &g);
        size_t rows = (size_t)m * (size_t)f->n_pos;
        if (!kfac_all_finite(rows * (size_t)f->n_a, a))
            bad = 2L * (c->n_blocks - i);
        else if (!kfac_all_finite(rows * (size_t)f->n_g, g))
            bad = 2L * (c->n_blocks - i) - 1;
    }
    if ((bad = kfac_comm_max(c->comm, bad))) {
        int i = c->n_blocks - (int)((bad + 1) / 2);
        if (bad % 2 == 0)
            return kfac_error(KFAC_ENUMERIC, "iteration %ld: layer %d's activations (the K-FOC "
                                             "factor L) are not finite; nothing was updated",
                              k, c->f[i].layer);
        return kfac_error(KFAC_ENUMERIC, "iteration %ld: layer %d's output gradients (the "
                                         "K-FOC factor R) are not finite; nothing was updated",
                          k, c->f[i].layer);
    }
    /* The fits take every rank's cases: their ā and g are gathered, layer by layer. */
    int ranks = kfac_comm_size(c->comm);
    kfac_comm_gather_ints(c->comm, m, c->kfoc.counts);
    m = 0;
    for (int r = 0; r < ranks; r++)
        m += c->kfoc.counts[r];
    info->iterations = 0;
    info->converged = 1;
    info->change = 0;
    for (int i = 0; i < c->n_blocks; i++) {
        struct kfac_factors *f = &c->f[i];
        size_t na2 = (size_t)f->n_a * f->n_a, ng2 = (size_t)f->n_g * f->n_g;
        int *cases = c->kfoc.counts, *scratch = cases + ranks;
        const float *a, *g;
        rows_of(c, net, i, &a, &g);
        kfac_comm_gather_rows(c->comm, KFAC_COMM_STATISTICS, a, f->n_pos, f->n_a, cases,
                              scratch, c->kfoc.a);
        kfac_comm_gather_rows(c->comm, KFAC_COMM_STATISTICS, g, f->n_pos, f->n_g, cases,
                              scratch, c->kfoc.g);
        struct kfac_fisher_block b = {c->be,     m,   f->n_a,   f->n_g, c->kfoc.a,
                                      c->kfoc.g, NAN, f->n_pos, NULL};
        if (f->n_pos > 1) {
            kfac_case_gradients(c->be, m, f->n_pos, f->n_a, c->kfoc.a, f->n_g, c->kfoc.g,
                                c->kfoc.X);
            b.X = c->kfoc.X;
        }
        memcpy(f->A_keep, f->A, na2 * sizeof *f->A);
        memcpy(f->G_keep, f->G, ng2 * sizeof *f->G);
        int running = eps > 0;
        if (running && side)
            memcpy(c->kfoc.R, f->G, ng2 * sizeof *c->kfoc.R);
        else if (running)
            memcpy(c->kfoc.L, f->A, na2 * sizeof *c->kfoc.L);
        struct kfac_kfoc_info fi;
        kfac_kfoc_fit(&b, side, max_iter, tol, running, c->kfoc.L, c->kfoc.R, c->kfoc.work, &fi);
        if (fi.iterations > info->iterations)
            info->iterations = fi.iterations;
        if (fi.change > info->change)
            info->change = fi.change;
        info->converged &= fi.converged;
        if (running) {
            kfac_kfoc_running_fit(c->be, f->n_a, f->n_g, f->A, f->G, eps, c->kfoc.L, c->kfoc.R,
                                  side, max_iter, tol, c->kfoc.work);
        } else {
            memcpy(f->A, c->kfoc.L, na2 * sizeof *f->A);
            memcpy(f->G, c->kfoc.R, ng2 * sizeof *f->G);
        }
    }
    c->kept = 1;
    return 0;
}

static int kfoc_update(struct kfac_curvature *c, const struct kfac_net *net, int m, double eps,
                       long k)
{
    return kfac_curvature_update_kfoc(c, net, m, eps, k, c->kfoc.side, c->kfoc.max_iter,
                                      c->kfoc.tol, &c->kfoc.info);
}

static void kfoc_free(struct kfac_curvature *c)
{
    free(c->kfoc.counts);
    free(c->kfoc.a);
    free(c->kfoc.g);
    free(c->kfoc.X);
    free(c->kfoc.L);
    free(c->kfoc.R);
    free(c->kfoc.work);
    kfac_kept_rows_free(&c->kfoc.kept);
}

static const struct kfac_curvature_variant kfoc = {
    .name = "kfoc",
    .update = kfoc_update,
    .free = kfoc_free,
};

void kfac_curvature_use_kfoc(struct kfac_curvature *c, const struct kfac_net *net, int max_cases,
                             int kept_cases, int side, int max_iter, double tol)
{
    reserve(c, max_cases);
    if (kept_cases > c->kfoc.kept.K)
        kfac_kept_rows_reserve(&c->kfoc.kept, net, kept_cases);
    if (!c->kfoc.counts)
        c->kfoc.counts = kfac_xcalloc(2 * (size_t)kfac_comm_size(c->comm), sizeof *c->kfoc.counts);
    c->kfoc.side = side;
    c->kfoc.max_iter = max_iter;
    c->kfoc.tol = tol;
    c->variant = &kfoc;
}
