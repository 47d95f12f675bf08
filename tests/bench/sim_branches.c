/*  sim_branches.c - N branch systems publishing order events through crm_branch, at a set rate or as fast as acknowledged.
 *
 *  Each simulated order is a chain of branch events: PlaceOrder, then status
 *  changes one after another (a till sends the next change of an order once
 *  the previous one is acknowledged, so one order never has two events in
 *  flight), or a single RecordPurchase for a sale at the till. Many orders
 *  of many branches are in flight at once, up to the window. Request ids are
 *  "<run>-<branch>-<order>-<step>", the branch's own event ids; --outcomes
 *  writes every event's outcome so a test can compare them with what the
 *  service stored. Prints the acknowledged rate and the publish-to-ack
 *  latency, as text and as key=value lines.
 */
#include "bench.h"
#include "crm.h"
#include "crm/v1/orders.pb-c.h"

#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

//  The steps of an order's chain
typedef enum {
    STEP_PLACE,
    STEP_CONFIRMED,
    STEP_PREPARING,
    STEP_READY,
    STEP_COMPLETED,
    STEP_CANCELLED,
    STEP_PURCHASE,
} s_step_t;

static const char *s_step_names[] = {"place",     "confirmed", "preparing", "ready",
                                     "completed", "cancelled", "purchase"};

//  Chains: the steps each kind of order goes through
static const s_step_t s_chain_completed[] = {STEP_PLACE, STEP_CONFIRMED, STEP_PREPARING, STEP_READY,
                                             STEP_COMPLETED};
static const s_step_t s_chain_cancelled[] = {STEP_PLACE, STEP_CONFIRMED, STEP_CANCELLED};
static const s_step_t s_chain_open[] = {STEP_PLACE, STEP_CONFIRMED, STEP_PREPARING, STEP_READY};
static const s_step_t s_chain_place[] = {STEP_PLACE};
static const s_step_t s_chain_purchase[] = {STEP_PURCHASE};

typedef struct {
    const s_step_t *steps; //  Its chain
    int length;            //  Steps in the chain (may be cut short at the end of a run)
    int next;              //  Index of the next step to publish
    int branch;            //  Branch index
    int contact;           //  Index into the contact ids, -1 for none
    int items;             //  Number of items, 1..3
    int seed;              //  Varies products and prices
} s_order_t;

typedef struct {
    const char *broker;
    int branches;
    double rate;
    double duration_s;
    long events;
    int window;
    int timeout_ms;
    int retries;
    int full_mix;
    const char *contacts_path;
    const char *outcomes_path;
    char run[40];
    int quiet;
} s_options_t;

typedef struct {
    s_options_t opt;
    char **contacts; //  Contact ids
    int ncontacts;
    s_order_t *orders; //  Every order started
    long norders;
    long orders_cap;
    long *ready; //  Ring of orders whose next step may be published
    long ready_cap;
    long ready_head;
    long ready_count;
    int64_t *latencies; //  Publish-to-ack of every acknowledged or duplicate event, us
    long nlatencies;
    long latencies_cap;
    long failed_chains; //  Orders whose chain stopped at a failure
    long completed;     //  Orders completed (COMPLETED or a purchase) as acknowledged
    FILE *outcomes;
} s_sim_t;

static void
s_ready_push (s_sim_t *sim, long order)
{
    if (sim->ready_count == sim->ready_cap) {
        long cap = sim->ready_cap ? sim->ready_cap * 2 : 1024;
        long *ring = malloc ((size_t) cap * sizeof *ring);
        for (long i = 0; i < sim->ready_count; i++)
            ring[i] = sim->ready[(sim->ready_head + i) % sim->ready_cap];
        free (sim->ready);
        sim->ready = ring;
        sim->ready_cap = cap;
        sim->ready_head = 0;
    }
    sim->ready[(sim->ready_head + sim->ready_count) % sim->ready_cap] = order;
    sim->ready_count++;
}

static long
s_ready_pop (s_sim_t *sim)
{
    long order = sim->ready[sim->ready_head];
    sim->ready_head = (sim->ready_head + 1) % sim->ready_cap;
    sim->ready_count--;
    return order;
}

