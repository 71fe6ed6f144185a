/*
 * state.h - ferry-dst's durable state in LMDB, one environment per target
 * (the [target] state directory). Only this module includes lmdb.h.
 *
 * What it keeps:
 *   meta   tenant, source url, the head seq recorded at the start of the
 *          first copy, phase (copying / streaming), created time
 *   copy   per table: copy progress (last copied key, msgpack-encoded by the
 *          caller as opaque bytes; rows copied; done flag)
 *   hwm    the high-water mark of the changes stream
 *   runs   one record per sync run (start, end, rows upserted / deleted,
 *          result code and message)
 *   cutover the cutover record: when, marks, per-table counts and checksums
 *          (kept in the meta database under its own key)
 *
 * Every setter is its own LMDB write transaction, committed before it
 * returns: the caller commits the target database first, then moves the
 * mark, so a crash in between only makes the next run re-apply a batch
 * (idempotent), never skip one.
 *
 * Errors: FERRY_EIO (with mdb_strerror detail), FERRY_ENOSPC (MDB_MAP_FULL or
 * a full disk), FERRY_ECONFIG (the directory cannot be created/opened), and
 * FERRY_EDATA (a record of the wrong size: state from another version).
 */
#ifndef FERRY_STATE_H
#define FERRY_STATE_H

#include "../common/error.h"

#include <stddef.h>
#include <stdint.h>

struct ferry_state; /* opaque */

enum ferry_phase {
    FERRY_PHASE_NEW = 0,       /* nothing recorded yet */
    FERRY_PHASE_COPYING = 1,   /* initial copy under way */
    FERRY_PHASE_STREAMING = 2, /* copy done, applying deltas */
};

struct ferry_state_meta {
    char tenant[256];
    char source[512];
    int64_t start_head; /* change-log head recorded before the copy began */
    int phase;          /* enum ferry_phase */
    int64_t created;    /* unix seconds */
    int64_t hwm;        /* last applied seq; -1 none */
    int64_t last_sync;  /* unix seconds of the last successful sync, 0 never */
    /*
     * The source's change-log head seen by the last successful sync, and
     * when (unix seconds): every change of the tenant up to then is applied.
     * 0 and 0 before the first.
     */
    int64_t source_head;
    int64_t source_seen;
};

struct ferry_copy_progress {
    char table[256];
    unsigned char key[1024]; /* opaque (caller-encoded) last key, keylen bytes */
    size_t keylen;           /* 0: nothing copied yet */
    int64_t rows;            /* rows copied so far */
    int done;
};

struct ferry_run {
    int64_t id; /* assigned by ferry_state_run_begin, increasing */
    int64_t started;
    int64_t ended; /* 0 while running (or when the run died) */
    int64_t upserted;
    int64_t deleted;
    int64_t hwm_before;
    int64_t hwm_after;
    int code; /* enum ferry_code of the result */
    char msg[256];
    char kind[16]; /* "sync", "verify", "cutover", "follow" */
};

#define FERRY_STATE_CREATE 0x1   /* create dir and environment when missing */
#define FERRY_STATE_READONLY 0x2 /* read only (status): no lock, no writes */

/*
 * Open the state in dir. Owned, close with ferry_state_close. Only one
 * writer at a time: a second writable open fails with FERRY_ECONFIG ("state
 * DIR is in use by pid N; wait for it or stop it") through a lock file
 * (fcntl/flock, released by the kernel when the holder dies). Readers
 * (FERRY_STATE_READONLY) never wait and see the last committed state;
 * opening a missing state read-only is FERRY_ENOTFOUND.
 */
int ferry_state_open(const char *dir, int flags, struct ferry_state **out, struct ferry_error *err);
/* Whether err is ferry_state_open's: another process holds the state (FERRY_ECONFIG). */
int ferry_state_busy(const struct ferry_error *err);
void ferry_state_close(struct ferry_state *st);

/* FERRY_ENOTFOUND when never written; otherwise *m is filled. */
int ferry_state_meta_get(struct ferry_state *st, struct ferry_state_meta *m,
                         struct ferry_error *err);
int ferry_state_meta_put(struct ferry_state *st, const struct ferry_state_meta *m,
                         struct ferry_error *err);
/* Convenience: read meta, set hwm (and last_sync when nonzero), write it back. */
int ferry_state_set_hwm(struct ferry_state *st, int64_t hwm, int64_t last_sync,
                        struct ferry_error *err);

