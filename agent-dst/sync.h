/*
 * sync.h - ferry-dst's sync: the initial copy, then deltas, resumable; and
 * status from the state alone.
 */
#ifndef FERRY_SYNC_H
#define FERRY_SYNC_H

#include "../common/config.h"
#include "../common/error.h"

struct ferry_sync_opts {
    int dry_run; /* say what would be copied; touch nothing */
    int quiet;   /* no progress lines */
};

/*
 * One sync run. First run: record the source's change-log head, copy every
 * table in keyset pages (parents first, progress per page in the state), then
 * apply deltas from the recorded head. Later runs: deltas from the stored
 * high-water mark. A run interrupted anywhere resumes where the state says.
 */
int ferry_sync(const struct ferry_config *cfg, const struct ferry_sync_opts *opts,
               struct ferry_error *err);

/* Print the state (human text, or JSON with json set) to stdout. */
int ferry_status(const struct ferry_config *cfg, int json, struct ferry_error *err);

#endif
