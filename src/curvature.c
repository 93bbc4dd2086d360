/*
 * curvature.c: K-FAC's Kronecker factors: mini-batch statistics by the backend's ssyrk,
 * their exponential averages in double, the damped inverses by Cholesky (its dpotri, or
 * spotri in float) or from eigendecompositions (its dsyevd), and the damped Kronecker
 * inverse applied with two GEMMs per layer (see curvature.h). Each step calls into the
 * variant's table (curvature_tridiag.c's) when one is reserved.
 */
#include "kfac/curvature.h"
#include "curvature_internal.h"
#include "kfac/mat.h"
#include "kfac/parallel.h"
#include "kfac/status.h"
#include "vecmath.h"

#include <float.h>
#include <math.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* The size of factor j (2i: layer i's Ā, 2i + 1: its G). */
static int factor_size(const struct kfac_curvature *c, int j)
{
    return j % 2 ? c->f[j / 2].n_g : c->f[j / 2].n_a;
}

struct kfac_curvature *kfac_curvature_new(const struct kfac_net *net)
{
    struct kfac_curvature *c = kfac_xcalloc(1, sizeof *c);
    c->be = net->be;
    c->comm = net->comm;
    c->n_blocks = net->n_blocks;
    c->own_hi = net->n_blocks;
    c->f = kfac_xcalloc((size_t)net->n_blocks, sizeof *c->f);
    size_t max_n = 0, max_block = 0;
    for (int i = 0; i < net->n_blocks; i++) {
        const struct kfac_layer *l = net->blocks[i];
        struct kfac_factors *f = &c->f[i];
        f->layer = l->index + 1;
        f->n_pos = l->n_pos;
        f->n_a = l->d_in + 1;
        f->n_g = l->d_out;
        size_t na2 = (size_t)f->n_a * f->n_a, ng2 = (size_t)f->n_g * f->n_g;
        f->A = kfac_xcalloc(na2, sizeof *f->A);
        f->G = kfac_xcalloc(ng2, sizeof *f->G);
        f->A_keep = kfac_xcalloc(na2, sizeof *f->A_keep);
        f->G_keep = kfac_xcalloc(ng2, sizeof *f->G_keep);
        f->batch_A = kfac_floats_new(na2);
        f->batch_G = kfac_floats_new(ng2);
        f->UA_t = kfac_xcalloc(na2, sizeof *f->UA_t);
        f->UG_t = kfac_xcalloc(ng2, sizeof *f->UG_t);
        f->eig_A = kfac_xcalloc((size_t)f->n_a, sizeof *f->eig_A);
        f->eig_G = kfac_xcalloc((size_t)f->n_g, sizeof *f->eig_G);
        f->A_inv = kfac_floats_new(na2);
        f->G_inv = kfac_floats_new(ng2);
        /* Until the first decomposition the inverse is that of the damping alone. */
        for (int j = 0; j < f->n_a; j++)
            f->UA_t[(size_t)j * f->n_a + j] = 1.0;
        for (int j = 0; j < f->n_g; j++)
            f->UG_t[(size_t)j * f->n_g + j] = 1.0;
        f->pi = 1.0;
        size_t n = (size_t)(f->n_a > f->n_g ? f->n_a : f->n_g);
        if (n > max_n)
            max_n = n;
        if (l->n_params > max_block)
            max_block = l->n_params;
    }
    if (max_n * max_n > max_block)
        max_block = max_n * max_n;
    c->merge_first = kfac_xmalloc((size_t)(2 * net->n_blocks + 1) * sizeof *c->merge_first);
    c->merge_bad = kfac_xcalloc((size_t)(2 * net->n_blocks), sizeof *c->merge_bad);
    c->merge_first[0] = 0;
    for (int j = 0; j < 2 * net->n_blocks; j++) {
        int n = j % 2 ? c->f[j / 2].n_g : c->f[j / 2].n_a;
        c->merge_first[j + 1] = c->merge_first[j] + (n + 1) / 2;
    }
    c->by_size = kfac_xmalloc((size_t)(2 * net->n_blocks) * sizeof *c->by_size);
    for (int j = 0; j < 2 * net->n_blocks; j++) /* by insertion, largest first, ties in order */
        for (int at = j;; at--) {
            if (at == 0 || factor_size(c, c->by_size[at - 1]) >= factor_size(c, j)) {
                c->by_size[at] = j;
                break;
            }
            c->by_size[at] = c->by_size[at - 1];
        }
    kfac_eigen_work_init(&c->eig, c->be, (int)max_n);
    c->tmp_n = max_block;
    c->tmp = kfac_floats_new(max_block);
    c->dtmp = kfac_xmalloc(2 * max_block * sizeof *c->dtmp);
    return c;
}

