/*
 * verify.c - compare the tenant's rows on the target with the source's,
 * bisecting ranges that differ down to the keys; repair those keys.
 *
 * One comparison, per table (parent-first):
 *   1. ask the source for a digest of the whole table in up to
 *      FERRY_DIGEST_MAX_PARTS ranges (first key, count, checksum of each;
 *      a PostgreSQL source for its total alone first, compare_totals);
 *   2. compute count and checksum of each of those ranges on the target,
 *      with the source's boundaries, over the rows this tenant owns there;
 *   3. a range that matches is done; one that differs is split again at the
 *      source's keys into parts of about a leaf (split_parts; recursion),
 *      until it holds at most LEAF_ROWS source
 *      rows: then the source sends one range per row (its key and row hash),
 *      the target walks its rows of the range, and the keys are matched
 *      exactly (packed bytes): missing on target, extra on target, differs.
 * Only keys are ever compared for equality here, never ordered: ordering is
 * left to each database, so the two may even collate text differently; a
 * key that lands in different ranges on the two sides shows as missing in
 * one and extra in the other, and the two are merged at the end of the
 * table (same row hash: no difference; else: differs).
 *
 * An unchanged table costs one digest request (one scan of the tenant's
 * rows on the source, plus a count) and one scan on the target.
 *
 * Across engines the target stores some values otherwise than the source
 * reads them (an integer in a PostgreSQL text column, -0.0 in a SQLite REAL
 * one): every digest request then names, per column, how the target's
 * column stores values (checksum.h's coercions), and the source hashes
 * them so.
 */
#include "verify.h"

#include "../common/buf.h"
#include "../common/checksum.h"
#include "../common/crypto.h"
#include "../common/db/db.h"
#include "../common/keypack.h"
#include "../common/log.h"
#include "../common/scope.h"
#include "../proto/proto.h"
#include "apply.h"
#include "fetch.h"
#include "progress.h"
#include "state.h"

#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#define LEAF_ROWS 1024 /* a leaf digest asks for this many parts: one per row */
#define MAX_DEPTH 64   /* bisection depth; each level cuts the source's rows at least in half */
#define ROWS_PER_REQUEST 500
#define MAX_ROUNDS 50 /* comparisons, when repair works through a cut list */
/*
 * Comparisons, when a repair's own writes made differences (found_new):
 * rows that came back with a parent are all found in the next one. A live
 * source's new writes look the same: they are not chased further.
 */
#define NEW_ROUNDS 3
#define KEY_MAX 4096 /* packed key bytes kept per difference */

struct difflist {
    struct ferry_verify_diff *d;
    size_t n, cap;
    int64_t total;
};

struct vrun {
    const struct ferry_config *cfg;
    const struct ferry_verify_opts *o;
    struct ferry_verify_report *rep;
    struct ferry_client *client;
    struct ferry_manifest *manifest;
    struct ferry_scope *scope; /* the target's, built from the manifest */
    struct ferry_value tenant;
    struct ferry_db *db; /* target, read only, during a comparison */
    struct difflist cur; /* differences of the comparison under way */
    struct ferry_buf keybuf;
    int recheck_only; /* after a repair: compare the tables it may have changed */
    /* a table that differs and cannot be bisected (check_key_order): said at the end */
    int unorderable;
    struct ferry_error order_err;
    unsigned char *coerce; /* the table being compared: NULL, or one code per column */
    size_t ncoerce;
    /*
     * ferry_verify_columns: the columns hashed (one byte per column of the
     * table, 1 hashed, 0 as NULL) and only the totals compared; else NULL.
     */
    unsigned char *keep;
    size_t nkeep;
    /*
     * The row hash of this verify (checksum.h): SipHash-1-3 under a key
     * drawn here, or SHA-256 once the source refused the key (a source
     * from before it). Set by the first digest request, the root's total.
     */
    int hash;
    unsigned char hash_key[FERRY_HASH_KEY_SIZE];
    /*
     * The row hash of the table being compared: hash, or FERRY_HASH_PGREC
     * (computed by the servers) when both ends are PostgreSQL and hold the
     * table with the same column types; hash again once the source
     * refused it (a source from before it, or one that cannot).
     */
    int thash;
};

