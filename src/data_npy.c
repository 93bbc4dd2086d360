/*
 * data_npy.c: the NPY reader (NumPy's .npy format, versions 1–3): float32, float64 and
 * uint8 arrays in C order, either byte order. The header is a Python dict literal with
 * 'descr', 'fortran_order' and 'shape'. Read through zlib, so .npy.gz works too. And a
 * writer of version 1.0 files, for what the Fisher study exports.
 */
#include "data_read.h"
#include "kfac/data.h"
#include "kfac/file.h"
#include "kfac/mat.h"
#include "kfac/status.h"

#include <ctype.h>
#include <stdio.h>
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* The text after 'key': in the header dict, or NULL. */
static const char *dict_value(const char *hdr, const char *key)
{
    char pat[32];
    snprintf(pat, sizeof pat, "'%s'", key);
    const char *p = strstr(hdr, pat);
    if (!p)
        return NULL;
    p += strlen(pat);
    while (isspace((unsigned char)*p))
        p++;
    if (*p != ':')
        return NULL;
    p++;
    while (isspace((unsigned char)*p))
        p++;
    return p;
}

static int parse_header(const char *path, const char *hdr, struct kfac_array *out, char *kind,
                        size_t *elem, int *big_endian)
{
    const char *d = dict_value(hdr, "descr"), *fo = dict_value(hdr, "fortran_order"),
               *sh = dict_value(hdr, "shape");
    if (!d || !fo || !sh || (*d != '\'' && *d != '"'))
        return kfac_error(KFAC_EFORMAT, "%s: NPY header lacks descr, fortran_order or shape: %s",
                          path, hdr);
    char descr[16] = {0};
    size_t len = strcspn(d + 1, "'\"");
    if (len >= sizeof descr)
        len = sizeof descr - 1;
    memcpy(descr, d + 1, len);
    if (strcmp(descr, "<f4") == 0 || strcmp(descr, ">f4") == 0)
        *kind = 'f', *elem = 4;
    else if (strcmp(descr, "<f8") == 0 || strcmp(descr, ">f8") == 0)
        *kind = 'f', *elem = 8;
    else if (strcmp(descr, "|u1") == 0 || strcmp(descr, "<u1") == 0 || strcmp(descr, ">u1") == 0)
        *kind = 'u', *elem = 1;
    else
        return kfac_error(KFAC_EFORMAT,
                          "%s: NPY dtype '%s' is not supported (expected float32 '<f4', float64 "
                          "'<f8' or uint8 '|u1')",
                          path, descr);
    *big_endian = descr[0] == '>';
    if (strncmp(fo, "False", 5) != 0)
        return kfac_error(KFAC_EFORMAT,
                          "%s: the array is in Fortran order; save it in C order "
                          "(numpy.ascontiguousarray) and try again",
                          path);
    if (*sh != '(')
        return kfac_error(KFAC_EFORMAT, "%s: NPY shape is not a tuple", path);
    const char *p = sh + 1;
    out->ndim = 0;
    for (;;) {
        while (isspace((unsigned char)*p) || *p == ',')
            p++;
        if (*p == ')')
            break;
        if (out->ndim == KFAC_MAX_DIMS)
            return kfac_error(KFAC_EFORMAT, "%s: more than %d dimensions", path, KFAC_MAX_DIMS);
        char *end;
        errno = 0;
        unsigned long long v = strtoull(p, &end, 10);
        if (end == p || errno || *p == '-')
            return kfac_error(KFAC_EFORMAT, "%s: bad NPY shape at '%.20s'", path, p);
        out->dims[out->ndim++] = (size_t)v;
        p = end;
    }
    if (out->ndim == 0)
        return kfac_error(KFAC_EFORMAT, "%s: a 0-dimensional NPY array holds no cases", path);
    return 0;
}

