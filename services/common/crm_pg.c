/*  crm_pg.c - asynchronous PostgreSQL on a libev loop: pipelined reads, group-committed writes, reconnect.
 *
 *  One connection in libpq pipeline mode, non-blocking. Everything sent goes
 *  through that one pipeline in order, and the ring of sent commands mirrors
 *  what libpq hands back, so each result finds its statement.
 *
 *  Reads queued together are sent as "Execute x N; Sync" (N at most
 *  READ_GROUP), one Sync and one send for all of them. While a group is in
 *  flight, reads that arrive wait for it (unless they fill a whole group)
 *  and go together in the next: the server runs one connection's statements
 *  one after another anyway, and each Sync costs it a transaction, a flush
 *  and a wake-up, which under load cost more than the reads. A read that
 *  finds no group in flight goes at once. A failing read makes
 *  the server skip the rest of its group (PGRES_PIPELINE_ABORTED): those are
 *  queued again, so one failing read never fails another. The server sends
 *  results at a Sync, so a Flush request after every READ_FLUSH_EVERY reads
 *  bounds how long a slow read holds back the answers sent before it; one per
 *  read would halve the read rate.
 *
 *  A write batch is sent as "Execute x N; Sync" with no BEGIN and COMMIT: the
 *  extended protocol runs everything between two Syncs as one implicit
 *  transaction, committed at the Sync, or rolled back whole at the first
 *  error. An explicit BEGIN would leave the session in an aborted transaction
 *  block after a failure, and the reads already pipelined behind the batch
 *  would fail until a ROLLBACK went through; the implicit transaction ends by
 *  itself at the Sync. An error raised by the commit itself (a deferred
 *  constraint) arrives just before the Sync's result and fails the batch the
 *  same way. A write's callback runs once the Sync's result has arrived, that
 *  is after its transaction committed.
 *
 *  At most one write transaction (a batch, or the retries of a failed one) is
 *  in flight: writes arriving meanwhile wait and all go in the next one (group
 *  commit). Reads are never held back for writes: they go out as soon as they
 *  are submitted, so they run between write batches and never inside one (on
 *  one connection, a read sent behind a batch still waits for its commit).
 *
 *  The writes of a failed batch are then sent again each in its own
 *  transaction ("Execute; Sync" each, pipelined together), so only a write
 *  that fails alone gets CRM_PG_ESQL.
 *
 *  Within a write transaction, consecutive writes of a statement that has a
 *  batch form (crm_pg_prepare_batch) go as one Execute of that form, their
 *  values passed as one JSON array: the server then plans, starts and runs
 *  one statement for all of them, which a set-based function turns into one
 *  insert per table rather than one per write. The result's rows are handed
 *  out one per write. The retries of a failed transaction never use the
 *  batch form.
 *
 *  Submitting only queues: an ev_prepare watcher sends everything queued in
 *  one loop iteration just before the loop waits, so writes submitted together
 *  share a transaction and reads submitted together share a flush.
 *
 *  Nothing here waits on the network; only PQconnectStart's host name lookup
 *  may block, briefly, for a dsn naming a host rather than an address.
 */
#include "crm_pg.h"
#include "crm_log.h"

#include <assert.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define BACKOFF_MIN       0.1  //  Seconds before the first reconnect
#define BACKOFF_MAX       5.0  //  Longest wait between reconnects
#define CONNECT_TIMEOUT   10.0 //  Seconds for one connection attempt, unless the dsn says
#define MAX_BATCH_DEFAULT 256
#define READ_GROUP        64    //  Most reads under one Sync
#define READ_FLUSH_EVERY  8     //  Reads between Flush requests within a group
#define FREE_ITEMS_MAX    1024  //  Spare statement blocks kept for reuse
#define ITEM_KEEP_MAX     16384 //  Larger blocks are freed, not kept
#define ERROR_MAX         1024

typedef enum {
    STATE_DISCONNECTED, //  Waiting for the backoff timer
    STATE_CONNECTING,   //  PQconnectPoll in progress
    STATE_SETUP,        //  Connected; search_path and prepares in the pipeline
    STATE_READY,        //  Connected and prepared
    STATE_CLOSED,       //  Being destroyed
} state_t;

typedef enum {
    CMD_SETUP,   //  set_config of search_path
    CMD_PREPARE, //  PQsendPrepare of one registered statement
    CMD_READ,    //  A read's Execute
    CMD_WRITE,   //  A write's Execute
    CMD_SYNC,    //  A Sync closing a segment
} cmd_kind_t;

typedef enum {
    SEG_SETUP, //  Connection set-up: search_path or one prepare
    SEG_READ,  //  A group of reads
    SEG_WRITE, //  One write transaction
} seg_kind_t;

typedef struct _item_t item_t;

//  One submitted statement; its parameters live in the same block, after it.
struct _item_t {
    item_t *next;        //  Next in whichever queue holds it
    crm_pg_fn *fn;       //  Callback
    void *arg;           //  Callback argument
    const char *name;    //  Statement name, owned by its registration
    const char **values; //  nparams text values (NULL for SQL NULL), in this block
    int nparams;         //  Number of values
    int stmt;            //  Index of its statement
    size_t capacity;     //  Bytes usable after the struct, for reuse
    PGresult *result;    //  A write's result, kept until its transaction commits
};

typedef struct {
    item_t *head; //  First out
    item_t *tail; //  Last in
    int count;    //  Items held
} queue_t;

//  One command sent on the connection whose results are still to come.
typedef struct {
    unsigned char kind; //  cmd_kind_t
    unsigned char seg;  //  seg_kind_t, for CMD_SYNC
    int count;          //  CMD_SYNC of a write and CMD_WRITE: its writes; CMD_PREPARE: index
    item_t *item;       //  CMD_READ, CMD_WRITE: the statement (of a batch: the first)
} cmd_t;