void kfac_curvature_use_cholesky(struct kfac_curvature *c, int in_float)
{
    c->cholesky = 1;
    c->float_inverses = in_float;
    int max_n = 0;
    for (int i = 0; i < c->n_blocks; i++) {
        struct kfac_factors *f = &c->f[i];
        free(f->UA_t);
        free(f->UG_t);
        free(f->eig_A);
        free(f->eig_G);
        f->UA_t = f->UG_t = f->eig_A = f->eig_G = NULL;
        /* Zero until the first decomposition: the inverse of the damping alone. */
        f->A_dec = kfac_xcalloc((size_t)f->n_a * f->n_a, sizeof *f->A_dec);
        f->G_dec = kfac_xcalloc((size_t)f->n_g * f->n_g, sizeof *f->G_dec);
        max_n = f->n_a > max_n ? f->n_a : max_n;
        max_n = f->n_g > max_n ? f->n_g : max_n;
    }
    c->eig_w = kfac_xmalloc((size_t)max_n * sizeof *c->eig_w);
    c->chol_info = kfac_xcalloc((size_t)(2 * c->n_blocks), sizeof *c->chol_info);
}

void kfac_curvature_keep_inverses(struct kfac_curvature *c, int n_spare)
{
    if ((c->variant && c->variant->invert) || c->n_spare)
        return;
    c->n_spare = n_spare < KFAC_SPARE_INVERSES ? n_spare : KFAC_SPARE_INVERSES;
    for (int i = c->own_lo; i < c->own_hi; i++) {
        struct kfac_factors *f = &c->f[i];
        for (int j = 0; j < c->n_spare; j++) {
            f->A_spare[j] = kfac_floats_new((size_t)f->n_a * f->n_a);
            f->G_spare[j] = kfac_floats_new((size_t)f->n_g * f->n_g);
        }
    }
}

double kfac_curvature_spare_bytes(const struct kfac_net *net, int n_spare)
{
    double floats = 0;
    for (int i = 0; i < net->n_blocks; i++) {
        double na = net->blocks[i]->d_in + 1.0, ng = net->blocks[i]->d_out;
        floats += na * na + ng * ng;
    }
    return floats * (n_spare < KFAC_SPARE_INVERSES ? n_spare : KFAC_SPARE_INVERSES) *
           sizeof(float);
}

/* A new decomposition: no inverse, current or kept, is valid for it. */
static void forget_inverses(struct kfac_curvature *c)
{
    c->inv_gamma = 0;
    for (int j = 0; j < c->n_spare; j++)
        c->spare_gamma[j] = 0;
}

/* Swaps the current inverses with spare set j (this rank's layers), γ included. */
static void swap_spare(struct kfac_curvature *c, int j)
{
    for (int i = c->own_lo; i < c->own_hi; i++) {
        struct kfac_factors *f = &c->f[i];
        float *t = f->A_inv;
        f->A_inv = f->A_spare[j];
        f->A_spare[j] = t;
        t = f->G_inv;
        f->G_inv = f->G_spare[j];
        f->G_spare[j] = t;
    }
    double g = c->inv_gamma;
    c->inv_gamma = c->spare_gamma[j];
    c->spare_gamma[j] = g;
}

/* Makes the kept inverses of γ current if there are any (returns 1); else keeps the current
 * ones (if valid) in a free spare set, or in place of the longest kept, so that the
 * current buffers may be overwritten (returns 0). */
static int use_spare(struct kfac_curvature *c, double gamma)
{
    int free_set = -1;
    for (int j = 0; j < c->n_spare; j++) {
        if (c->spare_gamma[j] == gamma) {
            swap_spare(c, j);
            return 1;
        }
        if (c->spare_gamma[j] == 0 && free_set < 0)
            free_set = j;
    }
    if (c->n_spare && c->inv_gamma != 0) {
        if (free_set < 0) {
            free_set = c->spare_next;
            c->spare_next = (c->spare_next + 1) % c->n_spare;
        }
        swap_spare(c, free_set);
    }
    return 0;
}

double kfac_curvature_bytes(const struct kfac_net *net)
{
    double bytes = 0, max_n = 0, max_block = 0;
    for (int i = 0; i < net->n_blocks; i++) {
        const struct kfac_layer *l = net->blocks[i];
        double na = l->d_in + 1.0, ng = l->d_out;
        /* A, A_keep, UA_t (or A_dec) in double, batch_A and A_inv in float; the same for
         * G. */
        bytes += (na * na + ng * ng) * (3 * sizeof(double) + 2 * sizeof(float));
        max_n = fmax(max_n, fmax(na, ng));
        max_block = fmax(max_block, (double)l->n_params);
    }
    /* The scratch kfac_curvature_new() sizes for the largest layer: the eigensolver's
     * matrix and LAPACK's documented workspace (1 + 6n + 2n² doubles), tmp and dtmp. */
    max_block = fmax(max_block, max_n * max_n);
    bytes += (max_n * max_n + 1 + 6 * max_n + 2 * max_n * max_n) * sizeof(double) +
             max_block * (sizeof(float) + 2 * sizeof(double));
    return bytes;
}

void kfac_curvature_state_add(struct kfac_state *st, int block, const char *what,
                              enum kfac_state_type type, void *p, size_t n, double lo, double hi)
{
    char name[48];
    snprintf(name, sizeof name, "curv.%d.%s", block, what);
    if (p)
        kfac_state_add_range(st, name, type, p, n, lo, hi);
}

