/* gw_route: HTTP routes built at start-up from the google.api.http options
 * of the embedded FileDescriptorSet (DESIGN.md §8): path templates with
 * variables ({model}, or {name=...} binding a pattern of segments),
 * `body: "*"` / `body: "field"`, additional_bindings and custom verbs
 * (":claim"). A raw ':' in the last path segment starts the custom verb, so
 * an id holding ':' travels percent-encoded (%3A). No route is written by
 * hand: a method in the descriptor set that has an http rule and a row in
 * svc_methods gets a route. */
#ifndef GW_ROUTE_H
#define GW_ROUTE_H

#include <stdbool.h>
#include <stddef.h>

#include "common/rd.h"
#include "service/svc.h"

typedef struct gw_routes gw_routes;

enum { GW_MAX_VARS = 8 };

/* One path variable bound by a match: field path (dotted proto names, as
 * in the template) and its percent-decoded value (in the arena). */
typedef struct gw_var {
    const char *field;
    const char *value;
} gw_var;

typedef struct gw_match {
    const svc_method *method; /* the row of svc_methods */
    /* NULL: no body (GET/DELETE); "*": the whole request message; else the
     * dotted field path the body binds to. */
    const char *body;
    /* response_body of the rule, NULL when the whole response. */
    const char *response_body;
    const char *pattern; /* the template, for metrics labels ("/v1/models/{model}") */
    size_t index;        /* the route's row, as gw_routes_get numbers them */
    size_t n_vars;
    gw_var vars[GW_MAX_VARS];
} gw_match;

typedef enum gw_route_result {
    GW_ROUTE_OK = 0,
    GW_ROUTE_NOT_FOUND = 404,          /* no template matches the path */
    GW_ROUTE_METHOD_NOT_ALLOWED = 405, /* the path matches, the verb does not */
} gw_route_result;

/* Builds the routes from a serialized FileDescriptorSet (rd_descriptor_set
 * in the binary). Fails with RD_INTERNAL naming the method on a template
 * that cannot be parsed or a method without a svc_methods row. */
rd_code gw_routes_build(const void *desc_set, size_t len, gw_routes **out, rd_err *err);
void gw_routes_free(gw_routes *r);

/* Matches an HTTP verb ("GET", ...) and a raw request path (no query
 * string; percent-encoded) against the routes. Variable values are
 * percent-decoded into a; a value with invalid UTF-8 or a NUL does not
 * match. On GW_ROUTE_METHOD_NOT_ALLOWED, allow gets the verbs the path
 * accepts ("GET, PATCH"), NUL-terminated, truncated to allow_len. A more
 * literal template wins over a more general one. */
gw_route_result gw_routes_match(const gw_routes *r, const char *verb, const char *path, rd_arena *a,
                                gw_match *m, char *allow, size_t allow_len);

/* Number of routes and the i-th route's verb, template and method, for
 * docs, metrics and tests. */
size_t gw_routes_count(const gw_routes *r);
void gw_routes_get(const gw_routes *r, size_t i, const char **verb, const char **pattern,
                   const svc_method **method);

/* The i-th route in full, for the OpenAPI document (service/gw_openapi.c). */
typedef struct gw_route_info {
    const char *verb, *pattern;
    const svc_method *method;
    const char *body, *response_body; /* NULL when none */
    const char *doc;                  /* the method's leading proto comment, or NULL */
} gw_route_info;
void gw_routes_info(const gw_routes *r, size_t i, gw_route_info *out);

#endif
