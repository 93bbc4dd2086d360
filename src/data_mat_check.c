/*
 * data_mat_check.c: a walk of a MATLAB .mat file's element tags before libmatio reads it.
 * libmatio allocates, and clears, what a tag claims before it reads (a variable name that
 * claimed 4 GB in a file of 268 bytes had it touch 4 GB), so every claim is held to what
 * holds it: in a version 5 file, a variable to the bytes left in the file, a compressed
 * variable's contents to 1032 times its compressed size (zlib's largest ratio), a
 * sub-element to the bytes left in its variable, the cells or fields of a cell array,
 * struct or function handle to one tag (8 bytes) each, and nesting to MAT5_DEPTH; in a
 * version 4 file, each matrix's name and data to the bytes left. The layouts are
 * MathWorks' "MAT-File Format".
 */
#include "data_read.h"
#include "kfac/status.h"

#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/types.h>
#include <zlib.h>

enum { MI_UINT32 = 6, MI_MATRIX = 14, MI_COMPRESSED = 15 };
enum { MX_CELL = 1, MX_STRUCT = 2, MX_OBJECT = 3, MX_FUNCTION = 16 };
enum { MAT5_DEPTH = 32 };

/* Where the walk reads: the file itself, or a compressed variable's zlib stream in it. */
struct mat5_src {
    FILE *f;
    int big;          /* the file is big-endian */
    z_stream *z;      /* NULL: the file itself */
    uint64_t in_left; /* compressed bytes not yet handed to zlib */
    unsigned char in[16384];
    const char *path;
    uint64_t at; /* the variable's offset, for messages */
};

/* One element: its tag, and how much of its data has been read. */
struct mat5_elem {
    uint32_t type, len, done;
    int small; /* data in the tag (up to 4 bytes) */
    unsigned char data[4];
};

/* KFAC_EFORMAT: "PATH: the THING at byte AT " and the formatted rest. */
static int mat_verror(const char *path, const char *thing, uint64_t at, const char *fmt,
                      va_list ap)
{
    char what[160];
    vsnprintf(what, sizeof what, fmt, ap);
    return kfac_error(KFAC_EFORMAT, "%s: the %s at byte %" PRIu64 " %s", path, thing, at, what);
}

__attribute__((format(printf, 2, 3))) static int mat5_error(const struct mat5_src *s,
                                                            const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int rc = mat_verror(s->path, "variable", s->at, fmt, ap);
    va_end(ap);
    return rc;
}

__attribute__((format(printf, 3, 4))) static int mat4_error(const char *path, uint64_t at,
                                                            const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int rc = mat_verror(path, "matrix", at, fmt, ap);
    va_end(ap);
    return rc;
}

/* Inflates exactly k bytes into dst. */
static int mat5_inflate(struct mat5_src *s, unsigned char *dst, size_t k)
{
    s->z->next_out = dst;
    s->z->avail_out = (uInt)k;
    while (s->z->avail_out > 0) {
        if (s->z->avail_in == 0 && s->in_left > 0) {
            size_t m = s->in_left < sizeof s->in ? (size_t)s->in_left : sizeof s->in;
            if (fread(s->in, 1, m, s->f) != m)
                return mat5_error(s, "ends early");
            s->in_left -= m;
            s->z->next_in = s->in;
            s->z->avail_in = (uInt)m;
        }
        int rc = inflate(s->z, Z_NO_FLUSH);
        if ((rc == Z_STREAM_END && s->z->avail_out > 0) ||
            (rc == Z_BUF_ERROR && s->z->avail_in == 0 && s->in_left == 0))
            return mat5_error(s, "holds less compressed data than its tags claim");
        if (rc != Z_OK && rc != Z_STREAM_END && rc != Z_BUF_ERROR)
            return mat5_error(s, "is not a valid zlib stream");
    }
    return 0;
}

/* Reads n bytes into buf, or skips them where buf is NULL; a source that ends first is an
 * error. */