/*
 * Convenience: read meta, set source_head and source_seen, write it back
 * (the lag that status shows is measured from source_seen).
 */
int ferry_state_set_source_head(struct ferry_state *st, int64_t head, int64_t seen,
                                struct ferry_error *err);

/* FERRY_ENOTFOUND when the table has no progress yet. */
int ferry_state_copy_get(struct ferry_state *st, const char *table, struct ferry_copy_progress *p,
                         struct ferry_error *err);
int ferry_state_copy_put(struct ferry_state *st, const struct ferry_copy_progress *p,
                         struct ferry_error *err);
/*
 * Call fn for every table's progress in table-name order; fn returning
 * nonzero stops the walk and that value is returned.
 */
int ferry_state_copy_each(struct ferry_state *st,
                          int (*fn)(const struct ferry_copy_progress *p, void *arg), void *arg,
                          struct ferry_error *err);

/* Begin a run: fills r->id and r->started, writes it. */
/*
 * The columns a table's copy was made with (names, each ended by a NUL):
 * a column the source gains afterwards was filled in the rows already
 * there without a change (ALTER TABLE ... ADD COLUMN ... DEFAULT), so the
 * table is copied again. get: FERRY_ENOTFOUND when none is recorded,
 * FERRY_EDATA (a bad record) when it does not fit size; with cols NULL,
 * only whether there is one (and its length).
 */
int ferry_state_cols_get(struct ferry_state *st, const char *table, char *cols, size_t size,
                         size_t *len, struct ferry_error *err);
int ferry_state_cols_put(struct ferry_state *st, const char *table, const char *cols, size_t len,
                         struct ferry_error *err);

int ferry_state_run_begin(struct ferry_state *st, struct ferry_run *r, struct ferry_error *err);
/* Rewrite a run (by r->id), e.g. at its end. */
int ferry_state_run_put(struct ferry_state *st, const struct ferry_run *r, struct ferry_error *err);
/* What a successful sync reached, recorded with its end. */
struct ferry_state_reached {
    int64_t hwm;         /* the mark */
    int64_t last_sync;   /* unix seconds */
    int64_t source_head; /* the source's head the run saw, and when */
    int64_t source_seen;
};

/*
 * The same, and with it what the run reached (NULL: nothing), written into
 * the meta read in the same transaction: a run's end and its mark are
 * recorded together or not at all. FERRY_ENOTFOUND for a run never begun,
 * or (with reached) no meta yet.
 */
int ferry_state_run_end(struct ferry_state *st, const struct ferry_run *r,
                        const struct ferry_state_reached *reached, struct ferry_error *err);
/* The most recent n runs, newest first; *got set to how many. */
int ferry_state_runs_last(struct ferry_state *st, struct ferry_run *runs, size_t n, size_t *got,
                          struct ferry_error *err);

/* ---- cutover ---- */

struct ferry_cutover_table {
    char table[256];
    int64_t rows;      /* the tenant's rows, equal on both sides when recorded */
    uint64_t checksum; /* checksum.h's sum over the whole table */
};

struct ferry_cutover {
    int64_t at;                         /* unix seconds the cutover was recorded */
    int done;                           /* 1 once every --then hook succeeded */
    int64_t head;                       /* source change-log head reported by the freeze */
    int64_t hwm;                        /* the mark after the final delta */
    size_t ntables;                     /* at most FERRY_CUTOVER_MAX_TABLES */
    struct ferry_cutover_table *tables; /* ntables; see get/put for ownership */
};

#define FERRY_CUTOVER_MAX_TABLES 1000

/*
 * Read the cutover record: FERRY_ENOTFOUND when there is none. c->tables is
 * owned by the caller afterwards: free with ferry_cutover_release.
 */
/*
 * FERRY_ECONFIG when st records a cutover done: the target is live (the
 * application writes to it), and what writes the source's rows to it
 * (sync, follow, verify --repair) would write over the application's.
 * what: the command, for the message.
 */
int ferry_state_live(struct ferry_state *st, const char *what, struct ferry_error *err);

int ferry_state_cutover_get(struct ferry_state *st, struct ferry_cutover *c,
                            struct ferry_error *err);
/* Write (replace) the cutover record; c is borrowed. */
int ferry_state_cutover_put(struct ferry_state *st, const struct ferry_cutover *c,
                            struct ferry_error *err);
void ferry_cutover_release(struct ferry_cutover *c);

#endif
