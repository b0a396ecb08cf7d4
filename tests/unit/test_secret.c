/* test_secret.c -- the herd's key ring (common/secret.h) and its reload
 * (peer_secrets_read and peer_secrets_use, server/peer.h).
 *
 * secret_create(): a new secret file holds 64 hex digits and a newline,
 * mode 0600, and loads back; an existing file is never written through
 * (O_EXCL), one holding a secret is kept (1), a link to no file is
 * refused; an empty file is replaced through a temporary file, which is
 * left nowhere.  The ring: one secret a line in order, blank and '#' lines
 * skipped, trailing white space dropped, each secret's key id; too many,
 * too long, repeated or NUL-holding secrets refused with the file and
 * line; HERD_SECRET one secret as it is.  secret_file_write() replaces a
 * file, never a link.  A reload swaps the ring, and keeps the old one when
 * the file is bad or gone. */
#include <dirent.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "check.h"
#include "peer.h"
#include "secret.h"
#include "server.h"

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

/* secret_ring_parse of text as a file's, path "f". */
static int parse(const char *text, size_t len, secret_ring *ring, char *err) {
    return secret_ring_parse(text, len, "f", ring, err, 512);
}

static void test_ring_format(void) {
    char err[512] = "";
    secret_ring r;
    const char *text = "# the herd's ring\nnew-secret\n\n   \t\n#old-secret\n old-secret \t\r\n";
    CHECK(parse(text, strlen(text), &r, err) == 2, "two secrets: %s", err);
    CHECK_STR(r.keys[0].key, "new-secret");
    CHECK_STR(r.keys[0].id, "31508166");      /* HMAC-SHA256 by Python's hmac */
    CHECK(r.keys[0].line == 2 && r.keys[0].len == 10, "line %d", r.keys[0].line);
    CHECK_STR(r.keys[1].key, " old-secret");  /* leading blanks are the secret's */
    CHECK(r.keys[1].line == 6, "line %d", r.keys[1].line);
    CHECK(secret_find(&r, "31508166") == &r.keys[0], "found by key id");
    CHECK(secret_find(&r, "3150816") == NULL, "a prefix is not a key id");

    CHECK(parse("s3cret", 6, &r, err) == 1, "one secret, no newline: %s", err);
    CHECK_STR(r.keys[0].key, "s3cret");
    CHECK_STR(r.keys[0].id, "5431833a");
    CHECK(secret_find(&r, "5431833A") == &r.keys[0], "key ids in capitals");

    static const char *const empty[] = {"", "\n\n", " \t\r\n", "# only a comment\n"};
    for (size_t i = 0; i < sizeof empty / sizeof *empty; i++)
        CHECK(parse(empty[i], strlen(empty[i]), &r, err) == SECRET_EMPTY, "empty: '%s'", empty[i]);
    CHECK(strstr(err, "f is empty") && strstr(err, "--init-secret"), "%s", err);

    char many[256] = "";
    for (int i = 1; i <= 8; i++) snprintf(many + strlen(many), 32, "secret-%d\n", i);
    CHECK(parse(many, strlen(many), &r, err) == 8, "eight secrets: %s", err);
    strcat(many, "# the ninth\nsecret-9\n");
    CHECK(parse(many, strlen(many), &r, err) == -1, "nine secrets passed");
    CHECK_STR(err, "f:10: more than 8 secrets; remove old ones (herd-supervisor "
                   "--secret-remove KEYID)");

    CHECK(parse("a1\nb2\n\na1 \n", 11, &r, err) == -1, "a secret twice passed");
    hs_key_id("a1", 2, many);
    char want[512];
    snprintf(want, sizeof want, "f:4: the secret of line 1 again (key id %s)", many);
    CHECK_STR(err, want);

    char longest[300];
    memset(longest, 'x', sizeof longest);
    CHECK(parse(longest, 255, &r, err) == 1 && r.keys[0].len == 255, "255 bytes: %s", err);
    CHECK(parse(longest, 256, &r, err) == -1, "256 bytes passed");
    CHECK_STR(err, "f:1: a secret longer than 255 bytes");
    CHECK(parse("ok\nn\0l\n", 7, &r, err) == -1, "a NUL byte passed");
    CHECK_STR(err, "f:2: a NUL byte in a secret");

    CHECK(secret_refused("fine \n", 6) == NULL, "a good secret refused");
    CHECK(secret_refused("#not", 4) != NULL, "a comment taken for a secret");
    CHECK(secret_refused("two\nlines", 9) != NULL, "two lines taken for a secret");
    CHECK(secret_refused(" \t", 2) != NULL, "blanks taken for a secret");
}

static void write_file(const char *path, const char *text, size_t len) {
    FILE *f = fopen(path, "w");
    if (f) {
        fwrite(text, 1, len, f);
        fclose(f);
    }
    chmod(path, 0600);
}

