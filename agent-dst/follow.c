/*
 * follow.c - delta syncs in a loop until a signal (see follow.h).
 *
 * The signal handler only sets a flag. ferry_sync looks at it between
 * batches, and so does the sleep between rounds (in short slices), so a
 * stop never cuts a batch in half: the target transaction and the mark in
 * the state always agree when follow exits.
 */
#include "follow.h"

#include "../common/log.h"
#include "state.h"
#include "sync.h"

#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#define SLEEP_SLICE_NS (100 * 1000 * 1000)

static volatile sig_atomic_t stop_flag;

static void on_stop(int sig)
{
    (void)sig;
    stop_flag = 1;
}

static double now_s(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* Sleep secs, or less when a stop arrives. */
static void nap(double secs)
{
    double end = now_s() + secs;

    while (!stop_flag) {
        double left = end - now_s();
        struct timespec ts = {0, SLEEP_SLICE_NS};

        if (left <= 0)
            break;
        if (left < 0.1)
            ts.tv_nsec = (long)(left * 1e9);
        nanosleep(&ts, NULL);
    }
}

/*
 * Errors a later round may not meet again: the source restarting, a network
 * blip; a clash with another tenant of the same target, whose own sync may
 * take or give up the row meanwhile (a row moved between them, or traded).
 */
/*
 * A round that failed for a reason the next one may not meet: the source
 * or the target away a moment, another tenant's rows in the way, or the
 * state held by another run of ferry-dst (a verify, a one-shot sync).
 */
static int retryable(int code, const struct ferry_error *err)
{
    return code == FERRY_EUNREACHABLE || code == FERRY_EPROTO || code == FERRY_EDB ||
           code == FERRY_EIO || code == FERRY_ECLASH || ferry_state_busy(err);
}

static void report_round(const struct ferry_follow_opts *o, int round,
                         const struct ferry_sync_report *rep, int64_t lag)
{
    if (o->json) {
        printf("{\"round\":%d,\"ok\":true,\"hwm\":%" PRId64 ",\"head\":%" PRId64
               ",\"pending\":%" PRId64 ",\"copied\":%" PRId64 ",\"upserted\":%" PRId64
               ",\"deleted\":%" PRId64 ",\"lag_seconds\":%" PRId64 "}\n",
               round, rep->hwm, rep->head, rep->pending, rep->copied, rep->upserted, rep->deleted,
               lag);
        fflush(stdout);
        return;
    }
    if (o->quiet)
        return;
    if (rep->pending < 0)
        log_info("follow: round %d: copied %" PRId64 " rows, then %" PRId64 " upserted and %" PRId64
                 " deleted by deltas; mark %" PRId64 ", lag %" PRId64 " s",
                 round, rep->copied, rep->upserted, rep->deleted, rep->hwm, lag);
    else
        log_info("follow: round %d: %" PRId64 " changes were behind, %" PRId64
                 " rows upserted and %" PRId64 " deleted; mark %" PRId64 ", lag %" PRId64 " s",
                 round, rep->pending, rep->upserted, rep->deleted, rep->hwm, lag);
}

static void report_failure(const struct ferry_follow_opts *o, int round,
                           const struct ferry_error *err, int64_t lag)
{
    if (o->json) {
        printf("{\"round\":%d,\"ok\":false,\"code\":\"%s\",\"lag_seconds\":%" PRId64 "}\n", round,
               ferry_strcode(err->code), lag);
        fflush(stdout);
    }
    log_warn("follow: round %d: %s; retrying in %.0f s (lag %" PRId64 " s)", round, err->msg,
             o->interval, lag);
}

int ferry_follow(const struct ferry_config *cfg, const struct ferry_follow_opts *o,
                 struct ferry_error *err)
{
    struct sigaction sa, old_int, old_term;
    int64_t seen = 0;
    int rc = FERRY_OK;

    if (!(o->interval > 0))
        return ferry_error_set(err, FERRY_EUSAGE, "follow needs --interval SECONDS above 0");
    stop_flag = 0;
    /* the lag before the first round: from the state, when a sync ran before */
    {
        struct ferry_state *st = NULL;
        struct ferry_state_meta m;
        struct ferry_error e;

        if (ferry_state_open(cfg->target.state, FERRY_STATE_READONLY, &st, &e) == FERRY_OK &&
            ferry_state_meta_get(st, &m, &e) == FERRY_OK)
            seen = m.source_seen;
        ferry_state_close(st);
    }
    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = on_stop;
    sigemptyset(&sa.sa_mask);
    /* No SA_RESTART: a sleep or a wait returns at once and the flag is seen. */
    sa.sa_flags = 0;
    sigaction(SIGINT, &sa, &old_int);
    sigaction(SIGTERM, &sa, &old_term);
    if (!o->quiet && !o->json)
        log_info("follow: tenant %s from %s every %g s; SIGINT or SIGTERM stops after the "
                 "current batch",
                 cfg->target.tenant, cfg->source.url, o->interval);
    for (int round = 1, idle = 0; !stop_flag; round++) {
        struct ferry_sync_report rep;
        struct ferry_sync_opts so;
        int64_t lag;

        memset(&rep, 0, sizeof(rep));
        memset(&so, 0, sizeof(so));
        /* The first round may be the copy, whose progress is worth showing. */
        so.quiet = o->quiet || o->json || round > 1;
        so.stop = &stop_flag;
        so.kind = "follow";
        so.report = &rep;
        /* after a round with nothing pending the target opens only when changes come */
        so.lazy_target = idle;
        rc = ferry_sync(cfg, &so, err);
        idle = !rc && rep.pending == 0;
        if (rc == FERRY_EINTR && stop_flag) {
            /* the round cut short: said too, for a script that reads the rounds */
            if (o->json) {
                printf("{\"round\":%d,\"ok\":true,\"stopped\":true,\"lag_seconds\":%" PRId64 "}\n",
                       round, seen ? (int64_t)time(NULL) - seen : -1);
                fflush(stdout);
            }
            rc = FERRY_OK;
            break;
        }
        if (rc && !retryable(rc, err)) {
            /* the round that ends it is said too */
            if (o->json) {
                printf("{\"round\":%d,\"ok\":false,\"code\":\"%s\",\"final\":true,"
                       "\"lag_seconds\":%" PRId64 "}\n",
                       round, ferry_strcode(rc), seen ? (int64_t)time(NULL) - seen : -1);
                fflush(stdout);
            }
            break;
        }
        if (rc) {
            lag = seen ? (int64_t)time(NULL) - seen : -1;
            report_failure(o, round, err, lag);
            ferry_error_clear(err);
            rc = FERRY_OK;
        } else {
            seen = rep.seen;
            lag = (int64_t)time(NULL) - seen;
            report_round(o, round, &rep, lag);
        }
        if (o->max_rounds && round >= o->max_rounds)
            break;
        nap(o->interval);
    }
    if (!rc && stop_flag && !o->quiet)
        log_info("follow: stopped; the state is consistent, follow or sync again to go on");
    sigaction(SIGINT, &old_int, NULL);
    sigaction(SIGTERM, &old_term, NULL);
    return rc;
}
