/*
 * kfac-datagen.c: the kfac-datagen command, which writes the synthetic data sets of the
 * deep-autoencoder benchmarks as IDX files (gzip): CURVES, and the FACES stand-in made
 * from a few face images in an NPY file, into OUTDIR (made, with its parents, when
 * missing). Exit status 0, 1 when a file cannot be written, 2 for usage or input errors.
 * See kfac-datagen(1) and data/README.md.
 */
#include "config.h"
#include "kfac/data.h"
#include "kfac/status.h"

#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

enum { EXIT_WRITE = 1, EXIT_USAGE = 2 };

static void usage(FILE *f)
{
    fputs("Usage: kfac-datagen curves [OPTIONS] OUTDIR\n"
          "       kfac-datagen faces [OPTIONS] FACES.npy OUTDIR\n"
          "Write the CURVES set, or the FACES stand-in made from the face images in FACES.npy\n"
          "(K x S x S), as OUTDIR/NAME-{train,test}-images-idx3-ubyte.gz.\n"
          "\n"
          "  -s, --seed N     generator seed (default 1)\n"
          "  -n, --train N    training images (default 20000 curves, 10000 faces)\n"
          "  -t, --test N     test images (default 10000 curves, 2500 faces)\n"
          "  -k, --sources K  faces: use the first K images of FACES.npy (default all); the\n"
          "                   first 80% make the training images, the rest the test images\n"
          "  -z, --side N     image side in pixels (default 28 curves, 25 faces)\n"
          "  -f, --force      replace existing output files\n"
          "  -h, --help       print this help and exit\n"
          "  -V, --version    print the version and exit\n",
          f);
}

static int fail_usage(const char *msg)
{
    fprintf(stderr, "kfac-datagen: %s\nTry 'kfac-datagen --help' for more information.\n", msg);
    return EXIT_USAGE;
}

static int parse_count(const char *arg, const char *what, long lo, long *out)
{
    char *end;
    long v = strtol(arg, &end, 10);
    if (*arg == '\0' || *end != '\0' || v < lo || v > 100000000L) {
        fprintf(stderr, "kfac-datagen: %s must be an integer from %ld to 100000000, not '%s'\n",
                what, lo, arg);
        return -1;
    }
    *out = v;
    return 0;
}

/* mkdir -p: makes dir and any missing parents. */
static int make_dirs(const char *dir)
{
    char *p = kfac_xmalloc(strlen(dir) + 1);
    strcpy(p, dir);
    int rc = 0;
    for (char *slash = p + 1;; slash++) {
        int end = *slash == '\0';
        if (*slash != '/' && !end)
            continue;
        *slash = '\0';
        if (mkdir(p, 0777) != 0 && errno != EEXIST) {
            fprintf(stderr, "kfac-datagen: cannot make the directory %s (%s)\n", p,
                    strerror(errno));
            rc = -1;
            break;
        }
        if (end)
            break;
        *slash = '/';
    }
    free(p);
    return rc;
}

struct gen_opts {
    long seed, n_train, n_test, sources, side;
    int force;
};

/* Writes one split (n images from gen) to dir, refusing to replace a file unless forced. */
static int write_split(const char *dir, const char *set, const char *split, size_t n, int side,
                       const unsigned char *img, int force)
{
    char *path = kfac_xasprintf("%s/%s-%s-images-idx3-ubyte.gz", dir, set, split);
    int rc = 0;
    if (!force && access(path, F_OK) == 0) {
        fprintf(stderr, "kfac-datagen: %s exists; give --force to replace it\n", path);
        rc = EXIT_USAGE;
    } else {
        size_t dims[3] = {n, (size_t)side, (size_t)side};
        if (kfac_idx_write_bytes(path, 3, dims, img)) {
            fprintf(stderr, "kfac-datagen: %s\n", kfac_last_error());
            rc = EXIT_WRITE;
        } else {
            printf("kfac-datagen: wrote %zu %d x %d images to %s\n", n, side, side, path);
        }
    }
    free(path);
    return rc;
}

/* What makes a set's images: split 0 (training) or 1 (test), n images of side × side
 * into img, from one random stream; 0 or a kfac_error() status. */
struct maker {
    int (*make)(const struct maker *m, int split, struct kfac_rng *rng, size_t n, int side,
                unsigned char *img);
    const float *src[2];  /* faces: each split's source images, k[split] × s × s */
    size_t k[2];
    int s;
};

static int make_curves(const struct maker *m, int split, struct kfac_rng *rng, size_t n, int side,
                       unsigned char *img)
{
    (void)m;
    (void)split;
    return kfac_curves_make(rng, n, side, img);
}

static int make_faces(const struct maker *m, int split, struct kfac_rng *rng, size_t n, int side,
                      unsigned char *img)
{
    return kfac_faces_make(m->src[split], m->k[split], m->s, rng, n, side, img);
}

/* Makes and writes the training split, then the test split, from one stream seeded by
 * --seed. */
