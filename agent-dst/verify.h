/*
 * verify.h - ferry-dst verify (and repair): are the tenant's rows on the
 * target the source's rows, table by table?
 *
 * Per table, parent-first, the source's digest (row counts and checksums of
 * consecutive key ranges, checksum.h) is compared with the same computation
 * on the target over the rows whose owner on the target is this tenant
 * (ferry_scope_owner with the manifest's scope: rows of other tenants and
 * orphans are neither read nor reported). Ranges that differ are split
 * again, as data-diff does, until they hold at most a thousand or so of the
 * source's rows; those are compared row by row (key and row hash) down to
 * the differing keys. With repair, exactly those keys are pulled again
 * (POST /v1/rows) and applied with the owner-checked applier, one target
 * transaction per batch, and the tables that differed are compared again
 * (whole; repair wrote to no other table).
 *
 * The source is read live: a key written on the source between the digest
 * and its comparison can show as a difference. cutover verifies with the
 * tenant frozen; a verify of a live tenant is a report, not a proof.
 */
#ifndef FERRY_VERIFY_H
#define FERRY_VERIFY_H

#include "../common/config.h"
#include "../common/error.h"
#include "../common/schema.h"
#include "../common/value.h"

#include <stddef.h>
#include <stdint.h>

struct ferry_state; /* state.h */

struct ferry_verify_opts {
    int repair; /* pull the differing keys again, then verify again */
    int json;   /* print the report as one JSON object on stdout */
    int quiet;  /* print nothing (the caller prints from the report) */
    /*
     * Hash rows with SipHash under this verify's key in the agents, even
     * when both ends are PostgreSQL (where the servers hash them by
     * default: FERRY_HASH_PGREC, faster, not keyed against crafted rows).
     */
    int keyed;
    /*
     * Borrowed, may be NULL: the open state to record the run in, for a
     * caller that holds it (cutover; the state has one writer at a time).
     * NULL: verify opens [target] state itself, creating it when missing.
     */
    struct ferry_state *state;
};

enum ferry_diff_kind {
    FERRY_DIFF_MISSING = 1, /* on the source, not the target's (missing on target) */
    FERRY_DIFF_EXTRA = 2,   /* the tenant's on the target, not on the source (extra on target) */
    FERRY_DIFF_DIFFERS = 3, /* on both, values differ */
};

/* One differing key. TEXT/BLOB key bytes are owned by the report. */
struct ferry_verify_diff {
    size_t table; /* index into the report's tables */
    enum ferry_diff_kind kind;
    struct ferry_value key[FERRY_MAX_KEY_COLS];
    size_t nkey;
    unsigned char *packed_; /* the key's bytes (keypack.h) that key[] points into */
    size_t npacked_;
    uint64_t src_hash_, dst_hash_;
};

/* Per table, from the last comparison (after repair, when it ran). */
struct ferry_verify_table {
    char name[256];
    int64_t src_rows, dst_rows;
    uint64_t src_sum, dst_sum; /* checksum.h sums over the whole table */
    int64_t missing, extra, differs;
    /*
     * The tenant's rows on the source whose primary key holds a NULL
     * (SQLite allows it in a rowid table): ferry cannot copy or repair
     * them, and they make the table unequal. Not in src_rows.
     */
    int64_t unkeyed;
    int present;  /* the table exists on the target */
    int hash;     /* the row hash its comparison used (enum ferry_hash) */
    int compared; /* its comparison ended (a run that stopped may not have reached it) */
};

/* Most differing keys listed (and repaired per round); more are only counted. */
#define FERRY_VERIFY_MAX_DIFFS 100000

struct ferry_verify_report {
    char tenant[256];
    struct ferry_verify_table *tables; /* ntables, the manifest's parent-first order */
    size_t ntables;
    /* What the first comparison found (what repair set out to fix). */
    struct ferry_verify_diff *diffs;
    size_t ndiffs;
    int64_t total_diffs; /* > ndiffs when the list was cut at FERRY_VERIFY_MAX_DIFFS */
    /* After repair: what the last comparison still found (empty when equal). */
    struct ferry_verify_diff *remaining;
    size_t nremaining;
    int64_t total_remaining; /* differences the last comparison found, repair or not */
    int equal;               /* the last comparison found no difference */
    int repaired;            /* repair ran */
    int64_t upserted;        /* rows written by repair */
    int64_t deleted;         /* rows deleted by repair */
    int rounds;              /* comparisons run */
    int64_t requests;        /* digest and rows requests sent */
    double seconds;
};

/*
 * Compare (and with o->repair, repair) cfg's tenant. rep is initialised
 * here and filled as far as the run got, whatever the result; release it
 * with ferry_verify_report_release. Unless o->quiet, prints the report
 * (text, or JSON with o->json) to stdout. Records a run of kind "verify"
 * in the state.
 * Returns FERRY_OK when every table matches (after repair, when asked),
 * FERRY_EMISMATCH when something differs, or the error that stopped it
 * (FERRY_EUNREACHABLE, FERRY_ECLASH from repair, FERRY_EDB, ...).
 */
int ferry_verify(const struct ferry_config *cfg, const struct ferry_verify_opts *o,
                 struct ferry_verify_report *rep, struct ferry_error *err);
void ferry_verify_report_release(struct ferry_verify_report *rep);

/*
 * Whether the tenant's rows of table hold the same values on both sides in
 * the columns cols (ncols names) and the key, their other columns left out
 * of the row hashes: *same 1 when they do. What a sync asks before copying
 * again a table that gained the columns cols on the source since its copy:
 * when the target filled them as the source did (the same ALTER TABLE ...
 * ADD COLUMN, and the deltas since), there is nothing to copy. Rows that
 * differ (written on the source since the deltas) are found as verify
 * finds them and pulled again, as verify --repair does (*repaired: rows
 * written and deleted), then compared again; past 100 and a hundredth of
 * the source's rows, or after that one repair, *same stays 0: the copy
 * costs less. *rows: the source's count. Errors as verify's (a
 * source from before this check refuses it: FERRY_EPROTO).
 */
int ferry_verify_columns(const struct ferry_config *cfg, const char *table, const char *const *cols,
                         size_t ncols, int *same, int64_t *rows, int64_t *repaired,
                         struct ferry_error *err);

/* "missing on target", "extra on target", "differs" (static). */
const char *ferry_verify_kind_name(enum ferry_diff_kind k);

#endif
