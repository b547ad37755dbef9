/* Shared by the unit tests that open a store on a temporary database:
 * removes the database file, its -wal and -shm files and the directory
 * mkdtemp made for them. */
#ifndef UNIT_DB_H
#define UNIT_DB_H

#include <stdio.h>
#include <unistd.h>

static inline void unit_db_remove(const char *dir, const char *path)
{
    char p[4096];
    unlink(path);
    snprintf(p, sizeof p, "%s-wal", path);
    unlink(p);
    snprintf(p, sizeof p, "%s-shm", path);
    unlink(p);
    rmdir(dir);
}

#endif