static int mat5_read(struct mat5_src *s, void *buf, uint64_t n)
{
    if (!s->z && !buf)
        return n && fseeko(s->f, (off_t)n, SEEK_CUR) ? mat5_error(s, "ends early") : 0;
    unsigned char scratch[4096];
    while (n > 0) {
        size_t k = buf || n < sizeof scratch ? (size_t)n : sizeof scratch;
        unsigned char *dst = buf ? buf : scratch;
        if (s->z) {
            int rc = mat5_inflate(s, dst, k);
            if (rc)
                return rc;
        } else if (fread(dst, 1, k, s->f) != k)
            return mat5_error(s, "ends early");
        n -= k;
    }
    return 0;
}

/* A 32-bit word of the file, in its byte order. */
static uint32_t mat_u32(const unsigned char *p, int big)
{
    if (big)
        return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
    return (uint32_t)p[3] << 24 | (uint32_t)p[2] << 16 | (uint32_t)p[1] << 8 | p[0];
}

static uint32_t mat5_u32(const struct mat5_src *s, const unsigned char *p)
{
    return mat_u32(p, s->big);
}

/* The next element's tag, within *left bytes (which lose the tag). */
static int mat5_next(struct mat5_src *s, uint64_t *left, struct mat5_elem *e)
{
    unsigned char t[8];
    if (*left < 8)
        return mat5_error(s, "ends inside a tag");
    int rc = mat5_read(s, t, 8);
    if (rc)
        return rc;
    *left -= 8;
    e->type = mat5_u32(s, t);
    e->done = 0;
    e->small = (e->type >> 16) != 0;
    if (e->small) {
        e->len = e->type >> 16;
        e->type &= 0xffff;
        memcpy(e->data, t + 4, 4);
        return e->len > 4 ? mat5_error(s, "holds a small element of more than 4 bytes") : 0;
    }
    e->len = mat5_u32(s, t + 4);
    if (e->len <= *left)
        return 0;
    return mat5_error(s, "holds an element of %" PRIu32 " bytes where %" PRIu64 " are left",
                      e->len, *left);
}

/* The element's next 4 bytes of data as a number (0 when it has no more). */
static int mat5_word(struct mat5_src *s, struct mat5_elem *e, uint32_t *out)
{
    unsigned char w[4];
    *out = 0;
    if (e->len - e->done < 4)
        return 0;
    int rc = e->small ? (memcpy(w, e->data + e->done, 4), 0) : mat5_read(s, w, 4);
    e->done += 4;
    *out = mat5_u32(s, w);
    return rc;
}

/* Skips the rest of the element's data and its padding to 8 bytes (within *left). */
static int mat5_end(struct mat5_src *s, uint64_t *left, const struct mat5_elem *e)
{
    if (e->small)
        return 0;
    uint64_t padded = ((uint64_t)e->len + 7) & ~(uint64_t)7;
    if (padded > *left)
        padded = *left;
    *left -= padded;
    return mat5_read(s, NULL, padded - e->done);
}

/* The contents (`left` bytes) of one variable (miMATRIX) whose tag has been read. A nested
 * one is read to its end; an outermost one up to its cells or fields, which is what
 * libmatio's Mat_VarReadInfo reads. */
