/*
 * check_backend.c: every operation of every compiled backend against a plain C loop, on
 * small odd sizes (1, 7, 33) with leading dimensions wider than the matrices (ggml's
 * test-backend-ops pattern). Arrays go through the backend's alloc and upload, the
 * results come back through download, and the padding beyond each row must be left as it
 * was. The CPU backend, and with KFAC_TEST_BACKEND=cuda (tests/cuda.sh) the CUDA backend
 * beside it; exit status 77 (skipped) when that backend cannot be had.
 */
#include "kfac/backend.h"
#include "kfac/layer.h"
#include "kfac/loss.h"
#include "kfac/rng.h"
#include "kfac/status.h"
#include "testutil.h"

#include <math.h>

/* The backends under test: the CPU's, and the one KFAC_TEST_BACKEND names (tests/cuda.sh
 * sets it to cuda), chosen in main. */
static const struct kfac_backend *backends[2];
static int n_backends;
enum { PAD = 3 };
static const int sizes[] = {1, 7, 33};

/* n random doubles in [−1, 1]. */
static double *random_doubles(size_t n, struct kfac_rng *r)
{
    double *x = malloc(n * sizeof *x);
    for (size_t i = 0; i < n; i++)
        x[i] = 2 * kfac_rng_uniform(r) - 1;
    return x;
}

static float *random_floats(size_t n, struct kfac_rng *r)
{
    float *x = malloc(n * sizeof *x);
    for (size_t i = 0; i < n; i++)
        x[i] = (float)(2 * kfac_rng_uniform(r) - 1);
    return x;
}

/* A copy of host bytes in the backend's memory. */
static void *on(const struct kfac_backend *be, const void *host, size_t bytes)
{
    void *d = be->alloc(bytes);
    be->upload(d, host, bytes);
    return d;
}

/* Element (i, j) of op(X) for X row-major with leading dimension ld. */
static double at(const double *X, int ld, int t, int i, int j)
{
    return t == KFAC_TRANS ? X[(size_t)j * ld + i] : X[(size_t)i * ld + j];
}

static double atf(const float *X, int ld, int t, int i, int j)
{
    return t == KFAC_TRANS ? X[(size_t)j * ld + i] : X[(size_t)i * ld + j];
}

START_TEST(gemm_matches_the_loop)
{
    const struct kfac_backend *be = backends[_i];
    struct kfac_rng r;
    kfac_rng_seed(&r, 1);
    for (int a = 0; a < 3; a++)
        for (int b = 0; b < 3; b++)
            for (int c = 0; c < 3; c++)
                for (int t = 0; t < 4; t++) {
                    int m = sizes[a], n = sizes[b], k = sizes[c], ta = t & 1, tb = t >> 1;
                    int lda = (ta ? m : k) + PAD, ldb = (tb ? k : n) + PAD, ldc = n + PAD;
                    size_t na = (size_t)(ta ? k : m) * lda, nb = (size_t)(tb ? n : k) * ldb,
                           nc = (size_t)m * ldc;
                    double *A = random_doubles(na, &r), *B = random_doubles(nb, &r),
                           *C = random_doubles(nc, &r), *want = malloc(nc * sizeof *want);
                    float *Af = random_floats(na, &r), *Bf = random_floats(nb, &r),
                          *Cf = random_floats(nc, &r), *got_f = malloc(nc * sizeof *got_f);
                    double *got = malloc(nc * sizeof *got);
                    double alpha = 0.7, beta = -0.4;
                    /* double */
                    memcpy(want, C, nc * sizeof *C);
                    for (int i = 0; i < m; i++)
                        for (int j = 0; j < n; j++) {
                            double s = 0;
                            for (int l = 0; l < k; l++)
                                s += at(A, lda, ta, i, l) * at(B, ldb, tb, l, j);
                            want[(size_t)i * ldc + j] = alpha * s + beta * C[(size_t)i * ldc + j];
                        }
                    double *dA = on(be, A, na * sizeof *A), *dB = on(be, B, nb * sizeof *B),
                           *dC = on(be, C, nc * sizeof *C);
                    be->dgemm(ta, tb, m, n, k, alpha, dA, lda, dB, ldb, beta, dC, ldc);
                    be->download(got, dC, nc * sizeof *got);
                    for (size_t i = 0; i < nc; i++)
                        ck_assert_msg(fabs(got[i] - want[i]) < 1e-12 * (k + 1),
                                      "dgemm %d %d %d %d%d [%zu]: %g, want %g", m, n, k, ta, tb, i,
                                      got[i], want[i]);
                    /* float, against the same loop in double */
                    for (int i = 0; i < m; i++)
                        for (int j = 0; j < n; j++) {
                            double s = 0;
                            for (int l = 0; l < k; l++)
                                s += atf(Af, lda, ta, i, l) * atf(Bf, ldb, tb, l, j);
                            want[(size_t)i * ldc + j] = alpha * s + beta * Cf[(size_t)i * ldc + j];
                        }
                    for (size_t i = 0; i < nc; i++)
                        if ((i % (size_t)ldc) >= (size_t)n)
                            want[i] = Cf[i];
                    float *fA = on(be, Af, na * sizeof *Af), *fB = on(be, Bf, nb * sizeof *Bf),
                          *fC = on(be, Cf, nc * sizeof *Cf);
                    be->sgemm(ta, tb, m, n, k, (float)alpha, fA, lda, fB, ldb, (float)beta, fC,
                              ldc);
                    be->download(got_f, fC, nc * sizeof *got_f);
                    for (size_t i = 0; i < nc; i++)
                        ck_assert_msg(fabs(got_f[i] - want[i]) < 1e-5 * (k + 1),
                                      "sgemm %d %d %d %d%d [%zu]: %g, want %g", m, n, k, ta, tb, i,
                                      got_f[i], want[i]);
                    be->free(dA), be->free(dB), be->free(dC), be->free(fA), be->free(fB),
                        be->free(fC);
                    free(A), free(B), free(C), free(want), free(got), free(Af), free(Bf), free(Cf),
                        free(got_f);
                }
}
END_TEST