void kfac_curvature_state(struct kfac_curvature *c, struct kfac_state *st)
{
    for (int i = 0; i < c->n_blocks; i++) {
        struct kfac_factors *f = &c->f[i];
        size_t a2 = (size_t)f->n_a * f->n_a, g2 = (size_t)f->n_g * f->n_g;
        kfac_curvature_state_add(st, i, "A", KFAC_STATE_F64, f->A, a2, -DBL_MAX, DBL_MAX);
        kfac_curvature_state_add(st, i, "G", KFAC_STATE_F64, f->G, g2, -DBL_MAX, DBL_MAX);
        kfac_curvature_state_add(st, i, "batch_A", KFAC_STATE_F32, f->batch_A, a2, -DBL_MAX,
                                 DBL_MAX);
        kfac_curvature_state_add(st, i, "batch_G", KFAC_STATE_F32, f->batch_G, g2, -DBL_MAX,
                                 DBL_MAX);
        kfac_curvature_state_add(st, i, "UA_t", KFAC_STATE_F64, f->UA_t, a2, -DBL_MAX, DBL_MAX);
        kfac_curvature_state_add(st, i, "UG_t", KFAC_STATE_F64, f->UG_t, g2, -DBL_MAX, DBL_MAX);
        kfac_curvature_state_add(st, i, "eig_A", KFAC_STATE_F64, f->eig_A, (size_t)f->n_a, 0,
                                 DBL_MAX);
        kfac_curvature_state_add(st, i, "eig_G", KFAC_STATE_F64, f->eig_G, (size_t)f->n_g, 0,
                                 DBL_MAX);
        kfac_curvature_state_add(st, i, "A_dec", KFAC_STATE_F64, f->A_dec, a2, -DBL_MAX, DBL_MAX);
        kfac_curvature_state_add(st, i, "G_dec", KFAC_STATE_F64, f->G_dec, g2, -DBL_MAX, DBL_MAX);
        kfac_curvature_state_add(st, i, "pi", KFAC_STATE_F64, &f->pi, 1, DBL_MIN, DBL_MAX);
        kfac_curvature_state_add(st, i, "A_inv", KFAC_STATE_F32, f->A_inv, a2, -FLT_MAX, FLT_MAX);
        kfac_curvature_state_add(st, i, "G_inv", KFAC_STATE_F32, f->G_inv, g2, -FLT_MAX, FLT_MAX);
    }
    /* Shared out, no rank holds every layer's inverses: the checkpoint says none is valid. */
    kfac_state_add_range(st, "curv.inv_gamma", KFAC_STATE_F64,
                         c->own_count ? &c->no_inverses : &c->inv_gamma, 1, 0, DBL_MAX);
    if (c->variant && c->variant->state)
        c->variant->state(c, st);
}

void kfac_curvature_free(struct kfac_curvature *c)
{
    if (!c)
        return;
    if (c->variant && c->variant->free)
        c->variant->free(c); /* it reads c->f */
    for (int i = 0; i < c->n_blocks; i++) {
        struct kfac_factors *f = &c->f[i];
        free(f->A);
        free(f->G);
        free(f->A_keep);
        free(f->G_keep);
        kfac_floats_free(f->batch_A);
        kfac_floats_free(f->batch_G);
        free(f->UA_t);
        free(f->UG_t);
        free(f->eig_A);
        free(f->eig_G);
        free(f->A_dec);
        free(f->G_dec);
        kfac_floats_free(f->A_inv);
        kfac_floats_free(f->G_inv);
        for (int j = 0; j < KFAC_SPARE_INVERSES; j++) {
            kfac_floats_free(f->A_spare[j]);
            kfac_floats_free(f->G_spare[j]);
        }
    }
    free(c->f);
    free(c->merge_first);
    free(c->merge_bad);
    kfac_eigen_work_free(&c->eig);
    kfac_floats_free(c->tmp);
    kfac_floats_free(c->packed);
    free(c->own_count);
    free(c->own_displ);
    free(c->dtmp);
    free(c->eig_w);
    free(c->by_size);
    free(c->chol_info);
    free(c);
}

double kfac_stats_decay(long k, double cap)
{
    double eps = 1.0 - 1.0 / (double)k;
    return eps < cap ? eps : cap;
}

/* fn(ctx, part, part + 1) for parts 0 and 1 at once, each on one thread of the backend,
 * where it runs two threads and is concurrent (backend.h); else fn(ctx, 0, 1) alone, on all
 * of the backend's threads. fn takes its work from a shared counter, so either way it all
 * gets done. On two cores OpenBLAS's two-thread ssyrk and dpotri leave its second thread
 * partly idle, most of all on the smaller factors; two calls at once keep both busy. */
static void on_two_threads(const struct kfac_backend *be, void (*fn)(void *, int, int),
                           void *ctx)
{
    int threads = be->threads();
    if (threads == 2 && be->concurrent) {
        be->set_threads(1);
        kfac_parallel_for_parts(2, 2, fn, ctx);
        be->set_threads(threads);
    } else {
        fn(ctx, 0, 1);
    }
}

