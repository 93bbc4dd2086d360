/*
 * data_read.h: private helpers of the data readers: for the IDX and NPY readers, reading a
 * payload of known size from a (possibly gzip-compressed) stream without trusting the
 * header; for the .mat reader, the walk of a file's tags before libmatio reads it.
 */
#ifndef KFAC_DATA_READ_H
#define KFAC_DATA_READ_H

#include <stddef.h>
#include <stdint.h>
#include <zlib.h>

/* KFAC_EIO for a data file that cannot be opened (errno err); a missing file's message
 * points at the data scripts. */
int kfac_data_open_error(const char *path, int err);

/* Opens path for reading through zlib (raw files pass through); errors name the path. */
int kfac_gz_open(const char *path, gzFile *out);

/* Reads exactly n bytes into buf; a short read names what was being read. */
int kfac_gz_read_exact(gzFile f, const char *path, void *buf, size_t n, const char *what);

/* Reads a payload of exactly `bytes` bytes into a new buffer, growing it as data arrives
 * so a lying header cannot make it allocate more than the file holds; fails on a short
 * payload or trailing bytes. Closes f in every case and reports a truncated gzip stream. */
int kfac_gz_read_payload(gzFile f, const char *path, size_t bytes, unsigned char **out);

/* prod(dims) · elem_size, or KFAC_EFORMAT when it overflows size_t. */
int kfac_checked_size(const char *path, const size_t *dims, int ndim, size_t elem_size,
                      size_t *out);

/* 0 when every size that path's tags claim fits in what holds them (data_mat_check.c),
 * else KFAC_EFORMAT naming the variable's byte offset. Version 5 and 4 files are walked the
 * way libmatio's Mat_Open tells them apart (the 128-byte header's version: 0x0100 for 5,
 * 0x0200 for 7.3, anything else 4); version 7.3 (HDF5) is left to libmatio. size: the
 * file's bytes. */
int kfac_mat_check(const char *path, uint64_t size);

#endif