/* syrk writes the upper triangle and nothing else; symm reads the upper triangle only
 * (the lower one is filled with garbage); transpose moves every element. */
START_TEST(syrk_symm_transpose_match_the_loop)
{
    const struct kfac_backend *be = backends[_i];
    struct kfac_rng r;
    kfac_rng_seed(&r, 2);
    for (int a = 0; a < 3; a++)
        for (int c = 0; c < 3; c++)
            for (int t = 0; t < 2; t++) {
                int n = sizes[a], k = sizes[c], lda = (t ? n : k) + PAD, ldc = n + PAD;
                size_t na = (size_t)(t ? k : n) * lda, nc = (size_t)n * ldc;
                double *A = random_doubles(na, &r), *C = random_doubles(nc, &r);
                float *Af = random_floats(na, &r), *Cf = random_floats(nc, &r);
                double *want = malloc(nc * sizeof *want), *got = malloc(nc * sizeof *got);
                float *got_f = malloc(nc * sizeof *got_f);
                double alpha = 1.3, beta = 0.5;
                for (int p = 0; p < 2; p++) {
                    const double *X = A;
                    for (int i = 0; i < n; i++)
                        for (int j = 0; j < n; j++) {
                            double s = 0;
                            for (int l = 0; l < k; l++)
                                s += p ? atf(Af, lda, t, i, l) * atf(Af, lda, t, j, l)
                                       : at(X, lda, t, i, l) * at(X, lda, t, j, l);
                            double c0 = p ? Cf[(size_t)i * ldc + j] : C[(size_t)i * ldc + j];
                            want[(size_t)i * ldc + j] = j >= i ? alpha * s + beta * c0 : c0;
                        }
                    if (p == 0) {
                        double *dA = on(be, A, na * sizeof *A), *dC = on(be, C, nc * sizeof *C);
                        be->dsyrk(t ? KFAC_TRANS : KFAC_NO_TRANS, n, k, alpha, dA, lda, beta, dC,
                                  ldc);
                        be->download(got, dC, nc * sizeof *got);
                        be->free(dA), be->free(dC);
                        for (int i = 0; i < n; i++)
                            for (int j = 0; j < n; j++)
                                ck_assert_msg(fabs(got[(size_t)i * ldc + j] -
                                                   want[(size_t)i * ldc + j]) < 1e-12 * (k + 1),
                                              "dsyrk %d %d %d (%d, %d)", n, k, t, i, j);
                    } else {
                        float *dA = on(be, Af, na * sizeof *Af), *dC = on(be, Cf, nc * sizeof *Cf);
                        be->ssyrk(t ? KFAC_TRANS : KFAC_NO_TRANS, n, k, (float)alpha, dA, lda,
                                  (float)beta, dC, ldc);
                        be->download(got_f, dC, nc * sizeof *got_f);
                        be->free(dA), be->free(dC);
                        for (int i = 0; i < n; i++)
                            for (int j = 0; j < n; j++)
                                ck_assert_msg(fabs(got_f[(size_t)i * ldc + j] -
                                                   want[(size_t)i * ldc + j]) < 1e-5 * (k + 1),
                                              "ssyrk %d %d %d (%d, %d)", n, k, t, i, j);
                    }
                }
                free(A), free(C), free(Af), free(Cf), free(want), free(got), free(got_f);
            }
    /* symm, both sides: S's upper triangle is symmetric S, its lower one garbage. */
    for (int a = 0; a < 3; a++)
        for (int b = 0; b < 3; b++)
            for (int side = 0; side < 2; side++) {
                int m = sizes[a], n = sizes[b], s_n = side == KFAC_LEFT ? m : n, lds = s_n + PAD;
                int ldb = n + PAD, ldc = n + PAD;
                double *S = random_doubles((size_t)s_n * lds, &r);
                double *B = random_doubles((size_t)m * ldb, &r),
                       *C = random_doubles((size_t)m * ldc, &r);
                double *want = malloc((size_t)m * ldc * sizeof *want),
                       *got = malloc((size_t)m * ldc * sizeof *got);
                memcpy(want, C, (size_t)m * ldc * sizeof *C);
                for (int i = 0; i < m; i++)
                    for (int j = 0; j < n; j++) {
                        double s = 0;
                        for (int l = 0; l < s_n; l++) {
                            int p = side == KFAC_LEFT ? i : l, q = side == KFAC_LEFT ? l : j;
                            double sv = p <= q ? S[(size_t)p * lds + q] : S[(size_t)q * lds + p];
                            s += side == KFAC_LEFT ? sv * B[(size_t)l * ldb + j]
                                                   : B[(size_t)i * ldb + l] * sv;
                        }
                        want[(size_t)i * ldc + j] = 0.9 * s - 0.2 * C[(size_t)i * ldc + j];
                    }
                double *dS = on(be, S, (size_t)s_n * lds * sizeof *S),
                       *dB = on(be, B, (size_t)m * ldb * sizeof *B),
                       *dC = on(be, C, (size_t)m * ldc * sizeof *C);
                be->dsymm(side, m, n, 0.9, dS, lds, dB, ldb, -0.2, dC, ldc);
                be->download(got, dC, (size_t)m * ldc * sizeof *got);
                for (size_t i = 0; i < (size_t)m * ldc; i++)
                    ck_assert_msg(fabs(got[i] - want[i]) < 1e-12 * (s_n + 1), "dsymm %d %d %d", m,
                                  n, side);
                be->free(dS), be->free(dB), be->free(dC);
                free(S), free(B), free(C), free(want), free(got);
            }
    /* transpose */
    for (int a = 0; a < 3; a++)
        for (int b = 0; b < 3; b++) {
            int rows = sizes[a], cols = sizes[b], lda = cols + PAD, ldb = rows + PAD;
            float *A = random_floats((size_t)rows * lda, &r),
                  *B = random_floats((size_t)cols * ldb, &r);
            float *got = malloc((size_t)cols * ldb * sizeof *got);
            float *dA = on(be, A, (size_t)rows * lda * sizeof *A),
                  *dB = on(be, B, (size_t)cols * ldb * sizeof *B);
            be->stranspose(rows, cols, dA, lda, dB, ldb);
            be->download(got, dB, (size_t)cols * ldb * sizeof *got);
            for (int i = 0; i < cols; i++)
                for (int j = 0; j < ldb; j++)
                    ck_assert_float_eq(got[(size_t)i * ldb + j],
                                       j < rows ? A[(size_t)j * lda + i] : B[(size_t)i * ldb + j]);
            be->free(dA), be->free(dB);
            free(A), free(B), free(got);
        }
}
END_TEST