static int write_splits(const struct gen_opts *o, const struct maker *m, const char *set,
                        int side, const char *dir)
{
    struct kfac_rng rng;
    kfac_rng_seed(&rng, (uint64_t)o->seed);
    size_t n[2] = {(size_t)o->n_train, (size_t)o->n_test};
    const char *split[2] = {"train", "test"};
    int rc = 0;
    for (int t = 0; t < 2 && !rc; t++) {
        unsigned char *img = kfac_xmalloc(n[t] * (size_t)side * side + 1);
        if (m->make(m, t, &rng, n[t], side, img)) {
            fprintf(stderr, "kfac-datagen: %s\n", kfac_last_error());
            rc = EXIT_USAGE;
        } else {
            rc = write_split(dir, set, split[t], n[t], side, img, o->force);
        }
        free(img);
    }
    return rc;
}

static int curves(const struct gen_opts *o, const char *dir)
{
    struct maker m = {.make = make_curves};
    return write_splits(o, &m, "curves", o->side ? (int)o->side : 28, dir);
}

static int faces(const struct gen_opts *o, const char *npy, const char *dir)
{
    struct kfac_array a;
    if (kfac_npy_read(npy, &a)) {
        fprintf(stderr, "kfac-datagen: %s\n", kfac_last_error());
        return EXIT_USAGE;
    }
    size_t k = o->sources ? (size_t)o->sources : a.ndim == 3 ? a.dims[0] : 0;
    if (a.ndim != 3 || a.dims[1] != a.dims[2] || k < 2 || k > a.dims[0]) {
        fprintf(stderr, "kfac-datagen: %s: expected K x S x S face images with at least %zu "
                        "of them (--sources), one training and one test face at least\n",
                npy, k < 2 ? (size_t)2 : k);
        kfac_array_free(&a);
        return EXIT_USAGE;
    }
    /* The first 80% of the faces (rounded up, leaving one) for training, the rest for test. */
    size_t k_train = (k * 4 + 4) / 5 < k ? (k * 4 + 4) / 5 : k - 1;
    struct maker m = {.make = make_faces, .s = (int)a.dims[1], .k = {k_train, k - k_train}};
    m.src[0] = a.data;
    m.src[1] = a.data + k_train * (size_t)m.s * m.s;
    int rc = write_splits(o, &m, "faces", o->side ? (int)o->side : 25, dir);
    kfac_array_free(&a);
    return rc;
}

int main(int argc, char **argv)
{
    static const struct option longopts[] = {
        {"seed", required_argument, NULL, 's'},    {"train", required_argument, NULL, 'n'},
        {"test", required_argument, NULL, 't'},    {"sources", required_argument, NULL, 'k'},
        {"side", required_argument, NULL, 'z'},    {"force", no_argument, NULL, 'f'},
        {"help", no_argument, NULL, 'h'},          {"version", no_argument, NULL, 'V'},
        {NULL, 0, NULL, 0},
    };
    if (argc >= 2 && (strcmp(argv[1], "-h") == 0 || strcmp(argv[1], "--help") == 0)) {
        usage(stdout);
        return 0;
    }
    if (argc >= 2 && (strcmp(argv[1], "-V") == 0 || strcmp(argv[1], "--version") == 0)) {
        printf("kfac-datagen %s\n", PACKAGE_VERSION);
        return 0;
    }
    if (argc < 2)
        return fail_usage("missing the set to make (curves or faces)");
    const char *set = argv[1];
    int is_faces = strcmp(set, "faces") == 0;
    if (!is_faces && strcmp(set, "curves") != 0) {
        fprintf(stderr, "kfac-datagen: unknown set '%s' (expected curves or faces)\n", set);
        return EXIT_USAGE;
    }
    struct gen_opts o = {1, is_faces ? 10000 : 20000, is_faces ? 2500 : 10000, 0, 0, 0};
    int c;
    optind = 2;
    while ((c = getopt_long(argc, argv, "s:n:t:k:z:fhV", longopts, NULL)) != -1) {
        int bad = 0;
        switch (c) {
        case 's': bad = parse_count(optarg, "--seed", 0, &o.seed); break;
        case 'n': bad = parse_count(optarg, "--train", 1, &o.n_train); break;
        case 't': bad = parse_count(optarg, "--test", 1, &o.n_test); break;
        case 'k': bad = parse_count(optarg, "--sources", 2, &o.sources); break;
        case 'z': bad = parse_count(optarg, "--side", 1, &o.side); break;
        case 'f': o.force = 1; break;
        case 'h': usage(stdout); return 0;
        case 'V': printf("kfac-datagen %s\n", PACKAGE_VERSION); return 0;
        default: return fail_usage("bad option");
        }
        if (bad)
            return EXIT_USAGE;
    }
    int want = is_faces ? 2 : 1;
    if (argc - optind != want)
        return fail_usage(is_faces ? "faces takes FACES.npy and OUTDIR" : "curves takes OUTDIR");
    if (make_dirs(argv[argc - 1]))
        return EXIT_WRITE;
    return is_faces ? faces(&o, argv[optind], argv[optind + 1]) : curves(&o, argv[optind]);
}