/* A batch's statistics for the factors, largest first as the threads take them: factor
 * j's upper triangle (Ā's for j = 2i, G's for 2i + 1) = scale · xᵀx + beta · it, for x
 * the m cases' rows of block i's ā or g. */
struct moments_pass {
    struct kfac_curvature *c;
    const struct kfac_net *net;
    int m, total;
    float beta;
    atomic_int next; /* the next place in c->by_size */
};

static void moments_part(void *ctx, int part, int part_end)
{
    (void)part, (void)part_end;
    struct moments_pass *p = ctx;
    struct kfac_curvature *c = p->c;
    for (int at; (at = atomic_fetch_add(&p->next, 1)) < 2 * c->n_blocks;) {
        int j = c->by_size[at];
        const struct kfac_layer *l = p->net->blocks[j / 2];
        struct kfac_factors *f = &c->f[j / 2];
        /* Ā = |T| Ω̂ and G = Γ̂ over the total·|T| rows (see curvature.h). */
        int rows = p->m * f->n_pos, n = j % 2 ? f->n_g : f->n_a;
        double scale = j % 2 ? 1.0 / ((double)p->total * f->n_pos) : 1.0 / p->total;
        c->be->ssyrk(KFAC_TRANS, n, rows, (float)scale, j % 2 ? l->g : l->abar, n, p->beta,
                     j % 2 ? f->batch_G : f->batch_A, n);
    }
}

/* The upper triangle of row i of out (n × n) = εX + (1−ε) B from those of X and B;
 * returns whether B's part of the row is finite (|b| ≤ FLT_MAX is false for ±inf and
 * NaN: one comparison per element, which the compiler vectorises with the merge). */
KFAC_VECTOR_KERNEL
static int merge_row(int n, int i, const double *X, const float *B, double eps, double *out)
{
    const double *x = X + (size_t)i * n;
    const float *b = B + (size_t)i * n;
    double *o = out + (size_t)i * n;
    int finite = 1;
    for (int j = i; j < n; j++) {
        o[j] = eps * x[j] + (1.0 - eps) * b[j];
        finite &= fabsf(b[j]) <= FLT_MAX;
    }
    return finite;
}

/* The merge of every factor, as kfac_parallel_for() shares it out: pair p of a factor of
 * n rows is its rows p and n−1−p (n + 1 elements of the upper triangle together), so that
 * equal ranges of pairs are equal work. Factor j is block j/2's A (j even) or G. */
struct merge_job {
    struct kfac_curvature *c;
    double eps;
    int *first;        /* 2 n_blocks + 1: factor j's first pair; the last: all pairs */
    _Atomic int *bad;  /* 2 n_blocks: 1 where the batch's factor j is not finite */
};

static void merge_pairs(void *ctx, int lo, int hi)
{
    struct merge_job *job = ctx;
    for (int j = 0, p = lo; p < hi; j++) {
        if (p >= job->first[j + 1])
            continue;
        const struct kfac_factors *f = &job->c->f[j / 2];
        int n = j % 2 ? f->n_g : f->n_a, finite = 1;
        const double *X = j % 2 ? f->G : f->A;
        const float *B = j % 2 ? f->batch_G : f->batch_A;
        double *out = j % 2 ? f->G_keep : f->A_keep;
        for (; p < hi && p < job->first[j + 1]; p++) {
            int t = p - job->first[j];
            finite &= merge_row(n, t, X, B, job->eps, out);
            if (n - 1 - t != t)
                finite &= merge_row(n, n - 1 - t, X, B, job->eps, out);
        }
        if (!finite)
            job->bad[j] = 1;
    }
}

void kfac_curvature_swap_kept(double **x, double **keep)
{
    double *t = *x;
    *x = *keep;
    *keep = t;
}

/* The lower triangle of X (n × n) from the upper: X exactly symmetric. */
static void symmetrise(int n, double *X)
{
    for (int i = 1; i < n; i++)
        for (int j = 0; j < i; j++)
            X[(size_t)i * n + j] = X[(size_t)j * n + i];
}

void kfac_curvature_symmetrise(struct kfac_curvature *c)
{
    for (int i = 0; i < c->n_blocks; i++) {
        symmetrise(c->f[i].n_a, c->f[i].A);
        symmetrise(c->f[i].n_g, c->f[i].G);
    }
}

void kfac_curvature_accumulate(struct kfac_curvature *c, const struct kfac_net *net, int m,
                              int total, int first)
{
    struct moments_pass p = {.c = c, .net = net, .m = m, .total = total,
                             .beta = first ? 0.0f : 1.0f};
    atomic_init(&p.next, 0);
    on_two_threads(c->be, moments_part, &p);
    if (c->variant && c->variant->statistics)
        c->variant->statistics(c, net, m, total, first);
}

int kfac_curvature_update(struct kfac_curvature *c, const struct kfac_net *net, int m,
                          double eps, long k)
{
    if (c->variant && c->variant->update)
        return c->variant->update(c, net, m, eps, k);
    kfac_curvature_accumulate(c, net, m, m, 1);
    return kfac_curvature_merge_batch(c, eps, k);
}

