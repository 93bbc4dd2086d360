/*
 * data_idx.c: the IDX reader (the MNIST file format). The header is two zero bytes, a
 * type code, the number of dimensions, then each dimension as a big-endian uint32; the
 * data follow big-endian. Compressed (.gz) and raw files are both read through zlib;
 * the writer makes gzip-compressed unsigned-byte files.
 */
#include "data_read.h"
#include "kfac/data.h"
#include "kfac/file.h"
#include "kfac/mat.h"
#include "kfac/status.h"

#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static uint64_t load_be(const unsigned char *p, int n)
{
    uint64_t v = 0;
    for (int i = 0; i < n; i++)
        v = v << 8 | p[i];
    return v;
}

static double idx_value(int type, const unsigned char *p)
{
    switch (type) {
    case 0x08: return p[0];
    case 0x09: return (double)(int8_t)p[0];
    case 0x0B: return (double)(int16_t)load_be(p, 2);
    case 0x0C: return (double)(int32_t)load_be(p, 4);
    case 0x0D: {
        uint32_t b = (uint32_t)load_be(p, 4);
        float f;
        memcpy(&f, &b, 4);
        return f;
    }
    default: {
        double d;
        uint64_t u = load_be(p, 8);
        memcpy(&d, &u, 8);
        return d;
    }
    }
}

int kfac_idx_read(const char *path, struct kfac_array *out)
{
    memset(out, 0, sizeof *out);
    gzFile f;
    int rc = kfac_gz_open(path, &f);
    if (rc)
        return rc;
    unsigned char magic[4], dimbuf[4 * KFAC_MAX_DIMS];
    if ((rc = kfac_gz_read_exact(f, path, magic, 4, "IDX header"))) {
        gzclose(f);
        return rc;
    }
    size_t elem;
    switch (magic[2]) {
    case 0x08: case 0x09: elem = 1; break;
    case 0x0B: elem = 2; break;
    case 0x0C: case 0x0D: elem = 4; break;
    case 0x0E: elem = 8; break;
    default: elem = 0;
    }
    if (magic[0] || magic[1] || !elem || magic[3] < 1 || magic[3] > KFAC_MAX_DIMS) {
        gzclose(f);
        return kfac_error(KFAC_EFORMAT,
                          "%s: not an IDX file (magic %02x %02x %02x %02x; expected 00 00, a type "
                          "code 08/09/0b/0c/0d/0e and 1 to %d dimensions)",
                          path, magic[0], magic[1], magic[2], magic[3], KFAC_MAX_DIMS);
    }
    int type = magic[2], ndim = magic[3];
    if ((rc = kfac_gz_read_exact(f, path, dimbuf, 4 * (size_t)ndim, "IDX dimensions"))) {
        gzclose(f);
        return rc;
    }
    out->ndim = ndim;
    for (int i = 0; i < ndim; i++)
        out->dims[i] = (size_t)load_be(dimbuf + 4 * i, 4);
    size_t bytes;
    if ((rc = kfac_checked_size(path, out->dims, ndim, elem, &bytes))) {
        gzclose(f);
        return rc;
    }
    unsigned char *raw;
    if ((rc = kfac_gz_read_payload(f, path, bytes, &raw)))
        return rc;
    size_t n = bytes / elem;
    out->data = kfac_floats_new(n);
    for (size_t i = 0; i < n; i++)
        out->data[i] = (float)idx_value(type, raw + i * elem);
    out->integral = type != 0x0D && type != 0x0E;
    out->uint8 = type == 0x08;
    free(raw);
    return 0;
}

void kfac_array_free(struct kfac_array *a)
{
    if (!a)
        return;
    kfac_floats_free(a->data);
    a->data = NULL;
}

int kfac_idx_write_bytes(const char *path, int ndim, const size_t *dims, const unsigned char *data)
{
    if (ndim < 1 || ndim > KFAC_MAX_DIMS)
        return kfac_error(KFAC_EINVAL, "%s: an IDX file has 1 to %d dimensions, not %d", path,
                          KFAC_MAX_DIMS, ndim);
    unsigned char hdr[4 + 4 * KFAC_MAX_DIMS] = {0, 0, 0x08, (unsigned char)ndim};
    size_t n = 1;
    for (int i = 0; i < ndim; i++) {
        if (dims[i] > UINT32_MAX)
            return kfac_error(KFAC_EINVAL, "%s: dimension %zu does not fit an IDX header", path,
                              dims[i]);
        for (int b = 0; b < 4; b++)
            hdr[4 + 4 * i + b] = (unsigned char)(dims[i] >> (24 - 8 * b));
        n *= dims[i];
    }
    /* Written beside the target and renamed over it only when complete, so a failure
     * never leaves a truncated file under the final name. */
    char *tmp;
    int fd = kfac_file_temp(path, "the IDX file", &tmp);
    if (fd < 0)
        return KFAC_EIO;
    gzFile f = gzdopen(fd, "wb");
    if (!f)
        close(fd);
    int ok = f != NULL && gzwrite(f, hdr, 4 + 4 * (unsigned)ndim) == 4 + 4 * ndim;
    for (size_t off = 0; ok && off < n; off += 1u << 30) {
        unsigned chunk = (unsigned)(n - off < (1u << 30) ? n - off : (1u << 30));
        ok = gzwrite(f, data + off, chunk) == (int)chunk;
    }
    if (f && gzclose(f) != Z_OK)
        ok = 0;
    return kfac_file_commit(tmp, path, "the IDX file", ok ? 0 : errno ? errno : EIO);
}
