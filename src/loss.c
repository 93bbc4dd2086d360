/*
 * loss.c: Bernoulli, squared-error and softmax cross-entropy losses with their
 * gradients, output Fisher products, target sampling and metrics (see loss.h).
 */
#include "kfac/loss.h"
#include "kfac/status.h"
#include "vecmath.h"

#include <math.h>
#include <string.h>

static const char *const loss_names[] = {
    [KFAC_LOSS_BERNOULLI] = "bernoulli", [KFAC_LOSS_SQUARED] = "squared",
    [KFAC_LOSS_SOFTMAX] = "softmax",
};

const char *kfac_loss_name(enum kfac_loss loss)
{
    return loss_names[loss];
}

int kfac_loss_parse(const char *name, enum kfac_loss *loss)
{
    for (size_t i = 0; i < sizeof loss_names / sizeof *loss_names; i++)
        if (strcmp(name, loss_names[i]) == 0) {
            *loss = (enum kfac_loss)i;
            return 0;
        }
    return kfac_error(KFAC_EINVAL, "unknown loss '%s' (expected bernoulli, squared or softmax)",
                      name);
}

enum kfac_activation kfac_loss_link(enum kfac_loss loss)
{
    switch (loss) {
    case KFAC_LOSS_BERNOULLI: return KFAC_ACT_LOGISTIC;
    case KFAC_LOSS_SOFTMAX: return KFAC_ACT_SOFTMAX;
    case KFAC_LOSS_SQUARED: break;
    }
    return KFAC_ACT_LINEAR;
}

/* Σ_j softplus(z_j) − t_j z_j, written max(z, 0) + log1p(e^−|z|) − t z so that nothing
 * overflows; terms are formed in float (vectorised) and summed in double. */
KFAC_VECTOR_KERNEL
static double bernoulli_row(int n, const float *restrict z, const float *restrict t)
{
    float terms[256];
    double total = 0;
    for (int start = 0; start < n; start += 256) {
        int k = n - start < 256 ? n - start : 256;
        for (int j = 0; j < k; j++) {
            float zj = z[start + j];
            terms[j] = (zj > 0 ? zj : 0) + log1pf(expf(-fabsf(zj))) - t[start + j] * zj;
        }
        for (int j = 0; j < k; j++)
            total += terms[j];
    }
    return total;
}

double kfac_loss_sum(enum kfac_loss loss, int m, int n, const float *z, const float *t)
{
    double total = 0;
    for (int i = 0; i < m; i++) {
        const float *zi = z + (size_t)i * n, *ti = t + (size_t)i * n;
        switch (loss) {
        case KFAC_LOSS_BERNOULLI:
            total += bernoulli_row(n, zi, ti);
            break;
        case KFAC_LOSS_SQUARED:
            for (int j = 0; j < n; j++) {
                double d = (double)zi[j] - ti[j];
                total += 0.5 * d * d;
            }
            break;
        case KFAC_LOSS_SOFTMAX: {
            double mx = zi[0], sum = 0, tsum = 0, tz = 0;
            for (int j = 1; j < n; j++)
                mx = zi[j] > mx ? zi[j] : mx;
            for (int j = 0; j < n; j++) {
                sum += exp(zi[j] - mx);
                tsum += ti[j];
                tz += (double)ti[j] * zi[j];
            }
            total += tsum * (mx + log(sum)) - tz;
            break;
        }
        }
    }
    return total;
}

void kfac_loss_grad(enum kfac_loss loss, int m, int n, const float *y, const float *t, float *g)
{
    (void)loss;
    for (size_t i = 0; i < (size_t)m * n; i++)
        g[i] = y[i] - t[i];
}

void kfac_loss_sample_grad(enum kfac_loss loss, int m, int n, const float *y, uint64_t key,
                           long place, long step, float *g)
{
    struct kfac_rng stream, *rng = &stream;
    for (int i = 0; i < m; i++) {
        kfac_rng_case(rng, key, (uint64_t)(place + i * step));
        const float *yi = y + (size_t)i * n;
        float *gi = g + (size_t)i * n;
        switch (loss) {
        case KFAC_LOSS_BERNOULLI:
            for (int j = 0; j < n; j++)
                gi[j] = yi[j] - (kfac_rng_uniform(rng) < yi[j] ? 1.0f : 0.0f);
            break;
        case KFAC_LOSS_SQUARED:
            /* y − t̃ with t̃ ~ N(y, I) is a standard normal draw. */
            for (int j = 0; j < n; j++)
                gi[j] = (float)-kfac_rng_normal(rng);
            break;
        case KFAC_LOSS_SOFTMAX: {
            double u = kfac_rng_uniform(rng), c = 0;
            int k = n - 1; /* rounding can leave Σ p just below u: the last class then */
            for (int j = 0; j < n; j++) {
                c += yi[j];
                if (u < c) {
                    k = j;
                    break;
                }
            }
            for (int j = 0; j < n; j++)
                gi[j] = yi[j] - (j == k ? 1.0f : 0.0f);
            break;
        }
        }
    }
}

void kfac_loss_fisher_mul(enum kfac_loss loss, int m, int n, const float *y, const float *v,
                          float *out)
{
    for (int i = 0; i < m; i++) {
        const float *yi = y + (size_t)i * n, *vi = v + (size_t)i * n;
        float *oi = out + (size_t)i * n;
        switch (loss) {
        case KFAC_LOSS_BERNOULLI:
            for (int j = 0; j < n; j++)
                oi[j] = yi[j] * (1.0f - yi[j]) * vi[j];
            break;
        case KFAC_LOSS_SQUARED:
            memcpy(oi, vi, (size_t)n * sizeof *oi);
            break;
        case KFAC_LOSS_SOFTMAX: {
            double pv = 0;
            for (int j = 0; j < n; j++)
                pv += (double)yi[j] * vi[j];
            for (int j = 0; j < n; j++)
                oi[j] = (float)(yi[j] * (vi[j] - pv));
            break;
        }
        }
    }
}

void kfac_loss_fisher_column(enum kfac_loss loss, int m, int n, const float *y, int j,
                             float *out)
{
    memset(out, 0, (size_t)m * n * sizeof *out);
    for (int i = 0; i < m; i++) {
        const float *yi = y + (size_t)i * n;
        float *oi = out + (size_t)i * n;
        switch (loss) {
        case KFAC_LOSS_BERNOULLI:
            oi[j] = sqrtf(fmaxf(yi[j] * (1.0f - yi[j]), 0.0f));
            break;
        case KFAC_LOSS_SQUARED:
            oi[j] = 1.0f;
            break;
        case KFAC_LOSS_SOFTMAX: { /* Σ_j p_j (p − e_j)(p − e_j)ᵀ = diag(p) − p pᵀ */
            float r = sqrtf(fmaxf(yi[j], 0.0f));
            for (int c = 0; c < n; c++)
                oi[c] = r * yi[c];
            oi[j] -= r;
            break;
        }
        }
    }
}

double kfac_sq_error_sum(int m, int n, const float *y, const float *t)
{
    double s = 0;
    for (size_t i = 0; i < (size_t)m * n; i++) {
        double d = (double)y[i] - t[i];
        s += d * d;
    }
    return s;
}

static int argmax(int n, const float *x)
{
    int k = 0;
    for (int j = 1; j < n; j++)
        if (x[j] > x[k])
            k = j;
    return k;
}

int kfac_correct_count(int m, int n, const float *y, const float *t)
{
    int c = 0;
    for (int i = 0; i < m; i++)
        c += argmax(n, y + (size_t)i * n) == argmax(n, t + (size_t)i * n);
    return c;
}
