/*
 * fisher-brute.c: the Fisher study recomputed from what it exported (study.export), by
 * brute force and without the library: its own NPY reader, forward and backward passes
 * in double, each layer's Fisher block F = (1/N) Σ vec(X_k) vec(X_k)ᵀ as a dense matrix,
 * every batch's best Kronecker factors from a dense SVD of its rearranged block (Van
 * Loan & Pitsianis), and the four relative Frobenius errors of the study's table.
 *
 *   fisher-brute SEEDDIR NORMALISE ACT... -- BATCH...
 *
 * SEEDDIR: an export's seed-S directory; NORMALISE: gradient or activation (the factor
 * kept at unit norm); ACT: each dense layer's activation (linear, tanh, logistic, relu);
 * BATCH: the batch sizes (0: all the cases). Prints one line per batch size: the size,
 * then for each layer diag, kfac, kfoc_approx and kfoc_running, tab-separated.
 */
#include <lapacke.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum { MAX_LAYERS = 8 };

static void die(const char *what, const char *path)
{
    fprintf(stderr, "fisher-brute: %s: %s\n", path, what);
    exit(2);
}

/* A little-endian float32 NPY file of one or two dimensions, as doubles. */
static double *read_npy(const char *path, size_t *rows, size_t *cols)
{
    FILE *f = fopen(path, "rb");
    unsigned char pre[10];
    if (!f || fread(pre, 1, 10, f) != 10 || memcmp(pre, "\x93NUMPY\x01", 7) != 0)
        die("not an NPY 1.0 file", path);
    size_t hlen = pre[8] | (size_t)pre[9] << 8;
    char hdr[512];
    if (hlen >= sizeof hdr || fread(hdr, 1, hlen, f) != hlen)
        die("bad header", path);
    hdr[hlen] = '\0';
    if (!strstr(hdr, "'descr': '<f4'"))
        die("not float32", path);
    const char *sh = strstr(hdr, "'shape': (");
    if (!sh)
        die("no shape", path);
    *cols = 1;
    if (sscanf(sh + 10, "%zu, %zu", rows, cols) < 1)
        die("bad shape", path);
    size_t n = *rows * *cols;
    float *tmp = malloc(n * sizeof *tmp);
    double *out = malloc(n * sizeof *out);
    if (fread(tmp, sizeof *tmp, n, f) != n)
        die("short data", path);
    for (size_t i = 0; i < n; i++)
        out[i] = tmp[i];
    free(tmp);
    fclose(f);
    return out;
}

static double act(const char *a, double s)
{
    if (!strcmp(a, "tanh"))
        return tanh(s);
    if (!strcmp(a, "logistic"))
        return 1 / (1 + exp(-s));
    if (!strcmp(a, "relu"))
        return s > 0 ? s : 0;
    return s;
}

/* φ'(s) from s and φ(s). */
static double dact(const char *a, double s, double y)
{
    if (!strcmp(a, "tanh"))
        return 1 - y * y;
    if (!strcmp(a, "logistic"))
        return y * (1 - y);
    if (!strcmp(a, "relu"))
        return s > 0;
    return 1;
}

/* The best L ⊗ R (L: na², R: ng²) for the rearranged block M (na² × ng², destroyed):
 * σ₁ u₁ v₁ᵀ, the factor of `side` (0: L, 1: R) the unit vector, tr L > 0. */
static void kron_fit(int na, int ng, double *M, int side, double *L, double *R)
{
    int p = na * na, q = ng * ng, k = p < q ? p : q;
    double *S = malloc(sizeof *S * k), *U = malloc(sizeof *U * p * p), *VT = malloc(sizeof *VT * q * q),
           *sup = malloc(sizeof *sup * k);
    if (LAPACKE_dgesvd(LAPACK_ROW_MAJOR, 'A', 'A', p, q, M, q, S, U, p, VT, q, sup))
        die("SVD failed", "dgesvd");
    double tr = 0;
    for (int i = 0; i < na; i++)
        tr += U[(i * na + i) * p];
    double sg = tr < 0 ? -1 : 1;
    for (int i = 0; i < p; i++)
        L[i] = sg * (side ? S[0] : 1) * U[i * p];
    for (int i = 0; i < q; i++)
        R[i] = sg * (side ? 1 : S[0]) * VT[i];
    free(S), free(U), free(VT), free(sup);
}

