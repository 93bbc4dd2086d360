/*
 * cuda_ops.cu: cuBLAS and cuSOLVER behind cuda_ops.h. The library's arrays are row-major
 * and cuBLAS's column-major, so every product is computed transposed: a row-major X with
 * leading dimension ld is the column-major Xᵀ with the same ld, C = op(A) op(B) becomes
 * Cᵀ = op(B)ᵀ op(A)ᵀ, a row-major upper triangle is a column-major lower one, and a
 * symmetric S multiplies from the other side.
 */
#include "cuda_ops.h"

#include <cublas_v2.h>
#include <cuda_runtime.h>
#include <cusolverDn.h>
#include <stdio.h>
#include <stdlib.h>

namespace {

cublasHandle_t blas;
cusolverDnHandle_t solver;

/* Device scratch that only grows: operands A, B, C (or S), and the eigensolver's. */
struct scratch {
    void *p;
    size_t bytes;
    const char *what;
};
scratch dA = {nullptr, 0, "the first operand"}, dB = {nullptr, 0, "the second operand"},
        dC = {nullptr, 0, "the result"}, dW = {nullptr, 0, "the eigenvalues"},
        dWork = {nullptr, 0, "cuSOLVER's workspace"}, dInfo = {nullptr, 0, "cuSOLVER's info"};

[[noreturn]] void die(const char *call, const char *why)
{
    fprintf(stderr, "kfac-train: %s failed: %s\n", call, why);
    exit(EXIT_FAILURE);
}

void check(cudaError_t e, const char *call)
{
    if (e != cudaSuccess)
        die(call, cudaGetErrorString(e));
}

void check(cublasStatus_t s, const char *call)
{
    if (s != CUBLAS_STATUS_SUCCESS)
        die(call, cublasGetStatusString(s));
}

void check(cusolverStatus_t s, const char *call)
{
    if (s != CUSOLVER_STATUS_SUCCESS) {
        char why[32];
        snprintf(why, sizeof why, "cuSOLVER status %d", (int)s);
        die(call, why);
    }
}

/* s holds at least `bytes` on the device. */
void *reserve(scratch &s, size_t bytes)
{
    if (bytes <= s.bytes)
        return s.p;
    if (s.p)
        check(cudaFree(s.p), "cudaFree");
    s.p = nullptr;
    s.bytes = 0;
    cudaError_t e = cudaMalloc(&s.p, bytes);
    if (e != cudaSuccess) {
        char why[256];
        snprintf(why, sizeof why, "%s: %.1f MiB for %s", cudaGetErrorString(e),
                 bytes / 1048576.0, s.what);
        die("cudaMalloc", why);
    }
    s.bytes = bytes;
    return s.p;
}

/* The elements a row-major rows × cols array with leading dimension ld spans. */
size_t span(int rows, int cols, int ld)
{
    return rows > 0 && cols > 0 ? (size_t)(rows - 1) * ld + cols : 0;
}

template <typename T> T *to_device(scratch &s, const T *host, size_t n)
{
    T *d = static_cast<T *>(reserve(s, (n ? n : 1) * sizeof(T)));
    if (n)
        check(cudaMemcpy(d, host, n * sizeof(T), cudaMemcpyHostToDevice), "cudaMemcpy");
    return d;
}

template <typename T> void to_host(T *host, const T *device, size_t n)
{
    if (n)
        check(cudaMemcpy(host, device, n * sizeof(T), cudaMemcpyDeviceToHost), "cudaMemcpy");
}

cublasOperation_t op(int t)
{
    return t ? CUBLAS_OP_T : CUBLAS_OP_N;
}

} // namespace

extern "C" int kfac_cuda_init(int device, char *msg, size_t size)
{
    int count = 0;
    cudaError_t e = cudaGetDeviceCount(&count);
    if (e != cudaSuccess) {
        snprintf(msg, size, "no CUDA device is visible (cudaGetDeviceCount: %s)",
                 cudaGetErrorString(e));
        return -1;
    }
    if (device < 0 || device >= count) {
        snprintf(msg, size, "there is no CUDA device %d (%d visible)", device, count);
        return -1;
    }
    if ((e = cudaSetDevice(device)) != cudaSuccess) {
        snprintf(msg, size, "cudaSetDevice(%d): %s", device, cudaGetErrorString(e));
        return -1;
    }
    cublasStatus_t b = cublasCreate(&blas);
    if (b != CUBLAS_STATUS_SUCCESS) {
        snprintf(msg, size, "cublasCreate: %s", cublasGetStatusString(b));
        return -1;
    }
    cusolverStatus_t s = cusolverDnCreate(&solver);
    if (s != CUSOLVER_STATUS_SUCCESS) {
        snprintf(msg, size, "cusolverDnCreate: cuSOLVER status %d", (int)s);
        return -1;
    }
    return 0;
}

