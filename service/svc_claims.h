/* svc_claims: the recordd.v1.Claims service's waiting room. AcquireClaim
 * with wait_seconds > 0 on a claimed record parks the call here (no thread
 * blocks on it); a timer thread re-submits the acquire when the blocking
 * claim is released or expires, and fails it `claimed` when the wait ends.
 * docs/internals/claims.md has the design. The handlers are declared in
 * service/svc_handlers.h. */
#ifndef SVC_CLAIMS_H
#define SVC_CLAIMS_H

/* Longest wait_seconds AcquireClaim accepts. */
#define SVC_CLAIM_WAIT_MAX_S 60
/* Most calls waiting at once (all servers of the process); past it a call
 * that would wait fails UNAVAILABLE. */
#define SVC_CLAIM_WAITERS_MAX 4096

/* Fails every waiting AcquireClaim with UNAVAILABLE, refuses to park new
 * ones from now on (they fail UNAVAILABLE instead of waiting) and joins the
 * timer thread. Call once, before svc_server_stop, so that stopping does not
 * wait out the waits; acquires still in the writer's queue finish normally.
 * Any thread but the store's (writer, completer) and the timer's. */
void svc_claims_shutdown(void);

/* Another recordd process on the same database released the claim on
 * (org, model, id) (store_on_remote): its waiters here try again now. All
 * NULL: any claim may have been released (every waiter tries again).
 * Called with a store lock held: takes the registry's lock only. */
void svc_claims_remote_released(const char *org, const char *model, const char *id);

#endif