/* M[(j,l),(i,o)] = (1/n) Σ_k ā_kj ā_kl g_ki g_ko over the n cases from `start`. */
static void rearranged(int n, int start, int na, int ng, const double *A, const double *G, double *M)
{
    int q = ng * ng;
    memset(M, 0, sizeof *M * (size_t)na * na * q);
    for (int k = start; k < start + n; k++)
        for (int a = 0; a < na * na; a++)
            for (int b = 0; b < q; b++)
                M[a * q + b] += A[k * na + a / na] * A[k * na + a % na] * G[k * ng + b / ng] *
                                G[k * ng + b % ng] / n;
}

/* ‖F − L ⊗ R‖ / ‖F‖ from the rearranged F of all the cases: ‖R(F) − vec L vec Rᵀ‖. */
static double kron_error(int na, int ng, const double *MF, const double *L, const double *R)
{
    int p = na * na, q = ng * ng;
    double e = 0, f = 0;
    for (int a = 0; a < p; a++)
        for (int b = 0; b < q; b++) {
            double d = MF[a * q + b] - L[a] * R[b];
            e += d * d;
            f += MF[a * q + b] * MF[a * q + b];
        }
    return sqrt(e / f);
}

int main(int argc, char **argv)
{
    if (argc < 5)
        die("usage: fisher-brute SEEDDIR NORMALISE ACT... -- BATCH...", "fisher-brute");
    const char *dir = argv[1];
    int side = strcmp(argv[2], "gradient") == 0;
    int nl = 0, at = 3;
    const char *acts[MAX_LAYERS];
    while (at < argc && strcmp(argv[at], "--") != 0 && nl < MAX_LAYERS)
        acts[nl++] = argv[at++];
    at++;
    char path[1024];
    size_t N, dx, rows, cols;
    snprintf(path, sizeof path, "%s/inputs.npy", dir);
    double *X = read_npy(path, &N, &dx);
    snprintf(path, sizeof path, "%s/output_grads.npy", dir);
    double *GO = read_npy(path, &rows, &cols);
    double *W[MAX_LAYERS], *Abar[MAX_LAYERS], *S[MAX_LAYERS], *Y[MAX_LAYERS], *Gl[MAX_LAYERS];
    size_t dout[MAX_LAYERS], din[MAX_LAYERS];
    for (int l = 0; l < nl; l++) {
        snprintf(path, sizeof path, "%s/weights-%d.npy", dir, l + 1);
        W[l] = read_npy(path, &dout[l], &din[l]);
        din[l] -= 1;
    }
    /* Forward: ā = [input; 1], s = W ā, y = φ(s). */
    for (int l = 0; l < nl; l++) {
        size_t na = din[l] + 1, ng = dout[l];
        Abar[l] = malloc(sizeof(double) * N * na);
        S[l] = malloc(sizeof(double) * N * ng);
        Y[l] = malloc(sizeof(double) * N * ng);
        Gl[l] = malloc(sizeof(double) * N * ng);
        for (size_t k = 0; k < N; k++) {
            const double *in = l ? Y[l - 1] + k * din[l] : X + k * dx;
            memcpy(Abar[l] + k * na, in, sizeof(double) * din[l]);
            Abar[l][k * na + din[l]] = 1;
            for (size_t o = 0; o < ng; o++) {
                double s = 0;
                for (size_t j = 0; j < na; j++)
                    s += W[l][o * na + j] * Abar[l][k * na + j];
                S[l][k * ng + o] = s;
                Y[l][k * ng + o] = act(acts[l], s);
            }
        }
    }
    /* Backward from the sampled ∂ℓ/∂s of the last layer. */
    memcpy(Gl[nl - 1], GO, sizeof(double) * N * dout[nl - 1]);
    for (int l = nl - 2; l >= 0; l--)
        for (size_t k = 0; k < N; k++)
            for (size_t j = 0; j < dout[l]; j++) {
                double b = 0;
                for (size_t o = 0; o < dout[l + 1]; o++)
                    b += W[l + 1][o * (din[l + 1] + 1) + j] * Gl[l + 1][k * dout[l + 1] + o];
                Gl[l][k * dout[l] + j] = b * dact(acts[l], S[l][k * dout[l] + j], Y[l][k * dout[l] + j]);
            }
    for (; at < argc; at++) {
        int B = atoi(argv[at]);
        if (B <= 0 || (size_t)B > N)
            B = (int)N;
        printf("%d", B);
        for (int l = 0; l < nl; l++) {
            int na = (int)din[l] + 1, ng = (int)dout[l], p = na * na, q = ng * ng;
            double *MF = malloc(sizeof(double) * p * q), *M = malloc(sizeof(double) * p * q);
            rearranged((int)N, 0, na, ng, Abar[l], Gl[l], MF);
            /* The diagonal: F_{(j,i),(j,i)} = M[(j,j),(i,i)]; ‖F‖ = ‖M‖. */
            double f2 = 0, off2 = 0;
            for (int a = 0; a < p; a++)
                for (int b = 0; b < q; b++) {
                    f2 += MF[a * q + b] * MF[a * q + b];
                    if (a / na != a % na || b / ng != b % ng)
                        off2 += MF[a * q + b] * MF[a * q + b];
                }
            double *L = malloc(sizeof(double) * p), *R = malloc(sizeof(double) * q);
            double *sL = calloc((size_t)p, sizeof(double)), *sR = calloc((size_t)q, sizeof(double));
            double *rL = malloc(sizeof(double) * p), *rR = malloc(sizeof(double) * q);
            /* K-FAC: Ā ⊗ G of all the cases. */
            for (int a = 0; a < p; a++) {
                L[a] = 0;
                for (size_t k = 0; k < N; k++)
                    L[a] += Abar[l][k * na + a / na] * Abar[l][k * na + a % na] / (double)N;
            }
            for (int b = 0; b < q; b++) {
                R[b] = 0;
                for (size_t k = 0; k < N; k++)
                    R[b] += Gl[l][k * ng + b / ng] * Gl[l][k * ng + b % ng] / (double)N;
            }
            double e_kfac = kron_error(na, ng, MF, L, R);
            int P = (int)((N + B - 1) / B);
            for (int start = 0; start < (int)N; start += B) {
                int n = (int)N - start < B ? (int)N - start : B;
                rearranged(n, start, na, ng, Abar[l], Gl[l], M);
                kron_fit(na, ng, M, side, L, R);
                double w = (double)n / N, u = 1.0 / P;
                for (int a = 0; a < p; a++)
                    sL[a] += (side ? w : u) * L[a];
                for (int b = 0; b < q; b++)
                    sR[b] += (side ? u : w) * R[b];
                if (start == 0) {
                    memcpy(rL, L, sizeof(double) * p);
                    memcpy(rR, R, sizeof(double) * q);
                } else {
                    double v = (double)n / (start + n);
                    for (int a = 0; a < p; a++)
                        for (int b = 0; b < q; b++)
                            M[a * q + b] = (1 - v) * rL[a] * rR[b] + v * L[a] * R[b];
                    kron_fit(na, ng, M, side, rL, rR);
                }
            }
            printf("\t%.9g\t%.9g\t%.9g\t%.9g", sqrt(off2 / f2), e_kfac,
                   kron_error(na, ng, MF, sL, sR), kron_error(na, ng, MF, rL, rR));
            free(MF), free(M), free(L), free(R), free(sL), free(sR), free(rL), free(rR);
        }
        putchar('\n');
    }
    for (int l = 0; l < nl; l++)
        free(W[l]), free(Abar[l]), free(S[l]), free(Y[l]), free(Gl[l]);
    free(X);
    free(GO);
    return 0;
}
