/*
 * ddouble.h: double-double arithmetic (a value as an unevaluated sum hi + lo of two
 * doubles, about 106 bits; Dekker 1971, Knuth's TwoSum, TwoProd through fma), for the few
 * sums whose terms cancel: the Fisher errors of approximations that are nearly exact
 * (curvature_kfoc.c). Internal to the library.
 */
#ifndef KFAC_DDOUBLE_H
#define KFAC_DDOUBLE_H

#include <math.h>
#include <stddef.h>

struct dd {
    double hi, lo;
};

/* a + b exactly, |a| ≥ |b| not needed. */
static inline struct dd dd_two_sum(double a, double b)
{
    double s = a + b, bb = s - a;
    return (struct dd){s, (a - (s - bb)) + (b - bb)};
}

/* hi + lo renormalised, for |hi| ≥ |lo|. */
static inline struct dd dd_fast(double hi, double lo)
{
    double s = hi + lo;
    return (struct dd){s, lo - (s - hi)};
}

static inline struct dd dd_add(struct dd x, struct dd y)
{
    struct dd s = dd_two_sum(x.hi, y.hi);
    return dd_fast(s.hi, s.lo + x.lo + y.lo);
}

/* x + a·b, the product exact. */
static inline struct dd dd_add_prod(struct dd x, double a, double b)
{
    double p = a * b;
    struct dd s = dd_two_sum(x.hi, p);
    return dd_fast(s.hi, s.lo + fma(a, b, -p) + x.lo);
}

static inline struct dd dd_mul(struct dd x, struct dd y)
{
    double p = x.hi * y.hi;
    return dd_fast(p, fma(x.hi, y.hi, -p) + x.hi * y.lo + x.lo * y.hi);
}

static inline struct dd dd_scale(struct dd x, double a)
{
    return dd_mul(x, (struct dd){a, 0});
}

static inline struct dd dd_div(struct dd x, double a)
{
    double q = x.hi / a;
    struct dd r = dd_add(x, dd_mul((struct dd){q, 0}, (struct dd){-a, 0}));
    return dd_fast(q, r.hi / a);
}

/* x·y over n doubles. */
static inline struct dd dd_dot(size_t n, const double *x, const double *y)
{
    struct dd s = {0, 0};
    for (size_t i = 0; i < n; i++)
        s = dd_add_prod(s, x[i], y[i]);
    return s;
}

#endif
