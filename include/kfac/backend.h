/*
 * backend.h: the compute backend, the one seam the numeric work goes through (after
 * ggml's backend tables): memory, BLAS-3 and BLAS-1 on whole arrays, the symmetric
 * eigendecomposition and Cholesky inverse of a factor, and the element-wise kernels of the
 * layers and losses (activations, losses, im2col/col2im, pooling). The CPU backend (backend_cpu.c: OpenBLAS,
 * LAPACKE, and the kernels of layer.c, loss.c, layer_conv.c and layer_pool.c) is the only
 * file of the library that calls BLAS or LAPACK; a CUDA backend is a second table of the
 * same operations. The network holds the backend of the run (net->be), and
 * its layers, the curvature state and the optimiser take it from there, never from a
 * global.
 *
 * Every matrix is row-major with a leading dimension (ld ≥ its width), every vector
 * contiguous. Arrays passed to the operations are the backend's memory: host memory for
 * the CPU backend; device memory for a device backend, where alloc, upload and download
 * move them (the pointers marked "device" below).
 */
#ifndef KFAC_BACKEND_H
#define KFAC_BACKEND_H

#include "kfac/layer.h"
#include "kfac/loss.h"
#include "kfac/rng.h"
#include <stddef.h>

enum { KFAC_NO_TRANS = 0, KFAC_TRANS = 1 };
enum { KFAC_LEFT = 0, KFAC_RIGHT = 1 };

struct kfac_backend {
    const char *name;

    /* Memory: bytes of the backend's memory (device), and copies to and from the host. */
    void *(*alloc)(size_t bytes);
    void (*free)(void *p);
    void (*upload)(void *device, const void *host, size_t bytes);
    void (*download)(void *host, const void *device, size_t bytes);
    /* x (n floats, device) = value. */
    void (*sfill)(size_t n, float value, float *x);

    /* The threads the backend's kernels use (0: the library's default). */
    void (*set_threads)(int n);
    int (*threads)(void);
    /* 1 when, with threads() set to 1, several host threads may call the backend at once
     * (the CPU backend: OpenBLAS then runs each call on its caller's thread); 0 where the
     * calls share state (the CUDA backend's device buffers). */
    int concurrent;
    /* The library that does the arithmetic, as it describes its build (the CPU: OpenBLAS's
     * version, options and the kernels it chose). */
    const char *(*library)(void);
    /* A sentence on a setup that costs the backend much of its speed and that the user can
     * change, for a warning; NULL when there is none. */
    const char *(*speed_warning)(void);

    /* C (m × n) = α op(A) op(B) + β C, op(X) = X or Xᵀ (ta, tb: KFAC_TRANS or not);
     * A is m × k after op, B k × n after op. */
    void (*sgemm)(int ta, int tb, int m, int n, int k, float alpha, const float *A, int lda,
                  const float *B, int ldb, float beta, float *C, int ldc);
    void (*dgemm)(int ta, int tb, int m, int n, int k, double alpha, const double *A, int lda,
                  const double *B, int ldb, double beta, double *C, int ldc);
    /* The upper triangle of C (n × n) = α op(A) op(A)ᵀ + β C: A is n × k (t = KFAC_NO_TRANS)
     * or k × n (KFAC_TRANS, C = α AᵀA + β C). */
    void (*ssyrk)(int t, int n, int k, float alpha, const float *A, int lda, float beta,
                  float *C, int ldc);
    void (*dsyrk)(int t, int n, int k, double alpha, const double *A, int lda, double beta,
                  double *C, int ldc);
    /* C (m × n) = α S B + β C (side KFAC_LEFT, S m × m) or α B S + β C (KFAC_RIGHT, S n × n)
     * for a symmetric S of which the upper triangle is read. */
    void (*dsymm)(int side, int m, int n, double alpha, const double *S, int lds,
                  const double *B, int ldb, double beta, double *C, int ldc);
    /* B (cols × rows) = Aᵀ for A (rows × cols). */
    void (*stranspose)(int rows, int cols, const float *A, int lda, float *B, int ldb);

    /* y += a x, x *= a, x·y, ‖x‖₂ over n elements. */
    void (*saxpy)(int n, float a, const float *x, float *y);
    void (*sscal)(int n, float a, float *x);
    void (*daxpy)(int n, double a, const double *x, double *y);
    void (*dscal)(int n, double a, double *x);
    double (*ddot)(int n, const double *x, const double *y);
    double (*dnrm2)(int n, const double *x);

