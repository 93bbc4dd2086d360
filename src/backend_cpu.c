/*
 * backend_cpu.c: the CPU backend (backend.h): host memory, OpenBLAS for BLAS, LAPACKE for
 * the eigendecomposition, and the element-wise kernels of layer.c, loss.c, layer_conv.c
 * and layer_pool.c. The only file of the library that calls BLAS or LAPACK.
 */
#include "kfac/backend.h"
#include "kfac/status.h"

#include <cblas.h>
#include <lapacke.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

static CBLAS_TRANSPOSE trans(int t)
{
    return t == KFAC_TRANS ? CblasTrans : CblasNoTrans;
}

static void *cpu_alloc(size_t bytes)
{
    return kfac_xmalloc(bytes ? bytes : 1);
}

static void cpu_free(void *p)
{
    free(p);
}

static void cpu_copy(void *dst, const void *src, size_t bytes)
{
    if (dst != src)
        memcpy(dst, src, bytes);
}

static void cpu_sfill(size_t n, float value, float *x)
{
    for (size_t i = 0; i < n; i++)
        x[i] = value;
}

static void cpu_set_threads(int n)
{
    if (n > 0)
        openblas_set_num_threads(n);
}

static int cpu_threads(void)
{
    return openblas_get_num_threads();
}

static const char *cpu_library(void)
{
    return openblas_get_config();
}

/* How long OpenBLAS's idle threads wait, spinning on sched_yield(), before they sleep:
 * 2^16 cycles, against its 2^28 (about 0.1 s). Left spinning, they hold the cores that
 * kfac_parallel_for()'s workers are woken for between BLAS calls (the factors' merge,
 * the Cholesky pairs). On a two-core AMD EPYC, bench_kfac's K-FAC/SGD ratio at batch 1000
 * was 2.01-2.29 with 2^16 and 2.11-2.16 with 2^4, against 2.20-2.29 with 2^28 (NEWS). */
#define THREAD_TIMEOUT "16"

void kfac_backend_cpu_prepare(char **argv)
{
#ifdef __linux__
    /* OpenBLAS reads the wait from its variable once, as it loads, before main. */
    if (getenv("OPENBLAS_THREAD_TIMEOUT") || getenv("GOTO_THREAD_TIMEOUT") ||
        cpu_threads() < 2)
        return;
    /* Valgrind would run the new image outside itself; its preload names it. */
    const char *preload = getenv("LD_PRELOAD");
    if (preload && strstr(preload, "vgpreload"))
        return;
    if (setenv("OPENBLAS_THREAD_TIMEOUT", THREAD_TIMEOUT, 1) != 0)
        return;
    execv("/proc/self/exe", argv);
    unsetenv("OPENBLAS_THREAD_TIMEOUT"); /* not run again: the wait this process has */
#else
    (void)argv;
#endif
}

/* An OpenBLAS built for many CPUs (Debian's) picks its kernels by the CPU's model number.
 * On a virtual CPU it does not know it falls back to Prescott's SSE3 kernels, whatever
 * the CPU can do: on one two-core Xeon with AVX-512, bench_dense's sgemm (2000³) ran at
 * 45.1 GFLOP/s with them and at 258.7 with OPENBLAS_CORETYPE=SkylakeX. Only the
 * environment variable can change the choice, and only before the library loads, so this
 * says which to set. */
static const char *cpu_speed_warning(void)
{
#if defined(__x86_64__) && defined(__GNUC__)
    /* OpenBLAS's x86-64 cores whose kernels use no AVX. */
    static const char *const sse_only[] = {"Prescott", "Core2",     "Penryn", "Dunnington",
                                           "Nehalem",  "Atom",      "Athlon", "Opteron",
                                           "Barcelona", "Nano",     "Bobcat", NULL};
    static char msg[320];
    const char *core = openblas_get_corename(), *better = NULL;
    int old = 0;
    for (int i = 0; core && sse_only[i]; i++)
        old |= strncasecmp(core, sse_only[i], strlen(sse_only[i])) == 0;
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
        __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq"))
        better = "SkylakeX";
    else if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma"))
        better = "Haswell";
    if (!old || !better)
        return NULL;
    snprintf(msg, sizeof msg,
             "OpenBLAS runs its %s kernels (SSE only) on a CPU with %s, at a fraction of its "
             "speed; set OPENBLAS_CORETYPE=%s in the environment",
             core, strcmp(better, "SkylakeX") == 0 ? "AVX-512" : "AVX2 and FMA", better);
    return msg;
#else
    return NULL; /* the check knows x86-64's cores only */
#endif
}

static void cpu_sgemm(int ta, int tb, int m, int n, int k, float alpha, const float *A, int lda,
                      const float *B, int ldb, float beta, float *C, int ldc)
{
    cblas_sgemm(CblasRowMajor, trans(ta), trans(tb), m, n, k, alpha, A, lda, B, ldb, beta, C, ldc);
}