int kfac_npy_read(const char *path, struct kfac_array *out)
{
    memset(out, 0, sizeof *out);
    gzFile f;
    int rc = kfac_gz_open(path, &f);
    if (rc)
        return rc;
    unsigned char pre[10];
    char *hdr = NULL;
    if ((rc = kfac_gz_read_exact(f, path, pre, 10, "NPY preamble")))
        goto fail;
    if (memcmp(pre, "\x93NUMPY", 6) != 0 || pre[6] < 1 || pre[6] > 3) {
        rc = kfac_error(KFAC_EFORMAT, "%s: not an NPY file (expected the magic \\x93NUMPY and "
                                      "format version 1, 2 or 3)",
                        path);
        goto fail;
    }
    size_t hlen = pre[8] | (size_t)pre[9] << 8;
    if (pre[6] >= 2) {
        unsigned char more[2];
        if ((rc = kfac_gz_read_exact(f, path, more, 2, "NPY header length")))
            goto fail;
        hlen |= (size_t)more[0] << 16 | (size_t)more[1] << 24;
    }
    if (hlen > (1u << 20)) {
        rc = kfac_error(KFAC_EFORMAT, "%s: NPY header of %zu bytes is implausibly long", path, hlen);
        goto fail;
    }
    hdr = kfac_xmalloc(hlen + 1);
    if ((rc = kfac_gz_read_exact(f, path, hdr, hlen, "NPY header")))
        goto fail;
    hdr[hlen] = 0;
    char kind = 0;
    size_t elem = 1, bytes;
    int big = 0;
    if ((rc = parse_header(path, hdr, out, &kind, &elem, &big)) ||
        (rc = kfac_checked_size(path, out->dims, out->ndim, elem, &bytes)))
        goto fail;
    free(hdr);
    unsigned char *raw;
    if ((rc = kfac_gz_read_payload(f, path, bytes, &raw)))
        return rc;
    size_t n = bytes / elem;
    out->data = kfac_floats_new(n);
    for (size_t i = 0; i < n; i++) {
        unsigned char b[8];
        memcpy(b, raw + i * elem, elem);
        if (big)
            for (size_t j = 0; j < elem / 2; j++) {
                unsigned char t = b[j];
                b[j] = b[elem - 1 - j];
                b[elem - 1 - j] = t;
            }
        if (kind == 'u') {
            out->data[i] = b[0];
        } else if (elem == 4) {
            float v;
            memcpy(&v, b, 4);
            out->data[i] = v;
        } else {
            double v;
            memcpy(&v, b, 8);
            out->data[i] = (float)v;
        }
    }
    free(raw);
    out->uint8 = kind == 'u';
    out->integral = out->uint8;
    return 0;
fail:
    free(hdr);
    gzclose(f);
    return rc;
}

int kfac_npy_write(const char *path, const char *descr, int ndim, const size_t *dims,
                   const void *data, size_t elem_size)
{
    /* Version 1.0: magic, version, header length (uint16 LE), the dict padded with spaces
     * and a newline so that the data start on a multiple of 64. */
    char dict[256], shape[160];
    size_t n = 1, used = 0;
    for (int i = 0; i < ndim; i++) {
        used += (size_t)snprintf(shape + used, sizeof shape - used, "%zu%s", dims[i],
                                 ndim == 1 ? "," : i + 1 < ndim ? ", " : "");
        n *= dims[i];
    }
    int len = snprintf(dict, sizeof dict, "{'descr': '%s', 'fortran_order': False, 'shape': (%s), }",
                       descr, shape);
    size_t total = 10 + (size_t)len + 1, pad = (64 - total % 64) % 64;
    char header[10 + sizeof dict + 64];
    memcpy(header, "\x93NUMPY\x01\x00", 8);
    size_t hlen = (size_t)len + pad + 1;
    header[8] = (char)(hlen & 0xff);
    header[9] = (char)(hlen >> 8);
    memcpy(header + 10, dict, (size_t)len);
    memset(header + 10 + len, ' ', pad);
    header[10 + len + pad] = '\n';
    char *tmp;
    int fd = kfac_file_temp(path, "the NPY file", &tmp);
    if (fd < 0)
        return KFAC_EIO;
    FILE *f = fdopen(fd, "wb");
    if (!f)
        close(fd);
    int ok = f && fwrite(header, 1, 10 + hlen, f) == 10 + hlen &&
             fwrite(data, elem_size, n, f) == n && fflush(f) == 0 && fsync(fileno(f)) == 0;
    if (f && fclose(f) != 0)
        ok = 0;
    return kfac_file_commit(tmp, path, "the NPY file", ok ? 0 : errno ? errno : EIO);
}
