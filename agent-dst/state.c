/*
 * state.c - ferry-dst's durable state in one LMDB environment.
 *
 * Records are written field by field in a fixed little-endian layout behind
 * a version byte, never as raw struct memory: padding never reaches the
 * disk, the layout does not depend on the compiler, and a record of another
 * size or version (state written by another ferry) is refused with
 * FERRY_EDATA instead of being misread.
 *
 * Only one writer: LMDB serialises write transactions itself, but two
 * ferry-dst runs interleaving their marks would still corrupt the meaning of
 * the state, so a writable open also holds flock() on DIR/ferry.lock for its
 * whole life. The kernel drops that lock when the holder dies, so a crash
 * never leaves a stale lock behind.
 *
 * Commits are fully durable (no MDB_NOMETASYNC, which would save one
 * flush a commit): an operator prunes the source's change log by the mark
 * `status` shows, and a power loss must not take that mark back below it.
 */
#include "state.h"

#include <lmdb.h>

#include <errno.h>
#include <fcntl.h>
#include <setjmp.h>
#include <signal.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#if defined(__SANITIZE_ADDRESS__)
#include <sanitizer/lsan_interface.h>
#endif

#define STATE_VERSION 1
#define STATE_MAPSIZE ((size_t)1 << 30) /* sparse file; pages are used as written */
/* meta, copy, runs, and room for the id maps and cutover record still to come */
#define STATE_MAXDBS 8
#define STATE_PATH_MAX 4096

#define FSIZE(type, field) sizeof(((type *)0)->field)

/* Serialized sizes: they follow the header, so changing a field changes them. */
#define META_SIZE_V1                                                                               \
    (1 + FSIZE(struct ferry_state_meta, tenant) + FSIZE(struct ferry_state_meta, source) + 8 + 4 + \
     8 + 8 + 8)
/* The same version with source_head and source_seen appended: older records still read. */
#define META_SIZE (META_SIZE_V1 + 8 + 8)
#define CUTOVER_HEAD_SIZE (1 + 8 + 4 + 8 + 8 + 4)
#define CUTOVER_TABLE_SIZE (FSIZE(struct ferry_cutover_table, table) + 8 + 8)
#define COPY_SIZE                                                                                  \
    (1 + FSIZE(struct ferry_copy_progress, table) + 8 + FSIZE(struct ferry_copy_progress, key) +   \
     8 + 4)
#define RUN_SIZE (1 + 7 * 8 + 4 + FSIZE(struct ferry_run, msg) + FSIZE(struct ferry_run, kind))

/* The words of the error that says another process holds the state (ferry_state_busy). */
#define IN_USE "is in use"

int ferry_state_busy(const struct ferry_error *err)
{
    return err && err->code == FERRY_ECONFIG && strncmp(err->msg, "state ", 6) == 0 &&
           strstr(err->msg, " " IN_USE " by ") != NULL;
}

static const char META_KEY[] = "meta";
static const char CUTOVER_KEY[] = "cutover";

struct ferry_state {
    MDB_env *env;
    MDB_dbi meta;
    MDB_dbi copy;
    MDB_dbi runs;
    int lockfd; /* -1 when read-only */
    char *dir;
};

/* ---- record encoding ---- */

struct wr {
    unsigned char *p;
    size_t off;
};

struct rd {
    const unsigned char *p;
    size_t off;
};

static void put_u8(struct wr *w, unsigned v)
{
    w->p[w->off++] = (unsigned char)v;
}

static void put_u64(struct wr *w, uint64_t v)
{
    for (int i = 0; i < 8; i++)
        w->p[w->off++] = (unsigned char)(v >> (8 * i));
}

static void put_i64(struct wr *w, int64_t v)
{
    put_u64(w, (uint64_t)v);
}

static void put_i32(struct wr *w, int v)
{
    uint32_t u = (uint32_t)v;

    for (int i = 0; i < 4; i++)
        w->p[w->off++] = (unsigned char)(u >> (8 * i));
}

/* A string field: its bytes up to the NUL, zero-filled to the field's size. */
static void put_str(struct wr *w, const char *s, size_t size)
{
    size_t n = strnlen(s, size);

    memcpy(w->p + w->off, s, n);
    memset(w->p + w->off + n, 0, size - n);
    w->off += size;
}

static void put_bytes(struct wr *w, const void *s, size_t n, size_t size)
{
    memcpy(w->p + w->off, s, n);
    memset(w->p + w->off + n, 0, size - n);
    w->off += size;
}

static unsigned get_u8(struct rd *r)
{
    return r->p[r->off++];
}

static uint64_t get_u64(struct rd *r)
{
    uint64_t v = 0;

    for (int i = 0; i < 8; i++)
        v |= (uint64_t)r->p[r->off++] << (8 * i);
    return v;
}

static int64_t get_i64(struct rd *r)
{
    return (int64_t)get_u64(r);
}

static int get_i32(struct rd *r)
{
    uint32_t u = 0;

    for (int i = 0; i < 4; i++)
        u |= (uint32_t)r->p[r->off++] << (8 * i);
    return (int)(int32_t)u;
}

/* Returns 0, or -1 when the field holds no NUL (not a string we wrote). */
static int get_str(struct rd *r, char *s, size_t size)
{
    memcpy(s, r->p + r->off, size);
    r->off += size;
    if (!memchr(s, '\0', size))
        return -1;
    return 0;
}

static void get_bytes(struct rd *r, void *s, size_t size)
{
    memcpy(s, r->p + r->off, size);
    r->off += size;
}

/* Writers accept only what a reader could read back. */
static int check_str(const char *s, size_t size, const char *field, struct ferry_error *err)
{
    if (strnlen(s, size) >= size)
        return ferry_error_set(err, FERRY_EINTERNAL, "state: %s is not a terminated string", field);
    return FERRY_OK;
}

static void meta_encode(const struct ferry_state_meta *m, unsigned char *out)
{
    struct wr w = {out, 0};

    put_u8(&w, STATE_VERSION);
    put_str(&w, m->tenant, sizeof(m->tenant));
    put_str(&w, m->source, sizeof(m->source));
    put_i64(&w, m->start_head);
    put_i32(&w, m->phase);
    put_i64(&w, m->created);
    put_i64(&w, m->hwm);
    put_i64(&w, m->last_sync);
    put_i64(&w, m->source_head);
    put_i64(&w, m->source_seen);
}