//  One registered prepared statement.
typedef struct {
    char *name;  //  Its name
    char *sql;   //  Its text
    int nparams; //  Parameters it takes
    int batch;   //  Index of its batch form, or -1
} stmt_t;

struct _crm_pg_t {
    struct ev_loop *loop;        //  Borrowed
    char *dsn;                   //  Connection string
    char *search_path;           //  The schema as a quoted identifier
    double connect_timeout;      //  Seconds for one attempt
    PGconn *conn;                //  NULL while disconnected
    state_t state;               //  Where the connection is
    ev_io rio;                   //  Readability of the socket
    ev_io wio;                   //  Writability, while output is pending or connecting
    ev_timer timer;              //  Reconnect backoff, or connect timeout
    ev_prepare kick;             //  Sends what was queued during this loop iteration
    ev_idle kick_idle;           //  Keeps the loop from blocking before kick runs
    double backoff;              //  Seconds before the next reconnect
    bool quiet;                  //  A connect failure was logged already: log the next at debug
    stmt_t *stmts;               //  Registered statements
    int nstmts;                  //  How many
    int stmts_cap;               //  Allocated
    int nprepared;               //  Statements sent for preparation on this connection
    queue_t reads;               //  Reads not sent yet
    queue_t skipped;             //  Reads of the group being answered that the server skipped
    queue_t writes;              //  Writes not sent yet
    queue_t retries;             //  Writes of a failed batch, to be sent each alone
    queue_t inflight;            //  Writes sent, in send order, until their transaction ends
    cmd_t *ring;                 //  Commands sent, in send order
    int ring_cap;                //  Allocated, a power of two
    int ring_head;               //  Index of the oldest
    int ring_count;              //  How many
    int setup_pending;           //  Set-up segments not answered yet
    int write_segments;          //  Write transactions in flight
    int read_segments;           //  Groups of reads in flight
    bool write_failed;           //  The write transaction being answered failed
    char write_error[ERROR_MAX]; //  Its first error
    int pending;                 //  Statements submitted and not answered
    int max_batch;               //  Most writes in one transaction
    item_t *spare;               //  Blocks for reuse
    int nspare;                  //  How many
    char error[ERROR_MAX];       //  Error text handed to a callback
    char *json;                  //  A batch's values being written out
    size_t json_len;             //  Bytes in it
    size_t json_cap;             //  Allocated
    int depth;                   //  Entry points on the stack that may call back
    bool doomed;                 //  Destroyed from a callback: free when depth is back to 0
};

static void s_connect_start (crm_pg_t *self);
static void s_lost (crm_pg_t *self, const char *reason);

//  --------------------------------------------------------------------------
//  Small helpers

static void
s_queue_push (queue_t *queue, item_t *item)
{
    item->next = NULL;
    if (queue->tail)
        queue->tail->next = item;
    else
        queue->head = item;
    queue->tail = item;
    queue->count++;
}

static item_t *
s_queue_pop (queue_t *queue)
{
    item_t *item = queue->head;
    if (item) {
        queue->head = item->next;
        if (!queue->head)
            queue->tail = NULL;
        queue->count--;
        item->next = NULL;
    }
    return item;
}

void
crm_pg_message (char *out, size_t size, const char *msg)
{
    assert (out && size > 0);
    if (!msg || !*msg)
        msg = "unknown error";
    const char *colon = strstr (msg, ":  ");
    if (colon && colon - msg < 10)
        msg = colon + 3;
    size_t len = strcspn (msg, "\n");
    if (len >= size)
        len = size - 1;
    memcpy (out, msg, len);
    out[len] = '\0';
}

//  "SQLSTATE: primary message" of a failed result; no DETAIL, which may
//  quote personal data.
static void
s_format_error (char *out, size_t size, const PGresult *res)
{
    const char *state = PQresultErrorField (res, PG_DIAG_SQLSTATE);
    const char *primary = PQresultErrorField (res, PG_DIAG_MESSAGE_PRIMARY);
    if (state && primary)
        snprintf (out, size, "%s: %s", state, primary);
    else
        crm_pg_message (out, size, PQresultErrorMessage (res));
}

//  True when a failed result means the connection is gone rather than the
//  statement being wrong.
static bool
s_connection_error (crm_pg_t *self, const PGresult *res)
{
    if (PQstatus (self->conn) != CONNECTION_OK)
        return true;
    const char *state = PQresultErrorField (res, PG_DIAG_SQLSTATE);
    if (!state)
        return true; //  Made by libpq itself, not by the server
    const char *severity = PQresultErrorField (res, PG_DIAG_SEVERITY_NONLOCALIZED);
    if (severity && (strcmp (severity, "FATAL") == 0 || strcmp (severity, "PANIC") == 0))
        return true;
    return strncmp (state, "08", 2) == 0 || strncmp (state, "57P", 3) == 0;
}

static stmt_t *
s_stmt_find (crm_pg_t *self, const char *name)
{
    for (int i = 0; i < self->nstmts; i++)
        if (self->stmts[i].name[0] == name[0] && strcmp (self->stmts[i].name, name) == 0)
            return &self->stmts[i];
    return NULL;
}

//  A statement block with its parameters copied in; from the spares when one
//  is large enough.
static item_t *
s_item_new (crm_pg_t *self, const stmt_t *stmt, int nparams, const char *const *values,
            crm_pg_fn *fn, void *arg)
{
    size_t need = (size_t) nparams * sizeof (char *);
    for (int i = 0; i < nparams; i++)
        if (values[i])
            need += strlen (values[i]) + 1;

    item_t *item = NULL;
    if (self->spare && self->spare->capacity >= need) {
        item = self->spare;
        self->spare = item->next;
        self->nspare--;
    }
    else {
        size_t capacity = need < 256 ? 256 : need;
        item = malloc (sizeof (item_t) + capacity);
        if (!item)
            return NULL;
        item->capacity = capacity;
    }
    item->next = NULL;
    item->fn = fn;
    item->arg = arg;
    item->name = stmt->name;
    item->stmt = (int) (stmt - self->stmts);
    item->nparams = nparams;
    item->result = NULL;
    item->values = (const char **) (item + 1);
    char *text = (char *) (item->values + nparams);
    for (int i = 0; i < nparams; i++) {
        if (values[i]) {
            size_t len = strlen (values[i]) + 1;
            memcpy (text, values[i], len);
            item->values[i] = text;
            text += len;
        }
        else
            item->values[i] = NULL;
    }
    return item;
}