START_TEST(vector_operations_match_the_loop)
{
    const struct kfac_backend *be = backends[_i];
    struct kfac_rng r;
    kfac_rng_seed(&r, 3);
    for (int a = 0; a < 3; a++) {
        int n = sizes[a];
        double *x = random_doubles((size_t)n, &r), *y = random_doubles((size_t)n, &r);
        float *xf = random_floats((size_t)n, &r), *yf = random_floats((size_t)n, &r);
        double *got = malloc((size_t)n * sizeof *got);
        float *got_f = malloc((size_t)n * sizeof *got_f);
        double dot = 0, nrm = 0;
        for (int i = 0; i < n; i++)
            dot += x[i] * y[i], nrm += x[i] * x[i];
        double *dx = on(be, x, (size_t)n * sizeof *x), *dy = on(be, y, (size_t)n * sizeof *y);
        ck_assert_double_eq_tol(be->ddot(n, dx, dy), dot, 1e-13);
        ck_assert_double_eq_tol(be->dnrm2(n, dx), sqrt(nrm), 1e-13);
        be->daxpy(n, -0.6, dx, dy);
        be->download(got, dy, (size_t)n * sizeof *got);
        for (int i = 0; i < n; i++)
            ck_assert_double_eq_tol(got[i], y[i] - 0.6 * x[i], 1e-15);
        be->dscal(n, 2.5, dx);
        be->download(got, dx, (size_t)n * sizeof *got);
        for (int i = 0; i < n; i++)
            ck_assert_double_eq_tol(got[i], 2.5 * x[i], 1e-15);
        float *fx = on(be, xf, (size_t)n * sizeof *xf), *fy = on(be, yf, (size_t)n * sizeof *yf);
        be->saxpy(n, 0.75f, fx, fy);
        be->download(got_f, fy, (size_t)n * sizeof *got_f);
        for (int i = 0; i < n; i++)
            ck_assert_float_eq_tol(got_f[i], yf[i] + 0.75f * xf[i], 1e-6f);
        be->sscal(n, -3.0f, fx);
        be->download(got_f, fx, (size_t)n * sizeof *got_f);
        for (int i = 0; i < n; i++)
            ck_assert_float_eq_tol(got_f[i], -3.0f * xf[i], 1e-6f);
        be->free(dx), be->free(dy), be->free(fx), be->free(fy);
        free(x), free(y), free(xf), free(yf), free(got), free(got_f);
    }
}
END_TEST

/* A V = V diag(w) for the eigenvectors (rows of the row-major result), ascending w, V
 * orthonormal; the workspace query gives usable sizes. */
