/*
 * curvature.h: Kronecker-factored curvature per layer (K-FAC, Martens & Grosse 2015):
 * the factors Ā = E[ā āᵀ] and G = E[g gᵀ] as exponential averages of mini-batch
 * statistics, their symmetric eigendecompositions, and the damped inverse
 *     V ↦ (G + (γ/π) I)⁻¹ V (Ā + γπ I)⁻¹
 * that applies ((Ā + γπ I) ⊗ (G + (γ/π) I))⁻¹ to a layer's gradient V (d_out × (d_in+1)).
 *
 * Block-tridiagonal K-FAC (§3.3 of the paper; kfac_curvature_reserve_tridiag()) adds, for
 * each pair of consecutive layers, the cross factors Ā_{i,i+1} = E[ā_i ā_{i+1}ᵀ] and
 * G_{i,i+1} = E[g_i g_{i+1}ᵀ], and applies the F̂⁻¹ = Ξᵀ Λ Ξ whose F̂ agrees with the damped
 * Kronecker blocks on the block tridiagonal (curvature_tridiag.c).
 *
 * The statistics come from the network's layer buffers: ā from the forward pass and g
 * from a backward pass whose output gradients were drawn from the model (true Fisher)
 * or taken from the real targets (empirical Fisher). Factors are kept in double; the
 * eigenvectors are also kept in float for the per-iteration GEMMs.
 *
 * Every layer with parameters (net->blocks) has factors. A convolution (KFC, Grosse &
 * Martens 2016) has |T| = n_pos rows of ā and g per case, and its factors are kept as
 *     Ā = |T| Ω̂ = (1/M) Σ_rows ā āᵀ,   G = Γ̂ = (1/(M|T|)) Σ_rows g gᵀ,
 * so that Ā ⊗ G is KFC's |T| Ω̂ ⊗ Γ̂ and the π-split damping (Ā + γπ I) ⊗ (G + γ/π I) equals
 * |T| (Ω̂ + γ'π' I) ⊗ (Γ̂ + γ'/π' I) with γ'² = γ²/|T| and π' = π/√|T|: REFERENCE.md §2's
 * damping λ/|T| handed to Ω̂ and Γ̂. A dense layer is the case |T| = 1.
 */
#ifndef KFAC_CURVATURE_H
#define KFAC_CURVATURE_H

#include "kfac/checkpoint.h"
#include "kfac/data.h"
#include "kfac/loss.h"
#include "kfac/net.h"
#include "kfac/rng.h"

enum kfac_pi_norm {
    KFAC_PI_TRACE,      /* π = sqrt((tr Ā/(d_in+1)) / (tr G/d_out)) */
    KFAC_PI_FROBENIUS   /* π = sqrt((‖Ā‖_F/sqrt(d_in+1)) / (‖G‖_F/sqrt(d_out))) */
};

/* How the damped inverses (Ā + γπ I)⁻¹ and (G + γ/π I)⁻¹ come from the factors as the last
 * decomposition took them: the same matrices either way, up to rounding. */
enum kfac_inverse_method {
    KFAC_INVERSE_AUTO,     /* Cholesky, except for block-tridiagonal K-FAC (eigen) */
    KFAC_INVERSE_CHOLESKY, /* a Cholesky inversion (dpotrf, dpotri) of each damped factor for
                            * every γ; the decomposition only keeps the factors */
    KFAC_INVERSE_EIGEN     /* REFERENCE.md §3: eigendecompositions (dsyevd), from which each
                            * γ's inverse is one product; the block-tridiagonal variant's
                            * couplings need them */
};

/* The arithmetic of the Cholesky inversions (optimizer.inverse_precision). */
enum kfac_inverse_precision {
    KFAC_INVERSE_DOUBLE, /* dpotrf and dpotri on the factor as averaged, in double; the
                          * inverse rounded to float once */
    KFAC_INVERSE_FLOAT   /* spotrf and spotri on the damped factor rounded to float once:
                          * about half the time, a relative error of about the float
                          * epsilon times the damped factor's condition number */
};

/* Which factor of a K-FOC fit has unit Frobenius norm; the other carries the scale. For
 * one fit only a scaling; for averages over batches not (REFERENCE.md §7). The values are
 * the side's index in the fits: 0 the ā side (L, n_a × n_a), 1 the g side (R, n_g × n_g). */
enum kfac_kfoc_normalise {
    KFAC_KFOC_ACTIVATION = 0, /* the ā side: Algorithm 2 as printed, the authors' code */
    KFAC_KFOC_GRADIENT = 1    /* the g side: the paper's eq. 10 and §3.1; a single-output
                               * layer's block is then fitted exactly at every batch size */
};

/* How the optimiser's K-FOC_running folds each batch's fit into its factors. */
enum kfac_kfoc_average {
    KFAC_KFOC_EXPONENTIAL,    /* weight 1 − ε, K-FAC's ε = min(1 − 1/k, stats_decay) */
    KFAC_KFOC_RUNNING         /* the running mean: weight m/(cases so far), the paper's 1/p */
};

/* How a power iteration ended. */
struct kfac_kfoc_info {
    int iterations;     /* power iterations run */
    int converged;      /* ‖N − N_prev‖_F < tol was reached within max_iter (N: the
                         * normalised factor) */
    double change;      /* ‖N − N_prev‖_F at the last iteration */
};

