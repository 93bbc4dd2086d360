/*
 * check_kfac.c: every decision a K-FAC iteration takes, against a brute-force twin.
 *
 * The twin is an independent K-FAC written here in double on dense matrices: its own
 * forward and backward passes, the exact Fisher (1/m) Σ Jᵀ F_R J from a Jacobian by
 * central differences, the factors Ā and G from the first ⌈τ1 m⌉ cases merged with
 * ε = min(1 − 1/k, cap), decompositions (here: snapshots of the factors and π) at k ≤ 3
 * and k ≡ 0 (mod T3), the dense F̂ (damped Kronecker blocks; for the block-tridiagonal
 * variant also Ā_{i,i+1} ⊗ G_{i,i+1} beside them, inverted as the Gaussian chain it
 * models), Δ = −F̂⁻¹∇h, the 2×2 model solved in double, the γ candidates of every T2-th
 * iteration and the Levenberg–Marquardt λ of every T1-th. It shares nothing with the
 * optimiser but the loss's target sampler (fed the same random stream, read from the
 * optimiser's state) and its parameters at the start of each iteration. Each test runs
 * the optimiser and the twin side by side and compares, iteration by iteration, the
 * factors, whether a decomposition happened, λ, γ, ρ, α, μ, M(δ) − M(0) and the step.
 *
 * Beside it: the γ candidates and the 2×2 model by hand, λ's three branches reached by
 * real steps, a failed attempt that must leave no statistics behind, the precision of the
 * damped inverses on an ill-conditioned factor, and γ's floor on a long classifier run.
 */
#include <cblas.h>
#include "kfac/curvature.h"
#include "kfac/mat.h"
#include "kfac/optim.h"
#include "kfac/status.h"
#include "testutil.h"

#include <lapacke.h>
#include <float.h>
#include <math.h>

enum { TL = 3, TM = 12, TW = 9, TP = 160 }; /* layers, cases, widths (with the 1), params */

struct twin {
    struct kfac_optim_opts o;
    enum kfac_loss loss;
    int L, P, d[TL + 1], act[TL], off[TL], na[TL], ng[TL];
    int tri;
    double A[TL][TW * TW], G[TL][TW * TW], XA[TL][TW * TW], XG[TL][TW * TW]; /* running */
    double Ad[TL][TW * TW], Gd[TL][TW * TW], XAd[TL][TW * TW], XGd[TL][TW * TW]; /* decomposed */
    double pi[TL];
    double lambda, lambda_min, gamma, gamma_min;
    double prev[TP];
    int have_prev;
    int warm; /* λ's warm-up is on */
};

/* What one iteration of the twin decided. */
struct twin_step {
    double h, alpha, mu, change, rho, lambda, gamma;
    double delta[TP];
    double cond;       /* the condition number of the chosen γ's 2×2 system (1: 1×1) */
    double kappa;      /* the largest over layers of the damped Ā_i ⊗ G_i's condition number */
    int decomposed;
};

/* The forward pass of the twin: ā, s and a per layer, in double. */
struct fwd {
    double abar[TL][TM * TW], s[TL][TM * TW], a[TL][TM * TW];
};

static void twin_init(struct twin *t, const struct kfac_net *net, enum kfac_loss loss,
                      const struct kfac_optim_opts *o)
{
    memset(t, 0, sizeof *t);
    t->o = *o;
    t->loss = loss;
    t->L = net->n_layers;
    t->P = (int)net->n_params;
    ck_assert_int_le(t->L, TL);
    ck_assert_int_le(t->P, TP);
    t->d[0] = net->d_in;
    for (int i = 0; i < t->L; i++) {
        const struct kfac_layer *l = &net->layers[i];
        t->d[i + 1] = l->d_out;
        t->act[i] = l->act;
        t->off[i] = (int)(l->W - net->params);
        t->na[i] = l->d_in + 1;
        t->ng[i] = l->d_out;
        ck_assert_int_le(t->na[i], TW);
        ck_assert_int_le(t->ng[i], TW);
    }
    t->tri = o->curvature == KFAC_CURVATURE_TRIDIAGONAL;
    t->lambda = o->lambda;
    t->warm = o->start == KFAC_START_WARMUP && o->lambda_every > 0;
    t->lambda_min = o->lambda_min > 0 ? o->lambda_min : fmax(1e-6 - o->l2, 0);
    t->gamma_min = o->gamma_min > 0 ? o->gamma_min : o->l2 > 0 ? sqrt(o->l2) : 1e-4;
    t->gamma = o->gamma > 0 ? o->gamma : sqrt(o->lambda + o->l2);
    if (o->gamma <= 0 && o->start == KFAC_START_WARMUP) /* γ0 kept in [γ_min, γ_max] */
        t->gamma = fmin(fmax(t->gamma, t->gamma_min), o->gamma_max);
    for (int i = 0; i < t->L; i++)
        t->pi[i] = 1;
}

static void forward(const struct twin *t, const double *theta, int m, const float *X,
                    struct fwd *f)
{
    for (int i = 0; i < t->L; i++) {
        int na = t->na[i], ng = t->ng[i];
        const double *W = theta + t->off[i];
        for (int c = 0; c < m; c++) {
            double *ab = f->abar[i] + c * na;
            for (int j = 0; j < na - 1; j++)
                ab[j] = i == 0 ? X[c * t->d[0] + j] : f->a[i - 1][c * t->ng[i - 1] + j];
            ab[na - 1] = 1;
            double *s = f->s[i] + c * ng, *a = f->a[i] + c * ng, mx = -INFINITY, z = 0;
            for (int o = 0; o < ng; o++) {
                s[o] = 0;
                for (int j = 0; j < na; j++)
                    s[o] += W[o * na + j] * ab[j];
                mx = fmax(mx, s[o]);
            }
            for (int o = 0; o < ng; o++) {
                switch (t->act[i]) {
                case KFAC_ACT_TANH: a[o] = tanh(s[o]); break;
                case KFAC_ACT_LOGISTIC: a[o] = 1 / (1 + exp(-s[o])); break;
                case KFAC_ACT_SOFTMAX: a[o] = exp(s[o] - mx), z += a[o]; break;
                default: a[o] = s[o]; break;
                }
            }
            for (int o = 0; t->act[i] == KFAC_ACT_SOFTMAX && o < ng; o++)
                a[o] /= z;
        }
    }
}

static const double *outputs(const struct twin *t, const struct fwd *f)
{
    return f->a[t->L - 1];
}

/* h(θ) = (1/m) Σ ℓ + (η/2)‖θ‖². */
static double objective(const struct twin *t, const double *theta, int m, const float *X,
                        const float *T)
{
    static struct fwd f;
    forward(t, theta, m, X, &f);
    int n = t->d[t->L];
    double sum = 0, sq = 0;
    for (int c = 0; c < m; c++) {
        const double *z = f.s[t->L - 1] + c * n;
        const float *tc = T + c * n;
        double mx = -INFINITY, e = 0, ts = 0, tz = 0;
        for (int o = 0; o < n; o++) {
            switch (t->loss) {
            case KFAC_LOSS_BERNOULLI: sum += fmax(z[o], 0) + log1p(exp(-fabs(z[o]))) - tc[o] * z[o]; break;
            case KFAC_LOSS_SQUARED: sum += 0.5 * (z[o] - tc[o]) * (z[o] - tc[o]); break;
            case KFAC_LOSS_SOFTMAX: mx = fmax(mx, z[o]); break;
            }
        }
        if (t->loss == KFAC_LOSS_SOFTMAX) {
            for (int o = 0; o < n; o++) {
                e += exp(z[o] - mx);
                ts += tc[o];
                tz += tc[o] * z[o];
            }
            sum += ts * (mx + log(e)) - tz;
        }
    }
    for (int p = 0; p < t->P; p++)
        sq += theta[p] * theta[p];
    return sum / m + 0.5 * t->o.l2 * sq;
}

