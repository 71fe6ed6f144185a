/*
 * apply.h - ferry-dst's appliers: create or check the target tables, apply
 * a batch in one target transaction.
 *
 * Ownership rule: a target row may be updated or deleted only when it
 * belongs to this tenant or to none (an orphan), judged on the target with
 * the manifest's scope paths. A row of another tenant stops the batch with
 * FERRY_ECLASH naming the table and key, and nothing of the batch is
 * committed.
 */
#ifndef FERRY_APPLY_H
#define FERRY_APPLY_H

#include "../common/error.h"
#include "../proto/proto.h"

#include <stdint.h>

struct ferry_db;

struct ferry_applier; /* opaque */

struct ferry_apply_counts {
    int64_t upserted;
    int64_t deleted;
};

/*
 * Open the target database (created when missing) for tenant, with the
 * scope of manifest m (copied: m may be freed after). Creates tables that do
 * not exist; refuses (FERRY_ESCHEMA) a table whose columns differ from the
 * source's. With dry_run, nothing is created or written: only checks.
 * copied: NULL, or one byte per table of m, 1 for a table the state records
 * as copied here: when it is missing, the target database was replaced or
 * emptied since, and it is refused (FERRY_ESCHEMA) rather than created
 * empty for the deltas alone.
 * *out owned, free with ferry_applier_close.
 */
int ferry_applier_open(const char *url, const struct ferry_manifest *m, const char *tenant,
                       int dry_run, const unsigned char *copied, struct ferry_applier **out,
                       struct ferry_error *err);
/*
 * The same, not a dry run, on the target database of url already open
 * (db, the applier's from the call on, also when it fails): a delta run
 * opens it while its manifest is on the way.
 */
int ferry_applier_open_db(struct ferry_db *db, const char *url, const struct ferry_manifest *m,
                          const char *tenant, const unsigned char *copied,
                          struct ferry_applier **out, struct ferry_error *err);
void ferry_applier_close(struct ferry_applier *a);

/*
 * Apply every set of b, in order, in one transaction. On any error the
 * transaction is rolled back. counts (may be NULL) are added to.
 */
int ferry_applier_apply(struct ferry_applier *a, const struct ferry_batch *b,
                        struct ferry_apply_counts *counts, struct ferry_error *err);

/* Group commit on the target, see ferry_db_durable(); between batches only. */
int ferry_applier_durable(struct ferry_applier *a, int durable, struct ferry_error *err);

/* Rows of the scope's tables that violate a foreign key (after a copy). */
int ferry_applier_fk_check(struct ferry_applier *a, int64_t *violations, struct ferry_error *err);

/*
 * Planner statistics for the scope's tables after the initial copy
 * (PostgreSQL's ANALYZE; nothing on SQLite). *analyzed: how many tables.
 */
int ferry_applier_analyze(struct ferry_applier *a, size_t *analyzed, struct ferry_error *err);

/*
 * *holds: 1 when the target's root table has the tenant's row already (a
 * copy made before, with a state since lost). The scope's first table is
 * its root.
 */
int ferry_applier_holds_tenant(struct ferry_applier *a, int *holds, struct ferry_error *err);

/*
 * 1 when table can take a PostgreSQL source's snapshot rows as COPY text:
 * the target is PostgreSQL and each column has the source's declared type.
 */
int ferry_applier_copy_text(struct ferry_applier *a, const char *table);

/* Does table exist in the target (for dry-run reports)? */
int ferry_applier_has_table(struct ferry_applier *a, const char *table);

/* FERRY_ESCHEMA: table, copied as the state records, is not in the target any more. */
int ferry_applier_missing(const char *table, struct ferry_error *err);

#endif
