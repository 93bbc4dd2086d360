/*
 * bench_inverse.c: what the MNIST deep autoencoder's damped Kronecker factors cost to
 * invert and to apply by each way at hand, measured in one run on the CPU. Inverting: by
 * Cholesky in double (the backend's dpotrf + dpotri, optimizer.inverse = cholesky), the
 * same in float (its spotrf + spotri, optimizer.inverse_precision = float), and the
 * eigendecomposition in double that optimizer.inverse = eigen starts from (dsyevd).
 * Applying, to a gradient of every layer: the two GEMMs per layer with the inverses
 * (kfac_curvature_precondition(), as training does), against four triangular solves per
 * layer with the float Cholesky factors (strsm), which would spare the inversion its
 * dpotri. Each factor is taken alone, on all of
 * OpenBLAS's threads (training inverts two at a time on two threads of one each); every
 * figure is a best-of time, summed over the factors or layers, and its ratio to the first
 * of its kind. The factors are Gram matrices of random rows plus a damping, positive
 * definite, as the damped factors are: the times do not depend on the values.
 *
 *   bench/bench_inverse [REPEATS]
 */
#include "bench_util.h"
#include "kfac/curvature.h"
#include <cblas.h>
#include <lapacke.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* One damped factor (n × n, row-major; its upper triangle is the backend's and LAPACK's
 * column-major lower one) and the room each method works in. */
struct factor {
    const struct kfac_backend *be;
    int n;
    const double *X;            /* the damped factor */
    double *a;                  /* n × n: the Cholesky inversion's copy */
    float *f;                   /* n × n: the float copy, then its Cholesky factor */
    double *w;                  /* n: the eigenvalues */
    struct kfac_eigen_work eig; /* the eigendecomposition's copy and workspace */
    int info;
};

static void cholesky_double_run(void *ctx)
{
    struct factor *q = ctx;
    memcpy(q->a, q->X, (size_t)q->n * q->n * sizeof *q->a);
    q->info |= q->be->dpotri(q->n, q->a);
}

/* f = X's Cholesky factor in float: spotrf with 'L' in column-major (see solve_run()). */
static void cholesky_float_factor(struct factor *q)
{
    kfac_doubles_to_floats((size_t)q->n * q->n, q->X, q->f);
    q->info |= LAPACKE_spotrf(LAPACK_COL_MAJOR, 'L', q->n, q->f, q->n);
}

/* The inversion of optimizer.inverse_precision = float: the backend's spotrf + spotri. */
static void cholesky_float_run(void *ctx)
{
    struct factor *q = ctx;
    kfac_doubles_to_floats((size_t)q->n * q->n, q->X, q->f);
    q->info |= q->be->spotri(q->n, q->f);
}

static void eigen_run(void *ctx)
{
    struct factor *q = ctx;
    q->info |= kfac_eigen(&q->eig, q->n, q->X, q->w);
}

/* X (n × n, its upper triangle: all that the methods read) = RᵀR / (2n) + d I for R
 * (2n × n) uniform in [0, 1), d = 1e-3. */
static double *damped_factor(const struct kfac_backend *be, int n, struct kfac_rng *rng)
{
    size_t rows = 2 * (size_t)n;
    double *R = kfac_xmalloc(rows * n * sizeof *R);
    double *X = kfac_xmalloc((size_t)n * n * sizeof *X);
    for (size_t e = 0; e < rows * n; e++)
        R[e] = kfac_rng_uniform(rng);
    be->dsyrk(KFAC_TRANS, n, (int)rows, 1.0 / (double)rows, R, n, 0.0, X, n);
    for (int i = 0; i < n; i++)
        X[(size_t)i * n + i] += 1e-3;
    free(R);
    return X;
}

/* The gradient of every layer preconditioned, out_i = G⁻¹ V_i Ā⁻¹: by c's inverses, or by
 * four triangular solves a layer with the float Cholesky factors (see solve_run). */
struct apply {
    struct kfac_curvature *c;
    const struct kfac_net *net;
    float **L;  /* 2 n_blocks: factor j's Cholesky factor, spotrf's (j = 2i: Ā, 2i + 1: G) */
    float *out; /* n_params */
};

static void inverses_run(void *ctx)
{
    struct apply *p = ctx;
    kfac_curvature_precondition(p->c, p->net, p->net->grads, 1.0f, p->out);
}

/* spotrf with 'L' in column-major leaves X = L Lᵀ with L lower there, i.e. X = Uᵀ U with
 * U = Lᵀ upper in our row-major arrays. G⁻¹ V = U⁻¹ U⁻ᵀ V: solve Uᵀ then U on the left;
 * (·) A⁻¹ = (·) U⁻¹ U⁻ᵀ: solve U then Uᵀ on the right. */
static void solve_run(void *ctx)
{
    struct apply *p = ctx;
    for (int i = 0; i < p->net->n_blocks; i++) {
        const struct kfac_layer *l = p->net->blocks[i];
        int na = l->d_in + 1, ng = l->d_out;
        size_t off = (size_t)(l->W - p->net->params);
        float *o = p->out + off;
        const float *UA = p->L[2 * i], *UG = p->L[2 * i + 1];
        memcpy(o, p->net->grads + off, (size_t)na * ng * sizeof *o);
        cblas_strsm(CblasRowMajor, CblasLeft, CblasUpper, CblasTrans, CblasNonUnit, ng, na,
                    1.0f, UG, ng, o, na);
        cblas_strsm(CblasRowMajor, CblasLeft, CblasUpper, CblasNoTrans, CblasNonUnit, ng, na,
                    1.0f, UG, ng, o, na);
        cblas_strsm(CblasRowMajor, CblasRight, CblasUpper, CblasNoTrans, CblasNonUnit, ng, na,
                    1.0f, UA, na, o, na);
        cblas_strsm(CblasRowMajor, CblasRight, CblasUpper, CblasTrans, CblasNonUnit, ng, na,
                    1.0f, UA, na, o, na);
    }
}

