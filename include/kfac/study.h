/*
 * study.h: experiments on the Fisher of a trained network, run by kfac-train instead of
 * a plain training run.
 *
 * The Fisher study (kfac-train --fisher-study) repeats the K-FOC paper's Figure 1
 * experiment (Schnaus, Lee & Triebel 2021, §4.1): for each of study.seeds seeds it trains
 * the configured network from a fresh initialisation, draws one target per training case
 * from the model, and measures, for every layer with parameters within study.layers (all
 * by default; a convolution's block holds its per-case gradients summed over positions),
 * and for every batch size of
 * study.batch_sizes, the relative Frobenius error against the exact Fisher block of the
 * whole training set of the diagonal, K-FAC, K-FOC_approx and K-FOC_running
 * approximations (kfac_fisher_batch_errors()); and for each pair of consecutive dense layers,
 * the error of block-tridiagonal K-FAC's Ā_{i,i+1} ⊗ G_{i,i+1} against the Fisher block
 * coupling them (kfac_fisher_error_cross()).
 */
#ifndef KFAC_STUDY_H
#define KFAC_STUDY_H

#include "kfac/config.h"
#include "kfac/train.h"
#include <stdio.h>

/* Runs the Fisher study that c describes. The table (one row per seed and batch size:
 * seed, batch_size, batches, the training metric, then <method>_<layer> for each layer and
 * method diag, kfac, kfoc_approx, kfoc_running (layers numbered as in the network), then
 * tridiag_<i>_<i+1> for each pair of consecutive dense layers, then kfoc_iterations) goes to c->log_file
 * (standard output when NULL), which is refused if it exists unless opts->force. Unless
 * opts->quiet, progress and a summary table of mean [min, max] per layer go to summary.
 * Configuration and data errors come before any training: *started is 0 after them, 1
 * after a failure once training began. */
int kfac_fisher_study(const struct kfac_config *c, const struct kfac_run_opts *opts,
                      FILE *summary, int *started);

/* The most parameters the Fisher pictures take (one pixel per pair: 4000² pixels). */
#define KFAC_PICTURE_MAX 4000
#define KFAC_PICTURE_MAX_LAYERS 64

/* The Fisher pictures (kfac-train --fisher-pictures DIR; the K-FAC paper's Figure 1): trains
 * the configured network, then for layers study.heatmap_layers over the first
 * study.heatmap_cases training cases writes DIR/fisher-exact.png (|F|, the exact Fisher
 * of those layers, expectation over the model's targets through the loss's output-Fisher
 * columns), DIR/fisher-kfac.png (its block-diagonal K-FAC approximation, Ā ⊗ G per layer),
 * DIR/fisher-difference.png (|F − F̃|) and DIR/fisher-kfac-tridiag.png (block-tridiagonal
 * K-FAC's: Ā_{i,i+1} ⊗ G_{i,i+1} added beside the diagonal), one pixel per entry, white 0
 * to black at the 99th percentile of |F|, layer borders dashed in red. Existing pictures are refused unless
 * opts->force. *started as for kfac_fisher_study(). */
int kfac_fisher_pictures(const struct kfac_config *c, const struct kfac_run_opts *opts,
                         const char *dir, FILE *summary, int *started);

/* The Kronecker product A ⊗ B (A: na × ma, B: nb × mb) as a block of M (leading dimension
 * ld) at row r0, column c0, in K-FAC's vec order (columns stacked):
 * M[r0 + p·nb + i][c0 + q·mb + k] = A[p][q] B[i][k], so that for a square block
 * (A ⊗ B) vec(V) = vec(B V Aᵀ). */
void kfac_kron_block(int na, int ma, const double *A, int nb, int mb, const double *B, double *M,
                     size_t ld, int r0, int c0);

/* Parses "FIRST-LAST" or "N" (1-based, within 1 … n_layers) into 0-based first and last;
 * an error names the key. */
int kfac_parse_layer_range(const char *key, const char *spec, int n_layers, int *first,
                           int *last);

#endif
