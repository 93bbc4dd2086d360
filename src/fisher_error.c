/*
 * fisher_error.c: the relative Frobenius error of the diagonal, K-FAC and K-FOC
 * approximations against a layer's exact Fisher block, computed from K × K Gram matrices
 * and per-case quadratic forms so that no D × D matrix is ever formed, summed again in
 * double-double where they cancel; the study's errors over batches and the training
 * log's probe (see curvature.h and REFERENCE.md §7–§8).
 */
#include "kfac/curvature.h"
#include "curvature_internal.h"
#include "ddouble.h"
#include "kfac/mat.h"
#include "kfac/status.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

size_t kfac_fisher_work_size(int K, int T, int n_a, int n_g)
{
    size_t k = (size_t)K, a = (size_t)n_a, g = (size_t)n_g;
    size_t gram = 2 * k * k, fit = kfac_kfoc_work_size(K, T, n_a, n_g), diag = k * (a + g) + a * g;
    size_t n = gram > fit ? gram : fit;
    return n > diag ? n : diag;
}

/* ‖F‖_F² = (1/K²) Σ_{k,k'} ⟨X_k, X_k'⟩² from the upper triangle of the Gram matrix P (K × K). */
static double gram_norm2(int K, const double *P)
{
    double off = 0, diag = 0;
    for (int i = 0; i < K; i++) {
        double d = P[(size_t)i * K + i];
        diag += d * d;
        for (int j = i + 1; j < K; j++)
            off += P[(size_t)i * K + j] * P[(size_t)i * K + j];
    }
    return (diag + 2 * off) / ((double)K * K);
}

void kfac_fisher_block_init(struct kfac_fisher_block *b, const struct kfac_backend *be, int K,
                            int T, int n_a, const double *A, int n_g, const double *G, double *X,
                            double *work)
{
    b->be = be, b->K = K, b->n_a = n_a, b->n_g = n_g, b->A = A, b->G = G;
    b->T = T > 1 ? T : 1;
    b->X = NULL;
    if (T > 1) {
        /* ⟨X_k, X_k'⟩ = Σ_o X[o, k, :]·X[o, k', :]: one rank-K update per output row. */
        kfac_case_gradients(be, K, T, n_a, A, n_g, G, X);
        b->X = X;
        for (int o = 0; o < n_g; o++)
            be->dsyrk(KFAC_NO_TRANS, K, n_a, 1.0, X + (size_t)o * K * n_a, n_a, o ? 1.0 : 0.0, work,
                      K);
        b->norm2 = gram_norm2(K, work);
        return;
    }
    double *Ga = work, *Gg = work + (size_t)K * K;
    be->dsyrk(KFAC_NO_TRANS, K, n_a, 1.0, A, n_a, 0.0, Ga, K);
    be->dsyrk(KFAC_NO_TRANS, K, n_g, 1.0, G, n_g, 0.0, Gg, K);
    /* ⟨X_k, X_k'⟩ = (ā_k·ā_k')(g_k·g_k'). */
    for (int i = 0; i < K; i++)
        for (int j = i; j < K; j++)
            Ga[(size_t)i * K + j] *= Gg[(size_t)i * K + j];
    b->norm2 = gram_norm2(K, Ga);
}

/* --- Errors that cancel. ‖F − F̃‖² = ‖F‖² − 2⟨F, F̃⟩ + ‖F̃‖² in double resolves errors
 * down to about 3e-8 of ‖F‖ only; below REFINE of it the three terms are summed again in
 * double-double (ddouble.h), Gram entries and quadratic forms included, which resolves
 * about 1e-14: an exactly Kronecker block reports its round-off, not 5e-8. */
#define REFINE 1e-5

/* ⟨X_i, X_j⟩ in double-double: (ā_i·ā_j)(g_i·g_j) for a dense layer. */
static struct dd gram_dd(const struct kfac_fisher_block *b, int i, int j)
{
    size_t na = (size_t)b->n_a, ng = (size_t)b->n_g;
    if (!b->X)
        return dd_mul(dd_dot(na, b->A + i * na, b->A + j * na),
                      dd_dot(ng, b->G + i * ng, b->G + j * ng));
    struct dd s = {0, 0};
    for (size_t o = 0; o < ng; o++) {
        const double *x = b->X + (o * b->K + (size_t)i) * na,
                     *y = b->X + (o * b->K + (size_t)j) * na;
        for (size_t c = 0; c < na; c++)
            s = dd_add_prod(s, x[c], y[c]);
    }
    return s;
}