/* The upper triangle of X (n × n) into buf, or from it with unpack; returns its floats. */
static size_t pack_upper(int n, float *X, float *buf, int unpack)
{
    size_t at = 0;
    for (int i = 0; i < n; i++) {
        size_t len = (size_t)(n - i);
        float *row = X + (size_t)i * n + i;
        if (buf)
            memcpy(unpack ? row : buf + at, unpack ? buf + at : row, len * sizeof *row);
        at += len;
    }
    return at;
}

/* Every batch statistic into buf (unpack: back from it); returns the floats. */
static size_t pack_batch(struct kfac_curvature *c, float *buf, int unpack)
{
    size_t at = 0;
    for (int i = 0; i < c->n_blocks; i++) {
        struct kfac_factors *f = &c->f[i];
        at += pack_upper(f->n_a, f->batch_A, buf ? buf + at : NULL, unpack);
        at += pack_upper(f->n_g, f->batch_G, buf ? buf + at : NULL, unpack);
    }
    if (c->variant && c->variant->pack)
        at += c->variant->pack(c, buf ? buf + at : NULL, unpack);
    return at;
}

/* The ranks' shares of the batch statistics summed: one buffer, one call. */
static void sum_over_ranks(struct kfac_curvature *c)
{
    if (kfac_comm_size(c->comm) <= 1)
        return;
    size_t n = pack_batch(c, NULL, 0);
    if (!c->packed) /* once: the variant is chosen before the first update */
        c->packed = kfac_floats_new(n);
    pack_batch(c, c->packed, 0);
    kfac_comm_sum_floats(c->comm, KFAC_COMM_STATISTICS, c->packed, n);
    pack_batch(c, c->packed, 1);
}

int kfac_curvature_merge_batch(struct kfac_curvature *c, double eps, long k)
{
    sum_over_ranks(c);
    /* The merged factors go into the kept buffers, which are then swapped in: the
     * factors before the update stay whole until the next one, at no copy. */
    struct merge_job job = {c, eps, c->merge_first, c->merge_bad};
    for (int j = 0; j < 2 * c->n_blocks; j++)
        c->merge_bad[j] = 0;
    kfac_parallel_for(c->merge_first[2 * c->n_blocks], merge_pairs, &job);
    for (int j = 0; j < 2 * c->n_blocks; j++)
        if (c->merge_bad[j]) {
            c->kept = 0; /* the kept buffers hold half a merge now */
            return kfac_error(KFAC_ENUMERIC, "iteration %ld: layer %d's %s statistics (the "
                                             "factor %s) are not finite; nothing was updated",
                              k, c->f[j / 2].layer, j % 2 ? "gradient" : "activation",
                              j % 2 ? "G" : "A");
        }
    for (int i = 0; i < c->n_blocks; i++) {
        struct kfac_factors *f = &c->f[i];
        kfac_curvature_swap_kept(&f->A, &f->A_keep);
        kfac_curvature_swap_kept(&f->G, &f->G_keep);
    }
    if (c->variant && c->variant->merge)
        c->variant->merge(c, eps);
    c->kept = 1;
    return 0;
}

void kfac_curvature_rollback(struct kfac_curvature *c)
{
    if (!c->kept)
        return;
    for (int i = 0; i < c->n_blocks; i++) {
        kfac_curvature_swap_kept(&c->f[i].A, &c->f[i].A_keep);
        kfac_curvature_swap_kept(&c->f[i].G, &c->f[i].G_keep);
    }
    if (c->variant && c->variant->rollback)
        c->variant->rollback(c);
    c->kept = 0;
}

void kfac_curvature_commit(struct kfac_curvature *c)
{
    c->kept = 0;
}

/* Σ X_jj and ‖X‖_F of X (n × n). */
static double trace(int n, const double *X)
{
    double t = 0;
    for (int j = 0; j < n; j++)
        t += X[(size_t)j * n + j];
    return t;
}

static double frobenius(const struct kfac_backend *be, int n, const double *X)
{
    return be->dnrm2(n * n, X);
}

static double pi_of(const struct kfac_backend *be, const struct kfac_factors *f,
                    enum kfac_pi_norm norm)
{
    double a, g;
    if (norm == KFAC_PI_TRACE) {
        a = trace(f->n_a, f->A) / f->n_a;
        g = trace(f->n_g, f->G) / f->n_g;
    } else {
        a = frobenius(be, f->n_a, f->A) / sqrt((double)f->n_a);
        g = frobenius(be, f->n_g, f->G) / sqrt((double)f->n_g);
    }
    return a > 0 && g > 0 ? sqrt(a / g) : 1.0;
}

void kfac_eigen_work_init(struct kfac_eigen_work *w, const struct kfac_backend *be, int max_n)
{
    w->be = be;
    w->max_n = max_n;
    w->a = kfac_xmalloc((size_t)max_n * max_n * sizeof *w->a);
    /* Workspace query for the largest matrix: dsyevd then never allocates in the loop. */
    double wq, dummy_w;
    int iq, n = max_n;
    if (be->dsyevd(n, w->a, &dummy_w, &wq, -1, &iq, -1) != 0) {
        wq = 1.0 + 6.0 * (double)n + 2.0 * (double)n * (double)n; /* LAPACK's documented minimum */
        iq = 3 + 5 * n;
    }
    w->lwork = (int)wq;
    w->liwork = iq;
    w->work = kfac_xmalloc((size_t)w->lwork * sizeof *w->work);
    w->iwork = kfac_xmalloc((size_t)w->liwork * sizeof *w->iwork);
}

