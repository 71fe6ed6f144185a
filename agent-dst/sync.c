/*
 * sync.c - the sync loop of ferry-dst.
 *
 * Order of durability, everywhere: the target transaction commits first,
 * then the mark moves in LMDB. A crash between the two re-applies one batch
 * on the next run; applying current images by key is idempotent, so nothing
 * is lost and nothing is duplicated.
 */
#include "sync.h"

#include "../common/buf.h"
#include "../common/keypack.h"
#include "../common/log.h"
#include "../proto/proto.h"
#include "apply.h"
#include "fetch.h"
#include "progress.h"
#include "state.h"
#include "verify.h"

#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

struct fetch;

struct run {
    const struct ferry_config *cfg;
    const struct ferry_sync_opts *opts;
    struct ferry_client *client;
    struct ferry_state *state;
    struct ferry_applier *applier;
    struct ferry_manifest *manifest;
    struct ferry_progress *prog;
    struct ferry_state_meta meta;
    struct ferry_apply_counts counts;
    int64_t copied;
    size_t max_body;
    long batch;
    /*
     * The copy's exported snapshot (points into manifest; NULL: none), named
     * by every snapshot request until the source says it is gone
     * (snapshot_gone, set once by a fetch thread): then pages read
     * snapshots of their own, which deltas from the recorded head repair.
     */
    char *snapshot;
    atomic_int snapshot_gone;
    /*
     * Snapshot pages may come as COPY text (PostgreSQL to PostgreSQL, per
     * table: ferry_applier_copy_text) until a source from before that
     * refuses the request's "copy" key (copy_refused, set once).
     */
    atomic_int copy_refused;
    /*
     * The change batches' fetch (owned; NULL: not started), started as soon
     * as the manifest is in when the run only streams, so that the first
     * batch travels while the target and the state get ready.
     */
    struct fetch *deltas;
    /* streaming, and the manifest says no change of the tenant is pending */
    int idle;
    /* streaming, and tables of the manifest were never copied (new to the scope) */
    size_t uncopied;
};

