/* gw_openapi: the HTTP API as an OpenAPI 3.1 document, built from what
 * serves it: the route table (google.api.http options and the methods'
 * proto comments), the method table's HTTP policy (success status, ETag,
 * Location, the codes each method answers), the message descriptors in the
 * proto3 JSON mapping of gw_json.h and, for an organisation, its schema:
 * each model's record data as a JSON Schema, used in that model's own
 * paths. Pure: no call, no store; docs/API.md "OpenAPI" describes the
 * document. */
#ifndef GW_OPENAPI_H
#define GW_OPENAPI_H

#include <jansson.h>

#include "recordd/v1/schema.pb-c.h"
#include "service/gw_route.h"

/* Builds the document (a new jansson object; NULL when out of memory).
 * schema NULL: the fixed API with generic record bodies (/v1/models/{model}).
 * Otherwise each path under /v1/models/{model} is written once per model of
 * the schema, with that model's typed record data (a schema without models
 * keeps the generic paths). */
json_t *gw_openapi_build(const gw_routes *routes, const Recordd__V1__Schema *schema);

#endif
