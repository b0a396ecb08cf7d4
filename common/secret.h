/* secret.h -- the herd's shared secret, which links prove they know: its
 * file read and checked (both programs), or created (herd-supervisor
 * --init-secret).
 *
 * It comes from HERD_SECRET when that is set, else from the file named by
 * herd.secret_file.  The file must be a regular file, belong to the user
 * who reads it and be that user's alone (no permission bit for group or
 * others) and must not be empty: an empty secret (or a
 * HERD_SECRET of white space only) would turn every link off without a
 * word.  A missing file is allowed (a herd without links still serves its
 * clients).
 */
#ifndef HERD_SECRET_H
#define HERD_SECRET_H

#include <stddef.h>

#define SECRET_EMPTY (-2)

/* Read the secret into out[cap] (NUL-terminated, trailing white space
 * dropped).  Returns its length (0: no HERD_SECRET and no file), -1 when
 * the file cannot be read or is open to other users, or SECRET_EMPTY; the
 * two errors with a message in err that says how to fix it. */
int secret_load(const char *path, char *out, size_t cap, char *err, size_t errlen);

/* Write a new secret, 64 random hex digits and a newline, to path with
 * mode 0600.  Without 'replace' the file must not exist (O_EXCL: never
 * written through a link); with it, the secret goes to a temporary file
 * renamed over path.  Returns 0; 1 when, without 'replace', another
 * process made a file holding a secret first (it is kept); or -1 with a
 * message in err (a link to no file at path is one). */
int secret_create(const char *path, int replace, char *err, size_t errlen);

#endif
