/*
 * cuda_ops.h: the CUDA side of the CUDA backend (src/backend_cuda.c), as plain C
 * functions: no CUDA type crosses this header, and nothing outside src/cuda includes a
 * CUDA header. The operations take host arrays, as every caller of the backend passes
 * them today: each copies its operands to the device, runs cuBLAS or cuSOLVER there and
 * copies the result back (device scratch that grows to the largest operand seen, then
 * stays). Shapes and layouts are those of backend.h (row-major, leading dimensions).
 * A failing CUDA, cuBLAS or cuSOLVER call ends the process with a message naming the
 * call and, for an allocation, the buffer and its size (the operations return nothing
 * that could carry an error).
 */
#ifndef KFAC_CUDA_OPS_H
#define KFAC_CUDA_OPS_H

#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Makes device `device` current and creates the cuBLAS and cuSOLVER handles. 0 on
 * success; else a message (at most size bytes) in msg: no device of that number, or the
 * driver's error. */
int kfac_cuda_init(int device, char *msg, size_t size);

void kfac_cuda_sgemm(int ta, int tb, int m, int n, int k, float alpha, const float *A, int lda,
                     const float *B, int ldb, float beta, float *C, int ldc);
void kfac_cuda_dgemm(int ta, int tb, int m, int n, int k, double alpha, const double *A, int lda,
                     const double *B, int ldb, double beta, double *C, int ldc);
void kfac_cuda_ssyrk(int t, int n, int k, float alpha, const float *A, int lda, float beta,
                     float *C, int ldc);
void kfac_cuda_dsyrk(int t, int n, int k, double alpha, const double *A, int lda, double beta,
                     double *C, int ldc);
void kfac_cuda_dsymm(int side, int m, int n, double alpha, const double *S, int lds,
                     const double *B, int ldb, double beta, double *C, int ldc);
/* The eigendecomposition of backend.h's dsyevd (A n × n, column-major lower triangle
 * read; eigenvalues ascending into w, eigenvectors into A's columns) by cusolverDnDsyevd.
 * Returns cuSOLVER's info (0: success). */
int kfac_cuda_dsyevd(int n, double *A, double *w);
/* backend.h's dpotri (A n × n, column-major lower triangle read and written) by
 * cusolverDnDpotrf then cusolverDnDpotri. Returns cuSOLVER's info (> 0: not positive
 * definite). */
int kfac_cuda_dpotri(int n, double *A);
/* backend.h's spotri, the same in float (cusolverDnSpotrf, cusolverDnSpotri). */
int kfac_cuda_spotri(int n, float *A);

#ifdef __cplusplus
}
#endif

#endif
