/*
 * data_synth.c: the synthetic image sets of the deep-autoencoder benchmarks (see data.h):
 * CURVES (smooth curves through three random points, drawn with a Gaussian pen) and the
 * FACES stand-in (randomly rotated, scaled and shifted crops of a few face images).
 * Both are functions of the generator's state only, so a seed fixes every byte.
 */
#include "kfac/data.h"
#include "kfac/status.h"

#include <math.h>
#include <string.h>

enum {
    CURVE_SAMPLES = 1024 /* points along a curve; ≤ 0.1 pixel apart for any curve in the image */
};

static const double curve_pen_sigma = 0.75; /* pixels */
static const double curve_margin = 3.0;     /* points lie in [margin, side − margin]² */
static const double curve_min_gap = 5.0;    /* pixels between any two of the three points */

static double dist2(const double *a, const double *b)
{
    return (a[0] - b[0]) * (a[0] - b[0]) + (a[1] - b[1]) * (a[1] - b[1]);
}

/* One curve into img (side × side, zeroed by the caller), intensities in [0, 1]. */
static void draw_curve(struct kfac_rng *rng, int side, float *img)
{
    double p[3][2];
    do {
        for (int i = 0; i < 3; i++)
            for (int j = 0; j < 2; j++)
                p[i][j] = curve_margin + (side - 2 * curve_margin) * kfac_rng_uniform(rng);
    } while (dist2(p[0], p[1]) < curve_min_gap * curve_min_gap ||
             dist2(p[1], p[2]) < curve_min_gap * curve_min_gap ||
             dist2(p[0], p[2]) < curve_min_gap * curve_min_gap);
    const double reach = 3 * curve_pen_sigma, inv2s2 = 1 / (2 * curve_pen_sigma * curve_pen_sigma);
    for (int k = 0; k < CURVE_SAMPLES; k++) {
        /* The quadratic through p0 (t = 0), p1 (t = ½) and p2 (t = 1), in Lagrange form. */
        double t = (double)k / (CURVE_SAMPLES - 1);
        double l0 = (1 - t) * (1 - 2 * t), l1 = 4 * t * (1 - t), l2 = t * (2 * t - 1);
        double x = l0 * p[0][0] + l1 * p[1][0] + l2 * p[2][0];
        double y = l0 * p[0][1] + l1 * p[1][1] + l2 * p[2][1];
        int c0 = (int)floor(x - reach), c1 = (int)ceil(x + reach);
        int r0 = (int)floor(y - reach), r1 = (int)ceil(y + reach);
        for (int r = r0 < 0 ? 0 : r0; r <= r1 && r < side; r++)
            for (int c = c0 < 0 ? 0 : c0; c <= c1 && c < side; c++) {
                /* Pixel (r, c) covers [c, c + 1) × [r, r + 1); its centre is the sample point. */
                double dx = c + 0.5 - x, dy = r + 0.5 - y, d2 = dx * dx + dy * dy;
                if (d2 > reach * reach)
                    continue;
                float v = (float)exp(-d2 * inv2s2);
                if (v > img[r * side + c])
                    img[r * side + c] = v;
            }
    }
}

static unsigned char to_byte(double v)
{
    return (unsigned char)lround(255 * (v < 0 ? 0 : v > 1 ? 1 : v));
}

int kfac_curves_make(struct kfac_rng *rng, size_t n, int side, unsigned char *out)
{
    if (side < 2 * curve_margin + curve_min_gap || side > KFAC_SYNTH_MAX_SIDE)
        return kfac_error(KFAC_EINVAL,
                          "cannot draw curves on %d x %d images (11 to %d pixels a side)", side,
                          side, KFAC_SYNTH_MAX_SIDE);
    float img[KFAC_SYNTH_MAX_SIDE * KFAC_SYNTH_MAX_SIDE];
    for (size_t i = 0; i < n; i++) {
        memset(img, 0, sizeof img);
        draw_curve(rng, side, img);
        for (int j = 0; j < side * side; j++)
            out[i * (size_t)side * side + (size_t)j] = to_byte(img[j]);
    }
    return 0;
}

/* src (s × s) at the continuous point (x, y) (pixel units, centres at .5), bilinear, with
 * coordinates clamped to the image so that crops reaching past an edge repeat it. */
static double bilinear(const float *src, int s, double x, double y)
{
    x -= 0.5;
    y -= 0.5;
    x = x < 0 ? 0 : x > s - 1 ? s - 1 : x;
    y = y < 0 ? 0 : y > s - 1 ? s - 1 : y;
    int c = (int)x, r = (int)y;
    int c1 = c + 1 < s ? c + 1 : c, r1 = r + 1 < s ? r + 1 : r;
    double fx = x - c, fy = y - r;
    return (1 - fy) * ((1 - fx) * src[r * s + c] + fx * src[r * s + c1]) +
           fy * ((1 - fx) * src[r1 * s + c] + fx * src[r1 * s + c1]);
}

static const double face_max_turn = 1.5707963267948966; /* ±90° */
static const double face_min_zoom = 1.0, face_max_zoom = 1.4;
static const double face_max_shift = 1.5;               /* source pixels, each axis */

int kfac_faces_make(const float *src, size_t k, int s, struct kfac_rng *rng, size_t n, int side,
                    unsigned char *out)
{
    if (k == 0 || s < 2 || side < 1 || side > KFAC_SYNTH_MAX_SIDE)
        return kfac_error(KFAC_EINVAL, "cannot make %d x %d faces from %zu images of %d x %d",
                          side, side, k, s, s);
    for (size_t i = 0; i < n; i++) {
        const float *face = src + kfac_rng_below(rng, k) * (size_t)s * s;
        double turn = face_max_turn * (2 * kfac_rng_uniform(rng) - 1);
        double zoom = face_min_zoom + (face_max_zoom - face_min_zoom) * kfac_rng_uniform(rng);
        double sx = face_max_shift * (2 * kfac_rng_uniform(rng) - 1);
        double sy = face_max_shift * (2 * kfac_rng_uniform(rng) - 1);
        double cs = cos(turn) / zoom * s / side, sn = sin(turn) / zoom * s / side;
        unsigned char *o = out + i * (size_t)side * side;
        for (int r = 0; r < side; r++)
            for (int c = 0; c < side; c++) {
                /* Output pixel centre relative to the output centre, rotated and shrunk into
                 * the source around its (shifted) centre. */
                double u = c + 0.5 - side / 2.0, v = r + 0.5 - side / 2.0;
                double x = s / 2.0 + sx + cs * u - sn * v, y = s / 2.0 + sy + sn * u + cs * v;
                o[r * side + c] = to_byte(bilinear(face, s, x, y));
            }
    }
    return 0;
}