/* ‖F‖² = (1/K²) Σ_{i,j} ⟨X_i, X_j⟩² in double-double. */
static struct dd norm2_dd(const struct kfac_fisher_block *b)
{
    struct dd sum = {0, 0};
    for (int i = 0; i < b->K; i++)
        for (int j = i; j < b->K; j++) {
            struct dd p = gram_dd(b, i, j), p2 = dd_mul(p, p);
            sum = dd_add(sum, i == j ? p2 : dd_scale(p2, 2));
        }
    return dd_div(dd_div(sum, b->K), b->K);
}

/* ‖F‖² in double-double, computed on first need and kept for the block's other errors:
 * the refinements of one block share it. */
struct norm2_cache {
    int have;
    struct dd value;
};

static struct dd cached_norm2(const struct kfac_fisher_block *b, struct norm2_cache *c)
{
    if (!c->have) {
        c->value = norm2_dd(b);
        c->have = 1;
    }
    return c->value;
}

/* xᵀ M x in double-double for x (n) and M (n × n). */
static struct dd quadratic_dd(int n, const double *x, const double *M)
{
    struct dd q = {0, 0};
    for (int i = 0; i < n; i++) {
        struct dd t = dd_dot((size_t)n, M + (size_t)i * n, x);
        q = dd_add(q, dd_scale(t, x[i]));
    }
    return q;
}

/* ⟨F, L ⊗ R⟩ = (1/K) Σ_k ⟨X_k, R X_k L⟩ in double-double; work: 2 n_g n_a doubles. */
static struct dd cross_dd(const struct kfac_fisher_block *b, const double *L, const double *R,
                          double *work)
{
    int K = b->K, na = b->n_a, ng = b->n_g;
    struct dd sum = {0, 0};
    struct dd *Y = (struct dd *)work; /* n_g × n_a: X_k L */
    for (int k = 0; k < K; k++) {
        if (!b->X) {
            sum = dd_add(sum, dd_mul(quadratic_dd(na, b->A + (size_t)k * na, L),
                                     quadratic_dd(ng, b->G + (size_t)k * ng, R)));
            continue;
        }
        for (int o = 0; o < ng; o++) {
            const double *x = b->X + ((size_t)o * K + k) * na;
            for (int j = 0; j < na; j++) {
                struct dd t = {0, 0};
                for (int i = 0; i < na; i++)
                    t = dd_add_prod(t, x[i], L[(size_t)i * na + j]);
                Y[(size_t)o * na + j] = t;
            }
        }
        for (int o = 0; o < ng; o++)
            for (int p = 0; p < ng; p++) {
                const double *x = b->X + ((size_t)p * K + k) * na;
                struct dd t = {0, 0};
                for (int j = 0; j < na; j++)
                    t = dd_add(t, dd_scale(Y[(size_t)o * na + j], x[j]));
                sum = dd_add(sum, dd_scale(t, R[(size_t)o * ng + p]));
            }
    }
    return dd_div(sum, K);
}

/* err2 = ‖F − F̃‖² (in double) relative to ‖F‖, its square root; 0 for F = 0. */
static double relative(const struct kfac_fisher_block *b, double err2)
{
    return b->norm2 > 0 ? sqrt(fmax(err2, 0.0) / b->norm2) : 0.0;
}

/* The same from the double-double terms: ‖F‖² − 2 cross + model2, relative to ‖F‖. */
static double relative_dd(struct dd norm2, struct dd cross, struct dd model2)
{
    struct dd e = dd_add(dd_add(norm2, dd_scale(cross, -2)), model2);
    return norm2.hi > 0 ? sqrt(fmax(e.hi, 0.0) / norm2.hi) : 0.0;
}