static double now_s(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

const char *ferry_verify_kind_name(enum ferry_diff_kind k)
{
    switch (k) {
    case FERRY_DIFF_MISSING:
        return "missing on target";
    case FERRY_DIFF_EXTRA:
        return "extra on target";
    case FERRY_DIFF_DIFFERS:
        return "differs";
    }
    return "?";
}

static const char *kind_word(enum ferry_diff_kind k)
{
    return k == FERRY_DIFF_MISSING ? "missing" : k == FERRY_DIFF_EXTRA ? "extra" : "differs";
}

/* ---- difference lists ---- */

static void difflist_release(struct difflist *l)
{
    for (size_t i = 0; i < l->n; i++)
        free(l->d[i].packed_);
    free(l->d);
    memset(l, 0, sizeof(*l));
}

static struct ferry_verify_table *counts_of(struct vrun *r, size_t t)
{
    return &r->rep->tables[t];
}

static void count_kind(struct ferry_verify_table *vt, enum ferry_diff_kind k, int delta)
{
    if (k == FERRY_DIFF_MISSING)
        vt->missing += delta;
    else if (k == FERRY_DIFF_EXTRA)
        vt->extra += delta;
    else
        vt->differs += delta;
}

/* Record one difference; past FERRY_VERIFY_MAX_DIFFS it is only counted. */
static int diff_add(struct vrun *r, size_t t, enum ferry_diff_kind kind,
                    const struct ferry_value *key, size_t nkey, uint64_t sh, uint64_t dh,
                    struct ferry_error *err)
{
    struct difflist *l = &r->cur;
    struct ferry_verify_diff *d;
    size_t n = 0;
    int rc;

    l->total++;
    count_kind(counts_of(r, t), kind, 1);
    /*
     * ferry_verify_columns (r->keep): past 100 and a hundredth of the
     * source's rows (its total, known before any split), the copy costs
     * less than the repair.
     */
    if (r->keep && l->total > 100 + counts_of(r, t)->src_rows / 100)
        return ferry_error_set(err, FERRY_ETOOBIG, "more than %" PRId64 " rows differ",
                               100 + counts_of(r, t)->src_rows / 100);
    if (l->n >= FERRY_VERIFY_MAX_DIFFS)
        return FERRY_OK;
    if (l->n == l->cap) {
        size_t ncap = l->cap ? l->cap * 2 : 64;
        struct ferry_verify_diff *nd = realloc(l->d, ncap * sizeof(*nd));

        if (!nd)
            return ferry_error_set(err, FERRY_ENOMEM, "out of memory");
        l->d = nd;
        l->cap = ncap;
    }
    ferry_buf_reset(&r->keybuf);
    rc = ferry_key_pack(&r->keybuf, key, nkey);
    if (rc)
        return ferry_error_set(err, rc, "a key of %s is over %d bytes", r->rep->tables[t].name,
                               KEY_MAX);
    d = &l->d[l->n];
    memset(d, 0, sizeof(*d));
    d->packed_ = malloc(r->keybuf.len ? r->keybuf.len : 1);
    if (!d->packed_)
        return ferry_error_set(err, FERRY_ENOMEM, "out of memory");
    memcpy(d->packed_, r->keybuf.data, r->keybuf.len);
    d->npacked_ = r->keybuf.len;
    d->table = t;
    d->kind = kind;
    d->src_hash_ = sh;
    d->dst_hash_ = dh;
    if (ferry_key_unpack((const char *)d->packed_, d->npacked_, d->key, FERRY_MAX_KEY_COLS, &n)) {
        free(d->packed_);
        return ferry_error_set(err, FERRY_EINTERNAL, "cannot unpack a key just packed");
    }
    d->nkey = n;
    l->n++;
    return FERRY_OK;
}

static int cmp_packed(const unsigned char *a, size_t na, const unsigned char *b, size_t nb)
{
    int c = memcmp(a, b, na < nb ? na : nb);

    if (c)
        return c;
    return na < nb ? -1 : na > nb;
}

static int cmp_diff(const void *a, const void *b)
{
    const struct ferry_verify_diff *x = a, *y = b;

    if (x->table != y->table)
        return x->table < y->table ? -1 : 1;
    return cmp_packed(x->packed_, x->npacked_, y->packed_, y->npacked_);
}

/*
 * The differences of one table (l->d[from..]) in key order, with a key
 * found missing in one range and extra in another (the two databases
 * ordered it differently) merged: no difference when its row hashes are
 * equal, else one "differs".
 */
static void merge_table(struct vrun *r, size_t t, size_t from)
{
    struct difflist *l = &r->cur;
    struct ferry_verify_table *vt = counts_of(r, t);
    size_t w = from;

    if (l->n - from < 2)
        return;
    qsort(l->d + from, l->n - from, sizeof(*l->d), cmp_diff);
    for (size_t i = from; i < l->n; i++) {
        struct ferry_verify_diff *a = &l->d[i], *b = i + 1 < l->n ? &l->d[i + 1] : NULL;

        if (b && cmp_diff(a, b) == 0 &&
            ((a->kind == FERRY_DIFF_MISSING && b->kind == FERRY_DIFF_EXTRA) ||
             (a->kind == FERRY_DIFF_EXTRA && b->kind == FERRY_DIFF_MISSING))) {
            uint64_t sh = a->kind == FERRY_DIFF_MISSING ? a->src_hash_ : b->src_hash_;
            uint64_t dh = a->kind == FERRY_DIFF_EXTRA ? a->dst_hash_ : b->dst_hash_;

            count_kind(vt, a->kind, -1);
            count_kind(vt, b->kind, -1);
            free(b->packed_);
            l->total--;
            if (sh == dh) {
                free(a->packed_);
                l->total--;
                i++;
                continue;
            }
            a->kind = FERRY_DIFF_DIFFERS;
            a->src_hash_ = sh;
            a->dst_hash_ = dh;
            count_kind(vt, FERRY_DIFF_DIFFERS, 1);
            l->d[w++] = *a;
            i++;
            continue;
        }
        l->d[w++] = *a;
    }
    l->n = w;
}

/* ---- talking to the source ---- */

static int call(struct vrun *r, const char *path, const struct ferry_request *req, char **resp,
                size_t *len, struct ferry_error *err)
{
    char *body = NULL;
    size_t blen = 0;
    int rc;

    rc = ferry_request_encode(req, &body, &blen, err);
    if (rc)
        return rc;
    rc = ferry_client_post(r->client, path, body, blen, ferry_config_max_message(r->cfg), resp, len,
                           err);
    free(body);
    r->rep->requests++;
    return rc;
}

static int fetch_manifest(struct vrun *r, struct ferry_error *err)
{
    struct ferry_request req;
    char *resp = NULL;
    size_t len = 0;
    int rc;

    memset(&req, 0, sizeof(req));
    req.type = FERRY_REQ_MANIFEST;
    req.tenant = r->cfg->target.tenant;
    req.after = -1;
    rc = call(r, "/v1/manifest", &req, &resp, &len, err);
    if (rc == FERRY_ENOTFOUND) {
        /* a tenant the source does not have: the config's, as for sync (exit 2) */
        char why[FERRY_ERRMSG_MAX];

        memcpy(why, err->msg, sizeof(why));
        return ferry_error_set(err, FERRY_ECONFIG, "%.200s; check [target] tenant in %s", why,
                               r->cfg->path);
    }
    if (rc)
        return rc;
    rc = ferry_manifest_decode(resp, len, &ferry_limits_default, &r->manifest, err);
    free(resp);
    if (rc)
        return ferry_error_prefix(err, "manifest from the source");
    if (strcmp(r->manifest->tenant, r->cfg->target.tenant) != 0)
        return ferry_error_set(err, FERRY_EPROTO, "manifest is for tenant %.64s, not %.64s",
                               r->manifest->tenant, r->cfg->target.tenant);
    return FERRY_OK;
}

/*
 * Replace the coercions a source from before them does not know (above
 * FERRY_COERCE_SQLITE_TEXT, the last it had) with none; 1 when any was.
 */
static int old_coercions(struct vrun *r)
{
    int any = 0;

    for (size_t i = 0; i < r->ncoerce; i++)
        if (r->coerce[i] > FERRY_COERCE_SQLITE_TEXT) {
            r->coerce[i] = FERRY_COERCE_NONE;
            any = 1;
        }
    return any;
}

/*
 * Digest of table t in [lo, hi) in up to parts ranges. *g and *body owned
 * (free with ferry_digest_free, then free): the keys point into body.
 */
static int digest(struct vrun *r, size_t t, const struct ferry_value *lo, size_t nlo,
                  const struct ferry_value *hi, size_t nhi, int64_t parts, struct ferry_digest **g,
                  char **body, struct ferry_error *err)
{
    const struct ferry_table_info *ti = &r->scope->tables[t].info;
    struct ferry_request req;
    size_t len = 0;
    int rc;

    *g = NULL;
    *body = NULL;
    memset(&req, 0, sizeof(req));
    req.type = FERRY_REQ_DIGEST;
    req.tenant = r->cfg->target.tenant;
    req.table = ti->name;
    /* The encoder only reads the bounds. */
    req.lo = (struct ferry_value *)lo;
    req.nlo = nlo;
    req.hi = (struct ferry_value *)hi;
    req.nhi = nhi;
    req.parts = parts;
    req.coerce = r->coerce;
    req.ncoerce = r->ncoerce;
    req.cols = r->keep;
    req.ncols = r->nkeep;
    req.hash = r->thash;
    memcpy(req.hash_key, r->hash_key, sizeof(req.hash_key));
    rc = call(r, "/v1/digest", &req, body, &len, err);
    if ((rc == FERRY_EPROTO || rc == FERRY_EDATA) && r->thash == FERRY_HASH_PGREC &&
        strstr(err->msg, "hash")) {
        /* the source does not know it, or cannot hash this table so: the keyed hash in C */
        log_info("verify %s: %s; hashing its rows in the agents", ti->name, err->msg);
        ferry_error_clear(err);
        r->thash = req.hash = r->hash;
        rc = call(r, "/v1/digest", &req, body, &len, err);
    }
    if (rc == FERRY_EPROTO && r->coerce && strstr(err->msg, "coerce") && old_coercions(r)) {
        /* a source from before those coercions: its values as they are (differences show) */
        log_info("verify %s: the source does not know every coercion of its columns: those "
                 "values are compared as the source holds them",
                 ti->name);
        ferry_error_clear(err);
        rc = call(r, "/v1/digest", &req, body, &len, err);
    }
    if (rc == FERRY_EPROTO && r->thash != FERRY_HASH_SHA256 &&
        strstr(err->msg, "unknown key \"hash")) {
        /* a source from before the keyed hash: SHA-256 from now on (the caller redoes its side) */
        log_info("the source does not know the keyed row hash: verifying with SHA-256 (slower)");
        ferry_error_clear(err);
        r->hash = r->thash = req.hash = FERRY_HASH_SHA256;
        rc = call(r, "/v1/digest", &req, body, &len, err);
    }
    if (rc)
        return ferry_error_prefix(err, "digest of %s", ti->name);
    rc = ferry_digest_decode(*body, len, &ferry_limits_default, g, err);
    if (rc)
        return ferry_error_prefix(err, "digest of %s from the source", ti->name);
    if ((*g)->nranges && (*g)->ranges[0].nfirst != ferry_table_npk(ti))
        return ferry_error_set(err, FERRY_EPROTO,
                               "digest of %s: keys of %zu values, the key has %zu", ti->name,
                               (*g)->ranges[0].nfirst, ferry_table_npk(ti));
    return FERRY_OK;
}

/* ---- comparing ---- */

struct leafrow {
    size_t off, n; /* packed key in the leaf's arena */
    uint64_t hash;
    size_t range; /* index into the leaf digest: its key values */
    int seen;
};

struct leaf {
    struct vrun *r;
    size_t t;
    const struct ferry_digest *g; /* the source's rows, one range each */
    struct leafrow *rows;
    size_t nrows;
    struct ferry_buf arena;
    struct ferry_buf probe;
    struct ferry_error *err;
};

static struct ferry_buf *leaf_sort_arena; /* qsort has no context; verify is single-threaded */

static int cmp_leafrow(const void *a, const void *b)
{
    const struct leafrow *x = a, *y = b;
    const unsigned char *p = (const unsigned char *)leaf_sort_arena->data;

    return cmp_packed(p + x->off, x->n, p + y->off, y->n);
}

/* A target row of the leaf range: find the source row with its key. */
static int leaf_target_row(void *arg, const struct ferry_value *key, size_t nkey, uint64_t hash)
{
    struct leaf *lf = arg;
    const unsigned char *base;
    size_t lo = 0, hi = lf->nrows;
    int rc;

    ferry_buf_reset(&lf->probe);
    rc = ferry_key_pack(&lf->probe, key, nkey);
    if (rc)
        return ferry_error_set(lf->err, rc, "a key of %s is too large",
                               lf->r->rep->tables[lf->t].name);
    base = (const unsigned char *)lf->arena.data;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        struct leafrow *s = &lf->rows[mid];
        int c =
            cmp_packed((const unsigned char *)lf->probe.data, lf->probe.len, base + s->off, s->n);

        if (c == 0) {
            const struct ferry_range *sr = &lf->g->ranges[s->range];

            s->seen = 1;
            if (s->hash == hash)
                return FERRY_OK;
            /* the source's key: a repair asks the source for it (key_as_stored) */
            return diff_add(lf->r, lf->t, FERRY_DIFF_DIFFERS, sr->first, sr->nfirst, s->hash, hash,
                            lf->err);
        }
        if (c < 0)
            hi = mid;
        else
            lo = mid + 1;
    }
    return diff_add(lf->r, lf->t, FERRY_DIFF_EXTRA, key, nkey, 0, hash, lf->err);
}

static int compare_range(struct vrun *r, size_t t, struct ferry_checksum *cs,
                         const struct ferry_value *lo, size_t nlo, const struct ferry_value *hi,
                         size_t nhi, int64_t rows, int depth, struct ferry_error *err);