static void cpu_dgemm(int ta, int tb, int m, int n, int k, double alpha, const double *A, int lda,
                      const double *B, int ldb, double beta, double *C, int ldc)
{
    cblas_dgemm(CblasRowMajor, trans(ta), trans(tb), m, n, k, alpha, A, lda, B, ldb, beta, C, ldc);
}

static void cpu_ssyrk(int t, int n, int k, float alpha, const float *A, int lda, float beta,
                      float *C, int ldc)
{
    cblas_ssyrk(CblasRowMajor, CblasUpper, trans(t), n, k, alpha, A, lda, beta, C, ldc);
}

static void cpu_dsyrk(int t, int n, int k, double alpha, const double *A, int lda, double beta,
                      double *C, int ldc)
{
    cblas_dsyrk(CblasRowMajor, CblasUpper, trans(t), n, k, alpha, A, lda, beta, C, ldc);
}

static void cpu_dsymm(int side, int m, int n, double alpha, const double *S, int lds,
                      const double *B, int ldb, double beta, double *C, int ldc)
{
    cblas_dsymm(CblasRowMajor, side == KFAC_RIGHT ? CblasRight : CblasLeft, CblasUpper, m, n, alpha,
                S, lds, B, ldb, beta, C, ldc);
}

static void cpu_stranspose(int rows, int cols, const float *A, int lda, float *B, int ldb)
{
    cblas_somatcopy(CblasRowMajor, CblasTrans, rows, cols, 1.0f, A, lda, B, ldb);
}

static void cpu_saxpy(int n, float a, const float *x, float *y)
{
    cblas_saxpy(n, a, x, 1, y, 1);
}

static void cpu_sscal(int n, float a, float *x)
{
    cblas_sscal(n, a, x, 1);
}

static void cpu_daxpy(int n, double a, const double *x, double *y)
{
    cblas_daxpy(n, a, x, 1, y, 1);
}

static void cpu_dscal(int n, double a, double *x)
{
    cblas_dscal(n, a, x, 1);
}

static double cpu_ddot(int n, const double *x, const double *y)
{
    return cblas_ddot(n, x, 1, y, 1);
}

static double cpu_dnrm2(int n, const double *x)
{
    return cblas_dnrm2(n, x, 1);
}

static int cpu_dsyevd(int n, double *A, double *w, double *work, int lwork, int *iwork, int liwork)
{
    return (int)LAPACKE_dsyevd_work(LAPACK_COL_MAJOR, 'V', 'L', n, A, n, w, work, lwork, iwork,
                                    liwork);
}

static int cpu_dpotri(int n, double *A)
{
    int info = (int)LAPACKE_dpotrf_work(LAPACK_COL_MAJOR, 'L', n, A, n);
    return info ? info : (int)LAPACKE_dpotri_work(LAPACK_COL_MAJOR, 'L', n, A, n);
}

static int cpu_spotri(int n, float *A)
{
    int info = (int)LAPACKE_spotrf_work(LAPACK_COL_MAJOR, 'L', n, A, n);
    return info ? info : (int)LAPACKE_spotri_work(LAPACK_COL_MAJOR, 'L', n, A, n);
}

static const struct kfac_backend cpu = {
    .name = "cpu",
    .alloc = cpu_alloc,
    .free = cpu_free,
    .upload = cpu_copy,
    .download = cpu_copy,
    .sfill = cpu_sfill,
    .set_threads = cpu_set_threads,
    .threads = cpu_threads,
    .concurrent = 1,
    .library = cpu_library,
    .speed_warning = cpu_speed_warning,
    .sgemm = cpu_sgemm,
    .dgemm = cpu_dgemm,
    .ssyrk = cpu_ssyrk,
    .dsyrk = cpu_dsyrk,
    .dsymm = cpu_dsymm,
    .stranspose = cpu_stranspose,
    .saxpy = cpu_saxpy,
    .sscal = cpu_sscal,
    .daxpy = cpu_daxpy,
    .dscal = cpu_dscal,
    .ddot = cpu_ddot,
    .dnrm2 = cpu_dnrm2,
    .dsyevd = cpu_dsyevd,
    .dpotri = cpu_dpotri,
    .spotri = cpu_spotri,
    .activation_forward = kfac_activation_forward,
    .activation_derivative_mul = kfac_activation_derivative_mul,
    .loss_sum = kfac_loss_sum,
    .loss_grad = kfac_loss_grad,
    .loss_fisher_mul = kfac_loss_fisher_mul,
    .loss_fisher_column = kfac_loss_fisher_column,
    .loss_sample_grad = kfac_loss_sample_grad,
    .im2col = kfac_im2col,
    .col2im = kfac_col2im,
    .pool_max = kfac_pool_max,
    .pool_mean = kfac_pool_mean,
    .pool_max_backward = kfac_pool_max_backward,
    .pool_mean_backward = kfac_pool_mean_backward,
    .pool_gather = kfac_pool_gather,
};

const struct kfac_backend *kfac_backend_cpu(void)
{
    return &cpu;
}