/* kfac_fisher_error_kron() with the block's ‖F‖² cache. */
static double kron_error(const struct kfac_fisher_block *b, const double *L, const double *R,
                         double *work, struct norm2_cache *norm2)
{
    int K = b->K;
    size_t na2 = (size_t)b->n_a * b->n_a, ng2 = (size_t)b->n_g * b->n_g;
    const struct kfac_backend *be = b->be;
    double kron2 = kfac_frob2(be, na2, L) * kfac_frob2(be, ng2, R), err;
    if (b->X) {
        /* ⟨F, L ⊗ R⟩ = ⟨L, (1/K) Σ_k X_kᵀ R X_k⟩: the half-step towards L. */
        double *LR = work + (size_t)K * b->n_a * b->n_g;
        kfac_case_half_step(be, K, b->n_a, b->n_g, b->X, 1, R, LR, work);
        err = relative(b, b->norm2 - 2 * kfac_inner(be, na2, L, LR) + kron2);
    } else {
        size_t n = (size_t)(b->n_a > b->n_g ? b->n_a : b->n_g);
        double *tmp = work, *qa = work + (size_t)K * n, *qg = qa + K;
        kfac_quadratic_forms(be, K, b->n_a, b->A, L, tmp, qa);
        kfac_quadratic_forms(be, K, b->n_g, b->G, R, tmp, qg);
        double cross = kfac_inner(be, (size_t)K, qa, qg) / K;
        err = relative(b, b->norm2 - 2 * cross + kron2);
    }
    if (err >= REFINE)
        return err;
    return relative_dd(cached_norm2(b, norm2), cross_dd(b, L, R, work),
                       dd_mul(dd_dot(na2, L, L), dd_dot(ng2, R, R)));
}

double kfac_fisher_error_kron(const struct kfac_fisher_block *b, const double *L, const double *R,
                              double *work)
{
    struct norm2_cache norm2 = {0};
    return kron_error(b, L, R, work, &norm2);
}

/* kfac_fisher_error_diag() in double-double: ‖F‖² − Σ_{o,j} F_{(o,j),(o,j)}². */
static double diag_error_dd(const struct kfac_fisher_block *b, struct norm2_cache *norm2)
{
    int K = b->K, na = b->n_a, ng = b->n_g;
    struct dd d2 = {0, 0};
    for (int o = 0; o < ng; o++)
        for (int j = 0; j < na; j++) {
            struct dd d = {0, 0};
            for (int k = 0; k < K; k++) {
                /* Entry (o, j) of X_k: g_ko ā_kj for a dense layer, exactly. */
                struct dd x = b->X ? (struct dd){b->X[((size_t)o * K + k) * na + j], 0}
                                   : dd_mul((struct dd){b->G[(size_t)k * ng + o], 0},
                                            (struct dd){b->A[(size_t)k * na + j], 0});
                d = dd_add(d, dd_mul(x, x));
            }
            d = dd_div(d, K);
            d2 = dd_add(d2, dd_mul(d, d));
        }
    return relative_dd(cached_norm2(b, norm2), (struct dd){0, 0}, dd_scale(d2, -1));
}

/* kfac_fisher_error_diag() with the block's ‖F‖² cache. */
static double diag_error(const struct kfac_fisher_block *b, double *work,
                         struct norm2_cache *norm2)
{
    const struct kfac_backend *be = b->be;
    int K = b->K, na = b->n_a, ng = b->n_g;
    if (b->X) {
        /* F's diagonal, entry (o, j): (1/K) Σ_k X[o, k, j]², one row o at a time. */
        double d2 = 0, *d = work;
        for (int o = 0; o < ng; o++) {
            memset(d, 0, (size_t)na * sizeof *d);
            for (int k = 0; k < K; k++) {
                const double *x = b->X + ((size_t)o * K + k) * na;
                for (int j = 0; j < na; j++)
                    d[j] += x[j] * x[j];
            }
            d2 += kfac_frob2(b->be, (size_t)na, d) / ((double)K * K);
        }
        double err = relative(b, b->norm2 - d2);
        return err >= REFINE ? err : diag_error_dd(b, norm2);
    }
    double *A2 = work, *G2 = A2 + (size_t)K * na, *D = G2 + (size_t)K * ng;
    for (size_t i = 0; i < (size_t)K * na; i++)
        A2[i] = b->A[i] * b->A[i];
    for (size_t i = 0; i < (size_t)K * ng; i++)
        G2[i] = b->G[i] * b->G[i];
    /* F's diagonal, entry (i, j) of the d_out × n_a weight shape: (1/K) Σ_k g_ki² ā_kj². */
    be->dgemm(KFAC_TRANS, KFAC_NO_TRANS, ng, na, K, 1.0 / K, G2, ng, A2, na, 0.0, D, na);
    double err = relative(b, b->norm2 - kfac_frob2(be, (size_t)na * ng, D));
    return err >= REFINE ? err : diag_error_dd(b, norm2);
}

double kfac_fisher_error_diag(const struct kfac_fisher_block *b, double *work)
{
    struct norm2_cache norm2 = {0};
    return diag_error(b, work, &norm2);
}

