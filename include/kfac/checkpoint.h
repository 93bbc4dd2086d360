/*
 * checkpoint.h: the complete state of a training run in one file, and back.
 *
 * Whoever owns state lists it as named items (kfac_state_add): the run its iteration,
 * clock, random streams, batch order and averaged parameters, the network its
 * parameters, the optimiser its own (velocity; factors, eigendecompositions, damped
 * inverses, λ, γ, the previous step). A checkpoint writes the items in order; reading
 * one back checks every name and size against the list the resuming run made, so a
 * checkpoint restores exactly what it saved or nothing.
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

/* 2: the eigenvectors and damped inverses of K-FAC's factors are kept in double. */
#define KFAC_CHECKPOINT_VERSION 2

struct kfac_state_item {
    char name[48];
    void *ptr;            /* bytes to save from, and to restore into */
    size_t bytes;
};

/* A list of state items (the list does not own what they point at). */
struct kfac_state {
    int n, cap;
    struct kfac_state_item *items;
};

/* Appends an item; name is copied (at most 47 bytes). */
void kfac_state_add(struct kfac_state *s, const char *name, void *ptr, size_t bytes);
void kfac_state_free(struct kfac_state *s);

/* Writes the items and the configuration's trajectory text (see kfac_config_identity())
 * to path, through a temporary beside it. KFAC_EIO naming the file on failure, when path is untouched. */
int kfac_checkpoint_write(const char *path, const char *config_text, const struct kfac_state *s);

/* A checkpoint file checked against a run's items, ready to restore. */
struct kfac_checkpoint {
    char *path;
    char *config_text;    /* the saved trajectory keys */
};

/* Opens path and checks all of it against the items s of the resuming run (the same
 * names and sizes in the same order): magic, version, length, CRC and items. KFAC_EFORMAT
 * naming the file and what is wrong for a file that is not a checkpoint, of another
 * version, truncated, corrupted or made for other items; KFAC_EIO if it cannot be read.
 * Nothing is allocated from the file's claims beyond its real size. */
int kfac_checkpoint_open(const char *path, const struct kfac_state *s, struct kfac_checkpoint *ck);

/* Copies the checkpoint's items into s (the list kfac_checkpoint_open() checked); the file
 * is read again and its CRC checked again: KFAC_EFORMAT if it changed in between. */
int kfac_checkpoint_restore(const struct kfac_checkpoint *ck, const struct kfac_state *s);

void kfac_checkpoint_close(struct kfac_checkpoint *ck);

/* The keys whose lines differ between two trajectory texts, as "key (was A, now B)"
 * joined by "; " (caller frees), or NULL when they are equal. */
char *kfac_config_text_diff(const char *was, const char *now);

#endif
