/*
 * comm.c: the ranks of a data-parallel run over MPI (see comm.h). Built without MPI
 * (no KFAC_HAVE_MPI), every rank is this process alone. With it, MPI is joined only under
 * a launcher, so that a plain kfac-train and the test programs never start MPI.
 */
#include "config.h"
#include "kfac/comm.h"

#include "kfac/log.h"
#include "kfac/mat.h"
#include "kfac/status.h"
#include <stdlib.h>
#include <string.h>

#ifdef KFAC_HAVE_MPI
#include <mpi.h>
#endif

int kfac_comm_rank(const struct kfac_comm *c)
{
    return c ? c->rank : 0;
}

int kfac_comm_size(const struct kfac_comm *c)
{
    return c ? c->size : 1;
}

/* The size the launcher's environment announces (Open MPI, MPICH/Hydra, PMIx, Slurm), or 0
 * when no launcher started this process. */
static int launcher_size(void)
{
    static const char *const vars[] = {"OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMIX_SIZE",
                                       "SLURM_NTASKS", "MPI_LOCALNRANKS"};
    for (size_t i = 0; i < sizeof vars / sizeof *vars; i++) {
        const char *v = getenv(vars[i]);
        if (v && *v)
            return atoi(v) > 0 ? atoi(v) : 1;
    }
    return getenv("PMIX_RANK") || getenv("PMI_RANK") ? 1 : 0;
}

#ifdef KFAC_HAVE_MPI

static int joined;

int kfac_comm_start(struct kfac_comm *c)
{
    memset(c, 0, sizeof *c);
    c->size = 1;
    if (launcher_size() == 0)
        return 0;
    int provided;
    if (MPI_Init_thread(NULL, NULL, MPI_THREAD_FUNNELED, &provided) != MPI_SUCCESS)
        return kfac_error(KFAC_EINVAL, "MPI_Init failed");
    joined = 1;
    /* A failure is reported by the rank that met it (comm.h); MPI's own errors end all. */
    MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_ARE_FATAL);
    MPI_Comm_rank(MPI_COMM_WORLD, &c->rank);
    MPI_Comm_size(MPI_COMM_WORLD, &c->size);
    c->displs = kfac_xcalloc((size_t)c->size, sizeof *c->displs);
    return 0;
}

void kfac_comm_finish(struct kfac_comm *c)
{
    if (joined)
        MPI_Finalize();
    joined = 0;
    free(c->displs);
    c->displs = NULL;
}

void kfac_comm_abort(const struct kfac_comm *c, int status)
{
    if (joined && kfac_comm_size(c) > 1)
        MPI_Abort(MPI_COMM_WORLD, status);
}

const char *kfac_comm_library(void)
{
    static char name[MPI_MAX_LIBRARY_VERSION_STRING];
    int len;
    MPI_Get_library_version(name, &len);
    name[strcspn(name, ",\n")] = '\0';
    return name;
}

static int solo(const struct kfac_comm *c)
{
    return kfac_comm_size(c) <= 1;
}

/* Adds a collective's payload and time to c's counts. */
static void count(struct kfac_comm *c, enum kfac_comm_kind kind, size_t bytes, double t0)
{
    c->bytes[kind] += (double)bytes;
    c->seconds[kind] += kfac_log_clock() - t0;
}

/* MPI counts are ints: a buffer is taken in pieces of at most this many elements. */
enum { PIECE = 1 << 30 };

/* x (n elements of `size` bytes, MPI type `type`) ← the sum over the ranks, in pieces. */
static void sum(struct kfac_comm *c, enum kfac_comm_kind kind, void *x, size_t n, size_t size,
                MPI_Datatype type)
{
    if (solo(c))
        return;
    double t0 = kfac_log_clock();
    for (size_t i = 0; i < n; i += PIECE) {
        int k = n - i < PIECE ? (int)(n - i) : PIECE;
        MPI_Allreduce(MPI_IN_PLACE, (char *)x + i * size, k, type, MPI_SUM, MPI_COMM_WORLD);
    }
    count(c, kind, n * size, t0);
}

void kfac_comm_sum_floats(struct kfac_comm *c, enum kfac_comm_kind kind, float *x, size_t n)
{
    sum(c, kind, x, n, sizeof *x, MPI_FLOAT);
}

void kfac_comm_sum_doubles(struct kfac_comm *c, enum kfac_comm_kind kind, double *x, size_t n)
{
    sum(c, kind, x, n, sizeof *x, MPI_DOUBLE);
}

long kfac_comm_max(struct kfac_comm *c, long v)
{
    if (solo(c))
        return v;
    double t0 = kfac_log_clock();
    MPI_Allreduce(MPI_IN_PLACE, &v, 1, MPI_LONG, MPI_MAX, MPI_COMM_WORLD);
    count(c, KFAC_COMM_SCALARS, sizeof v, t0);
    return v;
}

