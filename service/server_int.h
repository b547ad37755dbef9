/* Internals of the server shared by the call core (svc_call.c), the gRPC
 * transport, the built-in services (health, reflection) and the method
 * table helpers. Not for handlers: they use service/svc.h. */
#ifndef SERVER_INT_H
#define SERVER_INT_H

#include "service/svc.h"

/* ---- method table helpers (service/svc_methods.c) ------------------------- */

/* Whether m belongs to the fully qualified service name ("recordd.v1.Records"). */
bool svc_method_in_service(const svc_method *m, const char *service);
/* The fully qualified service name of m as a {pointer, length} view into
 * m->path. Returns 0 (and *name NULL) when the path is not "/svc/method". */
size_t svc_method_service(const svc_method *m, const char **name);
/* Whether any row of the method table belongs to service. */
bool svc_service_known(const char *service);

/* ---- built-in services ----------------------------------------------------- */

/* grpc.health.v1.Health (service/svc_health.c). */
void svc_health_check(svc_call *call, const ProtobufCMessage *req);
void svc_health_watch(svc_call *call, const ProtobufCMessage *req);

/* grpc.reflection.v1(alpha).ServerReflection/ServerReflectionInfo, a bidi
 * stream answered from the embedded descriptor set (service/svc_reflection.c). */
void svc_reflection_info(svc_call *call, const ProtobufCMessage *req);
/* The same for grpc.reflection.v1alpha, whose messages are wire-identical
 * to v1's: the request is re-read as v1. */
void svc_reflection_info_v1alpha(svc_call *call, const ProtobufCMessage *req);

/* The parsed descriptor set and its symbol index. Built once per server,
 * read-only afterwards, so any thread may use it. */
typedef struct svc_reflection svc_reflection;

/* Parses the embedded descriptor set. RD_INTERNAL when it is malformed or
 * memory runs out. */
rd_code svc_reflection_open(svc_reflection **out, rd_err *err);
void svc_reflection_close(svc_reflection *r);
/* The server's reflection index. */
const svc_reflection *svc_server_reflection(const svc_server *s);

#endif