/* max |x − y| / max |y| over n elements. */
static double relative_difference(size_t n, const float *x, const float *y)
{
    double d = 0, s = 0;
    for (size_t e = 0; e < n; e++) {
        double de = fabs((double)x[e] - y[e]), se = fabs((double)y[e]);
        d = de > d ? de : d;
        s = se > s ? se : s;
    }
    return s > 0 ? d / s : d;
}

int main(int argc, char **argv)
{
    kfac_backend_cpu_prepare(argv);
    const struct kfac_backend *be = kfac_backend_cpu();
    int repeats = argc > 1 ? atoi(argv[1]) : 5;
    if (argc > 2 || repeats < 1) {
        fprintf(stderr, "usage: bench_inverse [REPEATS]\n");
        return 2;
    }
    struct kfac_net *net = bench_mnist_autoencoder(1);
    struct kfac_curvature *c = kfac_curvature_new(net);
    struct kfac_rng rng;
    kfac_rng_seed(&rng, 2);
    int n_factors = 2 * net->n_blocks, max_n = 0;
    for (int j = 0; j < n_factors; j++) {
        int n = j % 2 ? c->f[j / 2].n_g : c->f[j / 2].n_a;
        max_n = n > max_n ? n : max_n;
    }
    struct factor q = {.be = be};
    q.a = kfac_xmalloc((size_t)max_n * max_n * sizeof *q.a);
    q.w = kfac_xmalloc((size_t)max_n * sizeof *q.w);
    kfac_eigen_work_init(&q.eig, be, max_n);
    struct apply p = {c, net, kfac_xcalloc((size_t)n_factors, sizeof *p.L),
                      kfac_floats_new(net->n_params)};

    /* Per factor: the three methods' times; then its inverse (double, rounded) into c for
     * training's preconditioning, and its float Cholesky factor for the solves. */
    double t_double = 0, t_float = 0, t_eigen = 0;
    for (int j = 0; j < n_factors; j++) {
        struct kfac_factors *f = &c->f[j / 2];
        q.n = j % 2 ? f->n_g : f->n_a;
        double *X = damped_factor(be, q.n, &rng);
        q.X = X;
        q.f = p.L[j] = kfac_floats_new((size_t)q.n * q.n);
        t_double += bench_best_seconds(cholesky_double_run, &q, repeats);
        t_float += bench_best_seconds(cholesky_float_run, &q, repeats);
        t_eigen += bench_best_seconds(eigen_run, &q, repeats);
        cholesky_double_run(&q);
        kfac_symmetric_to_floats(q.n, q.a, j % 2 ? f->G_inv : f->A_inv);
        cholesky_float_factor(&q);
        free(X);
    }
    if (q.info) {
        fprintf(stderr, "bench_inverse: a factor was not positive definite\n");
        return 1;
    }
    for (size_t e = 0; e < net->n_params; e++)
        net->grads[e] = (float)kfac_rng_uniform(&rng) - 0.5f;
    double t_gemm = bench_best_seconds(inverses_run, &p, repeats);
    float *by_inverses = kfac_floats_new(net->n_params);
    memcpy(by_inverses, p.out, net->n_params * sizeof *p.out);
    double t_solve = bench_best_seconds(solve_run, &p, repeats);
    double diff = relative_difference(net->n_params, p.out, by_inverses);

    printf("# the MNIST autoencoder's %d damped factors (n = 30 to 1001) on %s, each alone on "
           "all threads, best of %d, summed\n", n_factors, be->name, repeats);
    printf("%-58s %9s %7s\n", "method", "ms", "ratio");
    printf("%-58s %9.2f %7.2f\n", "invert: Cholesky in double (dpotrf + dpotri, as trained)",
           t_double * 1e3, 1.0);
    printf("%-58s %9.2f %7.2f\n", "invert: Cholesky in float (spotrf + spotri)", t_float * 1e3,
           t_float / t_double);
    printf("%-58s %9.2f %7.2f\n", "decompose: eigendecomposition in double (dsyevd)",
           t_eigen * 1e3, t_eigen / t_double);
    printf("%-58s %9.2f %7.2f\n", "apply: two GEMMs a layer with the inverses (as trained)",
           t_gemm * 1e3, 1.0);
    printf("%-58s %9.2f %7.2f\n", "apply: four triangular solves a layer (float Cholesky)",
           t_solve * 1e3, t_solve / t_gemm);
    printf("# the two ways of applying agree to %.1e of the largest element\n", diff);

    for (int j = 0; j < n_factors; j++)
        kfac_floats_free(p.L[j]);
    free(p.L);
    kfac_floats_free(p.out);
    kfac_floats_free(by_inverses);
    free(q.a);
    free(q.w);
    kfac_eigen_work_free(&q.eig);
    kfac_curvature_free(c);
    kfac_net_free(net);
    return 0;
}
