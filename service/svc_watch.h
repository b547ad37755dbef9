/* svc_watch: the WatchChanges change feed's dispatcher (service/svc_watch.c;
 * the handler is declared in service/svc_handlers.h). */
#ifndef SVC_WATCH_H
#define SVC_WATCH_H

/* Ends every open WatchChanges stream with UNAVAILABLE ("server is shutting
 * down"), refuses new ones from now on (UNAVAILABLE) and joins the
 * dispatcher thread. Call once, before svc_server_stop, from any thread but
 * the writer's. */
void svc_watch_shutdown(void);

#endif
