/*
 * sync.h - ferry-dst's sync: the initial copy, then deltas, resumable; and
 * status from the state alone.
 */
#ifndef FERRY_SYNC_H
#define FERRY_SYNC_H

#include "../common/config.h"
#include "../common/error.h"

#include <signal.h>
#include <stdint.h>

/* What one run saw and did (filled when ferry_sync_opts.report is set). */
struct ferry_sync_report {
    int64_t head;     /* source change-log head in the run's manifest */
    int64_t pending;  /* changes pending after the mark at the start; -1 unknown (copy) */
    int64_t seen;     /* unix seconds the manifest was read: applied up to head then */
    int64_t hwm;      /* the mark at the end */
    int64_t copied;   /* rows copied by the initial copy */
    int64_t upserted; /* rows upserted by deltas */
    int64_t deleted;  /* rows deleted by deltas */
};

struct ferry_sync_opts {
    int dry_run; /* say what would be copied; touch nothing */
    int quiet;   /* no progress lines */
    /* When set and nonzero: stop after the current batch with FERRY_EINTR. */
    volatile sig_atomic_t *stop;
    const char *kind;                 /* run kind in the state and run log; "sync" when NULL */
    struct ferry_sync_report *report; /* when set: filled when the run succeeds */
    /*
     * A delta run opens the target database while its manifest is on the
     * way; with lazy_target, only once the manifest says changes are
     * pending (follow, after an idle round: no connection every interval).
     */
    int lazy_target;
    /*
     * The cutover's own final delta: 1, refused as a sync is once a
     * cutover is recorded done (another cutover of the target finished
     * first); 2 (--force), runs after it too.
     */
    int cutover;
};

/*
 * One sync run. First run: record the source's change-log head, copy every
 * table in keyset pages (parents first, progress per page in the state), then
 * apply deltas from the recorded head. Later runs: deltas from the stored
 * high-water mark. A run interrupted anywhere resumes where the state says.
 * Each run appends its events to DIR/runs.log (progress.h) and stores the
 * source head it reached in the state (status shows the lag from it).
 */
int ferry_sync(const struct ferry_config *cfg, const struct ferry_sync_opts *opts,
               struct ferry_error *err);

/* Print the state (human text, or JSON with json set) to stdout. */
int ferry_status(const struct ferry_config *cfg, int json, struct ferry_error *err);

#endif
