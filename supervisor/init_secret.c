/* init_secret.c -- herd-supervisor --init-secret, which start_servers.sh
 * runs before a start: unless HERD_SECRET is set, make sure the herd's
 * secret file holds a secret.  It creates the file when it is missing
 * (and its folder, mode 0700), replaces it when it is empty, and refuses
 * one that other users may read or a folder others may write in.  What a
 * secret file must be, and the writing itself, live in common/secret.c.
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
