/*
 * data_read.c: bounded, truncation-aware reading through zlib (see data_read.h).
 */
#include "data_read.h"
#include "kfac/status.h"

#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int kfac_data_open_error(const char *path, int err)
{
    return kfac_error(KFAC_EIO, "%s: cannot open: %s%s", path,
                      err ? strerror(err) : "out of memory",
                      err == ENOENT ? " (the scripts in data/ fetch or make the data sets: see "
                                      "data/README.md)"
                                    : "");
}

int kfac_gz_open(const char *path, gzFile *out)
{
    errno = 0;
    *out = gzopen(path, "rb");
    if (!*out)
        return kfac_data_open_error(path, errno);
    return 0;
}

int kfac_gz_read_exact(gzFile f, const char *path, void *buf, size_t n, const char *what)
{
    int got = gzread(f, buf, (unsigned)n);
    if (got < 0) {
        int zerr;
        const char *msg = gzerror(f, &zerr);
        return kfac_error(KFAC_EFORMAT, "%s: cannot read the %s: %s", path, what, msg);
    }
    if ((size_t)got != n)
        return kfac_error(KFAC_EFORMAT, "%s: file ends inside the %s (%d of %zu bytes)", path, what,
                          got, n);
    return 0;
}

int kfac_gz_read_payload(gzFile f, const char *path, size_t bytes, unsigned char **out)
{
    size_t cap = bytes < (1u << 20) ? bytes : (1u << 20), have = 0;
    unsigned char *buf = kfac_xmalloc(cap);
    int rc = 0;
    while (have < bytes) {
        if (have == cap) {
            cap = cap > bytes / 2 ? bytes : cap * 2;
            buf = kfac_xrealloc(buf, cap);
        }
        size_t want = cap - have;
        if (want > (1u << 30))
            want = 1u << 30;
        int got = gzread(f, buf + have, (unsigned)want);
        if (got < 0) {
            int zerr;
            rc = kfac_error(KFAC_EFORMAT, "%s: cannot read the data: %s", path, gzerror(f, &zerr));
            break;
        }
        if (got == 0) {
            rc = kfac_error(KFAC_EFORMAT,
                            "%s: truncated: the header promises %zu bytes of data, the file has %zu",
                            path, bytes, have);
            break;
        }
        have += (size_t)got;
    }
    if (rc == 0) {
        unsigned char extra;
        int got = gzread(f, &extra, 1);
        if (got > 0)
            rc = kfac_error(KFAC_EFORMAT,
                            "%s: more data than the header's dimensions describe (%zu bytes)",
                            path, bytes);
    }
    /* A truncated gzip stream may only show here (Z_BUF_ERROR). */
    int zrc = gzclose(f);
    if (rc == 0 && zrc != Z_OK)
        rc = kfac_error(KFAC_EFORMAT, "%s: the gzip stream is truncated or corrupt (zlib error %d)",
                        path, zrc);
    if (rc) {
        free(buf);
        return rc;
    }
    *out = buf;
    return 0;
}

int kfac_checked_size(const char *path, const size_t *dims, int ndim, size_t elem_size,
                      size_t *out)
{
    size_t total = elem_size;
    for (int i = 0; i < ndim; i++) {
        if (dims[i] != 0 && total > SIZE_MAX / dims[i])
            return kfac_error(KFAC_EFORMAT, "%s: the dimensions overflow the address space", path);
        total *= dims[i];
    }
    *out = total;
    return 0;
}