size_t kfac_fisher_cross_work_size(int K, int n_a1, int n_g1, int n_a2, int n_g2)
{
    size_t k = (size_t)K, n2 = (size_t)(n_a2 > n_g2 ? n_a2 : n_g2);
    size_t gram = 2 * k * k, model = (size_t)n_a1 * n_a2 + (size_t)n_g1 * n_g2 + k * n2 + 2 * k;
    return gram > model ? gram : model;
}

double kfac_fisher_error_cross(const struct kfac_fisher_block *b1,
                               const struct kfac_fisher_block *b2, double *work)
{
    const struct kfac_backend *be = b1->be;
    int K = b1->K;
    size_t KK = (size_t)K * K;
    /* ‖F_12‖² = (1/K²) Σ_{k,k'} (ā¹_k·ā¹_k')(g¹_k·g¹_k')(ā²_k·ā²_k')(g²_k·g²_k'): the four
     * Gram matrices multiplied entrywise, on their upper triangles. */
    double *P = work, *Y = work + KK;
    const double *X[4] = {b1->A, b1->G, b2->A, b2->G};
    const int n[4] = {b1->n_a, b1->n_g, b2->n_a, b2->n_g};
    for (int f = 0; f < 4; f++) {
        be->dsyrk(KFAC_NO_TRANS, K, n[f], 1.0, X[f], n[f], 0.0, f ? Y : P, K);
        for (int i = 0; f && i < K; i++)
            for (int j = i; j < K; j++)
                P[(size_t)i * K + j] *= Y[(size_t)i * K + j];
    }
    double diag = 0, off = 0;
    for (int i = 0; i < K; i++) {
        diag += P[(size_t)i * K + i];
        for (int j = i + 1; j < K; j++)
            off += P[(size_t)i * K + j];
    }
    double norm2 = (diag + 2 * off) / ((double)K * K);
    /* The model of the same cases, Ā_12 = (1/K) Σ ā¹ ā²ᵀ and G_12 = (1/K) Σ g¹ g²ᵀ, with
     * ⟨F_12, Ā_12 ⊗ G_12⟩ = (1/K) Σ_k (ā¹_kᵀ Ā_12 ā²_k)(g¹_kᵀ G_12 g²_k). */
    double *XA = work, *XG = XA + (size_t)n[0] * n[2], *T = XG + (size_t)n[1] * n[3];
    double *qa = T + (size_t)K * (n[2] > n[3] ? n[2] : n[3]), *qg = qa + K;
    double *Ms[2] = {XA, XG}, *qs[2] = {qa, qg};
    for (int f = 0; f < 2; f++) {
        int n1 = n[f], n2 = n[f + 2];
        be->dgemm(KFAC_TRANS, KFAC_NO_TRANS, n1, n2, K, 1.0 / K, X[f], n1, X[f + 2], n2, 0.0, Ms[f],
                  n2);
        be->dgemm(KFAC_NO_TRANS, KFAC_NO_TRANS, K, n2, n1, 1.0, X[f], n1, Ms[f], n2, 0.0, T, n2);
        for (int k = 0; k < K; k++)
            qs[f][k] = kfac_inner(be, (size_t)n2, T + (size_t)k * n2, X[f + 2] + (size_t)k * n2);
    }
    double cross = kfac_inner(be, (size_t)K, qa, qg) / K;
    double model2 =
        kfac_frob2(be, (size_t)n[0] * n[2], XA) * kfac_frob2(be, (size_t)n[1] * n[3], XG);
    return norm2 > 0 ? sqrt(fmax(norm2 - 2 * cross + model2, 0.0) / norm2) : 0.0;
}

size_t kfac_fisher_batches_work_size(int K, int B, int T, int n_a, int n_g)
{
    size_t a2 = (size_t)n_a * n_a, g2 = (size_t)n_g * n_g;
    size_t fit = kfac_kfoc_work_size(B, T, n_a, n_g), run = kfac_kfoc_running_work_size(n_a, n_g);
    size_t err = kfac_fisher_work_size(K, T, n_a, n_g);
    size_t scratch = fit > run ? fit : run;
    size_t slice = T > 1 ? (size_t)B * n_a * n_g : 0;
    return 3 * (a2 + g2) + slice + (scratch > err ? scratch : err);
}

