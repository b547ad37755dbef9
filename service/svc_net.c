/* svc_net: the cause of a failed listen (svc_net.h). */
#include "service/svc_net.h"

#include <errno.h>
#include <netdb.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

const char *svc_listen_cause(const char *listen, char *buf, size_t cap)
{
    char host[256];
    const char *colon = strrchr(listen, ':');
    size_t n = colon != NULL ? (size_t)(colon - listen) : 0;
    if (colon == NULL || colon[1] == '\0' || n >= sizeof host) {
        snprintf(buf, cap, "malformed address (want host:port)");
        return buf;
    }
    memcpy(host, listen, n);
    host[n] = '\0';
    if (n >= 2 && host[0] == '[' && host[n - 1] == ']') { /* [::1] */
        memmove(host, host + 1, n - 2);
        host[n - 2] = '\0';
    }
    struct addrinfo hints = {.ai_family = AF_UNSPEC,
                             .ai_socktype = SOCK_STREAM,
                             .ai_flags = AI_PASSIVE | AI_NUMERICSERV};
    struct addrinfo *ai = NULL;
    int gai = getaddrinfo(host[0] != '\0' ? host : NULL, colon + 1, &hints, &ai);
    if (gai != 0) {
        snprintf(buf, cap, "'%s' does not resolve or the port is not a number (%s)", host,
                 gai_strerror(gai));
        return buf;
    }
    int e = 0;
    int fd = socket(ai->ai_family, ai->ai_socktype, ai->ai_protocol);
    if (fd < 0) {
        e = errno;
    } else {
        int one = 1;
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
        if (bind(fd, ai->ai_addr, ai->ai_addrlen) != 0)
            e = errno;
        close(fd);
    }
    freeaddrinfo(ai);
    switch (e) {
    case 0:
        snprintf(buf, cap, "the address binds now; it was busy or refused a moment ago");
        break;
    case EADDRINUSE:
        snprintf(buf, cap, "the address is in use (another process listens on it)");
        break;
    case EADDRNOTAVAIL:
        snprintf(buf, cap, "'%s' is not an address of this machine", host);
        break;
    case EACCES:
    case EPERM:
        snprintf(buf, cap, "permission denied (ports below 1024 need privileges)");
        break;
    default:
        snprintf(buf, cap, "%s", strerror(e));
        break;
    }
    return buf;
}
