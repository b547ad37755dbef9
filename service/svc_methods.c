/* The method table: one row per RPC the server answers, read by the call
 * core and the gRPC transport (registration), the HTTP gateway (routes),
 * health (known services) and reflection (list_services). A new RPC is a
 * new rpc in a proto, a handler and its policy line below. */
#include <string.h>

#include "grpc/health/v1/health.pb-c.h"
#include "grpc/reflection/v1/reflection.pb-c.h"
#include "grpc/reflection/v1alpha/reflection.pb-c.h"
#include "recordd/v1/claims.pb-c.h"
#include "recordd/v1/records.pb-c.h"
#include "recordd/v1/schema.pb-c.h"
#include "recordd/v1/tokens.pb-c.h"
#include "service/server_int.h"
#include "service/svc_handlers.h"
#include "svc_methods_gen.h"

/* The rows themselves — path, request and response types, kind — come
 * from the embedded descriptor set (build/gen/svc_methods_gen.h, written by
 * tools/build/gen_methods.c), so they cannot drift from the protos. What a
 * method is beyond its signature is said here, once per RPC: its handler,
 * the capability verb it needs, and its policy. An RPC added to a proto
 * without its line here does not compile. */
#define POLICY(id) id##_POLICY
/* The codes a method answers beyond the common ones (svc_method.answers). */
#define ANSWERS(...)                                                                               \
    .answers = (const rd_code[])                                                                   \
    {                                                                                              \
        __VA_ARGS__, RD_OK                                                                         \
    }
#define WRITE_CODES                                                                                \
    RD_NOT_FOUND, RD_UNKNOWN_FIELD, RD_VALIDATION_FAILED, RD_VERSION_CONFLICT, RD_STALE_CONTEXT,   \
        RD_CLAIMED, RD_DUPLICATE_RECORD, RD_IDEMPOTENCY_KEY_REUSED, RD_IDEMPOTENCY_IN_PROGRESS

/* ---- recordd.v1 ---------------------------------------------------------------- */

#define recordd_v1_Records_CreateRecord_POLICY                                                     \
    .handler = svc_create_record, .can = AUTH_CREATE, .cq_fast_path = true, .http_status = 201,    \
    .http_location = true,                                                                         \
    ANSWERS(RD_NOT_FOUND, RD_UNKNOWN_FIELD, RD_VALIDATION_FAILED, RD_DUPLICATE_RECORD,             \
            RD_IDEMPOTENCY_KEY_REUSED, RD_IDEMPOTENCY_IN_PROGRESS)
#define recordd_v1_Records_GetRecord_POLICY                                                        \
    .handler = svc_get_record, .can = AUTH_READ, .http_if_match_on_reply = true,                   \
    ANSWERS(RD_NOT_FOUND, RD_VALIDATION_FAILED, RD_VERSION_CONFLICT)
#define recordd_v1_Records_ListRecords_POLICY                                                      \
    .handler = svc_list_records, .can = AUTH_READ, ANSWERS(RD_NOT_FOUND, RD_VALIDATION_FAILED)
#define recordd_v1_Records_UpdateRecord_POLICY                                                     \
    .handler = svc_update_record, .can = AUTH_UPDATE, .cq_fast_path = true, ANSWERS(WRITE_CODES)
#define recordd_v1_Records_ReplaceRecord_POLICY                                                    \
    .handler = svc_replace_record, .can = AUTH_UPDATE, .cq_fast_path = true, ANSWERS(WRITE_CODES)
#define recordd_v1_Records_DeleteRecord_POLICY                                                     \
    .handler = svc_delete_record, .can = AUTH_DELETE, .cq_fast_path = true, ANSWERS(WRITE_CODES)
/* each operation needs its own verb */
#define recordd_v1_Records_BulkMutate_POLICY                                                       \
    .handler = svc_bulk_mutate, .http_partial_status = 207, .http_rolled_back_status = 422,        \
    ANSWERS(WRITE_CODES, RD_FILTER_REQUIRED, RD_TOO_MANY_OPERATIONS, RD_TOO_MANY_ROWS)
#define recordd_v1_Records_WatchChanges_POLICY                                                     \
    .handler = svc_watch_changes, .can = AUTH_READ,                                                \
    ANSWERS(RD_NOT_FOUND, RD_VALIDATION_FAILED, RD_SYNC_ID_EXPIRED)

#define recordd_v1_Schemas_PushSchema_POLICY                                                       \
    .handler = svc_push_schema, .can = AUTH_ADMIN,                                                 \
    ANSWERS(RD_UNKNOWN_FIELD, RD_VALIDATION_FAILED, RD_DESTRUCTIVE_CHANGE, RD_VERSION_CONFLICT,    \
            RD_DUPLICATE_RECORD)
#define recordd_v1_Schemas_GetSchema_POLICY .handler = svc_get_schema, .can = AUTH_READ | AUTH_ADMIN
#define recordd_v1_Schemas_GetOpenApi_POLICY                                                       \
    .handler = svc_get_openapi, .can = AUTH_READ | AUTH_ADMIN, .credential_optional = true

#define recordd_v1_Claims_AcquireClaim_POLICY                                                      \
    .handler = svc_acquire_claim, .can = AUTH_UPDATE,                                              \
    ANSWERS(RD_NOT_FOUND, RD_VALIDATION_FAILED, RD_CLAIMED)
#define recordd_v1_Claims_ReleaseClaim_POLICY                                                      \
    .handler = svc_release_claim, .can = AUTH_UPDATE,                                              \
    ANSWERS(RD_NOT_FOUND, RD_VALIDATION_FAILED, RD_CLAIMED)

/* the capabilities delegated, whatever they are: the minting key must hold them */
#define recordd_v1_Tokens_MintToken_POLICY .handler = svc_mint_token, ANSWERS(RD_VALIDATION_FAILED)

/* ---- public: no credential (health probes, tool discovery) ------------------------ */

#define grpc_health_v1_Health_Check_POLICY                                                         \
    .handler = svc_health_check, .public = true, .always_answered = true, ANSWERS(RD_NOT_FOUND)
#define grpc_health_v1_Health_Watch_POLICY .handler = svc_health_watch, .public = true
#define grpc_reflection_v1_ServerReflection_ServerReflectionInfo_POLICY                            \
    .handler = svc_reflection_info, .public = true
/* v1alpha is wire-identical to v1: its messages are re-read as v1 */
#define grpc_reflection_v1alpha_ServerReflection_ServerReflectionInfo_POLICY                       \
    .handler = svc_reflection_info_v1alpha, .public = true

#define ROW(id, p, req_type, resp_type, k)                                                         \
    {.path = p,                                                                                    \
     .req = &req_type##__descriptor,                                                               \
     .resp = &resp_type##__descriptor,                                                             \
     .kind = k,                                                                                    \
     POLICY(id)},

const svc_method svc_methods[] = {SVC_METHODS_FROM_DESCRIPTORS(ROW)};

#undef ROW

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