void kfac_fisher_batch_errors(const struct kfac_fisher_block *b, int B, int side, int max_iter,
                              double tol, double *work, double *errors, struct kfac_kfoc_info *info)
{
    const struct kfac_backend *be = b->be;
    int K = b->K, T = b->T, na = b->n_a, ng = b->n_g;
    size_t a2 = (size_t)na * na, g2 = (size_t)ng * ng;
    double *L = work, *R = L + a2, *sum_L = R + g2, *sum_R = sum_L + a2, *run_L = sum_R + g2,
           *run_R = run_L + a2, *slice = run_R + g2;
    double *scratch = slice + (b->X ? (size_t)B * na * ng : 0);
    struct norm2_cache norm2 = {0};
    errors[KFAC_FISHER_DIAG] = diag_error(b, scratch, &norm2);
    /* K-FAC's factors of all K cases, whatever the batches; for a convolution KFC's
     * T·Ω̂ ⊗ Γ̂ (REFERENCE.md §2), the sums over the K·T rows divided by K and K·T. */
    be->dgemm(KFAC_TRANS, KFAC_NO_TRANS, na, na, K * T, 1.0 / K, b->A, na, b->A, na, 0.0, L, na);
    be->dgemm(KFAC_TRANS, KFAC_NO_TRANS, ng, ng, K * T, 1.0 / ((double)K * T), b->G, ng, b->G, ng,
              0.0, R, ng);
    errors[KFAC_FISHER_KFAC] = kron_error(b, L, R, scratch, &norm2);
    memset(sum_L, 0, a2 * sizeof *sum_L);
    memset(sum_R, 0, g2 * sizeof *sum_R);
    int P = (K + B - 1) / B;
    info->iterations = 0;
    info->converged = 1;
    info->change = 0;
    for (int start = 0; start < K; start += B) {
        int n = K - start < B ? K - start : B;
        struct kfac_fisher_block bp = {
            be,  n, na,  ng, b->A + (size_t)start * T * na, b->G + (size_t)start * T * ng,
            NAN, T, NULL};
        if (b->X) {
            /* The batch's gradients, X[:, start..start+n, :], made contiguous. */
            for (int o = 0; o < ng; o++)
                memcpy(slice + (size_t)o * n * na, b->X + ((size_t)o * K + start) * na,
                       (size_t)n * na * sizeof *slice);
            bp.X = slice;
        }
        struct kfac_kfoc_info fi;
        kfac_kfoc_fit(&bp, side, max_iter, tol, 0, L, R, scratch, &fi);
        if (fi.iterations > info->iterations)
            info->iterations = fi.iterations;
        if (fi.change > info->change)
            info->change = fi.change;
        info->converged &= fi.converged;
        /* Each batch's fit approximates its block's mean, which weighs n/K of F: the
         * scaled factors are summed with those weights, the unit-norm ones averaged over
         * the P batches (REFERENCE.md §7). */
        double w = (double)n / K, u = 1.0 / P;
        be->daxpy((int)a2, side ? w : u, L, sum_L);
        be->daxpy((int)g2, side ? u : w, R, sum_R);
        if (start == 0) {
            memcpy(run_L, L, a2 * sizeof *L);
            memcpy(run_R, R, g2 * sizeof *R);
        } else {
            kfac_kfoc_running_fit(be, na, ng, run_L, run_R, (double)start / (start + n), L, R, side,
                                  max_iter, tol, scratch);
        }
    }
    errors[KFAC_FISHER_KFOC_APPROX] = kron_error(b, sum_L, sum_R, scratch, &norm2);
    errors[KFAC_FISHER_KFOC_RUNNING] = kron_error(b, run_L, run_R, scratch, &norm2);
}

/* The doubles of a probe for K cases: the largest layer's ā, g, per-case gradients and
 * work space. */
struct probe_room {
    size_t a, g, x, work;
};

static struct probe_room probe_room(const struct kfac_net *net, int K)
{
    struct probe_room r = {0};
    size_t k = (size_t)K;
    for (int i = 0; i < net->n_blocks; i++) {
        const struct kfac_layer *l = net->blocks[i];
        size_t na = (size_t)l->d_in + 1, ng = (size_t)l->d_out, T = (size_t)l->n_pos;
        size_t w = kfac_fisher_batches_work_size(K, K, l->n_pos, (int)na, (int)ng);
        r.a = k * T * na > r.a ? k * T * na : r.a;
        r.g = k * T * ng > r.g ? k * T * ng : r.g;
        r.x = T > 1 && k * na * ng > r.x ? k * na * ng : r.x;
        r.work = w > r.work ? w : r.work;
    }
    return r;
}

/* A rank's most cases of the probe's K: more than a chunk, and they are kept. */
static int probe_kept(const struct kfac_net *net, int K, int chunk)
{
    int most = kfac_batch_most(K, kfac_comm_size(net->comm));
    return most > chunk ? most : 0;
}

