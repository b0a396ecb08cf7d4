/* test_secret.c -- secret_create() and secret_load() (common/secret.h): a
 * new secret file holds 64 hex digits and a newline, mode 0600, and loads
 * back; an existing file is never written through (O_EXCL), one holding a
 * secret is kept (1), a link to no file is refused; an empty file is
 * replaced through a temporary file, which is left nowhere. */
#include <dirent.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "check.h"
#include "secret.h"

static char root[64];

static const char *at(const char *name) { return check_at(root, name); }

/* The whole content of a small file, or "" when it cannot be read. */
static const char *content(const char *path) {
    static char buf[256];
    buf[0] = '\0';
    FILE *f = fopen(path, "r");
    if (!f) return buf;
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    buf[n] = '\0';
    fclose(f);
    return buf;
}

static int is_secret(const char *text) {
    if (strlen(text) != 65 || text[64] != '\n') return 0;
    for (int i = 0; i < 64; i++)
        if (!strchr("0123456789abcdef", text[i])) return 0;
    return 1;
}

static int files_in_root(void) {
    DIR *d = opendir(root);
    int n = 0;
    for (struct dirent *e; d && (e = readdir(d));)
        n += e->d_name[0] != '.';
    if (d) closedir(d);
    return n;
}

static void test_new_file(void) {
    char err[512], got[256], first[66];
    CHECK(secret_create(at("new"), 0, err, sizeof err) == 0, "new: %s", err);
    struct stat st;
    CHECK(stat(at("new"), &st) == 0 && (st.st_mode & 07777) == 0600, "mode %o",
          (unsigned)(st.st_mode & 07777));
    snprintf(first, sizeof first, "%s", content(at("new")));
    CHECK(is_secret(first), "not 64 hex digits and a newline: '%s'", first);
    CHECK(secret_load(at("new"), got, sizeof got, err, sizeof err) == 64, "load: %s", err);
    CHECK(strncmp(got, first, 64) == 0, "loaded '%s'", got);
    /* a second start finds it made: kept as it is */
    CHECK(secret_create(at("new"), 0, err, sizeof err) == 1, "again: %s", err);
    CHECK_STR(content(at("new")), first);
    /* two secrets differ */
    CHECK(secret_create(at("other"), 0, err, sizeof err) == 0, "other: %s", err);
    CHECK(strcmp(content(at("other")), first) != 0, "the same secret twice");
}

static void test_never_through_a_link(void) {
    char err[512], want[512];
    CHECK(symlink(at("nowhere"), at("link")) == 0, "symlink");
    CHECK(secret_create(at("link"), 0, err, sizeof err) == -1, "a link to no file passed");
    snprintf(want, sizeof want, "%s exists but holds no secret (a symbolic link to a missing "
             "file?): create the file it names", at("link"));
    CHECK_STR(err, want);
    CHECK(access(at("nowhere"), F_OK) < 0, "written through the link");
}

static void test_replace_empty(void) {
    char err[512];
    FILE *f = fopen(at("empty"), "w");
    if (f) fclose(f);
    chmod(at("empty"), 0600);
    CHECK(secret_load(at("empty"), (char[256]){0}, 256, err, sizeof err) == SECRET_EMPTY,
          "empty not seen: %s", err);
    int before = files_in_root();
    CHECK(secret_create(at("empty"), 1, err, sizeof err) == 0, "replace: %s", err);
    CHECK(is_secret(content(at("empty"))), "replaced with '%s'", content(at("empty")));
    struct stat st;
    CHECK(stat(at("empty"), &st) == 0 && (st.st_mode & 07777) == 0600, "mode %o",
          (unsigned)(st.st_mode & 07777));
    CHECK(files_in_root() == before, "a temporary file was left behind");
}

static void test_no_folder(void) {
    char err[512], want[512];
    CHECK(secret_create(at("missing/secret"), 0, err, sizeof err) == -1, "no folder passed");
    snprintf(want, sizeof want, "cannot create %s: No such file or directory",
             at("missing/secret"));
    CHECK_STR(err, want);
}

int main(void) {
    unsetenv("HERD_SECRET");
    snprintf(root, sizeof root, "/tmp/herdsecretXXXXXX");
    if (!mkdtemp(root)) return 2;
    test_new_file();
    test_never_through_a_link();
    test_replace_empty();
    test_no_folder();
    check_rmtree(root);
    return check_report("secret");
}