/* The most damped inverses of other γ that a curvature keeps beside the current ones: the
 * γ trial's other two candidates. */
#define KFAC_SPARE_INVERSES 2

/* One layer's factors. */
struct kfac_factors {
    int layer;           /* the network's layer number (from 1), for messages */
    int n_pos;           /* |T|: rows of ā and g per case */
    int n_a, n_g;        /* d_in+1 and d_out */
    double *A;           /* n_a × n_a: running Ā (updates write the upper triangle) */
    double *G;           /* n_g × n_g: running G (updates write the upper triangle) */
    double *A_keep;      /* n_a × n_a: Ā before the last update, for kfac_curvature_rollback() */
    double *G_keep;      /* n_g × n_g */
    float *batch_A;      /* n_a × n_a: the latest mini-batch Ā (upper triangle) */
    float *batch_G;      /* n_g × n_g: the latest mini-batch G (upper triangle) */
    /* The eigendecomposition of the last kfac_curvature_decompose(), in double (NULL with
     * the Cholesky method): */
    double *UA_t;        /* n_a × n_a: row j is Ā's eigenvector j */
    double *UG_t;        /* n_g × n_g: row j is G's eigenvector j */
    double *eig_A;       /* n_a: Ā's eigenvalues, ascending, clipped at 0 */
    double *eig_G;       /* n_g */
    /* With the Cholesky method in their place (else NULL), the factors as the last
     * kfac_curvature_decompose() took them: */
    double *A_dec;       /* n_a × n_a: Ā, symmetric */
    double *G_dec;       /* n_g × n_g: G, symmetric */
    double pi;           /* π of the decomposed factors */
    /* The damped inverses for the γ of the last kfac_curvature_invert(): formed in double
     * (from the eigendecomposition, or by Cholesky), kept and applied in float (sgemm).
     * Their error is of the order of what rounding the float gradient already causes
     * (tests/check_kfac.c, damped_inverse_precision). */
    float *A_inv;        /* n_a × n_a: (Ā + γπ I)⁻¹ */
    float *G_inv;        /* n_g × n_g: (G + γ/π I)⁻¹ */
    /* kfac_curvature_keep_inverses(): the same for other γ (c->spare_gamma), in this rank's
     * layers only; else NULL. */
    float *A_spare[KFAC_SPARE_INVERSES];
    float *G_spare[KFAC_SPARE_INVERSES];
};

/* Block-tridiagonal K-FAC: the coupling of layer i (sizes n_a, n_g) to layer i+1 (sizes
 * n_a1, n_g1). With A = Ā_i + γπ_i I and B = G_i + γ/π_i I its damped factors and A', B'
 * those of layer i+1, Ψ = Ψ^A ⊗ Ψ^G and Σ_{i|i+1} = A ⊗ B − C ⊗ D with
 *     Ψ^A = Ā_{i,i+1} A'⁻¹, Ψ^G = G_{i,i+1} B'⁻¹, C = Ψ^A Ā_{i,i+1}ᵀ, D = Ψ^G G_{i,i+1}ᵀ,
 * and Σ⁻¹ vec(V) = vec(K_G [(K_Gᵀ V K_A) ./ (1 − s_G s_Aᵀ)] K_Aᵀ) (REFERENCE.md §3). */
struct kfac_coupling {
    int n_a, n_g, n_a1, n_g1;
    double *XA;          /* n_a × n_a1: running Ā_{i,i+1} = E[ā_i ā_{i+1}ᵀ] */
    double *XG;          /* n_g × n_g1: running G_{i,i+1} = E[g_i g_{i+1}ᵀ] */
    double *XA_keep;     /* n_a × n_a1: Ā_{i,i+1} before the last update */
    double *XG_keep;     /* n_g × n_g1 */
    float *batch_XA;     /* n_a × n_a1: the latest mini-batch's */
    float *batch_XG;     /* n_g × n_g1 */
    /* From the last decomposition, with U_A, U'_A the eigenvectors of Ā_i, Ā_{i+1}: */
    double *QA;          /* n_a × n_a1: Ā_{i,i+1} U'_A */
    double *QG;          /* n_g × n_g1: G_{i,i+1} U'_G */
    double *PA;          /* n_a × n_a1: U_Aᵀ QA */
    double *PG;          /* n_g × n_g1: U_Gᵀ QG */
    /* For the γ of the last kfac_curvature_invert(): */
    float *psi_A;        /* n_a × n_a1: Ψ^A */
    float *psi_G;        /* n_g × n_g1: Ψ^G */
    float *KA;           /* n_a × n_a: A^{-1/2} E_A */
    float *KG;           /* n_g × n_g: B^{-1/2} E_G */
    float *den;          /* n_g × n_a: 1 / max(1 − s_G s_Aᵀ, KFAC_TRIDIAG_MIN_GAP) */
};

/* The floor on 1 − s_G s_A: the damping keeps it above γπ/(λ_max(Ā) + γπ) in exact
 * arithmetic, so the floor only catches rounding (or a zero γ) and bounds Σ⁻¹'s gain. */
#define KFAC_TRIDIAG_MIN_GAP 1e-6

/* Workspace for LAPACK dsyevd on symmetric matrices of up to max_n rows, sized once so
 * that no eigendecomposition allocates in the training loop. */