/* g per layer (rows of m cases) from the output gradients gout (m × d_out). */
static void backward(const struct twin *t, const double *theta, const struct fwd *f, int m,
                     const double *gout, double g[TL][TM * TW])
{
    int L = t->L;
    memcpy(g[L - 1], gout, sizeof(double) * m * t->ng[L - 1]);
    for (int i = L - 1; i > 0; i--) {
        int na = t->na[i], ng = t->ng[i], nh = t->ng[i - 1];
        const double *W = theta + t->off[i];
        for (int c = 0; c < m; c++)
            for (int j = 0; j < nh; j++) {
                double s = 0, a = f->a[i - 1][c * nh + j];
                for (int o = 0; o < ng; o++)
                    s += g[i][c * ng + o] * W[o * na + j];
                switch (t->act[i - 1]) {
                case KFAC_ACT_TANH: s *= 1 - a * a; break;
                case KFAC_ACT_LOGISTIC: s *= a * (1 - a); break;
                default: break;
                }
                g[i - 1][c * nh + j] = s;
            }
    }
}

/* J (m·d_out × P): the logits' Jacobian by central differences. */
static void jacobian(const struct twin *t, const double *theta, int m, const float *X, double *J)
{
    static struct fwd fp, fm;
    double th[TP];
    memcpy(th, theta, sizeof(double) * t->P);
    int n = t->d[t->L];
    const double h = 1e-6;
    for (int p = 0; p < t->P; p++) {
        th[p] = theta[p] + h;
        forward(t, th, m, X, &fp);
        th[p] = theta[p] - h;
        forward(t, th, m, X, &fm);
        th[p] = theta[p];
        for (int r = 0; r < m * n; r++)
            J[(size_t)r * t->P + p] = (fp.s[t->L - 1][r] - fm.s[t->L - 1][r]) / (2 * h);
    }
}

/* (1/m) Σ_c (J_c u)ᵀ F_R(y_c) (J_c v). */
static double fisher_dot(const struct twin *t, int m, const double *J, const double *y,
                         const double *u, const double *v)
{
    int n = t->d[t->L];
    double total = 0;
    for (int c = 0; c < m; c++) {
        double ju[TW] = {0}, jv[TW] = {0};
        for (int o = 0; o < n; o++)
            for (int p = 0; p < t->P; p++) {
                ju[o] += J[(size_t)(c * n + o) * t->P + p] * u[p];
                jv[o] += J[(size_t)(c * n + o) * t->P + p] * v[p];
            }
        const double *yc = y + c * n;
        for (int a = 0; a < n; a++)
            for (int b = 0; b < n; b++) {
                double F = t->loss == KFAC_LOSS_BERNOULLI ? (a == b) * yc[a] * (1 - yc[a])
                           : t->loss == KFAC_LOSS_SQUARED ? (a == b)
                                                          : (a == b) * yc[a] - yc[a] * yc[b];
                total += ju[a] * F * jv[b];
            }
    }
    return total / m;
}

static double dotp(int n, const double *x, const double *y)
{
    double s = 0;
    for (int i = 0; i < n; i++)
        s += x[i] * y[i];
    return s;
}

/* X (n × n, row-major, symmetric positive definite) ← X⁻¹. */
static void spd_inverse(int n, double *X)
{
    ck_assert_int_eq(LAPACKE_dpotrf(LAPACK_ROW_MAJOR, 'U', n, X, n), 0);
    ck_assert_int_eq(LAPACKE_dpotri(LAPACK_ROW_MAJOR, 'U', n, X, n), 0);
    for (int i = 0; i < n; i++)
        for (int j = 0; j < i; j++)
            X[i * n + j] = X[j * n + i];
}

/* The block of F̂ between layers i and j (|i − j| ≤ 1) in the parameters' layout (row r, column
 * col of W is r·n_a + col): damped Ā_i ⊗ G_i on the diagonal, Ā_{i,i+1} ⊗ G_{i,i+1} beside it. */
static double fhat_entry(const struct twin *t, int i, int j, int p, int q, double gamma)
{
    if (i == j) {
        int na = t->na[i], r = p / na, c = p % na, r2 = q / na, c2 = q % na;
        return (t->Ad[i][c * na + c2] + (c == c2) * gamma * t->pi[i]) *
               (t->Gd[i][r * t->ng[i] + r2] + (r == r2) * gamma / t->pi[i]);
    }
    if (j < i)
        return fhat_entry(t, j, i, q, p, gamma);
    int na = t->na[i], na1 = t->na[j];
    int r = p / na, c = p % na, r2 = q / na1, c2 = q % na1;
    return t->XAd[i][c * na1 + c2] * t->XGd[i][r * t->ng[j] + r2];
}

/* (λ_max + d) / (λ_min + d) of the n × n symmetric factor F (row-major). */
static double damped_cond(int n, const double *F, double d)
{
    double X[TW * TW], w[TW];
    memcpy(X, F, sizeof(double) * n * n);
    ck_assert_int_eq(LAPACKE_dsyev(LAPACK_ROW_MAJOR, 'N', 'U', n, X, n, w), 0);
    return (fmax(w[n - 1], 0) + d) / (fmax(w[0], 0) + d);
}

/* The largest condition number of a damped diagonal block (Ā_i + γπ_i I) ⊗ (G_i + γ/π_i I):
 * the float preconditioning's relative error grows with it (check_kfac's
 * damped_inverse_precision). */
static double fhat_kappa(const struct twin *t, double gamma)
{
    double k = 1;
    for (int i = 0; i < t->L; i++)
        k = fmax(k, damped_cond(t->na[i], t->Ad[i], gamma * t->pi[i]) *
                        damped_cond(t->ng[i], t->Gd[i], gamma / t->pi[i]));
    return k;
}

/* F̂⁻¹ (P × P) for γ. Block-diagonal: each damped block inverted. Block-tridiagonal: the
 * precision of the Gaussian chain whose covariance agrees with F̂ on the tridiagonal band,
 * Σ_i (F̂ restricted to layers i, i+1)⁻¹ − Σ_{interior i} (F̂_ii)⁻¹, embedded. */
static void fhat_inverse(const struct twin *t, double gamma, double *Finv)
{
    static double S[TP * TP];
    int P = t->P;
    memset(Finv, 0, sizeof(double) * P * P);
    int n[TL];
    for (int i = 0; i < t->L; i++)
        n[i] = t->na[i] * t->ng[i];
    for (int i = 0; i < t->L; i++) {
        int span = t->tri && i + 1 < t->L ? 2 : 1;
        if (t->tri && t->L > 1 && i + 1 == t->L)
            break;
        int size = n[i] + (span == 2 ? n[i + 1] : 0);
        for (int p = 0; p < size; p++)
            for (int q = 0; q < size; q++) {
                int bi = p < n[i] ? i : i + 1, bj = q < n[i] ? i : i + 1;
                int pp = p < n[i] ? p : p - n[i], qq = q < n[i] ? q : q - n[i];
                S[p * size + q] = fhat_entry(t, bi, bj, pp, qq, gamma);
            }
        spd_inverse(size, S);
        for (int p = 0; p < size; p++)
            for (int q = 0; q < size; q++)
                Finv[(t->off[i] + p) * P + t->off[i] + q] += S[p * size + q];
        if (span == 2 && i > 0) { /* the separator {i} was counted twice */
            for (int p = 0; p < n[i]; p++)
                for (int q = 0; q < n[i]; q++)
                    S[p * n[i] + q] = fhat_entry(t, i, i, p, q, gamma);
            spd_inverse(n[i], S);
            for (int p = 0; p < n[i]; p++)
                for (int q = 0; q < n[i]; q++)
                    Finv[(t->off[i] + p) * P + t->off[i] + q] -= S[p * n[i] + q];
        }
    }
}

/* One K-FAC iteration k of the twin at θ (the optimiser's parameters) on batch b; rng is a
 * copy of the optimiser's stream. */
