/* init_secret.c -- herd-supervisor --init-secret, which start_servers.sh
 * runs before a start: unless HERD_SECRET is set, make sure the herd's
 * secret file holds a secret.  It creates the file when it is missing
 * (and its folder, mode 0700), replaces it when it is empty, and refuses
 * one that other users may read or a folder others may write in.
 *
 * And the key ring commands of a secret rotation (--secret-install,
 * --secret-use, --secret-remove, --secret-list): each edits the file's
 * lines (comments stay), checks that the servers would read the result,
 * and writes it atomically.  What a secret file must be, and the writing
 * itself, live in common/secret.c.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "folder.h"
#include "secret.h"
#include "supervisor.h"

/* Make the folder of 'path' (mode 0700) unless it exists; -1 with a
 * message on stderr when others may write in it. */
static int secret_folder(const char *path) {
    char dir[4096], err[4400];
    snprintf(dir, sizeof dir, "%s", path);
    char *slash = strrchr(dir, '/');
    if (!slash || slash == dir) return 0;
    *slash = '\0';
    mkdir(dir, 0700);
    if (folder_check(dir, "the folder of herd.secret_file", 0, err, sizeof err) < 0) {
        fprintf(stderr, "herd-supervisor: %s\n", err);
        return -1;
    }
    return 0;
}

int supervisor_init_secret(const config *cfg) {
    const char *env = getenv("HERD_SECRET");
    if (env && *env) return 0;
    const char *path = cfg->herd.secret_file;
    char secret[256], err[4400];
    int n = secret_load(path, secret, sizeof secret, err, sizeof err);
    if (n > 0) return 0;
    if (n == -1) {
        fprintf(stderr, "herd-supervisor: %s\n", err);
        return -1;
    }
    if (secret_folder(path) < 0) return -1;
    int made = secret_create(path, n == SECRET_EMPTY, err, sizeof err);
    if (made < 0) {
        fprintf(stderr, "herd-supervisor: %s\n", err);
        return -1;
    }
    if (made == 1) return 0;
    printf("%s the herd secret %s (mode 0600)%s\n", n == SECRET_EMPTY ? "replaced" : "created",
           path, n == SECRET_EMPTY ? ", which was empty; copy it to every host of the herd" : "");
    return 0;
}

/* ------------------------------------------------------------- key ring */

#define RING_TEXT (SECRET_FILE_MAX + 1)

/* The ring file's text and its ring; 0, or -1 with a message on stderr.
 * A missing or empty file is an empty ring when may_be_empty. */
static int read_ring(const char *path, char *text, secret_ring *ring, int may_be_empty) {
    char err[4400];
    int n = secret_file_read(path, text, RING_TEXT, err, sizeof err);
    ring->n = 0;
    if (n == SECRET_MISSING && may_be_empty) return 0;
    if (n == SECRET_MISSING)
        snprintf(err, sizeof err, "%s does not exist: the herd has no secret yet "
                 "(--init-secret or --secret-install makes one)", path);
    int r = n < 0 ? -1 : secret_ring_parse(text, (size_t)n, path, ring, err, sizeof err);
    if (r > 0 || (r == SECRET_EMPTY && may_be_empty)) return 0;
    fprintf(stderr, "herd-supervisor: %s\n", err);
    return -1;
}

/* Write 'text' without its line 'drop' (0: none) and with 'line' (a
 * secret, or NULL) put before line 'before' (0: at the end), after
 * checking that the result is a ring the servers read.  0, or -1 with a
 * message on stderr. */
static int write_ring(const char *path, const char *text, int drop, const char *line,
                      int before) {
    static char out[RING_TEXT + SECRET_MAX_LEN + 2];
    char err[4400];
    size_t len = 0;
    int no = 0;
    for (const char *p = text; *p;) {
        const char *nl = strchr(p, '\n');
        size_t n = nl ? (size_t)(nl - p) + 1 : strlen(p);
        if (++no == before && line) len += (size_t)sprintf(out + len, "%s\n", line);
        if (no != drop) {
            memcpy(out + len, p, n);
            len += n;
            if (!nl) out[len++] = '\n';
        }
        p += n;
    }
    if (!before && line) len += (size_t)sprintf(out + len, "%s\n", line);
    secret_ring check;
    int r = len > SECRET_FILE_MAX ? -1 : secret_ring_parse(out, len, path, &check, err, sizeof err);
    if (len > SECRET_FILE_MAX)
        snprintf(err, sizeof err, "%s would be larger than %d bytes", path, SECRET_FILE_MAX);
    if (r > 0) r = secret_file_write(path, out, len, err, sizeof err);
    explicit_bzero(out, len);
    explicit_bzero(&check, sizeof check);
    if (r < 0) fprintf(stderr, "herd-supervisor: %s\n", err);
    return r < 0 ? -1 : 0;
}

