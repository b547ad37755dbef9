/* pg_int.h: what the PostgreSQL files of store/ share (libpq types; never
 * included outside store/pg_*.c). */
#ifndef STORE_PG_INT_H
#define STORE_PG_INT_H

#include <stddef.h>

#include <libpq-fe.h>

/* Connects to uri with the driver's settings (timeouts, keepalives,
 * application name). NULL on failure, with why in msg (never the
 * password). */
PGconn *store_pg_connect(const char *uri, char *msg, size_t size);

#endif
