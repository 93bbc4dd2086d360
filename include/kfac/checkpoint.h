/*
 * checkpoint.h: the complete state of a training run in one file, and back.
 *
 * Whoever owns state lists it as named, typed items (kfac_state_add): the run its
 * iteration, clock, random streams, batch order and averaged parameters, the network its
 * parameters, the optimiser its own (velocity; factors, eigendecompositions, damped
 * inverses, λ, γ, the previous step). A checkpoint writes the items in order; reading
 * one back checks every name and size against the list the resuming run made, and every
 * value against its item's type and range, so a checkpoint restores exactly what it
 * saved or nothing.
 *
 * The CRC-32 guards against damage (a disk, a copy, a truncation), not against a hostile
 * file: anyone can write a checkpoint with a correct CRC. What makes a crafted file
 * harmless is the value checks: finite numbers in their ranges, a batch order that is a
 * permutation, generator states a generator can be in.
 *
 * The file: the magic "KFACCKPT", the format version (uint32), the hash of the
 * configuration's trajectory keys (uint64, FNV-1a), the payload's length (uint64), the
 * payload, and the CRC-32 (zlib) of the payload (uint32), all in the machine's byte
 * order. The payload is the trajectory keys as text (uint32 length, then the text),
 * the item count (uint32), then each item: name length (uint32), name, size (uint64),
 * bytes. It is written to a new mkstemp(3) temporary beside PATH (file.h), fsync'd and
 * renamed over PATH, so a crash while writing leaves the previous checkpoint as it was and
 * a link planted beside it is never written through.
 */
#ifndef KFAC_CHECKPOINT_H
#define KFAC_CHECKPOINT_H

#include <stddef.h>
#include <stdint.h>

/* 2: the eigenvectors and damped inverses of K-FAC's factors are kept in double.
 * 3: K-FAC keeps the case count of K-FOC's running mean (optimizer.kfoc_average). */
#define KFAC_CHECKPOINT_VERSION 6

/* What an item holds: the checks its values pass before anything is restored. */
enum kfac_state_type {
    KFAC_STATE_F32,       /* floats: finite, in [lo, hi] */
    KFAC_STATE_F64,       /* doubles: finite, in [lo, hi] */
    KFAC_STATE_F64_NAN,   /* doubles: NaN (not measured) or finite in [lo, hi] */
    KFAC_STATE_INT,       /* ints in [lo, hi] */
    KFAC_STATE_LONG,      /* longs in [lo, hi] */
    KFAC_STATE_SIZE,      /* size_t in [lo, hi] */
    KFAC_STATE_PERM,      /* n size_t: a permutation of 0 … n−1 */
    KFAC_STATE_RNG,       /* n struct kfac_rng: states kfac_rng_valid() accepts */
};

struct kfac_state_item {
    char name[48];
    enum kfac_state_type type;
    void *ptr;            /* n values to save from, and to restore into */
    size_t n, bytes;      /* values, and their bytes */
    double lo, hi;        /* the range of numeric values (inclusive) */
};

/* A list of state items (the list does not own what they point at). */
struct kfac_state {
    int n, cap;
    struct kfac_state_item *items;
};

/* Appends an item of n values of the type at ptr, numbers over their type's whole range
 * (floats: every finite value); name is copied (at most 47 bytes). */
void kfac_state_add(struct kfac_state *s, const char *name, enum kfac_state_type type, void *ptr,
                    size_t n);

/* The same for numbers that must lie in [lo, hi]. */
void kfac_state_add_range(struct kfac_state *s, const char *name, enum kfac_state_type type,
                          void *ptr, size_t n, double lo, double hi);
void kfac_state_free(struct kfac_state *s);

/* Writes the items and the configuration's trajectory text (see kfac_config_identity())
 * to path, through a temporary beside it. KFAC_EIO naming the file on failure, when path is untouched. */
int kfac_checkpoint_write(const char *path, const char *config_text, const struct kfac_state *s);

/* A checkpoint file checked against a run's items, ready to restore. */
struct kfac_checkpoint {
    char *path;
    char *config_text;    /* the saved trajectory keys */
    int other_items;      /* opening failed because the items are not the run's */
};

/* Opens path and checks all of it against the items s of the resuming run (the same
 * names and sizes in the same order): magic, version, length, CRC, items and their
 * values. KFAC_EFORMAT naming the file and what is wrong for a file that is not a
 * checkpoint, of another version, truncated, too long, corrupted, made for other items,
 * or with a value outside its item's type and range (naming the item, the element and
 * the value); KFAC_EIO if it cannot be read. When the items are not the run's (a
 * checkpoint of another model or optimiser), ck->other_items is set and ck->config_text
 * holds the saved keys, so that the caller can name the keys that differ. Close ck
 * whatever this returns.
 * Nothing is allocated from the file's claims beyond its real size. */
int kfac_checkpoint_open(const char *path, const struct kfac_state *s, struct kfac_checkpoint *ck);

/* Copies the checkpoint's items into s (the list kfac_checkpoint_open() checked); the file
 * is read and checked again: KFAC_EFORMAT if it changed in between (the items may then
 * hold part of it). */
int kfac_checkpoint_restore(const struct kfac_checkpoint *ck, const struct kfac_state *s);

void kfac_checkpoint_close(struct kfac_checkpoint *ck);

/* The keys whose lines differ between two trajectory texts, as "key (was A, now B)"
 * joined by "; " (caller frees), or NULL when they are equal. A key that `was` lacks takes
 * its line in `defaults` (a text like them, or NULL): a checkpoint written before a key
 * existed ran as the key's default. */
char *kfac_config_text_diff(const char *was, const char *now, const char *defaults);

#endif
