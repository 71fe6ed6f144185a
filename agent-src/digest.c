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

#include <stdlib.h>

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
    if (!rc)
        rc = ferry_checksum_split(c, req->lo, req->nlo, req->hi, req->nhi, (size_t)req->parts, &rs,
                                  err);
    if (!rc)
        rc = ferry_digest_encode(rs.r, rs.n, out, len, err);
    ferry_ranges_release(&rs);
    ferry_checksum_free(c);
    return rc;
}