/*
 * A source key as the target holds it, to be matched with the target's
 * keys: from the other engine, each key value coerced as the applier
 * stored it (r->coerce), so that an untyped SQLite key 2 finds the '2' a
 * PostgreSQL text column holds. Matched by bytes, it was a row missing and
 * an extra one, and --repair asked the source for the key '2', which an
 * untyped column does not hold, and deleted the row it had just written
 * (probe). Repairs still ask the source for its own key.
 */
static void key_as_stored(const struct vrun *r, size_t t, const struct ferry_value *in, size_t n,
                          struct ferry_value *out, char (*scratch)[FERRY_COERCE_SCRATCH])
{
    const struct ferry_table_info *ti = &r->scope->tables[t].info;

    for (size_t k = 0; k < n && k < FERRY_MAX_KEY_COLS; k++) {
        size_t c = ferry_table_pkcol(ti, k);

        out[k] = in[k];
        if (r->coerce && c < r->ncoerce && r->coerce[c])
            ferry_coerce_value(r->coerce[c], &in[k], scratch[k], &out[k]);
    }
}

/* Row by row: the source's rows of [lo, hi) (one range each) against the target's. */
static int compare_leaf(struct vrun *r, size_t t, struct ferry_checksum *cs,
                        const struct ferry_value *lo, size_t nlo, const struct ferry_value *hi,
                        size_t nhi, int depth, struct ferry_error *err)
{
    char scratch[FERRY_MAX_KEY_COLS][FERRY_COERCE_SCRATCH];
    struct ferry_digest *g = NULL;
    char *body = NULL;
    struct leaf lf;
    int rc;

    memset(&lf, 0, sizeof(lf));
    lf.r = r;
    lf.t = t;
    lf.err = err;
    ferry_buf_init(&lf.arena, (size_t)LEAF_ROWS * KEY_MAX);
    ferry_buf_init(&lf.probe, KEY_MAX);
    rc = digest(r, t, lo, nlo, hi, nhi, LEAF_ROWS, &g, &body, err);
    if (rc)
        goto out;
    for (size_t i = 0; i < g->nranges; i++) {
        if (g->ranges[i].count == 1)
            continue;
        /* The source grew past a leaf since the last digest: split again. */
        if (depth >= MAX_DEPTH) {
            rc = ferry_error_set(err, FERRY_EDATA,
                                 "verify of %s does not converge: the source keeps changing; "
                                 "verify again, or freeze the tenant first",
                                 r->rep->tables[t].name);
            goto out;
        }
        rc = compare_range(r, t, cs, lo, nlo, hi, nhi, (int64_t)g->nranges, depth + 1, err);
        goto out;
    }
    lf.rows = calloc(g->nranges ? g->nranges : 1, sizeof(*lf.rows));
    if (!lf.rows) {
        rc = ferry_error_set(err, FERRY_ENOMEM, "out of memory");
        goto out;
    }
    lf.g = g;
    for (size_t i = 0; i < g->nranges && !rc; i++) {
        struct ferry_value key[FERRY_MAX_KEY_COLS];

        key_as_stored(r, t, g->ranges[i].first, g->ranges[i].nfirst, key, scratch);
        lf.rows[i].off = lf.arena.len;
        rc = ferry_key_pack(&lf.arena, key, g->ranges[i].nfirst);
        lf.rows[i].n = lf.arena.len - lf.rows[i].off;
        lf.rows[i].hash = g->ranges[i].sum;
        lf.rows[i].range = i;
    }
    if (rc) {
        rc = ferry_error_set(err, rc, "keys of %s too large", r->rep->tables[t].name);
        goto out;
    }
    lf.nrows = g->nranges;
    leaf_sort_arena = &lf.arena;
    qsort(lf.rows, lf.nrows, sizeof(*lf.rows), cmp_leafrow);
    if (cs)
        rc = ferry_checksum_each(cs, lo, nlo, hi, nhi, leaf_target_row, &lf, err);
    for (size_t i = 0; i < lf.nrows && !rc; i++) {
        const struct ferry_range *sr = &g->ranges[lf.rows[i].range];

        if (!lf.rows[i].seen)
            rc = diff_add(r, t, FERRY_DIFF_MISSING, sr->first, sr->nfirst, sr->sum, 0, err);
    }
out:
    free(lf.rows);
    ferry_buf_release(&lf.arena);
    ferry_buf_release(&lf.probe);
    ferry_digest_free(g);
    free(body);
    return rc;
}

/* The target's count and checksum of [lo, hi): nothing when the table is absent. */
static int target_sum(struct ferry_checksum *cs, const struct ferry_value *lo, size_t nlo,
                      const struct ferry_value *hi, size_t nhi, int64_t *count, uint64_t *sum,
                      struct ferry_error *err)
{
    *count = 0;
    *sum = 0;
    if (!cs)
        return FERRY_OK;
    return ferry_checksum_sum(cs, lo, nlo, hi, nhi, count, sum, err);
}

/*
 * Compare [lo, hi) of table t range by range, with the source's digest g
 * of it: ranges that match are done, the others are split again or
 * compared row by row. No source ranges: whatever the target has is extra.
 */
static int compare_split(struct vrun *r, size_t t, struct ferry_checksum *cs,
                         const struct ferry_digest *g, const struct ferry_value *lo, size_t nlo,
                         const struct ferry_value *hi, size_t nhi, int depth,
                         struct ferry_error *err)
{
    struct ferry_verify_table *vt = counts_of(r, t);
    int rc = FERRY_OK;

    if (g->nranges == 0) {
        int64_t dc = 0;
        uint64_t ds = 0;

        rc = target_sum(cs, lo, nlo, hi, nhi, &dc, &ds, err);
        if (!rc && dc)
            rc = compare_leaf(r, t, cs, lo, nlo, hi, nhi, depth, err);
        return rc;
    }
    for (size_t i = 0; i < g->nranges && !rc; i++) {
        const struct ferry_range *sr = &g->ranges[i];
        const struct ferry_value *L = i ? sr->first : lo;
        const struct ferry_value *H = i + 1 < g->nranges ? g->ranges[i + 1].first : hi;
        size_t nL = i ? sr->nfirst : nlo;
        size_t nH = i + 1 < g->nranges ? g->ranges[i + 1].nfirst : nhi;
        int64_t dc = 0;
        uint64_t ds = 0;

        rc = target_sum(cs, L, nL, H, nH, &dc, &ds, err);
        if (rc)
            break;
        if (dc == sr->count && ds == sr->sum)
            continue;
        if (sr->count <= LEAF_ROWS)
            rc = compare_leaf(r, t, cs, L, nL, H, nH, depth, err);
        else if (depth >= MAX_DEPTH)
            rc = ferry_error_set(err, FERRY_EDATA,
                                 "verify of %s does not converge: the source keeps changing; "
                                 "verify again, or freeze the tenant first",
                                 vt->name);
        else
            rc = compare_range(r, t, cs, L, nL, H, nH, sr->count, depth + 1, err);
    }
    return rc;
}

/*
 * Parts to split about rows rows into: enough that each is a leaf (the
 * source's split is even to within a factor of two), at most what a
 * digest may have. Differences spread over a table then cost one split
 * for up to half a million rows, not one per level of 32 parts (every
 * part of which differs). Each part is a statement on the target: a few
 * differences in one corner of a big table pay 1,024 of them, not 64.
 */
static int64_t split_parts(int64_t rows)
{
    int64_t parts = rows / (LEAF_ROWS / 2) + 1;

    return parts < 2 ? 2 : parts > FERRY_DIGEST_MAX_PARTS ? FERRY_DIGEST_MAX_PARTS : parts;
}

/* Compare [lo, hi) of table t, about rows rows, splitting at the source's keys. */
static int compare_range(struct vrun *r, size_t t, struct ferry_checksum *cs,
                         const struct ferry_value *lo, size_t nlo, const struct ferry_value *hi,
                         size_t nhi, int64_t rows, int depth, struct ferry_error *err)
{
    struct ferry_digest *g = NULL;
    char *body = NULL;
    int rc;

    rc = digest(r, t, lo, nlo, hi, nhi, split_parts(rows), &g, &body, err);
    if (!rc)
        rc = compare_split(r, t, cs, g, lo, nlo, hi, nhi, depth, err);
    ferry_digest_free(g);
    free(body);
    return rc;
}

/* SQLite's affinity rules: whether a column of declared type type has TEXT affinity. */
static int sqlite_text_affinity(const char *type)
{
    int text = 0;

    for (const char *p = type ? type : ""; *p; p++) {
        if (strncasecmp(p, "int", 3) == 0)
            return 0;
        if (strncasecmp(p, "char", 4) == 0 || strncasecmp(p, "clob", 4) == 0 ||
            strncasecmp(p, "text", 4) == 0)
            text = 1;
    }
    return text;
}

/*
 * Bisecting needs both sides to order keys alike. A SQLite key column
 * without a text type (untyped) holding numbers, which a PostgreSQL target
 * holds as text, does not: 10 before 2 as text. Seen in the keys the
 * source's split of the table starts its ranges at (every key, up to 1,024
 * rows); an unchanged table needs no order (its totals are equal), so this
 * is asked only of a table that differs.
 */
static int check_key_order(struct vrun *r, size_t t, const struct ferry_digest *g,
                           struct ferry_error *err)
{
    const struct ferry_table_info *ti = &r->scope->tables[t].info;

