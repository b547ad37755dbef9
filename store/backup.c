/* store_backup: an online copy of the database (store/store.h). */
#include <errno.h>
#include <fcntl.h>
#include <sqlite3.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "store/store.h"
#include "store/store_int.h"

/* fsyncs path (a file or a directory). 0 on success. */
static int sync_path(const char *path, int flags)
{
    int fd = open(path, flags);
    if (fd < 0)
        return -1;
    int rc = fsync(fd);
    close(fd);
    return rc;
}

/* PRAGMA integrity_check on db: RD_OK when it answers exactly "ok". */
static rd_code check_copy(sqlite3 *db, rd_err *err)
{
    sqlite3_stmt *st = NULL;
    int rc = sqlite3_prepare_v2(db, "PRAGMA integrity_check", -1, &st, NULL);
    if (rc != SQLITE_OK)
        return rd_errf(err, RD_INTERNAL, NULL, "cannot check the copy: %s", sqlite3_errstr(rc));
    rd_code code = RD_OK;
    rc = sqlite3_step(st);
    const unsigned char *first = rc == SQLITE_ROW ? sqlite3_column_text(st, 0) : NULL;
    if (first == NULL || strcmp((const char *)first, "ok") != 0)
        code = rd_errf(err, RD_INTERNAL, NULL, "the copy failed its integrity check: %.200s",
                       first != NULL ? (const char *)first : sqlite3_errmsg(db));
    sqlite3_finalize(st);
    return code;
}

rd_code store_backup(const char *db_path, const char *out_path, int64_t *pages, rd_err *err)
{
    char tmp[4096];
    struct stat sb;
    sqlite3 *src = NULL, *dst = NULL;
    rd_code code = RD_OK;
    if (pages != NULL)
        *pages = 0;
    if (snprintf(tmp, sizeof tmp, "%s.tmp", out_path) >= (int)sizeof tmp)
        return rd_errf(err, RD_VALIDATION_FAILED, "out", "the backup path is too long");
    if (stat(out_path, &sb) == 0)
        return rd_errf(err, RD_VALIDATION_FAILED, "out", "%.200s exists: not overwriting it",
                       out_path);
    if (stat(db_path, &sb) != 0)
        return rd_errf(err, RD_UNAVAILABLE, "db", "cannot read %.200s: %s", db_path,
                       strerror(errno));
    unlink(tmp); /* a leftover of an interrupted backup */

    int rc = sqlite3_open_v2(db_path, &src, SQLITE_OPEN_READONLY | SQLITE_OPEN_NOMUTEX, NULL);
    if (rc == SQLITE_OK)
        rc = sqlite3_busy_timeout(src, STORE_BUSY_TIMEOUT_MS);
    if (rc != SQLITE_OK) {
        code = rd_errf(err, RD_UNAVAILABLE, "db", "cannot open %.200s: %s", db_path,
                       sqlite3_errstr(rc));
        goto done;
    }
    store_create_private(tmp); /* 0600: a backup holds every record */
    rc = sqlite3_open_v2(tmp, &dst,
                         SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX, NULL);
    if (rc != SQLITE_OK) {
        code = rd_errf(err, RD_UNAVAILABLE, "out", "cannot create %.200s: %s", tmp,
                       sqlite3_errstr(rc));
        goto done;
    }
    /* One step copies every page inside one read transaction: a consistent
     * snapshot that concurrent WAL writers neither block nor restart. */
    sqlite3_backup *b = sqlite3_backup_init(dst, "main", src, "main");
    if (b == NULL) {
        code =
            rd_errf(err, RD_UNAVAILABLE, NULL, "cannot start the backup: %s", sqlite3_errmsg(dst));
        goto done;
    }
    do {
        rc = sqlite3_backup_step(b, -1);
        if (rc == SQLITE_BUSY || rc == SQLITE_LOCKED)
            sqlite3_sleep(50);
    } while (rc == SQLITE_OK || rc == SQLITE_BUSY || rc == SQLITE_LOCKED);
    if (pages != NULL)
        *pages = sqlite3_backup_pagecount(b);
    int frc = sqlite3_backup_finish(b);
    if (rc != SQLITE_DONE || frc != SQLITE_OK) {
        code = rd_errf(err, RD_UNAVAILABLE, NULL, "the backup failed: %s",
                       sqlite3_errstr(rc != SQLITE_DONE ? rc : frc));
        goto done;
    }
    /* the copy is a standalone file: no -wal beside it */
    rc = sqlite3_exec(dst, "PRAGMA journal_mode=DELETE", NULL, NULL, NULL);
    if (rc != SQLITE_OK) {
        code = rd_errf(err, RD_UNAVAILABLE, NULL, "cannot finish the copy: %s", sqlite3_errstr(rc));
        goto done;
    }
    code = check_copy(dst, err);
done:
    sqlite3_close(src);
    if (sqlite3_close(dst) != SQLITE_OK && code == RD_OK)
        code = rd_errf(err, RD_UNAVAILABLE, "out", "cannot close %.200s", tmp);
    if (code == RD_OK && sync_path(tmp, O_RDONLY) != 0)
        code = rd_errf(err, RD_UNAVAILABLE, "out", "cannot fsync %.200s: %s", tmp, strerror(errno));
    /* link, not rename: a file that appeared at out_path meanwhile is kept */
    if (code == RD_OK && link(tmp, out_path) != 0)
        code = rd_errf(err, errno == EEXIST ? RD_VALIDATION_FAILED : RD_UNAVAILABLE, "out",
                       "cannot create %.200s: %s", out_path, strerror(errno));
    unlink(tmp);
    if (code != RD_OK)
        return code;
    char dir[4096];
    store_dir_of(out_path, dir, sizeof dir);
    sync_path(dir, O_RDONLY | O_DIRECTORY);
    return RD_OK;
}
