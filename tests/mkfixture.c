/*
 * mkfixture.c: writes small synthetic data sets for the command-line tests, so they need
 * no downloaded data.
 *   mkfixture bars IMAGES.gz LABELS.gz N SEED   N 8×8 images of a horizontal or vertical
 *                                               bar (IDX, gzip), label 0–7 = bar position,
 *                                               +8 when vertical
 *   mkfixture csv FILE N SEED                   regression table x1,x2,x3,y with
 *                                               y = sin(x1) + x2·x3 + small noise
 *   mkfixture blobs FILE.npy K SEED             K 25×25 float32 images (NPY) of three
 *                                               Gaussian blobs each, values in [0, 1]:
 *                                               stand-in sources for kfac-datagen faces
 *   mkfixture ckpt-items CHECKPOINT             "name bytes crc32" of each item of a
 *                                               checkpoint
 *   mkfixture ckpt-diff A B ITEM                max |a − b| / max |a| over the floats of
 *                                               ITEM in two checkpoints: how far two runs'
 *                                               parameters (net.params) are apart
 *   mkfixture ckpt-forge IN OUT ITEM I TYPE V   IN with element I of ITEM set to V, read
 *                                               as TYPE (i64, u64, f64), and the CRC made
 *                                               right again: a forged checkpoint
 */
#include "kfac/data.h"
#include "kfac/rng.h"
#include "kfac/status.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <stdint.h>
#include <string.h>
#include <zlib.h>

static int bars(const char *images, const char *labels, int n, struct kfac_rng *r)
{
    unsigned char *img = calloc((size_t)n * 64, 1), *lab = malloc((size_t)n);
    for (int c = 0; c < n; c++) {
        int pos = (int)kfac_rng_below(r, 8), vertical = (int)kfac_rng_below(r, 2);
        for (int j = 0; j < 8; j++) {
            int px = vertical ? j * 8 + pos : pos * 8 + j;
            img[c * 64 + px] = (unsigned char)(200 + kfac_rng_below(r, 56));
        }
        lab[c] = (unsigned char)(pos + 8 * vertical);
    }
    size_t dims[3] = {(size_t)n, 8, 8};
    int rc = kfac_idx_write_bytes(images, 3, dims, img) || kfac_idx_write_bytes(labels, 1, dims, lab);
    if (rc)
        fprintf(stderr, "mkfixture: %s\n", kfac_last_error());
    free(img);
    free(lab);
    return rc;
}

static int csv(const char *path, int n, struct kfac_rng *r)
{
    FILE *f = fopen(path, "w");
    if (!f)
        return 1;
    fprintf(f, "x1,x2,x3,y\n");
    for (int i = 0; i < n; i++) {
        double a = 4 * kfac_rng_uniform(r) - 2, b = 4 * kfac_rng_uniform(r) - 2,
               c = 4 * kfac_rng_uniform(r) - 2;
        fprintf(f, "%.6f,%.6f,%.6f,%.6f\n", a, b, c, sin(a) + b * c + 0.05 * kfac_rng_normal(r));
    }
    return fclose(f) != 0;
}

static int blobs(const char *path, int k, struct kfac_rng *r)
{
    enum { S = 25 };
    char hdr[118];
    /* The NPY 1.0 header, padded with spaces so that magic + length + header is 128 bytes. */
    int len = snprintf(hdr, sizeof hdr, "{'descr': '<f4', 'fortran_order': False, 'shape': (%d, %d, %d), }", k, S, S);
    memset(hdr + len, ' ', sizeof hdr - (size_t)len);
    hdr[sizeof hdr - 1] = '\n';
    float *img = calloc((size_t)k * S * S, sizeof *img);
    for (int i = 0; i < k; i++)
        for (int b = 0; b < 3; b++) {
            double x = S * kfac_rng_uniform(r), y = S * kfac_rng_uniform(r), w = 2 + 3 * kfac_rng_uniform(r);
            for (int p = 0; p < S * S; p++) {
                double d2 = (p % S - x) * (p % S - x) + (p / S - y) * (p / S - y);
                img[i * S * S + p] += (float)(exp(-d2 / (2 * w * w)) / 3);
            }
        }
    FILE *f = fopen(path, "wb");
    int rc = !f || fwrite("\x93NUMPY\x01\x00\x76\x00", 1, 10, f) != 10 ||
             fwrite(hdr, 1, sizeof hdr, f) != sizeof hdr ||
             fwrite(img, sizeof *img, (size_t)k * S * S, f) != (size_t)k * S * S;
    if (f && fclose(f) != 0)
        rc = 1;
    free(img);
    return rc;
}