static void
s_item_free (crm_pg_t *self, item_t *item)
{
    if (item->result) {
        PQclear (item->result);
        item->result = NULL;
    }
    if (self->nspare < FREE_ITEMS_MAX && item->capacity <= ITEM_KEEP_MAX) {
        item->next = self->spare;
        self->spare = item;
        self->nspare++;
    }
    else
        free (item);
}

//  Answers one statement and frees it. The callback may submit more.
static void
s_answer (crm_pg_t *self, item_t *item, crm_pg_status_t status, const PGresult *result,
          const char *error)
{
    self->pending--;
    crm_pg_fn *fn = item->fn;
    void *arg = item->arg;
    if (status != CRM_PG_OK && item->result) {
        PQclear (item->result);
        item->result = NULL;
    }
    fn (status, status == CRM_PG_OK ? result : NULL, status == CRM_PG_OK ? NULL : error, arg);
    s_item_free (self, item);
}

static void
s_ring_push (crm_pg_t *self, cmd_kind_t kind, seg_kind_t seg, int count, item_t *item)
{
    if (self->ring_count == self->ring_cap) {
        int cap = self->ring_cap ? self->ring_cap * 2 : 256;
        cmd_t *ring = malloc ((size_t) cap * sizeof (cmd_t));
        assert (ring);
        for (int i = 0; i < self->ring_count; i++)
            ring[i] = self->ring[(self->ring_head + i) & (self->ring_cap - 1)];
        free (self->ring);
        self->ring = ring;
        self->ring_cap = cap;
        self->ring_head = 0;
    }
    cmd_t *cmd = &self->ring[(self->ring_head + self->ring_count) & (self->ring_cap - 1)];
    cmd->kind = (unsigned char) kind;
    cmd->seg = (unsigned char) seg;
    cmd->count = count;
    cmd->item = item;
    self->ring_count++;
}

static cmd_t
s_ring_pop (crm_pg_t *self)
{
    cmd_t cmd = self->ring[self->ring_head];
    self->ring_head = (self->ring_head + 1) & (self->ring_cap - 1);
    self->ring_count--;
    return cmd;
}

//  Answers every statement not answered yet with CRM_PG_EUNAVAILABLE: those
//  sent first, in send order, then those still queued.
static void
s_fail_all (crm_pg_t *self, const char *error)
{
    while (self->ring_count > 0) {
        cmd_t cmd = s_ring_pop (self);
        //  Writes are answered from the in-flight queue below
        if (cmd.kind == CMD_READ && cmd.item)
            s_answer (self, cmd.item, CRM_PG_EUNAVAILABLE, NULL, error);
    }
    self->setup_pending = 0;
    self->write_segments = 0;
    self->read_segments = 0;
    self->write_failed = false;
    queue_t *queues[] = {&self->skipped, &self->inflight, &self->retries, &self->reads,
                         &self->writes};
    for (size_t i = 0; i < sizeof queues / sizeof queues[0]; i++) {
        item_t *item;
        while ((item = s_queue_pop (queues[i])))
            s_answer (self, item, CRM_PG_EUNAVAILABLE, NULL, error);
    }
}

//  Starts or stops watching fd. With renew, re-registers even an unchanged
//  fd: during connect libpq may close its socket and get the same number
//  back for the next address, which the kernel no longer watches.
static void
s_watch (crm_pg_t *self, ev_io *watcher, int fd, int events, bool on, bool renew)
{
    if (ev_is_active (watcher) && (watcher->fd != fd || !on || renew))
        ev_io_stop (self->loop, watcher);
    if (on && !ev_is_active (watcher)) {
        ev_io_set (watcher, fd, events);
        ev_io_start (self->loop, watcher);
    }
}

//  Sends at the end of this loop iteration. The idle watcher covers a
//  submission made by another prepare watcher after kick ran: the loop then
//  polls without blocking and kick runs at the next iteration.
static void
s_start_kick (crm_pg_t *self)
{
    if (self->state == STATE_CLOSED)
        return;
    if (!ev_is_active (&self->kick)) {
        ev_prepare_start (self->loop, &self->kick);
        ev_idle_start (self->loop, &self->kick_idle);
    }
}

static void
s_stop_kick (crm_pg_t *self)
{
    ev_prepare_stop (self->loop, &self->kick);
    ev_idle_stop (self->loop, &self->kick_idle);
}

//  --------------------------------------------------------------------------
//  Sending

//  Sends what libpq holds; watches writability while some is left.
static void
s_flush (crm_pg_t *self)
{
    int rc = PQflush (self->conn);
    if (rc < 0) {
        s_lost (self, PQerrorMessage (self->conn));
        return;
    }
    s_watch (self, &self->wio, PQsocket (self->conn), EV_WRITE, rc == 1, false);
}

static int
s_send_sync (crm_pg_t *self, seg_kind_t seg, int count)
{
    s_ring_push (self, CMD_SYNC, seg, count, NULL);
    return PQpipelineSync (self->conn) ? 0 : -1;
}

//  Sends one write's Execute; it stays in the in-flight queue until its
//  transaction ends.
static int
s_send_write (crm_pg_t *self, item_t *item)
{
    s_queue_push (&self->inflight, item);
    s_ring_push (self, CMD_WRITE, SEG_WRITE, 1, item);
    return PQsendQueryPrepared (self->conn, item->name, item->nparams, item->values, NULL, NULL, 0)
               ? 0
               : -1;
}

