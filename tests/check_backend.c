/*
 * check_backend.c: every operation of every compiled backend against a plain C loop, on
 * small odd sizes (1, 7, 33) with leading dimensions wider than the matrices (ggml's
 * test-backend-ops pattern). Arrays go through the backend's alloc and upload, the
 * results come back through download, and the padding beyond each row must be left as it
 * was. Today the CPU backend; a device backend joins the list.
 */
#include "kfac/backend.h"
#include "kfac/rng.h"
#include "testutil.h"

#include <math.h>

static const struct kfac_backend *(*const backends[])(void) = {kfac_backend_cpu};
enum { N_BACKENDS = sizeof backends / sizeof *backends, PAD = 3 };
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
    const struct kfac_backend *be = backends[_i]();
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
    const struct kfac_backend *be = backends[_i]();
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
    const struct kfac_backend *be = backends[_i]();
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
    const struct kfac_backend *be = backends[_i]();
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

/* Memory: what goes up comes down; the thread count can be set and read back. */
START_TEST(memory_and_threads)
{
    const struct kfac_backend *be = backends[_i]();
    ck_assert_ptr_nonnull(be->name);
    unsigned char host[33], back[33];
    for (int i = 0; i < 33; i++)
        host[i] = (unsigned char)(3 * i + 1);
    void *d = be->alloc(sizeof host);
    be->upload(d, host, sizeof host);
    be->download(back, d, sizeof back);
    ck_assert_mem_eq(host, back, sizeof host);
    be->free(d);
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
    tcase_add_loop_test(tc, gemm_matches_the_loop, 0, N_BACKENDS);
    tcase_add_loop_test(tc, syrk_symm_transpose_match_the_loop, 0, N_BACKENDS);
    tcase_add_loop_test(tc, vector_operations_match_the_loop, 0, N_BACKENDS);
    tcase_add_loop_test(tc, eigendecomposition_is_one, 0, N_BACKENDS);
    tcase_add_loop_test(tc, memory_and_threads, 0, N_BACKENDS);
    suite_add_tcase(s, tc);
    return s;
}

KFAC_TEST_MAIN(backend_suite)