struct kfac_eigen_work {
    const struct kfac_backend *be; /* whose dsyevd */
    int max_n;
    double *a;           /* max_n × max_n: the matrix dsyevd overwrites */
    double *work;
    int *iwork;
    int lwork, liwork;
};

struct kfac_curvature;

/* Every layer's ā and g rows of up to K of a rank's cases, kept chunk by chunk for what
 * takes them all at once (K-FOC's fits, the Fisher-error probe), as floats like the layer
 * buffers: layer i's ā (K·|T| × n_a) from rows + at[2i], its g (K·|T| × n_g) from
 * rows + at[2i + 1] (curvature_kfoc.c). */
struct kfac_kept_rows {
    int K;                    /* 0: none kept */
    float *rows;
    size_t *at;               /* 2 × the network's layers with parameters */
};

/* The bytes kfac_kept_rows_reserve(k, net, K) allocates. */
double kfac_kept_rows_bytes(const struct kfac_net *net, int K);
/* Room for K cases of net's layers (K 0: none), in place of what k held. */
void kfac_kept_rows_reserve(struct kfac_kept_rows *k, const struct kfac_net *net, int K);
void kfac_kept_rows_free(struct kfac_kept_rows *k);
/* Keeps the first m cases of net's layer buffers as cases [first, first + m) (≤ K). */
void kfac_kept_rows_put(struct kfac_kept_rows *k, const struct kfac_net *net, int first, int m);

/* A curvature variant: what it adds to each step of the block-diagonal factors, called by
 * curvature.c through this table (NULL entries add nothing), so that the base knows no
 * variant: block-tridiagonal K-FAC (curvature_tridiag.c) and K-FOC's factors
 * (curvature_kfoc.c), which replace the statistics. */
struct kfac_curvature_variant {
    const char *name;
    /* In place of the base's statistics and merge (K-FOC's fits). */
    int (*update)(struct kfac_curvature *c, const struct kfac_net *net, int m, double eps,
                  long k);
    /* Its statistics of the first m cases of the layer buffers, added as those of
     * kfac_curvature_accumulate() are, and their merge with decay eps (keeping what came
     * before for rollback), after the layers' were found finite. */
    void (*statistics)(struct kfac_curvature *c, const struct kfac_net *net, int m, int total,
                       int first);
    void (*merge)(struct kfac_curvature *c, double eps);
    /* Copies its batch statistics into buf (unpack: back from buf) for the sum over the
     * ranks; returns the floats they take (buf NULL: only counts them). */
    size_t (*pack)(struct kfac_curvature *c, float *buf, int unpack);
    void (*rollback)(struct kfac_curvature *c);
    /* After the layers' eigendecompositions. */
    void (*decompose)(struct kfac_curvature *c);
    /* The damped inverses for γ, of which the base forms the layers' plain ones (all of
     * them, or the last one's only when last_inverse_only). */
    int last_inverse_only;
    int (*invert)(struct kfac_curvature *c, double gamma, long k);
    /* out = scale · F̂⁻¹ V in place of the block-diagonal inverse. */
    void (*precondition)(struct kfac_curvature *c, const struct kfac_net *net, const float *V,
                         float scale, float *out);
    void (*state)(struct kfac_curvature *c, struct kfac_state *st);
    void (*free)(struct kfac_curvature *c);
};

struct kfac_curvature {
    const struct kfac_backend *be; /* the network's */
    struct kfac_comm *comm;   /* the network's ranks: the statistics are summed over them,
                               * the decompositions shared out among them */
    float *packed;            /* the batch statistics packed for their sum over the ranks */
    /* kfac_curvature_share_layers(): this rank's blocks [own_lo, own_hi), and every rank's
     * parameters (count) and their offset in the parameter block (displ); else the whole
     * range and NULL. */
    int own_lo, own_hi;
    int *own_count, *own_displ;
    double no_inverses;       /* 0: what checkpoints hold as inv_gamma when shared */
    const struct kfac_curvature_variant *variant; /* NULL: block-diagonal K-FAC */
    int n_blocks;             /* the network's layers with parameters */
    struct kfac_factors *f;   /* n_blocks */
    struct kfac_coupling *tri; /* n_blocks − 1 from kfac_curvature_reserve_tridiag(); else NULL */
    /* Scratch, sized for the largest layer: */
    struct kfac_eigen_work eig;
    size_t tmp_n;             /* max d_out × (d_in+1) and max factor size squared */
    float *tmp;               /* tmp_n */
    double *dtmp;             /* 2 tmp_n: a damped inverse in double and its scratch */
    float *tmp2;              /* block-tridiagonal only: tmp_n */
    double *tri_work;         /* block-tridiagonal only: 2 × max factor size squared */
    double *s_A, *s_G;        /* block-tridiagonal only: max factor size */
    double inv_gamma;         /* the γ A_inv and G_inv were formed for; 0: none valid */
    int n_spare;              /* kfac_curvature_keep_inverses()'s: the spare sets */
    double spare_gamma[KFAC_SPARE_INVERSES]; /* the γ of each, for this decomposition; 0: none */
    int spare_next;           /* the spare set a full cache gives up next */
    int cholesky;             /* the Cholesky method (kfac_curvature_use_cholesky()) */
    int float_inverses;       /* the Cholesky method in float (the same) */
    double *eig_w;            /* the Cholesky method: max factor size, the eigenvalues of a
                               * factor inverted through its eigendecomposition instead */
    int *chol_info;           /* the Cholesky method: 2 n_blocks, each factor's dpotri or
                               * spotri info */
    int *by_size;             /* the 2 n_blocks factors (2i: block i's Ā, 2i + 1: its G),
                               * largest first, as the two-thread passes take them */
    int kept;                 /* the _keep factors hold those before the last update */
    int *merge_first;         /* 2 n_blocks + 1: the merge's first row pair of each factor */
    _Atomic int *merge_bad;   /* 2 n_blocks: the merge's finding of each batch factor */
    struct {                  /* K-FOC's, from kfac_curvature_use_kfoc(); else zero */
        int max_cases;        /* of all ranks together */
        struct kfac_kept_rows kept; /* this rank's statistics cases, where they span chunks */
        int *counts;          /* 2 × ranks: each rank's cases, and scratch for the gathers */
        double *a, *g;        /* max_cases·|T| × n_a, × n_g (largest layer): ā, g in double */
        double *X;            /* convolutions: max_cases × n_g × n_a per-case gradients */
        double *L, *R;        /* max n_a², max n_g²: one fit's factors */
        double *work;         /* kfac_kfoc_work_size() for the largest layer */
        int side, max_iter;   /* kfac_curvature_use_kfoc()'s settings */
        double tol;
        struct kfac_kfoc_info info; /* how the last update's fits ended */
    } kfoc;
};

