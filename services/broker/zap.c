/*  zap.c - the broker's ZAP handler (ZeroMQ RFC 27): which CURVE clients may connect. */
#include "zap.h"

#include "crm_curve.h"
#include "crm_log.h"

#include <assert.h>
#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <zmq.h>

#define S_KEY    CRM_CURVE_KEY_BYTES
#define S_FRAMES 8 //  A request has 7 frames for CURVE; more are read and dropped

typedef struct {
    uint8_t (*keys)[S_KEY];
    size_t n;
    size_t cap;
} s_keys_t;

struct _broker_zap_t {
    void *socket;
    bool any;         //  "*": every client with a valid handshake
    s_keys_t given;   //  From the list given at start
    s_keys_t file;    //  From the file, as last read
    char *keys_file;  //  NULL: none
    struct stat seen; //  The file when last read
};

static void
s_zap_keys_add (s_keys_t *set, const uint8_t key[S_KEY])
{
    if (set->n == set->cap) {
        set->cap = set->cap ? set->cap * 2 : 16;
        set->keys = realloc (set->keys, set->cap * sizeof *set->keys);
        assert (set->keys);
    }
    memcpy (set->keys[set->n++], key, S_KEY);
}

static bool
s_zap_keys_has (const s_keys_t *set, const uint8_t *key)
{
    for (size_t i = 0; i < set->n; i++)
        if (memcmp (set->keys[i], key, S_KEY) == 0)
            return true;
    return false;
}

//  Adds one key written in hex or Z85 (len characters at c); -1 with an
//  error line naming where when it is not a key.
static int
s_zap_add_text (s_keys_t *set, const char *c, size_t len, const char *where, int line)
{
    char token[CRM_CURVE_KEY_HEX + 1];
    uint8_t key[S_KEY];
    if (len > CRM_CURVE_KEY_HEX ||
        (memcpy (token, c, len), token[len] = '\0', crm_curve_key_decode (token, key) != 0)) {
        crm_error ("%s%s%.0d: \"%.*s\" is not a CURVE public key (64 hex digits or 40 "
                   "characters of Z85)",
                   where, line ? ", line " : "", line, len > 64 ? 64 : (int) len, c);
        return -1;
    }
    s_zap_keys_add (set, key);
    return 0;
}

//  The keys of a list (commas or white space between them; "*" sets *any).
static int
s_zap_parse_list (const char *text, s_keys_t *set, bool *any)
{
    const char *c = text;
    while (*c) {
        size_t skip = strspn (c, ", \t\r\n");
        c += skip;
        size_t len = strcspn (c, ", \t\r\n");
        if (len == 0)
            break;
        if (len == 1 && *c == '*')
            *any = true;
        else if (s_zap_add_text (set, c, len, "CRM_BROKER_CLIENT_KEYS", 0) != 0)
            return -1;
        c += len;
    }
    return 0;
}

//  The keys of a file: one a line, its first word; what follows it on the line
//  is a comment, and so is a line whose first word is not a key but starts
//  with "#" (a key itself may hold a "#"). Blank lines are skipped.
static int
s_zap_parse_file (const char *text, s_keys_t *set, const char *where)
{
    int line = 0;
    const char *c = text;
    while (*c) {
        line++;
        const char *end = strchr (c, '\n');
        size_t line_len = end ? (size_t) (end - c) : strlen (c);
        size_t skip = strspn (c, " \t\r");
        const char *word = c + skip;
        size_t len = skip < line_len ? strcspn (word, " \t\r\n") : 0;
        if (len > 0) {
            //  A first word starting with "#" is a comment unless it is a key
            char token[CRM_CURVE_KEY_HEX + 1] = "";
            if (*word == '#' && len <= CRM_CURVE_KEY_HEX) {
                memcpy (token, word, len);
                token[len] = '\0';
            }
            bool comment = *word == '#' && !crm_curve_key_valid (token);
            if (!comment && s_zap_add_text (set, word, len, where, line) != 0)
                return -1;
        }
        c += line_len + (end ? 1 : 0);
    }
    return 0;
}

static bool
s_zap_same_file (const struct stat *a, const struct stat *b)
{
    return a->st_mtim.tv_sec == b->st_mtim.tv_sec && a->st_mtim.tv_nsec == b->st_mtim.tv_nsec &&
           a->st_size == b->st_size && a->st_ino == b->st_ino;
}