/* Lists a checkpoint's items as "name bytes crc32" lines (checkpoint.h's layout), so
 * that tests can compare two checkpoints item by item. */
static int ckpt_items(const char *path)
{
    FILE *f = fopen(path, "rb");
    unsigned char hdr[28];
    uint32_t n, len;
    if (!f || fread(hdr, 1, 28, f) != 28 || fread(&len, 4, 1, f) != 1 || fseek(f, len, SEEK_CUR) ||
        fread(&n, 4, 1, f) != 1)
        return 1;
    for (uint32_t i = 0; i < n; i++) {
        char name[64];
        uint64_t bytes;
        if (fread(&len, 4, 1, f) != 1 || len >= sizeof name || fread(name, 1, len, f) != len ||
            fread(&bytes, 8, 1, f) != 1)
            return 1;
        name[len] = '\0';
        unsigned char *buf = malloc(bytes + 1);
        if (fread(buf, 1, bytes, f) != bytes)
            return 1;
        printf("%s %llu %08lx\n", name, (unsigned long long)bytes,
               crc32(0L, buf, (uInt)bytes));
        free(buf);
    }
    return fclose(f) != 0;
}

/* The bytes of item `name` in checkpoint path (caller frees), or NULL. */
static unsigned char *ckpt_item(const char *path, const char *name, uint64_t *size)
{
    FILE *f = fopen(path, "rb");
    unsigned char hdr[28], *found = NULL;
    uint32_t n, len;
    if (!f || fread(hdr, 1, 28, f) != 28 || fread(&len, 4, 1, f) != 1 || fseek(f, len, SEEK_CUR) ||
        fread(&n, 4, 1, f) != 1)
        n = 0;
    for (uint32_t i = 0; i < n && !found; i++) {
        char item[64];
        uint64_t bytes;
        if (fread(&len, 4, 1, f) != 1 || len >= sizeof item || fread(item, 1, len, f) != len ||
            fread(&bytes, 8, 1, f) != 1)
            break;
        item[len] = '\0';
        if (strcmp(item, name) != 0) {
            if (fseek(f, (long)bytes, SEEK_CUR))
                break;
            continue;
        }
        found = malloc(bytes + 1);
        if (fread(found, 1, bytes, f) != bytes) {
            free(found);
            found = NULL;
        }
        *size = bytes;
    }
    if (f)
        fclose(f);
    return found;
}

/* Prints max |a − b| / max |a| over the floats of item `name` of checkpoints a and b. */
static int ckpt_diff(const char *a, const char *b, const char *name)
{
    uint64_t na = 0, nb = 0;
    unsigned char *pa = ckpt_item(a, name, &na), *pb = ckpt_item(b, name, &nb);
    int rc = !pa || !pb || na != nb;
    if (!rc) {
        double diff = 0, scale = 0;
        for (uint64_t i = 0; i < na / 4; i++) {
            float x, y;
            memcpy(&x, pa + 4 * i, 4);
            memcpy(&y, pb + 4 * i, 4);
            diff = fmax(diff, fabs((double)x - y));
            scale = fmax(scale, fabs((double)x));
        }
        printf("%.3g\n", scale > 0 ? diff / scale : diff);
    } else {
        fprintf(stderr, "mkfixture: %s has no item %s of the size %s has\n", b, name, a);
    }
    free(pa);
    free(pb);
    return rc;
}