/* Factors for every layer of net with parameters (zero until the first update).
 * Allocates everything the training loop needs. */
struct kfac_curvature *kfac_curvature_new(const struct kfac_net *net);

/* Switches c, before its first update, from eigendecompositions to Cholesky inversions
 * (enum kfac_inverse_method): A_dec and G_dec in place of the eigenvectors and values; in
 * float where in_float is set (enum kfac_inverse_precision), else in double. */
void kfac_curvature_use_cholesky(struct kfac_curvature *c, int in_float);

/* Keeps the damped inverses of up to n_spare (≤ KFAC_SPARE_INVERSES) other γ of the same
 * decomposition beside the current ones, so that kfac_curvature_invert() forms each
 * γ's once: the γ trial's candidates are then inverted once each, and the one chosen is
 * in place when the next iteration asks for it, whichever was formed last. The kept ones
 * are the same to the bit as formed anew (a resumed run, whose checkpoint holds only the
 * current ones, forms them again). Call after kfac_curvature_share_layers(); does
 * nothing for a variant with inverses of its own (block-tridiagonal). */
void kfac_curvature_keep_inverses(struct kfac_curvature *c, int n_spare);

/* The bytes kfac_curvature_keep_inverses(c, n_spare) allocates for net on a rank that holds
 * every layer (fewer where kfac_curvature_share_layers() shares them out). */
double kfac_curvature_spare_bytes(const struct kfac_net *net, int n_spare);

/* A lower bound of the bytes kfac_curvature_new(net) allocates: the factors, their
 * copies and the scratch for the largest layer. */
double kfac_curvature_bytes(const struct kfac_net *net);
void kfac_curvature_free(struct kfac_curvature *c);

/* Lists the curvature's state for a checkpoint (checkpoint.h): every factor, the last
 * decomposition and damped inverses, and the block-tridiagonal couplings. K-FOC's and the
 * eigensolver's scratch is left out. */
void kfac_curvature_state(struct kfac_curvature *c, struct kfac_state *st);

/* Statistics of the first m cases of the layer buffers: ā (from the last forward pass)
 * and g (from the last backward pass), merged as X ← εX + (1−ε) X_batch for every factor
 * (a convolution's m·|T| rows scaled as above).
 * Nothing is merged unless every layer's statistics are finite: otherwise KFAC_ENUMERIC
 * with a message naming the iteration k, the layer and the factor. The same as
 * kfac_curvature_accumulate(c, net, m, m, 1) then kfac_curvature_merge_batch(), except
 * with K-FOC's factors, whose fits need all m cases at once: for them net may be NULL, and
 * the fits then take the first m cases that kfac_curvature_keep_kfoc() kept. */
int kfac_curvature_update(struct kfac_curvature *c, const struct kfac_net *net, int m,
                          double eps, long k);

/* A batch's statistics chunk by chunk (not for K-FOC's factors): adds those of the first m
 * cases of the layer buffers to the batch's, each scaled for a batch of `total` cases (the
 * chunks' m add up to it); `first` starts the batch's afresh. */
void kfac_curvature_accumulate(struct kfac_curvature *c, const struct kfac_net *net, int m,
                               int total, int first);

/* Merges the batch's statistics from kfac_curvature_accumulate() as
 * kfac_curvature_update() does, with its checks and messages, in one pass over the
 * factors on kfac_parallel_for()'s threads (the check is part of the pass: a refused
 * batch leaves the factors as they were, and kfac_curvature_rollback() nothing to undo,
 * the kept copies having been its scratch). Of a run on several ranks,
 * each accumulates its share of the batch (scaled for the whole batch's total) and the
 * merge first sums the shares over the ranks: the upper triangles of every factor's (and
 * the variant's cross factors) in one buffer, one call. */