namespace {

/* cuBLAS's float and double routines under one name each. */
cublasStatus_t gemm(cublasOperation_t ta, cublasOperation_t tb, int m, int n, int k,
                    const float *alpha, const float *A, int lda, const float *B, int ldb,
                    const float *beta, float *C, int ldc)
{
    return cublasSgemm(blas, ta, tb, m, n, k, alpha, A, lda, B, ldb, beta, C, ldc);
}

cublasStatus_t gemm(cublasOperation_t ta, cublasOperation_t tb, int m, int n, int k,
                    const double *alpha, const double *A, int lda, const double *B, int ldb,
                    const double *beta, double *C, int ldc)
{
    return cublasDgemm(blas, ta, tb, m, n, k, alpha, A, lda, B, ldb, beta, C, ldc);
}

cublasStatus_t syrk(cublasOperation_t t, int n, int k, const float *alpha, const float *A, int lda,
                    const float *beta, float *C, int ldc)
{
    return cublasSsyrk(blas, CUBLAS_FILL_MODE_LOWER, t, n, k, alpha, A, lda, beta, C, ldc);
}

cublasStatus_t syrk(cublasOperation_t t, int n, int k, const double *alpha, const double *A,
                    int lda, const double *beta, double *C, int ldc)
{
    return cublasDsyrk(blas, CUBLAS_FILL_MODE_LOWER, t, n, k, alpha, A, lda, beta, C, ldc);
}

/* The result's n elements on the device: uploaded when beta adds what C holds. */
template <typename T> T *result(const T *C, size_t n, T beta)
{
    return beta != 0 ? to_device(dC, C, n) : static_cast<T *>(reserve(dC, (n ? n : 1) * sizeof(T)));
}

/* Row-major C (m × n) = α op(A) op(B) + β C is column-major Cᵀ = α op(B)ᵀ op(A)ᵀ + β Cᵀ. */
template <typename T>
void gemm_rm(const char *call, int ta, int tb, int m, int n, int k, T alpha, const T *A, int lda,
             const T *B, int ldb, T beta, T *C, int ldc)
{
    size_t nA = ta ? span(k, m, lda) : span(m, k, lda), nB = tb ? span(n, k, ldb) : span(k, n, ldb);
    size_t nC = span(m, n, ldc);
    const T *a = to_device(dA, A, nA), *b = to_device(dB, B, nB);
    T *c = result(C, nC, beta);
    check(gemm(op(tb), op(ta), n, m, k, &alpha, b, ldb, a, lda, &beta, c, ldc), call);
    to_host(C, c, nC);
}

/* Row-major C (n × n, upper) = α op(A) op(A)ᵀ + β C is column-major C (lower) = α op'(A)ᵀ
 * op'(A) with A's transpose: op' flips. C goes up whatever β: its other triangle must
 * survive. */
template <typename T>
void syrk_rm(const char *call, int t, int n, int k, T alpha, const T *A, int lda, T beta, T *C,
             int ldc)
{
    size_t nA = t ? span(k, n, lda) : span(n, k, lda), nC = span(n, n, ldc);
    const T *a = to_device(dA, A, nA);
    T *c = to_device(dC, C, nC);
    check(syrk(t ? CUBLAS_OP_N : CUBLAS_OP_T, n, k, &alpha, a, lda, &beta, c, ldc), call);
    to_host(C, c, nC);
}

} // namespace

extern "C" void kfac_cuda_sgemm(int ta, int tb, int m, int n, int k, float alpha, const float *A,
                                int lda, const float *B, int ldb, float beta, float *C, int ldc)
{
    gemm_rm("cublasSgemm", ta, tb, m, n, k, alpha, A, lda, B, ldb, beta, C, ldc);
}

extern "C" void kfac_cuda_dgemm(int ta, int tb, int m, int n, int k, double alpha, const double *A,
                                int lda, const double *B, int ldb, double beta, double *C, int ldc)
{
    gemm_rm("cublasDgemm", ta, tb, m, n, k, alpha, A, lda, B, ldb, beta, C, ldc);
}

extern "C" void kfac_cuda_ssyrk(int t, int n, int k, float alpha, const float *A, int lda,
                                float beta, float *C, int ldc)
{
    syrk_rm("cublasSsyrk", t, n, k, alpha, A, lda, beta, C, ldc);
}

extern "C" void kfac_cuda_dsyrk(int t, int n, int k, double alpha, const double *A, int lda,
                                double beta, double *C, int ldc)
{
    syrk_rm("cublasDsyrk", t, n, k, alpha, A, lda, beta, C, ldc);
}