//  The request id of an order's step; also the name the outcomes file uses
static void
s_request_id (s_sim_t *sim, long index, char *out, size_t size)
{
    s_order_t *order = &sim->orders[index];
    snprintf (out, size, "%s-b%02d-%ld-%s", sim->opt.run, order->branch, index,
              s_step_names[order->steps[order->next]]);
}

static void
s_branch_name (s_sim_t *sim, int branch, char *out, size_t size)
{
    snprintf (out, size, "sim-%s-b%02d", sim->opt.run, branch);
}

static void
s_on_outcome (const crm_branch_result_t *result, void *arg)
{
    s_sim_t *sim = arg;
    long index = (long) (intptr_t) result->tag;
    s_order_t *order = &sim->orders[index];
    s_step_t step = order->steps[order->next];
    if (sim->outcomes)
        fprintf (sim->outcomes, "%s\t%s\t%s\t%s\n", result->request_id, result->method,
                 crm_branch_outcome_name (result->outcome), crm_status_name (result->code));
    if (result->outcome == CRM_BRANCH_FAILED) {
        if (!sim->opt.quiet && sim->failed_chains < 10)
            fprintf (stderr, "sim: %s %s failed after %d attempts: %s: %s\n", result->request_id,
                     result->method, result->attempts, crm_status_name (result->code),
                     result->message);
        sim->failed_chains++;
        return;
    }
    if (sim->nlatencies == sim->latencies_cap) {
        sim->latencies_cap = sim->latencies_cap ? sim->latencies_cap * 2 : 65536;
        sim->latencies =
            realloc (sim->latencies, (size_t) sim->latencies_cap * sizeof *sim->latencies);
    }
    sim->latencies[sim->nlatencies++] = result->latency_us;
    if (step == STEP_COMPLETED || step == STEP_PURCHASE)
        sim->completed++;
    order->next++;
    if (order->next < order->length)
        s_ready_push (sim, index);
}

//  Picks the kind of a new order; full_mix: most are completed, some
//  cancelled, some left open, some are sales at the till
static long
s_order_new (s_sim_t *sim, long budget)
{
    if (sim->norders == sim->orders_cap) {
        sim->orders_cap = sim->orders_cap ? sim->orders_cap * 2 : 4096;
        sim->orders = realloc (sim->orders, (size_t) sim->orders_cap * sizeof *sim->orders);
    }
    long index = sim->norders++;
    s_order_t *order = &sim->orders[index];
    memset (order, 0, sizeof *order);
    int draw = rand () % 100;
    if (!sim->opt.full_mix) {
        order->steps = s_chain_place;
        order->length = 1;
    }
    else if (draw < 10) {
        order->steps = s_chain_purchase;
        order->length = 1;
    }
    else if (draw < 15) {
        order->steps = s_chain_cancelled;
        order->length = 3;
    }
    else if (draw < 20) {
        order->steps = s_chain_open;
        order->length = 4;
    }
    else {
        order->steps = s_chain_completed;
        order->length = 5;
    }
    if (budget >= 0 && order->length > budget)
        order->length = (int) budget; //  The last orders of a run end where the events do
    order->branch = (int) (index % sim->opt.branches);
    order->contact = sim->ncontacts ? rand () % sim->ncontacts : -1;
    order->items = 1 + rand () % 3;
    order->seed = rand ();
    return index;
}

