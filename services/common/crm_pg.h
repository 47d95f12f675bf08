/*  crm_pg.h - asynchronous PostgreSQL on a libev loop: pipelined reads, group-committed writes, reconnect.
 *
 *  One crm_pg_t holds one connection. Statements are prepared once (and again
 *  after every reconnect) and called by name with text parameters. Reads are
 *  pipelined, never inside a write transaction; the reads sent together share
 *  one implicit transaction, and those after a read that fails in it are sent
 *  again, so no read fails for another. Writes queued while a write
 *  transaction is running are committed together in the next one (group
 *  commit): if that transaction fails as a whole, each of its writes is
 *  retried alone, so one bad write never fails its neighbours.
 */
#ifndef CRM_PG_H_INCLUDED
#define CRM_PG_H_INCLUDED

#include <ev.h>
#include <libpq-fe.h>

typedef struct _crm_pg_t crm_pg_t;

typedef enum {
    CRM_PG_OK = 0,
    CRM_PG_ESQL = 1,         //  The statement failed (constraint, bad value...)
    CRM_PG_EUNAVAILABLE = 2, //  No connection, or it broke while the statement ran
} crm_pg_status_t;

//  Called exactly once per submitted statement, on the loop. On CRM_PG_OK
//  result is the statement's result (borrowed: valid during the call only) and
//  error is NULL; otherwise result is NULL and error says why (borrowed).
//  A write's callback with CRM_PG_OK is called only after its transaction
//  committed; with CRM_PG_EUNAVAILABLE the outcome is unknown (the connection
//  broke), and the caller resends with the same request id.
typedef void (crm_pg_fn) (crm_pg_status_t status, const PGresult *result, const char *error,
                          void *arg);

//  Connects to dsn with search_path set to schema, on loop; keeps
//  reconnecting with backoff while the server is away. Over TCP, keepalives
//  (30 s idle, then 10 s apart, 3 probes) and a tcp_user_timeout of 60 s
//  notice a server gone without a word, and statement_timeout is 30 s,
//  unless the dsn sets its own (keepalives_idle=..., options='-c ...'). Returns NULL on a bad
//  dsn or out of memory. Caller owns the result.
crm_pg_t *crm_pg_new (struct ev_loop *loop, const char *dsn, const char *schema);

//  Fails pending statements with CRM_PG_EUNAVAILABLE, closes, frees; idempotent.
void crm_pg_destroy (crm_pg_t **self_p);

//  Registers a prepared statement, prepared on every (re)connect. Call before
//  the first use; name and sql are copied.
int crm_pg_prepare (crm_pg_t *self, const char *name, const char *sql, int nparams);

//  Lets writes of the registered statement name that go in one transaction
//  reach the server as one statement, batch_sql, rather than one each: its
//  one parameter ($1, jsonb) is an array holding, for each write in order,
//  the array of that write's text values (null for SQL NULL), and it must
//  return one row per write, in the same order, shaped as name's own result:
//  each write's callback gets its row as a one-row result. Only consecutive
//  writes of name, two or more, are batched. A transaction whose batch fails
//  is retried one write at a time with name itself, like any failed write
//  transaction, so a bad write still fails alone. A batch that returns the
//  wrong number of rows (or rows that cannot be copied) has committed all the
//  same; its writes are then also run again alone, so a write must be safe to
//  run twice, as every write of the suite is (a request id claimed in the
//  idempotency store, a consumer position, a conditional update).
int crm_pg_prepare_batch (crm_pg_t *self, const char *name, const char *batch_sql);

//  Runs a prepared statement as a read (see above). values are text (NULL for
//  SQL NULL) and are copied. 0 when queued; -1 when not connected, name is not
//  registered, or out of memory (fn is then not called).
int crm_pg_read (crm_pg_t *self, const char *name, int nparams, const char *const *values,
                 crm_pg_fn *fn, void *arg);

//  Runs a prepared statement in the next group-committed write transaction.
//  0 when queued; -1 as for crm_pg_read (fn is then not called).
int crm_pg_write (crm_pg_t *self, const char *name, int nparams, const char *const *values,
                  crm_pg_fn *fn, void *arg);

//  Copies a libpq or server message (NULL or empty: "unknown error") into
//  out: its first line only, without the severity prefix libpq puts in
//  front ("FATAL:  "), cut to size.
void crm_pg_message (char *out, size_t size, const char *msg);

//  True while connected and prepared.
int crm_pg_connected (crm_pg_t *self);

//  Statements submitted and not yet answered.
int crm_pg_pending (crm_pg_t *self);

//  Largest number of writes put in one transaction (default 256).
void crm_pg_set_max_batch (crm_pg_t *self, int max_batch);

#endif