/* Copies the checkpoint in to out with element i of item `name` set to value (of type
 * i64, u64 or f64) and the CRC recomputed, as someone crafting a checkpoint would. */
static int ckpt_forge(const char *in, const char *out, const char *name, long i, const char *type,
                      const char *value)
{
    FILE *f = fopen(in, "rb");
    static unsigned char buf[1 << 24];
    size_t n = f ? fread(buf, 1, sizeof buf, f) : 0;
    if (!f || n < 36 || n == sizeof buf)
        return 1;
    fclose(f);
    uint32_t len, items;
    size_t at = 28;
    memcpy(&len, buf + at, 4);
    at += 4 + len;
    memcpy(&items, buf + at, 4);
    at += 4;
    for (uint32_t k = 0; k < items && at + 12 <= n; k++) {
        uint64_t bytes;
        memcpy(&len, buf + at, 4);
        int match = len == strlen(name) && at + 4 + len <= n && memcmp(buf + at + 4, name, len) == 0;
        at += 4 + len;
        memcpy(&bytes, buf + at, 8);
        at += 8;
        if (match) {
            unsigned char *p = buf + at + 8 * (size_t)i;
            if (8 * (uint64_t)(i + 1) > bytes)
                return 1;
            if (strcmp(type, "i64") == 0) {
                int64_t v = strtoll(value, NULL, 0);
                memcpy(p, &v, 8);
            } else if (strcmp(type, "u64") == 0) {
                uint64_t v = strtoull(value, NULL, 0);
                memcpy(p, &v, 8);
            } else {
                double v = strtod(value, NULL);
                memcpy(p, &v, 8);
            }
            uint32_t crc = (uint32_t)crc32(0L, buf + 28, (uInt)(n - 32));
            memcpy(buf + n - 4, &crc, 4);
            FILE *o = fopen(out, "wb");
            return !o || fwrite(buf, 1, n, o) != n || fclose(o) != 0;
        }
        at += bytes;
    }
    return 1;
}

int main(int argc, char **argv)
{
    struct kfac_rng r;
    if (argc == 6 && strcmp(argv[1], "bars") == 0) {
        kfac_rng_seed(&r, strtoull(argv[5], NULL, 10));
        return bars(argv[2], argv[3], atoi(argv[4]), &r);
    }
    if (argc == 5 && strcmp(argv[1], "csv") == 0) {
        kfac_rng_seed(&r, strtoull(argv[4], NULL, 10));
        return csv(argv[2], atoi(argv[3]), &r);
    }
    if (argc == 5 && strcmp(argv[1], "blobs") == 0) {
        kfac_rng_seed(&r, strtoull(argv[4], NULL, 10));
        return blobs(argv[2], atoi(argv[3]), &r);
    }
    if (argc == 3 && strcmp(argv[1], "ckpt-items") == 0)
        return ckpt_items(argv[2]);
    if (argc == 5 && strcmp(argv[1], "ckpt-diff") == 0)
        return ckpt_diff(argv[2], argv[3], argv[4]);
    if (argc == 8 && strcmp(argv[1], "ckpt-forge") == 0)
        return ckpt_forge(argv[2], argv[3], argv[4], atol(argv[5]), argv[6], argv[7]);
    fprintf(stderr, "usage: mkfixture bars IMAGES LABELS N SEED | mkfixture csv FILE N SEED | "
                    "mkfixture blobs FILE.npy K SEED | mkfixture ckpt-items CHECKPOINT | "
                    "mkfixture ckpt-diff A B ITEM | "
                    "mkfixture ckpt-forge IN OUT ITEM I TYPE V\n");
    return 2;
}