    /* The eigendecomposition of a symmetric A (n × n, its lower triangle read in
     * column-major order, i.e. the upper one in row-major): eigenvalues ascending into w,
     * eigenvector j into column j of A (column-major; row j in row-major). work (lwork
     * doubles) and iwork (liwork ints) as LAPACK's dsyevd; with lwork = −1 only the sizes
     * are returned in work[0] and iwork[0]. Returns LAPACK's info (0: success). */
    int (*dsyevd)(int n, double *A, double *w, double *work, int lwork, int *iwork,
                  int liwork);
    /* The inverse of a symmetric positive definite A (n × n, the same triangle read and
     * written as dsyevd's) in place, by LAPACK's dpotrf then dpotri. Returns their info
     * (> 0: A is not numerically positive definite, and is left overwritten). */
    int (*dpotri)(int n, double *A);
    /* The same in float, by spotrf then spotri (optimizer.inverse_precision = float). */
    int (*spotri)(int n, float *A);

    /* The element-wise kernels, as layer.h and loss.h define them (all arrays device):
     * out = φ(s) and y = φ'(s) ⊙ x, */
    void (*activation_forward)(enum kfac_activation act, int m, int n, const float *s, int ld_s,
                               float *out, int ld_out);
    void (*activation_derivative_mul)(enum kfac_activation act, int m, int n, const float *out,
                                      int ld_out, const float *x, int ld_x, float *y, int ld_y);
    /* the loss's value (returned to the host), gradient, output-Fisher product, a column of
     * the output Fisher's square root, and the gradient at a target drawn from the model's
     * distribution (case i from kfac_rng_case(key, place + i·step), loss.h: a device
     * backend draws the same numbers, so that its runs follow the CPU's), */
    double (*loss_sum)(enum kfac_loss loss, int m, int n, const float *z, const float *t);
    void (*loss_grad)(enum kfac_loss loss, int m, int n, const float *y, const float *t, float *g);
    void (*loss_fisher_mul)(enum kfac_loss loss, int m, int n, const float *y, const float *v,
                            float *out);
    void (*loss_fisher_column)(enum kfac_loss loss, int m, int n, const float *y, int j,
                               float *out);
    void (*loss_sample_grad)(enum kfac_loss loss, int m, int n, const float *y, uint64_t key,
                             long place, long step, float *g);
    /* the patch matrix and its adjoint, */
    void (*im2col)(int m, const struct kfac_shape *in, int kh, int kw, int stride, int pad,
                   const float *x, int ld_x, float *out, int ld_out);
    void (*col2im)(int m, const struct kfac_shape *in, int kh, int kw, int stride, int pad,
                   const float *cols, int ld_cols, float *dx, int ld_x);
    /* and pooling (arg: device ints). */
    void (*pool_max)(int m, const struct kfac_shape *in, int kh, int kw, int stride, const float *x,
                     int ld_x, float *out, int *arg);
    void (*pool_mean)(int m, const struct kfac_shape *in, int kh, int kw, int stride,
                      const float *x, int ld_x, float *out);
    void (*pool_max_backward)(int m, const struct kfac_shape *in, int kh, int kw, int stride,
                              const float *g, const int *arg, float *dx, int ld_dx);
    void (*pool_mean_backward)(int m, const struct kfac_shape *in, int kh, int kw, int stride,
                               const float *g, float *dx, int ld_dx);
    void (*pool_gather)(int m, int n, const float *x, int ld_x, const int *arg, float *out);
};

/* The CPU backend: OpenBLAS and LAPACKE on host memory. */
const struct kfac_backend *kfac_backend_cpu(void);

/* A program's first call, with main's argv unchanged: where OpenBLAS runs several threads
 * and the environment leaves it to spin for its default while idle, runs the program
 * again (execv of /proc/self/exe, Linux only) with OPENBLAS_THREAD_TIMEOUT set to a short
 * wait (backend_cpu.c says why). Returns when it does not: the variable was set (any
 * value is kept), one thread, under valgrind, or the exec failed (then nothing changes). */
void kfac_backend_cpu_prepare(char **argv);

/* The CUDA backend on device `device` (backend_cuda.c; in builds configured with
 * --enable-cuda only): KFAC_EINVAL when no such device is visible or another one is in
 * use already. */
int kfac_backend_cuda(int device, const struct kfac_backend **out);

/* The backend a device name selects: "cpu", "cuda" (device 0) or "cuda:N". KFAC_EINVAL,
 * naming the configuration key `key`, for another name, for cuda in a build without
 * CUDA, or when the device cannot be used (the reason). With out NULL only the name is
 * checked. */
int kfac_backend_select(const char *device, const char *key, const struct kfac_backend **out);

/* The backends this build has, e.g. "cpu cuda". */
const char *kfac_backends_built(void);

#endif