//  Publishes the next step of an order
static int
s_publish (s_sim_t *sim, crm_branch_t *pub, long index)
{
    s_order_t *order = &sim->orders[index];
    s_step_t step = order->steps[order->next];
    char rid[128], external_id[64], branch[64];
    s_request_id (sim, index, rid, sizeof rid);
    snprintf (external_id, sizeof external_id, "%s-%ld", sim->opt.run, index);
    s_branch_name (sim, order->branch, branch, sizeof branch);
    void *tag = (void *) (intptr_t) index;

    if (step == STEP_PLACE || step == STEP_PURCHASE) {
        Crm__V1__OrderItem items[3];
        Crm__V1__OrderItem *item_ptrs[3];
        char product_ids[3][16], names[3][32];
        for (int i = 0; i < order->items; i++) {
            crm__v1__order_item__init (&items[i]);
            int product = (order->seed >> (i * 5)) % 200;
            snprintf (product_ids[i], sizeof product_ids[i], "p%03d", product);
            snprintf (names[i], sizeof names[i], "Product %d", product);
            items[i].product_id = product_ids[i];
            items[i].name = names[i];
            items[i].quantity = 1 + (order->seed >> (i * 3)) % 3;
            items[i].unit_price_minor = 100 + (order->seed >> (i * 7)) % 4900;
            item_ptrs[i] = &items[i];
        }
        Crm__V1__Order o = CRM__V1__ORDER__INIT;
        o.branch = branch;
        o.contact_id = order->contact >= 0 ? sim->contacts[order->contact] : "";
        o.external_id = external_id;
        o.n_items = (size_t) order->items;
        o.items = item_ptrs;
        o.currency = "EUR";
        o.customer_first_name = "Anna";
        if (step == STEP_PLACE) {
            o.promised_by_unix_ms = crm_now_ms () + 2 * 3600 * 1000;
            Crm__V1__PlaceOrderRequest place = CRM__V1__PLACE_ORDER_REQUEST__INIT;
            place.order = &o;
            return crm_branch_publish (pub, "orders", "PlaceOrder", rid, branch, &place.base, tag);
        }
        Crm__V1__RecordPurchaseRequest purchase = CRM__V1__RECORD_PURCHASE_REQUEST__INIT;
        purchase.order = &o;
        return crm_branch_publish (pub, "orders", "RecordPurchase", rid, branch, &purchase.base,
                                   tag);
    }
    Crm__V1__ChangeStatusRequest change = CRM__V1__CHANGE_STATUS_REQUEST__INIT;
    change.external_id = external_id;
    change.actor = "till-1";
    switch (step) {
        case STEP_CONFIRMED:
            change.to = CRM__V1__ORDER_STATUS__ORDER_STATUS_CONFIRMED;
            break;
        case STEP_PREPARING:
            change.to = CRM__V1__ORDER_STATUS__ORDER_STATUS_IN_PREPARATION;
            break;
        case STEP_READY:
            change.to = CRM__V1__ORDER_STATUS__ORDER_STATUS_READY;
            break;
        case STEP_COMPLETED:
            change.to = CRM__V1__ORDER_STATUS__ORDER_STATUS_COMPLETED;
            break;
        default:
            change.to = CRM__V1__ORDER_STATUS__ORDER_STATUS_CANCELLED;
            change.reason = "customer changed their mind";
            break;
    }
    return crm_branch_publish (pub, "orders", "ChangeStatus", rid, branch, &change.base, tag);
}

static int
s_load_contacts (s_sim_t *sim, const char *path)
{
    FILE *f = fopen (path, "r");
    if (!f) {
        fprintf (stderr, "sim: could not open \"%s\"\n", path);
        return -1;
    }
    char line[256];
    int cap = 0;
    while (fgets (line, sizeof line, f)) {
        line[strcspn (line, "\r\n\t ")] = '\0';
        if (!*line)
            continue;
        if (sim->ncontacts == cap) {
            cap = cap ? cap * 2 : 1024;
            sim->contacts = realloc (sim->contacts, (size_t) cap * sizeof *sim->contacts);
        }
        sim->contacts[sim->ncontacts++] = strdup (line);
    }
    fclose (f);
    return 0;
}

static void
s_usage (FILE *out)
{
    fprintf (
        out,
        "usage: sim_branches [options]\n"
        "  --broker EP        broker endpoint (default $CRM_BROKER_ENDPOINT or "
        "tcp://127.0.0.1:5555)\n"
        "  --branches N       branches publishing (default 4)\n"
        "  --rate R           events per second in total; 0 = as fast as acknowledged (default)\n"
        "  --duration S       seconds to publish (default 10), unless --events\n"
        "  --events N         publish exactly N events, then stop\n"
        "  --window N         events in flight at most (default 256)\n"
        "  --timeout-ms N     wait for one attempt's answer (default 5000)\n"
        "  --retries N        resends per event (default 8)\n"
        "  --mix place|full   PlaceOrder only (default), or order chains through\n"
        "                     COMPLETED, some CANCELLED or left open, 10%% RecordPurchase\n"
        "  --contacts FILE    contact ids, one a line, for the orders' customers\n"
        "  --run ID           prefix of request and external ids (default: random)\n"
        "  --outcomes FILE    write \"request_id method outcome status\" per event\n"
        "  --quiet            no lines about failed events (else the first 10)\n");
}