//  Appends len bytes to the batch text; -1 when out of memory.
static int
s_json_put (crm_pg_t *self, const char *data, size_t len)
{
    if (self->json_len + len + 1 > self->json_cap) {
        size_t cap = self->json_cap ? self->json_cap : 4096;
        while (cap < self->json_len + len + 1)
            cap *= 2;
        char *json = realloc (self->json, cap);
        if (!json)
            return -1;
        self->json = json;
        self->json_cap = cap;
    }
    memcpy (self->json + self->json_len, data, len);
    self->json_len += len;
    self->json[self->json_len] = '\0';
    return 0;
}

//  Appends text as a JSON string. The text is UTF-8 (PostgreSQL refuses
//  anything else, failing the batch, whose writes are then tried alone).
static int
s_json_string (crm_pg_t *self, const char *text)
{
    if (s_json_put (self, "\"", 1))
        return -1;
    const char *run = text;
    for (const char *at = text;; at++) {
        unsigned char c = (unsigned char) *at;
        if (c && c != '"' && c != '\\' && c >= 0x20)
            continue;
        if (s_json_put (self, run, (size_t) (at - run)))
            return -1;
        if (!c)
            break;
        char escape[8];
        int len = c == '"' || c == '\\' ? snprintf (escape, sizeof escape, "\\%c", c)
                                        : snprintf (escape, sizeof escape, "\\u%04x", c);
        if (s_json_put (self, escape, (size_t) len))
            return -1;
        run = at + 1;
    }
    return s_json_put (self, "\"", 1);
}

//  How many writes at the head of the queue, at most limit, can go as one
//  batch: consecutive writes of one statement that has a batch form.
static int
s_batch_run (crm_pg_t *self, int limit)
{
    item_t *item = self->writes.head;
    if (!item || self->stmts[item->stmt].batch < 0)
        return 0;
    int run = 0;
    for (int stmt = item->stmt; item && item->stmt == stmt && run < limit; item = item->next)
        run++;
    return run;
}

//  Sends the next run writes as one Execute of their statement's batch form.
static int
s_send_batch (crm_pg_t *self, int run)
{
    const stmt_t *batch = &self->stmts[self->stmts[self->writes.head->stmt].batch];
    self->json_len = 0;
    item_t *first = NULL;
    int rc = s_json_put (self, "[", 1);
    for (int i = 0; i < run; i++) {
        item_t *item = s_queue_pop (&self->writes);
        s_queue_push (&self->inflight, item);
        if (!first)
            first = item;
        rc = rc ? rc : s_json_put (self, i ? ",[" : "[", i ? 2 : 1);
        for (int k = 0; k < item->nparams && !rc; k++) {
            if (k)
                rc = s_json_put (self, ",", 1);
            if (!rc)
                rc = item->values[k] ? s_json_string (self, item->values[k])
                                     : s_json_put (self, "null", 4);
        }
        rc = rc ? rc : s_json_put (self, "]", 1);
    }
    rc = rc ? rc : s_json_put (self, "]", 1);
    s_ring_push (self, CMD_WRITE, SEG_WRITE, run, first);
    if (rc) {
        crm_error ("out of memory writing a batch of %d writes", run);
        return -1;
    }
    const char *values[] = {self->json};
    return PQsendQueryPrepared (self->conn, batch->name, 1, values, NULL, NULL, 0) ? 0 : -1;
}

//  Sends prepares registered since connecting, queued reads, and the next
//  write transaction if none is in flight; then flushes.
static void
s_send (crm_pg_t *self)
{
    while (self->nprepared < self->nstmts) {
        stmt_t *stmt = &self->stmts[self->nprepared];
        s_ring_push (self, CMD_PREPARE, SEG_SETUP, self->nprepared, NULL);
        self->nprepared++;
        self->setup_pending++;
        if (!PQsendPrepare (self->conn, stmt->name, stmt->sql, stmt->nparams, NULL) ||
            s_send_sync (self, SEG_SETUP, 0))
            goto failed;
    }
    item_t *item;
    while (self->reads.head && (self->read_segments == 0 || self->reads.count >= READ_GROUP)) {
        int count = 0;
        while (count < READ_GROUP && (item = s_queue_pop (&self->reads))) {
            count++;
            s_ring_push (self, CMD_READ, SEG_READ, 0, item);
            if (!PQsendQueryPrepared (self->conn, item->name, item->nparams, item->values, NULL,
                                      NULL, 0))
                goto failed;
            //  The server holds results until a Sync or a Flush: a Flush now
            //  and then keeps a slow read from holding back a whole group
            if (count % READ_FLUSH_EVERY == 0 && count < READ_GROUP && self->reads.head &&
                !PQsendFlushRequest (self->conn))
                goto failed;
        }
        self->read_segments++;
        if (s_send_sync (self, SEG_READ, count))
            goto failed;
    }
    if (self->write_segments == 0) {
        if (self->retries.head) {
            //  Each write of a failed batch alone, so only a bad one fails
            while ((item = s_queue_pop (&self->retries))) {
                self->write_segments++;
                if (s_send_write (self, item) || s_send_sync (self, SEG_WRITE, 1))
                    goto failed;
            }
        }
        else if (self->writes.head) {
            int count = 0;
            while (count < self->max_batch && self->writes.head) {
                int run = s_batch_run (self, self->max_batch - count);
                if (run >= 2) {
                    count += run;
                    if (s_send_batch (self, run))
                        goto failed;
                }
                else {
                    count++;
                    if (s_send_write (self, s_queue_pop (&self->writes)))
                        goto failed;
                }
            }
            self->write_segments = 1;
            if (s_send_sync (self, SEG_WRITE, count))
                goto failed;
        }
    }
    s_flush (self);
    return;

failed:
    s_lost (self, PQerrorMessage (self->conn));
}