//  True when what was read (st, from the open file) is the file as it stands,
//  and it has stood for a moment. A change is noticed by its time stamp, size
//  and inode, and a write in place can leave all three as they were read
//  while it was under way (the time stamp is set as a write starts, and has
//  a coarse tick): a file read too soon after a change is read again at the
//  next handshake, until it has settled.
static bool
s_zap_settled (const char *path, const struct stat *st)
{
    struct stat now_st;
    struct timespec now;
    if (stat (path, &now_st) != 0 || !s_zap_same_file (&now_st, st) ||
        clock_gettime (CLOCK_REALTIME, &now) != 0)
        return false;
    return now.tv_sec - st->st_mtim.tv_sec >= 2;
}

//  Reads the file into a fresh set: 1 when its keys differ from those read
//  before, 0 when they are the same; -1, the old set kept, when it cannot be
//  read or parsed.
static int
s_zap_read_file (broker_zap_t *self)
{
    FILE *file = fopen (self->keys_file, "r");
    struct stat st;
    if (!file || fstat (fileno (file), &st) != 0) {
        crm_error ("could not read the client keys of %s: %s", self->keys_file, strerror (errno));
        if (file)
            fclose (file);
        return -1;
    }
    char *text = calloc (1, (size_t) st.st_size + 1);
    assert (text);
    size_t got = fread (text, 1, (size_t) st.st_size, file);
    text[got] = '\0';
    fclose (file);
    s_keys_t set = {0};
    int rc = s_zap_parse_file (text, &set, self->keys_file);
    free (text);
    if (rc != 0) {
        free (set.keys);
        return -1;
    }
    bool changed =
        set.n != self->file.n || (set.n && memcmp (set.keys, self->file.keys, set.n * S_KEY) != 0);
    free (self->file.keys);
    self->file = set;
    if (s_zap_settled (self->keys_file, &st))
        self->seen = st;
    else
        memset (&self->seen, 0, sizeof self->seen);
    return changed ? 1 : 0;
}

//  Reads the file again when it changed since it was read.
static void
s_zap_refresh (broker_zap_t *self)
{
    struct stat st;
    if (!self->keys_file || stat (self->keys_file, &st) != 0)
        return;
    if (s_zap_same_file (&st, &self->seen))
        return;
    int rc = s_zap_read_file (self);
    //  Said when the keys changed, not at every read of a file still settling
    if (rc == 1)
        crm_info ("client keys of %s read again: %zu keys", self->keys_file, self->file.n);
    else if (rc < 0 && s_zap_settled (self->keys_file, &st))
        self->seen = st; //  Said once; the keys read last still hold until the file changes
}

broker_zap_t *
broker_zap_new (void *ctx, const char *keys, const char *keys_file)
{
    assert (ctx);
    broker_zap_t *self = calloc (1, sizeof *self);
    assert (self);
    if (keys && s_zap_parse_list (keys, &self->given, &self->any) != 0) {
        broker_zap_destroy (&self);
        return NULL;
    }
    if (keys_file && *keys_file) {
        self->keys_file = strdup (keys_file);
        if (s_zap_read_file (self) < 0) {
            broker_zap_destroy (&self);
            return NULL;
        }
    }
    if (!self->any && self->given.n == 0 && !self->keys_file) {
        crm_error ("CURVE is on, and no client may connect: give CRM_BROKER_CLIENT_KEYS (keys, "
                   "or * for any) or CRM_BROKER_CLIENT_KEYS_FILE");
        broker_zap_destroy (&self);
        return NULL;
    }
    if (!self->any && self->given.n == 0 && self->file.n == 0)
        crm_warn ("CURVE is on, and %s holds no key yet: no client may connect until one is "
                  "added",
                  self->keys_file);
    self->socket = zmq_socket (ctx, ZMQ_REP);
    int linger = 0;
    if (!self->socket || zmq_setsockopt (self->socket, ZMQ_LINGER, &linger, sizeof linger) != 0 ||
        zmq_bind (self->socket, "inproc://zeromq.zap.01") != 0) {
        crm_error ("could not start the CURVE authentication handler: %s", zmq_strerror (errno));
        broker_zap_destroy (&self);
        return NULL;
    }
    return self;
}

void
broker_zap_destroy (broker_zap_t **self_p)
{
    assert (self_p);
    broker_zap_t *self = *self_p;
    if (!self)
        return;
    *self_p = NULL;
    if (self->socket)
        zmq_close (self->socket);
    free (self->given.keys);
    free (self->file.keys);
    free (self->keys_file);
    free (self);
}