static void twin_iteration(struct twin *t, const float *params, const struct kfac_batch *b, long k,
                           struct kfac_rng *rng, struct twin_step *out)
{
    static struct fwd f;
    static double J[TM * TW * TP], Finv[TP * TP], g[TL][TM * TW], gout[TM * TW];
    static float yf[TM * TW], gf[TM * TW];
    const struct kfac_optim_opts *o = &t->o;
    int m = b->m, n = t->d[t->L], P = t->P;
    double theta[TP], grad[TP];
    kfac_floats_to_doubles((size_t)P, params, theta);
    double h = objective(t, theta, m, b->x, b->t);
    forward(t, theta, m, b->x, &f);
    const double *y = outputs(t, &f);
    /* ∇h from the real targets. */
    for (int r = 0; r < m * n; r++)
        gout[r] = y[r] - b->t[r];
    backward(t, theta, &f, m, gout, g);
    for (int i = 0; i < t->L; i++)
        for (int r = 0; r < t->ng[i]; r++)
            for (int c = 0; c < t->na[i]; c++) {
                double s = 0;
                for (int q = 0; q < m; q++)
                    s += g[i][q * t->ng[i] + r] * f.abar[i][q * t->na[i] + c];
                int p = t->off[i] + r * t->na[i] + c;
                grad[p] = s / m + o->l2 * theta[p];
            }
    /* Statistics of the first ⌈τ1 m⌉ cases. */
    int ms = (int)ceil(o->stats_fraction * m - 1e-9);
    ms = ms < 1 ? 1 : ms > m ? m : ms;
    if (o->fisher == KFAC_FISHER_SAMPLED) {
        kfac_doubles_to_floats((size_t)ms * n, y, yf);
        kfac_loss_sample_grad(t->loss, ms, n, yf, kfac_rng_u64(rng), 0, 1, gf);
        kfac_floats_to_doubles((size_t)ms * n, gf, gout);
        backward(t, theta, &f, ms, gout, g);
    } /* else g holds the real targets' output gradients */
    double eps = fmin(1.0 - 1.0 / (double)k, o->stats_decay);
    for (int i = 0; i < t->L; i++) {
        int na = t->na[i], ng = t->ng[i];
        for (int a = 0; a < na; a++)
            for (int c = 0; c < na; c++) {
                double s = 0;
                for (int q = 0; q < ms; q++)
                    s += f.abar[i][q * na + a] * f.abar[i][q * na + c];
                t->A[i][a * na + c] = eps * t->A[i][a * na + c] + (1 - eps) * s / ms;
            }
        for (int a = 0; a < ng; a++)
            for (int c = 0; c < ng; c++) {
                double s = 0;
                for (int q = 0; q < ms; q++)
                    s += g[i][q * ng + a] * g[i][q * ng + c];
                t->G[i][a * ng + c] = eps * t->G[i][a * ng + c] + (1 - eps) * s / ms;
            }
        if (!t->tri || i + 1 == t->L)
            continue;
        int na1 = t->na[i + 1], ng1 = t->ng[i + 1];
        for (int a = 0; a < na; a++)
            for (int c = 0; c < na1; c++) {
                double s = 0;
                for (int q = 0; q < ms; q++)
                    s += f.abar[i][q * na + a] * f.abar[i + 1][q * na1 + c];
                t->XA[i][a * na1 + c] = eps * t->XA[i][a * na1 + c] + (1 - eps) * s / ms;
            }
        for (int a = 0; a < ng; a++)
            for (int c = 0; c < ng1; c++) {
                double s = 0;
                for (int q = 0; q < ms; q++)
                    s += g[i][q * ng + a] * g[i + 1][q * ng1 + c];
                t->XG[i][a * ng1 + c] = eps * t->XG[i][a * ng1 + c] + (1 - eps) * s / ms;
            }
    }
    out->decomposed = k <= 3 || k % o->inverse_every == 0;
    if (out->decomposed) {
        memcpy(t->Ad, t->A, sizeof t->A);
        memcpy(t->Gd, t->G, sizeof t->G);
        memcpy(t->XAd, t->XA, sizeof t->XA);
        memcpy(t->XGd, t->XG, sizeof t->XG);
        for (int i = 0; i < t->L; i++) {
            double ta = 0, tg = 0;
            for (int j = 0; j < t->na[i]; j++)
                ta += t->A[i][j * t->na[i] + j];
            for (int j = 0; j < t->ng[i]; j++)
                tg += t->G[i][j * t->ng[i] + j];
            ta /= t->na[i];
            tg /= t->ng[i];
            t->pi[i] = ta > 0 && tg > 0 ? sqrt(ta / tg) : 1;
        }
    }
    /* The model on the first ⌈τ2 m⌉ cases. */
    int mq = (int)ceil(o->model_fraction * m - 1e-9);
    mq = mq < 1 ? 1 : mq > m ? m : mq;
    jacobian(t, theta, mq, b->x, J);
    double damping = t->lambda + o->l2;
    double gammas[3] = {t->gamma};
    int n_gamma = 1;
    if (o->gamma_every > 0 && k % o->gamma_every == 0) {
        double w2 = pow(0.95, o->gamma_every / 2.0);
        gammas[0] = fmax(w2 * t->gamma, t->gamma_min);
        gammas[1] = fmin(t->gamma / w2, o->gamma_max);
        gammas[2] = t->gamma;
        n_gamma = 3;
    }
    double best = INFINITY;
    for (int gi = 0; gi < n_gamma; gi++) {
        double Delta[TP], alpha, mu = 0, change;
        fhat_inverse(t, gammas[gi], Finv);
        for (int p = 0; p < P; p++)
            Delta[p] = -dotp(P, Finv + p * P, grad);
        double C0 = fisher_dot(t, mq, J, y, Delta, Delta) + damping * dotp(P, Delta, Delta);
        double g0 = dotp(P, grad, Delta), C1 = 0, C3 = 0, g1 = 0;
        if (t->have_prev) {
            C1 = fisher_dot(t, mq, J, y, Delta, t->prev) + damping * dotp(P, Delta, t->prev);
            C3 = fisher_dot(t, mq, J, y, t->prev, t->prev) + damping * dotp(P, t->prev, t->prev);
            g1 = dotp(P, grad, t->prev);
        }
        if (o->step_rule == KFAC_STEP_FIXED) {
            alpha = o->learning_rate;
            mu = t->have_prev ? o->momentum : 0;
            change = 0.5 * (alpha * alpha * C0 + 2 * alpha * mu * C1 + mu * mu * C3) +
                     alpha * g0 + mu * g1;
        } else {
            double det = C0 * C3 - C1 * C1;
            if (t->have_prev && C3 > 0 && det > 1e-12 * C0 * C3) {
                alpha = (-g0 * C3 + g1 * C1) / det;
                mu = (-g1 * C0 + g0 * C1) / det;
            } else {
                alpha = -g0 / C0;
            }
            change = 0.5 * (alpha * g0 + mu * g1);
        }
        if (gi == 0 || change < best) {
            double tr = C0 + C3, disc = sqrt(fmax(tr * tr / 4 - (C0 * C3 - C1 * C1), 0));
            out->cond = t->have_prev ? (tr / 2 + disc) / fmax(tr / 2 - disc, 1e-300) : 1;
            out->kappa = fhat_kappa(t, gammas[gi]);
            best = change;
            out->alpha = alpha;
            out->mu = mu;
            out->change = change;
            out->gamma = gammas[gi];
            for (int p = 0; p < P; p++)
                out->delta[p] = alpha * Delta[p] + mu * t->prev[p];
        }
    }
    t->gamma = out->gamma;
    out->h = h;
    out->rho = NAN;
    if (o->lambda_every > 0 && (t->warm || k % o->lambda_every == 0)) {
        double th[TP];
        for (int p = 0; p < P; p++)
            th[p] = theta[p] + out->delta[p];
        double h1 = objective(t, th, m, b->x, b->t);
        out->rho = h1 > h ? -INFINITY : (h1 - h) / out->change;
        double w = pow(0.95, (double)o->lambda_every);
        int halve = t->warm && out->rho > 0.75;
        t->warm = halve && k < o->lambda_warmup_max;
        if (halve)
            t->lambda *= o->lambda_warmup;
        else if (isnan(out->rho) || out->rho < 0.25)
            t->lambda /= w;
        else if (out->rho > 0.75)
            t->lambda *= w;
        t->lambda = fmax(t->lambda, t->lambda_min);
    }
    out->lambda = t->lambda;
    if (o->use_momentum) {
        memcpy(t->prev, out->delta, sizeof(double) * P);
        t->have_prev = 1;
    }
}