static void s_free (crm_pg_t *self);

static void
s_kick (crm_pg_t *self)
{
    s_stop_kick (self);
    self->depth++;
    if (self->state == STATE_SETUP || self->state == STATE_READY)
        s_send (self);
    if (--self->depth == 0 && self->doomed)
        s_free (self);
}

static void
s_kick_cb (struct ev_loop *loop, ev_prepare *watcher, int revents)
{
    (void) loop;
    (void) revents;
    s_kick ((crm_pg_t *) watcher->data);
}

static void
s_kick_idle_cb (struct ev_loop *loop, ev_idle *watcher, int revents)
{
    (void) loop;
    (void) revents;
    s_kick ((crm_pg_t *) watcher->data);
}

//  --------------------------------------------------------------------------
//  Receiving

//  The end of a write transaction: answers its writes, or retries them.
static void
s_write_done (crm_pg_t *self, int count)
{
    item_t *batch = NULL, **tail = &batch;
    for (int i = 0; i < count; i++) {
        item_t *item = s_queue_pop (&self->inflight);
        assert (item);
        *tail = item;
        tail = &item->next;
    }
    self->write_segments--;
    bool failed = self->write_failed;
    self->write_failed = false;

    if (failed && count > 1) {
        crm_debug ("transaction of %d writes failed (%s), retrying each alone", count,
                   self->write_error);
        while (batch) {
            item_t *item = batch;
            batch = item->next;
            if (item->result) {
                PQclear (item->result);
                item->result = NULL;
            }
            s_queue_push (&self->retries, item);
        }
    }
    else {
        //  The error text is copied: a callback may start another transaction
        if (failed)
            snprintf (self->error, sizeof self->error, "%s", self->write_error);
        while (batch) {
            item_t *item = batch;
            batch = item->next;
            if (failed)
                s_answer (self, item, CRM_PG_ESQL, NULL, self->error);
            else
                s_answer (self, item, CRM_PG_OK, item->result, NULL);
        }
    }
    if (self->write_segments == 0 && (self->retries.head || self->writes.head))
        s_start_kick (self);
}

static void
s_write_failed (crm_pg_t *self, const PGresult *res, const char *why)
{
    if (!self->write_failed) {
        self->write_failed = true;
        if (why)
            snprintf (self->write_error, sizeof self->write_error, "%s", why);
        else if (PQresultStatus (res) == PGRES_PIPELINE_ABORTED)
            snprintf (self->write_error, sizeof self->write_error,
                      "transaction aborted by an earlier statement");
        else
            s_format_error (self->write_error, sizeof self->write_error, res);
    }
}

//  Row row of res as a result of its own; NULL when out of memory.
static PGresult *
s_row_result (const PGresult *res, int row)
{
    PGresult *out = PQcopyResult (res, PG_COPYRES_ATTRS);
    for (int col = 0; out && col < PQnfields (res); col++) {
        bool null = PQgetisnull (res, row, col);
        if (!PQsetvalue (out, 0, col, null ? NULL : PQgetvalue (res, row, col),
                         null ? -1 : PQgetlength (res, row, col))) {
            PQclear (out);
            out = NULL;
        }
    }
    return out;
}

//  A batch's result: one row for each of its writes, kept until the commit.
static void
s_batch_result (crm_pg_t *self, const cmd_t *cmd, const PGresult *res, bool ok)
{
    if (!ok) {
        s_write_failed (self, res, NULL);
        return;
    }
    if (cmd->item->result)
        return; //  A stray second result
    if (PQntuples (res) != cmd->count) {
        char why[128];
        snprintf (why, sizeof why, "batch statement returned %d rows for %d writes",
                  PQntuples (res), cmd->count);
        s_write_failed (self, res, why);
        return;
    }
    item_t *item = cmd->item;
    for (int row = 0; row < cmd->count && item; row++, item = item->next) {
        item->result = s_row_result (res, row);
        if (!item->result) {
            s_write_failed (self, res, "out of memory");
            return;
        }
    }
}

//  Handles the result of one command; returns -1 when the connection is lost.
static int
s_result (crm_pg_t *self, cmd_t *cmd, PGresult *res)
{
    ExecStatusType status = PQresultStatus (res);
    bool ok = status == PGRES_TUPLES_OK || status == PGRES_COMMAND_OK;
    if (status == PGRES_FATAL_ERROR && s_connection_error (self, res)) {
        char reason[ERROR_MAX];
        crm_pg_message (reason, sizeof reason, PQresultErrorMessage (res));
        PQclear (res);
        s_lost (self, reason);
        return -1;
    }
    switch (cmd->kind) {
        case CMD_SETUP:
            if (!ok) {
                char reason[ERROR_MAX];
                s_format_error (reason, sizeof reason, res);
                PQclear (res);
                crm_error ("could not set search_path: %s", reason);
                s_lost (self, reason);
                return -1;
            }
            break;
        case CMD_PREPARE:
            if (!ok) {
                s_format_error (self->error, sizeof self->error, res);
                crm_error ("could not prepare statement \"%s\": %s", self->stmts[cmd->count].name,
                           self->error);
            }
            break;
        case CMD_READ: {
            item_t *item = cmd->item;
            //  Answered once: a stray second result finds no item
            self->ring[self->ring_head].item = NULL;
            if (!item)
                break;
            if (ok)
                s_answer (self, item, CRM_PG_OK, res, NULL);
            else if (status == PGRES_PIPELINE_ABORTED)
                s_queue_push (&self->skipped, item); //  Another read of its group failed
            else {
                s_format_error (self->error, sizeof self->error, res);
                s_answer (self, item, CRM_PG_ESQL, NULL, self->error);
            }
            break;
        }
        case CMD_WRITE:
            if (cmd->count > 1) {
                s_batch_result (self, cmd, res, ok);
                break;
            }
            if (ok && !cmd->item->result) {
                cmd->item->result = res; //  Kept until the commit
                return 0;
            }
            if (!ok)
                s_write_failed (self, res, NULL);
            break;
        default:
            break;
    }
    PQclear (res);
    return 0;
}