static int bad_record(const struct ferry_state *st, const char *what, struct ferry_error *err)
{
    return ferry_error_set(err, FERRY_EDATA,
                           "state %s was written by another ferry version (unreadable %s record); "
                           "use that version, or move the directory aside to start over",
                           st->dir, what);
}

static int meta_decode(const struct ferry_state *st, const MDB_val *v, struct ferry_state_meta *m,
                       struct ferry_error *err)
{
    struct rd r = {v->mv_data, 0};
    int bad = 0;

    if ((v->mv_size != META_SIZE && v->mv_size != META_SIZE_V1) || get_u8(&r) != STATE_VERSION)
        return bad_record(st, "meta", err);
    bad |= get_str(&r, m->tenant, sizeof(m->tenant));
    bad |= get_str(&r, m->source, sizeof(m->source));
    m->start_head = get_i64(&r);
    m->phase = get_i32(&r);
    m->created = get_i64(&r);
    m->hwm = get_i64(&r);
    m->last_sync = get_i64(&r);
    m->source_head = v->mv_size == META_SIZE ? get_i64(&r) : 0;
    m->source_seen = v->mv_size == META_SIZE ? get_i64(&r) : 0;
    if (bad)
        return bad_record(st, "meta", err);
    return FERRY_OK;
}

static void copy_encode(const struct ferry_copy_progress *p, unsigned char *out)
{
    struct wr w = {out, 0};

    put_u8(&w, STATE_VERSION);
    put_str(&w, p->table, sizeof(p->table));
    put_u64(&w, p->keylen);
    put_bytes(&w, p->key, p->keylen, sizeof(p->key));
    put_i64(&w, p->rows);
    put_i32(&w, p->done);
}

static int copy_decode(const struct ferry_state *st, const MDB_val *k, const MDB_val *v,
                       struct ferry_copy_progress *p, struct ferry_error *err)
{
    struct rd r = {v->mv_data, 0};
    uint64_t keylen;
    int bad = 0;

    if (v->mv_size != COPY_SIZE || get_u8(&r) != STATE_VERSION)
        return bad_record(st, "copy", err);
    bad |= get_str(&r, p->table, sizeof(p->table));
    keylen = get_u64(&r);
    get_bytes(&r, p->key, sizeof(p->key));
    p->rows = get_i64(&r);
    p->done = get_i32(&r);
    if (keylen > sizeof(p->key))
        bad = 1;
    p->keylen = (size_t)keylen;
    /* The record must be the one filed under its own name. */
    if (!bad && (strlen(p->table) != k->mv_size || memcmp(p->table, k->mv_data, k->mv_size) != 0))
        bad = 1;
    if (bad)
        return bad_record(st, "copy", err);
    return FERRY_OK;
}

static void run_encode(const struct ferry_run *run, unsigned char *out)
{
    struct wr w = {out, 0};

    put_u8(&w, STATE_VERSION);
    put_i64(&w, run->id);
    put_i64(&w, run->started);
    put_i64(&w, run->ended);
    put_i64(&w, run->upserted);
    put_i64(&w, run->deleted);
    put_i64(&w, run->hwm_before);
    put_i64(&w, run->hwm_after);
    put_i32(&w, run->code);
    put_str(&w, run->msg, sizeof(run->msg));
    put_str(&w, run->kind, sizeof(run->kind));
}

static int run_decode(const struct ferry_state *st, const MDB_val *v, struct ferry_run *run,
                      struct ferry_error *err)
{
    struct rd r = {v->mv_data, 0};
    int bad = 0;

    if (v->mv_size != RUN_SIZE || get_u8(&r) != STATE_VERSION)
        return bad_record(st, "run", err);
    run->id = get_i64(&r);
    run->started = get_i64(&r);
    run->ended = get_i64(&r);
    run->upserted = get_i64(&r);
    run->deleted = get_i64(&r);
    run->hwm_before = get_i64(&r);
    run->hwm_after = get_i64(&r);
    run->code = get_i32(&r);
    bad |= get_str(&r, run->msg, sizeof(run->msg));
    bad |= get_str(&r, run->kind, sizeof(run->kind));
    if (bad)
        return bad_record(st, "run", err);
    return FERRY_OK;
}

/* Run ids are big-endian keys so that LMDB's byte order is numeric order. */
static void run_key(int64_t id, unsigned char key[8])
{
    for (int i = 0; i < 8; i++)
        key[i] = (unsigned char)((uint64_t)id >> (8 * (7 - i)));
}

static int64_t run_key_id(const MDB_val *k)
{
    const unsigned char *p = k->mv_data;
    uint64_t v = 0;

    if (k->mv_size != 8)
        return -1;
    for (int i = 0; i < 8; i++)
        v = (v << 8) | p[i];
    return (int64_t)v;
}

/* ---- errors ---- */

/* Whether rc is LMDB's word that the file is not what it wrote. */
static int mdb_damage(int rc)
{
    return rc == MDB_INVALID || rc == MDB_CORRUPTED || rc == MDB_PAGE_NOTFOUND ||
           rc == MDB_VERSION_MISMATCH;
}

static int mdb_fail(const char *dir, int rc, const char *what, struct ferry_error *err)
{
    if (rc == MDB_MAP_FULL || rc == ENOSPC)
        return ferry_error_set(err, FERRY_ENOSPC,
                               "cannot %s in state %s: %s; free space in %s and rerun", what, dir,
                               mdb_strerror(rc), dir);
    /* not an I/O hiccup a retry gets past (follow retries EIO): the state is damaged */
    if (mdb_damage(rc))
        return ferry_error_set(err, FERRY_EDATA,
                               "cannot %s in state %s: %s; the state is damaged: restore it from "
                               "a backup, or copy again with a fresh [target] state directory, "
                               "then ferry-dst verify --repair",
                               what, dir, mdb_strerror(rc));
    return ferry_error_set(err, FERRY_EIO, "cannot %s in state %s: %s", what, dir,
                           mdb_strerror(rc));
}