START_TEST(eigendecomposition_is_one)
{
    const struct kfac_backend *be = backends[_i];
    struct kfac_rng r;
    kfac_rng_seed(&r, 4);
    for (int a = 0; a < 3; a++) {
        int n = sizes[a];
        double *S = random_doubles((size_t)n * n, &r), *A = malloc((size_t)n * n * sizeof *A);
        for (int i = 0; i < n; i++)
            for (int j = 0; j < n; j++)
                A[(size_t)i * n + j] = S[(size_t)i * n + j] + S[(size_t)j * n + i];
        for (int i = 0; i < n; i++) /* garbage below the diagonal: only the upper one is read */
            for (int j = 0; j < i; j++)
                S[(size_t)i * n + j] = 1e3;
        for (int i = 0; i < n; i++)
            for (int j = i; j < n; j++)
                S[(size_t)i * n + j] = A[(size_t)i * n + j];
        double wq, dummy;
        int iq;
        ck_assert_int_eq(be->dsyevd(n, S, &dummy, &wq, -1, &iq, -1), 0);
        int lwork = (int)wq, liwork = iq;
        double *work = malloc((size_t)lwork * sizeof *work), *w = malloc((size_t)n * sizeof *w);
        int *iwork = malloc((size_t)liwork * sizeof *iwork);
        ck_assert_int_eq(be->dsyevd(n, S, w, work, lwork, iwork, liwork), 0);
        for (int j = 0; j + 1 < n; j++)
            ck_assert_double_le(w[j], w[j + 1]);
        for (int j = 0; j < n; j++) {
            const double *v = S + (size_t)j * n;
            for (int i = 0; i < n; i++) {
                double av = 0;
                for (int l = 0; l < n; l++)
                    av += A[(size_t)i * n + l] * v[l];
                ck_assert_double_eq_tol(av, w[j] * v[i], 1e-10 * n);
            }
            for (int q = 0; q < n; q++) {
                double d = 0;
                for (int i = 0; i < n; i++)
                    d += v[i] * S[(size_t)q * n + i];
                ck_assert_double_eq_tol(d, q == j, 1e-12 * n);
            }
        }
        free(S), free(A), free(work), free(w), free(iwork);
    }
}
END_TEST

/* A A⁻¹ = I for a symmetric positive definite A (S Sᵀ + n I), by dpotri and by spotri (to
 * float's precision), the inverse read from the
 * upper triangle in row-major order and mirrored: garbage below the diagonal is neither read
 * nor trusted. An indefinite A is reported (info > 0), not inverted. */
START_TEST(cholesky_inverse_is_one)
{
    const struct kfac_backend *be = backends[_i];
    struct kfac_rng r;
    kfac_rng_seed(&r, 5);
    for (int a = 0; a < 3; a++) {
        int n = sizes[a];
        double *S = random_doubles((size_t)n * n, &r), *A = malloc((size_t)n * n * sizeof *A);
        double *X = malloc((size_t)n * n * sizeof *X);
        for (int i = 0; i < n; i++)
            for (int j = 0; j < n; j++) {
                double d = i == j ? n : 0;
                for (int l = 0; l < n; l++)
                    d += S[(size_t)i * n + l] * S[(size_t)j * n + l];
                A[(size_t)i * n + j] = d;
                X[(size_t)i * n + j] = j >= i ? d : 1e3;
            }
        ck_assert_int_eq(be->dpotri(n, X), 0);
        for (int i = 0; i < n; i++)
            for (int j = 0; j < i; j++)
                X[(size_t)i * n + j] = X[(size_t)j * n + i];
        for (int i = 0; i < n; i++)
            for (int j = 0; j < n; j++) {
                double d = 0;
                for (int l = 0; l < n; l++)
                    d += A[(size_t)i * n + l] * X[(size_t)l * n + j];
                ck_assert_double_eq_tol(d, i == j, 1e-12 * n);
            }
        for (int i = 0; i < n; i++) /* −I: not positive definite */
            for (int j = 0; j < n; j++)
                X[(size_t)i * n + j] = -(double)(i == j);
        ck_assert_int_gt(be->dpotri(n, X), 0);
        /* The same in float, from A rounded once: right to a few float epsilons. */
        float *F = malloc((size_t)n * n * sizeof *F);
        for (int i = 0; i < n; i++)
            for (int j = 0; j < n; j++)
                F[(size_t)i * n + j] = j >= i ? (float)A[(size_t)i * n + j] : 1e3f;
        ck_assert_int_eq(be->spotri(n, F), 0);
        for (int i = 0; i < n; i++)
            for (int j = 0; j < n; j++) {
                double d = 0;
                for (int l = 0; l < n; l++)
                    d += A[(size_t)i * n + l] * F[l >= j ? (size_t)j * n + l : (size_t)l * n + j];
                ck_assert_double_eq_tol(d, i == j, 1e-5 * n);
            }
        for (int i = 0; i < n; i++)
            for (int j = 0; j < n; j++)
                F[(size_t)i * n + j] = -(float)(i == j);
        ck_assert_int_gt(be->spotri(n, F), 0);
        free(S), free(A), free(X), free(F);
    }
}
END_TEST

/* φ' written through out = φ(s), by the textbook formulas. */
static double act_slope(enum kfac_activation act, double out)
{
    switch (act) {
    case KFAC_ACT_LOGISTIC: return out * (1 - out);
    case KFAC_ACT_TANH: return 1 - out * out;
    case KFAC_ACT_RELU: return out > 0;
    default: return 1;
    }
}

/* Forward on rows with ld wider than n (the padding must stay), softmax row by row; the
 * derivative product into a separate y and in place. */
