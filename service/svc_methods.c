/* The method table: one row per RPC the server answers, read by the server
 * core at start-up (registration), by health (known services) and by
 * reflection (list_services). A new RPC is a new row and a handler. */
#include <string.h>

#include "grpc/health/v1/health.pb-c.h"
#include "grpc/reflection/v1/reflection.pb-c.h"
#include "recordd/v1/claims.pb-c.h"
#include "recordd/v1/records.pb-c.h"
#include "recordd/v1/schema.pb-c.h"
#include "recordd/v1/tokens.pb-c.h"
#include "service/server_int.h"
#include "service/svc_handlers.h"

#define RECORDS "/recordd.v1.Records/"
#define SCHEMAS "/recordd.v1.Schemas/"
#define CLAIMS "/recordd.v1.Claims/"
#define TOKENS "/recordd.v1.Tokens/"
#define HEALTH "/grpc.health.v1.Health/"
#define REFLECTION_V1 "/grpc.reflection.v1.ServerReflection/"
#define REFLECTION_V1ALPHA "/grpc.reflection.v1alpha.ServerReflection/"

#define M(service, name, req_type, resp_type, fn)                                                  \
    .path = service #name, .req = &req_type##__descriptor, .resp = &resp_type##__descriptor,       \
    .handler = fn

const svc_method svc_methods[] = {
    {M(RECORDS, CreateRecord, recordd__v1__create_record_request, recordd__v1__commit_receipt,
       svc_create_record),
     .cq_fast_path = true, .http_status = 201, .http_location = true},
    {M(RECORDS, GetRecord, recordd__v1__get_record_request, recordd__v1__record, svc_get_record),
     .http_if_match_on_reply = true},
    {M(RECORDS, ListRecords, recordd__v1__list_records_request, recordd__v1__list_records_response,
       svc_list_records)},
    {M(RECORDS, UpdateRecord, recordd__v1__update_record_request, recordd__v1__commit_receipt,
       svc_update_record),
     .cq_fast_path = true},
    {M(RECORDS, ReplaceRecord, recordd__v1__replace_record_request, recordd__v1__commit_receipt,
       svc_replace_record),
     .cq_fast_path = true},
    {M(RECORDS, DeleteRecord, recordd__v1__delete_record_request, recordd__v1__commit_receipt,
       svc_delete_record),
     .cq_fast_path = true},
    {M(RECORDS, BulkMutate, recordd__v1__bulk_mutate_request, recordd__v1__bulk_mutate_response,
       svc_bulk_mutate),
     .http_partial_status = 207, .http_rolled_back_status = 422},
    {M(RECORDS, WatchChanges, recordd__v1__watch_changes_request, recordd__v1__change_event,
       svc_watch_changes),
     .kind = SVC_SERVER_STREAM},

    {M(SCHEMAS, PushSchema, recordd__v1__push_schema_request, recordd__v1__push_schema_response,
       svc_push_schema)},
    {M(SCHEMAS, GetSchema, recordd__v1__get_schema_request, recordd__v1__schema, svc_get_schema)},

    {M(CLAIMS, AcquireClaim, recordd__v1__acquire_claim_request, recordd__v1__claim,
       svc_acquire_claim)},
    {M(CLAIMS, ReleaseClaim, recordd__v1__release_claim_request,
       recordd__v1__release_claim_response, svc_release_claim)},

    {M(TOKENS, MintToken, recordd__v1__mint_token_request, recordd__v1__mint_token_response,
       svc_mint_token)},

    /* public: no credential (health probes, tool discovery) */

    {M(HEALTH, Check, grpc__health__v1__health_check_request,
       grpc__health__v1__health_check_response, svc_health_check),
     .public = true, .always_answered = true},
    {M(HEALTH, Watch, grpc__health__v1__health_check_request,
       grpc__health__v1__health_check_response, svc_health_watch),
     .kind = SVC_SERVER_STREAM, .public = true},

    /* v1alpha is wire-identical to v1: one implementation, the v1 types */
    {M(REFLECTION_V1, ServerReflectionInfo, grpc__reflection__v1__server_reflection_request,
       grpc__reflection__v1__server_reflection_response, svc_reflection_info),
     .kind = SVC_BIDI_STREAM, .public = true},
    {M(REFLECTION_V1ALPHA, ServerReflectionInfo, grpc__reflection__v1__server_reflection_request,
       grpc__reflection__v1__server_reflection_response, svc_reflection_info),
     .kind = SVC_BIDI_STREAM, .public = true},
};

#undef M

const size_t svc_n_methods = sizeof svc_methods / sizeof svc_methods[0];

size_t svc_method_service(const svc_method *m, const char **name)
{
    *name = NULL;
    if (m->path[0] != '/')
        return 0;
    const char *slash = strchr(m->path + 1, '/');
    if (slash == NULL || slash == m->path + 1)
        return 0;
    *name = m->path + 1;
    return (size_t)(slash - (m->path + 1));
}

bool svc_method_in_service(const svc_method *m, const char *service)
{
    const char *name;
    size_t n = svc_method_service(m, &name);
    return n > 0 && strlen(service) == n && memcmp(name, service, n) == 0;
}

bool svc_service_known(const char *service)
{
    for (size_t i = 0; i < svc_n_methods; i++)
        if (svc_method_in_service(&svc_methods[i], service))
            return true;
    return false;
}
