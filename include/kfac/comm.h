/*
 * comm.h: the ranks of a data-parallel run (MPI, ./configure --with-mpi) and the
 * collectives K-FAC needs: sums of the gradient, the packed factor statistics and the
 * model's scalars, broadcasts of eigendecompositions, gathers of K-FOC's per-case terms,
 * and agreement on flags. A NULL struct kfac_comm *, or one of size 1, is this process
 * alone: every call is then a no-op (a sum leaves its buffer as it is) and costs nothing,
 * so single-process code paths take no MPI call, and a build without MPI has no other.
 *
 * Every collective counts the bytes of its payload and the seconds it waited, by kind,
 * for the benchmarks' communication shares (bench/bench_mpi.c).
 */
#ifndef KFAC_COMM_H
#define KFAC_COMM_H

#include <stddef.h>
#include <stdint.h>

/* What a collective carries, for the counts. */
enum kfac_comm_kind {
    KFAC_COMM_GRADIENT,   /* the gradient block */
    KFAC_COMM_STATISTICS, /* the factor statistics (and K-FOC's per-case terms) */
    KFAC_COMM_INVERSE,    /* the eigendecompositions */
    KFAC_COMM_SCALARS,    /* objectives, the model's inner products, flags, checksums */
    KFAC_COMM_KINDS
};

struct kfac_comm {
    int rank, size;
    double bytes[KFAC_COMM_KINDS];   /* this rank's payload so far */
    double seconds[KFAC_COMM_KINDS]; /* time in the collectives so far */
    int *displs;                     /* size: a gather's offsets, allocated once */
};

/* Joins the run's ranks when the process was started by an MPI launcher (mpirun, mpiexec,
 * srun: it sees their environment) and kfac-train was built with MPI; otherwise, or on
 * failure, c is this process alone. Returns 0, or KFAC_EINVAL with a message when
 * launched by mpirun with more than one rank but built without MPI. */
int kfac_comm_start(struct kfac_comm *c);

/* Leaves the ranks (MPI_Finalize) when kfac_comm_start() joined them. */
void kfac_comm_finish(struct kfac_comm *c);

/* Ends every rank at once with status (MPI_Abort): for a failure some ranks cannot learn
 * of through a collective. Returns only when c is this process alone. */
void kfac_comm_abort(const struct kfac_comm *c, int status);

/* c's rank and size; 0 and 1 for NULL. */
int kfac_comm_rank(const struct kfac_comm *c);
int kfac_comm_size(const struct kfac_comm *c);

/* The MPI library kfac-train was built with (MPI_Get_library_version's first line), or
 * NULL without MPI. */
const char *kfac_comm_library(void);

/* x (n) ← the sum of every rank's x, the same on every rank. */
void kfac_comm_sum_floats(struct kfac_comm *c, enum kfac_comm_kind kind, float *x, size_t n);
void kfac_comm_sum_doubles(struct kfac_comm *c, enum kfac_comm_kind kind, double *x, size_t n);

/* The largest of every rank's v. */
long kfac_comm_max(struct kfac_comm *c, long v);

/* x (n) ← root's x on every rank. */
void kfac_comm_broadcast_doubles(struct kfac_comm *c, enum kfac_comm_kind kind, double *x,
                                 size_t n, int root);

/* all ← every rank's block, in rank order: rank r's n_r doubles (counts[r], which every
 * rank passes alike) are expected at all + Σ_{q<r} counts[q] on entry (in place). */
void kfac_comm_gather_doubles(struct kfac_comm *c, enum kfac_comm_kind kind, double *all,
                              const int *counts);

/* The same for floats: rank r's counts[r] floats at all + displs[r] (both passed alike by
 * every rank; the blocks may not overlap). */
void kfac_comm_gather_floats(struct kfac_comm *c, enum kfac_comm_kind kind, float *all,
                             const int *counts, const int *displs);

/* out (doubles) ← the rows of every rank's cases, in rank order: cases[r] cases of T rows of
 * n floats from rank r, this rank's from x; counts: size ints of scratch. For per-case
 * terms (K-FOC's fits, the Fisher-error probe) that need every case at once. */
void kfac_comm_gather_rows(struct kfac_comm *c, enum kfac_comm_kind kind, const float *x, int T,
                           int n, const int *cases, int *counts, double *out);

/* counts (size) ← every rank's n. */
void kfac_comm_gather_ints(struct kfac_comm *c, int n, int *counts);

/* -1 when every rank's v equals rank 0's, else the lowest rank whose v does not. */
int kfac_comm_differs(struct kfac_comm *c, uint64_t v);

#endif