/* ---- open / close ---- */

static int join(char *out, size_t size, const char *dir, const char *name, struct ferry_error *err)
{
    int n = snprintf(out, size, "%s/%s", dir, name);

    if (n < 0 || (size_t)n >= size)
        return ferry_error_set(err, FERRY_ECONFIG, "state directory path is too long: %.64s...",
                               dir);
    return FERRY_OK;
}

/* mkdir -p, each missing level 0700: the state holds a tenant's progress. */
static int make_dirs(const char *dir, struct ferry_error *err)
{
    char path[STATE_PATH_MAX];
    size_t n = strlen(dir);

    if (n >= sizeof(path))
        return ferry_error_set(err, FERRY_ECONFIG, "state directory path is too long: %.64s...",
                               dir);
    memcpy(path, dir, n + 1);
    for (size_t i = 1; i <= n; i++) {
        if (path[i] != '/' && path[i] != '\0')
            continue;
        path[i] = '\0';
        if (mkdir(path, 0700) != 0 && errno != EEXIST)
            return ferry_error_set(err, FERRY_ECONFIG, "cannot create state directory %s: %s", path,
                                   strerror(errno));
        path[i] = dir[i];
    }
    return FERRY_OK;
}

static int lock_take(struct ferry_state *st, struct ferry_error *err)
{
    char path[STATE_PATH_MAX];
    char pid[32];
    struct stat sb;
    ssize_t n;
    long other;
    int rc;
    int fd;

    rc = join(path, sizeof(path), st->dir, "ferry.lock", err);
    if (rc)
        return rc;
    fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
    if (fd < 0)
        return ferry_error_set(err, FERRY_ECONFIG, "cannot open %s: %s", path, strerror(errno));
    if (flock(fd, LOCK_EX | LOCK_NB) != 0) {
        if (errno != EWOULDBLOCK) {
            rc = ferry_error_set(err, FERRY_EIO, "cannot lock %s: %s", path, strerror(errno));
            goto out;
        }
        n = pread(fd, pid, sizeof(pid) - 1, 0);
        pid[n > 0 ? n : 0] = '\0';
        other = strtol(pid, NULL, 10);
        /* The holder may not have written its pid yet. */
        if (other > 0)
            rc = ferry_error_set(err, FERRY_ECONFIG,
                                 "state %s " IN_USE " by pid %ld; wait for it or stop it", st->dir,
                                 other);
        else
            rc = ferry_error_set(err, FERRY_ECONFIG,
                                 "state %s " IN_USE " by another process; wait for it or stop it",
                                 st->dir);
        goto out;
    }
    /*
     * Written over the last holder's pid, then cut to length only if that
     * was longer: a truncation to zero first freed the file's block and
     * cost a journal commit, 0.4 ms of every run.
     */
    n = snprintf(pid, sizeof(pid), "%ld\n", (long)getpid());
    if (pwrite(fd, pid, (size_t)n, 0) != n || fstat(fd, &sb) != 0 ||
        (sb.st_size > n && ftruncate(fd, n) != 0)) {
        rc = ferry_error_set(err, errno == ENOSPC ? FERRY_ENOSPC : FERRY_EIO, "cannot write %s: %s",
                             path, strerror(errno));
        goto out;
    }
    st->lockfd = fd;
    fd = -1;
    rc = FERRY_OK;
out:
    if (fd >= 0)
        close(fd);
    return rc;
}

static int open_dbis(struct ferry_state *st, int readonly, struct ferry_error *err)
{
    unsigned int flags = readonly ? 0 : MDB_CREATE;
    MDB_txn *txn = NULL;
    int rc;

    rc = mdb_txn_begin(st->env, NULL, readonly ? MDB_RDONLY : 0, &txn);
    if (rc)
        goto fail;
    rc = mdb_dbi_open(txn, "meta", flags, &st->meta);
    if (!rc)
        rc = mdb_dbi_open(txn, "copy", flags, &st->copy);
    if (!rc)
        rc = mdb_dbi_open(txn, "runs", flags, &st->runs);
    if (rc)
        goto fail;
    /* Committing, even read-only, is what keeps the dbi handles open. */
    rc = mdb_txn_commit(txn);
    txn = NULL;
    if (rc)
        goto fail;
    return FERRY_OK;
fail:
    if (txn)
        mdb_txn_abort(txn);
    /* A writer creates all three at once; a missing one means it never finished. */
    if (rc == MDB_NOTFOUND)
        return ferry_error_set(err, FERRY_ENOTFOUND, "no state in %s: run ferry-dst sync first",
                               st->dir);
    return mdb_fail(st->dir, rc, "open the databases", err);
}

void ferry_state_close(struct ferry_state *st)
{
    if (!st)
        return;
    if (st->env)
        mdb_env_close(st->env);
    /* Closing the descriptor releases the flock. */
    if (st->lockfd >= 0)
        close(st->lockfd);
    free(st->dir);
    free(st);
}

/* The error of a state that cannot be trusted: what to do about it. */
static int damaged(const char *dir, const char *why, struct ferry_error *err)
{
    return ferry_error_set(err, FERRY_EDATA,
                           "state %s is damaged (%s): restore it from a backup, or copy again "
                           "with a fresh [target] state directory, then ferry-dst verify --repair",
                           dir, why);
}

/* Every key and value of dbi read, byte by byte. */
static int walk_dbi(MDB_txn *txn, MDB_dbi dbi)
{
    volatile unsigned char sum = 0;
    MDB_cursor *cur = NULL;
    MDB_val k, v;
    int rc = mdb_cursor_open(txn, dbi, &cur);

    for (MDB_cursor_op op = MDB_FIRST; !rc; op = MDB_NEXT) {
        rc = mdb_cursor_get(cur, &k, &v, op);
        for (size_t i = 0; !rc && i < k.mv_size; i++)
            sum ^= ((const unsigned char *)k.mv_data)[i];
        for (size_t i = 0; !rc && i < v.mv_size; i++)
            sum ^= ((const unsigned char *)v.mv_data)[i];
    }
    if (cur)
        mdb_cursor_close(cur);
    (void)sum;
    return rc == MDB_NOTFOUND ? 0 : rc;
}