    for (size_t k = 0; k < ferry_table_npk(ti) && r->coerce; k++) {
        size_t c = ferry_table_pkcol(ti, k);
        int code = c < r->ncoerce ? r->coerce[c] : 0;

        if (ferry_db_engine(r->db) != FERRY_ENGINE_PG ||
            (code != FERRY_COERCE_PG_TEXT && code < FERRY_COERCE_PG_CHAR) ||
            sqlite_text_affinity(ti->cols[c].type))
            continue;
        for (size_t i = 0; i < g->nranges; i++)
            if (k < g->ranges[i].nfirst && (g->ranges[i].first[k].type == FERRY_INT ||
                                            g->ranges[i].first[k].type == FERRY_FLOAT))
                return ferry_error_set(
                    err, FERRY_ESCHEMA,
                    "table %s differs, and its key column %s is %s on the SQLite source and "
                    "holds numbers, text on the target: they order otherwise (10 before 2 as "
                    "text), so verify cannot find the rows; give the column a type on both "
                    "sides",
                    ti->name, ti->cols[c].name,
                    ti->cols[c].type && *ti->cols[c].type ? ti->cols[c].type : "untyped");
    }
    return FERRY_OK;
}

/* The source's total of one table, asked on a thread while the target sums its own. */
struct total_job {
    struct vrun *r;
    size_t t;
    int64_t parts;
    struct ferry_digest *g;
    char *body;
    int rc;
    struct ferry_error err;
};

static void *total_main(void *arg)
{
    struct total_job *j = arg;

    j->rc = digest(j->r, j->t, NULL, 0, NULL, 0, j->parts, &j->g, &j->body, &j->err);
    return NULL;
}

/*
 * Totals of both sides at once (the source's on a thread: it only touches
 * the client, the target's only the target connection), then, when they
 * differ, the bisection. An unchanged table costs one scan on each side,
 * side by side.
 *
 * A SQLite source sends its split of the whole table with the total: it
 * reads keys in order as cheaply as in any order. A PostgreSQL source is
 * asked the total alone (one part: a sequential scan, and with
 * FERRY_HASH_PGREC the server's sum, where reading in key order is an
 * index walk of the whole table or a sort): the split comes only when the
 * totals differ, at the cost of a second pass then.
 */
static int compare_totals(struct vrun *r, size_t t, struct ferry_checksum *cs,
                          struct ferry_error *err)
{
    struct ferry_verify_table *vt = counts_of(r, t);
    struct total_job job;
    int hash = r->thash; /* the thread may change r->thash: read again after the join */
    pthread_t th;
    int threaded;
    int rc;

    memset(&job, 0, sizeof(job));
    job.r = r;
    job.t = t;
    job.parts = r->manifest->engine && strcmp(r->manifest->engine, "postgresql") == 0
                    ? 1
                    : FERRY_DIGEST_MAX_PARTS;
    threaded = pthread_create(&th, NULL, total_main, &job) == 0;
    if (!threaded)
        total_main(&job);
    rc = target_sum(cs, NULL, 0, NULL, 0, &vt->dst_rows, &vt->dst_sum, err);
    if (threaded)
        pthread_join(th, NULL);
    /* the source refused the hash: the one it took here too */
    if (!rc && !job.rc && cs && r->thash != hash) {
        rc = ferry_checksum_set_hash(cs, r->thash, r->hash_key, err);
        if (!rc)
            rc = target_sum(cs, NULL, 0, NULL, 0, &vt->dst_rows, &vt->dst_sum, err);
    }
    vt->hash = r->thash;
    if (!rc && job.rc) {
        rc = job.rc;
        *err = job.err;
    }
    for (size_t i = 0; !rc && i < job.g->nranges; i++) {
        vt->src_rows += job.g->ranges[i].count;
        vt->src_sum += job.g->ranges[i].sum;
    }
    if (!rc)
        vt->unkeyed = job.g->unkeyed;
    /*
     * Bisect: from the split that came with the total, else from one asked
     * for now. A table that cannot be (check_key_order) is left as its
     * totals say, and the other tables are compared and repaired still.
     */
    if (!rc && (vt->src_rows != vt->dst_rows || vt->src_sum != vt->dst_sum) &&
        check_key_order(r, t, job.g, &r->order_err) != FERRY_OK) {
        r->unorderable = 1;
        log_warn("%s", r->order_err.msg);
    } else if (!rc && (vt->src_rows != vt->dst_rows || vt->src_sum != vt->dst_sum)) {
        if (job.parts > 1 || job.g->nranges == 0)
            rc = compare_split(r, t, cs, job.g, NULL, 0, NULL, 0, 0, err);
        else if (vt->src_rows <= LEAF_ROWS)
            rc = compare_leaf(r, t, cs, NULL, 0, NULL, 0, 0, err);
        else
            rc = compare_range(r, t, cs, NULL, 0, NULL, 0, vt->src_rows, 1, err);
    }
    ferry_digest_free(job.g);
    free(job.body);
    return rc;
}

/* Whether the source's engine is the target's (the manifest says which it is). */
static int same_engine(const struct vrun *r)
{
    const char *src = r->manifest->engine;

    return r->db && src &&
           (strcmp(src, "postgresql") == 0) == (ferry_db_engine(r->db) == FERRY_ENGINE_PG);
}

/*
 * r->coerce for table t (present on the target, its columns dst): when the source is the
 * other engine, how the target stores each column's values, by the type of
 * its own column of that name (checksum.h), so that the source hashes them
 * so. None when the engines are the same (values round-trip exactly) or
 * the source did not say its engine.
 */
static int target_coercions(struct vrun *r, size_t t, const struct ferry_table_info *dst,
                            struct ferry_error *err)
{
    const struct ferry_table_info *ti = &r->scope->tables[t].info;
    int engine = ferry_db_engine(r->db);
    int any = 0;

    /* r->coerce is NULL here (compare_table) */
    if (!r->manifest->engine || !ti->ncols || same_engine(r))
        return FERRY_OK;
    r->coerce = calloc(ti->ncols, 1);
    if (!r->coerce)
        return ferry_error_set(err, FERRY_ENOMEM, "out of memory");
    for (size_t i = 0; i < ti->ncols; i++)
        for (size_t j = 0; j < dst->ncols; j++)
            if (strcmp(ti->cols[i].name, dst->cols[j].name) == 0) {
                r->coerce[i] = (unsigned char)ferry_coerce_for(engine, dst->cols[j].type);
                any = any || r->coerce[i];
                break;
            }
    if (!any) {
        free(r->coerce);
        r->coerce = NULL;
        return FERRY_OK;
    }
    r->ncoerce = ti->ncols;
    return FERRY_OK;
}

/*
 * Whether table t's rows can be hashed by the servers (FERRY_HASH_PGREC):
 * both ends PostgreSQL, the keyed hash not asked for, and the target's
 * columns those of the manifest, name by name and type by type (the form
 * a value is hashed in follows its type on each side).
 */
static int pgrec_wanted(struct vrun *r, size_t t, const struct ferry_table_info *dst)
{
    const struct ferry_table_info *ti = &r->scope->tables[t].info;
    const char *src = r->manifest->engine;
    int same;

    if (r->o->keyed || r->hash == FERRY_HASH_SHA256 || !src || strcmp(src, "postgresql") != 0 ||
        ferry_db_engine(r->db) != FERRY_ENGINE_PG || r->coerce)
        return 0;
    same = dst->ncols == ti->ncols;
    for (size_t i = 0; same && i < ti->ncols; i++)
        same = strcmp(ti->cols[i].name, dst->cols[i].name) == 0 && ti->cols[i].type &&
               dst->cols[i].type && strcmp(ti->cols[i].type, dst->cols[i].type) == 0;
    if (!same)
        log_debug("verify %s: the target's columns are not the source's: rows hashed in the agents",
                  ti->name);
    return same;
}

