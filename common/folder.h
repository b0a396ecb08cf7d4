/* folder.h -- the folders the herd writes in must be its own user's.
 *
 * The state folder (herd.state_dir) and the log folder (logging.dir) hold
 * what the herd writes (snapshots, metrics, logs, supervisor.state) and
 * what it loads at start (the snapshot, often the secret).  A user who may
 * create, remove or rename names in such a folder could plant a symbolic
 * link where the herd is about to write (and have it overwrite the link's
 * target) or a snapshot of their own.  So the server and the supervisor
 * check both folders before they write anything and refuse to start when
 * one fails: it must be owned by the effective user (root runs in root's
 * folders), with no write bit for group or others.  A missing folder is
 * created first (with its missing parents).  A symbolic link to a folder is
 * followed and the folder it names is checked, so a link to another user's
 * folder is refused; the folders above are not checked.  Where no folder
 * is (one could not be made, a file is in the way) nothing can be written
 * either: that passes here, and each write fails and is logged as it
 * comes (metrics-failed, snapshot-failed, the log's own open).
 *
 * Inside such a folder the files are still opened so that nothing is ever
 * written through a link (O_NOFOLLOW; temporary files O_EXCL after an
 * unlink), whatever an earlier, looser mode let in.
 */
#ifndef HERD_FOLDER_H
#define HERD_FOLDER_H

#include <stddef.h>
#include <sys/types.h>

/* mkdir -p: create 'dir' and its missing parents with 'mode'.  Errors are
 * left to the caller's next open or folder_check(). */
void folder_make(const char *dir, mode_t mode);

/* Create 'dir' (mode 'mode'; 0: create nothing) when it is missing, then
 * check it as above.
 * 'setting' names the config key it comes from ("herd.state_dir").
 * Returns 0, or -1 when it is another user's or open to others, with a
 * message in err that names the folder, what is wrong and the command that
 * fixes it. */
int folder_check(const char *dir, const char *setting, mode_t mode, char *err,
                 size_t errlen);

/* Remove the files in 'dir' named 'prefix' and digits (PREFIXPID: the
 * temporary files of a writer that died), each logged as "EVENT-removed
 * file=PATH (WHY)", or "EVENT file=PATH cannot be removed: REASON". */
void folder_remove_leftovers(const char *dir, const char *prefix, const char *event,
                             const char *why);

#endif