/* walk_check's way back from a fault inside LMDB, armed only while it reads */
static sigjmp_buf walk_jmp;
static volatile sig_atomic_t walking;
/* the environment a fault left half way: never used again, kept reachable */
static MDB_env *walk_abandoned_env;

/*
 * What LMDB allocates during the walk (a transaction, cursors) is lost
 * with a fault: under LeakSanitizer, not reported as a leak.
 */
#if defined(__SANITIZE_ADDRESS__)
#define WALK_ALLOCS_BEGIN() __lsan_disable()
#define WALK_ALLOCS_END() __lsan_enable()
#else
#define WALK_ALLOCS_BEGIN() ((void)0)
#define WALK_ALLOCS_END() ((void)0)
#endif

static void walk_fault(int sig)
{
    (void)sig;
    if (walking)
        siglongjmp(walk_jmp, 1);
}

static void walk_assert(MDB_env *env, const char *msg)
{
    (void)env;
    (void)msg;
    if (walking)
        siglongjmp(walk_jmp, 1);
}

/*
 * LMDB trusts its pages: a page of random bytes (a disk's or a copy's
 * damage) makes it follow wild offsets to SIGSEGV, SIGBUS or a failed
 * assertion (printed, then abort). So the open reads the whole state once,
 * every page a transaction can reach (the free list, the main and named
 * databases, keys and values), with those faults turned into a return
 * here: a state that reads whole stays safe for the run; one that does not
 * is an error, not a crash. The read is a few microseconds a page. After a
 * fault the environment is abandoned, not closed.
 */
static int walk_check(struct ferry_state *st, struct ferry_error *err)
{
    /* the free list (dbi 0, as mdb_stat -f reads it), the main database, ours */
    static const char *const names[] = {"", NULL, "meta", "copy", "runs"};
    struct sigaction sa, old_segv, old_bus;
    MDB_txn *volatile txn = NULL;
    int rc = 0;

    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = walk_fault;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGSEGV, &sa, &old_segv);
    sigaction(SIGBUS, &sa, &old_bus);
    mdb_env_set_assert(st->env, walk_assert);
    WALK_ALLOCS_BEGIN();
    if (sigsetjmp(walk_jmp, 1) == 0) {
        MDB_txn *t = NULL;

        walking = 1;
        rc = mdb_txn_begin(st->env, NULL, MDB_RDONLY, &t);
        txn = t;
        for (size_t i = 0; i < sizeof(names) / sizeof(names[0]) && !rc; i++) {
            MDB_dbi dbi = 0;

            if (i)
                rc = mdb_dbi_open(txn, names[i], 0, &dbi);
            if (!rc)
                rc = walk_dbi(txn, dbi);
            else if (rc == MDB_NOTFOUND) /* a state being made: open_dbis says */
                rc = 0;
        }
        walking = 0;
        if (txn)
            mdb_txn_abort(txn);
    } else {
        walking = 0;
        walk_abandoned_env = st->env;
        st->env = NULL;
        rc = -1;
    }
    WALK_ALLOCS_END();
    sigaction(SIGSEGV, &old_segv, NULL);
    sigaction(SIGBUS, &old_bus, NULL);
    if (st->env)
        mdb_env_set_assert(st->env, NULL);
    if (rc == -1)
        return damaged(st->dir, "reading it faulted", err);
    if (mdb_damage(rc))
        return damaged(st->dir, mdb_strerror(rc), err);
    return rc ? mdb_fail(st->dir, rc, "read", err) : FERRY_OK;
}

int ferry_state_open(const char *dir, int flags, struct ferry_state **out, struct ferry_error *err)
{
    int readonly = (flags & FERRY_STATE_READONLY) != 0;
    struct ferry_state *st = NULL;
    char path[STATE_PATH_MAX];
    struct stat sb;
    int rc;

    *out = NULL;
    st = calloc(1, sizeof(*st));
    if (!st)
        return ferry_error_set(err, FERRY_ENOMEM, "out of memory opening state %s", dir);
    st->lockfd = -1;
    st->dir = strdup(dir);
    if (!st->dir) {
        rc = ferry_error_set(err, FERRY_ENOMEM, "out of memory opening state %s", dir);
        goto out;
    }

    if (stat(dir, &sb) != 0) {
        if (errno != ENOENT) {
            rc = ferry_error_set(err, FERRY_ECONFIG, "cannot open state %s: %s", dir,
                                 strerror(errno));
            goto out;
        }
        if (readonly || !(flags & FERRY_STATE_CREATE)) {
            rc = ferry_error_set(err, FERRY_ENOTFOUND, "no state in %s: run ferry-dst sync first",
                                 dir);
            goto out;
        }
        rc = make_dirs(dir, err);
        if (rc)
            goto out;
    } else if (!S_ISDIR(sb.st_mode)) {
        rc = ferry_error_set(err, FERRY_ECONFIG,
                             "state %s is not a directory; [target] state names a directory", dir);
        goto out;
    }

    rc = join(path, sizeof(path), dir, "data.mdb", err);
    if (rc)
        goto out;
    if (!(flags & FERRY_STATE_CREATE) || readonly) {
        if (stat(path, &sb) != 0) {
            rc = ferry_error_set(err, FERRY_ENOTFOUND, "no state in %s: run ferry-dst sync first",
                                 dir);
            goto out;
        }
    }
    /* LMDB makes a new state of an empty file: one that was a state once is not trusted */
    if (stat(path, &sb) == 0 && sb.st_size == 0) {
        rc = damaged(dir, "its data.mdb is empty", err);
        goto out;
    }

    /* Lock before LMDB is touched, so two writers never race on creation. */
    if (!readonly) {
        rc = lock_take(st, err);
        if (rc)
            goto out;
    }

    rc = mdb_env_create(&st->env);
    if (rc) {
        st->env = NULL;
        rc = mdb_fail(dir, rc, "create the environment", err);
        goto out;
    }
    rc = mdb_env_set_maxdbs(st->env, STATE_MAXDBS);
    if (!rc)
        rc = mdb_env_set_mapsize(st->env, STATE_MAPSIZE);
    if (!rc)
        rc = mdb_env_open(st->env, dir, readonly ? MDB_RDONLY : 0, 0600);
    if (rc) {
        if (rc == EACCES || rc == EROFS)
            rc = ferry_error_set(err, FERRY_ECONFIG, "cannot open state %s: %s", dir,
                                 mdb_strerror(rc));
        else
            rc = mdb_fail(dir, rc, "open the environment", err);
        goto out;
    }
    {
        /* pages past the file's end would be read through the map: SIGBUS */
        MDB_envinfo info;
        MDB_stat ms;

        if (mdb_env_info(st->env, &info) == 0 && mdb_env_stat(st->env, &ms) == 0 &&
            stat(path, &sb) == 0 &&
            (uint64_t)sb.st_size < ((uint64_t)info.me_last_pgno + 1) * ms.ms_psize) {
            rc = damaged(dir, "its data.mdb is shorter than its last page", err);
            goto out;
        }
    }
    if (!readonly) {
        int dead;

        /* Free reader slots left by crashed `status` processes; they pin old pages. */
        mdb_reader_check(st->env, &dead);
    }
    rc = walk_check(st, err);
    if (!rc)
        rc = open_dbis(st, readonly, err);
    if (rc)
        goto out;

    *out = st;
    st = NULL;
out:
    ferry_state_close(st);
    return rc;
}

