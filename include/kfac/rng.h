/*
 * rng.h: the seeded random number generator (xoshiro256** seeded through splitmix64).
 *
 * All randomness in a run (initialisation, shuffling, sampled targets) comes from
 * struct kfac_rng values whose whole state is the plain struct below: saving and
 * restoring a generator is a memcpy, so a checkpoint can continue the same stream.
 */
#ifndef KFAC_RNG_H
#define KFAC_RNG_H

#include <stddef.h>
#include <stdint.h>

struct kfac_rng {
    uint64_t s[4];     /* xoshiro256** state */
    double spare;      /* second normal of the last Box–Muller pair */
    int has_spare;     /* 1 when spare is unused */
};

/* Seeds the generator; equal seeds give equal streams on every platform. */
void kfac_rng_seed(struct kfac_rng *r, uint64_t seed);

/* 1 when r is a state the generator can be in (its xoshiro words not all zero, a spare
 * normal that Box–Muller can give), 0 for bytes that no seeding led to. */
int kfac_rng_valid(const struct kfac_rng *r);

/* The stream of case i under key (a counter-based draw: splitmix64 of key + 4i·φ and the
 * next three counters seed it), the same whichever process and in whichever order the
 * cases are drawn: sampled targets are keyed so by their place in the whole batch, so that
 * a case draws the same targets whichever rank holds it (comm.h). */
void kfac_rng_case(struct kfac_rng *r, uint64_t key, uint64_t i);

uint64_t kfac_rng_u64(struct kfac_rng *r);

/* Uniform double in [0, 1) with 53 random bits. */
double kfac_rng_uniform(struct kfac_rng *r);

/* Standard normal N(0, 1) (Box–Muller, both values of a pair used). */
double kfac_rng_normal(struct kfac_rng *r);

/* Uniform integer in [0, n) without modulo bias; n > 0. */
uint64_t kfac_rng_below(struct kfac_rng *r, uint64_t n);

/* Fisher–Yates shuffle of idx (n). */
void kfac_rng_shuffle(struct kfac_rng *r, size_t *idx, size_t n);

#endif
