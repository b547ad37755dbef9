/* db.c: choosing a driver from a database target, and keeping passwords
 * out of everything recordd prints. */
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "store/db.h"
#include "store/store.h"

int store_db_is_postgres(const char *target)
{
    return target != NULL && (strncasecmp(target, "postgres://", 11) == 0 ||
                              strncasecmp(target, "postgresql://", 13) == 0);
}

int store_db_open(const char *target, const store_db_options *opt, store_db **out, char *msg,
                  size_t size)
{
    if (store_db_is_postgres(target))
        return store_pg_open(target, opt, out, msg, size);
    if (strncmp(target, "sqlite:", 7) == 0)
        target += 7;
    return store_sqlite_open(target, opt, out, msg, size);
}

/* postgres://user:secret@host/db -> postgres://user:***@host/db; a
 * password=... query parameter likewise. Other targets are copied. */
void store_target_redact(const char *target, char *out, size_t size)
{
    size_t n = 0;
    if (size == 0)
        return;
    out[0] = '\0';
    if (target == NULL)
        return;
    const char *p = target;
    const char *auth_end = NULL;
    if (store_db_is_postgres(target)) {
        const char *host = strstr(target, "://") + 3;
        const char *slash = host + strcspn(host, "/?#");
        /* the userinfo ends at the last '@' before the path */
        for (const char *q = host; q < slash; q++)
            if (*q == '@')
                auth_end = q;
        if (auth_end != NULL) {
            const char *colon = memchr(host, ':', (size_t)(auth_end - host));
            if (colon != NULL) {
                n = (size_t)snprintf(out, size, "%.*s:***", (int)(colon - target), target);
                p = auth_end;
            }
        }
    }
    while (*p != '\0' && n + 1 < size) {
        bool at_param = p > target && (p[-1] == '?' || p[-1] == '&');
        if (at_param && strncasecmp(p, "password=", 9) == 0) {
            n += (size_t)snprintf(out + n, size - n, "%.9s***", p);
            p += strcspn(p, "&#");
            continue;
        }
        out[n++] = *p++;
        out[n] = '\0';
    }
    if (n >= size)
        out[size - 1] = '\0';
}

const char *store_target_file(const char *target)
{
    if (target == NULL || store_db_is_postgres(target))
        return NULL;
    return strncmp(target, "sqlite:", 7) == 0 ? target + 7 : target;
}

void store_target_scrub(char *s)
{
    char *scheme = s != NULL ? strstr(s, "://") : NULL;
    if (scheme == NULL)
        return;
    char *host = scheme + 3;
    char *path = host + strcspn(host, "/?#");
    char *at = NULL;
    for (char *q = host; q < path; q++)
        if (*q == '@')
            at = q;
    char *colon = at != NULL ? memchr(host, ':', (size_t)(at - host)) : NULL;
    for (char *q = colon != NULL ? colon + 1 : at; colon != NULL && q < at; q++)
        *q = '*';
    for (char *q = path; *q != '\0';) {
        bool param = q[-1] == '?' || q[-1] == '&';
        if (param && strncasecmp(q, "password=", 9) == 0) {
            for (q += 9; *q != '\0' && *q != '&' && *q != '#'; q++)
                *q = '*';
        } else {
            q++;
        }
    }
}