static int mat5_walk_matrix(struct mat5_src *s, uint64_t left, int depth)
{
    if (depth > MAT5_DEPTH)
        return mat5_error(s, "nests cells or structs more than %d deep", MAT5_DEPTH);
    if (left == 0)
        return 0; /* an empty cell or field */
    struct mat5_elem e;
    uint32_t flags, dim, name_len = 0;
    int rc;
    /* Array flags (the class in the low byte), then the dimensions. libmatio takes the flags
     * to be 8 bytes whatever their tag says, so a tag that says otherwise is refused: the
     * walk would read another class and layout than libmatio does. */
    if ((rc = mat5_next(s, &left, &e)))
        return rc;
    if (e.small || e.type != MI_UINT32 || e.len != 8)
        return mat5_error(s, "has array flags that are not 8 bytes of uint32");
    if ((rc = mat5_word(s, &e, &flags)) || (rc = mat5_end(s, &left, &e)) ||
        (rc = mat5_next(s, &left, &e)))
        return rc;
    int cls = (int)(flags & 0xff);
    uint64_t elems = 1;
    while (e.len - e.done >= 4) {
        if ((rc = mat5_word(s, &e, &dim)))
            return rc;
        elems = dim && elems > UINT64_MAX / dim ? UINT64_MAX : elems * dim;
    }
    /* The name; an object's class name; a struct's or object's field names. */
    if ((rc = mat5_end(s, &left, &e)) || (rc = mat5_next(s, &left, &e)) ||
        (rc = mat5_end(s, &left, &e)))
        return rc;
    uint64_t parts = 0;
    if (cls == MX_OBJECT && ((rc = mat5_next(s, &left, &e)) || (rc = mat5_end(s, &left, &e))))
        return rc;
    if (cls == MX_STRUCT || cls == MX_OBJECT) {
        if ((rc = mat5_next(s, &left, &e)) || (rc = mat5_word(s, &e, &name_len)) ||
            (rc = mat5_end(s, &left, &e)) || (rc = mat5_next(s, &left, &e)))
            return rc;
        if (e.len > 0 && name_len == 0)
            return mat5_error(s, "has field names of length 0");
        uint64_t fields = e.len ? e.len / name_len : 0;
        parts = fields && elems > UINT64_MAX / fields ? UINT64_MAX : elems * fields;
        if ((rc = mat5_end(s, &left, &e)))
            return rc;
    } else if (cls == MX_CELL || cls == MX_FUNCTION)
        parts = elems; /* libmatio reads a function handle's elements as it reads cells */
    if (parts > left / 8)
        return mat5_error(s, "claims more cells or fields than it can hold");
    /* Fewer may follow: libmatio writes no element for an empty cell. */
    for (uint64_t i = 0; i < parts && left > 0; i++) {
        if ((rc = mat5_next(s, &left, &e)))
            return rc;
        if (e.type != MI_MATRIX)
            return mat5_error(s, "holds a cell or field that is not a matrix");
        if ((rc = mat5_walk_matrix(s, e.small ? 0 : e.len, depth + 1)))
            return rc;
        e.done = e.len;
        if ((rc = mat5_end(s, &left, &e)))
            return rc;
    }
    return depth > 0 ? mat5_read(s, NULL, left) : 0;
}

/* The walk over a version 5 file of `size` bytes, f just past its header. */
static int mat5_walk(FILE *f, const char *path, uint64_t size, int big)
{
    struct mat5_src s = {.f = f, .big = big, .path = path};
    int rc = 0;
    for (uint64_t at = 128; !rc && at + 8 <= size;) {
        s.at = at;
        uint64_t left = UINT64_MAX;
        struct mat5_elem e;
        if ((rc = mat5_next(&s, &left, &e)))
            break;
        if (!e.small && e.len > size - at - 8)
            rc = mat5_error(&s, "claims %" PRIu32 " bytes where the file has %" PRIu64, e.len,
                            size - at - 8);
        else if (e.small)
            e.len = 0;
        else if (e.type == MI_MATRIX)
            rc = mat5_walk_matrix(&s, e.len, 0);
        else if (e.type == MI_COMPRESSED) {
            /* Its contents: one miMATRIX, whose tag is held to zlib's ratio. */
            z_stream z = {0};
            int zrc = inflateInit(&z);
            if (zrc != Z_OK)
                return kfac_error(KFAC_EIO, "%s: zlib cannot inflate (%s)", path, zError(zrc));
            s.z = &z;
            s.in_left = e.len;
            uint64_t inner_left = UINT64_MAX;
            struct mat5_elem in;
            rc = mat5_next(&s, &inner_left, &in);
            if (!rc && in.type == MI_MATRIX && !in.small)
                rc = in.len > (uint64_t)e.len * 1032
                         ? mat5_error(&s, "claims %" PRIu32 " bytes, more than its %" PRIu32
                                          " compressed bytes can hold",
                                      in.len, e.len)
                         : mat5_walk_matrix(&s, in.len, 0);
            inflateEnd(&z);
            s.z = NULL;
        }
        /* The next variable; a compressed one is not padded. */
        at += 8 + (e.type == MI_COMPRESSED ? e.len : ((uint64_t)e.len + 7) & ~(uint64_t)7);
        if (!rc && at < size && fseeko(f, (off_t)at, SEEK_SET))
            rc = mat5_error(&s, "cannot be skipped");
    }
    return rc;
}