/* The optimiser's item `name` (see kfac_optim_ops.state). */
static void *state_item(struct kfac_optim *opt, const char *name, size_t bytes)
{
    struct kfac_state st = {0};
    opt->ops->state(opt, &st);
    void *p = NULL;
    for (int i = 0; i < st.n; i++)
        if (strcmp(st.items[i].name, name) == 0) {
            ck_assert_uint_eq(st.items[i].bytes, bytes);
            p = st.items[i].ptr;
        }
    kfac_state_free(&st);
    ck_assert_msg(p != NULL, "no state item %s", name);
    return p;
}

static double *factor(struct kfac_optim *opt, int layer, const char *what, size_t n)
{
    char name[48];
    snprintf(name, sizeof name, "curv.%d.%s", layer, what);
    return state_item(opt, name, n * sizeof(double));
}

/* Whether the optimiser has a state item `name`. */
static int has_item(struct kfac_optim *opt, const char *name)
{
    struct kfac_state st = {0};
    opt->ops->state(opt, &st);
    int found = 0;
    for (int i = 0; i < st.n; i++)
        found |= strcmp(st.items[i].name, name) == 0;
    kfac_state_free(&st);
    return found;
}

/* What every layer's last decomposition left, into dec (TL · 2 · TW², zero-padded): the
 * eigenvalues of Ā and G (the eigen method), or Ā and G as it took them (Cholesky). */
static void decomposition(struct kfac_optim *opt, const struct twin *t, double *dec)
{
    memset(dec, 0, sizeof(double) * TL * 2 * TW * TW);
    int eigen = has_item(opt, "curv.0.eig_A");
    for (int i = 0; i < t->L; i++) {
        size_t na = (size_t)t->na[i], ng = (size_t)t->ng[i];
        if (!eigen) {
            na *= na;
            ng *= ng;
        }
        memcpy(dec + 2 * i * TW * TW, factor(opt, i, eigen ? "eig_A" : "A_dec", na),
               sizeof(double) * na);
        memcpy(dec + (2 * i + 1) * TW * TW, factor(opt, i, eigen ? "eig_G" : "G_dec", ng),
               sizeof(double) * ng);
    }
}

/* |a − b| ≤ rel · max(|a|, |b|) + abs_tol, NaN matching NaN and infinities themselves. */
#define ck_assert_near(a, b, rel, abs_tol, what, k)                                                 \
    do {                                                                                            \
        double a_ = (a), b_ = (b);                                                                  \
        int ok_ = (isnan(a_) && isnan(b_)) || a_ == b_ ||                                           \
                  fabs(a_ - b_) <= (rel) * fmax(fabs(a_), fabs(b_)) + (abs_tol);                    \
        ck_assert_msg(ok_, "iteration %ld: %s is %.9g, the twin's %.9g", (long)(k), what, a_, b_);  \
    } while (0)

/* What a side-by-side run saw. */
struct tally {
    int decompositions, lambda_moves, gamma_moves, two_dim;
    long decomposed_at[64];
    double first[6];   /* the figures λ, γ, ρ, α, μ, M(δ) − M(0) of the first iteration */
};

/* Runs the optimiser and the twin for `iters` iterations on batch b from the same start and
 * stream, comparing every decision; batches[k] (when given) replaces b at iteration k. */
static void side_by_side(const struct kfac_optim_opts *o, struct kfac_net *net,
                         enum kfac_loss loss, const struct kfac_batch *b, int iters, uint64_t seed,
                         struct tally *tally)
{
    static struct twin t;
    struct twin_step ts;
    struct kfac_rng r;
    kfac_rng_seed(&r, seed);
    struct kfac_optim *opt;
    ck_assert_int_eq(kfac_optim_new(o, net, loss, &r, &opt), 0);
    twin_init(&t, net, loss, o);
    memset(tally, 0, sizeof *tally);
    int ncol = kfac_optim_n_columns(opt), P = t.P;
    double fig[16], h, lambda = t.lambda, gamma = t.gamma;
    float before[TP];
    static double dec_before[TL * 2 * TW * TW], dec[TL * 2 * TW * TW];
    for (long k = 1; k <= iters; k++) {
        struct kfac_rng stream = *(struct kfac_rng *)state_item(opt, "kfac.rng", sizeof stream);
        memcpy(before, net->params, sizeof(float) * P);
        decomposition(opt, &t, dec_before);
        twin_iteration(&t, before, b, k, &stream, &ts);
        ck_assert_msg(opt->ops->step(opt, b, k, &h, fig) == 0, "%s", kfac_last_error());
        ck_assert_int_ge(ncol, 6);
        /* The factors, merged from the right cases with the right ε. */
        for (int i = 0; i < t.L; i++) {
            const double *A = factor(opt, i, "A", (size_t)t.na[i] * t.na[i]);
            const double *G = factor(opt, i, "G", (size_t)t.ng[i] * t.ng[i]);
            for (int a = 0; a < t.na[i]; a++)
                for (int c = a; c < t.na[i]; c++)
                    ck_assert_near(A[a * t.na[i] + c], t.A[i][a * t.na[i] + c], 1e-5, 1e-7,
                                   "a factor A entry", k);
            for (int a = 0; a < t.ng[i]; a++)
                for (int c = a; c < t.ng[i]; c++)
                    ck_assert_near(G[a * t.ng[i] + c], t.G[i][a * t.ng[i] + c], 1e-4, 1e-7,
                                   "a factor G entry", k);
            if (t.tri && i + 1 < t.L) {
                const double *XA = factor(opt, i, "XA", (size_t)t.na[i] * t.na[i + 1]);
                for (int e = 0; e < t.na[i] * t.na[i + 1]; e++)
                    ck_assert_near(XA[e], t.XA[i][e], 1e-5, 1e-7, "a cross factor entry", k);
            }
        }
        /* A decomposition exactly when the twin made one. */
        decomposition(opt, &t, dec);
        int changed = memcmp(dec, dec_before, sizeof dec) != 0;
        ck_assert_msg(changed == ts.decomposed, "iteration %ld: decomposition %s, the twin %s", k,
                      changed ? "made" : "not made", ts.decomposed ? "made one" : "did not");
        if (changed)
            tally->decomposed_at[tally->decompositions++] = k;
        /* The Cholesky method inverts the factors it kept: the twin's decomposed ones. */
        for (int i = 0; changed && !has_item(opt, "curv.0.eig_A") && i < t.L; i++) {
            const double *A = factor(opt, i, "A_dec", (size_t)t.na[i] * t.na[i]);
            const double *G = factor(opt, i, "G_dec", (size_t)t.ng[i] * t.ng[i]);
            for (int e = 0; e < t.na[i] * t.na[i]; e++)
                ck_assert_near(A[e], t.Ad[i][e], 1e-5, 1e-7, "a kept factor A entry", k);
            for (int e = 0; e < t.ng[i] * t.ng[i]; e++)
                ck_assert_near(G[e], t.Gd[i][e], 1e-4, 1e-7, "a kept factor G entry", k);
        }
        ck_assert_near(h, ts.h, 1e-6, 1e-9, "the objective", k);
        ck_assert_near(fig[1], ts.gamma, 1e-12, 0, "gamma", k);
        /* α and μ from float statistics and products: their error grows with the 2×2
         * system's condition number (1e4 when Δ and δ₀ are nearly parallel) times the
         * relative error of Δ, which is float's ε times the damped blocks' condition number
         * at most (the float preconditioning) and 1e-4 otherwise. */
        double ab = (1e-4 + 2 * FLT_EPSILON * ts.cond * (1 + ts.kappa)) *
                    fmax(fabs(ts.alpha), fabs(ts.mu));
        if (getenv("KFAC_TEST_VERBOSE"))
            printf("iteration %ld: cond %.3g kappa %.3g mu %.9g twin %.9g\n", k, ts.cond,
                   ts.kappa, fig[4], ts.mu);
        ck_assert_near(fig[3], ts.alpha, 0, ab, "alpha", k);
        ck_assert_near(fig[4], ts.mu, 0, ab, "mu", k);
        ck_assert_near(fig[5], ts.change, 2e-4, 1e-9, "the model change", k);
        ck_assert_near(fig[2], ts.rho, 2e-3, 1e-4, "rho", k);
        ck_assert_near(fig[0], ts.lambda, 1e-12, 0, "lambda", k);
        double dmax = 0;
        for (int p = 0; p < P; p++)
            dmax = fmax(dmax, fabs(ts.delta[p]));
        for (int p = 0; p < P; p++)
            ck_assert_near((double)net->params[p] - before[p], ts.delta[p], 0, 1e-3 * dmax + 1e-6,
                           "a step entry", k);
        if (k == 1)
            memcpy(tally->first, fig, sizeof tally->first);
        tally->lambda_moves += fig[0] != lambda;
        tally->gamma_moves += fig[1] != gamma;
        tally->two_dim += fig[4] != 0;
        lambda = fig[0];
        gamma = fig[1];
    }
    kfac_optim_free(opt);
}

