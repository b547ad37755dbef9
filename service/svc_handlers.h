/* Handlers of the recordd.v1 RPCs, one per row of the method table. Each
 * runs on a worker thread and finishes its call exactly once. */
#ifndef SVC_HANDLERS_H
#define SVC_HANDLERS_H

#include "service/svc.h"

/* recordd.v1.Records (service/svc_records.c) */
void svc_create_record(svc_call *call, const ProtobufCMessage *req);
void svc_get_record(svc_call *call, const ProtobufCMessage *req);
/* ListRecords: service/svc_list.c */
void svc_list_records(svc_call *call, const ProtobufCMessage *req);
void svc_update_record(svc_call *call, const ProtobufCMessage *req);
void svc_replace_record(svc_call *call, const ProtobufCMessage *req);
void svc_delete_record(svc_call *call, const ProtobufCMessage *req);
/* BulkMutate: service/svc_bulk.c */
void svc_bulk_mutate(svc_call *call, const ProtobufCMessage *req);
/* server stream (service/svc_watch.c; svc_watch.h has the shutdown) */
void svc_watch_changes(svc_call *call, const ProtobufCMessage *req);

/* recordd.v1.Schemas (service/svc_schema.c) */
void svc_push_schema(svc_call *call, const ProtobufCMessage *req);
void svc_get_schema(svc_call *call, const ProtobufCMessage *req);
void svc_get_openapi(svc_call *call, const ProtobufCMessage *req);

/* recordd.v1.Claims (service/svc_claims.c; svc_claims.h has the shutdown) */
void svc_acquire_claim(svc_call *call, const ProtobufCMessage *req);
void svc_release_claim(svc_call *call, const ProtobufCMessage *req);

/* recordd.v1.Tokens (service/svc_tokens.c) */
void svc_mint_token(svc_call *call, const ProtobufCMessage *req);

#endif