//  A segment's Sync answered: its transaction is over.
static void
s_sync_done (crm_pg_t *self, const cmd_t *cmd)
{
    if (cmd->seg == SEG_WRITE)
        s_write_done (self, cmd->count);
    else if (cmd->seg == SEG_READ) {
        self->read_segments--;
        //  Reads that waited for this group go now
        if (self->read_segments == 0 && self->reads.head)
            s_start_kick (self);
        //  Skipped reads go again, ahead of those queued since
        if (self->skipped.head) {
            self->skipped.tail->next = self->reads.head;
            if (!self->reads.head)
                self->reads.tail = self->skipped.tail;
            self->reads.head = self->skipped.head;
            self->reads.count += self->skipped.count;
            self->skipped.head = self->skipped.tail = NULL;
            self->skipped.count = 0;
            s_start_kick (self);
        }
    }
    else if (cmd->seg == SEG_SETUP) {
        self->setup_pending--;
        if (self->setup_pending == 0 && self->state == STATE_SETUP) {
            self->state = STATE_READY;
            self->backoff = BACKOFF_MIN;
            self->quiet = false;
            crm_info ("connected to database");
        }
    }
}

//  Takes every result libpq has complete, in pipeline order.
static void
s_drain (crm_pg_t *self)
{
    int nulls = 0;
    while (self->conn && self->ring_count > 0 && !PQisBusy (self->conn)) {
        PGresult *res = PQgetResult (self->conn);
        cmd_t *head = &self->ring[self->ring_head];
        if (head->kind == CMD_SYNC) {
            if (!res) {
                //  Follows an error raised at the Sync; twice means nothing is there
                if (++nulls > 1)
                    break;
                continue;
            }
            nulls = 0;
            if (PQresultStatus (res) == PGRES_PIPELINE_SYNC) {
                PQclear (res);
                cmd_t cmd = s_ring_pop (self);
                s_sync_done (self, &cmd);
            }
            else if (PQresultStatus (res) == PGRES_FATAL_ERROR && s_connection_error (self, res)) {
                char reason[ERROR_MAX];
                crm_pg_message (reason, sizeof reason, PQresultErrorMessage (res));
                PQclear (res);
                s_lost (self, reason);
            }
            else {
                //  The commit at the Sync failed
                if (head->seg == SEG_WRITE)
                    s_write_failed (self, res, NULL);
                else {
                    s_format_error (self->error, sizeof self->error, res);
                    crm_warn ("could not commit: %s", self->error);
                }
                PQclear (res);
            }
        }
        else if (!res)
            s_ring_pop (self); //  The end of this command's results
        else {
            cmd_t cmd = *head;
            s_result (self, &cmd, res);
        }
    }
}

//  --------------------------------------------------------------------------
//  Connecting

static void
s_schedule_reconnect (crm_pg_t *self)
{
    self->state = STATE_DISCONNECTED;
    ev_timer_stop (self->loop, &self->timer);
    ev_timer_set (&self->timer, self->backoff, 0);
    ev_timer_start (self->loop, &self->timer);
    self->backoff *= 2;
    if (self->backoff > BACKOFF_MAX)
        self->backoff = BACKOFF_MAX;
}

static void
s_close (crm_pg_t *self)
{
    s_watch (self, &self->rio, -1, EV_READ, false, false);
    s_watch (self, &self->wio, -1, EV_WRITE, false, false);
    s_stop_kick (self);
    if (self->conn) {
        PQfinish (self->conn);
        self->conn = NULL;
    }
}

//  The connection broke: answer everything pending, close, try again later.
static void
s_lost (crm_pg_t *self, const char *reason)
{
    char message[ERROR_MAX + 64];
    char why[ERROR_MAX];
    crm_pg_message (why, sizeof why, reason);
    crm_warn ("connection to database lost: %s", why);
    snprintf (message, sizeof message, "connection to database lost: %s", why);
    s_close (self);
    self->state = STATE_DISCONNECTED;
    self->quiet = false;
    s_fail_all (self, message);
    if (self->state == STATE_DISCONNECTED)
        s_schedule_reconnect (self);
}

static void
s_connect_failed (crm_pg_t *self, const char *reason)
{
    char why[ERROR_MAX];
    crm_pg_message (why, sizeof why, reason);
    if (self->quiet)
        crm_debug ("could not connect to database: %s (retrying in %.1f s)", why, self->backoff);
    else
        crm_warn ("could not connect to database: %s (retrying in %.1f s)", why, self->backoff);
    self->quiet = true;
    s_close (self);
    s_schedule_reconnect (self);
}

static void
s_notice_cb (void *arg, const PGresult *res)
{
    (void) arg;
    const char *severity = PQresultErrorField (res, PG_DIAG_SEVERITY_NONLOCALIZED);
    char message[ERROR_MAX];
    s_format_error (message, sizeof message, res);
    if (severity && strcmp (severity, "WARNING") == 0)
        crm_warn ("database: %s", message);
    else
        crm_debug ("database: %s", message);
}

//  The connection is up: enter pipeline mode, set search_path, prepare.
static void
s_connected (crm_pg_t *self)
{
    ev_timer_stop (self->loop, &self->timer);
    s_watch (self, &self->wio, -1, EV_WRITE, false, false);
    if (PQsetnonblocking (self->conn, 1) || !PQenterPipelineMode (self->conn)) {
        s_connect_failed (self, PQerrorMessage (self->conn));
        return;
    }
    PQsetNoticeReceiver (self->conn, s_notice_cb, self);
    self->state = STATE_SETUP;
    self->nprepared = 0;
    self->setup_pending = 1;
    s_watch (self, &self->rio, PQsocket (self->conn), EV_READ, true, true);

    const char *values[] = {self->search_path};
    s_ring_push (self, CMD_SETUP, SEG_SETUP, 0, NULL);
    if (!PQsendQueryParams (self->conn, "SELECT pg_catalog.set_config('search_path', $1, false)", 1,
                            NULL, values, NULL, NULL, 0) ||
        s_send_sync (self, SEG_SETUP, 0)) {
        s_lost (self, PQerrorMessage (self->conn));
        return;
    }
    s_send (self);
}