int kfac_curvature_merge_batch(struct kfac_curvature *c, double eps, long k);

/* Undoes the last kfac_curvature_update() or kfac_curvature_update_kfoc(): every factor
 * (and cross factor) is again what it was before it, to the bit. For an iteration whose
 * step failed after its statistics were merged, so that a retry merges its own batch
 * once. The decomposition is not undone: the retry of the same iteration redoes it when
 * it is due. Does nothing unless an update came since the last rollback or commit. */
void kfac_curvature_rollback(struct kfac_curvature *c);

/* The last update stands: until the next one, kfac_curvature_rollback() does nothing. For
 * an iteration whose step succeeded, so that a later attempt that fails before its own
 * update does not undo this one. */
void kfac_curvature_commit(struct kfac_curvature *c);

/* K-FOC in place of the statistics (the optimiser's curvature = kfoc): for each layer, the
 * Frobenius-optimal factors L_p ⊗ R_p of the mini-batch's Fisher block (1/m) Σ (ā āᵀ) ⊗ (g gᵀ)
 * (Algorithm 2 with the factor of side `side`, an enum kfac_kfoc_normalise, of unit norm,
 * started from the running one, or from I on the first update, ε = 0), then the running
 * fit L̂ ⊗ R̂ ← the best Kronecker approximation of ε L̂ ⊗ R̂ + (1−ε) L_p ⊗ R_p (Algorithm 1 on
 * the two terms; ε = 1 − 1/p gives the paper's plain average). L̂ and R̂
 * take the places of Ā and G, so the rest of K-FAC applies unchanged. Needs
 * kfac_curvature_use_kfoc() for at least m cases; max_iter and tol as for
 * kfac_kron_fit(). *info receives the batch fits' largest iteration count (converged: all
 * of them). Refuses non-finite statistics as kfac_curvature_update() does. */
int kfac_curvature_update_kfoc(struct kfac_curvature *c, const struct kfac_net *net, int m,
                               double eps, long k, int side, int max_iter, double tol,
                               struct kfac_kfoc_info *info);

/* On several ranks: each rank forms the damped inverses and preconditions the gradient of
 * its own contiguous range of layers only (balanced by their GEMM work), and
 * kfac_curvature_precondition() gathers the blocks, so every rank ends with all of F̂⁻¹V,
 * the same to the bit as when each applies every layer. Its checkpoints then hold no
 * valid inverse (inv_gamma 0: a resumed run forms them again). Not for the
 * block-tridiagonal variant, whose inverse chains the layers (it stays on every rank).
 * Call after the variant is chosen; does nothing on one rank. */
void kfac_curvature_share_layers(struct kfac_curvature *c, const struct kfac_net *net);

/* Makes K-FOC's factors the curvature's variant: kfac_curvature_update() then runs
 * kfac_curvature_update_kfoc() with these settings, leaving its fits' count in
 * c->kfoc.info. Reserves the scratch for fits of up to max_cases cases (of all ranks
 * together) and the room to keep kept_cases of this rank's (0: none, when a rank's
 * statistics cases fit in one chunk). */
void kfac_curvature_use_kfoc(struct kfac_curvature *c, const struct kfac_net *net, int max_cases,
                             int kept_cases, int side, int max_iter, double tol);

/* K-FOC's statistics chunk by chunk, for a rank whose statistics cases are more than a
 * chunk: keeps the ā and g rows of the first m cases of the layer buffers as cases
 * [at, at + m) of the kept ones (at + m ≤ c->kfoc.kept.K), so that
 * kfac_curvature_update(c, NULL, cases, …) fits them all at once. */
void kfac_curvature_keep_kfoc(struct kfac_curvature *c, const struct kfac_net *net, int at,
                              int m);

/* The bytes kfac_curvature_use_kfoc(c, net, max_cases, kept_cases, …) allocates. */
double kfac_curvature_kfoc_bytes(const struct kfac_net *net, int max_cases, int kept_cases);

/* Switches c to block-tridiagonal K-FAC: allocates the cross factors (zero until the next
 * update) and the scratch. For networks of dense layers only (kfac_optim_new() refuses
 * others): the coupling of consecutive layers needs their cases in the same rows. From then on kfac_curvature_update() also estimates the cross
 * factors, kfac_curvature_decompose() prepares their products with the eigenvectors and
 * kfac_curvature_invert()/kfac_curvature_precondition() apply F̂⁻¹ = Ξᵀ Λ Ξ. */
void kfac_curvature_reserve_tridiag(struct kfac_curvature *c);

/* A lower bound of what kfac_curvature_reserve_tridiag() adds for net: the cross factors
 * and their copies. */
double kfac_curvature_tridiag_bytes(const struct kfac_net *net);

/* Copies each factor's upper triangle into its lower one, making A and G exactly
 * symmetric (kfac_curvature_decompose() does this first). */
void kfac_curvature_symmetrise(struct kfac_curvature *c);

/* ε = min(1 − 1/k, cap) for iteration k (1-based). */
double kfac_stats_decay(long k, double cap);