/* A batch of TM cases for a network of d_in inputs and d_out outputs with targets fitting
 * loss; X and T hold them. */
static struct kfac_batch make_batch(struct kfac_rng *r, int d_in, int d_out, enum kfac_loss loss,
                                    float *X, float *T)
{
    fill_uniform(X, (size_t)TM * d_in, r, -1.5, 1.5);
    if (loss == KFAC_LOSS_SOFTMAX) {
        memset(T, 0, sizeof(float) * TM * d_out);
        for (int c = 0; c < TM; c++)
            T[c * d_out + kfac_rng_below(r, (uint64_t)d_out)] = 1;
    } else {
        fill_uniform(T, (size_t)TM * d_out, r, loss == KFAC_LOSS_BERNOULLI ? 0 : -1, 1);
    }
    return (struct kfac_batch){.m = TM, .x = X, .t = T};
}

/* The chunks the twin tests run in, by their loop index: the whole batch, a chunk that
 * does not divide it, and one case. Every pass then goes chunk by chunk, and the results
 * must be the twin's, which sees the whole batch at once. */
static const int chunks[3] = {TM, 5, 1};

/* The network of spec with buffers for chunk cases (its passes' chunk). */
static struct kfac_net *net_of(const char *spec, int chunk, struct kfac_rng *r)
{
    struct kfac_net *net = spec_net(spec, chunk, r);
    for (size_t p = 0; p < net->n_params; p++)
        net->params[p] *= 0.8f;
    return net;
}

/* Statistics: ⌈τ1 m⌉ cases (τ1 m whole and not), sampled and empirical G, ε from k = 1 and
 * its cap; 25 iterations so that the cap (0.9 from k = 10) is reached. */
START_TEST(statistics_match_the_twin)
{
    const double fractions[2] = {0.25, 0.3};
    for (int empirical = 0; empirical < 2; empirical++)
        for (int fi = 0; fi < 2; fi++) {
            struct kfac_rng r;
            kfac_rng_seed(&r, 100 + 2 * empirical + fi);
            struct kfac_net *net = net_of("3-5:tanh-4:logistic", chunks[_i], &r);
            float X[TM * 3], T[TM * 4];
            struct kfac_batch b = make_batch(&r, 3, 4, KFAC_LOSS_BERNOULLI, X, T);
            struct kfac_optim_opts o = test_kfac_opts();
            o.stats_fraction = fractions[fi];
            o.stats_decay = 0.9;
            o.fisher = empirical ? KFAC_FISHER_EMPIRICAL : KFAC_FISHER_SAMPLED;
            o.lambda = 3;
            struct tally tally;
            side_by_side(&o, net, KFAC_LOSS_BERNOULLI, &b, 25, 7, &tally);
            kfac_net_free(net);
        }
}
END_TEST

/* Schedules other than the defaults: decompositions at k ≤ 3 and k ≡ 0 (mod T3) only, λ
 * only at k ≡ 0 (mod T1), γ trials only at k ≡ 0 (mod T2); squared error, L2 on. */
START_TEST(schedules_match_the_twin)
{
    struct kfac_rng r;
    kfac_rng_seed(&r, 200);
    struct kfac_net *net = net_of("3-5:tanh-4:linear", chunks[_i], &r);
    float X[TM * 3], T[TM * 4];
    struct kfac_batch b = make_batch(&r, 3, 4, KFAC_LOSS_SQUARED, X, T);
    struct kfac_optim_opts o = test_kfac_opts();
    o.lambda_every = 3;
    o.gamma_every = 4;
    o.inverse_every = 7;
    o.lambda = 1;
    o.gamma = 0.3;
    o.l2 = 1e-3;
    o.stats_fraction = 0.5;
    struct tally tally;
    side_by_side(&o, net, KFAC_LOSS_SQUARED, &b, 22, 9, &tally);
    const long want[6] = {1, 2, 3, 7, 14, 21};
    ck_assert_int_eq(tally.decompositions, 6);
    for (int i = 0; i < 6; i++)
        ck_assert_int_eq(tally.decomposed_at[i], want[i]);
    /* The comparison meant something: λ and γ did move, and μ was used. */
    ck_assert_int_gt(tally.lambda_moves, 0);
    ck_assert_int_gt(tally.gamma_moves, 0);
    ck_assert_int_gt(tally.two_dim, 10);
    kfac_net_free(net);
}
END_TEST

/* The default schedule (the first step's 1×1 model, then the 2×2 one, λ at k = 5 and 10, a γ
 * trial at k = 20) on a softmax classifier: block-diagonal (by Cholesky, the default, and
 * by eigendecompositions) and block-tridiagonal. */
START_TEST(steps_match_the_twin)
{
    const int curvature[3] = {KFAC_CURVATURE_BLOCK_DIAGONAL, KFAC_CURVATURE_TRIDIAGONAL,
                              KFAC_CURVATURE_BLOCK_DIAGONAL};
    const int inverse[3] = {KFAC_INVERSE_AUTO, KFAC_INVERSE_AUTO, KFAC_INVERSE_EIGEN};
    for (int v = 0; v < 3; v++) {
        struct kfac_rng r;
        kfac_rng_seed(&r, 300 + v);
        struct kfac_net *net = net_of("4-5:tanh-3:logistic-3:softmax", chunks[_i], &r);
        float X[TM * 4], T[TM * 3];
        struct kfac_batch b = make_batch(&r, 4, 3, KFAC_LOSS_SOFTMAX, X, T);
        struct kfac_optim_opts o = test_kfac_opts();
        o.curvature = curvature[v];
        o.inverse = inverse[v];
        o.lambda = 1;
        o.gamma = 0.3;
        o.stats_fraction = 1;
        struct tally tally;
        side_by_side(&o, net, KFAC_LOSS_SOFTMAX, &b, 21, 11, &tally);
        ck_assert_int_gt(tally.two_dim, 15);
        ck_assert_int_gt(tally.gamma_moves, 0);
        kfac_net_free(net);
    }
}
END_TEST

/* The fixed step rule (α = ε, μ = momentum) is scored by the full quadratic model. */
START_TEST(fixed_step_matches_the_twin)
{
    struct kfac_rng r;
    kfac_rng_seed(&r, 400);
    struct kfac_net *net = net_of("3-5:tanh-4:linear", chunks[_i], &r);
    float X[TM * 3], T[TM * 4];
    struct kfac_batch b = make_batch(&r, 3, 4, KFAC_LOSS_SQUARED, X, T);
    struct kfac_optim_opts o = test_kfac_opts();
    o.step_rule = KFAC_STEP_FIXED;
    o.learning_rate = 0.2;
    o.momentum = 0.5;
    o.lambda = 0.5;
    o.lambda_every = 2;
    o.gamma_every = 4;
    struct tally tally;
    side_by_side(&o, net, KFAC_LOSS_SQUARED, &b, 12, 13, &tally);
    kfac_net_free(net);
}
END_TEST

/* λ's warm-up: ρ every iteration and λ halved while ρ > 3/4, the paper's rule on the first
 * ρ that is not and every T1 iterations after it; or at most up to lambda_warmup_max. */
