/* svc_idem: the service side of idempotency keys (DESIGN.md §4): which key a
 * call carries and the canonical hash that decides whether two requests are
 * "the same request". The store keeps outcomes and the in-flight set
 * (store/idem.c); docs/internals/store.md, "Idempotency", has the design. */
#ifndef SVC_IDEM_H
#define SVC_IDEM_H

#include <protobuf-c/protobuf-c.h>
#include <stdint.h>

#include "common/rd.h"
#include "service/svc.h"
#include "store/store.h"

/* The call's idempotency key: field (the request's idempotency_key; NULL or
 * "" = not given) or the `idempotency-key` metadata. *key = NULL when
 * neither is given, else the key scoped to the call's principal and its
 * capabilities, "<principal id>\x1f<caps hash>\x1f<key>", in the call's
 * arena: two principals of one organisation, or a key and a token of it
 * with other capabilities, never share a stored outcome.
 * RD_VALIDATION_FAILED (field "idempotencyKey") when both are given and
 * differ, or the key is longer than STORE_IDEM_KEY_MAX bytes or holds a
 * control character. */
rd_code svc_idem_key(svc_call *call, const char *field, const char **key, rd_err *err);

/* The canonical hash of a request: BLAKE2b-256 (libsodium
 * crypto_generichash) over method (the RPC path), a NUL byte and req packed
 * with its idempotency_key field cleared and the entries of every
 * google.protobuf.Struct in it sorted by key (stably, so of duplicate keys
 * the last still wins). Everything else, client_tx_id included, counts.
 * Side effect: reorders the Struct entries of req in place (Struct maps
 * have no order). Scratch memory comes from a. RD_INTERNAL when out of
 * memory. */
rd_code svc_idem_hash(rd_arena *a, const char *method, ProtobufCMessage *req,
                      uint8_t out[STORE_IDEM_HASH_BYTES], rd_err *err);

#endif
