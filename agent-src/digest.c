/*
 * digest.c - the digest producer: the tenant's rows of one table in
 * [lo, hi), split into up to `parts` ranges of about equal counts.
 *
 * The split reads under the owner check of checksum.c, so a range's count
 * and checksum only ever cover the tenant's own rows; the first key of a
 * range is a key of one of them.
 */
#include "digest.h"

#include "../common/buf.h"
#include "../common/checksum.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>

/* What a digest maps of a SQLite database (checksum.c's scan reads it through the map). */
#define MMAP_BYTES INT64_C(1073741824)

/*
 * On SQLite, read the digest's pages through a memory map rather than one
 * pread() per page (a tenth of a digest's time went to copying pages). The
 * connection keeps the setting: a later digest finds the pages mapped
 * (putting the setting back after each digest unmapped them, and mapping
 * them again cost another 5 % of the next one), and the producer's other
 * reads on that connection go through the map too, as the target's verify
 * reads do. Best effort: on failure the digest reads as before.
 */
static void map_db(struct ferry_db *db)
{
    struct ferry_error err;
    int64_t cur = -1;
    char sql[64];

    if (ferry_db_engine(db) != FERRY_ENGINE_SQLITE ||
        ferry_db_query_int(db, "PRAGMA mmap_size", NULL, 0, &cur, &err) != FERRY_OK ||
        cur >= MMAP_BYTES)
        return;
    snprintf(sql, sizeof(sql), "PRAGMA mmap_size = %" PRId64, MMAP_BYTES);
    (void)ferry_db_exec(db, sql, &err);
}

/*
 * *n: the tenant's rows of table t whose key holds a NULL. No range can
 * hold them (a range starts at a key), the copy cannot address them, so
 * verify must hear of them. Read through the key's own index.
 */
static int count_unkeyed(struct ferry_db *db, const struct ferry_scope *s, size_t t,
                         const struct ferry_value *tenant, int64_t *n, struct ferry_error *err)
{
    const struct ferry_table_info *ti = &s->tables[t].info;
    struct ferry_value *args = NULL;
    struct ferry_buf sql;
    int nparams = 0;
    int rc;

    *n = 0;
    if (ferry_db_engine(db) != FERRY_ENGINE_SQLITE || !ferry_scope_key_nullable(s, t))
        return FERRY_OK;
    ferry_buf_init(&sql, (size_t)1 << 20);
    rc = ferry_scope_unkeyed_sql(s, t, 1, &sql, &nparams);
    if (!rc) {
        args = calloc(nparams ? (size_t)nparams : 1, sizeof(*args));
        rc = args ? FERRY_OK : FERRY_ENOMEM;
    }
    if (rc)
        rc =
            ferry_error_set(err, rc, "cannot build the count of %s's rows without a key", ti->name);
    for (int i = 0; i < nparams && !rc; i++)
        args[i] = *tenant;
    if (!rc)
        rc = ferry_db_query_int(db, sql.data, args, (size_t)nparams, n, err);
    free(args);
    ferry_buf_release(&sql);
    return rc;
}

int ferry_digest_produce(struct ferry_db *db, const struct ferry_scope *s,
                         const struct ferry_value *tenant, const char *const *masks,
                         const struct ferry_request *req, char **out, size_t *len,
                         struct ferry_error *err)
{
    struct ferry_checksum *c = NULL;
    struct ferry_ranges rs;
    int t = ferry_scope_find(s, req->table);
    int64_t unkeyed = 0;
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
    /* only these columns (a sync's check of the columns added here since its copy) */
    if (!rc && req->cols)
        rc = ferry_checksum_only(c, req->cols, req->ncols, err);
    /* the row hash the target named (SHA-256 when none: a target from before the key) */
    if (!rc && req->hash)
        rc = ferry_checksum_set_hash(c, req->hash, req->hash_key, err);
    if (!rc) {
        map_db(db);
        rc = ferry_checksum_split(c, req->lo, req->nlo, req->hi, req->nhi, (size_t)req->parts, &rs,
                                  err);
    }
    /* the whole table's digest says how many of its rows no range can hold */
    if (!rc && !req->lo && !req->hi)
        rc = count_unkeyed(db, s, (size_t)t, tenant, &unkeyed, err);
    if (!rc)
        rc = ferry_digest_encode(rs.r, rs.n, unkeyed, out, len, err);
    ferry_ranges_release(&rs);
    ferry_checksum_free(c);
    return rc;
}
