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

const svc_method svc_methods[] = {
    {RECORDS "CreateRecord", &recordd__v1__create_record_request__descriptor,
     &recordd__v1__commit_receipt__descriptor, svc_create_record, SVC_UNARY, false},
    {RECORDS "GetRecord", &recordd__v1__get_record_request__descriptor,
     &recordd__v1__record__descriptor, svc_get_record, SVC_UNARY, false},
    {RECORDS "ListRecords", &recordd__v1__list_records_request__descriptor,
     &recordd__v1__list_records_response__descriptor, svc_list_records, SVC_UNARY, false},
    {RECORDS "UpdateRecord", &recordd__v1__update_record_request__descriptor,
     &recordd__v1__commit_receipt__descriptor, svc_update_record, SVC_UNARY, false},
    {RECORDS "ReplaceRecord", &recordd__v1__replace_record_request__descriptor,
     &recordd__v1__commit_receipt__descriptor, svc_replace_record, SVC_UNARY, false},
    {RECORDS "DeleteRecord", &recordd__v1__delete_record_request__descriptor,
     &recordd__v1__commit_receipt__descriptor, svc_delete_record, SVC_UNARY, false},
    {RECORDS "BulkMutate", &recordd__v1__bulk_mutate_request__descriptor,
     &recordd__v1__bulk_mutate_response__descriptor, svc_bulk_mutate, SVC_UNARY, false},
    {RECORDS "WatchChanges", &recordd__v1__watch_changes_request__descriptor,
     &recordd__v1__change_event__descriptor, svc_watch_changes, SVC_SERVER_STREAM, false},

    {SCHEMAS "PushSchema", &recordd__v1__push_schema_request__descriptor,
     &recordd__v1__push_schema_response__descriptor, svc_push_schema, SVC_UNARY, false},
    {SCHEMAS "GetSchema", &recordd__v1__get_schema_request__descriptor,
     &recordd__v1__schema__descriptor, svc_get_schema, SVC_UNARY, false},

    {CLAIMS "AcquireClaim", &recordd__v1__acquire_claim_request__descriptor,
     &recordd__v1__claim__descriptor, svc_acquire_claim, SVC_UNARY, false},
    {CLAIMS "ReleaseClaim", &recordd__v1__release_claim_request__descriptor,
     &recordd__v1__release_claim_response__descriptor, svc_release_claim, SVC_UNARY, false},

    {TOKENS "MintToken", &recordd__v1__mint_token_request__descriptor,
     &recordd__v1__mint_token_response__descriptor, svc_mint_token, SVC_UNARY, false},

    /* public: no credential (health probes, tool discovery) */

    {HEALTH "Check", &grpc__health__v1__health_check_request__descriptor,
     &grpc__health__v1__health_check_response__descriptor, svc_health_check, SVC_UNARY, true},
    {HEALTH "Watch", &grpc__health__v1__health_check_request__descriptor,
     &grpc__health__v1__health_check_response__descriptor, svc_health_watch, SVC_SERVER_STREAM,
     true},

    /* v1alpha is wire-identical to v1: one implementation, the v1 types */
    {REFLECTION_V1 "ServerReflectionInfo",
     &grpc__reflection__v1__server_reflection_request__descriptor,
     &grpc__reflection__v1__server_reflection_response__descriptor, svc_reflection_info,
     SVC_BIDI_STREAM, true},
    {REFLECTION_V1ALPHA "ServerReflectionInfo",
     &grpc__reflection__v1__server_reflection_request__descriptor,
     &grpc__reflection__v1__server_reflection_response__descriptor, svc_reflection_info,
     SVC_BIDI_STREAM, true},
};

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