//  Advances PQconnectPoll and watches the socket it asks for; the socket may
//  change between attempts at several addresses.
static void
s_connect_poll (crm_pg_t *self)
{
    switch (PQconnectPoll (self->conn)) {
        case PGRES_POLLING_READING:
            s_watch (self, &self->wio, -1, EV_WRITE, false, false);
            s_watch (self, &self->rio, PQsocket (self->conn), EV_READ, true, true);
            break;
        case PGRES_POLLING_WRITING:
            s_watch (self, &self->rio, -1, EV_READ, false, false);
            s_watch (self, &self->wio, PQsocket (self->conn), EV_WRITE, true, true);
            break;
        case PGRES_POLLING_OK:
            s_connected (self);
            break;
        default:
            s_connect_failed (self, PQerrorMessage (self->conn));
            break;
    }
}

//  Settings every connection gets unless its dsn says otherwise. A server that
//  vanishes without closing the connection (its host down, the network cut) is
//  noticed within about a minute, idle or not, rather than after the kernel's
//  quarter of an hour of retransmissions, with every request waiting. A
//  statement that waits half a minute (a lock a stuck session holds) fails
//  rather than holding its request and those behind it for ever: every
//  statement of the suite takes milliseconds.
static const char *const s_default_keywords[] = {
    "keepalives",       "keepalives_idle",  "keepalives_interval",
    "keepalives_count", "tcp_user_timeout", "options",
};
static const char *const s_default_values[] = {"1", "30",    "10",
                                               "3", "60000", "-c statement_timeout=30s"};
#define S_DEFAULTS (sizeof s_default_keywords / sizeof *s_default_keywords)

static void
s_connect_start (crm_pg_t *self)
{
    self->state = STATE_CONNECTING;
    //  The dsn comes after the defaults, so what it sets wins
    const char *keywords[S_DEFAULTS + 2], *values[S_DEFAULTS + 2];
    for (size_t i = 0; i < S_DEFAULTS; i++) {
        keywords[i] = s_default_keywords[i];
        values[i] = s_default_values[i];
    }
    keywords[S_DEFAULTS] = "dbname";
    values[S_DEFAULTS] = self->dsn;
    keywords[S_DEFAULTS + 1] = values[S_DEFAULTS + 1] = NULL;
    self->conn = PQconnectStartParams (keywords, values, 1);
    if (!self->conn || PQstatus (self->conn) == CONNECTION_BAD) {
        s_connect_failed (self, self->conn ? PQerrorMessage (self->conn) : "out of memory");
        return;
    }
    ev_timer_stop (self->loop, &self->timer);
    ev_timer_set (&self->timer, self->connect_timeout, 0);
    ev_timer_start (self->loop, &self->timer);
    //  As if PQconnectPoll had asked for writability
    s_watch (self, &self->wio, PQsocket (self->conn), EV_WRITE, true, true);
}

static void
s_timer_cb (struct ev_loop *loop, ev_timer *watcher, int revents)
{
    (void) loop;
    (void) revents;
    crm_pg_t *self = (crm_pg_t *) watcher->data;
    if (self->state == STATE_DISCONNECTED)
        s_connect_start (self);
    else if (self->state == STATE_CONNECTING)
        s_connect_failed (self, "timeout expired");
}

static void
s_socket (crm_pg_t *self, int revents)
{
    if (self->state == STATE_CONNECTING) {
        s_connect_poll (self);
        return;
    }
    if (!self->conn)
        return;
    if (revents & EV_READ) {
        if (!PQconsumeInput (self->conn)) {
            s_lost (self, PQerrorMessage (self->conn));
            return;
        }
        s_drain (self);
        if (!self->conn)
            return;
        if (PQstatus (self->conn) != CONNECTION_OK) {
            s_lost (self, PQerrorMessage (self->conn));
            return;
        }
    }
    if (ev_is_active (&self->wio))
        s_flush (self);
}

static void s_free (crm_pg_t *self);

//  Entry points that may call back: a callback may destroy self, which is
//  then freed only once the outermost of them returns.
static void
s_socket_cb (struct ev_loop *loop, ev_io *watcher, int revents)
{
    (void) loop;
    crm_pg_t *self = (crm_pg_t *) watcher->data;
    self->depth++;
    s_socket (self, revents);
    if (--self->depth == 0 && self->doomed)
        s_free (self);
}

//  --------------------------------------------------------------------------
//  Public API

