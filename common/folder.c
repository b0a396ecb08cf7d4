/* folder.c -- create the herd's folders and refuse ones others may write
 * in; see folder.h. */
#include "folder.h"

#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "log.h"

void folder_make(const char *dir, mode_t mode) {
    char tmp[4096];
    snprintf(tmp, sizeof tmp, "%s", dir);
    for (char *p = tmp + 1; *p; p++) {
        if (*p != '/') continue;
        *p = '\0';
        mkdir(tmp, mode);
        *p = '/';
    }
    mkdir(tmp, mode);
}

int folder_check(const char *dir, const char *setting, mode_t mode, char *err,
                 size_t errlen) {
    struct stat st;
    if (mode && stat(dir, &st) < 0 && errno == ENOENT) folder_make(dir, mode);
    /* no folder there (none could be made, or a file is in the way): no
     * file can be put in it either; the writes fail and say so */
    if (stat(dir, &st) < 0 || !S_ISDIR(st.st_mode)) return 0;
    if (st.st_uid != geteuid()) {
        snprintf(err, errlen, "%s %s belongs to uid %u, not to this user (uid %u): another "
                 "user could plant links or files in it that the herd would write through "
                 "or load; make it this user's: chown %u %s", setting, dir,
                 (unsigned)st.st_uid, (unsigned)geteuid(), (unsigned)geteuid(), dir);
        return -1;
    }
    if (st.st_mode & (S_IWGRP | S_IWOTH)) {
        snprintf(err, errlen, "%s %s is writable by %s (mode %04o): another user could "
                 "plant links or files in it that the herd would write through or load; "
                 "make it the owner's alone: chmod go-w %s", setting, dir,
                 (st.st_mode & S_IWGRP) && (st.st_mode & S_IWOTH) ? "group and others"
                 : st.st_mode & S_IWGRP ? "its group" : "others",
                 (unsigned)(st.st_mode & 07777), dir);
        return -1;
    }
    return 0;
}

void folder_remove_leftovers(const char *dir, const char *prefix, const char *event,
                             const char *why) {
    DIR *d = opendir(dir);
    if (!d) return;
    size_t plen = strlen(prefix);
    char removed[128];
    snprintf(removed, sizeof removed, "%s-removed", event);
    struct dirent *e;
    while ((e = readdir(d))) {
        const char *pid = e->d_name + plen;     /* PREFIXPID: digits only */
        if (strncmp(e->d_name, prefix, plen) != 0 || !*pid ||
            strspn(pid, "0123456789") != strlen(pid))
            continue;
        char path[4400];
        snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
        if (unlink(path) == 0)
            log_msg(LOG_WARN, removed, "file=%s (%s)", path, why);
        else
            log_msg(LOG_WARN, event, "file=%s cannot be removed: %s", path, strerror(errno));
    }
    closedir(d);
}
