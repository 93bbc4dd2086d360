/*
 * mkfixture.c: writes small synthetic data sets for the command-line tests, so they need
 * no downloaded data.
 *   mkfixture bars IMAGES.gz LABELS.gz N SEED   N 8×8 images of a horizontal or vertical
 *                                               bar (IDX, gzip), label 0–7 = bar position,
 *                                               +8 when vertical
 *   mkfixture csv FILE N SEED                   regression table x1,x2,x3,y with
 *                                               y = sin(x1) + x2·x3 + small noise
 */
#include "kfac/rng.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

static int write_idx(const char *path, const unsigned char *hdr, size_t hlen,
                     const unsigned char *data, size_t n)
{
    gzFile f = gzopen(path, "wb");
    if (!f || gzwrite(f, hdr, (unsigned)hlen) != (int)hlen ||
        gzwrite(f, data, (unsigned)n) != (int)n || gzclose(f) != Z_OK) {
        fprintf(stderr, "mkfixture: cannot write %s\n", path);
        return 1;
    }
    return 0;
}

static int bars(const char *images, const char *labels, int n, struct kfac_rng *r)
{
    unsigned char ih[16] = {0, 0, 8, 3, 0, 0, 0, 0, 0, 0, 0, 8, 0, 0, 0, 8};
    unsigned char lh[8] = {0, 0, 8, 1};
    for (int i = 0; i < 4; i++)
        ih[4 + i] = lh[4 + i] = (unsigned char)((unsigned)n >> (24 - 8 * i));
    unsigned char *img = calloc((size_t)n * 64, 1), *lab = malloc((size_t)n);
    for (int c = 0; c < n; c++) {
        int pos = (int)kfac_rng_below(r, 8), vertical = (int)kfac_rng_below(r, 2);
        for (int j = 0; j < 8; j++) {
            int px = vertical ? j * 8 + pos : pos * 8 + j;
            img[c * 64 + px] = (unsigned char)(200 + kfac_rng_below(r, 56));
        }
        lab[c] = (unsigned char)(pos + 8 * vertical);
    }
    int rc = write_idx(images, ih, 16, img, (size_t)n * 64) || write_idx(labels, lh, 8, lab, (size_t)n);
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
    fprintf(stderr, "usage: mkfixture bars IMAGES LABELS N SEED | mkfixture csv FILE N SEED\n");
    return 2;
}