crm_pg_t *
crm_pg_new (struct ev_loop *loop, const char *dsn, const char *schema)
{
    assert (loop);
    assert (dsn);
    assert (schema);
    char *err = NULL;
    PQconninfoOption *options = PQconninfoParse (dsn, &err);
    if (!options) {
        char why[ERROR_MAX];
        crm_pg_message (why, sizeof why, err ? err : "out of memory");
        crm_error ("invalid database connection string: %s", why);
        PQfreemem (err);
        return NULL;
    }
    double timeout = CONNECT_TIMEOUT;
    for (PQconninfoOption *option = options; option->keyword; option++)
        if (strcmp (option->keyword, "connect_timeout") == 0 && option->val &&
            atoi (option->val) > 0)
            timeout = atoi (option->val) < 2 ? 2 : atoi (option->val);
    PQconninfoFree (options);

    crm_pg_t *self = calloc (1, sizeof (crm_pg_t));
    if (!self)
        return NULL;
    self->loop = loop;
    self->dsn = strdup (dsn);
    //  search_path takes a list of identifiers: quote the schema as one
    size_t len = strlen (schema);
    self->search_path = malloc (2 * len + 3);
    if (!self->dsn || !self->search_path) {
        free (self->dsn);
        free (self->search_path);
        free (self);
        return NULL;
    }
    char *out = self->search_path;
    *out++ = '"';
    for (const char *in = schema; *in; in++) {
        if (*in == '"')
            *out++ = '"';
        *out++ = *in;
    }
    *out++ = '"';
    *out = '\0';
    self->connect_timeout = timeout;
    self->backoff = BACKOFF_MIN;
    self->max_batch = MAX_BATCH_DEFAULT;
    ev_init (&self->rio, s_socket_cb);
    ev_init (&self->wio, s_socket_cb);
    ev_init (&self->timer, s_timer_cb);
    ev_prepare_init (&self->kick, s_kick_cb);
    ev_idle_init (&self->kick_idle, s_kick_idle_cb);
    self->rio.data = self->wio.data = self->timer.data = self;
    self->kick.data = self->kick_idle.data = self;
    s_connect_start (self);
    return self;
}

void
crm_pg_destroy (crm_pg_t **self_p)
{
    assert (self_p);
    crm_pg_t *self = *self_p;
    if (!self)
        return;
    *self_p = NULL;
    if (self->state != STATE_CLOSED) {
        self->state = STATE_CLOSED;
        ev_timer_stop (self->loop, &self->timer);
        s_fail_all (self, "shutting down");
        s_close (self);
    }
    if (self->depth > 0)
        self->doomed = true; //  Called back from inside: freed on the way out
    else
        s_free (self);
}

static void
s_free (crm_pg_t *self)
{
    while (self->spare) {
        item_t *item = self->spare;
        self->spare = item->next;
        free (item);
    }
    for (int i = 0; i < self->nstmts; i++) {
        free (self->stmts[i].name);
        free (self->stmts[i].sql);
    }
    free (self->stmts);
    free (self->ring);
    free (self->json);
    free (self->dsn);
    free (self->search_path);
    free (self);
}

int
crm_pg_prepare (crm_pg_t *self, const char *name, const char *sql, int nparams)
{
    assert (self);
    assert (name && *name);
    assert (sql);
    assert (nparams >= 0 && nparams <= 65535);
    if (s_stmt_find (self, name)) {
        crm_error ("prepared statement \"%s\" registered twice", name);
        return -1;
    }
    if (self->nstmts == self->stmts_cap) {
        int cap = self->stmts_cap ? self->stmts_cap * 2 : 16;
        stmt_t *stmts = realloc (self->stmts, (size_t) cap * sizeof (stmt_t));
        if (!stmts)
            return -1;
        self->stmts = stmts;
        self->stmts_cap = cap;
    }
    stmt_t *stmt = &self->stmts[self->nstmts];
    stmt->name = strdup (name);
    stmt->sql = strdup (sql);
    stmt->nparams = nparams;
    stmt->batch = -1;
    if (!stmt->name || !stmt->sql) {
        free (stmt->name);
        free (stmt->sql);
        return -1;
    }
    self->nstmts++;
    //  Already connected: prepared by the next send, ahead of any use
    if (self->state == STATE_SETUP || self->state == STATE_READY)
        s_start_kick (self);
    return 0;
}

int
crm_pg_prepare_batch (crm_pg_t *self, const char *name, const char *batch_sql)
{
    assert (self);
    assert (name && batch_sql);
    const stmt_t *stmt = s_stmt_find (self, name);
    if (!stmt) {
        crm_error ("batch form of unknown prepared statement \"%s\"", name);
        return -1;
    }
    int index = (int) (stmt - self->stmts);
    if (self->stmts[index].batch >= 0) {
        crm_error ("prepared statement \"%s\" given a batch form twice", name);
        return -1;
    }
    char batch_name[256];
    snprintf (batch_name, sizeof batch_name, "%s/batch", name);
    if (crm_pg_prepare (self, batch_name, batch_sql, 1) != 0)
        return -1;
    self->stmts[index].batch = self->nstmts - 1;
    return 0;
}

//  Queues one statement on queue; -1 when not connected.
static int
s_submit (crm_pg_t *self, queue_t *queue, const char *name, int nparams, const char *const *values,
          crm_pg_fn *fn, void *arg)
{
    assert (self);
    assert (name);
    assert (fn);
    assert (nparams >= 0 && nparams <= 65535);
    assert (nparams == 0 || values);
    if (self->state != STATE_SETUP && self->state != STATE_READY)
        return -1;
    const stmt_t *stmt = s_stmt_find (self, name);
    if (!stmt) {
        crm_error ("unknown prepared statement \"%s\"", name);
        return -1;
    }
    item_t *item = s_item_new (self, stmt, nparams, values, fn, arg);
    if (!item)
        return -1;
    s_queue_push (queue, item);
    self->pending++;
    s_start_kick (self);
    return 0;
}

int
crm_pg_read (crm_pg_t *self, const char *name, int nparams, const char *const *values,
             crm_pg_fn *fn, void *arg)
{
    return s_submit (self, &self->reads, name, nparams, values, fn, arg);
}

int
crm_pg_write (crm_pg_t *self, const char *name, int nparams, const char *const *values,
              crm_pg_fn *fn, void *arg)
{
    return s_submit (self, &self->writes, name, nparams, values, fn, arg);
}

int
crm_pg_connected (crm_pg_t *self)
{
    assert (self);
    return self->state == STATE_READY;
}

int
crm_pg_pending (crm_pg_t *self)
{
    assert (self);
    return self->pending;
}

void
crm_pg_set_max_batch (crm_pg_t *self, int max_batch)
{
    assert (self);
    self->max_batch = max_batch < 1 ? 1 : max_batch;
}
