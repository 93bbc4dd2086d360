/*
 * export.h: what a Fisher measurement used, written for outside checks: the study's runs
 * (study.export) and the training log's probe (log.fisher_export) write, in DIR/SUB/, NumPy
 * .npy files in the machine's byte order from which anyone can recompute their figures:
 *     inputs.npy        float32 n × d_in   the cases, in the order the measurement took them
 *     order.npy         int64 n            each case's row in the training set
 *     output_grads.npy  float32 n × d_out  ∂ℓ/∂s at the output for the target drawn from
 *                                          the model for each case
 *     weights-L.npy     float32 d_out × (d_in + 1), bias last: layer L's parameters
 */
#ifndef KFAC_EXPORT_H
#define KFAC_EXPORT_H

#include "kfac/net.h"
#include <stddef.h>

/* Makes DIR (key names it in messages) and DIR/SUB; an existing DIR/SUB is refused unless
 * force. */
int kfac_export_dir(const char *dir, const char *sub, const char *key, int force);

/* Writes the files above into DIR/SUB for the first n cases X (n × net->d_in) whose rows
 * in the training set are order (n), with their sampled output gradients out_grads
 * (n × net->d_out) and net's weights. */
int kfac_export_measurement(const char *dir, const char *sub, const struct kfac_net *net,
                            const float *X, const float *out_grads, size_t n,
                            const size_t *order);

#endif