static int compare_table(struct vrun *r, size_t t, struct ferry_error *err)
{
    struct ferry_verify_table *vt = counts_of(r, t);
    struct ferry_checksum *cs = NULL;
    struct ferry_table_info dst; /* the target's columns */
    size_t from = r->cur.n;
    double t0 = now_s();
    int exists = 0;
    int rc = FERRY_OK;

    memset(&dst, 0, sizeof(dst));
    if (r->db)
        rc = ferry_db_table_columns(r->db, vt->name, &dst, &exists, err);
    if (rc)
        return rc;
    vt->present = exists;
    /* a column the source has and the target lacks: sync stops on it too */
    for (size_t i = 0; exists && i < r->scope->tables[t].info.ncols; i++) {
        const struct ferry_table_info *ti = &r->scope->tables[t].info;
        int d = ferry_table_colidx(&dst, ti->cols[i].name);

        /* one engine: a type of its own on the target may store the values otherwise */
        if (d >= 0 && r->rep->rounds == 0 && !r->o->quiet && same_engine(r) && ti->cols[i].type &&
            dst.cols[d].type && strcasecmp(ti->cols[i].type, dst.cols[d].type) != 0)
            log_warn("verify %s: column %s is %s on the source and %s on the target; a "
                     "difference there may come back after --repair",
                     ti->name, ti->cols[i].name, ti->cols[i].type, dst.cols[d].type);
        if (d < 0) {
            rc = ferry_error_set(err, FERRY_ESCHEMA,
                                 "target table %s has no column %s, which the source has; add "
                                 "it (ALTER TABLE %s ADD COLUMN %s) or drop the table",
                                 ti->name, ti->cols[i].name, ti->name, ti->cols[i].name);
            ferry_table_info_release(&dst);
            return rc;
        }
    }
    free(r->coerce);
    r->coerce = NULL;
    r->ncoerce = 0;
    r->thash = r->hash;
    if (exists) {
        rc = target_coercions(r, t, &dst, err);
        if (!rc)
            rc = ferry_checksum_new(r->db, r->scope, t, &r->tenant, NULL, &cs, err);
        if (!rc && r->keep)
            rc = ferry_checksum_only(cs, r->keep, r->nkeep, err);
        if (!rc && pgrec_wanted(r, t, &dst)) {
            struct ferry_error e;

            if (ferry_checksum_set_hash(cs, FERRY_HASH_PGREC, r->hash_key, &e) == FERRY_OK)
                r->thash = FERRY_HASH_PGREC;
            else
                log_debug("verify %s: %s", vt->name, e.msg);
        }
        if (!rc && r->thash != FERRY_HASH_PGREC)
            rc = ferry_checksum_set_hash(cs, r->hash, r->hash_key, err);
        if (!rc)
            rc = ferry_db_begin_read(r->db, err);
        ferry_table_info_release(&dst);
        if (rc) {
            ferry_checksum_free(cs);
            return rc;
        }
    }
    rc = compare_totals(r, t, cs, err);
    ferry_checksum_free(cs);
    if (exists)
        ferry_db_rollback(r->db);
    if (rc)
        return ferry_error_prefix(err, "verify %s", vt->name);
    merge_table(r, t, from);
    vt->compared = 1;
    if (!r->o->quiet) {
        int64_t nd = vt->missing + vt->extra + vt->differs;

        if (vt->unkeyed)
            log_warn("verify %s: %" PRId64 " rows of the tenant on the source have a NULL in "
                     "their primary key: ferry cannot copy them; give them keys (README, Limits)",
                     vt->name, vt->unkeyed);
        if (nd)
            log_info("verify %s: %" PRId64 " rows on the source, %" PRId64
                     " on the target, %" PRId64 " differences (%.2f s)",
                     vt->name, vt->src_rows, vt->dst_rows, nd, now_s() - t0);
        else if (vt->unkeyed)
            log_info("verify %s: %" PRId64 " rows equal, %" PRId64 " more on the source without "
                     "a key (%.2f s)",
                     vt->name, vt->src_rows, vt->unkeyed, now_s() - t0);
        else
            log_info("verify %s: %" PRId64 " rows, equal (%.2f s)", vt->name, vt->src_rows,
                     now_s() - t0);
    }
    return FERRY_OK;
}

static int table_differs(const struct ferry_verify_table *vt)
{
    /* the totals too: a table check_key_order kept from bisecting lists no rows */
    return vt->missing + vt->extra + vt->differs + vt->unkeyed != 0 ||
           vt->src_rows != vt->dst_rows || vt->src_sum != vt->dst_sum;
}

/*
 * The rows of the tenant that no key addresses, over all tables; *first
 * (when first is not NULL): a table of them.
 */
static int64_t unkeyed_total(const struct ferry_verify_report *rep, const char **first)
{
    int64_t n = 0;

    for (size_t t = 0; t < rep->ntables; t++) {
        if (first && rep->tables[t].unkeyed && !n)
            *first = rep->tables[t].name;
        n += rep->tables[t].unkeyed;
    }
    return n;
}

/*
 * Warn, on the first round, when the target has tables of the scope that
 * PostgreSQL never analyzed: their owner checks are planned from guesses (a
 * team's 20 channels guessed as 5 made the reactions' check twice as slow).
 * sync analyzes after a copy; a copy interrupted before that, or made by
 * an older ferry, leaves them so. verify itself only reads.
 */
static void warn_unanalyzed(struct ferry_db *db, const struct ferry_scope *s)
{
    struct ferry_buf names;
    struct ferry_error err;
    size_t n = 0;

    ferry_buf_init(&names, 1024);
    if (ferry_scope_unanalyzed(db, s, &names, &n, &err) == FERRY_OK && n)
        log_warn("target: %zu table%s never analyzed (%s): verify's reads of them are planned "
                 "from guesses and can be several times slower; run ANALYZE on %s on the "
                 "target",
                 n, n == 1 ? "" : "s", names.data, n == 1 ? "it" : "them");
    ferry_buf_release(&names);
}

/*
 * One comparison into r->cur: of every table, or after a repair of the
 * tables that differed and of those under them (repair wrote nothing else;
 * the others keep the numbers of the comparison before).
 */
static int compare_all(struct vrun *r, struct ferry_error *err)
{
    unsigned char *todo = calloc(r->rep->ntables ? r->rep->ntables : 1, 1);
    int rc;

    if (!todo)
        return ferry_error_set(err, FERRY_ENOMEM, "out of memory");
    difflist_release(&r->cur);
    /*
     * A table under one the repair wrote missing rows to: a parent written
     * back makes its children the tenant's again, orphans the target kept
     * among them. (A row that differed stays the tenant's, and so do its
     * children; the children of an extra one were extra with it.)
     */
    for (size_t t = 0; t < r->rep->ntables; t++) {
        todo[t] = !r->recheck_only || table_differs(&r->rep->tables[t]);
        for (int a = r->scope->tables[t].parent; !todo[t] && a >= 0; a = r->scope->tables[a].parent)
            todo[t] = r->rep->tables[a].missing > 0;
    }
    for (size_t t = 0; t < r->rep->ntables; t++) {
        struct ferry_verify_table *vt = &r->rep->tables[t];

        if (!todo[t])
            continue;
        vt->src_rows = vt->dst_rows = 0;
        vt->src_sum = vt->dst_sum = 0;
        vt->missing = vt->extra = vt->differs = vt->unkeyed = 0;
        vt->present = 0;
        vt->compared = 0;
    }
    rc = ferry_db_open(r->cfg->target.database, FERRY_DB_READONLY, &r->db, err);
    if (rc == FERRY_ECONFIG && strstr(err->msg, "does not exist")) {
        /* No target database yet: every source row is missing. */
        ferry_error_clear(err);
        r->db = NULL;
        rc = FERRY_OK;
    }
    if (!rc && r->db && r->rep->rounds == 0)
        warn_unanalyzed(r->db, r->scope);
    /* Reads through the page cache without a copy per page; this connection only reads. */
    if (!rc && r->db && ferry_db_engine(r->db) == FERRY_ENGINE_SQLITE &&
        ferry_db_exec(r->db, "PRAGMA mmap_size = 1073741824", err) != FERRY_OK)
        ferry_error_clear(err);
    for (size_t t = 0; t < r->scope->ntables && !rc; t++)
        if (todo[t])
            rc = compare_table(r, t, err);
    ferry_db_close(r->db);
    r->db = NULL;
    r->rep->rounds++;
    free(todo);
    return rc;
}

/* ---- repair ---- */

/*
 * Pull the current image of the keys of the differences idx[0..n) (all of
 * table t) and apply them, ROWS_PER_REQUEST keys per request and target
 * transaction; fewer when a request or its answer is over a size limit.
 */
static int repair_keys(struct vrun *r, struct ferry_applier *ap, size_t t, const size_t *idx,
                       size_t n, struct ferry_error *err)
{
    const struct ferry_table_info *ti = &r->scope->tables[t].info;
    size_t npk = ferry_table_npk(ti);
    struct ferry_value *keys = NULL;
    size_t chunk = ROWS_PER_REQUEST;
    int rc = FERRY_OK;

    keys = calloc((size_t)ROWS_PER_REQUEST * npk, sizeof(*keys));
    if (!keys)
        return ferry_error_set(err, FERRY_ENOMEM, "out of memory");
    for (size_t done = 0; done < n && !rc;) {
        struct ferry_apply_counts c = {0, 0};
        struct ferry_request req;
        struct ferry_batch *b = NULL;
        char *body = NULL, *resp = NULL;
        size_t blen = 0, rlen = 0;
        size_t m = n - done < chunk ? n - done : chunk;

        for (size_t i = 0; i < m; i++)
            memcpy(&keys[i * npk], r->cur.d[idx[done + i]].key, npk * sizeof(*keys));
        memset(&req, 0, sizeof(req));
        req.type = FERRY_REQ_ROWS;
        req.tenant = r->cfg->target.tenant;
        req.table = ti->name;
        req.keys = keys;
        req.nkeys = m;
        req.keywidth = npk;
        rc = ferry_request_encode(&req, &body, &blen, err);
        if (!rc && blen > ferry_limits_default.max_request && m > 1) {
            free(body);
            chunk = m / 2;
            continue;
        }
        if (!rc) {
            rc = ferry_client_post(r->client, "/v1/rows", body, blen,
                                   ferry_config_max_message(r->cfg), &resp, &rlen, err);
            r->rep->requests++;
        }
        free(body);
        if (rc == FERRY_ETOOBIG && m > 1) {
            ferry_error_clear(err);
            rc = FERRY_OK;
            chunk = m / 2;
            continue;
        }
        if (!rc) {
            rc = ferry_batch_decode(resp, rlen, &ferry_limits_default, &b, err);
            if (rc)
                ferry_error_prefix(err, "rows of %s from the source", ti->name);
        }
        for (size_t s = 0; b && s < b->nsets && !rc; s++)
            if (strcmp(b->sets[s].table, ti->name) != 0)
                rc = ferry_error_set(err, FERRY_EPROTO,
                                     "rows of %s: the source answered with rows of %.64s", ti->name,
                                     b->sets[s].table);
        if (!rc)
            rc = ferry_applier_apply(ap, b, &c, err);
        /* a clash commits the batch's deletes alone (ferry_applier_apply): counted too */
        r->rep->upserted += c.upserted;
        r->rep->deleted += c.deleted;
        if (!rc)
            done += m;
        ferry_batch_free(b);
        free(resp);
    }
    free(keys);
    return rc;
}