/* Symmetrises the factors, then their eigendecompositions (LAPACK dsyevd in double) and
 * each layer's π. KFAC_ENUMERIC, naming iteration k and the layer, if LAPACK fails; the
 * previous decomposition is kept then. On several ranks, factor j (layer i's Ā is 2i, its
 * G 2i + 1) is decomposed on rank j mod ranks and broadcast from there (KAISA's split),
 * so every rank ends with the same decomposition. With the Cholesky method the factors
 * are only kept (A_dec, G_dec) and π computed, on every rank. */
int kfac_curvature_decompose(struct kfac_curvature *c, enum kfac_pi_norm norm, long k);

/* Forms every layer's damped inverses (Ā + γπ I)⁻¹ and (G + γ/π I)⁻¹ from the last
 * decomposition (one SYRK per factor), unless they are already those of this γ and
 * decomposition, current or kept (kfac_curvature_keep_inverses()). With the Cholesky method, one Cholesky inversion per factor in double; a
 * damped factor that rounding leaves not positive definite (a γπ below its noise) is
 * inverted through its eigendecomposition, its eigenvalues clipped at 0, as the eigen
 * method would (KFAC_ENUMERIC naming iteration k, the layer and the factor if that
 * fails, on every rank). Block-tridiagonal: the last layer's damped inverses, and for each
 * coupling Ψ^A, Ψ^G, K_A, K_G and the denominators (two eigendecompositions per coupling);
 * KFAC_ENUMERIC naming iteration k and the layer if LAPACK fails. */
int kfac_curvature_invert(struct kfac_curvature *c, double gamma, long k);

/* out (n_params) = scale · F̂⁻¹ V for V (n_params, laid out as net->params) with the
 * inverses of the last kfac_curvature_invert(). Block-diagonal: scale · (G + γ/π I)⁻¹ V_i
 * (Ā + γπ I)⁻¹ for each layer's block V_i (d_out × (d_in+1)), two GEMMs per layer in float.
 * Block-tridiagonal: Ξ, then Λ (Σ_{i|i+1}⁻¹ per layer, the plain damped inverse for the
 * last), then Ξᵀ: eight GEMMs per layer. out may not alias V. */
void kfac_curvature_precondition(struct kfac_curvature *c, const struct kfac_net *net,
                                 const float *V, float scale, float *out);

/* --- The inverse of a difference of Kronecker products (curvature_tridiag.c). */

void kfac_eigen_work_init(struct kfac_eigen_work *w, const struct kfac_backend *be,
                          int max_n);
void kfac_eigen_work_free(struct kfac_eigen_work *w);

/* Symmetric eigendecomposition (dsyevd, double) of X (n × n, n ≤ w->max_n; its upper
 * triangle is read): eigenvalues ascending into eig, eigenvector j into row j of w->a.
 * Returns LAPACK's info (0: success). */
int kfac_eigen(struct kfac_eigen_work *w, int n, const double *X, double *eig);

/* One factor's half of Σ⁻¹ for Σ = A ⊗ B − C ⊗ D: from A = U diag(eig + d) Uᵀ (U_t: n × n,
 * row j the eigenvector of eig[j]; eig + d > 0) and Mt = diag(eig + d)^{-1/2} Uᵀ C U
 * diag(eig + d)^{-1/2} (n × n, symmetric, upper triangle read), the eigenvalues s (n) of
 * M = A^{-1/2} C A^{-1/2} (those of Mt) clipped to [0, 1], and K = A^{-1/2} E (n × n) for
 * M's eigenvectors E. work: n × n. Returns LAPACK's info. */
int kfac_kron_diff_factor(struct kfac_eigen_work *w, int n, const double *U_t, const double *eig,
                          double d, const double *Mt, double *work, float *K, double *s);

/* den (n_g × n_a) = 1 / max(1 − s_G s_Aᵀ, KFAC_TRIDIAG_MIN_GAP). */
void kfac_kron_diff_denominators(int n_a, int n_g, const double *s_A, const double *s_G,
                                 float *den);

/* out (n_g × n_a) = scale · Σ⁻¹ V = scale · K_G [(K_Gᵀ V K_A) ./ (1 − s_G s_Aᵀ)] K_Aᵀ for
 * V (n_g × n_a; overwritten), K_A (n_a × n_a), K_G (n_g × n_g) and den from
 * kfac_kron_diff_denominators(): four GEMMs. tmp: n_g × n_a. out may not alias V or tmp. */
void kfac_kron_diff_apply(const struct kfac_backend *be, int n_a, int n_g, const float *KA,
                          const float *KG, const float *den, float *V, float scale, float *out,
                          float *tmp);

/* --- K-FOC: Frobenius-optimal Kronecker factors (Schnaus, Lee & Triebel 2021) and the
 * Fisher-approximation error (REFERENCE.md §7–§8); curvature_kfoc.c. Everything here is
 * in double. The vec convention is K-FAC's: vec stacks columns, so a layer's Fisher block
 * over K cases is F = (1/K) Σ_k vec(X_k) vec(X_k)ᵀ for the per-case gradients X_k
 * (d_out × (d_in+1)): for a dense layer X_k = g_k ā_kᵀ and F = (1/K) Σ_k (ā_k ā_kᵀ) ⊗ (g_k g_kᵀ),
 * with K-FAC's Ā ⊗ G its model; for a convolution X_k = Σ_t g_kt ā_ktᵀ over the positions t
 * (cross-position terms kept), with KFC's |T| Ω̂ ⊗ Γ̂ its model. */