/* ---- transactions ---- */

static int txn_begin(struct ferry_state *st, int readonly, MDB_txn **txn, struct ferry_error *err)
{
    int rc = mdb_txn_begin(st->env, NULL, readonly ? MDB_RDONLY : 0, txn);

    if (rc) {
        *txn = NULL;
        return mdb_fail(st->dir, rc, "begin a transaction", err);
    }
    return FERRY_OK;
}

static int txn_commit(struct ferry_state *st, MDB_txn *txn, const char *what,
                      struct ferry_error *err)
{
    int rc = mdb_txn_commit(txn);

    if (rc)
        return mdb_fail(st->dir, rc, what, err);
    return FERRY_OK;
}

/* One record in its own write transaction, committed (synced) before returning. */
static int put_one(struct ferry_state *st, MDB_dbi dbi, const void *key, size_t keylen,
                   const void *val, size_t vallen, const char *what, struct ferry_error *err)
{
    MDB_val k = {keylen, (void *)key};
    MDB_val v = {vallen, (void *)val};
    MDB_txn *txn;
    int rc;

    rc = txn_begin(st, 0, &txn, err);
    if (rc)
        return rc;
    rc = mdb_put(txn, dbi, &k, &v, 0);
    if (rc) {
        mdb_txn_abort(txn);
        return mdb_fail(st->dir, rc, what, err);
    }
    return txn_commit(st, txn, what, err);
}

/* ---- meta ---- */

static int meta_read(struct ferry_state *st, MDB_txn *txn, struct ferry_state_meta *m,
                     struct ferry_error *err)
{
    MDB_val k = {sizeof(META_KEY) - 1, (void *)META_KEY};
    MDB_val v;
    int rc;

    rc = mdb_get(txn, st->meta, &k, &v);
    if (rc == MDB_NOTFOUND)
        return ferry_error_set(err, FERRY_ENOTFOUND, "no state in %s: run ferry-dst sync first",
                               st->dir);
    if (rc)
        return mdb_fail(st->dir, rc, "read meta", err);
    return meta_decode(st, &v, m, err);
}

static int meta_check(const struct ferry_state_meta *m, struct ferry_error *err)
{
    int rc = check_str(m->tenant, sizeof(m->tenant), "meta tenant", err);

    if (!rc)
        rc = check_str(m->source, sizeof(m->source), "meta source", err);
    return rc;
}

int ferry_state_meta_get(struct ferry_state *st, struct ferry_state_meta *m,
                         struct ferry_error *err)
{
    MDB_txn *txn;
    int rc;

    rc = txn_begin(st, 1, &txn, err);
    if (rc)
        return rc;
    rc = meta_read(st, txn, m, err);
    mdb_txn_abort(txn);
    return rc;
}

int ferry_state_meta_put(struct ferry_state *st, const struct ferry_state_meta *m,
                         struct ferry_error *err)
{
    unsigned char rec[META_SIZE];
    int rc;

    rc = meta_check(m, err);
    if (rc)
        return rc;
    meta_encode(m, rec);
    return put_one(st, st->meta, META_KEY, sizeof(META_KEY) - 1, rec, sizeof(rec), "write meta",
                   err);
}

int ferry_state_set_hwm(struct ferry_state *st, int64_t hwm, int64_t last_sync,
                        struct ferry_error *err)
{
    MDB_val k = {sizeof(META_KEY) - 1, (void *)META_KEY};
    unsigned char rec[META_SIZE];
    struct ferry_state_meta m;
    MDB_txn *txn;
    MDB_val v;
    int rc;

    /* Read and write in one transaction: no other writer can slip in between. */
    rc = txn_begin(st, 0, &txn, err);
    if (rc)
        return rc;
    rc = meta_read(st, txn, &m, err);
    if (rc)
        goto out;
    m.hwm = hwm;
    if (last_sync)
        m.last_sync = last_sync;
    meta_encode(&m, rec);
    v.mv_size = sizeof(rec);
    v.mv_data = rec;
    rc = mdb_put(txn, st->meta, &k, &v, 0);
    if (rc) {
        rc = mdb_fail(st->dir, rc, "write the high-water mark", err);
        goto out;
    }
    rc = txn_commit(st, txn, "write the high-water mark", err);
    txn = NULL;
out:
    if (txn)
        mdb_txn_abort(txn);
    return rc;
}

int ferry_state_set_source_head(struct ferry_state *st, int64_t head, int64_t seen,
                                struct ferry_error *err)
{
    MDB_val k = {sizeof(META_KEY) - 1, (void *)META_KEY};
    unsigned char rec[META_SIZE];
    struct ferry_state_meta m;
    MDB_txn *txn;
    MDB_val v;
    int rc;