static double now_s(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* POST a request, return the body (owned). */
static int call(struct run *r, const char *path, const struct ferry_request *req, char **resp,
                size_t *len, struct ferry_error *err)
{
    char *body = NULL;
    size_t blen = 0;
    int rc;

    rc = ferry_request_encode(req, &body, &blen, err);
    if (rc)
        return rc;
    rc = ferry_client_post(r->client, path, body, blen, r->max_body, resp, len, err);
    free(body);
    return rc;
}

static int fetch_manifest(struct run *r, int64_t after, int counts, struct ferry_error *err)
{
    struct ferry_request req;
    char *resp = NULL;
    size_t len = 0;
    int rc;

    memset(&req, 0, sizeof(req));
    req.type = FERRY_REQ_MANIFEST;
    req.tenant = r->cfg->target.tenant;
    req.after = after;
    req.counts = counts;
    /* a copy reads its pages from one snapshot, where the source can export one */
    req.want_snapshot = !r->opts->dry_run && r->meta.phase != FERRY_PHASE_STREAMING;
    /* deltas: the first batch with the manifest, one round trip fewer */
    if (!r->opts->dry_run && r->meta.phase == FERRY_PHASE_STREAMING && after >= 0)
        req.with_changes = r->batch;
    /* which columns the source masks: a copy made before a mask changed is brought in step */
    req.masks = 1;
    /* when the source's log was complete up to the head it sends: the lag counts from then */
    req.as_of = 1;
    rc = call(r, "/v1/manifest", &req, &resp, &len, err);
    /* a source from before a key refuses it: asked again as it understands, key by key */
    for (int tries = 0; rc == FERRY_EPROTO && tries < 4; tries++) {
        if (req.want_snapshot && strstr(err->msg, "unknown key \"snapshot\""))
            req.want_snapshot = 0; /* pages from snapshots of their own */
        else if (req.with_changes && strstr(err->msg, "unknown key \"changes\""))
            req.with_changes = 0; /* the batches come by their own requests */
        else if (req.masks && strstr(err->msg, "unknown key \"masks\""))
            req.masks = 0; /* a mask changed since a copy goes unseen, as before */
        else if (req.as_of && strstr(err->msg, "unknown key \"as_of\""))
            req.as_of = 0; /* the lag counts from the manifest's time, as before */
        else
            break;
        rc = call(r, "/v1/manifest", &req, &resp, &len, err);
    }
    if (rc == FERRY_ENOTFOUND) {
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
    r->snapshot = req.want_snapshot ? r->manifest->snapshot : NULL;
    return FERRY_OK;
}

/*
 * A copy that read its pages from the source's exported snapshot lets it
 * go when the run ends. The source ends the snapshot's transaction on the
 * last page of the last table, or 5 minutes after a copy that stopped
 * short (failed, interrupted, done without every table's pages), holding
 * back vacuum there meanwhile. Best effort, and not after a failure that
 * says the source cannot be talked to; a source from before the release
 * refuses it, which changes nothing.
 */
static void release_snapshot(struct run *r, int code)
{
    struct ferry_request req;
    struct ferry_error e;
    char *body = NULL, *resp = NULL;
    size_t blen = 0, rlen = 0;

    if (!r->snapshot || atomic_load(&r->snapshot_gone) || !r->manifest->ntables ||
        code == FERRY_EUNREACHABLE || code == FERRY_EAUTH || code == FERRY_EFORBIDDEN)
        return;
    memset(&req, 0, sizeof(req));
    req.type = FERRY_REQ_SNAPSHOT;
    req.tenant = r->cfg->target.tenant;
    req.table = r->manifest->tables[0].name;
    req.limit = 1;
    req.snapshot = r->snapshot;
    req.release = 1;
    ferry_error_clear(&e);
    if (ferry_request_encode(&req, &body, &blen, &e) ||
        ferry_client_post(r->client, "/v1/snapshot", body, blen, ferry_limits_default.max_request,
                          &resp, &rlen, &e))
        log_debug("snapshot %s not released: %s", r->snapshot, e.msg);
    r->snapshot = NULL;
    free(body);
    free(resp);
}

/*
 * A table's snapshot pages are fetched by a thread of its own, reading
 * ahead of the applier: it asks for page N+1 as soon as page N has arrived
 * (the key to continue from is in N), decodes it, and queues it, while
 * this thread applies earlier pages; the source reads and encodes without
 * waiting for the target's commits. The queue holds at most AHEAD_PAGES
 * pages, and the next request waits for an empty queue once the queued
 * pages reach AHEAD_BYTES (big rows: as much in memory as one page ahead).
 * The client is used by the fetch thread alone while it runs: this thread
 * touches it again only after fetch_stop.
 *
 * Change batches come the same way (req.type FERRY_REQ_CHANGES): batch N+1
 * is asked for after batch N's head as soon as N has arrived, while N is
 * applied; the mark still moves only after each batch's commit.
 */
#define AHEAD_PAGES 2
#define AHEAD_BYTES ((size_t)8 << 20)

struct page {
    char *resp;
    size_t len;
    struct ferry_batch *batch; /* its values point into resp */
};

struct fetch {
    pthread_t th;
    int running;
    /*
     * A change batch that came with the manifest (owned until queued): the
     * thread decodes and queues it first, while the target gets ready.
     */
    char *raw;
    size_t nraw;
    struct run *r;
    struct ferry_request req;
    struct ferry_value after[FERRY_MAX_KEY_COLS]; /* point into keybuf */
    struct ferry_buf keybuf;                      /* the fetch's own copy of the key */
    pthread_mutex_t mu;
    pthread_cond_t cv;
    struct page q[AHEAD_PAGES]; /* q[head], q[head+1 mod AHEAD_PAGES], ... */
    size_t head, count, bytes;
    int finished; /* no more pages will be queued: the last came, or rc */
    int cancel;
    int rc;
    struct ferry_error err;
};

/* The request for f->req, with the fallbacks of older sources. */
static int fetch_one(struct fetch *f, struct page *pg)
{
    struct ferry_error *err = &f->err;
    int changes = f->req.type == FERRY_REQ_CHANGES;
    int rc;

    memset(pg, 0, sizeof(*pg));
    if (f->raw) {
        /* the change batch that came with the manifest: the first request's answer */
        pg->resp = f->raw;
        pg->len = f->nraw;
        f->raw = NULL;
        rc = FERRY_OK;
    } else {
        rc =
            call(f->r, changes ? "/v1/changes" : "/v1/snapshot", &f->req, &pg->resp, &pg->len, err);
    }
    if (rc == FERRY_EPROTO && f->req.copy_text && strstr(err->msg, "unknown key \"copy\"")) {
        /* a source from before COPY text: ask as it understands, from now on */
        atomic_store(&f->r->copy_refused, 1);
        f->req.copy_text = 0;
        f->req.limit = f->r->batch;
        rc = call(f->r, "/v1/snapshot", &f->req, &pg->resp, &pg->len, err);
    }
    if (rc == FERRY_ESNAPGONE && f->req.snapshot) {
        if (atomic_exchange(&f->r->snapshot_gone, 1) == 0)
            log_warn("%s; the rest of this copy reads pages from snapshots of their own, and "
                     "the deltas from the recorded head bring them in step",
                     err->msg);
        f->req.snapshot = NULL;
        rc = call(f->r, "/v1/snapshot", &f->req, &pg->resp, &pg->len, err);
    }
    if (!rc) {
        rc = ferry_batch_decode(pg->resp, pg->len, &ferry_limits_default, &pg->batch, err);
        if (rc && changes)
            ferry_error_prefix(err, "change batch");
        else if (rc)
            ferry_error_prefix(err, "snapshot of %s", f->req.table);
    }
    if (rc) {
        free(pg->resp);
        pg->resp = NULL;
    }
    return rc;
}

/* Continue after the last key of b: copied, b is freed while the next request runs. */
static int fetch_set_after(struct fetch *f, const struct ferry_value *after, size_t nafter)
{
    size_t n = 0;

    ferry_buf_reset(&f->keybuf);
    f->req.after_key = NULL;
    f->req.nafter = 0;
    if (!nafter)
        return FERRY_OK;
    if (ferry_key_pack(&f->keybuf, after, nafter) ||
        ferry_key_unpack(f->keybuf.data, f->keybuf.len, f->after, FERRY_MAX_KEY_COLS, &n))
        return ferry_error_set(&f->err, FERRY_ETOOBIG, "a key of %s is too large", f->req.table);
    f->req.after_key = f->after;
    f->req.nafter = n;
    return FERRY_OK;
}

static void *fetch_main(void *arg)
{
    struct fetch *f = arg;
    int rc = FERRY_OK;

    for (;;) {
        struct page pg;
        int more;

        pthread_mutex_lock(&f->mu);
        while (!f->cancel && (f->count >= AHEAD_PAGES || (f->count > 0 && f->bytes >= AHEAD_BYTES)))
            pthread_cond_wait(&f->cv, &f->mu);
        pthread_mutex_unlock(&f->mu);
        if (f->cancel)
            break;
        rc = fetch_one(f, &pg);
        if (rc)
            break;
        if (f->req.type == FERRY_REQ_CHANGES) {
            /* a batch that says more without moving the head would be asked for again */
            more = pg.batch->more && pg.batch->head > f->req.after;
            if (more)
                f->req.after = pg.batch->head;
        } else {
            more = pg.batch->more && pg.batch->last;
            if (more)
                rc = fetch_set_after(f, pg.batch->last, pg.batch->nlast);
            /* the last page of the manifest's last table: the source let the snapshot go */
            else if (f->req.snapshot && !pg.batch->more && f->r->manifest->ntables &&
                     strcmp(f->req.table,
                            f->r->manifest->tables[f->r->manifest->ntables - 1].name) == 0)
                atomic_store(&f->r->snapshot_gone, 1);
        }
        if (rc) {
            ferry_batch_free(pg.batch);
            free(pg.resp);
            break;
        }
        pthread_mutex_lock(&f->mu);
        f->q[(f->head + f->count) % AHEAD_PAGES] = pg;
        f->count++;
        f->bytes += pg.len;
        pthread_cond_broadcast(&f->cv);
        pthread_mutex_unlock(&f->mu);
        if (!more)
            break; /* the last page, or one that says more without a key or head (fetch_next) */
    }
    pthread_mutex_lock(&f->mu);
    f->rc = rc;
    f->finished = 1;
    pthread_cond_broadcast(&f->cv);
    pthread_mutex_unlock(&f->mu);
    return NULL;
}

/* Start f's thread for f->req (filled by the caller; f->keybuf initialized). */
static int fetch_launch(struct fetch *f, struct ferry_error *err)
{
    if (pthread_mutex_init(&f->mu, NULL) != 0) {
        ferry_buf_release(&f->keybuf);
        return ferry_error_set(err, FERRY_EINTERNAL, "cannot start a fetch thread");
    }
    if (pthread_cond_init(&f->cv, NULL) != 0) {
        pthread_mutex_destroy(&f->mu);
        ferry_buf_release(&f->keybuf);
        return ferry_error_set(err, FERRY_EINTERNAL, "cannot start a fetch thread");
    }
    if (pthread_create(&f->th, NULL, fetch_main, f) != 0) {
        pthread_cond_destroy(&f->cv);
        pthread_mutex_destroy(&f->mu);
        ferry_buf_release(&f->keybuf);
        return ferry_error_set(err, FERRY_EINTERNAL, "cannot start a fetch thread");
    }
    f->running = 1;
    return FERRY_OK;
}

static int fetch_start(struct fetch *f, struct run *r, const struct ferry_table_info *ti,
                       const struct ferry_value *after, size_t nafter, struct ferry_error *err)
{
    int rc;

    memset(f, 0, sizeof(*f));
    f->r = r;
    f->req.type = FERRY_REQ_SNAPSHOT;
    f->req.tenant = r->cfg->target.tenant;
    f->req.table = ti->name;
    f->req.snapshot = atomic_load(&r->snapshot_gone) ? NULL : r->snapshot;
    f->req.copy_text =
        !atomic_load(&r->copy_refused) && ferry_applier_copy_text(r->applier, ti->name);
    /* COPY text pages: 4 times the rows (and at most 4 MB, the source's COPY_PAGE_ROWS_X) */
    f->req.limit = f->req.copy_text ? r->batch * 4 : r->batch;
    ferry_buf_init(&f->keybuf, (size_t)1 << 20);
    rc = fetch_set_after(f, after, nafter);
    if (rc) {
        *err = f->err;
        ferry_buf_release(&f->keybuf);
        return rc;
    }
    return fetch_launch(f, err);
}

/* Start fetching r's change batches after the mark (r->deltas, owned). */
static int deltas_start(struct run *r, struct ferry_error *err)
{
    struct fetch *f = calloc(1, sizeof(*f));
    int rc;

    if (!f)
        return ferry_error_set(err, FERRY_ENOMEM, "out of memory");
    f->r = r;
    f->req.type = FERRY_REQ_CHANGES;
    f->req.tenant = r->cfg->target.tenant;
    f->req.after = r->meta.hwm;
    f->req.limit = r->batch;
    ferry_buf_init(&f->keybuf, 1);
    /* the first batch came with the manifest: the fetch starts with it, and goes on after it */
    f->raw = r->manifest->changes;
    f->nraw = r->manifest->nchanges;
    r->manifest->changes = NULL;
    r->manifest->nchanges = 0;
    rc = fetch_launch(f, err);
    if (rc) {
        free(f->raw);
        free(f);
    } else {
        r->deltas = f;
    }
    return rc;
}

/*
 * The next page, in order: *resp (owned, free()) and *b (owned,
 * ferry_batch_free, before resp). *b NULL with FERRY_OK: the fetch ended
 * without another page (the one before said more rows follow, but gave no
 * key to continue from).
 */
static int fetch_next(struct fetch *f, char **resp, struct ferry_batch **b, struct ferry_error *err)
{
    int rc = FERRY_OK;

    *resp = NULL;
    *b = NULL;
    pthread_mutex_lock(&f->mu);
    while (f->count == 0 && !f->finished)
        pthread_cond_wait(&f->cv, &f->mu);
    if (f->count > 0) {
        struct page *pg = &f->q[f->head];

        *resp = pg->resp;
        *b = pg->batch;
        f->bytes -= pg->len;
        f->head = (f->head + 1) % AHEAD_PAGES;
        f->count--;
        pthread_cond_broadcast(&f->cv);
    } else if (f->rc) {
        rc = f->rc;
        *err = f->err;
    }
    pthread_mutex_unlock(&f->mu);
    return rc;
}

/* Stop the fetch thread (it ends its request in flight first) and drop what it queued. */
static void fetch_stop(struct fetch *f)
{
    if (!f->running)
        return;
    pthread_mutex_lock(&f->mu);
    f->cancel = 1;
    pthread_cond_broadcast(&f->cv);
    pthread_mutex_unlock(&f->mu);
    pthread_join(f->th, NULL);
    f->running = 0;
    while (f->count > 0) {
        struct page *pg = &f->q[f->head];

        ferry_batch_free(pg->batch);
        free(pg->resp);
        f->head = (f->head + 1) % AHEAD_PAGES;
        f->count--;
    }
    free(f->raw); /* cancelled before it was decoded */
    f->raw = NULL;
    pthread_cond_destroy(&f->cv);
    pthread_mutex_destroy(&f->mu);
    ferry_buf_release(&f->keybuf);
}

static void deltas_stop(struct run *r)
{
    if (!r->deltas)
        return;
    fetch_stop(r->deltas);
    free(r->deltas);
    r->deltas = NULL;
}

/*
 * Group commit during the copy: pages commit on the target without waiting
 * for its disk, and every GROUP_PAGES pages or GROUP_SECS seconds, at the
 * end of the table and before stopping, one commit that does wait makes
 * them all durable; only then does the table's progress move in the state.
 * A crash loses at most the pages since that commit, and only their
 * progress: the copy resumes before them and upserts them again. Saves
 * about two disk flushes per page (3 ms each on a virtual disk).
 */
#define GROUP_PAGES 16
#define GROUP_SECS 1.0

/* The largest list of a table's column names the state keeps (1,600 of 63 bytes and a NUL). */
#define COLS_MAX (1600 * 64)

/* ti's column names, each ended by a NUL, into b (what ferry_state_cols_put keeps). */
/*
 * Column c of ti as the state records it: its name, and MASKED_MARK after
 * it when the source masks it ([mask]; the manifest says so when asked). A
 * mask added or removed since the copy then reads as a column added
 * (cols_added): its values on the target are compared with the source's,
 * masked or not, and pulled again or copied where they differ, as for a
 * column the application added. Otherwise rows copied before a mask was
 * added would keep their real values on a staging mirror.
 */
#define MASKED_MARK "\x01"
#define COL_FORM_MAX 260 /* a name (proto.h: at most 256 bytes), the mark, the NUL */

static int col_form(const struct run *r, const struct ferry_table_info *ti, size_t c, char *out,
                    size_t size)
{
    const char *name = ti->cols[c].name;
    size_t tl = strlen(ti->name);
    int masked = 0;

    for (size_t i = 0; i < r->manifest->nmasked && !masked; i++) {
        const char *m = r->manifest->masked[i];

        masked = strncmp(m, ti->name, tl) == 0 && m[tl] == '.' && strcmp(m + tl + 1, name) == 0;
    }
    return snprintf(out, size, "%s%s", name, masked ? MASKED_MARK : "") >= (int)size;
}

static int cols_list(const struct run *r, const struct ferry_table_info *ti, struct ferry_buf *b)
{
    char form[COL_FORM_MAX];
    int rc = FERRY_OK;

    for (size_t c = 0; c < ti->ncols && !rc; c++)
        rc = col_form(r, ti, c, form, sizeof(form)) ? FERRY_ETOOBIG
                                                    : ferry_buf_add(b, form, strlen(form) + 1);
    return rc;
}

/* Record the columns ti's copy was made with (the manifest's). */
static int cols_record(struct run *r, const struct ferry_table_info *ti, struct ferry_error *err)
{
    struct ferry_buf b;
    int rc;

    ferry_buf_init(&b, COLS_MAX);
    rc = cols_list(r, ti, &b);
    if (rc)
        rc = ferry_error_set(err, rc, "table %s has too many columns for the state", ti->name);
    else
        rc = ferry_state_cols_put(r->state, ti->name, b.data, b.len, err);
    ferry_buf_release(&b);
    return rc;
}

/*
 * Whether ti (the manifest's) has columns its copy did not have (or had
 * before another that now comes first: dropped and added again): their
 * names into added ("a, b", cut to size). The application added them
 * since, and ALTER TABLE ... ADD COLUMN fills the rows already there
 * (with the column's DEFAULT) without a change a delta would carry: the
 * table is copied again. Otherwise, with record, a list that differs
 * (none recorded, by an older ferry-dst; columns dropped) is replaced by
 * the manifest's. -1: an error.
 */
static int cols_added(struct run *r, const struct ferry_table_info *ti, int record, char *added,
                      size_t size, const char **names, struct ferry_error *err)
{
    char *old = malloc(COLS_MAX);
    struct ferry_buf now;
    size_t len = 0, used = 0;
    int n = 0;
    int rc;

    added[0] = '\0';
    ferry_buf_init(&now, COLS_MAX);
    rc = old ? cols_list(r, ti, &now) : FERRY_ENOMEM;
    if (rc) {
        rc = ferry_error_set(err, rc, "cannot read the columns of %s in the state", ti->name);
        goto out;
    }
    rc = ferry_state_cols_get(r->state, ti->name, old, COLS_MAX, &len, err);
    if (rc == FERRY_ENOTFOUND) {
        rc = FERRY_OK;
        len = 0;
    }
    for (size_t c = 0, last = 0; c < ti->ncols && !rc && len; c++) {
        const char *name = ti->cols[c].name;
        char form[COL_FORM_MAX];
        size_t off = 0;

        col_form(r, ti, c, form, sizeof(form));
        while (off < len && strcmp(old + off, form) != 0)
            off += strnlen(old + off, len - off) + 1;
        /*
         * Known, in the copy's order: not added. One that comes before a
         * column that followed it was dropped and added again (ADD COLUMN
         * puts it last), its values filled anew: as added.
         */
        if (off < len && off >= last) {
            last = off;
            continue;
        }
        if (names)
            names[n] = name;
        n++;
        used += (size_t)snprintf(added + used, used < size ? size - used : 0, "%s%s",
                                 added[0] ? ", " : "", name);
        if (used >= size)
            used = size - 1;
    }
    if (!rc && record && !n && (now.len != len || memcmp(now.data, old, len) != 0))
        rc = ferry_state_cols_put(r->state, ti->name, now.data, now.len, err);
out:
    ferry_buf_release(&now);
    free(old);
    return rc ? -1 : n;
}

static int copy_table(struct run *r, const struct ferry_table_info *ti, struct ferry_error *err)
{
    struct ferry_copy_progress p;
    struct ferry_value after[FERRY_MAX_KEY_COLS];
    struct fetch f;
    char *resp = NULL;
    size_t nafter = 0;
    int pages = 0; /* committed since the last durable commit */
    double durable_at = now_s();
    int rc;

    memset(&f, 0, sizeof(f));
    rc = ferry_state_copy_get(r->state, ti->name, &p, err);
    if (rc == FERRY_ENOTFOUND) {
        memset(&p, 0, sizeof(p));
        snprintf(p.table, sizeof(p.table), "%s", ti->name);
        rc = FERRY_OK;
    }
    if (rc || p.done)
        return rc;
    /*
     * The columns the copy is made with (copy_again). Resumed after the
     * source gained columns, the rows copied before lack their values: it
     * starts over.
     */
    if (p.keylen) {
        char added[512];
        int n = cols_added(r, ti, 1, added, sizeof(added), NULL, err);

        if (n < 0)
            return err->code;
        if (n) {
            if (!r->opts->quiet)
                log_info("copy %s: starting over, column%s %s added on the source since it began",
                         ti->name, strchr(added, ',') ? "s" : "", added);
            p.keylen = 0;
            p.rows = 0;
        }
    }
    if (!p.keylen) {
        rc = cols_record(r, ti, err);
        if (rc)
            return rc;
    }
    if (p.rows && !r->opts->quiet)
        log_info("copy %s: resuming after %" PRId64 " rows", ti->name, p.rows);
    ferry_progress_table(r->prog, ti->name, p.rows, ti->rows, 0);
    if (p.keylen &&
        ferry_key_unpack((const char *)p.key, p.keylen, after, FERRY_MAX_KEY_COLS, &nafter))
        return ferry_error_set(err, FERRY_EDATA,
                               "copy progress of %s in the state is corrupt; remove the state "
                               "directory and copy again",
                               ti->name);
    rc = fetch_start(&f, r, ti, after, nafter, err);
    while (!rc) {
        struct ferry_batch *b = NULL;
        struct ferry_apply_counts c = {0, 0};
        struct ferry_buf key;
        int durable;

        rc = fetch_next(&f, &resp, &b, err);
        if (!rc && !b)
            rc = ferry_error_set(err, FERRY_EPROTO,
                                 "snapshot of %s: the source said more rows follow but sent no "
                                 "key to continue from",
                                 ti->name);
        if (rc)
            break;
        durable = !b->more || pages + 1 >= GROUP_PAGES || now_s() - durable_at >= GROUP_SECS ||
                  (r->opts->stop && *r->opts->stop);
        rc = ferry_applier_durable(r->applier, durable, err);
        if (!rc)
            rc = ferry_applier_apply(r->applier, b, &c, err);
        ferry_buf_init(&key, sizeof(p.key));
        if (!rc && b->last) {
            if (ferry_key_pack(&key, b->last, b->nlast))
                rc = ferry_error_set(err, FERRY_ETOOBIG,
                                     "a key of %s is over %zu bytes; ferry cannot resume within "
                                     "this table",
                                     ti->name, sizeof(p.key));
            else {
                memcpy(p.key, key.data, key.len);
                p.keylen = key.len;
            }
        }
        ferry_buf_release(&key);
        if (!rc) {
            p.rows += c.upserted;
            p.done = !b->more;
            pages++;
            if (durable) {
                rc = ferry_state_copy_put(r->state, &p, err);
                pages = 0;
                durable_at = now_s();
            }
        }
        ferry_batch_free(b);
        free(resp);
        resp = NULL;
        if (rc)
            break;
        r->counts.upserted += c.upserted;
        r->copied += c.upserted;
        ferry_progress_table(r->prog, ti->name, p.rows, ti->rows, p.done);
        if (p.done)
            break;
        if (r->opts->stop && *r->opts->stop) {
            rc = ferry_error_set(err, FERRY_EINTR,
                                 "stopped during the copy of %s; sync again to resume", ti->name);
            break;
        }
    }
    fetch_stop(&f);
    if (rc) {
        struct ferry_error ignored;

        /* whatever follows commits durably again (a stop or an error ended the group) */
        ferry_applier_durable(r->applier, 1, &ignored);
    }
    return rc;
}

/*
 * After the initial copy: the target's planner statistics for the copied
 * tables (ferry_applier_analyze). The copy stands without them, so a
 * failure is a warning.
 */
static void analyze_target(struct run *r, int quiet)
{
    struct ferry_error err;
    double t0 = now_s();
    size_t n = 0;

    if (ferry_applier_analyze(r->applier, &n, &err))
        log_warn("target: no planner statistics after the copy (%s); run ANALYZE on the "
                 "copied tables before the application uses them",
                 err.msg);
    else if (n && !quiet)
        log_info("target: ANALYZE of the %zu copied tables (%.2f s)", n, now_s() - t0);
}

/*
 * Whether the state records the copy of table as done. While streaming, a
 * table of the manifest whose copy is not done joined the scope after the
 * copy (the application created a table referencing it, and ferry-src
 * install ran).
 * A state that cannot be read says no: copy_table() then reads it again and
 * reports why.
 */
static int copy_done(struct run *r, const char *table)
{
    struct ferry_copy_progress p;
    struct ferry_error e;

    return ferry_state_copy_get(r->state, table, &p, &e) == FERRY_OK && p.done;
}

/*
 * What the state says of table's earlier copies, by the columns it records
 * for them: COPY_NONE (none made), COPY_MADE (one made, with its columns),
 * COPY_LEFT (made, then forgotten when the table left the scope: no
 * columns, forget_left).
 */
enum { COPY_NONE, COPY_MADE, COPY_LEFT };

static int copy_record(struct run *r, const char *table)
{
    size_t len = 0;
    struct ferry_error e;

    if (ferry_state_cols_get(r->state, table, NULL, 0, &len, &e) != FERRY_OK)
        return COPY_NONE;
    return len > 0 ? COPY_MADE : COPY_LEFT;
}

/* forget_left's walk: the tables copied (done) that the manifest does not name. */
struct left {
    const struct ferry_manifest *m;
    char (*names)[256];
    size_t n, cap;
};

static int note_left(const struct ferry_copy_progress *p, void *arg)
{
    struct left *l = arg;

    if (!p->done)
        return 0;
    for (size_t i = 0; i < l->m->ntables; i++)
        if (strcmp(l->m->tables[i].name, p->table) == 0)
            return 0;
    if (l->n == l->cap) {
        size_t cap = l->cap ? 2 * l->cap : 8;
        char(*names)[256] = realloc(l->names, cap * sizeof(*names));

        if (!names)
            return FERRY_ENOMEM;
        l->names = names;
        l->cap = cap;
    }
    snprintf(l->names[l->n++], sizeof(l->names[0]), "%s", p->table);
    return 0;
}

/*
 * While streaming: a table copied before that the manifest no longer names
 * left the scope (its foreign key dropped, say, or excluded), and its
 * changes are not served meanwhile. Its copy is forgotten, so that if it
 * comes back copy_joined compares it on both sides (added_same, every
 * column) and pulls again what differs, or copies it again, instead of
 * going on from the mark past what it missed.
 */
static int forget_left(struct run *r, struct ferry_error *err)
{
    struct left l;
    int rc;

    memset(&l, 0, sizeof(l));
    l.m = r->manifest;
    rc = ferry_state_copy_each(r->state, note_left, &l, err);
    if (rc == FERRY_ENOMEM)
        rc = ferry_error_set(err, rc, "out of memory");
    for (size_t i = 0; i < l.n && !rc; i++) {
        struct ferry_copy_progress p;

        memset(&p, 0, sizeof(p));
        snprintf(p.table, sizeof(p.table), "%s", l.names[i]);
        rc = ferry_state_copy_put(r->state, &p, err);
        if (!rc)
            rc = ferry_state_cols_put(r->state, l.names[i], "", 0, err);
        if (!rc)
            log_warn("table %s left the scope on the source: its changes are not served; if it "
                     "comes back, its rows are compared on both sides and brought in step (not "
                     "its children's whose parent went meanwhile: README, Limits)",
                     l.names[i]);
    }
    free(l.names);
    return rc;
}

/*
 * Tables of the manifest whose copy is done but which gained columns since
 * (cols_added): their copy starts over, and copy_joined makes it after
 * this run's deltas. dry: only say so.
 */
static int copy_again(struct run *r, int dry, struct ferry_error *err)
{
    int rc = FERRY_OK;

    for (size_t i = 0; i < r->manifest->ntables && !rc; i++) {
        const struct ferry_table_info *ti = &r->manifest->tables[i];
        struct ferry_copy_progress p;
        char added[512];
        int n;

        if (!copy_done(r, ti->name))
            continue;
        n = cols_added(r, ti, !dry, added, sizeof(added), NULL, err);
        if (n < 0)
            return err->code;
        if (!n)
            continue;
        if (dry) {
            printf("  %-24s %10" PRId64 " rows  would be copied again unless the target holds "
                   "the same values: column%s %s added, masked or unmasked on the source since "
                   "its copy\n",
                   ti->name, ti->rows, strchr(added, ',') ? "s" : "", added);
            continue;
        }
        if (!r->opts->quiet)
            log_info("copy %s again: column%s %s added on the source, or masked or unmasked "
                     "there, since its copy (the rows there before got their values without a "
                     "change to carry them)",
                     ti->name, strchr(added, ',') ? "s" : "", added);
        memset(&p, 0, sizeof(p));
        snprintf(p.table, sizeof(p.table), "%s", ti->name);
        rc = ferry_state_copy_put(r->state, &p, err);
    }
    return rc;
}

/*
 * Before table ti is copied again for the columns added on the source since
 * its copy (copy_again): whether the target holds already what that copy
 * would bring. The application's migration adds the columns on both sides,
 * the same ALTER TABLE ... ADD COLUMN (and DEFAULT) fills the rows there
 * the same way, and the deltas brought the values written since: verify's
 * check of those columns and the key alone (ferry_verify_columns) finds
 * them equal, at the cost of one hashed scan on each side instead of the
 * copy. 1: nothing to copy (the copy is recorded done), 0: copy; a check
 * that cannot be made (a source from before it) copies. -1: a state error.
 */
static int added_same(struct run *r, const struct ferry_table_info *ti, int back,
                      struct ferry_error *err)
{
    struct ferry_copy_progress p;
    struct ferry_error e;
    const char **names;
    char added[512];
    double t0 = now_s();
    int64_t rows = 0, repaired = 0;
    int same = 0;
    int n;

    /* a copy under way goes on */
    if (ferry_state_copy_get(r->state, ti->name, &p, &e) != FERRY_OK || p.keylen || p.done)
        return 0;
    names = calloc(ti->ncols ? ti->ncols : 1, sizeof(*names));
    if (!names) {
        ferry_error_set(err, FERRY_ENOMEM, "out of memory");
        return -1;
    }
    if (back) {
        /* back in the scope (forget_left): every column, deletes missed included */
        for (size_t c = 0; c < ti->ncols; c++)
            names[c] = ti->cols[c].name;
        n = (int)ti->ncols;
        snprintf(added, sizeof(added), "of all");
    } else {
        n = cols_added(r, ti, 0, added, sizeof(added), names, err);
    }
    if (n > 0 && ferry_verify_columns(r->cfg, ti->name, names, (size_t)n, &same, &rows, &repaired,
                                      &e) != FERRY_OK) {
        if (!r->opts->quiet)
            log_info("copy %s again: the column%s %s could not be compared on both sides (%s)",
                     ti->name, n > 1 ? "s" : "", added, e.msg);
        same = 0;
    } else if (n > 0 && !same && !r->opts->quiet) {
        log_info("copy %s again: the column%s %s differ%s between source and target (%.2f s)",
                 ti->name, n > 1 ? "s" : "", added, n > 1 ? "" : "s", now_s() - t0);
    }
    free(names);
    if (n <= 0 || !same)
        return n < 0 ? -1 : 0;
    if (cols_record(r, ti, err))
        return -1;
    p.done = 1;
    p.rows = rows;
    if (ferry_state_copy_put(r->state, &p, err))
        return -1;
    if (!r->opts->quiet && repaired)
        log_info("copy %s: not needed, the column%s %s of its %" PRId64
                 " rows hold the same values on both sides once %" PRId64
                 " rows that differed were pulled again (%.2f s)",
                 ti->name, n > 1 ? "s" : "", added, rows, repaired, now_s() - t0);
    else if (!r->opts->quiet)
        log_info("copy %s: not needed, the column%s %s of its %" PRId64
                 " rows hold the same values on both sides (%.2f s)",
                 ti->name, n > 1 ? "s" : "", added, rows, now_s() - t0);
    return 1;
}

/*
 * While streaming, copy the tables that joined the scope, after this run's
 * deltas: their rows' parents are then on the target up to the manifest's
 * head. Whatever changes in them meanwhile is logged (install put their
 * triggers in before their rows could be served) and comes with later
 * deltas, as current images over the copied ones.
 */
static int copy_joined(struct run *r, struct ferry_error *err)
{
    int rc = FERRY_OK;

    if (!r->uncopied)
        return FERRY_OK;
    deltas_stop(r); /* the client is this thread's again */
    for (size_t i = 0; i < r->manifest->ntables && !rc; i++) {
        const struct ferry_table_info *ti = &r->manifest->tables[i];
        int rec, again, back;

        if (copy_done(r, ti->name))
            continue;
        rec = copy_record(r, ti->name);
        again = rec == COPY_MADE;
        back = rec == COPY_LEFT;
        if (again || back) {
            int same = added_same(r, ti, back, err);

            if (same < 0)
                return err->code;
            if (same)
                continue;
        }
        if (back)
            log_warn("copy %s: again, back in the scope; rows deleted on the source while it "
                     "was out stay on the target until ferry-dst verify --repair",
                     ti->name);
        else if (!r->opts->quiet)
            log_info("copy %s: %s", ti->name,
                     again ? "again, for the columns added on the source"
                           : "a table new to the scope");
        rc = copy_table(r, ti, err);
    }
    return rc;
}

static int apply_deltas(struct run *r, struct ferry_error *err)
{
    int64_t before = r->meta.hwm;
    int rc = FERRY_OK;

    if (r->idle)
        goto out;
    /* each batch's mark is written after its commit: that commit must be durable */
    rc = ferry_applier_durable(r->applier, 1, err);
    if (!rc && !r->deltas)
        rc = deltas_start(r, err);
    while (!rc) {
        struct ferry_batch *b = NULL;
        char *resp = NULL;
        int more;

        rc = fetch_next(r->deltas, &resp, &b, err);
        if (rc || !b)
            break; /* !b: the batch before said more but did not move the head */
        if (b->head < r->meta.hwm) {
            rc = ferry_error_set(err, FERRY_EPROTO,
                                 "source sent a change batch ending at %" PRId64
                                 ", behind the mark %" PRId64 "; was the source's change log "
                                 "reset? copy again with a fresh state",
                                 b->head, r->meta.hwm);
        }
        if (!rc)
            rc = ferry_applier_apply(r->applier, b, &r->counts, err);
        more = b->more;
        if (!rc && b->head != r->meta.hwm) {
            r->meta.hwm = b->head;
            /*
             * The run's last batch: its mark is written with the run's end
             * (ferry_state_run_end), one LMDB commit fewer, unless the foreign key
             * check of a copy comes in between.
             */
            if (more || r->copied > 0)
                rc = ferry_state_set_hwm(r->state, b->head, 0, err);
        }
        ferry_batch_free(b);
        free(resp);
        if (rc || !more)
            break;
        if (r->opts->stop && *r->opts->stop)
            rc = ferry_error_set(err, FERRY_EINTR,
                                 "stopped between change batches; sync again to go on");
    }
    deltas_stop(r);
    if (rc)
        return rc;
out:
    if (!r->opts->quiet && r->meta.hwm != before)
        log_info("deltas: mark %" PRId64 " -> %" PRId64, before, r->meta.hwm);
    ferry_progress_deltas(r->prog, before, r->meta.hwm, r->counts.upserted - r->copied,
                          r->counts.deleted);
    return FERRY_OK;
}

static int dry_run(struct run *r, struct ferry_error *err)
{
    int64_t total = 0;
    int rc;

    rc = ferry_applier_open(r->cfg->target.database, r->manifest, r->cfg->target.tenant, 1, NULL,
                            &r->applier, err);
    if (rc)
        return rc;
    printf("dry run: tenant %s from %s (root %s, source head %" PRId64 ")\n", r->cfg->target.tenant,
           r->cfg->source.url, r->manifest->root, r->manifest->head);
    if (r->meta.phase == FERRY_PHASE_STREAMING) {
        printf("copy done; %" PRId64 " changes pending after mark %" PRId64 "\n",
               r->manifest->pending, r->meta.hwm);
        for (size_t i = 0; i < r->manifest->ntables; i++) {
            const struct ferry_table_info *ti = &r->manifest->tables[i];

            if (copy_done(r, ti->name))
                continue;
            if (copy_record(r, ti->name) == COPY_MADE)
                printf("  %-24s %10" PRId64 " rows  would be copied again unless the target "
                       "holds the same values: columns were added, masked or unmasked on the "
                       "source since its copy\n",
                       ti->name, ti->rows);
            else
                printf("  %-24s %10" PRId64 " rows  new to the scope: would be copied %s\n",
                       ti->name, ti->rows,
                       ferry_applier_has_table(r->applier, ti->name) ? "(table exists)"
                                                                     : "(table would be created)");
        }
        return copy_again(r, 1, err);
    }
    for (size_t i = 0; i < r->manifest->ntables; i++) {
        const struct ferry_table_info *ti = &r->manifest->tables[i];

        printf("  %-24s %10" PRId64 " rows  %s\n", ti->name, ti->rows,
               ferry_applier_has_table(r->applier, ti->name) ? "(table exists)"
                                                             : "(table would be created)");
        total += ti->rows > 0 ? ti->rows : 0;
    }
    printf("would copy %" PRId64 " rows in %zu tables; nothing was changed\n", total,
           r->manifest->ntables);
    return FERRY_OK;
}

static void *close_main(void *arg)
{
    ferry_applier_close(arg);
    return NULL;
}

/*
 * An idle run (nothing pending) applies nothing, so the applier's checks
 * do not run; but a table dropped from the target since its copy should
 * not go unnoticed until the tenant next writes: the copied tables must
 * still be there (as ferry_applier_open checks).
 */
static int copied_present(struct run *r, struct ferry_db *db, const unsigned char *copied,
                          struct ferry_error *err)
{
    for (size_t i = 0; i < r->manifest->ntables; i++) {
        const char *name = r->manifest->tables[i].name;
        int exists = 0;
        int rc;

        if (!copied || !copied[i])
            continue;
        rc = ferry_db_table_exists(db, name, &exists, err);
        if (rc)
            return rc;
        if (!exists)
            return ferry_applier_missing(name, err);
    }
    return FERRY_OK;
}

/*
 * What a delta run does while its manifest is on the way, on a thread of
 * its own (the state and the target are the run's thread's again after
 * the join): record the run's start, and open the target database (unless
 * lazy_target), not created here (an idle run must not create it; a run
 * with changes opens it the usual way when this could not).
 */
struct prep {
    pthread_t th;
    struct run *r;
    struct ferry_run *run;
    int rc;
    struct ferry_error err;
    int open_target;
    struct ferry_db *db; /* NULL: not opened */
};

static void *prep_main(void *arg)
{
    struct prep *p = arg;
    struct ferry_error e;

    p->rc = ferry_state_run_begin(p->r->state, p->run, &p->err);
    if (!p->rc && p->open_target && ferry_db_open(p->r->cfg->target.database, 0, &p->db, &e))
        p->db = NULL;
    return NULL;
}

static int open_state(struct run *r, struct ferry_error *err)
{
    int rc;

    rc = ferry_state_open(r->cfg->target.state,
                          r->opts->dry_run ? FERRY_STATE_READONLY : FERRY_STATE_CREATE, &r->state,
                          err);
    if (rc == FERRY_ENOTFOUND && r->opts->dry_run) {
        ferry_error_clear(err);
        memset(&r->meta, 0, sizeof(r->meta));
        r->meta.hwm = -1;
        return FERRY_OK;
    }
    if (rc)
        return rc;
    rc = ferry_state_meta_get(r->state, &r->meta, err);
    if (rc == FERRY_ENOTFOUND) {
        ferry_error_clear(err);
        memset(&r->meta, 0, sizeof(r->meta));
        r->meta.phase = FERRY_PHASE_NEW;
        r->meta.hwm = -1;
        return FERRY_OK;
    }
    if (rc)
        return rc;
    if (strcmp(r->meta.tenant, r->cfg->target.tenant) != 0)
        return ferry_error_set(err, FERRY_ECONFIG,
                               "state %s belongs to tenant %s, not %s; use another [target] "
                               "state directory",
                               r->cfg->target.state, r->meta.tenant, r->cfg->target.tenant);
    if (!r->opts->dry_run && r->opts->cutover != 2)
        return ferry_state_live(r->state, r->opts->kind ? r->opts->kind : "a sync", err);
    return FERRY_OK;
}

int ferry_sync(const struct ferry_config *cfg, const struct ferry_sync_opts *opts,
               struct ferry_error *err)
{
    struct run r;
    struct ferry_run run;
    double t0 = now_s();
    struct ferry_state_reached final;
    struct prep prep;
    pthread_t closer;
    unsigned char *copied = NULL; /* streaming: the manifest's tables copied here */
    int closing = 0, finished = 0, prepping = 0;
    int64_t seen;
    int rc;

    memset(&r, 0, sizeof(r));
    memset(&run, 0, sizeof(run));
    memset(&prep, 0, sizeof(prep));
    r.cfg = cfg;
    r.opts = opts;
    r.max_body = ferry_config_max_message(cfg);
    r.batch = cfg->source.batch_rows > 0 ? cfg->source.batch_rows : 5000;
    rc = open_state(&r, err);
    if (rc)
        goto out;
    rc = ferry_client_new(cfg, &r.client, err);
    if (rc)
        goto out;
    snprintf(run.kind, sizeof(run.kind), "%s", opts->kind ? opts->kind : "sync");
    run.hwm_before = r.meta.hwm;
    /*
     * A SQLite target gone since the copy (moved, deleted): refused before
     * anything opens it (which would make it anew, empty), idle or not.
     */
    if (!opts->dry_run && r.meta.phase == FERRY_PHASE_STREAMING &&
        ferry_db_missing(cfg->target.database)) {
        rc = ferry_error_set(err, FERRY_ESCHEMA,
                             "target database %s is missing, but the state records its copy: "
                             "point [target] database back at the copy, or copy again with a "
                             "fresh [target] state directory",
                             cfg->target.database);
        goto out;
    }
    if (!opts->dry_run && r.meta.phase == FERRY_PHASE_STREAMING) {
        prep.r = &r;
        prep.run = &run;
        prep.open_target = !opts->lazy_target;
        prepping = pthread_create(&prep.th, NULL, prep_main, &prep) == 0;
    }
    seen = (int64_t)time(NULL);
    rc = fetch_manifest(&r, r.meta.phase == FERRY_PHASE_STREAMING ? r.meta.hwm : -1,
                        opts->dry_run || r.meta.phase != FERRY_PHASE_STREAMING, err);
    /*
     * A transaction in flight on the source holds its log back: what this
     * run applies is complete as of then, not now (lag, status).
     */
    if (!rc && r.manifest->as_of > 0 && r.manifest->as_of < seen)
        seen = r.manifest->as_of;
    if (prepping) {
        pthread_join(prep.th, NULL);
        if (prep.rc) {
            run.id = 0; /* not recorded */
            /* the manifest's error first, as when the run started after it */
            if (!rc) {
                rc = prep.rc;
                *err = prep.err;
            }
        }
    }
    /* From here on a failure ends the run (recorded as failed once it has started). */
    if (rc)
        goto end;
    if (opts->dry_run) {
        rc = dry_run(&r, err);
        goto out;
    }
    if (r.meta.phase == FERRY_PHASE_STREAMING) {
        /*
         * Nothing of the tenant after the mark up to the manifest's head:
         * no change request, and the target database stays closed.
         */
        rc = forget_left(&r, err);
        if (!rc)
            rc = copy_again(&r, 0, err);
        if (rc)
            goto end;
        /* the tables copied before must be there still (the target was not replaced) */
        copied = calloc(r.manifest->ntables ? r.manifest->ntables : 1, 1);
        if (!copied) {
            rc = ferry_error_set(err, FERRY_ENOMEM, "out of memory");
            goto end;
        }
        for (size_t i = 0; i < r.manifest->ntables; i++) {
            copied[i] = (unsigned char)copy_done(&r, r.manifest->tables[i].name);
            r.uncopied += !copied[i];
        }
        r.idle = r.manifest->pending == 0 && !r.uncopied;
        if (!r.idle)
            rc = deltas_start(&r, err);
        if (rc)
            goto end;
    }
    if (!r.idle && prep.db)
        rc = ferry_applier_open_db(prep.db, cfg->target.database, r.manifest, cfg->target.tenant,
                                   copied, &r.applier, err);
    else if (!r.idle)
        rc = ferry_applier_open(cfg->target.database, r.manifest, cfg->target.tenant, 0, copied,
                                &r.applier, err);
    else if (prep.db)
        rc = copied_present(&r, prep.db, copied, err); /* idle: all it is needed for */
    if (r.idle)
        ferry_db_close(prep.db);
    prep.db = NULL;
    if (!rc && !prepping && ferry_state_run_begin(r.state, &run, err)) {
        rc = err->code;
        run.id = 0; /* not recorded */
    }
    if (rc)
        goto end;
    r.prog = ferry_progress_open(cfg->target.state, run.kind, run.id, cfg->target.tenant,
                                 r.meta.hwm, opts->quiet);
    if (r.meta.phase == FERRY_PHASE_NEW) {
        int holds = 0;

        /*
         * A copy over the tenant's rows of an earlier one (its state lost or
         * made anew): upserts leave the rows deleted on the source since.
         */
        if (ferry_applier_holds_tenant(r.applier, &holds, err) == FERRY_OK && holds)
            log_warn("target already holds tenant %s (copied before, with a state since lost?): "
                     "the copy leaves there what the source deleted meanwhile; run ferry-dst "
                     "verify --repair --config %s after it",
                     cfg->target.tenant, cfg->path);
        ferry_error_clear(err);
        /* The head comes first: whatever is written during the copy is in the deltas. */
        snprintf(r.meta.tenant, sizeof(r.meta.tenant), "%s", cfg->target.tenant);
        snprintf(r.meta.source, sizeof(r.meta.source), "%s", cfg->source.url);
        r.meta.start_head = r.manifest->head;
        r.meta.hwm = r.manifest->head;
        r.meta.phase = FERRY_PHASE_COPYING;
        r.meta.created = (int64_t)time(NULL);
        rc = ferry_state_meta_put(r.state, &r.meta, err);
        if (rc)
            goto end;
        if (!opts->quiet)
            log_info("initial copy of tenant %s, change log head %" PRId64, cfg->target.tenant,
                     r.meta.start_head);
    }
    if (r.meta.phase == FERRY_PHASE_COPYING) {
        for (size_t i = 0; i < r.manifest->ntables && !rc; i++)
            rc = copy_table(&r, &r.manifest->tables[i], err);
        if (rc)
            goto end;
        /* before the phase moves: a copy stopped in between analyzes when it ends */
        analyze_target(&r, opts->quiet);
        r.meta.phase = FERRY_PHASE_STREAMING;
        rc = ferry_state_meta_put(r.state, &r.meta, err);
        if (rc)
            goto end;
    }
    rc = apply_deltas(&r, err);
    if (!rc)
        rc = copy_joined(&r, err);
    if (rc)
        goto end;
    /*
     * Foreign keys are checked once, after the copy and its first deltas:
     * the check scans whole tables, too much for every small delta run.
     */
    if (r.copied > 0) {
        int64_t bad = 0;

        rc = ferry_applier_fk_check(r.applier, &bad, err);
        if (!rc && bad)
            log_warn("%" PRId64 " target rows reference a parent that is not there (foreign "
                     "key check); run sync again, and verify if it persists",
                     bad);
    }
    /*
     * The target's writes are durable: its database closes (a checkpoint,
     * a disk flush) on a thread of its own while the state records the end.
     */
    if (!rc && r.applier && pthread_create(&closer, NULL, close_main, r.applier) == 0) {
        r.applier = NULL;
        closing = 1;
    }
    if (!rc) {
        /* everything the source had committed when the manifest was read is applied now */
        final.hwm = r.meta.hwm;
        final.last_sync = (int64_t)time(NULL);
        final.source_head = r.manifest->head;
        final.source_seen = seen;
        finished = 1;
    }
    if (!rc && opts->report) {
        opts->report->head = r.manifest->head;
        opts->report->pending = r.manifest->pending;
        opts->report->seen = seen;
        opts->report->hwm = r.meta.hwm;
        opts->report->copied = r.copied;
        opts->report->upserted = r.counts.upserted - r.copied;
        opts->report->deleted = r.counts.deleted;
    }
end:
    deltas_stop(&r); /* the client is this thread's again */
    release_snapshot(&r, rc);
    run.ended = (int64_t)time(NULL);
    run.upserted = r.counts.upserted;
    run.deleted = r.counts.deleted;
    run.hwm_after = r.meta.hwm;
    run.code = rc;
    snprintf(run.msg, sizeof(run.msg), "%s", rc ? err->msg : "");
    if (run.id && finished) {
        /* success is recorded with what it reached, or the run fails */
        rc = ferry_state_run_end(r.state, &run, &final, err);
    } else if (run.id) {
        struct ferry_error e2;

        if (ferry_state_run_put(r.state, &run, &e2))
            log_warn("cannot record the run: %s", e2.msg);
    }
    /* a run recorded in the state that failed before its report began: in the run log too */
    if (!r.prog && run.id)
        r.prog = ferry_progress_open(cfg->target.state, run.kind, run.id, cfg->target.tenant,
                                     run.hwm_before, 1);
    ferry_progress_end(r.prog, rc, rc ? err->msg : "", r.meta.hwm, r.copied,
                       r.counts.upserted - r.copied, r.counts.deleted);
    if (!rc && !opts->quiet)
        log_info("sync done in %.2f s: %" PRId64 " rows copied, %" PRId64 " upserted and %" PRId64
                 " deleted by deltas, mark %" PRId64,
                 now_s() - t0, r.copied, r.counts.upserted - r.copied, r.counts.deleted,
                 r.meta.hwm);
out:
    free(copied);
    deltas_stop(&r);
    ferry_db_close(prep.db);
    /* while the target closes on its thread (the state's lock is held until it has) */
    ferry_client_free(r.client);
    ferry_progress_close(r.prog);
    ferry_manifest_free(r.manifest);
    if (closing)
        pthread_join(closer, NULL);
    ferry_applier_close(r.applier);
    ferry_state_close(r.state);
    return rc;
}

static const char *phase_name(int phase)
{
    switch (phase) {
    case FERRY_PHASE_COPYING:
        return "copying";
    case FERRY_PHASE_STREAMING:
        return "streaming";
    default:
        return "new";
    }
}

struct status_walk {
    int json;
    int n;
};

/* A mark as status prints it: "none" for -1 (no mark yet). */
static void mark_text(char *buf, size_t size, int64_t mark)
{
    if (mark < 0)
        snprintf(buf, size, "none");
    else
        snprintf(buf, size, "%" PRId64, mark);
}

static int print_progress(const struct ferry_copy_progress *p, void *arg)
{
    struct status_walk *w = arg;

    if (w->json) {
        printf("%s{\"table\":", w->n ? "," : "");
        ferry_json_str(stdout, p->table);
        printf(",\"rows\":%" PRId64 ",\"done\":%s}", p->rows, p->done ? "true" : "false");
    } else {
        printf("  %-24s %10" PRId64 " rows  %s\n", p->table, p->rows,
               p->done ? "copied" : "copying");
    }
    w->n++;
    return 0;
}

int ferry_status(const struct ferry_config *cfg, int json, struct ferry_error *err)
{
    struct ferry_state *st = NULL;
    struct ferry_state_meta m;
    struct ferry_run runs[10];
    struct status_walk w = {json, 0};
    struct ferry_cutover co;
    size_t nruns = 0;
    int64_t lag;
    int have_co = 0;
    int rc;

    memset(&co, 0, sizeof(co));
    rc = ferry_state_open(cfg->target.state, FERRY_STATE_READONLY, &st, err);
    /* no state yet: a target never synced, in phase new (not an error) */
    if (rc == FERRY_ENOTFOUND) {
        ferry_error_clear(err);
        st = NULL;
        rc = FERRY_OK;
    }
    if (rc)
        return rc;
    rc = st ? ferry_state_meta_get(st, &m, err) : FERRY_ENOTFOUND;
    if (rc == FERRY_ENOTFOUND) {
        memset(&m, 0, sizeof(m));
        snprintf(m.tenant, sizeof(m.tenant), "%s", cfg->target.tenant);
        m.hwm = -1;
        rc = FERRY_OK;
    }
    if (!rc && st)
        rc = ferry_state_runs_last(st, runs, 10, &nruns, err);
    if (!rc && st) {
        rc = ferry_state_cutover_get(st, &co, err);
        have_co = rc == FERRY_OK;
        if (rc == FERRY_ENOTFOUND)
            rc = FERRY_OK;
    }
    if (rc)
        goto out;
    /* Lag as the state knows it: how old the newest source head fully applied is. */
    lag = m.source_seen ? (int64_t)time(NULL) - m.source_seen : -1;
    if (json) {
        printf("{\"tenant\":");
        ferry_json_str(stdout, m.tenant);
        printf(",\"source\":");
        ferry_json_str(stdout, m.source);
        printf(",\"phase\":\"%s\",\"start_head\":%" PRId64 ",\"hwm\":%" PRId64
               ",\"last_sync\":%" PRId64 ",\"source_head\":%" PRId64 ",\"source_seen\":%" PRId64
               ",\"lag_seconds\":%" PRId64,
               phase_name(m.phase), m.start_head, m.hwm, m.last_sync, m.source_head, m.source_seen,
               lag);
        if (have_co)
            printf(",\"cutover\":{\"at\":%" PRId64 ",\"done\":%s,\"head\":%" PRId64
                   ",\"hwm\":%" PRId64 ",\"tables\":%zu}",
                   co.at, co.done ? "true" : "false", co.head, co.hwm, co.ntables);
        else
            printf(",\"cutover\":null");
        printf(",\"tables\":[");
    } else {
        char head[24], mark[24];

        mark_text(head, sizeof(head), m.start_head);
        mark_text(mark, sizeof(mark), m.hwm);
        printf("tenant %s from %s\nphase %s, start head %s, mark %s\n", m.tenant,
               m.source[0] ? m.source : "(never synced)", phase_name(m.phase), head, mark);
        if (m.last_sync) {
            time_t t = (time_t)m.last_sync;
            char when[64];
            struct tm tm;

            gmtime_r(&t, &tm);
            strftime(when, sizeof(when), "%Y-%m-%d %H:%M:%S UTC", &tm);
            printf("last successful sync %s\n", when);
        }
        if (lag >= 0)
            printf("lag: %" PRId64 " s (everything the source had logged up to head %" PRId64
                   " then is applied; run sync or follow to catch up)\n",
                   lag, m.source_head);
        if (have_co)
            printf("cutover: %s at mark %" PRId64 " (source head %" PRId64 "), %zu tables "
                   "verified\n",
                   co.done ? "done" : "recorded, hooks not all run", co.hwm, co.head, co.ntables);
        printf("tables:\n");
    }
    rc = st ? ferry_state_copy_each(st, print_progress, &w, err) : FERRY_OK;
    if (rc)
        goto out;
    if (json)
        printf("],\"runs\":[");
    else
        printf("recent runs:\n");
    for (size_t i = 0; i < nruns; i++) {
        const struct ferry_run *r = &runs[i];

        if (json) {
            printf("%s{\"id\":%" PRId64 ",\"kind\":", i ? "," : "", r->id);
            ferry_json_str(stdout, r->kind);
            printf(",\"started\":%" PRId64 ",\"ended\":%" PRId64 ",\"upserted\":%" PRId64
                   ",\"deleted\":%" PRId64 ",\"hwm_before\":%" PRId64 ",\"hwm_after\":%" PRId64
                   ",\"code\":\"%s\",\"msg\":",
                   r->started, r->ended, r->upserted, r->deleted, r->hwm_before, r->hwm_after,
                   ferry_strcode(r->code));
            ferry_json_str(stdout, r->msg);
            printf("}");
        } else {
            char before[24], after[24];

            /* -1: no mark yet (a first copy begins without one) */
            mark_text(before, sizeof(before), r->hwm_before);
            mark_text(after, sizeof(after), r->hwm_after);
            /* "written": a copy's rows count with the upserts (JSON: "upserted") */
            printf("  #%" PRId64 " %-6s %s  %" PRId64 " rows written, %" PRId64
                   " deleted, mark %s -> %s%s%s\n",
                   r->id, r->kind, r->ended ? ferry_strcode(r->code) : "UNFINISHED", r->upserted,
                   r->deleted, before, after, r->msg[0] ? ": " : "", r->msg);
        }
    }
    if (json)
        printf("]}\n");
out:
    ferry_cutover_release(&co);
    ferry_state_close(st);
    return rc;
}