START_TEST(warmup_matches_the_twin)
{
    for (int cap = 0; cap < 2; cap++) {
        struct kfac_rng r;
        kfac_rng_seed(&r, 450 + cap);
        struct kfac_net *net = net_of("3-5:tanh-4:logistic", chunks[_i], &r);
        float X[TM * 3], T[TM * 4];
        struct kfac_batch b = make_batch(&r, 3, 4, KFAC_LOSS_BERNOULLI, X, T);
        struct kfac_optim_opts o = test_kfac_opts();
        o.start = KFAC_START_WARMUP;
        o.lambda_warmup = 0.5;
        o.lambda_warmup_max = cap ? 4 : 100;
        struct tally tally;
        side_by_side(&o, net, KFAC_LOSS_BERNOULLI, &b, 25, 17, &tally);
        /* λ moved at iterations the paper's rule would not have touched. */
        ck_assert_double_eq_tol(tally.first[0], 75, 1e-12);
        ck_assert_double_eq(tally.first[1], 1); /* sqrt(150) clipped to γ_max */
        ck_assert_int_gt(tally.lambda_moves, 25 / 5);
        kfac_net_free(net);
    }
}
END_TEST

START_TEST(warmup_rule_by_hand)
{
    int warm = 1;
    /* ρ > 3/4: λ × f, the warm-up goes on; clipped at λ_min. */
    ck_assert_double_eq(kfac_lm_lambda_warmup(150, 0.9, 0.5, 5, 0, &warm), 75);
    ck_assert_int_eq(warm, 1);
    ck_assert_double_eq(kfac_lm_lambda_warmup(1e-3, 2.0, 0.25, 5, 1e-3, &warm), 1e-3);
    ck_assert_int_eq(warm, 1);
    /* The first ρ ≤ 3/4 ends it and goes to the paper's rule: unchanged in [1/4, 3/4],
     * × (20/19)^T1 below 1/4 and for NaN. */
    ck_assert_double_eq(kfac_lm_lambda_warmup(8, 0.5, 0.5, 5, 0, &warm), 8);
    ck_assert_int_eq(warm, 0);
    warm = 1;
    ck_assert_double_eq_tol(kfac_lm_lambda_warmup(8, 0.1, 0.5, 5, 0, &warm),
                            8 / pow(0.95, 5), 1e-12);
    ck_assert_int_eq(warm, 0);
    warm = 1;
    ck_assert_double_eq_tol(kfac_lm_lambda_warmup(8, NAN, 0.5, 5, 0, &warm), 8 / pow(0.95, 5),
                            1e-12);
    ck_assert_int_eq(warm, 0);
}
END_TEST

START_TEST(gamma_candidates_by_hand)
{
    double c[3];
    /* T2 = 20: ω₂ = 0.95^10 = 0.5987369392; γ = 0.5 gives 0.2993684696, 0.8350913, 0.5. */
    ck_assert_int_eq(kfac_gamma_candidates(0.5, 20, 1e-4, 1, c), 3);
    ck_assert_double_eq_tol(c[0], 0.2993684696, 1e-9);
    ck_assert_double_eq_tol(c[1], 0.8350912851, 1e-9);
    ck_assert_double_eq(c[2], 0.5);
    /* T2 = 4: ω₂ = 0.95² = 0.9025. */
    kfac_gamma_candidates(0.1, 4, 1e-4, 1, c);
    ck_assert_double_eq_tol(c[0], 0.09025, 1e-12);
    ck_assert_double_eq_tol(c[1], 0.1 / 0.9025, 1e-12);
    /* Clipped at both ends. */
    kfac_gamma_candidates(1e-3, 20, 8e-4, 1, c);
    ck_assert_double_eq(c[0], 8e-4);
    kfac_gamma_candidates(0.9, 20, 1e-4, 1, c);
    ck_assert_double_eq(c[1], 1);
    ck_assert_double_eq_tol(c[0], 0.9 * 0.598736939, 1e-8);
    /* γ_min's default: sqrt(η), or 1e-4 without L2; an explicit one wins. */
    struct kfac_optim_opts o = {.l2 = 1e-4};
    ck_assert_double_eq_tol(kfac_gamma_min(&o), 1e-2, 1e-15);
    o.l2 = 0;
    ck_assert_double_eq(kfac_gamma_min(&o), KFAC_GAMMA_MIN_NO_L2);
    o.gamma_min = 3e-3;
    ck_assert_double_eq(kfac_gamma_min(&o), 3e-3);
    /* λ_min's default keeps λ + η at 1e-6 or more; an explicit one wins. */
    ck_assert_double_eq(kfac_lambda_min(&o), KFAC_DAMPING_MIN);
    ck_assert_double_eq(KFAC_DAMPING_MIN, 1e-6);
    o.l2 = 4e-7;
    ck_assert_double_eq_tol(kfac_lambda_min(&o), 6e-7, 1e-20);
    o.l2 = 1e-5;
    ck_assert_double_eq(kfac_lambda_min(&o), 0);
    o.lambda_min = 1e-9;
    ck_assert_double_eq(kfac_lambda_min(&o), 1e-9);
}
END_TEST

START_TEST(model_solve_by_hand)
{
    /* [2 1; 1 3][α μ]ᵀ = −[−1 0.5]ᵀ: α = 0.7, μ = −0.4, M = ½(0.7·(−1) + (−0.4)·0.5) = −0.45. */
    const double C[4] = {2, 1, 1, 3}, g[2] = {-1, 0.5};
    double alpha, mu;
    ck_assert_double_eq_tol(kfac_model_solve(C, g, 2, &alpha, &mu), -0.45, 1e-15);
    ck_assert_double_eq_tol(alpha, 0.7, 1e-15);
    ck_assert_double_eq_tol(mu, -0.4, 1e-15);
    /* The first step: 1×1, α = 1/2, M = −1/4. */
    ck_assert_double_eq_tol(kfac_model_solve(C, g, 1, &alpha, &mu), -0.25, 1e-15);
    ck_assert_double_eq(mu, 0);
    /* Nearly singular (δ₀ almost parallel to Δ: det = 1e-14 C₀₀C₁₁): the 1-D solve, not a
     * 2×2 solve that would return α, μ of order 1e13. */
    const double s = sqrt(1 - 1e-14), near[4] = {1, s, s, 1}, gn[2] = {-1, -1};
    kfac_model_solve(near, gn, 2, &alpha, &mu);
    ck_assert_double_eq(mu, 0);
    ck_assert_double_eq_tol(alpha, 1, 1e-15);
    /* det = 1e-9 C₀₀C₁₁ is trusted: the exact 2×2 solution. */
    const double s9 = sqrt(1 - 1e-9), ok[4] = {1, s9, s9, 1}, g9[2] = {-1, 0};
    kfac_model_solve(ok, g9, 2, &alpha, &mu);
    double det = 1 - s9 * s9;
    ck_assert_double_eq_tol(alpha / (1 / det), 1, 1e-12);
    ck_assert_double_eq_tol(mu / (-s9 / det), 1, 1e-12);
    ck_assert_double_gt(alpha, 1e8);
}
END_TEST

/* λ by real steps (T1 = 1): the model's step at damping λ0 from 1e-4 to 1e2, and the
 * fixed rule's at learning rates from 0.01 to 100, give steps whose decrease the model
 * predicts too well, about right and badly; for each, the twin computes ρ and λ's move,
 * and all three branches are reached. */