void kfac_comm_broadcast_doubles(struct kfac_comm *c, enum kfac_comm_kind kind, double *x,
                                 size_t n, int root)
{
    if (solo(c))
        return;
    double t0 = kfac_log_clock();
    for (size_t i = 0; i < n; i += PIECE) {
        int k = n - i < PIECE ? (int)(n - i) : PIECE;
        MPI_Bcast(x + i, k, MPI_DOUBLE, root, MPI_COMM_WORLD);
    }
    count(c, kind, c->rank == root ? n * sizeof *x : 0, t0);
}

void kfac_comm_gather_doubles(struct kfac_comm *c, enum kfac_comm_kind kind, double *all,
                              const int *counts)
{
    if (solo(c))
        return;
    double t0 = kfac_log_clock();
    for (int r = 0, at = 0; r < c->size; at += counts[r], r++)
        c->displs[r] = at;
    MPI_Allgatherv(MPI_IN_PLACE, 0, MPI_DATATYPE_NULL, all, counts, c->displs, MPI_DOUBLE,
                   MPI_COMM_WORLD);
    count(c, kind, (size_t)counts[c->rank] * sizeof *all, t0);
}

void kfac_comm_gather_floats(struct kfac_comm *c, enum kfac_comm_kind kind, float *all,
                             const int *counts, const int *displs)
{
    if (solo(c))
        return;
    double t0 = kfac_log_clock();
    MPI_Allgatherv(MPI_IN_PLACE, 0, MPI_DATATYPE_NULL, all, counts, displs, MPI_FLOAT,
                   MPI_COMM_WORLD);
    count(c, kind, (size_t)counts[c->rank] * sizeof *all, t0);
}

void kfac_comm_gather_ints(struct kfac_comm *c, int n, int *counts)
{
    if (solo(c)) {
        counts[0] = n;
        return;
    }
    double t0 = kfac_log_clock();
    MPI_Allgather(&n, 1, MPI_INT, counts, 1, MPI_INT, MPI_COMM_WORLD);
    count(c, KFAC_COMM_SCALARS, sizeof n, t0);
}

int kfac_comm_differs(struct kfac_comm *c, uint64_t v)
{
    if (solo(c))
        return -1;
    double t0 = kfac_log_clock();
    uint64_t first = v;
    MPI_Bcast(&first, 1, MPI_UINT64_T, 0, MPI_COMM_WORLD);
    int mine = v == first ? c->size : c->rank, lowest;
    MPI_Allreduce(&mine, &lowest, 1, MPI_INT, MPI_MIN, MPI_COMM_WORLD);
    count(c, KFAC_COMM_SCALARS, sizeof v + sizeof mine, t0);
    return lowest == c->size ? -1 : lowest;
}

#else /* one process: the collectives have nothing to combine */

int kfac_comm_start(struct kfac_comm *c)
{
    memset(c, 0, sizeof *c);
    c->size = 1;
    if (launcher_size() > 1)
        return kfac_error(KFAC_EINVAL, "started by an MPI launcher with %d ranks, but this "
                                       "kfac-train was built without MPI (./configure --with-mpi)",
                          launcher_size());
    return 0;
}

void kfac_comm_finish(struct kfac_comm *c)
{
    (void)c;
}

void kfac_comm_abort(const struct kfac_comm *c, int status)
{
    (void)c, (void)status;
}

const char *kfac_comm_library(void)
{
    return NULL;
}

void kfac_comm_sum_floats(struct kfac_comm *c, enum kfac_comm_kind kind, float *x, size_t n)
{
    (void)c, (void)kind, (void)x, (void)n;
}

void kfac_comm_sum_doubles(struct kfac_comm *c, enum kfac_comm_kind kind, double *x, size_t n)
{
    (void)c, (void)kind, (void)x, (void)n;
}

long kfac_comm_max(struct kfac_comm *c, long v)
{
    (void)c;
    return v;
}

void kfac_comm_broadcast_doubles(struct kfac_comm *c, enum kfac_comm_kind kind, double *x,
                                 size_t n, int root)
{
    (void)c, (void)kind, (void)x, (void)n, (void)root;
}

void kfac_comm_gather_doubles(struct kfac_comm *c, enum kfac_comm_kind kind, double *all,
                              const int *counts)
{
    (void)c, (void)kind, (void)all, (void)counts;
}

void kfac_comm_gather_floats(struct kfac_comm *c, enum kfac_comm_kind kind, float *all,
                             const int *counts, const int *displs)
{
    (void)c, (void)kind, (void)all, (void)counts, (void)displs;
}

void kfac_comm_gather_ints(struct kfac_comm *c, int n, int *counts)
{
    (void)c;
    counts[0] = n;
}

int kfac_comm_differs(struct kfac_comm *c, uint64_t v)
{
    (void)c, (void)v;
    return -1;
}

#endif

void kfac_comm_gather_rows(struct kfac_comm *c, enum kfac_comm_kind kind, const float *x, int T,
                           int n, const int *cases, int *counts, double *out)
{
    int ranks = kfac_comm_size(c), rank = kfac_comm_rank(c), at = 0;
    for (int r = 0; r < ranks; r++) {
        counts[r] = cases[r] * T * n;
        at += r < rank ? counts[r] : 0;
    }
    kfac_floats_to_doubles((size_t)counts[rank], x, out + at);
    kfac_comm_gather_doubles(c, kind, out, counts);
}