START_TEST(activations_match_the_loop)
{
    const struct kfac_backend *be = backends[_i];
    struct kfac_rng r;
    kfac_rng_seed(&r, 5);
    for (int act = KFAC_ACT_LINEAR; act <= KFAC_ACT_SOFTMAX; act++)
        for (int a = 0; a < 3; a++)
            for (int b = 0; b < 3; b++) {
                int m = sizes[a], n = sizes[b], ld = n + PAD;
                size_t size = (size_t)m * ld;
                float *S = random_floats(size, &r), *O = random_floats(size, &r);
                float *X = random_floats(size, &r), *Y = random_floats(size, &r);
                float *got = malloc(size * sizeof *got);
                for (size_t i = 0; i < size; i++)
                    S[i] *= 6; /* into logistic's and tanh's flat parts */
                float *dS = on(be, S, size * sizeof *S), *dO = on(be, O, size * sizeof *O);
                be->activation_forward(act, m, n, dS, ld, dO, ld);
                be->download(got, dO, size * sizeof *got);
                for (int i = 0; i < m; i++) {
                    const float *si = S + (size_t)i * ld;
                    double mx = si[0], sum = 0;
                    for (int j = 0; j < n; j++)
                        mx = si[j] > mx ? si[j] : mx;
                    for (int j = 0; j < n; j++)
                        sum += exp(si[j] - mx);
                    for (int j = 0; j < ld; j++) {
                        size_t k = (size_t)i * ld + j;
                        double want = j >= n                    ? O[k]
                                      : act == KFAC_ACT_SOFTMAX ? exp(si[j] - mx) / sum
                                                                : test_phi(act, si[j]);
                        ck_assert_msg(fabs(got[k] - want) <= 1e-6 * (1 + fabs(want)),
                                      "%s forward %d×%d (%d, %d): %g, want %g",
                                      kfac_activation_name(act), m, n, i, j, got[k], want);
                    }
                }
                if (act != KFAC_ACT_SOFTMAX) {
                    be->upload(dO, got, size * sizeof *got);
                    float *dX = on(be, X, size * sizeof *X), *dY = on(be, Y, size * sizeof *Y);
                    float *back = malloc(size * sizeof *back);
                    for (int in_place = 0; in_place < 2; in_place++) {
                        float *dst = in_place ? dX : dY;
                        be->activation_derivative_mul(act, m, n, dO, ld, dX, ld, dst, ld);
                        be->download(back, dst, size * sizeof *back);
                        for (size_t k = 0; k < size; k++) {
                            int j = (int)(k % (size_t)ld);
                            double want =
                                j >= n ? (in_place ? X : Y)[k] : X[k] * act_slope(act, got[k]);
                            ck_assert_msg(fabs(back[k] - want) <= 1e-6 * (1 + fabs(want)),
                                          "%s derivative %d×%d [%zu]%s: %g, want %g",
                                          kfac_activation_name(act), m, n, k,
                                          in_place ? " in place" : "", back[k], want);
                        }
                    }
                    be->free(dX), be->free(dY);
                    free(back);
                }
                be->free(dS), be->free(dO);
                free(S), free(O), free(X), free(Y), free(got);
            }
}
END_TEST

/* Each loss's value, gradient, Fisher product and Fisher columns by their formulas (loss.h),
 * and the sampled gradient against the same draws taken from a copy of the generator. */