START_TEST(lambda_branches_from_real_steps)
{
    int lowered = 0, raised = 0, kept = 0;
    for (int i = 0; i < 48; i++) {
        struct kfac_rng r;
        kfac_rng_seed(&r, 500);
        struct kfac_net *net = net_of("3-6:tanh-4:logistic", chunks[_i], &r);
        float X[TM * 3], T[TM * 4];
        struct kfac_batch b = make_batch(&r, 3, 4, KFAC_LOSS_BERNOULLI, X, T);
        struct kfac_optim_opts o = test_kfac_opts();
        if (i < 24) {
            for (size_t p = 0; p < net->n_params; p++)
                net->params[p] *= 4;
            o.lambda = 1e-4 * pow(10, i / 4.0);
            o.gamma = sqrt(o.lambda);
        } else {
            o.step_rule = KFAC_STEP_FIXED;
            o.learning_rate = 1e-2 * pow(10, (i - 24) / 6.0);
            o.lambda = 1;
        }
        o.lambda_every = 1;
        o.stats_fraction = 1;
        struct tally tally;
        side_by_side(&o, net, KFAC_LOSS_BERNOULLI, &b, 2, 17, &tally);
        /* The twin's ρ decided λ in side_by_side; here the branch of the first move. */
        double lambda1 = tally.first[0], rho = tally.first[2];
        if (lambda1 < o.lambda) {
            lowered++;
            ck_assert_double_gt(rho, 0.75);
        } else if (lambda1 > o.lambda) {
            raised++;
            ck_assert(!(rho >= 0.25));
        } else {
            kept++;
            ck_assert(rho >= 0.25 && rho <= 0.75);
        }
        kfac_net_free(net);
    }
    ck_assert_msg(lowered && raised && kept, "branches reached: lowered %d, raised %d, kept %d",
                  lowered, raised, kept);
    /* The reference figure: one lowering from λ0 = 150 at k = 5. */
    struct kfac_rng r;
    kfac_rng_seed(&r, 510);
    struct kfac_net *net = net_of("3-5:tanh-4:logistic", chunks[_i], &r);
    float X[TM * 3], T[TM * 4];
    struct kfac_batch b = make_batch(&r, 3, 4, KFAC_LOSS_BERNOULLI, X, T);
    struct kfac_optim_opts o = test_kfac_opts();
    struct kfac_optim *opt;
    ck_assert_int_eq(kfac_optim_new(&o, net, KFAC_LOSS_BERNOULLI, &r, &opt), 0);
    double fig[16], h;
    for (long k = 1; k <= 5; k++) {
        ck_assert_int_eq(opt->ops->step(opt, &b, k, &h, fig), 0);
        if (k < 5)
            ck_assert_double_eq(fig[0], 150);
    }
    ck_assert_double_gt(fig[2], 0.75);
    ck_assert_double_eq_tol(fig[0], 116.0671, 5e-5);
    kfac_optim_free(opt);
    kfac_net_free(net);
}
END_TEST

/* A failed attempt after a good step, then a retry with a good batch: factors, stream and
 * parameters must be exactly those of a run that saw only the good batches. Two ways to
 * fail (_i): a step that overflows (a target of 1e38 outside the statistics' cases:
 * finite objective, gradient and statistics, a step of inf), after the batch's statistics
 * were merged; and statistics that overflow (the same target inside the statistics'
 * cases, with the empirical Fisher's real targets), before anything was merged, which
 * must not undo the good step's merge either. */
START_TEST(a_failed_attempt_leaves_no_statistics)
{
    const int curvature[3] = {KFAC_CURVATURE_BLOCK_DIAGONAL, KFAC_CURVATURE_TRIDIAGONAL,
                              KFAC_CURVATURE_KFOC};
    const int in_stats = _i;
    for (int v = 0; v < 3; v++) {
        struct kfac_rng r;
        kfac_rng_seed(&r, 600);
        struct kfac_net *a = net_of("3-5:tanh-4:linear", TM, &r);
        float X1[TM * 3], T1[TM * 4], X2[TM * 3], T2[TM * 4], Tp[TM * 4];
        struct kfac_batch b1 = make_batch(&r, 3, 4, KFAC_LOSS_SQUARED, X1, T1);
        struct kfac_batch b2 = make_batch(&r, 3, 4, KFAC_LOSS_SQUARED, X2, T2);
        memcpy(Tp, T2, sizeof Tp);
        Tp[(in_stats ? 0 : TM - 1) * 4] = 1e38f;
        struct kfac_batch bp = {.m = TM, .x = X2, .t = Tp};
        struct kfac_net *b = spec_net("3-5:tanh-4:linear", TM, &r);
        memcpy(b->params, a->params, a->n_params * sizeof(float));
        struct kfac_optim_opts o = test_kfac_opts();
        o.curvature = curvature[v];
        o.gamma = 1e-4;
        o.lambda = 1e-4;
        o.gamma_every = 0;
        o.inverse_every = 2; /* the poisoned attempt's iteration decomposes */
        o.fisher = in_stats ? KFAC_FISHER_EMPIRICAL : KFAC_FISHER_SAMPLED;
        struct kfac_optim *oa, *ob;
        kfac_rng_seed(&r, 601);
        ck_assert_int_eq(kfac_optim_new(&o, a, KFAC_LOSS_SQUARED, &r, &oa), 0);
        ck_assert_int_eq(kfac_optim_new(&o, b, KFAC_LOSS_SQUARED, &r, &ob), 0);
        double fig[16], h;
        ck_assert_int_eq(oa->ops->step(oa, &b1, 1, &h, fig), 0);
        ck_assert_int_eq(ob->ops->step(ob, &b1, 1, &h, fig), 0);
        ck_assert_int_eq(oa->ops->step(oa, &bp, 4, &h, fig), KFAC_ENUMERIC);
        /* K-FOC fits its factors in double, where the statistics stay finite: its step
         * overflows instead, after the merge. */
        ck_assert_msg(strstr(kfac_last_error(), in_stats && v < 2 ? "statistics (the factor"
                                                                   : "iteration 4: the step"),
                      "%s", kfac_last_error());
        ck_assert_int_eq(oa->ops->step(oa, &b2, 4, &h, fig), 0);
        ck_assert_int_eq(ob->ops->step(ob, &b2, 4, &h, fig), 0);
        for (int i = 0; i < a->n_blocks; i++) {
            size_t na = (size_t)a->blocks[i]->d_in + 1, ng = (size_t)a->blocks[i]->d_out;
            ck_assert_mem_eq(factor(oa, i, "A", na * na), factor(ob, i, "A", na * na),
                             na * na * sizeof(double));
            ck_assert_mem_eq(factor(oa, i, "G", ng * ng), factor(ob, i, "G", ng * ng),
                             ng * ng * sizeof(double));
        }
        if (v == 1) {
            size_t n = (size_t)4 * 6; /* Ā_{1,2}: 4 × 6 */
            ck_assert_mem_eq(factor(oa, 0, "XA", n), factor(ob, 0, "XA", n), n * sizeof(double));
        }
        ck_assert_mem_eq(state_item(oa, "kfac.rng", sizeof r), state_item(ob, "kfac.rng", sizeof r),
                         sizeof r);
        ck_assert_mem_eq(a->params, b->params, a->n_params * sizeof(float));
        kfac_optim_free(oa);
        kfac_optim_free(ob);
        kfac_net_free(a);
        kfac_net_free(b);
    }
}
END_TEST

/* The damped inverse on a factor of condition number 1e10 at γ = 1e-1, 1e-3, 1e-5, applied
 * in float to a float gradient V = fl(V_d), against the exact solve X(V_d) of the unrounded
 * V_d in double. Rounding V_d to float alone moves the exact solve by up to
 * β = ε ‖(G + γ/π I)⁻¹‖₂ ‖V_d‖_F ‖(Ā + γπ I)⁻¹‖₂ (ε: float's rounding); the preconditioning
 * must add no more than a small multiple of that, i.e. no precision is lost beyond what the
 * float gradient already carries. Gradients of real networks lie mostly along the factors'
 * leading eigenvectors, where the relative error is largest, so V_d is drawn that way (and,
 * separately, isotropic). A factor decomposed in float, or inverted without damping, fails.
 * Both ways of forming the inverses: from eigendecompositions (_i = 0) and by Cholesky. */
