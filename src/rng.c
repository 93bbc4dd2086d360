/*
 * rng.c: xoshiro256** (Blackman & Vigna, public domain algorithm), splitmix64 seeding,
 * uniform, normal and bounded draws (see rng.h).
 */
#include "kfac/rng.h"

#include <math.h>

static uint64_t splitmix64(uint64_t *x)
{
    uint64_t z = (*x += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

static uint64_t rotl(uint64_t x, int k)
{
    return (x << k) | (x >> (64 - k));
}

void kfac_rng_seed(struct kfac_rng *r, uint64_t seed)
{
    for (int i = 0; i < 4; i++)
        r->s[i] = splitmix64(&seed);
    r->spare = 0;
    r->has_spare = 0;
}

void kfac_rng_case(struct kfac_rng *r, uint64_t key, uint64_t i)
{
    kfac_rng_seed(r, key + 4 * i * 0x9e3779b97f4a7c15ULL);
}

int kfac_rng_valid(const struct kfac_rng *r)
{
    /* Box–Muller's radius sqrt(−2 ln u) with u ≥ 2⁻⁵³ stays below 8.6. */
    return (r->s[0] | r->s[1] | r->s[2] | r->s[3]) != 0 &&
           (r->has_spare == 0 || r->has_spare == 1) && isfinite(r->spare) &&
           fabs(r->spare) <= 9;
}

uint64_t kfac_rng_u64(struct kfac_rng *r)
{
    uint64_t *s = r->s;
    uint64_t result = rotl(s[1] * 5, 7) * 9;
    uint64_t t = s[1] << 17;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rotl(s[3], 45);
    return result;
}

double kfac_rng_uniform(struct kfac_rng *r)
{
    return (double)(kfac_rng_u64(r) >> 11) * 0x1.0p-53;
}

double kfac_rng_normal(struct kfac_rng *r)
{
    if (r->has_spare) {
        r->has_spare = 0;
        return r->spare;
    }
    /* 1 − u lies in (0, 1], so the logarithm is finite. */
    double u = 1.0 - kfac_rng_uniform(r), v = kfac_rng_uniform(r);
    double rad = sqrt(-2.0 * log(u)), ang = 2.0 * M_PI * v;
    r->spare = rad * sin(ang);
    r->has_spare = 1;
    return rad * cos(ang);
}

uint64_t kfac_rng_below(struct kfac_rng *r, uint64_t n)
{
    /* Rejection from the largest multiple of n below 2^64. */
    uint64_t limit = UINT64_MAX - UINT64_MAX % n;
    uint64_t x;
    do
        x = kfac_rng_u64(r);
    while (x >= limit);
    return x % n;
}

void kfac_rng_shuffle(struct kfac_rng *r, size_t *idx, size_t n)
{
    for (size_t i = n; i > 1; i--) {
        size_t j = (size_t)kfac_rng_below(r, i);
        size_t t = idx[i - 1];
        idx[i - 1] = idx[j];
        idx[j] = t;
    }
}