void kfac_eigen_work_free(struct kfac_eigen_work *w)
{
    free(w->a);
    free(w->work);
    free(w->iwork);
    memset(w, 0, sizeof *w);
}

int kfac_eigen(struct kfac_eigen_work *w, int n, const double *X, double *eig)
{
    memcpy(w->a, X, (size_t)n * n * sizeof *X);
    /* Our upper triangle is the backend's column-major lower one, and the eigenvectors
     * come back as its columns, i.e. as rows of the row-major array. */
    return w->be->dsyevd(n, w->a, eig, w->work, w->lwork, w->iwork, w->liwork);
}

/* A PSD factor's eigenvalues (n) with its rounding noise below 0 clipped. */
static void clip_negative(int n, double *eig)
{
    for (int j = 0; j < n; j++)
        if (eig[j] < 0)
            eig[j] = 0;
}

/* Eigendecomposition of X (n × n, symmetric) into U_t (n × n, rows: eigenvectors) and
 * eig. */
static int eigen(struct kfac_curvature *c, int n, const double *X, double *U_t, double *eig)
{
    int info = kfac_eigen(&c->eig, n, X, eig);
    if (info != 0)
        return info;
    memcpy(U_t, c->eig.a, (size_t)n * n * sizeof *U_t);
    clip_negative(n, eig);
    return 0;
}

/* Factor j's matrix, its size and where its decomposition goes (j = 2i: layer i's Ā,
 * 2i + 1: its G). */
static void factor(struct kfac_curvature *c, int j, int *n, double **X, double **U_t,
                   double **eig)
{
    struct kfac_factors *f = &c->f[j / 2];
    *n = factor_size(c, j);
    *X = j % 2 ? f->G : f->A;
    *U_t = j % 2 ? f->UG_t : f->UA_t;
    *eig = j % 2 ? f->eig_G : f->eig_A;
}

/* A failure's code for factor j (2i: layer i's Ā, 2i + 1: its G) and LAPACK's info:
 * (2 n_blocks − j) · 2³² + info, so that the ranks' largest is the lowest factor's. */
static long failure_code(const struct kfac_curvature *c, int j, int info)
{
    return (long)(2 * c->n_blocks - j) << 32 | (unsigned)info;
}

/* The layer, factor name and LAPACK info that failure_code coded in failed (≠ 0). */
static void failure_decode(const struct kfac_curvature *c, long failed, int *layer,
                           const char **name, int *info)
{
    int j = 2 * c->n_blocks - (int)(failed >> 32);
    *layer = c->f[j / 2].layer;
    *name = j % 2 ? "G" : "A";
    *info = (int)(failed & 0xffffffff);
}

/* The Cholesky method's decomposition: the factors kept as they are now. */
static void keep_factors(struct kfac_curvature *c)
{
    for (int i = 0; i < c->n_blocks; i++) {
        struct kfac_factors *f = &c->f[i];
        memcpy(f->A_dec, f->A, (size_t)f->n_a * f->n_a * sizeof *f->A);
        memcpy(f->G_dec, f->G, (size_t)f->n_g * f->n_g * sizeof *f->G);
    }
}

int kfac_curvature_decompose(struct kfac_curvature *c, enum kfac_pi_norm norm, long k)
{
    kfac_curvature_symmetrise(c);
    if (c->cholesky) {
        keep_factors(c);
        for (int i = 0; i < c->n_blocks; i++)
            c->f[i].pi = pi_of(c->be, &c->f[i], norm);
        forget_inverses(c);
        return 0;
    }
    int ranks = kfac_comm_size(c->comm), rank = kfac_comm_rank(c->comm);
    int n_factors = 2 * c->n_blocks;
    long failed = 0; /* the first failure, as failure_code codes it */
    for (int j = rank; j < n_factors && !failed; j += ranks) {
        int n, info;
        double *X, *U_t, *eig;
        factor(c, j, &n, &X, &U_t, &eig);
        if ((info = eigen(c, n, X, U_t, eig)))
            failed = failure_code(c, j, info);
    }
    if ((failed = kfac_comm_max(c->comm, failed))) {
        int layer, info;
        const char *name;
        failure_decode(c, failed, &layer, &name, &info);
        return kfac_error(KFAC_ENUMERIC, "iteration %ld: the eigendecomposition of layer %d's "
                                         "factor %s failed (LAPACK dsyevd info %d)",
                          k, layer, name, info);
    }
    for (int j = 0; ranks > 1 && j < n_factors; j++) {
        int n;
        double *X, *U_t, *eig;
        factor(c, j, &n, &X, &U_t, &eig);
        kfac_comm_broadcast_doubles(c->comm, KFAC_COMM_INVERSE, U_t, (size_t)n * n, j % ranks);
        kfac_comm_broadcast_doubles(c->comm, KFAC_COMM_INVERSE, eig, (size_t)n, j % ranks);
    }
    for (int i = 0; i < c->n_blocks; i++)
        c->f[i].pi = pi_of(c->be, &c->f[i], norm);
    if (c->variant && c->variant->decompose)
        c->variant->decompose(c);
    forget_inverses(c);
    return 0;
}

