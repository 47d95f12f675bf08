/*  crm_zwatch.h - a libev watcher for a ZeroMQ socket, correct for edge-triggered ZMQ_FD. */
#ifndef CRM_ZWATCH_H_INCLUDED
#define CRM_ZWATCH_H_INCLUDED

#include <ev.h>

typedef struct _crm_zwatch_t crm_zwatch_t;

//  Called on the loop while the socket has messages to read (ZMQ_POLLIN).
//  The callback reads what it wants (up to a fair budget); it is called again
//  on the next loop iteration while messages remain, so it never starves the
//  rest of the loop and never misses an edge.
typedef void (crm_zwatch_fn) (void *socket, void *arg);

//  Watches a libzmq socket (void *, borrowed; for czmq pass zsock_resolve (s)).
//  Started at once. Caller owns the result.
crm_zwatch_t *crm_zwatch_new (struct ev_loop *loop, void *socket, crm_zwatch_fn *fn, void *arg);

//  Stops and frees; idempotent.
void crm_zwatch_destroy (crm_zwatch_t **self_p);

#endif