    rc = txn_begin(st, 0, &txn, err);
    if (rc)
        return rc;
    rc = meta_read(st, txn, &m, err);
    if (rc)
        goto out;
    m.source_head = head;
    m.source_seen = seen;
    meta_encode(&m, rec);
    v.mv_size = sizeof(rec);
    v.mv_data = rec;
    rc = mdb_put(txn, st->meta, &k, &v, 0);
    if (rc) {
        rc = mdb_fail(st->dir, rc, "write the source head", err);
        goto out;
    }
    rc = txn_commit(st, txn, "write the source head", err);
    txn = NULL;
out:
    if (txn)
        mdb_txn_abort(txn);
    return rc;
}

/* ---- cutover ---- */

void ferry_cutover_release(struct ferry_cutover *c)
{
    if (!c)
        return;
    free(c->tables);
    c->tables = NULL;
    c->ntables = 0;
}

int ferry_state_live(struct ferry_state *st, const char *what, struct ferry_error *err)
{
    struct ferry_cutover c;
    char when[32] = "?";
    int rc = ferry_state_cutover_get(st, &c, err);

    if (rc == FERRY_ENOTFOUND) {
        ferry_error_clear(err);
        return FERRY_OK;
    }
    if (rc)
        return rc;
    if (c.done) {
        time_t at = (time_t)c.at;
        struct tm tm;

        if (gmtime_r(&at, &tm))
            strftime(when, sizeof(when), "%Y-%m-%d %H:%M:%S UTC", &tm);
        rc = ferry_error_set(err, FERRY_ECONFIG,
                             "this target's cutover was done at %s: it is live, and %s would "
                             "write the source's rows over its own; to mirror the source again, "
                             "copy into a fresh [target] state and database",
                             when, what);
    }
    ferry_cutover_release(&c);
    return rc;
}

int ferry_state_cutover_get(struct ferry_state *st, struct ferry_cutover *c,
                            struct ferry_error *err)
{
    MDB_val k = {sizeof(CUTOVER_KEY) - 1, (void *)CUTOVER_KEY};
    struct rd r;
    MDB_txn *txn;
    MDB_val v;
    uint32_t n;
    int bad = 0;
    int rc;

    memset(c, 0, sizeof(*c));
    rc = txn_begin(st, 1, &txn, err);
    if (rc)
        return rc;
    rc = mdb_get(txn, st->meta, &k, &v);
    if (rc == MDB_NOTFOUND) {
        rc = ferry_error_set(err, FERRY_ENOTFOUND, "no cutover recorded in state %s", st->dir);
        goto out;
    }
    if (rc) {
        rc = mdb_fail(st->dir, rc, "read the cutover record", err);
        goto out;
    }
    r.p = v.mv_data;
    r.off = 0;
    if (v.mv_size < CUTOVER_HEAD_SIZE || get_u8(&r) != STATE_VERSION) {
        rc = bad_record(st, "cutover", err);
        goto out;
    }
    c->at = get_i64(&r);
    c->done = get_i32(&r);
    c->head = get_i64(&r);
    c->hwm = get_i64(&r);
    n = (uint32_t)get_i32(&r);
    /* The count is checked against the record's size before anything is allocated. */
    if (n > FERRY_CUTOVER_MAX_TABLES || v.mv_size != CUTOVER_HEAD_SIZE + n * CUTOVER_TABLE_SIZE) {
        rc = bad_record(st, "cutover", err);
        goto out;
    }
    c->tables = calloc(n ? n : 1, sizeof(*c->tables));
    if (!c->tables) {
        rc = ferry_error_set(err, FERRY_ENOMEM, "out of memory reading the cutover record");
        goto out;
    }
    c->ntables = n;
    for (uint32_t i = 0; i < n; i++) {
        bad |= get_str(&r, c->tables[i].table, sizeof(c->tables[i].table));
        c->tables[i].rows = get_i64(&r);
        c->tables[i].checksum = get_u64(&r);
    }
    if (bad)
        rc = bad_record(st, "cutover", err);
out:
    mdb_txn_abort(txn);
    if (rc)
        ferry_cutover_release(c);
    return rc;
}

int ferry_state_cutover_put(struct ferry_state *st, const struct ferry_cutover *c,
                            struct ferry_error *err)
{
    unsigned char *rec;
    struct wr w;
    size_t size;
    int rc;

    if (c->ntables > FERRY_CUTOVER_MAX_TABLES)
        return ferry_error_set(err, FERRY_ETOOBIG,
                               "cutover of %zu tables, over the %d the state keeps", c->ntables,
                               FERRY_CUTOVER_MAX_TABLES);
    for (size_t i = 0; i < c->ntables; i++) {
        rc = check_str(c->tables[i].table, sizeof(c->tables[i].table), "cutover table", err);
        if (rc)
            return rc;
    }
    size = CUTOVER_HEAD_SIZE + c->ntables * CUTOVER_TABLE_SIZE;
    rec = malloc(size);
    if (!rec)
        return ferry_error_set(err, FERRY_ENOMEM, "out of memory writing the cutover record");
    w.p = rec;
    w.off = 0;
    put_u8(&w, STATE_VERSION);
    put_i64(&w, c->at);
    put_i32(&w, c->done);
    put_i64(&w, c->head);
    put_i64(&w, c->hwm);
    put_i32(&w, (int)c->ntables);
    for (size_t i = 0; i < c->ntables; i++) {
        put_str(&w, c->tables[i].table, sizeof(c->tables[i].table));
        put_i64(&w, c->tables[i].rows);
        put_u64(&w, c->tables[i].checksum);
    }
    rc = put_one(st, st->meta, CUTOVER_KEY, sizeof(CUTOVER_KEY) - 1, rec, size,
                 "write the cutover record", err);
    free(rec);
    return rc;
}

/* ---- copy progress ---- */

int ferry_state_copy_get(struct ferry_state *st, const char *table, struct ferry_copy_progress *p,
                         struct ferry_error *err)
{
    MDB_val k = {strlen(table), (void *)table};
    MDB_txn *txn;
    MDB_val v;
    int rc;