START_TEST(losses_match_the_loop)
{
    const struct kfac_backend *be = backends[_i];
    struct kfac_rng r;
    kfac_rng_seed(&r, 6);
    for (int loss = KFAC_LOSS_BERNOULLI; loss <= KFAC_LOSS_SOFTMAX; loss++)
        for (int a = 0; a < 3; a++)
            for (int b = 0; b < 3; b++) {
                int m = sizes[a], n = sizes[b];
                size_t size = (size_t)m * n;
                float *Z = random_floats(size, &r), *T = random_floats(size, &r);
                float *V = random_floats(size, &r), *Y = malloc(size * sizeof *Y);
                float *got = malloc(size * sizeof *got);
                double want_sum = 0;
                for (int i = 0; i < m; i++) {
                    float *zi = Z + (size_t)i * n, *ti = T + (size_t)i * n, *yi = Y + (size_t)i * n;
                    double mx = zi[0], norm = 0;
                    for (int j = 0; j < n; j++) {
                        zi[j] *= 5;
                        ti[j] = loss == KFAC_LOSS_SQUARED ? ti[j] : (ti[j] + 1) / 2;
                        mx = zi[j] > mx ? zi[j] : mx;
                    }
                    for (int j = 0; j < n; j++)
                        norm += exp(zi[j] - mx);
                    for (int j = 0; j < n; j++) {
                        double z = zi[j], t = ti[j];
                        switch (loss) {
                        case KFAC_LOSS_BERNOULLI:
                            yi[j] = (float)(1 / (1 + exp(-z)));
                            want_sum += log1p(exp(-fabs(z))) + (z > 0 ? z : 0) - t * z;
                            break;
                        case KFAC_LOSS_SQUARED:
                            yi[j] = zi[j];
                            want_sum += 0.5 * (z - t) * (z - t);
                            break;
                        case KFAC_LOSS_SOFTMAX:
                            yi[j] = (float)(exp(z - mx) / norm);
                            want_sum -= t * (z - mx - log(norm));
                            break;
                        }
                    }
                }
                float *dZ = on(be, Z, size * sizeof *Z), *dT = on(be, T, size * sizeof *T),
                      *dY = on(be, Y, size * sizeof *Y), *dV = on(be, V, size * sizeof *V),
                      *dG = be->alloc(size * sizeof *dG);
                const char *name = kfac_loss_name(loss);
                ck_assert_msg(fabs(be->loss_sum(loss, m, n, dZ, dT) - want_sum) <=
                                  1e-5 * (1 + fabs(want_sum)),
                              "%s value %d×%d", name, m, n);
                be->loss_grad(loss, m, n, dY, dT, dG);
                be->download(got, dG, size * sizeof *got);
                for (size_t k = 0; k < size; k++)
                    ck_assert_float_eq_tol(got[k], Y[k] - T[k], 1e-6f);
                be->loss_fisher_mul(loss, m, n, dY, dV, dG);
                be->download(got, dG, size * sizeof *got);
                for (int i = 0; i < m; i++) {
                    const float *yi = Y + (size_t)i * n, *vi = V + (size_t)i * n;
                    double pv = 0;
                    for (int j = 0; j < n; j++)
                        pv += (double)yi[j] * vi[j];
                    for (int j = 0; j < n; j++) {
                        double want = loss == KFAC_LOSS_BERNOULLI ? yi[j] * (1.0 - yi[j]) * vi[j]
                                      : loss == KFAC_LOSS_SQUARED ? vi[j]
                                                                  : yi[j] * (vi[j] - pv);
                        ck_assert_msg(fabs(got[(size_t)i * n + j] - want) < 1e-6,
                                      "%s Fisher product %d×%d (%d, %d)", name, m, n, i, j);
                    }
                }
                for (int c = 0; c<n; c += n> 1 ? n - 1 : 1) {
                    be->loss_fisher_column(loss, m, n, dY, c, dG);
                    be->download(got, dG, size * sizeof *got);
                    for (int i = 0; i < m; i++) {
                        const float *yi = Y + (size_t)i * n;
                        for (int j = 0; j < n; j++) {
                            double want =
                                loss == KFAC_LOSS_BERNOULLI ? (j == c) * sqrt(yi[c] * (1.0 - yi[c]))
                                : loss == KFAC_LOSS_SQUARED ? (j == c)
                                                            : sqrt(yi[c]) * (yi[j] - (j == c));
                            ck_assert_msg(fabs(got[(size_t)i * n + j] - want) < 1e-6,
                                          "%s Fisher column %d, %d×%d (%d, %d)", name, c, m, n, i,
                                          j);
                        }
                    }
                }
                /* Case i draws from its own stream, keyed by its place 5 + 3i. */
                uint64_t key = kfac_rng_u64(&r);
                be->loss_sample_grad(loss, m, n, dY, key, 5, 3, dG);
                be->download(got, dG, size * sizeof *got);
                for (int i = 0; i < m; i++) {
                    const float *yi = Y + (size_t)i * n;
                    struct kfac_rng copy;
                    kfac_rng_case(&copy, key, 5 + 3 * (uint64_t)i);
                    int cls = n - 1;
                    if (loss == KFAC_LOSS_SOFTMAX) {
                        double u = kfac_rng_uniform(&copy), cum = 0;
                        for (int j = 0; j < n && cls == n - 1; j++)
                            if (u < (cum += yi[j]))
                                cls = j;
                    }
                    for (int j = 0; j < n; j++) {
                        double want = loss == KFAC_LOSS_BERNOULLI
                                          ? yi[j] - (kfac_rng_uniform(&copy) < yi[j])
                                      : loss == KFAC_LOSS_SQUARED ? -kfac_rng_normal(&copy)
                                                                  : yi[j] - (j == cls);
                        ck_assert_msg(fabs(got[(size_t)i * n + j] - want) < 1e-6,
                                      "%s sampled gradient %d×%d (%d, %d)", name, m, n, i, j);
                    }
                }
                be->free(dZ), be->free(dT), be->free(dY), be->free(dV), be->free(dG);
                free(Z), free(T), free(V), free(Y), free(got);
            }
}
END_TEST

/* The windows the kernels are tried on: (channels, height, width, kh, kw, stride, pad). */
static const int windows[][7] = {
    {1, 1, 1, 1, 1, 1, 0}, {1, 7, 7, 3, 3, 1, 1}, {3, 7, 5, 3, 2, 2, 0},
    {2, 7, 7, 2, 2, 2, 0}, {3, 5, 7, 1, 3, 1, 0}, {1, 7, 7, 7, 7, 1, 0},
};
enum { N_WINDOWS = sizeof windows / sizeof *windows };

/* x's value under output (oy, ox) at tap (ky, kx) of channel ch, 0 outside the map; or
 * its offset, −1 outside. */
static int tap_offset(const int *w, int oy, int ox, int ky, int kx, int ch)
{
    int iy = oy * w[5] - w[6] + ky, ix = ox * w[5] - w[6] + kx;
    if (iy < 0 || iy >= w[1] || ix < 0 || ix >= w[2])
        return -1;
    return (iy * w[2] + ix) * w[0] + ch;
}

/* im2col puts tap (ky, kx, ch) of output (case, oy, ox) at its place and leaves the columns
 * past kh·kw·c alone; col2im sums each patch entry back onto its tap. */
