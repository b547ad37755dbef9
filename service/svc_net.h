/* svc_net: why a listen address cannot be bound, in words, for the error
 * the server stops with (the gRPC core and libmicrohttpd only say that
 * they failed). */
#ifndef SVC_NET_H
#define SVC_NET_H

#include <stddef.h>

/* The cause of a failed listen on "host:port" ("[v6]:port"): binds a
 * socket to the address itself and names what went wrong — the address is
 * in use, is not an address of this machine, needs privileges, does not
 * resolve or is malformed. Into buf (cap bytes); returns buf. */
const char *svc_listen_cause(const char *listen, char *buf, size_t cap);

#endif