/*
 * Repair the differences of r->cur: rows missing or differing parents
 * first, then rows extra on the target children first, so that a parent
 * exists before its children are written and goes after they are deleted.
 */
static int repair(struct vrun *r, struct ferry_error *err)
{
    struct ferry_applier *ap = NULL;
    struct ferry_error clash;
    size_t *idx = NULL;
    int rc;

    ferry_error_clear(&clash);
    rc = ferry_applier_open(r->cfg->target.database, r->manifest, r->cfg->target.tenant, 0, NULL,
                            &ap, err);
    if (rc)
        return rc;
    idx = calloc(r->cur.n ? r->cur.n : 1, sizeof(*idx));
    if (!idx) {
        rc = ferry_error_set(err, FERRY_ENOMEM, "out of memory");
        goto out;
    }
    for (int phase = 0; phase < 2 && !rc; phase++) {
        for (size_t k = 0; k < r->scope->ntables && !rc; k++) {
            size_t t = phase == 0 ? k : r->scope->ntables - 1 - k;
            size_t n = 0;

            for (size_t i = 0; i < r->cur.n; i++) {
                const struct ferry_verify_diff *d = &r->cur.d[i];

                if (d->table == t && (d->kind == FERRY_DIFF_EXTRA) == (phase == 1))
                    idx[n++] = i;
            }
            if (n)
                rc = repair_keys(r, ap, t, idx, n, err);
        }
        /*
         * Rows the target holds for another tenant clash with the upserts;
         * the deletes still go: that tenant's sync into this target may wait
         * for them (two tenants trading rows). The clash is the result.
         */
        if (phase == 0 && rc == FERRY_ECLASH) {
            clash = *err;
            rc = FERRY_OK;
        }
    }
    if (!rc && clash.code) {
        *err = clash;
        rc = FERRY_ECLASH;
    }
    if (!rc && !r->o->quiet)
        log_info("repair: %" PRId64 " rows written, %" PRId64 " deleted", r->rep->upserted,
                 r->rep->deleted);
out:
    free(idx);
    ferry_applier_close(ap);
    return rc;
}

/* ---- output ---- */

static int utf8_ok(const unsigned char *p, size_t n)
{
    for (size_t i = 0; i < n;) {
        unsigned char c = p[i];
        size_t len = c < 0x80 ? 1 : (c >> 5) == 6 ? 2 : (c >> 4) == 14 ? 3 : (c >> 3) == 30 ? 4 : 0;

        if (!len || i + len > n || (len == 2 && c < 0xc2) || (len == 4 && c > 0xf4))
            return 0;
        for (size_t k = 1; k < len; k++)
            if ((p[i + k] & 0xc0) != 0x80)
                return 0;
        if (len == 3 && ((c == 0xe0 && p[i + 1] < 0xa0) || (c == 0xed && p[i + 1] >= 0xa0)))
            return 0;
        if (len == 4 && ((c == 0xf0 && p[i + 1] < 0x90) || (c == 0xf4 && p[i + 1] >= 0x90)))
            return 0;
        i += len;
    }
    return 1;
}

static void json_bytes(FILE *f, const char *p, size_t n)
{
    fputc('"', f);
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)p[i];

        if (c == '"' || c == '\\')
            fprintf(f, "\\%c", c);
        else if (c < 0x20 || c == 0x7f)
            fprintf(f, "\\u%04x", c);
        else
            fputc(c, f);
    }
    fputc('"', f);
}

static void hex(FILE *f, const char *p, size_t n)
{
    for (size_t i = 0; i < n; i++)
        fprintf(f, "%02x", (unsigned char)p[i]);
}

static void json_value(FILE *f, const struct ferry_value *v)
{
    switch (v->type) {
    case FERRY_NULL:
        fputs("null", f);
        break;
    case FERRY_INT:
        fprintf(f, "%" PRId64, v->u.i);
        break;
    case FERRY_FLOAT:
        if (v->u.f == v->u.f && v->u.f - v->u.f == 0)
            fprintf(f, "%.17g", v->u.f);
        else
            fprintf(f, "\"%g\"", v->u.f);
        break;
    case FERRY_TEXT:
        if (utf8_ok((const unsigned char *)v->u.s.p, v->u.s.n)) {
            json_bytes(f, v->u.s.p, v->u.s.n);
        } else {
            fputs("{\"text_hex\":\"", f);
            hex(f, v->u.s.p, v->u.s.n);
            fputs("\"}", f);
        }
        break;
    case FERRY_BLOB:
        fputs("{\"blob_hex\":\"", f);
        hex(f, v->u.s.p, v->u.s.n);
        fputs("\"}", f);
        break;
    }
}

/* A key as the operator reads it: id=5, emoji='tada', data=x'00ff'. */
static void text_key(FILE *f, const struct ferry_table_info *ti, const struct ferry_verify_diff *d)
{
    for (size_t k = 0; k < d->nkey; k++) {
        const struct ferry_value *v = &d->key[k];
        int col = ferry_table_pkcol(ti, k);

        fprintf(f, "%s%s=", k ? ", " : "", col >= 0 ? ti->cols[col].name : "?");
        switch (v->type) {
        case FERRY_NULL:
            fputs("NULL", f);
            break;
        case FERRY_INT:
            fprintf(f, "%" PRId64, v->u.i);
            break;
        case FERRY_FLOAT:
            fprintf(f, "%.17g", v->u.f);
            break;
        case FERRY_TEXT:
            fputc('\'', f);
            for (size_t i = 0; i < v->u.s.n && i < 200; i++) {
                unsigned char c = (unsigned char)v->u.s.p[i];

                if (c == '\'')
                    fputs("''", f);
                else if (c < 0x20 || c == 0x7f)
                    fprintf(f, "\\x%02x", c);
                else
                    fputc(c, f);
            }
            fputs(v->u.s.n > 200 ? "...'" : "'", f);
            break;
        case FERRY_BLOB:
            fputs("x'", f);
            hex(f, v->u.s.p, v->u.s.n < 100 ? v->u.s.n : 100);
            fputs(v->u.s.n > 100 ? "...'" : "'", f);
            break;
        }
    }
}

static void json_diffs(FILE *f, const struct vrun *r, const struct ferry_verify_diff *d, size_t n)
{
    fputc('[', f);
    for (size_t i = 0; i < n; i++) {
        const struct ferry_table_info *ti = &r->scope->tables[d[i].table].info;

        fprintf(f, "%s{\"table\":", i ? "," : "");
        json_bytes(f, ti->name, strlen(ti->name));
        fprintf(f, ",\"kind\":\"%s\",\"key\":{", kind_word(d[i].kind));
        for (size_t k = 0; k < d[i].nkey; k++) {
            int col = ferry_table_pkcol(ti, k);
            const char *name = col >= 0 ? ti->cols[col].name : "?";

            fputs(k ? "," : "", f);
            json_bytes(f, name, strlen(name));
            fputc(':', f);
            json_value(f, &d[i].key[k]);
        }
        fputs("}}", f);
    }
    fputc(']', f);
}

/* A repair that stopped (a clash, say) before it compared again: nothing listed as remaining. */
static int unchecked(const struct ferry_verify_report *rep)
{
    return rep->repaired && rep->total_remaining && !rep->nremaining && rep->ndiffs;
}

