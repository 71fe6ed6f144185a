/*
 * digest.c - the digest producer: the tenant's rows of one table in
 * [lo, hi), split into up to `parts` ranges of about equal counts.
 *
 * The split reads under the owner check of checksum.c, so a range's count
 * and checksum only ever cover the tenant's own rows; the first key of a
 * range is a key of one of them.
 */
#include "digest.h"

#include "../common/checksum.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>

/* What a digest maps of a SQLite database (checksum.c's scan reads it through the map). */
#define MMAP_BYTES INT64_C(1073741824)

/*
 * On SQLite, read the digest's pages through a memory map rather than one
 * pread() per page (a tenth of a digest's time went to copying pages): the
 * connection's setting is raised for the digest and put back after it, so
 * the producer's other reads are as they were. *was is the setting before
 * (-1: left alone). Best effort: on failure the digest reads as before.
 */
static void map_db(struct ferry_db *db, int64_t *was)
{
    struct ferry_error err;
    int64_t cur = -1;
    char sql[64];

    *was = -1;
    if (ferry_db_engine(db) != FERRY_ENGINE_SQLITE ||
        ferry_db_query_int(db, "PRAGMA mmap_size", NULL, 0, &cur, &err) != FERRY_OK ||
        cur >= MMAP_BYTES)
        return;
    snprintf(sql, sizeof(sql), "PRAGMA mmap_size = %" PRId64, MMAP_BYTES);
    if (ferry_db_exec(db, sql, &err) == FERRY_OK)
        *was = cur;
}

static void unmap_db(struct ferry_db *db, int64_t was)
{
    struct ferry_error err;
    char sql[64];

    if (was < 0)
        return;
    snprintf(sql, sizeof(sql), "PRAGMA mmap_size = %" PRId64, was);
    (void)ferry_db_exec(db, sql, &err);
}

int ferry_digest_produce(struct ferry_db *db, const struct ferry_scope *s,
                         const struct ferry_value *tenant, const char *const *masks,
                         const struct ferry_request *req, char **out, size_t *len,
                         struct ferry_error *err)
{
    struct ferry_checksum *c = NULL;
    struct ferry_ranges rs;
    int t = ferry_scope_find(s, req->table);
    int rc;

    *out = NULL;
    *len = 0;
    ferry_ranges_init(&rs);
    if (t < 0)
        return ferry_error_set(err, FERRY_ENOTFOUND, "table %.64s is not in the tenant's scope",
                               req->table);
    rc = ferry_checksum_new(db, s, (size_t)t, tenant, masks, &c, err);
    /* values hashed as the target stores them (a target of the other engine asks) */
    if (!rc && req->coerce && req->ncoerce != s->tables[t].info.ncols)
        rc = ferry_error_set(err, FERRY_EPROTO,
                             "digest request: %zu coercions for %.64s, it has %zu columns",
                             req->ncoerce, req->table, s->tables[t].info.ncols);
    if (!rc && req->coerce)
        rc = ferry_checksum_coerce(c, req->coerce, req->ncoerce, err);
    /* the row hash the target named (SHA-256 when none: a target from before the key) */
    if (!rc && req->hash)
        rc = ferry_checksum_set_hash(c, req->hash, req->hash_key, err);
    if (!rc) {
        int64_t was = -1;

        map_db(db, &was);
        rc = ferry_checksum_split(c, req->lo, req->nlo, req->hi, req->nhi, (size_t)req->parts, &rs,
                                  err);
        unmap_db(db, was);
    }
    if (!rc)
        rc = ferry_digest_encode(rs.r, rs.n, out, len, err);
    ferry_ranges_release(&rs);
    ferry_checksum_free(c);
    return rc;
}