    if (k.mv_size == 0 || k.mv_size >= sizeof(p->table))
        return ferry_error_set(err, FERRY_ENOTFOUND, "no copy progress for table \"%.64s\"", table);
    rc = txn_begin(st, 1, &txn, err);
    if (rc)
        return rc;
    rc = mdb_get(txn, st->copy, &k, &v);
    if (rc == MDB_NOTFOUND)
        rc = ferry_error_set(err, FERRY_ENOTFOUND, "no copy progress for table \"%s\"", table);
    else if (rc)
        rc = mdb_fail(st->dir, rc, "read copy progress", err);
    else
        rc = copy_decode(st, &k, &v, p, err);
    mdb_txn_abort(txn);
    return rc;
}

int ferry_state_copy_put(struct ferry_state *st, const struct ferry_copy_progress *p,
                         struct ferry_error *err)
{
    unsigned char rec[COPY_SIZE];
    int rc;

    rc = check_str(p->table, sizeof(p->table), "copy table", err);
    if (rc)
        return rc;
    if (p->table[0] == '\0')
        return ferry_error_set(err, FERRY_EINTERNAL, "state: copy progress without a table name");
    if (p->keylen > sizeof(p->key))
        return ferry_error_set(
            err, FERRY_ETOOBIG,
            "last key of table \"%s\" is %zu bytes, over the %zu the state keeps", p->table,
            p->keylen, sizeof(p->key));
    copy_encode(p, rec);
    return put_one(st, st->copy, p->table, strlen(p->table), rec, sizeof(rec),
                   "write copy progress", err);
}

int ferry_state_copy_each(struct ferry_state *st,
                          int (*fn)(const struct ferry_copy_progress *p, void *arg), void *arg,
                          struct ferry_error *err)
{
    struct ferry_copy_progress p;
    MDB_cursor *cur = NULL;
    MDB_txn *txn;
    MDB_val k, v;
    int rc;

    rc = txn_begin(st, 1, &txn, err);
    if (rc)
        return rc;
    rc = mdb_cursor_open(txn, st->copy, &cur);
    if (rc) {
        cur = NULL;
        rc = mdb_fail(st->dir, rc, "read copy progress", err);
        goto out;
    }
    /* LMDB orders keys bytewise, which is table-name order. */
    for (rc = mdb_cursor_get(cur, &k, &v, MDB_FIRST); rc == 0;
         rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT)) {
        rc = copy_decode(st, &k, &v, &p, err);
        if (rc)
            goto out;
        rc = fn(&p, arg);
        if (rc)
            goto out;
    }
    if (rc == MDB_NOTFOUND)
        rc = FERRY_OK;
    else
        rc = mdb_fail(st->dir, rc, "read copy progress", err);
out:
    if (cur)
        mdb_cursor_close(cur);
    mdb_txn_abort(txn);
    return rc;
}

/* ---- the columns a table was copied with ---- */

/* "cols:" TABLE in the meta database (keys an older ferry-dst never reads) */
static int cols_key(char *out, size_t size, const char *table, struct ferry_error *err)
{
    int n = snprintf(out, size, "cols:%s", table);

    if (n < 0 || (size_t)n >= size || !table[0])
        return ferry_error_set(err, FERRY_ENOTFOUND, "no columns recorded for table \"%.64s\"",
                               table);
    return FERRY_OK;
}

int ferry_state_cols_get(struct ferry_state *st, const char *table, char *cols, size_t size,
                         size_t *len, struct ferry_error *err)
{
    char key[300];
    MDB_val k, v;
    MDB_txn *txn;
    int rc = cols_key(key, sizeof(key), table, err);

    if (rc)
        return rc;
    k.mv_size = strlen(key);
    k.mv_data = key;
    rc = txn_begin(st, 1, &txn, err);
    if (rc)
        return rc;
    rc = mdb_get(txn, st->meta, &k, &v);
    if (rc == MDB_NOTFOUND)
        rc = ferry_error_set(err, FERRY_ENOTFOUND, "no columns recorded for table \"%s\"", table);
    else if (rc)
        rc = mdb_fail(st->dir, rc, "read a table's columns", err);
    else if (v.mv_size < 1 || ((const unsigned char *)v.mv_data)[0] != STATE_VERSION ||
             (cols && v.mv_size - 1 > size))
        rc = bad_record(st, "columns", err);
    else {
        if (cols)
            memcpy(cols, (const unsigned char *)v.mv_data + 1, v.mv_size - 1);
        *len = v.mv_size - 1;
    }
    mdb_txn_abort(txn);
    return rc;
}

int ferry_state_cols_put(struct ferry_state *st, const char *table, const char *cols, size_t len,
                         struct ferry_error *err)
{
    char key[300];
    unsigned char *rec;
    int rc = cols_key(key, sizeof(key), table, err);

    if (rc)
        return ferry_error_set(err, FERRY_EINTERNAL, "state: a table name over %zu bytes",
                               sizeof(key) - 6);
    rec = malloc(len + 1);
    if (!rec)
        return ferry_error_set(err, FERRY_ENOMEM, "out of memory writing a table's columns");
    rec[0] = STATE_VERSION;
    memcpy(rec + 1, cols, len);
    rc = put_one(st, st->meta, key, strlen(key), rec, len + 1, "write a table's columns", err);
    free(rec);
    return rc;
}

/* ---- runs ---- */

static int run_check(const struct ferry_run *r, struct ferry_error *err)
{
    int rc = check_str(r->msg, sizeof(r->msg), "run message", err);

    if (!rc)
        rc = check_str(r->kind, sizeof(r->kind), "run kind", err);
    return rc;
}

#define RUNS_KEPT 1000

