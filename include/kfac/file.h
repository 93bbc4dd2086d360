/*
 * file.h: files the program writes whole (checkpoints, generated data sets), written so
 * that neither a failure nor a hostile directory can cost the user a file: a temporary
 * made with mkstemp(3) beside the target (a new name, mode 0600, never a link that was
 * planted there), synced, renamed over the target, and the directory synced after it;
 * and the few things done to path names (directory, suffix).
 */
#ifndef KFAC_FILE_H
#define KFAC_FILE_H

/* The directory path names a file in (caller frees): "." for a bare name, "/" for a file
 * at the root. */
char *kfac_file_dir(const char *path);

/* path with every `from` replaced by `to` (caller frees): a shard's name from its pattern. */
char *kfac_file_pattern(const char *path, const char *from, const char *to);

/* Whether path ends with suffix (".npy", ".ckpt", ...). */
int kfac_file_has_suffix(const char *path, const char *suffix);

/* The length of path without suffix when it ends with it and is longer, else its length:
 * the stem that "%.*s" prints. */
int kfac_file_stem(const char *path, const char *suffix);

/* A new temporary "PATH.XXXXXX" in path's directory, open for writing: its descriptor,
 * its name in *tmp (caller frees). -1 with KFAC_EIO naming path and what it is ("the
 * checkpoint") when it cannot be made. */
int kfac_file_temp(const char *path, const char *what, char **tmp);

/* After the temporary's contents are written: with err 0 (they are whole and synced)
 * renames tmp over path and syncs the directory; with err the errno of the write that
 * failed, removes tmp. Frees tmp. KFAC_EIO naming path, what it is and why when the write
 * or the rename failed. */
int kfac_file_commit(char *tmp, const char *path, const char *what, int err);

#endif