double kfac_fisher_probe_bytes(const struct kfac_net *net, int K, int chunk)
{
    struct probe_room r = probe_room(net, K);
    return (double)(r.a + r.g + r.x + r.work) * sizeof(double) +
           kfac_kept_rows_bytes(net, probe_kept(net, K, chunk));
}

struct kfac_fisher_probe *kfac_fisher_probe_new(const struct kfac_net *net, int K, int side)
{
    struct kfac_fisher_probe *p = kfac_xcalloc(1, sizeof *p);
    p->K = K;
    p->side = side;
    p->n_blocks = net->n_blocks;
    p->comm = net->comm;
    p->counts = kfac_xcalloc(2 * (size_t)kfac_comm_size(net->comm), sizeof *p->counts);
    struct probe_room r = probe_room(net, K);
    p->A = kfac_xmalloc(r.a * sizeof *p->A);
    p->G = kfac_xmalloc(r.g * sizeof *p->G);
    p->X = r.x ? kfac_xmalloc(r.x * sizeof *p->X) : NULL;
    p->work = kfac_xmalloc(r.work * sizeof *p->work);
    kfac_kept_rows_reserve(&p->kept, net, probe_kept(net, K, net->max_batch));
    return p;
}

void kfac_fisher_probe_free(struct kfac_fisher_probe *p)
{
    if (!p)
        return;
    free(p->A);
    free(p->G);
    free(p->X);
    free(p->work);
    free(p->counts);
    kfac_kept_rows_free(&p->kept);
    free(p);
}

void kfac_fisher_probe_run(struct kfac_fisher_probe *p, struct kfac_net *net, enum kfac_loss loss,
                           const struct kfac_batch *batch, struct kfac_rng *rng, double *errors)
{
    int total = kfac_batch_total(batch), K = total < p->K ? total : p->K;
    int mine = kfac_batch_share(batch, K), ranks = kfac_comm_size(p->comm);
    uint64_t key = kfac_rng_u64(rng);
    /* In one chunk the layer buffers hold the rows; else they are kept chunk by chunk. */
    int chunk = p->kept.K > 0 ? net->max_batch : mine;
    for (int first = 0; first < mine; first += chunk) {
        int mc = mine - first < chunk ? mine - first : chunk;
        kfac_net_forward(net, mc, batch->x + (size_t)first * net->d_in);
        net->be->loss_sample_grad(loss, mc, net->d_out, kfac_net_output(net), key,
                                  kfac_batch_place(batch, first), kfac_batch_step(batch),
                                  kfac_net_output_grad(net));
        kfac_net_backward(net, mc, 1.0f, KFAC_GRADS_NONE);
        if (p->kept.K > 0)
            kfac_kept_rows_put(&p->kept, net, first, mc);
    }
    kfac_comm_gather_ints(p->comm, mine, p->counts);
    p->kfoc_iterations = 0;
    for (int i = 0; i < net->n_blocks; i++) {
        const struct kfac_layer *l = net->blocks[i];
        int na = l->d_in + 1, ng = l->d_out, T = l->n_pos;
        const float *a = p->kept.K > 0 ? p->kept.rows + p->kept.at[2 * i] : l->abar;
        const float *g = p->kept.K > 0 ? p->kept.rows + p->kept.at[2 * i + 1] : l->g;
        kfac_comm_gather_rows(p->comm, KFAC_COMM_SCALARS, a, T, na, p->counts,
                              p->counts + ranks, p->A);
        kfac_comm_gather_rows(p->comm, KFAC_COMM_SCALARS, g, T, ng, p->counts,
                              p->counts + ranks, p->G);
        struct kfac_fisher_block b;
        kfac_fisher_block_init(&b, net->be, K, T, na, p->A, ng, p->G, p->X, p->work);
        /* One batch of all K cases: both K-FOC aggregations are the fit of the cases. */
        double e[KFAC_FISHER_METHODS];
        struct kfac_kfoc_info info;
        kfac_fisher_batch_errors(&b, K, p->side, KFAC_KFOC_MAX_ITER, KFAC_KFOC_TOL, p->work, e,
                                 &info);
        errors[3 * i] = e[KFAC_FISHER_DIAG];
        errors[3 * i + 1] = e[KFAC_FISHER_KFAC];
        errors[3 * i + 2] = e[KFAC_FISHER_KFOC_RUNNING];
        if (info.iterations > p->kfoc_iterations)
            p->kfoc_iterations = info.iterations;
    }
}