START_TEST(patches_match_the_loop)
{
    const struct kfac_backend *be = backends[_i];
    struct kfac_rng r;
    kfac_rng_seed(&r, 7);
    for (int a = 0; a < 3; a++)
        for (int wi = 0; wi < N_WINDOWS; wi++) {
            const int *w = windows[wi];
            struct kfac_shape in = {w[0], w[1], w[2]};
            int m = sizes[a], kh = w[3], kw = w[4], stride = w[5], pad = w[6];
            int oh = kfac_window_out(in.h, kh, stride, pad),
                ow = kfac_window_out(in.w, kw, stride, pad);
            int in_size = in.c * in.h * in.w, ld_x = in_size + PAD, width = kh * kw * in.c;
            int ld_p = width + PAD;
            size_t nx = (size_t)m * ld_x, np = (size_t)m * oh * ow * ld_p;
            float *X = random_floats(nx, &r), *P = random_floats(np, &r);
            float *got_p = malloc(np * sizeof *got_p), *got_x = malloc(nx * sizeof *got_x);
            double *want_x = malloc(nx * sizeof *want_x);
            float *dX = on(be, X, nx * sizeof *X), *dP = on(be, P, np * sizeof *P);
            be->im2col(m, &in, kh, kw, stride, pad, dX, ld_x, dP, ld_p);
            be->download(got_p, dP, np * sizeof *got_p);
            for (size_t k = 0; k < nx; k++)
                want_x[k] = (int)(k % (size_t)ld_x) < in_size ? 0 : X[k];
            for (int b = 0; b < m; b++)
                for (int oy = 0; oy < oh; oy++)
                    for (int ox = 0; ox < ow; ox++) {
                        size_t row = ((size_t)b * oh * ow + (size_t)oy * ow + ox) * ld_p;
                        for (int col = 0; col < ld_p; col++) {
                            int ky = col / (kw * in.c), kx = col / in.c % kw, ch = col % in.c;
                            int off = col < width ? tap_offset(w, oy, ox, ky, kx, ch) : -2;
                            float want = off == -2   ? P[row + col]
                                         : off == -1 ? 0.0f
                                                     : X[(size_t)b * ld_x + off];
                            ck_assert_msg(got_p[row + col] == want,
                                          "im2col window %d, case %d (%d, %d) column %d", wi, b, oy,
                                          ox, col);
                            if (off >= 0)
                                want_x[(size_t)b * ld_x + off] += P[row + col];
                        }
                    }
            be->upload(dP, P, np * sizeof *P);
            be->col2im(m, &in, kh, kw, stride, pad, dP, ld_p, dX, ld_x);
            be->download(got_x, dX, nx * sizeof *got_x);
            for (size_t k = 0; k < nx; k++)
                ck_assert_msg(fabs(got_x[k] - want_x[k]) < 1e-5,
                              "col2im window %d [%zu]: %g, want %g", wi, k, got_x[k], want_x[k]);
            be->free(dX), be->free(dP);
            free(X), free(P), free(got_p), free(got_x), free(want_x);
        }
}
END_TEST

/* Max pooling picks the first largest tap of each window (values on a coarse grid, so
 * ties happen); mean pooling averages the taps; the backward passes route or spread g
 * back and leave the padding of dx alone; gather reads x at the recorded taps. */
START_TEST(pooling_matches_the_loop)
{
    const struct kfac_backend *be = backends[_i];
    struct kfac_rng r;
    kfac_rng_seed(&r, 8);
    for (int a = 0; a < 3; a++)
        for (int wi = 0; wi < N_WINDOWS; wi++) {
            const int *w = windows[wi];
            if (w[6])
                continue; /* pooling has no padding */
            struct kfac_shape in = {w[0], w[1], w[2]};
            int m = sizes[a], kh = w[3], kw = w[4], stride = w[5];
            int oh = kfac_window_out(in.h, kh, stride, 0),
                ow = kfac_window_out(in.w, kw, stride, 0);
            int in_size = in.c * in.h * in.w, ld_x = in_size + PAD, n = in.c * oh * ow;
            size_t nx = (size_t)m * ld_x, no = (size_t)m * n;
            float *X = random_floats(nx, &r), *G = random_floats(no, &r),
                  *D = random_floats(nx, &r);
            for (size_t k = 0; k < nx; k++)
                X[k] = floorf(4 * X[k]) / 4;
            float *got = malloc(no * sizeof *got), *got_d = malloc(nx * sizeof *got_d);
            int *arg = malloc(no * sizeof *arg), *want_arg = malloc(no * sizeof *want_arg);
            double *want_max = malloc(no * sizeof *want_max),
                   *want_mean = malloc(no * sizeof *want_mean);
            double *want_dmax = malloc(nx * sizeof *want_dmax),
                   *want_dmean = malloc(nx * sizeof *want_dmean);
            for (size_t k = 0; k < nx; k++)
                want_dmax[k] = want_dmean[k] = (int)(k % (size_t)ld_x) < in_size ? 0 : D[k];
            for (int b = 0; b < m; b++)
                for (int oy = 0; oy < oh; oy++)
                    for (int ox = 0; ox < ow; ox++)
                        for (int ch = 0; ch < in.c; ch++) {
                            size_t o = (size_t)b * n + ((size_t)oy * ow + ox) * in.c + ch;
                            const float *xb = X + (size_t)b * ld_x;
                            int best = -1;
                            double sum = 0;
                            for (int ky = 0; ky < kh; ky++)
                                for (int kx = 0; kx < kw; kx++) {
                                    int off = tap_offset(w, oy, ox, ky, kx, ch);
                                    sum += xb[off];
                                    if (best < 0 || xb[off] > xb[best])
                                        best = off;
                                }
                            want_max[o] = xb[best], want_arg[o] = best;
                            want_mean[o] = sum / (kh * kw);
                            want_dmax[(size_t)b * ld_x + best] += G[o];
                            for (int ky = 0; ky < kh; ky++)
                                for (int kx = 0; kx < kw; kx++)
                                    want_dmean[(size_t)b * ld_x +
                                               tap_offset(w, oy, ox, ky, kx, ch)] +=
                                        G[o] / (kh * kw);
                        }
            float *dX = on(be, X, nx * sizeof *X), *dO = be->alloc(no * sizeof *dO);
            float *dG = on(be, G, no * sizeof *G), *dD = on(be, D, nx * sizeof *D);
            int *dA = be->alloc(no * sizeof *dA);
            be->pool_max(m, &in, kh, kw, stride, dX, ld_x, dO, dA);
            be->download(got, dO, no * sizeof *got);
            be->download(arg, dA, no * sizeof *arg);
            for (size_t o = 0; o < no; o++) {
                ck_assert_msg(got[o] == want_max[o] && arg[o] == want_arg[o],
                              "max pool window %d [%zu]: %g at %d, want %g at %d", wi, o, got[o],
                              arg[o], want_max[o], want_arg[o]);
            }
            be->pool_max_backward(m, &in, kh, kw, stride, dG, dA, dD, ld_x);
            be->download(got_d, dD, nx * sizeof *got_d);
            for (size_t k = 0; k < nx; k++)
                ck_assert_msg(fabs(got_d[k] - want_dmax[k]) < 1e-5,
                              "max pool backward window %d [%zu]", wi, k);
            be->pool_gather(m, n, dD, ld_x, dA, dO);
            be->download(got, dO, no * sizeof *got);
            for (size_t o = 0; o < no; o++)
                ck_assert_float_eq(got[o], got_d[(o / (size_t)n) * ld_x + (size_t)arg[o]]);
            be->pool_mean(m, &in, kh, kw, stride, dX, ld_x, dO);
            be->download(got, dO, no * sizeof *got);
            for (size_t o = 0; o < no; o++)
                ck_assert_msg(fabs(got[o] - want_mean[o]) < 1e-6, "mean pool window %d [%zu]", wi,
                              o);
            be->upload(dD, D, nx * sizeof *D);
            be->pool_mean_backward(m, &in, kh, kw, stride, dG, dD, ld_x);
            be->download(got_d, dD, nx * sizeof *got_d);
            for (size_t k = 0; k < nx; k++)
                ck_assert_msg(fabs(got_d[k] - want_dmean[k]) < 1e-5,
                              "mean pool backward window %d [%zu]", wi, k);
            be->free(dX), be->free(dO), be->free(dG), be->free(dD), be->free(dA);
            free(X), free(G), free(D), free(got), free(got_d), free(arg), free(want_arg);
            free(want_max), free(want_mean), free(want_dmax), free(want_dmean);
        }
}
END_TEST