static int
s_parse (s_options_t *opt, int argc, char **argv)
{
    static const struct option options[] = {
        {"broker", required_argument, NULL, 'B'},
        {"branches", required_argument, NULL, 'n'},
        {"rate", required_argument, NULL, 'r'},
        {"duration", required_argument, NULL, 'd'},
        {"events", required_argument, NULL, 'e'},
        {"window", required_argument, NULL, 'w'},
        {"timeout-ms", required_argument, NULL, 't'},
        {"retries", required_argument, NULL, 'R'},
        {"mix", required_argument, NULL, 'm'},
        {"contacts", required_argument, NULL, 'c'},
        {"run", required_argument, NULL, 'u'},
        {"outcomes", required_argument, NULL, 'o'},
        {"quiet", no_argument, NULL, 'q'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    const char *env = getenv ("CRM_BROKER_ENDPOINT");
    opt->broker = env && *env ? env : "tcp://127.0.0.1:5555";
    opt->branches = 4;
    opt->duration_s = 10;
    opt->events = -1;
    opt->window = 256;
    opt->timeout_ms = 5000;
    opt->retries = 8;
    char uuid[37];
    crm_uuid (uuid);
    snprintf (opt->run, sizeof opt->run, "%.8s", uuid);
    int c;
    while ((c = getopt_long (argc, argv, "", options, NULL)) != -1) {
        switch (c) {
            case 'B':
                opt->broker = optarg;
                break;
            case 'n':
                opt->branches = atoi (optarg);
                break;
            case 'r':
                opt->rate = atof (optarg);
                break;
            case 'd':
                opt->duration_s = atof (optarg);
                break;
            case 'e':
                opt->events = atol (optarg);
                break;
            case 'w':
                opt->window = atoi (optarg);
                break;
            case 't':
                opt->timeout_ms = atoi (optarg);
                break;
            case 'R':
                opt->retries = atoi (optarg);
                break;
            case 'm':
                if (strcmp (optarg, "full") != 0 && strcmp (optarg, "place") != 0) {
                    s_usage (stderr);
                    return -1;
                }
                opt->full_mix = strcmp (optarg, "full") == 0;
                break;
            case 'c':
                opt->contacts_path = optarg;
                break;
            case 'u':
                snprintf (opt->run, sizeof opt->run, "%s", optarg);
                break;
            case 'o':
                opt->outcomes_path = optarg;
                break;
            case 'q':
                opt->quiet = 1;
                break;
            case 'h':
                s_usage (stdout);
                exit (0);
            default:
                s_usage (stderr);
                return -1;
        }
    }
    if (optind != argc || opt->branches < 1 || opt->window < 1 || opt->timeout_ms < 1 ||
        opt->retries < 0 || opt->rate < 0 || (opt->events < 0 && opt->duration_s <= 0)) {
        s_usage (stderr);
        return -1;
    }
    return 0;
}

int
main (int argc, char **argv)
{
    zsys_handler_set (NULL);
    crm_log_init ("sim_branches", NULL, "error", "text");
    crm_log_set_stream (stderr);
    s_sim_t sim;
    memset (&sim, 0, sizeof sim);
    if (s_parse (&sim.opt, argc, argv) != 0)
        return 64;
    s_options_t *opt = &sim.opt;
    srand ((unsigned) s_now_us ());
    if (opt->contacts_path && s_load_contacts (&sim, opt->contacts_path) != 0)
        return 66;
    if (opt->outcomes_path && !(sim.outcomes = fopen (opt->outcomes_path, "w"))) {
        fprintf (stderr, "sim: could not write \"%s\"\n", opt->outcomes_path);
        return 73;
    }
    crm_branch_t *pub = crm_branch_new (opt->broker);
    if (!pub)
        return 69;
    crm_branch_set_window (pub, opt->window);
    crm_branch_set_timeout (pub, opt->timeout_ms);
    crm_branch_set_retries (pub, opt->retries);
    crm_branch_set_caller (pub, "sim_branches");
    crm_branch_set_handler (pub, s_on_outcome, &sim);

    //  The scheduler: each turn publishes one event, the next step of an order
    //  whose previous step was acknowledged (mostly) or the first of a new one
    long budget = opt->events; //  Events not yet given to an order; -1 with --duration
    long published = 0;
    int64_t start = s_now_us ();
    int64_t stop_at = opt->events >= 0 ? -1 : start + (int64_t) (opt->duration_s * 1e6);
    while (true) {
        int64_t now = s_now_us ();
        bool time_up = stop_at >= 0 && now >= stop_at;
        bool can_start = !time_up && budget != 0;
        if (time_up || (!can_start && sim.ready_count == 0)) {
            //  Nothing new to send: wait for chains in flight to go on, or end
            if (time_up || crm_branch_in_flight (pub) == 0)
                break;
            crm_branch_poll (pub, -1);
            continue;
        }
        if (opt->rate > 0) {
            int64_t due = start + (int64_t) ((double) published * 1e6 / opt->rate);
            if (due > now) {
                //  At least a millisecond, rounded up: a wait of 0 would spin
                //  and take a core from the suite being measured. What is due
                //  meanwhile goes together after it
                crm_branch_poll (pub, (int) ((due - now + 999) / 1000));
                continue;
            }
        }
        long index;
        if (sim.ready_count > 0 && (!can_start || rand () % 4 != 0))
            index = s_ready_pop (&sim);
        else {
            index = s_order_new (&sim, budget);
            if (budget > 0)
                budget -= sim.orders[index].length;
        }
        if (s_publish (&sim, pub, index) != 0) {
            fprintf (stderr, "sim: could not publish: %s\n", strerror (errno));
            break;
        }
        published++;
    }
    int64_t sending_end = s_now_us ();
    crm_branch_flush (pub, -1);
    int64_t end = s_now_us ();
    crm_branch_counters_t counters;
    crm_branch_counters (pub, &counters);
    crm_branch_destroy (&pub);
    if (sim.outcomes)
        fclose (sim.outcomes);

    double elapsed = (double) (end - start) / 1e6;
    double ack_rate = (double) (counters.acknowledged + counters.duplicates) / elapsed;
    qsort (sim.latencies, (size_t) sim.nlatencies, sizeof *sim.latencies, s_cmp_i64);
    double p50 = sim.nlatencies ? (double) sim.latencies[sim.nlatencies / 2] / 1000.0 : 0;
    double p99 = sim.nlatencies
                     ? (double) sim.latencies[(long) ((double) sim.nlatencies * 0.99)] / 1000.0
                     : 0;
    double pmax = sim.nlatencies ? (double) sim.latencies[sim.nlatencies - 1] / 1000.0 : 0;
    printf ("sim: %d branches, %s, %lu events in %.2f s (sending %.2f s): %.0f acknowledged/s; "
            "publish->ack p50 %.2f ms, p99 %.2f ms, max %.1f ms\n",
            opt->branches, opt->full_mix ? "full mix" : "PlaceOrder only",
            (unsigned long) counters.published, elapsed, (double) (sending_end - start) / 1e6,
            ack_rate, p50, p99, pmax);
    printf ("sim: acknowledged %lu, duplicates %lu, failed %lu, resent %lu, timeouts %lu; "
            "orders %ld, completed %ld\n",
            (unsigned long) counters.acknowledged, (unsigned long) counters.duplicates,
            (unsigned long) counters.failed, (unsigned long) counters.resent,
            (unsigned long) counters.timeouts, sim.norders, sim.completed);
    printf ("sim_events=%lu\nsim_acknowledged=%lu\nsim_duplicates=%lu\nsim_failed=%lu\n"
            "sim_resent=%lu\nsim_elapsed_s=%.3f\nsim_ack_rate=%.0f\nsim_p50_ms=%.3f\n"
            "sim_p99_ms=%.3f\nsim_max_ms=%.3f\n",
            (unsigned long) counters.published, (unsigned long) counters.acknowledged,
            (unsigned long) counters.duplicates, (unsigned long) counters.failed,
            (unsigned long) counters.resent, elapsed, ack_rate, p50, p99, pmax);
    for (int i = 0; i < sim.ncontacts; i++)
        free (sim.contacts[i]);
    free (sim.contacts);
    free (sim.orders);
    free (sim.ready);
    free (sim.latencies);
    return counters.failed ? 1 : 0;
}
