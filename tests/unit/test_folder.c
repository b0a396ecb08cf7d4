/* test_folder.c -- folder_check() (common/folder.h): a missing folder is
 * made with the mode asked, the owner's 0700 or 0755 folder passes, a
 * folder its group or others may write in is refused with the chmod that
 * fixes it, and (as root) another user's folder, also behind a symbolic
 * link, with the chown that fixes it; a file in the way is left to the
 * writes, which fail on it. */
#include <errno.h>
#include <ftw.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "check.h"
#include "folder.h"

static char root[64];

static const char *at(const char *name) { return check_at(root, name); }

/* folder_check() on 'name' (made with 'mode' first unless mode is 0);
 * returns its result, the message in err. */
static int check(const char *name, mode_t mode, char *err, size_t errlen) {
    err[0] = '\0';
    if (mode) {
        mkdir(at(name), 0700);
        chmod(at(name), mode);   /* whatever the umask */
    }
    return folder_check(at(name), "herd.state_dir", 0700, err, errlen);
}

static void test_modes(void) {
    char err[1024], want[1024];
    CHECK(check("own", 0700, err, sizeof err) == 0, "0700 refused: %s", err);
    CHECK(check("readable", 0755, err, sizeof err) == 0, "0755 refused: %s", err);
    static const struct { mode_t mode; const char *who; } bad[] = {
        {0777, "group and others"}, {0770, "its group"}, {0702, "others"}, {01777, "group and others"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        char name[32];
        snprintf(name, sizeof name, "open%zu", i);
        CHECK(check(name, bad[i].mode, err, sizeof err) == -1, "mode %o passed", bad[i].mode);
        snprintf(want, sizeof want, "herd.state_dir %s is writable by %s (mode %04o): another "
                 "user could plant links or files in it that the herd would write through or "
                 "load; make it the owner's alone: chmod go-w %s", at(name), bad[i].who,
                 (unsigned)bad[i].mode, at(name));
        CHECK_STR(err, want);
    }
}

static void test_missing_and_in_the_way(void) {
    char err[1024];
    struct stat st;
    CHECK(check("a/b/c", 0, err, sizeof err) == 0, "a missing folder: %s", err);
    CHECK(stat(at("a/b/c"), &st) == 0 && S_ISDIR(st.st_mode) && (st.st_mode & 0777) == 0700,
          "a/b/c was not made 0700");
    FILE *f = fopen(at("file"), "w");
    if (f) fclose(f);
    /* nothing can be written there: left to the writes, which fail and log */
    CHECK(check("file", 0, err, sizeof err) == 0, "a file in the way: %s", err);
    CHECK(check("file/sub", 0, err, sizeof err) == 0, "below a file: %s", err);
    CHECK(symlink(at("own"), at("link-to-own")) == 0, "symlink: %s", strerror(errno));
    CHECK(check("link-to-own", 0, err, sizeof err) == 0, "a link to our folder: %s", err);
}

static void test_another_users(void) {
    if (geteuid() != 0) return;   /* only root can give a folder away */
    char err[1024], want[1024];
    mkdir(at("theirs"), 0700);
    CHECK(chown(at("theirs"), 65534, 65534) == 0, "chown: %s", strerror(errno));
    CHECK(symlink(at("theirs"), at("link-to-theirs")) == 0, "symlink: %s", strerror(errno));
    const char *names[] = {"theirs", "link-to-theirs"};
    for (int i = 0; i < 2; i++) {
        CHECK(check(names[i], 0, err, sizeof err) == -1, "%s passed", names[i]);
        snprintf(want, sizeof want, "herd.state_dir %s belongs to uid 65534, not to this user "
                 "(uid 0): another user could plant links or files in it that the herd would "
                 "write through or load; make it this user's: chown 0 %s", at(names[i]),
                 at(names[i]));
        CHECK_STR(err, want);
    }
}

int main(void) {
    snprintf(root, sizeof root, "/tmp/herdfolderXXXXXX");
    if (!mkdtemp(root)) return 2;
    test_modes();
    test_missing_and_in_the_way();
    test_another_users();
    check_rmtree(root);
    return check_report("folder");
}
