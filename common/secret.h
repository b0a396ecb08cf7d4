/* secret.h -- the herd's key ring, the secrets links prove they know: its
 * file read and checked (both programs), created (herd-supervisor
 * --init-secret) or rewritten (the --secret-* commands).
 *
 * It comes from HERD_SECRET when that is set (one secret), else from the
 * file named by herd.secret_file: one secret a line, at most
 * SECRET_RING_MAX, blank lines and lines starting with '#' skipped,
 * trailing white space dropped.  The first secret is the one a server
 * dials with; an acceptor takes a link keyed by any (docs/PROTOCOL.md,
 * "The herd secret").  The file must be a regular file, belong to the
 * user who reads it and be that user's alone (no permission bit for group
 * or others) and must hold a secret: an empty ring (or a HERD_SECRET of
 * white space only) would turn every link off without a word.  A missing
 * file is allowed (a herd without links still serves its clients).
 */
#ifndef HERD_SECRET_H
#define HERD_SECRET_H

#include <stddef.h>

#include "handshake.h"

#define SECRET_EMPTY (-2)
#define SECRET_MISSING (-3)
#define SECRET_RING_MAX 8
#define SECRET_MAX_LEN 255
#define SECRET_FILE_MAX 16384   /* bytes: the ring, comments and all */

typedef struct {
    char key[SECRET_MAX_LEN + 1];   /* NUL-terminated */
    size_t len;
    char id[HS_KEY_ID_LEN + 1];     /* hs_key_id(key) */
    int line;                       /* in the file; 0 from HERD_SECRET */
} secret_key;

typedef struct {
    int n;                          /* 0: no secret, links are off */
    secret_key keys[SECRET_RING_MAX];
} secret_ring;

/* Read the key ring: HERD_SECRET, else the file at path.  Returns how many
 * secrets it holds (0: no HERD_SECRET and no file), -1 when the file
 * cannot be read, is open to other users or breaks the format, or
 * SECRET_EMPTY; the two errors with a message in err that says how to fix
 * it (a format error names the file and line). */
int secret_ring_load(const char *path, secret_ring *ring, char *err, size_t errlen);

/* The ring of a file's text[0..len): as secret_ring_load, path only for
 * messages.  Returns the number of secrets (> 0), SECRET_EMPTY or -1. */
int secret_ring_parse(const char *text, size_t len, const char *path, secret_ring *ring,
                      char *err, size_t errlen);

/* Is s[0..n) (trailing white space dropped) a secret a ring may hold?
 * NULL, or why not (static text). */
const char *secret_refused(const char *s, size_t n);

/* The ring's secret whose key id is id (case ignored), or NULL. */
const secret_key *secret_find(const secret_ring *ring, const char *id);

/* Read and check the secret file itself, as secret_ring_load does, into
 * buf[cap] (NUL-terminated).  Returns its length, SECRET_MISSING when there
 * is no file, or -1 with a message in err. */
int secret_file_read(const char *path, char *buf, size_t cap, char *err, size_t errlen);

/* Read the ring (secret_ring_load) and put its first secret into out[cap].
 * Returns its length, 0, -1 or SECRET_EMPTY as secret_ring_load. */
int secret_load(const char *path, char *out, size_t cap, char *err, size_t errlen);

/* Write a new secret, 64 random hex digits and a newline, to path with
 * mode 0600.  Without 'replace' the file must not exist (O_EXCL: never
 * written through a link); with it, the secret goes to a temporary file
 * renamed over path.  Returns 0; 1 when, without 'replace', another
 * process made a file holding a secret first (it is kept); or -1 with a
 * message in err (a link to no file at path is one). */
int secret_create(const char *path, int replace, char *err, size_t errlen);

/* 64 random hex digits into out (NUL-terminated).  0, or -1 with err. */
int secret_random(char out[65], char *err, size_t errlen);

/* Replace the file at path with text[0..len), mode 0600, through a
 * temporary file, fsync and rename, as secret_create does; a symbolic link
 * at path is refused, never written through or replaced.  0, or -1 with
 * a message in err. */
int secret_file_write(const char *path, const char *text, size_t len, char *err,
                      size_t errlen);

#endif