static void print_json(const struct vrun *r, int code, const struct ferry_error *err)
{
    const struct ferry_verify_report *rep = r->rep;
    FILE *f = stdout;

    fputs("{\"tenant\":", f);
    json_bytes(f, rep->tenant, strlen(rep->tenant));
    fprintf(f, ",\"equal\":%s,\"code\":\"%s\",\"error\":", rep->equal ? "true" : "false",
            ferry_strcode(code));
    if (code && code != FERRY_EMISMATCH)
        json_bytes(f, err->msg, strlen(err->msg));
    else
        fputs("null", f);
    fputs(",\"tables\":[", f);
    for (size_t t = 0; t < rep->ntables; t++) {
        const struct ferry_verify_table *vt = &rep->tables[t];

        fprintf(f, "%s{\"table\":", t ? "," : "");
        json_bytes(f, vt->name, strlen(vt->name));
        fprintf(f,
                ",\"source_rows\":%" PRId64 ",\"target_rows\":%" PRId64
                ",\"source_checksum\":\"%016" PRIx64 "\",\"target_checksum\":\"%016" PRIx64
                "\",\"missing\":%" PRId64 ",\"extra\":%" PRId64 ",\"differs\":%" PRId64
                ",\"unkeyed\":%" PRId64 ",\"equal\":%s,\"compared\":%s,\"hash\":\"%s\"}",
                vt->src_rows, vt->dst_rows, vt->src_sum, vt->dst_sum, vt->missing, vt->extra,
                vt->differs, vt->unkeyed,
                !vt->compared       ? "null"
                : table_differs(vt) ? "false"
                                    : "true",
                vt->compared ? "true" : "false", ferry_hash_name(vt->hash));
    }
    fprintf(f, "],\"differences_total\":%" PRId64 ",\"differences\":", rep->total_diffs);
    json_diffs(f, r, rep->diffs, rep->ndiffs);
    if (rep->repaired) {
        fprintf(f,
                ",\"repair\":{\"upserted\":%" PRId64 ",\"deleted\":%" PRId64
                ",\"remaining_total\":%" PRId64 ",\"compared_again\":%s,\"remaining\":",
                rep->upserted, rep->deleted, rep->total_remaining,
                unchecked(rep) ? "false" : "true");
        /* a repair that stopped before comparing again: what it set out to fix, some of it still */
        if (unchecked(rep))
            json_diffs(f, r, rep->diffs, rep->ndiffs);
        else
            json_diffs(f, r, rep->remaining, rep->nremaining);
        fputc('}', f);
    } else {
        fputs(",\"repair\":null", f);
    }
    fprintf(f, ",\"rounds\":%d,\"requests\":%" PRId64 ",\"seconds\":%.3f}\n", rep->rounds,
            rep->requests, rep->seconds);
}

static void print_diffs(const struct vrun *r, const struct ferry_verify_diff *d, size_t n,
                        int64_t total)
{
    for (size_t i = 0; i < n; i++) {
        const struct ferry_table_info *ti = &r->scope->tables[d[i].table].info;

        printf("  %s ", ti->name);
        text_key(stdout, ti, &d[i]);
        printf(": %s\n", ferry_verify_kind_name(d[i].kind));
    }
    if (total > (int64_t)n)
        printf("  ... and %" PRId64 " more\n", total - (int64_t)n);
}

static void print_text(const struct vrun *r, int code)
{
    const struct ferry_verify_report *rep = r->rep;
    int64_t rows = 0;
    size_t bad = 0;

    printf("verify tenant %s: %zu tables\n", rep->tenant, rep->ntables);
    for (size_t t = 0; t < rep->ntables; t++) {
        const struct ferry_verify_table *vt = &rep->tables[t];
        int64_t nd = vt->missing + vt->extra + vt->differs;

        rows += vt->src_rows;
        bad += table_differs(vt);
        if (!vt->compared) {
            printf("  %-24s not compared\n", vt->name);
            continue;
        }
        if (nd)
            printf("  %-24s %10" PRId64 " rows on the source, %" PRId64 " on the target: %" PRId64
                   " missing, %" PRId64 " extra, %" PRId64 " differ\n",
                   vt->name, vt->src_rows, vt->dst_rows, vt->missing, vt->extra, vt->differs);
        else if (!vt->unkeyed && table_differs(vt))
            printf("  %-24s %10" PRId64 " rows on the source, %" PRId64 " on the target: they "
                   "differ, rows not found (see the error)\n",
                   vt->name, vt->src_rows, vt->dst_rows);
        if (vt->unkeyed)
            printf("  %-24s %10" PRId64 " rows on the source with a NULL in their primary key: "
                   "ferry cannot copy them\n",
                   vt->name, vt->unkeyed);
        if (!table_differs(vt))
            printf("  %-24s %10" PRId64 " rows  equal  checksum %016" PRIx64 " (%s)\n", vt->name,
                   vt->src_rows, vt->src_sum, ferry_hash_name(vt->hash));
    }
    if (rep->total_diffs) {
        printf("differences:\n");
        print_diffs(r, rep->diffs, rep->ndiffs, rep->total_diffs);
    }
    if (rep->repaired) {
        printf("repair: %" PRId64 " rows written, %" PRId64 " deleted\n", rep->upserted,
               rep->deleted);
        if (unchecked(rep)) {
            /* the repair stopped (a clash, say) before it compared again */
            printf("still differing after repair: some of the differences above (it stopped "
                   "before comparing again)\n");
        } else if (rep->total_remaining) {
            printf("still differing after repair:\n");
            print_diffs(r, rep->remaining, rep->nremaining, rep->total_remaining);
        }
    }
    if (code && code != FERRY_EMISMATCH)
        printf("result: verify failed (%s)\n", ferry_strcode(code));
    else if (rep->equal)
        printf("result: equal, %" PRId64 " rows in %zu tables (%.2f s)\n", rows, rep->ntables,
               rep->seconds);
    else {
        int64_t unkeyed = unkeyed_total(rep, NULL);

        printf("result: %" PRId64 " differences%s in %zu tables (%.2f s)\n",
               (rep->repaired ? rep->total_remaining : rep->total_diffs) + unkeyed,
               unkeyed ? " (rows without a key among them)" : "", bad, rep->seconds);
    }
}

/* ---- the run ---- */

void ferry_verify_report_release(struct ferry_verify_report *rep)
{
    struct difflist l;

    if (!rep)
        return;
    free(rep->tables);
    l.d = rep->diffs;
    l.n = rep->ndiffs;
    difflist_release(&l);
    l.d = rep->remaining;
    l.n = rep->nremaining;
    difflist_release(&l);
    memset(rep, 0, sizeof(*rep));
}

static int build_scope(struct vrun *r, struct ferry_error *err)
{
    const struct ferry_manifest *m = r->manifest;
    struct ferry_table_info *copy = calloc(m->ntables ? m->ntables : 1, sizeof(*copy));
    int rc;

    if (!copy)
        return ferry_error_set(err, FERRY_ENOMEM, "out of memory");
    for (size_t i = 0; i < m->ntables; i++) {
        if (ferry_table_info_copy(&copy[i], &m->tables[i])) {
            ferry_tables_free(copy, i);
            return ferry_error_set(err, FERRY_ENOMEM, "out of memory");
        }
    }
    rc = ferry_scope_build(copy, m->ntables, m->root, &r->scope, err);
    if (rc)
        return ferry_error_prefix(err, "manifest");
    if (r->scope->ntables != m->ntables)
        return ferry_error_set(err, FERRY_EPROTO,
                               "manifest: %zu tables sent, %zu reach the root %s; the source and "
                               "target disagree on the scope",
                               m->ntables, r->scope->ntables, m->root);
    rc = ferry_scope_tenant(r->scope, r->cfg->target.tenant, &r->tenant, err);
    if (rc)
        return rc;
    r->rep->tables = calloc(r->scope->ntables ? r->scope->ntables : 1, sizeof(*r->rep->tables));
    if (!r->rep->tables)
        return ferry_error_set(err, FERRY_ENOMEM, "out of memory");
    r->rep->ntables = r->scope->ntables;
    for (size_t t = 0; t < r->scope->ntables; t++)
        snprintf(r->rep->tables[t].name, sizeof(r->rep->tables[t].name), "%s",
                 r->scope->tables[t].info.name);
    return FERRY_OK;
}

/* Move the comparison's list into the report (first comparison: diffs, later: remaining). */
static void keep_list(struct vrun *r, int first)
{
    struct ferry_verify_report *rep = r->rep;
    struct difflist old;

    rep->total_remaining = r->cur.total;
    if (first) {
        rep->diffs = r->cur.d;
        rep->ndiffs = r->cur.n;
        rep->total_diffs = r->cur.total;
    } else {
        old.d = rep->remaining;
        old.n = rep->nremaining;
        difflist_release(&old);
        rep->remaining = r->cur.d;
        rep->nremaining = r->cur.n;
    }
    memset(&r->cur, 0, sizeof(r->cur));
}

static int open_state(struct vrun *r, struct ferry_state **st, int64_t *hwm,
                      struct ferry_error *err)
{
    struct ferry_state_meta m;
    int rc;

    *hwm = -1;
    if (r->o->state) {
        *st = r->o->state;
    } else {
        rc = ferry_state_open(r->cfg->target.state, FERRY_STATE_CREATE, st, err);
        if (!rc && r->o->repair)
            rc = ferry_state_live(*st, "verify --repair", err);
        if (rc)
            return rc;
    }
    rc = ferry_state_meta_get(*st, &m, err);
    if (rc == FERRY_ENOTFOUND) {
        ferry_error_clear(err);
        return FERRY_OK;
    }
    if (rc)
        return rc;
    if (m.tenant[0] && strcmp(m.tenant, r->cfg->target.tenant) != 0)
        return ferry_error_set(err, FERRY_ECONFIG,
                               "state %s belongs to tenant %s, not %s; use another [target] "
                               "state directory",
                               r->cfg->target.state, m.tenant, r->cfg->target.tenant);
    *hwm = m.hwm;
    return FERRY_OK;
}

/* A comparison's start: its hash key, the client, the manifest and the scope. */
static int vrun_start(struct vrun *r, struct ferry_error *err)
{
    /* a fresh key for every verify: nobody can prepare rows that collide under it */
    int rc = ferry_random(r->hash_key, sizeof(r->hash_key), err);

    r->hash = FERRY_HASH_SIPHASH13;
    if (!rc)
        rc = ferry_client_new(r->cfg, &r->client, err);
    if (!rc)
        rc = fetch_manifest(r, err);
    if (!rc)
        rc = build_scope(r, err);
    return rc;
}