/* The new secret: from stdin (one line), or random.  0, or -1 (stderr). */
static int new_secret(char *out, size_t cap, int random) {
    char err[256];
    if (random) {
        if (secret_random(out, err, sizeof err) == 0) return 0;
        fprintf(stderr, "herd-supervisor: %s\n", err);
        return -1;
    }
    size_t n = fread(out, 1, cap - 1, stdin);
    out[n] = '\0';
    while (n && strchr("\n\r \t", out[n - 1])) out[--n] = '\0';
    const char *why = secret_refused(out, n);
    if (!why && n > SECRET_MAX_LEN) why = "a secret longer than 255 bytes";
    if (!why) return 0;
    fprintf(stderr, "herd-supervisor: the secret on stdin: %s\n", why);
    return -1;
}

static int ring_install(const char *path, char *text, int random) {
    secret_ring ring;
    char secret[4096], id[HS_KEY_ID_LEN + 1];
    if (read_ring(path, text, &ring, 1) < 0 || new_secret(secret, sizeof secret, random) < 0)
        return 1;
    hs_key_id(secret, strlen(secret), id);
    int ok = !secret_find(&ring, id);
    if (!ok) fprintf(stderr, "herd-supervisor: key %s is already in %s\n", id, path);
    ok = ok && secret_folder(path) == 0 && write_ring(path, text, 0, secret, 0) == 0;
    explicit_bzero(secret, sizeof secret);
    if (!ok) return 1;
    if (!ring.n)
        printf("installed %s in %s, the only key: after a reload this host dials and "
               "accepts with it\n", id, path);
    else
        printf("installed %s in %s (key %d of %d): after a reload this host accepts it; once "
               "every host has it, make it first (--secret-use %s)\n", id, path, ring.n + 1,
               ring.n + 1, id);
    return 0;
}

/* The secret of the ring with key id 'id', or NULL (said on stderr). */
static const secret_key *ring_key(const secret_ring *ring, const char *path, const char *id) {
    const secret_key *k = secret_find(ring, id);
    if (k) return k;
    fprintf(stderr, "herd-supervisor: no key %s in %s; its keys:", id, path);
    for (int i = 0; i < ring->n; i++) fprintf(stderr, " %s", ring->keys[i].id);
    fputc('\n', stderr);
    return NULL;
}

static int ring_use(const char *path, char *text, const char *id) {
    secret_ring ring;
    if (read_ring(path, text, &ring, 0) < 0) return 1;
    const secret_key *k = ring_key(&ring, path, id);
    if (!k) return 1;
    if (k != &ring.keys[0] && write_ring(path, text, k->line, k->key, ring.keys[0].line) < 0)
        return 1;
    printf("%s %s first in %s: after a reload this host dials with it\n", k->id,
           k == &ring.keys[0] ? "was already" : "is now", path);
    return 0;
}

static int ring_remove(const char *path, char *text, const char *id) {
    secret_ring ring;
    if (read_ring(path, text, &ring, 0) < 0) return 1;
    const secret_key *k = ring_key(&ring, path, id);
    if (!k) return 1;
    if (k == &ring.keys[0]) {
        fprintf(stderr, "herd-supervisor: %s is the first key of %s, the one this host dials "
                "with; make another first (--secret-use KEYID) before removing it\n", k->id,
                path);
        return 1;
    }
    if (write_ring(path, text, k->line, NULL, 0) < 0) return 1;
    printf("removed %s from %s (%d key%s left): after a reload this host no longer accepts "
           "it\n", k->id, path, ring.n - 1, ring.n == 2 ? "" : "s");
    return 0;
}

/* Key ids in order, the first marked; never a secret. */
static int ring_list(const char *path) {
    secret_ring ring;
    char err[4400];
    int n = secret_ring_load(path, &ring, err, sizeof err);
    if (n <= 0) {
        fprintf(stderr, "herd-supervisor: %s\n", n == 0 ? "no herd secret: no HERD_SECRET "
                "and no secret file" : err);
        return 1;
    }
    for (int i = 0; i < n; i++)
        printf("%s%s%s\n", ring.keys[i].id, i ? "" : " first",
               ring.keys[i].line ? "" : " (HERD_SECRET)");
    explicit_bzero(&ring, sizeof ring);
    return 0;
}

int supervisor_secret_ring(const config *cfg, const char *what, const char *arg, int random) {
    static char text[RING_TEXT];
    const char *path = cfg->herd.secret_file, *env = getenv("HERD_SECRET");
    if (!strcmp(what, "--secret-list")) return ring_list(path);
    if (env && *env) {
        fprintf(stderr, "herd-supervisor: HERD_SECRET is set, so the servers use it, not the "
                "ring in %s: unset it to change the ring\n", path);
        return 1;
    }
    int rc = !strcmp(what, "--secret-install") ? ring_install(path, text, random)
           : !strcmp(what, "--secret-use")     ? ring_use(path, text, arg)
                                               : ring_remove(path, text, arg);
    explicit_bzero(text, sizeof text);
    return rc;
}