/* Row-major C = α S B (side 0) is column-major Cᵀ = α Bᵀ S: the other side. */
extern "C" void kfac_cuda_dsymm(int side, int m, int n, double alpha, const double *S, int lds,
                                const double *B, int ldb, double beta, double *C, int ldc)
{
    int ns = side ? n : m;
    size_t nS = span(ns, ns, lds), nB = span(m, n, ldb), nC = span(m, n, ldc);
    const double *s = to_device(dA, S, nS), *b = to_device(dB, B, nB);
    double *c = result(C, nC, beta);
    check(cublasDsymm(blas, side ? CUBLAS_SIDE_LEFT : CUBLAS_SIDE_RIGHT, CUBLAS_FILL_MODE_LOWER, n,
                      m, &alpha, s, lds, b, ldb, &beta, c, ldc),
          "cublasDsymm");
    to_host(C, c, nC);
}

extern "C" int kfac_cuda_dsyevd(int n, double *A, double *w)
{
    size_t nA = (size_t)n * n;
    double *a = to_device(dA, A, nA);
    double *dw = static_cast<double *>(reserve(dW, (n ? n : 1) * sizeof(double)));
    int lwork = 0, info = 0;
    check(cusolverDnDsyevd_bufferSize(solver, CUSOLVER_EIG_MODE_VECTOR, CUBLAS_FILL_MODE_LOWER, n,
                                      a, n, dw, &lwork),
          "cusolverDnDsyevd_bufferSize");
    double *work = static_cast<double *>(reserve(dWork, (lwork ? lwork : 1) * sizeof(double)));
    int *dinfo = static_cast<int *>(reserve(dInfo, sizeof(int)));
    check(cusolverDnDsyevd(solver, CUSOLVER_EIG_MODE_VECTOR, CUBLAS_FILL_MODE_LOWER, n, a, n, dw,
                           work, lwork, dinfo),
          "cusolverDnDsyevd");
    to_host(&info, dinfo, 1);
    to_host(A, a, nA);
    to_host(w, dw, (size_t)n);
    return info;
}

namespace {

cusolverStatus_t potrf_size(int n, float *a, int *lwork)
{
    return cusolverDnSpotrf_bufferSize(solver, CUBLAS_FILL_MODE_LOWER, n, a, n, lwork);
}

cusolverStatus_t potrf_size(int n, double *a, int *lwork)
{
    return cusolverDnDpotrf_bufferSize(solver, CUBLAS_FILL_MODE_LOWER, n, a, n, lwork);
}

cusolverStatus_t potri_size(int n, float *a, int *lwork)
{
    return cusolverDnSpotri_bufferSize(solver, CUBLAS_FILL_MODE_LOWER, n, a, n, lwork);
}

cusolverStatus_t potri_size(int n, double *a, int *lwork)
{
    return cusolverDnDpotri_bufferSize(solver, CUBLAS_FILL_MODE_LOWER, n, a, n, lwork);
}

cusolverStatus_t potrf(int n, float *a, float *work, int lwork, int *info)
{
    return cusolverDnSpotrf(solver, CUBLAS_FILL_MODE_LOWER, n, a, n, work, lwork, info);
}

cusolverStatus_t potrf(int n, double *a, double *work, int lwork, int *info)
{
    return cusolverDnDpotrf(solver, CUBLAS_FILL_MODE_LOWER, n, a, n, work, lwork, info);
}

cusolverStatus_t potri(int n, float *a, float *work, int lwork, int *info)
{
    return cusolverDnSpotri(solver, CUBLAS_FILL_MODE_LOWER, n, a, n, work, lwork, info);
}

cusolverStatus_t potri(int n, double *a, double *work, int lwork, int *info)
{
    return cusolverDnDpotri(solver, CUBLAS_FILL_MODE_LOWER, n, a, n, work, lwork, info);
}

/* backend.h's dpotri or spotri on the device: potrf, then potri where it succeeded (call
 * names the pair in a failure's message). */
template <typename T> int potri_rm(const char *call, int n, T *A)
{
    size_t nA = (size_t)n * n;
    T *a = to_device(dA, A, nA);
    int l_trf = 0, l_tri = 0, info = 0;
    check(potrf_size(n, a, &l_trf), call);
    check(potri_size(n, a, &l_tri), call);
    int lwork = l_trf > l_tri ? l_trf : l_tri;
    T *work = static_cast<T *>(reserve(dWork, (lwork ? lwork : 1) * sizeof(T)));
    int *dinfo = static_cast<int *>(reserve(dInfo, sizeof(int)));
    check(potrf(n, a, work, lwork, dinfo), call);
    to_host(&info, dinfo, 1);
    if (info == 0) {
        check(potri(n, a, work, lwork, dinfo), call);
        to_host(&info, dinfo, 1);
    }
    to_host(A, a, nA);
    return info;
}

} // namespace

extern "C" int kfac_cuda_dpotri(int n, double *A)
{
    return potri_rm("cusolverDnDpotrf/cusolverDnDpotri", n, A);
}

extern "C" int kfac_cuda_spotri(int n, float *A)
{
    return potri_rm("cusolverDnSpotrf/cusolverDnSpotri", n, A);
}