/* Memory: what goes up comes down, fill fills n and no more; the thread count can be set and read back. */
START_TEST(memory_and_threads)
{
    const struct kfac_backend *be = backends[_i];
    ck_assert_ptr_nonnull(be->name);
    unsigned char host[33], back[33];
    for (int i = 0; i < 33; i++)
        host[i] = (unsigned char)(3 * i + 1);
    void *d = be->alloc(sizeof host);
    be->upload(d, host, sizeof host);
    be->download(back, d, sizeof back);
    ck_assert_mem_eq(host, back, sizeof host);
    be->free(d);
    float x[7 + PAD];
    for (int i = 0; i < 7 + PAD; i++)
        x[i] = (float)i;
    float *dx = on(be, x, sizeof x);
    be->sfill(7, -2.5f, dx);
    be->download(x, dx, sizeof x);
    for (int i = 0; i < 7 + PAD; i++)
        ck_assert_float_eq(x[i], i < 7 ? -2.5f : (float)i);
    be->free(dx);
    int was = be->threads();
    ck_assert_int_ge(was, 1);
    be->set_threads(1);
    ck_assert_int_eq(be->threads(), 1);
    be->set_threads(was);
    ck_assert_int_eq(be->threads(), was);
}
END_TEST

static Suite *backend_suite(void)
{
    Suite *s = suite_create("backend");
    TCase *tc = tcase_create("ops");
    tcase_set_timeout(tc, 60);
    tcase_add_loop_test(tc, gemm_matches_the_loop, 0, n_backends);
    tcase_add_loop_test(tc, syrk_symm_transpose_match_the_loop, 0, n_backends);
    tcase_add_loop_test(tc, vector_operations_match_the_loop, 0, n_backends);
    tcase_add_loop_test(tc, eigendecomposition_is_one, 0, n_backends);
    tcase_add_loop_test(tc, cholesky_inverse_is_one, 0, n_backends);
    tcase_add_loop_test(tc, activations_match_the_loop, 0, n_backends);
    tcase_add_loop_test(tc, losses_match_the_loop, 0, n_backends);
    tcase_add_loop_test(tc, patches_match_the_loop, 0, n_backends);
    tcase_add_loop_test(tc, pooling_matches_the_loop, 0, n_backends);
    tcase_add_loop_test(tc, memory_and_threads, 0, n_backends);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    backends[n_backends++] = kfac_backend_cpu();
    const char *device = getenv("KFAC_TEST_BACKEND");
    if (device && *device) {
        const struct kfac_backend *be;
        if (kfac_backend_select(device, "KFAC_TEST_BACKEND", &be)) {
            printf("SKIP: %s\n", kfac_last_error());
            return 77;
        }
        backends[n_backends++] = be;
    }
    SRunner *sr = srunner_create(backend_suite());
    if (n_backends > 1) /* a device context does not survive fork() */
        srunner_set_fork_status(sr, CK_NOFORK);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
