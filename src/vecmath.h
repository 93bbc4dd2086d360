/*
 * vecmath.h: lets GCC vectorise the elementwise kernels (activations, losses). It declares
 * glibc's libmvec vector variants of expf, tanhf and log1pf, and KFAC_VECTOR_KERNEL compiles
 * a function for AVX-512, AVX2 and baseline x86-64, the best picked when the program loads
 * (function multiversioning). Elsewhere both are no-ops and the kernels stay scalar.
 */
#ifndef KFAC_VECMATH_H
#define KFAC_VECMATH_H

#include <math.h>

#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && defined(__GLIBC__) &&      \
    __GLIBC_PREREQ(2, 35) && !defined(__SANITIZE_ADDRESS__)
__attribute__((simd("notinbranch"))) float expf(float);
__attribute__((simd("notinbranch"))) float tanhf(float);
__attribute__((simd("notinbranch"))) float log1pf(float);
#define KFAC_VECTOR_KERNEL __attribute__((target_clones("avx512f", "avx2", "default")))
#else
#define KFAC_VECTOR_KERNEL
#endif

#endif