/* inv (n × n) = U diag(1/(eig + d)) Uᵀ = Wᵀ W for W = diag(1/(eig + d))^{1/2} Uᵀ, from U_t
 * (n × n, rows: eigenvectors; eig + d > 0), formed in double by one SYRK and rounded
 * once; tmp: 2 n × n doubles. */
static void damped_inverse(const struct kfac_backend *be, int n, const double *U_t,
                           const double *eig, double d, double *tmp, float *inv)
{
    double *dinv = tmp + (size_t)n * n;
    for (int j = 0; j < n; j++) {
        double s = sqrt(1.0 / (eig[j] + d));
        const double *u = U_t + (size_t)j * n;
        double *t = tmp + (size_t)j * n;
        for (int r = 0; r < n; r++)
            t[r] = s * u[r];
    }
    be->dsyrk(KFAC_TRANS, n, n, 1.0, tmp, n, 0.0, dinv, n);
    kfac_symmetric_to_floats(n, dinv, inv);
}

/* The Cholesky inversions of one invert: this rank's factors of the layers [lo, hi), each
 * taken by the next free part in the order largest first. */
struct cholesky_pass {
    struct kfac_curvature *c;
    double gamma;
    int lo, hi;
    atomic_int next; /* the next place in c->by_size */
};

/* Factor j's matrix as decomposed, its damping for γ and its inverse. */
static void damped_factor(const struct kfac_curvature *c, int j, double gamma, int *n,
                          const double **X, double *d, float **inv)
{
    struct kfac_factors *f = &c->f[j / 2];
    *n = factor_size(c, j);
    *X = j % 2 ? f->G_dec : f->A_dec;
    *d = j % 2 ? gamma / f->pi : gamma * f->pi;
    *inv = j % 2 ? f->G_inv : f->A_inv;
}

/* inv's lower triangle (n × n) from its upper: a spotri result made whole. */
static void symmetrise_floats(int n, float *inv)
{
    for (int i = 1; i < n; i++)
        for (int j = 0; j < i; j++)
            inv[(size_t)i * n + j] = inv[(size_t)j * n + i];
}

/* Part `part` of a cholesky_pass (kfac_parallel_for_parts() with one part each): each
 * factor's (X + d I)⁻¹ by dpotri in double in the part's half of dtmp, rounded once, or
 * where c->float_inverses by spotri in place, on X + d I rounded once; and the info in
 * c->chol_info (> 0: left to invert_cholesky()). */
static void cholesky_part(void *ctx, int part, int part_end)
{
    (void)part_end;
    struct cholesky_pass *p = ctx;
    struct kfac_curvature *c = p->c;
    double *a = c->dtmp + (size_t)part * c->tmp_n;
    for (int at; (at = atomic_fetch_add(&p->next, 1)) < 2 * c->n_blocks;) {
        int j = c->by_size[at], n;
        if (j / 2 < p->lo || j / 2 >= p->hi)
            continue;
        const double *X;
        double d;
        float *inv;
        damped_factor(c, j, p->gamma, &n, &X, &d, &inv);
        if (c->float_inverses) {
            kfac_symmetric_to_floats(n, X, inv);
            for (int r = 0; r < n; r++)
                inv[(size_t)r * n + r] = (float)(X[(size_t)r * n + r] + d);
            if ((c->chol_info[j] = c->be->spotri(n, inv)) == 0)
                symmetrise_floats(n, inv);
            continue;
        }
        memcpy(a, X, (size_t)n * n * sizeof *a);
        for (int r = 0; r < n; r++)
            a[(size_t)r * n + r] += d;
        if ((c->chol_info[j] = c->be->dpotri(n, a)) == 0)
            kfac_symmetric_to_floats(n, a, inv);
    }
}

/* The damped inverses of the layers [lo, hi) for γ by Cholesky, two factors at once where
 * on_two_threads() can, each in its half of dtmp. Where X + d I is not numerically
 * positive definite, the inverse comes from X's eigendecomposition as the eigen method
 * forms it. Returns 0, or where that failed the lowest factor's failure_code. */
static long invert_cholesky(struct kfac_curvature *c, double gamma, int lo, int hi)
{
    const struct kfac_backend *be = c->be;
    struct cholesky_pass p = {.c = c, .gamma = gamma, .lo = lo, .hi = hi};
    atomic_init(&p.next, 0);
    on_two_threads(be, cholesky_part, &p);
    for (int j = 2 * lo; j < 2 * hi; j++) {
        if (c->chol_info[j] == 0)
            continue;
        int n;
        const double *X;
        double d;
        float *inv;
        damped_factor(c, j, gamma, &n, &X, &d, &inv);
        int info = kfac_eigen(&c->eig, n, X, c->eig_w);
        if (info)
            return failure_code(c, j, info);
        clip_negative(n, c->eig_w);
        damped_inverse(be, n, c->eig.a, c->eig_w, d, c->dtmp, inv);
    }
    return 0;
}