static void test_ring_load(void) {
    char err[512] = "", first[256];
    secret_ring r;
    write_file(at("ring"), "new-secret\nold-secret\n", 22);
    CHECK(secret_ring_load(at("ring"), &r, err, sizeof err) == 2, "ring: %s", err);
    CHECK_STR(r.keys[1].key, "old-secret");
    CHECK(secret_load(at("ring"), first, sizeof first, err, sizeof err) == 10, "first: %s", err);
    CHECK_STR(first, "new-secret");
    CHECK(secret_ring_load(at("absent"), &r, err, sizeof err) == 0 && r.n == 0, "no file");

    setenv("HERD_SECRET", "one\ntwo \n", 1);       /* one secret, as it is */
    CHECK(secret_ring_load(at("ring"), &r, err, sizeof err) == 1, "HERD_SECRET: %s", err);
    CHECK_STR(r.keys[0].key, "one\ntwo");
    CHECK(r.keys[0].line == 0, "line %d", r.keys[0].line);
    unsetenv("HERD_SECRET");

    static char big[SECRET_FILE_MAX + 2];
    memset(big, '#', sizeof big);
    write_file(at("big"), big, SECRET_FILE_MAX);
    CHECK(secret_ring_load(at("big"), &r, err, sizeof err) == SECRET_EMPTY, "all comment");
    write_file(at("big"), big, SECRET_FILE_MAX + 1);
    CHECK(secret_ring_load(at("big"), &r, err, sizeof err) == -1, "a huge file passed");
    CHECK(strstr(err, "is larger than 16384 bytes"), "%s", err);
}

static void test_file_write(void) {
    char err[512] = "";
    struct stat st;
    CHECK(secret_file_write(at("w"), "a\nb\n", 4, err, sizeof err) == 0, "write: %s", err);
    CHECK_STR(content(at("w")), "a\nb\n");
    CHECK(stat(at("w"), &st) == 0 && (st.st_mode & 07777) == 0600, "mode %o",
          (unsigned)(st.st_mode & 07777));
    int before = files_in_root();
    CHECK(secret_file_write(at("w"), "b\n", 2, err, sizeof err) == 0, "again: %s", err);
    CHECK_STR(content(at("w")), "b\n");
    CHECK(files_in_root() == before, "a temporary file was left behind");
    CHECK(symlink(at("w"), at("wlink")) == 0, "symlink");
    CHECK(secret_file_write(at("wlink"), "c\n", 2, err, sizeof err) == -1, "a link passed");
    CHECK(strstr(err, "is a symbolic link"), "%s", err);
    CHECK_STR(content(at("w")), "b\n");
    CHECK(lstat(at("wlink"), &st) == 0 && S_ISLNK(st.st_mode), "the link was replaced");
}

/* What reload.c does with the ring: read it, then put it in place. */
static int reload(server *s, char *err, size_t errlen) {
    secret_ring ring;
    if (peer_secrets_read(s, s->cfg->herd.secret_file, &ring, err, errlen) < 0) return -1;
    return peer_secrets_use(s, &ring, err, errlen);
}

static void test_reload(void) {
    static config cfg;
    static server s;
    char err[512] = "";
    s.cfg = &cfg;
    snprintf(cfg.herd.secret_file, sizeof cfg.herd.secret_file, "%s", at("reload"));
    CHECK(reload(&s, err, sizeof err) == 0 && s.secrets.n == 0, "none: %s", err);
    write_file(at("reload"), "old-secret\n", 11);
    CHECK(reload(&s, err, sizeof err) == 0 && s.secrets.n == 1, "one: %s", err);
    write_file(at("reload"), "old-secret\nnew-secret\n", 22);
    CHECK(reload(&s, err, sizeof err) == 0 && s.secrets.n == 2, "two: %s", err);
    CHECK_STR(s.secrets.keys[0].key, "old-secret");
    CHECK_STR(s.secrets.keys[1].id, "31508166");
    write_file(at("reload"), "new-secret\nnew-secret\n", 22);
    CHECK(reload(&s, err, sizeof err) == -1, "a bad ring was taken");
    CHECK(s.secrets.n == 2 && !strcmp(s.secrets.keys[0].key, "old-secret"), "old ring lost");
    chmod(at("reload"), 0644);
    CHECK(reload(&s, err, sizeof err) == -1 && s.secrets.n == 2, "0644 taken");
    unlink(at("reload"));
    CHECK(reload(&s, err, sizeof err) == -1 && s.secrets.n == 2, "gone taken");
    CHECK(strstr(err, "is gone") && strstr(err, "keeping the 2 secret(s) loaded"), "%s", err);
    write_file(at("reload"), "new-secret\n", 11);
    CHECK(reload(&s, err, sizeof err) == 0 && s.secrets.n == 1, "new: %s", err);
    CHECK_STR(s.secrets.keys[0].key, "new-secret");
}

int main(void) {
    unsetenv("HERD_SECRET");
    snprintf(root, sizeof root, "/tmp/herdsecretXXXXXX");
    if (!mkdtemp(root)) return 2;
    test_new_file();
    test_never_through_a_link();
    test_replace_empty();
    test_no_folder();
    test_ring_format();
    test_ring_load();
    test_file_write();
    test_reload();
    check_rmtree(root);
    return check_report("secret");
}