START_TEST(damped_inverse_precision)
{
    enum { NA = 40, NG = 30 };
    struct kfac_rng r;
    kfac_rng_seed(&r, 700);
    struct kfac_layer_spec spec = {.d_out = NG, .act = KFAC_ACT_LINEAR};
    struct kfac_net *net;
    ck_assert_int_eq(kfac_net_new(NA - 1, &spec, 1, &net), 0);
    kfac_net_reserve(net, 1);
    struct kfac_curvature *c = kfac_curvature_new(net);
    if (_i)
        kfac_curvature_use_cholesky(c, 0);
    /* Ā = Q diag(10^(−10 j/(n−1))) Qᵀ for a random orthogonal Q (and likewise G). */
    double Q[NA * NA], tau[NA];
    for (int side = 0; side < 2; side++) {
        int n = side ? NG : NA;
        double *F = side ? c->f[0].G : c->f[0].A;
        for (int i = 0; i < n * n; i++)
            Q[i] = kfac_rng_normal(&r);
        ck_assert_int_eq(LAPACKE_dgeqrf(LAPACK_ROW_MAJOR, n, n, Q, n, tau), 0);
        ck_assert_int_eq(LAPACKE_dorgqr(LAPACK_ROW_MAJOR, n, n, n, Q, n, tau), 0);
        for (int i = 0; i < n; i++)
            for (int j = 0; j < n; j++) {
                double s = 0;
                for (int q = 0; q < n; q++)
                    s += Q[i * n + q] * pow(10, -10.0 * q / (n - 1)) * Q[j * n + q];
                F[i * n + j] = s;
            }
    }
    ck_assert_int_eq(kfac_curvature_decompose(c, KFAC_PI_TRACE, 1), 0);
    const struct kfac_factors *f = &c->f[0];
    float V[NG * NA], out[NG * NA];
    double worst[3] = {0};
    const double gammas[3] = {1e-1, 1e-3, 1e-5};
    for (int shape = 0; shape < 2; shape++) {
        /* V_d = G W Ā for a random W (aligned) or V_d = W (isotropic). */
        double W[NG * NA], T1[NG * NA], Vd[NG * NA];
        for (int i = 0; i < NG * NA; i++)
            W[i] = kfac_rng_normal(&r);
        cblas_dsymm(CblasRowMajor, CblasLeft, CblasUpper, NG, NA, 1, f->G, NG, W, NA, 0, T1, NA);
        cblas_dsymm(CblasRowMajor, CblasRight, CblasUpper, NG, NA, 1, f->A, NA, T1, NA, 0, Vd, NA);
        if (shape)
            memcpy(Vd, W, sizeof Vd);
        double vnorm = 0;
        for (int i = 0; i < NG * NA; i++) {
            V[i] = (float)Vd[i];
            vnorm += Vd[i] * Vd[i];
        }
        vnorm = sqrt(vnorm);
        for (int gi = 0; gi < 3; gi++) {
            double g = gammas[gi];
            ck_assert_int_eq(kfac_curvature_invert(c, g, 1), 0);
            kfac_curvature_precondition(c, net, V, 1.0f, out);
            /* X(V_d) = (G + γ/π I)⁻¹ V_d (Ā + γπ I)⁻¹ by two Cholesky solves in double. */
            double Ad[NA * NA], Gd[NG * NG], R[NG * NA];
            for (int i = 0; i < NA * NA; i++)
                Ad[i] = f->A[i] + (i % (NA + 1) == 0 ? g * f->pi : 0);
            for (int i = 0; i < NG * NG; i++)
                Gd[i] = f->G[i] + (i % (NG + 1) == 0 ? g / f->pi : 0);
            memcpy(R, Vd, sizeof R);
            ck_assert_int_eq(LAPACKE_dposv(LAPACK_ROW_MAJOR, 'U', NG, NA, Gd, NG, R, NA), 0);
            double Rt[NA * NG];
            for (int i = 0; i < NG; i++)
                for (int j = 0; j < NA; j++)
                    Rt[j * NG + i] = R[i * NA + j];
            ck_assert_int_eq(LAPACKE_dposv(LAPACK_ROW_MAJOR, 'U', NA, NG, Ad, NA, Rt, NG), 0);
            double num = 0;
            for (int i = 0; i < NG; i++)
                for (int j = 0; j < NA; j++) {
                    double d = out[i * NA + j] - Rt[j * NG + i];
                    num += d * d;
                }
            /* The smallest eigenvalues are 1e-10, so the inverses' 2-norms are these. */
            double beta = FLT_EPSILON / 2 * vnorm / ((1e-10 + g / f->pi) * (1e-10 + g * f->pi));
            worst[gi] = fmax(worst[gi], sqrt(num) / beta);
            if (getenv("KFAC_TEST_VERBOSE"))
                printf("%s, %s V, gamma %g: error %.3g = %.3g beta\n", _i ? "cholesky" : "eigen",
                       shape ? "isotropic" : "aligned", g, sqrt(num), sqrt(num) / beta);
        }
    }
    for (int gi = 0; gi < 3; gi++)
        ck_assert_msg(worst[gi] < 4, "gamma %g: the preconditioned gradient is off by %.3g times "
                                     "what rounding the gradient to float causes",
                      gammas[gi], worst[gi]);
    kfac_curvature_free(c);
    kfac_net_free(net);
}
END_TEST

/* A softmax classifier without L2 on separable data, 1500 iterations: the outputs saturate,
 * G vanishes, and γ, tried every 20 iterations, keeps falling; its floor keeps every step
 * finite. ρ stays above 3/4, so λ falls too, to its floor and no further. */
START_TEST(long_classifier_run_stays_finite)
{
    enum { MC = 64, D = 4, K = 3 };
    struct kfac_rng r;
    kfac_rng_seed(&r, 800);
    float X[MC * D], T[MC * K] = {0};
    for (int c = 0; c < MC; c++) {
        int k = c % K;
        for (int j = 0; j < D; j++)
            X[c * D + j] = (float)(kfac_rng_normal(&r) * 0.3 + (j == k ? 3 : 0));
        T[c * K + k] = 1;
    }
    struct kfac_net *net = spec_net("4-8:tanh-3:softmax", MC, &r);
    struct kfac_batch b = {.m = MC, .x = X, .t = T};
    struct kfac_optim_opts o = test_kfac_opts();
    o.lambda = 1;
    o.stats_fraction = 1;
    struct kfac_optim *opt;
    ck_assert_int_eq(kfac_optim_new(&o, net, KFAC_LOSS_SOFTMAX, &r, &opt), 0);
    double fig[16], h = 0, gamma_low = INFINITY, lambda_low = INFINITY;
    for (long k = 1; k <= 1500; k++) {
        ck_assert_msg(opt->ops->step(opt, &b, k, &h, fig) == 0, "%s", kfac_last_error());
        lambda_low = fmin(lambda_low, fig[0]);
        gamma_low = fmin(gamma_low, fig[1]);
    }
    ck_assert_double_ge(gamma_low, KFAC_GAMMA_MIN_NO_L2);
    ck_assert_double_eq(lambda_low, KFAC_DAMPING_MIN); /* reached, and held */
    ck_assert_double_lt(h, 1e-2);
    kfac_optim_free(opt);
    kfac_net_free(net);
}
END_TEST

static Suite *kfac_suite(void)
{
    Suite *s = suite_create("kfac");
    TCase *twin = tcase_create("twin");
    tcase_set_timeout(twin, 120);
    tcase_add_loop_test(twin, statistics_match_the_twin, 0, 3);
    tcase_add_loop_test(twin, schedules_match_the_twin, 0, 3);
    tcase_add_loop_test(twin, steps_match_the_twin, 0, 3);
    tcase_add_loop_test(twin, fixed_step_matches_the_twin, 0, 3);
    tcase_add_loop_test(twin, lambda_branches_from_real_steps, 0, 3);
    tcase_add_loop_test(twin, warmup_matches_the_twin, 0, 3);
    suite_add_tcase(s, twin);
    TCase *hand = tcase_create("by hand");
    tcase_add_test(hand, gamma_candidates_by_hand);
    tcase_add_test(hand, warmup_rule_by_hand);
    tcase_add_test(hand, model_solve_by_hand);
    suite_add_tcase(s, hand);
    TCase *guards = tcase_create("guards");
    tcase_set_timeout(guards, 120);
    tcase_add_loop_test(guards, a_failed_attempt_leaves_no_statistics, 0, 2);
    tcase_add_loop_test(guards, damped_inverse_precision, 0, 2);
    tcase_add_test(guards, long_classifier_run_stays_finite);
    suite_add_tcase(s, guards);
    return s;
}

KFAC_TEST_MAIN(kfac_suite)