static void vrun_release(struct vrun *r)
{
    ferry_db_close(r->db);
    r->db = NULL;
    free(r->keep);
    free(r->coerce);
    difflist_release(&r->cur);
    ferry_buf_release(&r->keybuf);
    ferry_scope_free(r->scope);
    ferry_manifest_free(r->manifest);
    ferry_client_free(r->client);
}

/*
 * Whether the comparison's list (r->cur) holds a difference that the list
 * repaired before it (rep's last) did not: one the repair's own writes
 * made, say an orphan of the target that a parent written back made the
 * tenant's again. Both lists are in cmp_diff order.
 */
static int found_new(const struct vrun *r, int round)
{
    const struct ferry_verify_report *rep = r->rep;
    const struct ferry_verify_diff *last = round > 1 ? rep->remaining : rep->diffs;
    size_t nlast = round > 1 ? rep->nremaining : rep->ndiffs;

    for (size_t i = 0; i < r->cur.n; i++)
        if (!bsearch(&r->cur.d[i], last, nlast, sizeof(*last), cmp_diff))
            return 1;
    return 0;
}

/* Compare, and repair and compare again when asked. */
static int run_rounds(struct vrun *r, struct ferry_error *err)
{
    struct ferry_verify_report *rep = r->rep;
    const char *first = NULL;
    int stuck = 0; /* the rows repair wrote differ again, and no other */
    int rc = vrun_start(r, err);

    for (int round = 0; !rc; round++) {
        r->unorderable = 0;
        rc = compare_all(r, err);
        if (rc)
            break;
        rep->equal = r->cur.total == 0 && unkeyed_total(rep, NULL) == 0 && !r->unorderable;
        stuck =
            round > 0 && r->cur.total && r->cur.total == (int64_t)r->cur.n && !found_new(r, round);
        /*
         * One repair fixes what one comparison listed; a list cut short takes
         * more rounds, and so does one with differences the repair made
         * (found_new, NEW_ROUNDS). Rows without a key are no repair's to fix.
         */
        if (r->cur.total == 0 || !r->o->repair || stuck ||
            (round > 0 && r->cur.total == (int64_t)r->cur.n && round >= NEW_ROUNDS) ||
            round + 1 >= MAX_ROUNDS) {
            keep_list(r, round == 0);
            break;
        }
        rc = repair(r, err);
        rep->repaired = 1;
        r->recheck_only = 1;
        keep_list(r, round == 0);
    }
    if (!rc && r->unorderable) {
        *err = r->order_err;
        rc = r->order_err.code;
    } else if (!rc && !rep->equal && stuck)
        rc = ferry_error_set(err, FERRY_EMISMATCH,
                             "%" PRId64 " differences remain after repair: the rows it wrote "
                             "differ again (does the target store their values otherwise, a "
                             "column of another type there? does something else write them?)",
                             rep->total_remaining);
    else if (!rc && !rep->equal && (rep->repaired ? rep->total_remaining : rep->total_diffs))
        rc = ferry_error_set(err, FERRY_EMISMATCH,
                             "%" PRId64 " differences between source and target%s",
                             rep->repaired ? rep->total_remaining : rep->total_diffs,
                             rep->repaired ? " remain after repair" : "; --repair fixes them");
    else if (!rc && !rep->equal) {
        int64_t n = unkeyed_total(rep, &first);

        rc = ferry_error_set(err, FERRY_EMISMATCH,
                             "%" PRId64 " rows of %s (and any other table named above) have a "
                             "NULL in their primary key on the source: ferry cannot copy them; "
                             "give them keys",
                             n, first ? first : "the scope");
    }
    return rc;
}

int ferry_verify(const struct ferry_config *cfg, const struct ferry_verify_opts *o,
                 struct ferry_verify_report *rep, struct ferry_error *err)
{
    struct ferry_state *st = NULL;
    struct ferry_run run;
    struct vrun r;
    double t0 = now_s();
    int64_t hwm = -1;
    int rc;

    memset(rep, 0, sizeof(*rep));
    memset(&r, 0, sizeof(r));
    memset(&run, 0, sizeof(run));
    r.cfg = cfg;
    r.o = o;
    r.rep = rep;
    ferry_buf_init(&r.keybuf, KEY_MAX);
    snprintf(rep->tenant, sizeof(rep->tenant), "%s", cfg->target.tenant);
    rc = open_state(&r, &st, &hwm, err);
    if (rc)
        goto out;
    snprintf(run.kind, sizeof(run.kind), "verify");
    run.hwm_before = hwm;
    rc = ferry_state_run_begin(st, &run, err);
    if (rc)
        goto out;
    rc = run_rounds(&r, err);
    rep->seconds = now_s() - t0;
    run.ended = (int64_t)time(NULL);
    run.upserted = rep->upserted;
    run.deleted = rep->deleted;
    run.hwm_after = hwm;
    run.code = rc;
    if (rc)
        snprintf(run.msg, sizeof(run.msg), "%s", err->msg);
    else
        snprintf(run.msg, sizeof(run.msg), "equal: %zu tables%s", rep->ntables,
                 rep->repaired ? " after repair" : "");
    {
        struct ferry_error e2;
        struct ferry_progress *prog;

        if (ferry_state_run_put(st, &run, &e2))
            log_warn("cannot record the verify run: %s", e2.msg);
        /* and in the run log: a repair writes to the target */
        prog = ferry_progress_open(cfg->target.state, "verify", run.id, cfg->target.tenant, hwm, 1);
        ferry_progress_end(prog, rc, run.msg, hwm, 0, rep->upserted, rep->deleted);
        ferry_progress_close(prog);
    }
    if (!o->quiet && rep->tables) {
        if (o->json)
            print_json(&r, rc, err);
        else
            print_text(&r, rc);
    }
out:
    vrun_release(&r);
    if (!o->state)
        ferry_state_close(st);
    return rc;
}

int ferry_verify_columns(const struct ferry_config *cfg, const char *table, const char *const *cols,
                         size_t ncols, int *same, int64_t *rows, int64_t *repaired,
                         struct ferry_error *err)
{
    struct ferry_verify_opts o;
    struct ferry_verify_report rep;
    const struct ferry_table_info *ti;
    struct vrun r;
    int t = -1;
    int rc;

    *same = 0;
    *rows = 0;
    *repaired = 0;
    memset(&o, 0, sizeof(o));
    memset(&rep, 0, sizeof(rep));
    memset(&r, 0, sizeof(r));
    o.quiet = 1;
    r.cfg = cfg;
    r.o = &o;
    r.rep = &rep;
    ferry_buf_init(&r.keybuf, KEY_MAX);
    rc = vrun_start(&r, err);
    if (!rc && (t = ferry_scope_find(r.scope, table)) < 0)
        rc = ferry_error_set(err, FERRY_ENOTFOUND, "table %s is not in the source's scope", table);
    if (rc)
        goto out;
    /* the key and the columns named, by the source's column order */
    ti = &r.scope->tables[t].info;
    r.nkeep = ti->ncols;
    r.keep = calloc(ti->ncols ? ti->ncols : 1, 1);
    if (!r.keep) {
        rc = ferry_error_set(err, FERRY_ENOMEM, "out of memory");
        goto out;
    }
    for (size_t k = 0; k < ferry_table_npk(ti); k++)
        r.keep[ferry_table_pkcol(ti, k)] = 1;
    for (size_t j = 0; j < ncols && !rc; j++) {
        size_t i = 0;

        while (i < ti->ncols && strcmp(ti->cols[i].name, cols[j]) != 0)
            i++;
        if (i == ti->ncols)
            rc = ferry_error_set(err, FERRY_ENOTFOUND, "the source's %s has no column %s", table,
                                 cols[j]);
        else
            r.keep[i] = 1;
    }
    for (int round = 0; round < 2 && !rc; round++) {
        struct ferry_verify_table *vt = &rep.tables[t];

        difflist_release(&r.cur);
        vt->src_rows = vt->dst_rows = 0;
        vt->src_sum = vt->dst_sum = 0;
        vt->missing = vt->extra = vt->differs = vt->unkeyed = 0;
        rc = ferry_db_open(cfg->target.database, FERRY_DB_READONLY, &r.db, err);
        if (!rc)
            rc = compare_table(&r, (size_t)t, err);
        ferry_db_close(r.db);
        r.db = NULL;
        if (rc == FERRY_ETOOBIG && strstr(err->msg, "rows differ")) {
            rc = FERRY_OK; /* the copy then */
            break;
        }
        if (rc || !vt->present || vt->unkeyed)
            break;
        *rows = vt->src_rows;
        if (r.cur.total == 0) {
            *same = 1;
            break;
        }
        /* rows written since the deltas (or changed here): pulled again, then compared again */
        if (round == 0 && (int64_t)r.cur.n == r.cur.total) {
            rc = repair(&r, err);
            *repaired = rep.upserted + rep.deleted;
        } else {
            break;
        }
    }
out:
    vrun_release(&r);
    ferry_verify_report_release(&rep);
    return rc;
}