int ferry_state_run_begin(struct ferry_state *st, struct ferry_run *r, struct ferry_error *err)
{
    unsigned char rec[RUN_SIZE];
    unsigned char key[8];
    MDB_cursor *cur = NULL;
    MDB_txn *txn;
    MDB_val k, v;
    int64_t last;
    int rc;

    rc = run_check(r, err);
    if (rc)
        return rc;
    rc = txn_begin(st, 0, &txn, err);
    if (rc)
        return rc;
    rc = mdb_cursor_open(txn, st->runs, &cur);
    if (rc) {
        cur = NULL;
        rc = mdb_fail(st->dir, rc, "read runs", err);
        goto out;
    }
    /* The next id follows the last key, inside the same write transaction. */
    rc = mdb_cursor_get(cur, &k, &v, MDB_LAST);
    if (rc == MDB_NOTFOUND) {
        last = 0;
    } else if (rc) {
        rc = mdb_fail(st->dir, rc, "read runs", err);
        goto out;
    } else {
        last = run_key_id(&k);
        if (last < 0) {
            rc = bad_record(st, "run", err);
            goto out;
        }
    }
    mdb_cursor_close(cur);
    cur = NULL;

    r->id = last + 1;
    r->started = (int64_t)time(NULL);
    run_key(r->id, key);
    run_encode(r, rec);
    k.mv_size = sizeof(key);
    k.mv_data = key;
    v.mv_size = sizeof(rec);
    v.mv_data = rec;
    rc = mdb_put(txn, st->runs, &k, &v, 0);
    if (rc) {
        rc = mdb_fail(st->dir, rc, "record the run", err);
        goto out;
    }
    /*
     * Only the last RUNS_KEPT runs are kept: follow records one a round, and
     * the state must not grow without end (runs.log beside it has them all).
     */
    rc = mdb_cursor_open(txn, st->runs, &cur);
    if (rc) {
        cur = NULL;
        rc = mdb_fail(st->dir, rc, "trim runs", err);
        goto out;
    }
    for (rc = mdb_cursor_get(cur, &k, &v, MDB_FIRST); rc == 0;
         rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT)) {
        int64_t id = run_key_id(&k);

        if (id < 0 || id > r->id - RUNS_KEPT)
            break;
        rc = mdb_cursor_del(cur, 0);
        if (rc)
            break;
    }
    if (rc && rc != MDB_NOTFOUND) {
        rc = mdb_fail(st->dir, rc, "trim runs", err);
        goto out;
    }
    mdb_cursor_close(cur);
    cur = NULL;
    rc = txn_commit(st, txn, "record the run", err);
    txn = NULL;
out:
    if (cur)
        mdb_cursor_close(cur);
    if (txn)
        mdb_txn_abort(txn);
    return rc;
}

int ferry_state_run_put(struct ferry_state *st, const struct ferry_run *r, struct ferry_error *err)
{
    return ferry_state_run_end(st, r, NULL, err);
}

int ferry_state_run_end(struct ferry_state *st, const struct ferry_run *r,
                        const struct ferry_state_reached *reached, struct ferry_error *err)
{
    MDB_val mk = {sizeof(META_KEY) - 1, (void *)META_KEY};
    struct ferry_state_meta m;
    unsigned char rec[RUN_SIZE];
    unsigned char mrec[META_SIZE];
    unsigned char key[8];
    MDB_val k = {sizeof(key), key};
    MDB_txn *txn;
    MDB_val v;
    int rc;

    rc = run_check(r, err);
    if (rc)
        return rc;
    if (r->id <= 0)
        return ferry_error_set(err, FERRY_EINTERNAL, "state: run without an id");
    run_key(r->id, key);
    rc = txn_begin(st, 0, &txn, err);
    if (rc)
        return rc;
    /* Only rewrite: a run put under an id never begun is a caller bug. */
    rc = mdb_get(txn, st->runs, &k, &v);
    if (rc == MDB_NOTFOUND) {
        rc =
            ferry_error_set(err, FERRY_ENOTFOUND, "no run %" PRId64 " in state %s", r->id, st->dir);
        goto out;
    }
    if (rc) {
        rc = mdb_fail(st->dir, rc, "read runs", err);
        goto out;
    }
    if (reached) {
        /* read, change, write: one transaction, no other writer in between */
        rc = meta_read(st, txn, &m, err);
        if (rc)
            goto out;
        m.hwm = reached->hwm;
        m.last_sync = reached->last_sync;
        m.source_head = reached->source_head;
        m.source_seen = reached->source_seen;
        meta_encode(&m, mrec);
    }
    run_encode(r, rec);
    v.mv_size = sizeof(rec);
    v.mv_data = rec;
    rc = mdb_put(txn, st->runs, &k, &v, 0);
    if (!rc && reached) {
        v.mv_size = sizeof(mrec);
        v.mv_data = mrec;
        rc = mdb_put(txn, st->meta, &mk, &v, 0);
    }
    if (rc) {
        rc = mdb_fail(st->dir, rc, "record the run", err);
        goto out;
    }
    rc = txn_commit(st, txn, "record the run", err);
    txn = NULL;
out:
    if (txn)
        mdb_txn_abort(txn);
    return rc;
}

int ferry_state_runs_last(struct ferry_state *st, struct ferry_run *runs, size_t n, size_t *got,
                          struct ferry_error *err)
{
    MDB_cursor *cur = NULL;
    MDB_txn *txn;
    MDB_val k, v;
    size_t i = 0;
    int rc;

    *got = 0;
    if (n == 0)
        return FERRY_OK;
    rc = txn_begin(st, 1, &txn, err);
    if (rc)
        return rc;
    rc = mdb_cursor_open(txn, st->runs, &cur);
    if (rc) {
        cur = NULL;
        rc = mdb_fail(st->dir, rc, "read runs", err);
        goto out;
    }
    for (rc = mdb_cursor_get(cur, &k, &v, MDB_LAST); rc == 0 && i < n;
         rc = mdb_cursor_get(cur, &k, &v, MDB_PREV)) {
        rc = run_decode(st, &v, &runs[i], err);
        if (rc)
            goto out;
        if (runs[i].id != run_key_id(&k)) {
            rc = bad_record(st, "run", err);
            goto out;
        }
        i++;
    }
    if (rc == 0 || rc == MDB_NOTFOUND)
        rc = FERRY_OK;
    else
        rc = mdb_fail(st->dir, rc, "read runs", err);
    *got = i;
out:
    if (cur)
        mdb_cursor_close(cur);
    mdb_txn_abort(txn);
    return rc;
}