/* A version 4 matrix type, MOPT in decimal: M the byte order (0 to 4), O zero, P the
 * precision (0 to 5), T full, text or sparse (0 to 2). */
static int mat4_type_ok(uint32_t t)
{
    return t < 5000 && t / 100 % 10 == 0 && t / 10 % 10 <= 5 && t % 10 <= 2;
}

/* The same for a version 4 file: each matrix a header of five int32 (type, rows, columns,
 * imaginary flag, name length), then its name and data, which must fit in the file. The
 * byte order is this machine's unless the first type reads as one only in the other, as
 * libmatio decides; a file whose first type reads in neither is libmatio's to refuse. */
static int mat4_walk(FILE *f, const char *path, uint64_t size)
{
    static const unsigned elem[6] = {8, 4, 4, 2, 2, 1};
    const uint16_t probe = 1;
    int big = *(const unsigned char *)&probe == 0;
    unsigned char h[20];
    for (uint64_t at = 0; at + 20 <= size;) {
        if (fseeko(f, (off_t)at, SEEK_SET) || fread(h, 1, 20, f) != 20)
            return mat4_error(path, at, "ends early");
        if (at == 0 && !mat4_type_ok(mat_u32(h, big))) {
            if (!mat4_type_ok(mat_u32(h, !big)))
                return 0;
            big = !big;
        }
        uint32_t w[5];
        for (int i = 0; i < 5; i++)
            w[i] = mat_u32(h + 4 * i, big);
        if (!mat4_type_ok(w[0]))
            return mat4_error(path, at, "has the unknown type %" PRIu32, w[0]);
        if ((int32_t)w[1] < 0 || (int32_t)w[2] < 0)
            return mat4_error(path, at, "has negative dimensions");
        /* rows · columns < 2⁶², times at most 16 bytes: held before it can wrap. */
        uint64_t cells = (uint64_t)w[1] * w[2], per = elem[w[0] / 10 % 10] * (w[3] ? 2 : 1);
        uint64_t has = size - at - 20;
        if (w[4] > has || cells > (has - w[4]) / per) {
            uint64_t claim = cells > (UINT64_MAX - w[4]) / per ? UINT64_MAX : w[4] + cells * per;
            return mat4_error(path, at, "claims %" PRIu64 " bytes where the file has %" PRIu64,
                              claim, has);
        }
        at += 20 + w[4] + cells * per;
    }
    return 0;
}

int kfac_mat_check(const char *path, uint64_t size)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return kfac_data_open_error(path, errno);
    unsigned char h[128];
    int rc = 0;
    unsigned version = 0;
    int big = 0;
    if (fread(h, 1, sizeof h, f) == sizeof h) {
        big = h[126] == 'M' && h[127] == 'I';
        int little = h[126] == 'I' && h[127] == 'M';
        if (big || little)
            version = big ? (unsigned)h[124] << 8 | h[125] : (unsigned)h[125] << 8 | h[124];
    }
    if (version == 0x0100)
        rc = mat5_walk(f, path, size, big);
    else if (version != 0x0200)
        rc = mat4_walk(f, path, size);
    fclose(f);
    return rc;
}
