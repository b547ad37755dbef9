/* libFuzzer target for the gateway's path matcher (service/gw_route.c)
 * over the routes of the embedded descriptor set. The first input byte
 * picks the HTTP verb; the rest, up to a NUL, is the raw path. A match must
 * bind only well-formed UTF-8 values without NUL; a 405 must name allowed
 * verbs. Build and run: `make fuzz`. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "service/gw_route.h"

extern unsigned char rd_descriptor_set[];
extern unsigned int rd_descriptor_set_len;

static gw_routes *routes;

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const char *const verbs[] = {"GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"};
    if (routes == NULL) {
        rd_err err;
        if (gw_routes_build(rd_descriptor_set, rd_descriptor_set_len, &routes, &err) != RD_OK)
            abort();
    }
    if (size < 1)
        return 0;
    char *path = malloc(size);
    if (path == NULL)
        return 0;
    memcpy(path, data + 1, size - 1);
    path[size - 1] = '\0';
    rd_arena *a = rd_arena_new(1 << 20);
    gw_match m;
    char allow[64];
    gw_route_result r =
        gw_routes_match(routes, verbs[data[0] % 6], path, a, &m, allow, sizeof allow);
    if (r == GW_ROUTE_OK) {
        if (m.method == NULL || m.pattern == NULL || m.n_vars > GW_MAX_VARS)
            abort();
        for (size_t i = 0; i < m.n_vars; i++)
            if (!rd_utf8_valid(m.vars[i].value, strlen(m.vars[i].value)))
                abort();
    } else if (r == GW_ROUTE_METHOD_NOT_ALLOWED) {
        if (allow[0] == '\0' || m.method != NULL)
            abort();
    } else if (r != GW_ROUTE_NOT_FOUND || m.method != NULL) {
        abort();
    }
    rd_arena_free(a);
    free(path);
    return 0;
}
