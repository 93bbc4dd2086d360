/*
 * backend_cuda.c: the CUDA backend (backend.h), built with ./configure --enable-cuda. Its
 * table is the CPU backend's with the BLAS-3 products (sgemm, dgemm, ssyrk, dsyrk, dsymm),
 * the factors' eigendecomposition (dsyevd) and their Cholesky inverses (dpotri, spotri) on
 * the GPU through src/cuda/cuda_ops.h: cuBLAS and cuSOLVER on operands copied there and back,
 * since the library's arrays are host memory today. The element-wise kernels and the
 * BLAS-1 operations stay on the host. This is the first step of the CUDA build (issue:
 * the whole iteration on the GPU, its arrays in device memory); it includes no CUDA
 * header.
 */
#include "kfac/backend.h"
#include "kfac/status.h"
#include "cuda/cuda_ops.h"

#include <stdio.h>

static struct kfac_backend cuda;
static int cuda_device = -1;

/* dsyevd's host workspace is not used: the query asks for one element of each. */
static int cuda_dsyevd(int n, double *A, double *w, double *work, int lwork, int *iwork, int liwork)
{
    (void)liwork;
    if (lwork == -1) {
        work[0] = 1;
        iwork[0] = 1;
        return 0;
    }
    return kfac_cuda_dsyevd(n, A, w);
}

int kfac_backend_cuda(int device, const struct kfac_backend **out)
{
    *out = NULL;
    if (cuda_device >= 0 && cuda_device != device)
        return kfac_error(KFAC_EINVAL,
                          "CUDA device %d is in use; one process drives one "
                          "device (asked for %d)",
                          cuda_device, device);
    if (cuda_device < 0) {
        char msg[256];
        if (kfac_cuda_init(device, msg, sizeof msg))
            return kfac_error(KFAC_EINVAL, "%s", msg);
        cuda = *kfac_backend_cpu();
        cuda.name = "cuda";
        cuda.concurrent = 0; /* one set of device buffers (cuda_ops.h) */
        cuda.sgemm = kfac_cuda_sgemm;
        cuda.dgemm = kfac_cuda_dgemm;
        cuda.ssyrk = kfac_cuda_ssyrk;
        cuda.dsyrk = kfac_cuda_dsyrk;
        cuda.dsymm = kfac_cuda_dsymm;
        cuda.dsyevd = cuda_dsyevd;
        cuda.dpotri = kfac_cuda_dpotri;
        cuda.spotri = kfac_cuda_spotri;
        cuda_device = device;
    }
    *out = &cuda;
    return 0;
}
