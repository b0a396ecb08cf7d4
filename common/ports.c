/* ports.c -- the ephemeral port range, and the process holding a port,
 * from /proc; see ports.h. */
#include "ports.h"

#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "clock.h"

int ports_parse_range(const char *text, int *lo, int *hi) {
    char *end;
    long a = strtol(text, &end, 10);
    if (end == text || !isspace((unsigned char)*end)) return -1;
    const char *p = end;
    long b = strtol(p, &end, 10);
    if (end == p) return -1;
    while (isspace((unsigned char)*end)) end++;
    if (*end || a < 1 || b > 65535 || a > b) return -1;
    *lo = (int)a;
    *hi = (int)b;
    return 0;
}

int ports_ephemeral_range(int *lo, int *hi) {
    char text[64];
    FILE *f = fopen(PORTS_RANGE_FILE, "r");
    if (!f) return -1;
    size_t len = fread(text, 1, sizeof text - 1, f);
    fclose(f);
    text[len] = '\0';
    return ports_parse_range(text, lo, hi);
}

int ports_ephemeral_warning(const char *name, int port, char *out, size_t n) {
    int lo, hi;
    if (ports_ephemeral_range(&lo, &hi) < 0 || port < lo || port > hi) return 0;
    snprintf(out, n, "port %d of %s is in the ephemeral range %d-%d "
             "(net.ipv4.ip_local_port_range): an outgoing connection may hold it when %s "
             "restarts", port, name, lo, hi, name);
    return 1;
}

/* Append inode to the array (*v, *n, *cap); -1 when memory runs out. */
static int push(unsigned long **v, size_t *n, size_t *cap, unsigned long inode) {
    if (*n == *cap) {
        size_t more = *cap ? *cap * 2 : 16;
        unsigned long *w = realloc(*v, more * sizeof *w);
        if (!w) return -1;
        *v = w;
        *cap = more;
    }
    (*v)[(*n)++] = inode;
    return 0;
}

int ports_inodes(int port, int listen_only, unsigned long **out, size_t *n) {
    static const char *tables[] = {"/proc/net/tcp", "/proc/net/tcp6"};
    unsigned long *inodes = NULL;
    size_t cap = 0;
    int read_any = 0, rc = 0;
    *n = 0;
    for (size_t t = 0; t < 2 && rc == 0; t++) {
        FILE *f = fopen(tables[t], "r");
        if (!f) continue;   /* no tcp6 without IPv6 */
        read_any = 1;
        char line[512];
        for (long k = 0; k < PORTS_MAX_LINES && fgets(line, sizeof line, f); k++) {
            unsigned lport, st;
            unsigned long inode;
            if (sscanf(line, " %*d: %*x:%x %*x:%*x %x %*x:%*x %*x:%*x %*x %*d %*d %lu",
                       &lport, &st, &inode) != 3 || (int)lport != port || !inode ||
                (listen_only && st != 0x0A))
                continue;
            if (push(&inodes, n, &cap, inode) < 0) {
                rc = -1;
                break;
            }
        }
        fclose(f);
    }
    if (rc < 0 || !read_any) {
        free(inodes);
        return -1;
    }
    *out = inodes;
    return 0;
}

int ports_pid_holds(long pid, const unsigned long *inodes, size_t n) {
    char path[64], link[64 + 2 + sizeof ((struct dirent *)0)->d_name], target[64];
    snprintf(path, sizeof path, "/proc/%ld/fd", pid);
    DIR *d = opendir(path);
    if (!d) return errno == EACCES ? -1 : 0;
    int found = 0;
    struct dirent *e;
    while (!found && (e = readdir(d))) {
        unsigned long inode;
        snprintf(link, sizeof link, "%s/%s", path, e->d_name);
        ssize_t len = readlink(link, target, sizeof target - 1);
        if (len < 0) continue;
        target[len] = '\0';
        if (sscanf(target, "socket:[%lu]", &inode) != 1) continue;
        for (size_t i = 0; i < n && !found; i++) found = inodes[i] == inode;
    }
    closedir(d);
    return found;
}

/* "pid N (comm)" of the first process holding one of inodes; hidden: some
 * process's descriptors could not be read.  1 found, 0 not, -1 out of time. */
static int find_holder(const unsigned long *inodes, size_t n, char *out, size_t len,
                       int *hidden) {
    DIR *d = opendir("/proc");
    if (!d) return 0;
    int64_t deadline = mono_ms() + PORTS_HOLDER_MS;
    int found = 0;
    struct dirent *e;
    while (!found && (e = readdir(d))) {
        if (!isdigit((unsigned char)e->d_name[0])) continue;
        if (mono_ms() > deadline) {
            found = -1;
            break;
        }
        long pid = atol(e->d_name);
        int holds = ports_pid_holds(pid, inodes, n);
        if (holds < 0) *hidden = 1;
        if (holds <= 0) continue;
        char path[64], comm[64] = "?";
        snprintf(path, sizeof path, "/proc/%ld/comm", pid);
        FILE *f = fopen(path, "r");
        if (f) {
            if (fgets(comm, sizeof comm, f)) comm[strcspn(comm, "\n")] = '\0';
            fclose(f);
        }
        snprintf(out, len, "held by pid %ld (%s)", pid, comm);
        found = 1;
    }
    closedir(d);
    return found;
}

void ports_holder(int port, char *out, size_t n) {
    unsigned long *inodes;
    size_t count;
    out[0] = '\0';
    if (ports_inodes(port, 0, &inodes, &count) < 0) return;
    int hidden = 0;
    int found = count ? find_holder(inodes, count, out, n, &hidden) : 0;
    free(inodes);
    if (found < 0)
        snprintf(out, n, "its holder not found within %d ms", PORTS_HOLDER_MS);
    else if (!found && count && hidden)
        snprintf(out, n, "held by a process this user may not inspect (another user's)");
}