/* REFERENCE.md §7: the power iteration's n_max and δ. */
#define KFAC_KFOC_MAX_ITER 100
#define KFAC_KFOC_TOL 1e-5

/* Algorithm 1 on the backend be: L (nl × nl) and R (nr × nr) minimising ‖Σ_k Ls[k] ⊗ Rs[k] − L ⊗ R‖_F, the
 * best rank-one approximation of Σ_k vec(Ls[k]) vec(Rs[k])ᵀ, by power iteration:
 * R ← Σ_k ⟨Ls[k], L⟩ Rs[k], L ← Σ_k ⟨Rs[k], R⟩ Ls[k], with the factor of side `side` (0: L,
 * 1: R; enum kfac_kfoc_normalise) normalised to unit Frobenius norm, until it moves less
 * than tol or max_iter iterations; the other then carries the scale. The start of the
 * normalised factor is the positive definite I/‖I‖_F, or with warm set the one passed in
 * (a nonzero positive semidefinite matrix, e.g. the previous fit; it is normalised).
 * work: max(nl, nr)². */
void kfac_kron_fit(const struct kfac_backend *be, int n_terms, int nl, int nr,
                   const double *const *Ls, const double *const *Rs, int side, int max_iter,
                   double tol, int warm, double *L, double *R, double *work,
                   struct kfac_kfoc_info *info);

/* One layer's exact Fisher block over K cases, never formed: the per-case inputs ā and
 * output gradients g (T rows per case), and what its norm needs. */
struct kfac_fisher_block {
    const struct kfac_backend *be; /* the host backend its arrays are in */
    int K, n_a, n_g;
    const double *A;    /* K·T × n_a: ā per row, case by case */
    const double *G;    /* K·T × n_g: g per row */
    double norm2;       /* ‖F‖_F² = (1/K²) Σ_{k,k'} ⟨X_k, X_k'⟩² */
    int T;              /* rows per case (0 or 1: one, a dense layer) */
    const double *X;    /* T > 1: n_g × K × n_a, X[o, k, :] = row o of X_k; else NULL */
};

/* Doubles of the work space the functions below need for K cases of T rows of an n_a, n_g
 * layer. */
size_t kfac_fisher_work_size(int K, int T, int n_a, int n_g);

/* Fills b for A (K·T × n_a) and G (K·T × n_g), both kept by pointer, and computes ‖F‖_F²:
 * for T = 1 from the two K × K Gram matrices (X unused, may be NULL); for T > 1 it forms the
 * per-case gradients in X (n_g·K·n_a doubles, kept by pointer), one GEMM per case, and their
 * Gram matrix. */
void kfac_fisher_block_init(struct kfac_fisher_block *b, const struct kfac_backend *be, int K,
                            int T, int n_a, const double *A, int n_g, const double *G, double *X,
                            double *work);

/* Algorithm 2: the Kronecker fit of Algorithm 1 to the block's terms vec(X_k) vec(X_k)ᵀ/K,
 * without forming them: R ← (1/K) Σ_k X_k L X_kᵀ, L ← (1/K) Σ_k X_kᵀ R X_k; for a dense
 * layer R ← (1/K) Σ_k (ā_kᵀ L ā_k) g_k g_kᵀ and L ← (1/K) Σ_k (g_kᵀ R g_k) ā_k ā_kᵀ. L:
 * n_a × n_a, R: n_g × n_g; side, warm as for kfac_kron_fit(). Needs b's K, sizes, A and G
 * (T = 1) or X (T > 1), not norm2. work: kfac_kfoc_work_size(). */
void kfac_kfoc_fit(const struct kfac_fisher_block *b, int side, int max_iter, double tol,
                   int warm, double *L, double *R, double *work, struct kfac_kfoc_info *info);

/* Doubles of the work space kfac_kfoc_fit() needs for K cases of T rows of an n_a, n_g
 * layer. */
size_t kfac_kfoc_work_size(int K, int T, int n_a, int n_g);

/* ‖F − F̃‖_F / ‖F‖_F for F̃ = L ⊗ R (L: n_a × n_a, R: n_g × n_g, symmetric), through
 * ⟨F, L ⊗ R⟩ = (1/K) Σ_k tr(X_kᵀ R X_k L) (dense: (1/K) Σ_k (ā_kᵀ L ā_k)(g_kᵀ R g_k)) and
 * ‖L ⊗ R‖ = ‖L‖‖R‖. */
double kfac_fisher_error_kron(const struct kfac_fisher_block *b, const double *L, const double *R,
                              double *work);

/* ‖F − diag(F)‖_F / ‖F‖_F, with diag(F) = (1/K) Σ_k X_k ⊙ X_k (dense: (1/K)(g ⊙ g)ᵀ(ā ⊙ ā)). */
double kfac_fisher_error_diag(const struct kfac_fisher_block *b, double *work);