int kfac_curvature_invert(struct kfac_curvature *c, double gamma, long k)
{
    if (gamma == c->inv_gamma || use_spare(c, gamma))
        return 0;
    int last_only = c->variant && c->variant->last_inverse_only, rc = 0;
    int lo = last_only ? c->n_blocks - 1 : c->own_lo;
    long failed = 0; /* each rank inverts its own layers: all learn of a failure */
    if (c->cholesky)
        failed = invert_cholesky(c, gamma, lo, c->own_hi);
    else
        for (int i = lo; i < c->own_hi; i++) {
            struct kfac_factors *f = &c->f[i];
            damped_inverse(c->be, f->n_a, f->UA_t, f->eig_A, gamma * f->pi, c->dtmp, f->A_inv);
            damped_inverse(c->be, f->n_g, f->UG_t, f->eig_G, gamma / f->pi, c->dtmp, f->G_inv);
        }
    if (c->cholesky && (failed = kfac_comm_max(c->comm, failed))) {
        int layer, info;
        const char *name;
        failure_decode(c, failed, &layer, &name, &info);
        rc = kfac_error(KFAC_ENUMERIC, "iteration %ld: layer %d's damped factor %s is not "
                                       "positive definite, and its eigendecomposition failed "
                                       "(LAPACK dsyevd info %d)",
                        k, layer, name, info);
    }
    if (!rc && c->variant && c->variant->invert)
        rc = c->variant->invert(c, gamma, k);
    c->inv_gamma = rc ? 0 : gamma;
    return rc;
}

/* out_i (n_g × n_a) = scale · (G + γ/π I)⁻¹ V_i (Ā + γπ I)⁻¹ for layer i's block. */
void kfac_curvature_precondition_layer(struct kfac_curvature *c, int i, const float *V,
                                       float scale, float *out)
{
    const struct kfac_backend *be = c->be;
    const struct kfac_factors *f = &c->f[i];
    int na = f->n_a, ng = f->n_g;
    float *half = c->tmp;
    be->sgemm(KFAC_NO_TRANS, KFAC_NO_TRANS, ng, na, ng, 1.0f, f->G_inv, ng, V, na, 0.0f, half, na);
    be->sgemm(KFAC_NO_TRANS, KFAC_NO_TRANS, ng, na, na, scale, half, na, f->A_inv, na, 0.0f, out,
              na);
}

void kfac_curvature_precondition(struct kfac_curvature *c, const struct kfac_net *net,
                                 const float *V, float scale, float *out)
{
    if (c->variant && c->variant->precondition) {
        c->variant->precondition(c, net, V, scale, out);
        return;
    }
    for (int i = c->own_lo; i < c->own_hi; i++) {
        size_t off = (size_t)(net->blocks[i]->W - net->params);
        kfac_curvature_precondition_layer(c, i, V + off, scale, out + off);
    }
    if (c->own_count)
        kfac_comm_gather_floats(c->comm, KFAC_COMM_GRADIENT, out, c->own_count, c->own_displ);
}

void kfac_curvature_share_layers(struct kfac_curvature *c, const struct kfac_net *net)
{
    int ranks = kfac_comm_size(c->comm), rank = kfac_comm_rank(c->comm);
    if (ranks <= 1 || (c->variant && c->variant->precondition) || c->own_count)
        return;
    /* A layer's work: its two preconditioning GEMMs and its two inverses' one each. */
    double total = 0, *work = kfac_xmalloc((size_t)c->n_blocks * sizeof *work);
    for (int i = 0; i < c->n_blocks; i++) {
        double na = c->f[i].n_a, ng = c->f[i].n_g;
        work[i] = ng * na * (na + ng) + na * na * na + ng * ng * ng;
        total += work[i];
    }
    c->own_count = kfac_xcalloc((size_t)ranks, sizeof *c->own_count);
    c->own_displ = kfac_xcalloc((size_t)ranks, sizeof *c->own_displ);
    /* Rank r takes the layers whose work ends past r/ranks of the total and by
     * (r+1)/ranks: contiguous ranges, in order. */
    double done = 0;
    c->own_lo = c->own_hi = -1;
    for (int i = 0, r = 0; i < c->n_blocks; i++) {
        double mid = done + 0.5 * work[i];
        while (r + 1 < ranks && mid > total * (r + 1) / ranks)
            r++;
        done += work[i];
        const struct kfac_layer *l = net->blocks[i];
        if (c->own_count[r] == 0)
            c->own_displ[r] = (int)(l->W - net->params);
        c->own_count[r] += (int)l->n_params;
        if (r == rank) {
            c->own_lo = c->own_lo < 0 ? i : c->own_lo;
            c->own_hi = i + 1;
        }
    }
    if (c->own_lo < 0) /* more ranks than layers */
        c->own_lo = c->own_hi = 0;
    free(work);
}