void *
broker_zap_socket (broker_zap_t *self)
{
    assert (self);
    return self->socket;
}

size_t
broker_zap_keys (broker_zap_t *self)
{
    assert (self);
    return self->given.n + self->file.n;
}

bool
broker_zap_any (broker_zap_t *self)
{
    assert (self);
    return self->any;
}

static void
s_zap_send (void *socket, const void *data, size_t size, bool more)
{
    zmq_send (socket, data, size, more ? ZMQ_SNDMORE : 0);
}

static void
s_zap_reply (void *socket, zmq_msg_t *request_id, const char *code, const char *text,
             const char *user_id)
{
    s_zap_send (socket, "1.0", 3, true);
    s_zap_send (socket, zmq_msg_data (request_id), zmq_msg_size (request_id), true);
    s_zap_send (socket, code, strlen (code), true);
    s_zap_send (socket, text, strlen (text), true);
    s_zap_send (socket, user_id, strlen (user_id), true);
    s_zap_send (socket, "", 0, false);
}

//  One request: [version][request id][domain][address][routing id][mechanism][credentials...]
static int
s_zap_handle_one (broker_zap_t *self)
{
    zmq_msg_t parts[S_FRAMES];
    int n = 0;
    int more = 1;
    while (more) {
        zmq_msg_t part;
        zmq_msg_init (&part);
        if (zmq_msg_recv (&part, self->socket, n == 0 ? ZMQ_DONTWAIT : 0) < 0) {
            zmq_msg_close (&part);
            for (int i = 0; i < n && i < S_FRAMES; i++)
                zmq_msg_close (&parts[i]);
            return -1;
        }
        more = zmq_msg_more (&part);
        if (n < S_FRAMES)
            parts[n] = part;
        else
            zmq_msg_close (&part);
        n++;
    }
    if (n > S_FRAMES)
        n = S_FRAMES;
    if (n < 6) {
        //  Not a ZAP request; a REP socket must still answer it
        zmq_msg_t empty;
        zmq_msg_init (&empty);
        s_zap_reply (self->socket, n > 1 ? &parts[1] : &empty, "500", "malformed request", "");
        zmq_msg_close (&empty);
    }
    else {
        char address[64], mechanism[16];
        snprintf (address, sizeof address, "%.*s", (int) zmq_msg_size (&parts[3]),
                  (const char *) zmq_msg_data (&parts[3]));
        snprintf (mechanism, sizeof mechanism, "%.*s", (int) zmq_msg_size (&parts[5]),
                  (const char *) zmq_msg_data (&parts[5]));
        if (zmq_msg_size (&parts[0]) != 3 || memcmp (zmq_msg_data (&parts[0]), "1.0", 3) != 0)
            s_zap_reply (self->socket, &parts[1], "500", "ZAP version not supported", "");
        else if (strcmp (mechanism, "CURVE") != 0)
            //  Only the broker's CURVE sockets ask, and a CURVE server meets only CURVE
            //  clients: anything else is refused
            s_zap_reply (self->socket, &parts[1], "400", "only CURVE is admitted", "");
        else if (n < 7 || zmq_msg_size (&parts[6]) != S_KEY) {
            s_zap_reply (self->socket, &parts[1], "400", "no client key", "");
        }
        else {
            const uint8_t *key = zmq_msg_data (&parts[6]);
            char text[CRM_CURVE_KEY_Z85 + 1];
            zmq_z85_encode (text, key, S_KEY);
            s_zap_refresh (self);
            if (self->any || s_zap_keys_has (&self->given, key) ||
                s_zap_keys_has (&self->file, key)) {
                s_zap_reply (self->socket, &parts[1], "200", "OK", text);
                crm_debug ("CURVE client %s from %s admitted", text, address);
            }
            else {
                s_zap_reply (self->socket, &parts[1], "400", "unknown client key", "");
                crm_warn ("refused a CURVE client from %s: its key %s is not among the client "
                          "keys",
                          address, text);
            }
        }
    }
    for (int i = 0; i < n; i++)
        zmq_msg_close (&parts[i]);
    return 0;
}

void
broker_zap_handle (broker_zap_t *self)
{
    assert (self);
    while (s_zap_handle_one (self) == 0)
        ;
}