/* The block of F coupling two consecutive layers over the same K cases, never formed:
 * F_12 = (1/K) Σ_k vec(X¹_k) vec(X²_k)ᵀ = (1/K) Σ_k (ā¹_k ā²_kᵀ) ⊗ (g¹_k g²_kᵀ) for b1 (layer
 * i) and b2 (layer i+1) with the cases in the same rows, against block-tridiagonal
 * K-FAC's model of it, Ā_12 ⊗ G_12 with Ā_12 = (1/K) Σ_k ā¹_k ā²_kᵀ and G_12 = (1/K) Σ_k
 * g¹_k g²_kᵀ: ‖F_12 − Ā_12 ⊗ G_12‖_F / ‖F_12‖_F (0 when F_12 = 0). Needs the blocks' K,
 * sizes, A and G only; dense layers (T = 1) only. work: kfac_fisher_cross_work_size(). */
double kfac_fisher_error_cross(const struct kfac_fisher_block *b1,
                               const struct kfac_fisher_block *b2, double *work);

/* Doubles of the work space kfac_fisher_error_cross() needs for K cases of layers of sizes
 * n_a1, n_g1 and n_a2, n_g2. */
size_t kfac_fisher_cross_work_size(int K, int n_a1, int n_g1, int n_a2, int n_g2);

/* The approximations the Fisher study compares (the K-FOC paper's Figure 1). */
enum kfac_fisher_method {
    KFAC_FISHER_DIAG,           /* diag(F) */
    KFAC_FISHER_KFAC,           /* Ā ⊗ G of all the cases */
    KFAC_FISHER_KFOC_APPROX,    /* (Σ_p w_p L_p) ⊗ (Σ_p w_p R_p) over the batches' fits */
    KFAC_FISHER_KFOC_RUNNING,   /* the running fit over the batches' fits */
    KFAC_FISHER_METHODS
};

/* Doubles of the work space kfac_fisher_batch_errors() needs. */
size_t kfac_fisher_batches_work_size(int K, int B, int T, int n_a, int n_g);

/* The relative Frobenius errors against the block b of K cases (initialised by
 * kfac_fisher_block_init()) of each enum kfac_fisher_method (K-FAC: KFC's |T| Ω̂ ⊗ Γ̂ for a
 * convolution), when the cases are taken in P batches of B consecutive rows (the last may
 * be shorter): each batch p of n_p cases gets its own K-FOC fit L_p ⊗ R_p of its block's
 * mean (Algorithm 2 from I with the factor of side `side` at unit norm; max_iter, tol),
 * of weight w_p = n_p/K in F; K-FOC_approx is (the plain mean of the P unit-norm factors)
 * ⊗ (Σ_p w_p times the scaled ones), REFERENCE.md §7 (independence across batches);
 * K-FOC_running replaces its fit by the best Kronecker approximation of
 * (1 − w) L̂ ⊗ R̂ + w L_p ⊗ R_p with w = n_p/(cases so far), which for equal batches is the
 * paper's (p−1)/p and 1/p. The diagonal and K-FAC do not depend on B or side. errors:
 * KFAC_FISHER_METHODS; *info: the batch fits' largest iteration count. */
void kfac_fisher_batch_errors(const struct kfac_fisher_block *b, int B, int side, int max_iter,
                              double tol, double *work, double *errors,
                              struct kfac_kfoc_info *info);

/* Measures, for every layer of a network, how far the diagonal, K-FAC and K-FOC
 * approximations are from the exact Fisher block of K cases whose output gradients are
 * drawn from the model: what the log's Fisher-error columns report. */
struct kfac_fisher_probe {
    int K, n_blocks;
    struct kfac_kept_rows kept; /* this rank's cases, where they span chunks */
    double *A, *G;            /* K·|T| × n_a, × n_g (largest layer): one layer's ā and g */
    double *X;                /* convolutions: K × n_g × n_a per-case gradients */
    double *work;             /* kfac_fisher_batches_work_size() for the largest layer */
    int kfoc_iterations;      /* the largest K-FOC iteration count of the last run */
    int side;                 /* the K-FOC fits' normalised side (enum kfac_kfoc_normalise) */
    struct kfac_comm *comm;   /* the network's ranks, whose cases the probe gathers */
    int *counts;              /* 2 × ranks: each rank's cases, and scratch */
};

/* A probe for K cases whose K-FOC fits keep the factor of side `side` at unit norm; where
 * a rank's share of them is more than net's chunk (max_batch), it forwards them chunk by
 * chunk and keeps their rows. */
struct kfac_fisher_probe *kfac_fisher_probe_new(const struct kfac_net *net, int K, int side);
/* The bytes kfac_fisher_probe_new() allocates for K cases with chunks of `chunk`. */
double kfac_fisher_probe_bytes(const struct kfac_net *net, int K, int chunk);
void kfac_fisher_probe_free(struct kfac_fisher_probe *p);

/* Forward pass of the first min(K, total) cases of the batch b (of several ranks, each
 * its share of them), output gradients sampled from the model (loss, a key from rng; by
 * the cases' places in the batch), a backward pass, every rank's ā and g gathered, then
 * for each layer i with parameters (net->blocks[i]) errors[3i..3i+2] = the relative
 * Frobenius errors of diag(F), Ā ⊗ G (the factors of these cases) and the K-FOC fit
 * (n_max 100, δ 1e-5), the same on every rank. Overwrites the network's buffers, not its
 * parameters. */
void kfac_fisher_probe_run(struct kfac_fisher_probe *p, struct kfac_net *net, enum kfac_loss loss,
                           const struct kfac_batch *batch, struct kfac_rng *rng, double *errors);

#endif