/*
 * cutover.c - freeze, final delta, verify, record, hooks (see cutover.h).
 *
 * Why the order: verify only proves something once nothing can change on
 * the source, so the freeze comes first and the delta after it; the record
 * is written before the hooks, so that a hook that fails (or a crash while
 * one runs) leaves a verified record behind, not done, and a retry redoes
 * only cheap and idempotent work.
 */
#include "cutover.h"

#include "../common/log.h"
#include "../proto/proto.h"
#include "fetch.h"
#include "progress.h"
#include "state.h"
#include "sync.h"
#include "verify.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

enum step { STEP_CHECK, STEP_FREEZE, STEP_DELTA, STEP_VERIFY, STEP_RECORD, STEP_HOOKS, STEP_DONE };

/* How long the final delta is synced again while the source serves short of the freeze's head. */
#define DELTA_CATCHUP_SECS 60

static const char *const step_names[] = {"check",  "freeze", "delta", "verify",
                                         "record", "hooks",  "done"};

/* Everything the report says, filled as the steps go. */
struct report {
    enum step step; /* the step that failed, or STEP_DONE */
    int code;
    int already;  /* a cutover was already done: nothing was run */
    int frozen;   /* the source confirmed the freeze */
    int64_t head; /* the change-log head the freeze reported */
    struct ferry_sync_report delta;
    struct ferry_cutover rec; /* tables owned here */
    int *hook_status;         /* per hook: exit status, -1 not run */
    size_t nhooks_run;
    int64_t verify_diffs;
    double t0;
};

static double now_s(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* ---- steps ---- */

/* Seconds a cutover waits for the state that another ferry-dst run holds. */
#define BUSY_WAIT_SECS 60

/*
 * Whether err says another ferry-dst run holds the state (a follow's
 * round, with the source frozen a short one) and the cutover, begun at
 * *since (0: not waiting yet), may wait for it a little longer: then it
 * has waited 0.2 s, and the step is tried again.
 */
static int wait_busy(double *since, const struct ferry_cutover_opts *o,
                     const struct ferry_error *err)
{
    struct timespec nap = {0, 200 * 1000 * 1000};

    if (!ferry_state_busy(err))
        return 0;
    if (*since == 0) {
        *since = now_s();
        if (!o->quiet)
            log_info("cutover: %s; waiting for it (%d s at most)", err->msg, BUSY_WAIT_SECS);
    } else if (now_s() - *since >= BUSY_WAIT_SECS) {
        return 0;
    }
    nanosleep(&nap, NULL);
    return 1;
}

/* The state must show a finished copy; a cutover that is done is reported, not redone. */
/* rp->already when st records a cutover done (and --force was not given). */
static int read_record(struct ferry_state *st, const struct ferry_cutover_opts *o,
                       struct report *rp, struct ferry_error *err)
{
    int rc = ferry_state_cutover_get(st, &rp->rec, err);

    if (rc == FERRY_ENOTFOUND) {
        ferry_error_clear(err);
        rc = FERRY_OK;
    } else if (!rc && rp->rec.done && !o->force) {
        rp->already = 1;
        rp->head = rp->rec.head;
        rp->delta.hwm = rp->rec.hwm;
    } else if (!rc) {
        ferry_cutover_release(&rp->rec);
    }
    return rc;
}

static int check_state(const struct ferry_config *cfg, const struct ferry_cutover_opts *o,
                       struct report *rp, struct ferry_error *err)
{
    struct ferry_state *st = NULL;
    struct ferry_state_meta m;
    int rc;

    rc = ferry_state_open(cfg->target.state, FERRY_STATE_READONLY, &st, err);
    if (!rc)
        rc = ferry_state_meta_get(st, &m, err);
    if (rc == FERRY_ENOTFOUND || (!rc && m.phase != FERRY_PHASE_STREAMING)) {
        rc = ferry_error_set(err, FERRY_ECONFIG,
                             "tenant %s has not been copied yet; run ferry-dst sync --config %s "
                             "first (a cutover freezes the tenant: the copy must be done before)",
                             cfg->target.tenant, cfg->path);
        goto out;
    }
    if (!rc)
        rc = read_record(st, o, rp, err);
out:
    ferry_state_close(st);
    return rc;
}

/*
 * The target database opens and reads, before the source is frozen: a
 * typo in [target] database, or a damaged file, froze the tenant (the
 * application's writes refused) for a cutover that could not go on.
 */
static int check_target(const struct ferry_config *cfg, struct ferry_error *err)
{
    struct ferry_db *db = NULL;
    int exists = 0;
    int rc = ferry_db_open(cfg->target.database, FERRY_DB_READONLY, &db, err);

    if (!rc)
        rc = ferry_db_table_exists(db, "_ferry_none", &exists, err);
    ferry_db_close(db);
    if (rc)
        ferry_error_prefix(err, "the target database (nothing was frozen)");
    return rc;
}

static int freeze_source(const struct ferry_config *cfg, struct report *rp, struct ferry_error *err)
{
    struct ferry_client *c = NULL;
    struct ferry_request req;
    struct ferry_freeze_reply fr;
    char *body = NULL, *resp = NULL;
    size_t blen = 0, rlen = 0;
    int rc;

    memset(&req, 0, sizeof(req));
    req.type = FERRY_REQ_FREEZE;
    req.tenant = cfg->target.tenant;
    req.on = 1;
    rc = ferry_client_new(cfg, &c, err);
    if (!rc)
        rc = ferry_request_encode(&req, &body, &blen, err);
    if (!rc)
        rc = ferry_client_post(c, "/v1/freeze", body, blen, ferry_limits_default.max_request, &resp,
                               &rlen, err);
    if (!rc)
        rc = ferry_freeze_reply_decode(resp, rlen, &ferry_limits_default, &fr, err);
    if (!rc && (strcmp(fr.tenant, cfg->target.tenant) != 0 || !fr.frozen))
        rc = ferry_error_set(err, FERRY_EPROTO,
                             "the source answered the freeze of tenant %s with tenant %.64s, "
                             "frozen %s",
                             cfg->target.tenant, fr.tenant, fr.frozen ? "yes" : "no");
    if (!rc) {
        rp->frozen = 1;
        rp->head = fr.head;
    } else if (ferry_client_status(c) == 409) {
        /* the freeze holds, but transactions in flight outlived its wait (serve.c) */
        rp->frozen = 1;
    }
    free(body);
    free(resp);
    ferry_client_free(c);
    return rc;
}

static int final_delta(const struct ferry_config *cfg, const struct ferry_cutover_opts *o,
                       struct report *rp, struct ferry_error *err)
{
    struct ferry_sync_opts so;
    int rc;

    struct ferry_sync_report one;
    double t0 = now_s();

    memset(&so, 0, sizeof(so));
    so.quiet = o->quiet;
    so.kind = "cutover-delta"; /* the cutover's own run is recorded at its end */
    so.cutover = o->force ? 2 : 1;
    so.report = &one;
    /*
     * The manifest is read after the freeze answered, but the source serves
     * changes only up to where no transaction writing to its change log is
     * open (another tenant's, begun since): below the freeze's head until
     * they end. Every change of the frozen tenant is below that head, so
     * the delta is synced again until it gets there.
     */
    for (;;) {
        double busy = 0;

        memset(&one, 0, sizeof(one));
        do
            rc = ferry_sync(cfg, &so, err);
        while (rc && wait_busy(&busy, o, err));
        if (rc)
            return rc;
        rp->delta.head = one.head;
        rp->delta.hwm = one.hwm;
        rp->delta.upserted += one.upserted;
        rp->delta.deleted += one.deleted;
        if (one.head >= rp->head)
            return FERRY_OK;
        if (now_s() - t0 >= DELTA_CATCHUP_SECS)
            return ferry_error_set(err, FERRY_EDB,
                                   "the source served changes up to %" PRId64 " only, short of "
                                   "the head %" PRId64 " the freeze saw, for %d s: transactions "
                                   "still open there hold the rest back (see ferry-src's log); "
                                   "run the cutover again once they end",
                                   one.head, rp->head, DELTA_CATCHUP_SECS);
        if (!o->quiet)
            log_info("cutover: the source served changes up to %" PRId64 " of %" PRId64
                     " (transactions still open there); syncing again",
                     one.head, rp->head);
        sleep(1);
    }
}

static int verify_and_record(const struct ferry_config *cfg, struct ferry_state *st,
                             struct report *rp, struct ferry_error *err)
{
    struct ferry_verify_report vr;
    struct ferry_verify_opts vo;
    struct ferry_state_meta m;
    int rc;

    memset(&vo, 0, sizeof(vo));
    memset(&vr, 0, sizeof(vr));
    vo.quiet = 1;
    vo.state = st;
    rc = ferry_verify(cfg, &vo, &vr, err);
    rp->verify_diffs = vr.total_remaining;
    if (rc == FERRY_EMISMATCH) {
        char why[FERRY_ERRMSG_MAX];

        memcpy(why, err->msg, sizeof(why));
        ferry_error_set(err, FERRY_EMISMATCH,
                        "%.180s; with the source frozen this is real: see ferry-dst verify "
                        "--config %s, repair with --repair, then run the cutover again",
                        why, cfg->path);
    }
    if (rc) {
        rp->step = STEP_VERIFY;
        goto out;
    }
    rp->step = STEP_RECORD;
    if (vr.ntables > FERRY_CUTOVER_MAX_TABLES) {
        rc = ferry_error_set(err, FERRY_ETOOBIG, "%zu tables: the cutover record keeps %d",
                             vr.ntables, FERRY_CUTOVER_MAX_TABLES);
        goto out;
    }
    rp->rec.tables = calloc(vr.ntables ? vr.ntables : 1, sizeof(*rp->rec.tables));
    if (!rp->rec.tables) {
        rc = ferry_error_set(err, FERRY_ENOMEM, "out of memory");
        goto out;
    }
    rp->rec.ntables = vr.ntables;
    for (size_t i = 0; i < vr.ntables; i++) {
        snprintf(rp->rec.tables[i].table, sizeof(rp->rec.tables[i].table), "%s", vr.tables[i].name);
        rp->rec.tables[i].rows = vr.tables[i].src_rows;
        rp->rec.tables[i].checksum = vr.tables[i].src_sum;
    }
    rc = ferry_state_meta_get(st, &m, err);
    if (rc)
        goto out;
    rp->rec.at = (int64_t)time(NULL);
    rp->rec.done = 0;
    rp->rec.head = rp->head;
    rp->rec.hwm = m.hwm;
    rp->delta.hwm = m.hwm;
    rc = ferry_state_cutover_put(st, &rp->rec, err);
out:
    ferry_verify_report_release(&vr);
    return rc;
}

/* One hook through sh -c; *status its exit status (128 + signal when killed). */
static int run_hook(const struct ferry_config *cfg, const struct report *rp, const char *cmd,
                    int *status, struct ferry_error *err)
{
    char head[32], hwm[32];
    pid_t pid;
    int ws = 0;

    snprintf(head, sizeof(head), "%" PRId64, rp->head);
    snprintf(hwm, sizeof(hwm), "%" PRId64, rp->delta.hwm);
    /* Buffered output must not be written twice, once by the child. */
    fflush(stdout);
    fflush(stderr);
    pid = fork();
    if (pid < 0)
        return ferry_error_set(err, FERRY_EIO, "cannot start hook '%.100s': %s", cmd,
                               strerror(errno));
    if (pid == 0) {
        setenv("FERRY_TENANT", cfg->target.tenant, 1);
        setenv("FERRY_HEAD", head, 1);
        setenv("FERRY_HWM", hwm, 1);
        setenv("FERRY_SOURCE_URL", cfg->source.url ? cfg->source.url : "", 1);
        setenv("FERRY_TARGET_DATABASE", cfg->target.database, 1);
        setenv("FERRY_STATE", cfg->target.state, 1);
        setenv("FERRY_CONFIG", cfg->path ? cfg->path : "", 1);
        /* stdout is the report's (it may be JSON): the hook talks on stderr. */
        dup2(STDERR_FILENO, STDOUT_FILENO);
        execl("/bin/sh", "sh", "-c", cmd, (char *)NULL);
        _exit(127);
    }
    while (waitpid(pid, &ws, 0) < 0) {
        if (errno != EINTR)
            return ferry_error_set(err, FERRY_EIO, "cannot wait for hook '%.100s': %s", cmd,
                                   strerror(errno));
    }
    *status = WIFEXITED(ws) ? WEXITSTATUS(ws) : 128 + (WIFSIGNALED(ws) ? WTERMSIG(ws) : 0);
    if (*status)
        return ferry_error_set(err, FERRY_EIO,
                               "hook '%.100s' exited with status %d; the cutover is verified and "
                               "recorded but not done: fix the hook and run the cutover again",
                               cmd, *status);
    return FERRY_OK;
}

static int run_hooks(const struct ferry_config *cfg, const struct ferry_cutover_opts *o,
                     struct report *rp, struct ferry_error *err)
{
    for (size_t i = 0; i < o->nhooks; i++) {
        int rc;

        if (!o->quiet)
            log_info("cutover: running hook %zu of %zu: %s", i + 1, o->nhooks, o->hooks[i]);
        rc = run_hook(cfg, rp, o->hooks[i], &rp->hook_status[i], err);
        rp->nhooks_run = i + 1;
        if (rc)
            return rc;
    }
    return FERRY_OK;
}

/* ---- report ---- */

#define RETRY_MAX (FERRY_CUTOVER_MAX_HOOKS * 8192 + 8192) /* bytes of a retry command */

/* Append s for sh: as it is when it is plain, else single-quoted. */
static int add_shell_word(struct ferry_buf *b, const char *s)
{
    int rc;

    if (*s && strspn(s, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"
                        "_-./,:=@%+") == strlen(s))
        return ferry_buf_adds(b, s);
    rc = ferry_buf_adds(b, "'");
    for (; *s && !rc; s++)
        rc = *s == '\'' ? ferry_buf_adds(b, "'\\''") : ferry_buf_add(b, s, 1);
    return rc ? rc : ferry_buf_adds(b, "'");
}

/*
 * The command that runs this cutover again, hooks included: a retry that
 * left them out would record the cutover done without them.
 */
static const char *retry_cmd(const struct ferry_config *cfg, const struct ferry_cutover_opts *o,
                             struct ferry_buf *b)
{
    int rc = ferry_buf_adds(b, "ferry-dst cutover --config ");

    if (!rc)
        rc = add_shell_word(b, cfg->path ? cfg->path : "C");
    for (size_t i = 0; i < o->nhooks && !rc; i++) {
        rc = ferry_buf_adds(b, " --then ");
        if (!rc)
            rc = add_shell_word(b, o->hooks[i]);
    }
    return rc ? "ferry-dst cutover --config C (with the same --then hooks)" : b->data;
}

static void print_json(const struct ferry_config *cfg, const struct ferry_cutover_opts *o,
                       const struct report *rp, const struct ferry_error *err)
{
    struct ferry_buf retry;
    char cmd[1024];

    ferry_buf_init(&retry, RETRY_MAX);
    printf("{\"tenant\":");
    ferry_json_str(stdout, cfg->target.tenant);
    printf(",\"ok\":%s,\"already_done\":%s,\"step\":\"%s\",\"code\":\"%s\",\"msg\":",
           rp->code ? "false" : "true", rp->already ? "true" : "false", step_names[rp->step],
           ferry_strcode(rp->code));
    ferry_json_str(stdout, rp->code ? err->msg : "");
    /*
     * A freeze asked for but not confirmed may or may not hold: null, as the
     * text says. So for a cutover already done: the source was not asked
     * this time, and may have been unfrozen since.
     */
    printf(",\"frozen\":%s,\"head\":%" PRId64 ",\"hwm\":%" PRId64 ",\"upserted\":%" PRId64
           ",\"deleted\":%" PRId64 ",\"differences\":%" PRId64 ",\"tables\":[",
           rp->frozen                               ? "true"
           : rp->already || rp->step == STEP_FREEZE ? "null"
                                                    : "false",
           rp->head, rp->delta.hwm, rp->delta.upserted, rp->delta.deleted, rp->verify_diffs);
    for (size_t i = 0; i < rp->rec.ntables; i++) {
        printf("%s{\"table\":", i ? "," : "");
        ferry_json_str(stdout, rp->rec.tables[i].table);
        printf(",\"rows\":%" PRId64 ",\"checksum\":\"%016" PRIx64 "\"}", rp->rec.tables[i].rows,
               rp->rec.tables[i].checksum);
    }
    printf("],\"hooks\":[");
    for (size_t i = 0; i < o->nhooks; i++) {
        printf("%s{\"cmd\":", i ? "," : "");
        ferry_json_str(stdout, o->hooks[i]);
        if (i < rp->nhooks_run)
            printf(",\"status\":%d}", rp->hook_status[i]);
        else
            printf(",\"status\":null}");
    }
    printf("]");
    if (rp->code && rp->step != STEP_CHECK) {
        printf(",\"retry\":");
        ferry_json_str(stdout, retry_cmd(cfg, o, &retry));
        snprintf(cmd, sizeof(cmd), "ferry-src unfreeze --config SOURCE_CONFIG --tenant %s",
                 cfg->target.tenant);
        printf(",\"unfreeze\":");
        ferry_json_str(stdout, cmd);
    }
    printf(",\"seconds\":%.3f}\n", now_s() - rp->t0);
    ferry_buf_release(&retry);
}

static void print_text(const struct ferry_config *cfg, const struct ferry_cutover_opts *o,
                       const struct report *rp)
{
    const char *t = cfg->target.tenant;
    struct ferry_buf retry;

    ferry_buf_init(&retry, RETRY_MAX);
    if (rp->already) {
        char when[64];
        time_t at = (time_t)rp->rec.at;
        struct tm tm;

        gmtime_r(&at, &tm);
        strftime(when, sizeof(when), "%Y-%m-%d %H:%M:%S UTC", &tm);
        printf("cutover of tenant %s is already done (%s, source head %" PRId64 ", mark %" PRId64
               ", %zu tables verified); nothing to do (--force redoes it)\n",
               t, when, rp->rec.head, rp->rec.hwm, rp->rec.ntables);
        return;
    }
    if (rp->code && rp->step == STEP_CHECK)
        return; /* nothing was done: the error line says it all */
    if (rp->code) {
        /* What to do now goes where errors go, before the error line itself. */
        fflush(stdout);
        if (rp->frozen)
            fprintf(stderr,
                    "cutover of tenant %s stopped at step %s; the source stays frozen (writes to "
                    "tenant %s are refused there)\n",
                    t, step_names[rp->step], t);
        else
            fprintf(stderr,
                    "cutover of tenant %s stopped at step %s; the freeze was not confirmed, so "
                    "the source may or may not be frozen\n",
                    t, step_names[rp->step]);
        fprintf(stderr,
                "  to retry:    %s\n"
                "  to unfreeze: ferry-src unfreeze --config SOURCE_CONFIG --tenant %s   (on the "
                "source, with its config)\n",
                retry_cmd(cfg, o, &retry), t);
        ferry_buf_release(&retry);
        return;
    }
    printf("cutover of tenant %s done in %.2f s\n", t, now_s() - rp->t0);
    printf("  source frozen at change-log head %" PRId64 ": writes to tenant %s are refused "
           "there\n",
           rp->head, t);
    printf("  final delta: %" PRId64 " rows upserted, %" PRId64 " deleted; mark %" PRId64 "\n",
           rp->delta.upserted, rp->delta.deleted, rp->delta.hwm);
    printf("  verified: %zu tables equal on both sides\n", rp->rec.ntables);
    for (size_t i = 0; i < rp->rec.ntables; i++)
        printf("    %-24s %10" PRId64 " rows  checksum %016" PRIx64 "\n", rp->rec.tables[i].table,
               rp->rec.tables[i].rows, rp->rec.tables[i].checksum);
    if (o->nhooks)
        printf("  hooks: %zu run, all succeeded\n", o->nhooks);
    printf("the target now holds the tenant; point the application at it. The source stays "
           "frozen (ferry-src unfreeze --config SOURCE_CONFIG --tenant %s to write there "
           "again)\n",
           t);
}

/*
 * The cutover's own run, once it went past its checks: in the state (what
 * `status` lists) and the run log, with the step it stopped at. The final
 * delta is a run of its own ("cutover-delta"); a cutover that stopped at
 * verify or at a hook is recorded so, not as that delta's success. st:
 * the state when held, else opened here. Best effort: a warning.
 */
static void record_run(const struct ferry_config *cfg, struct ferry_state *st,
                       const struct report *rp, const struct ferry_error *err)
{
    struct ferry_state *own = NULL;
    struct ferry_progress *prog;
    struct ferry_run run;
    struct ferry_error e;
    char msg[sizeof(run.msg)];

    memset(&run, 0, sizeof(run));
    snprintf(run.kind, sizeof(run.kind), "cutover");
    if (rp->code)
        snprintf(msg, sizeof(msg), "stopped at %s: %.200s", step_names[rp->step], err->msg);
    else
        snprintf(msg, sizeof(msg), "done: %zu tables verified", rp->rec.ntables);
    if (!st && ferry_state_open(cfg->target.state, 0, &own, &e)) {
        log_warn("cannot record the cutover run: %s", e.msg);
        return;
    }
    run.hwm_before = run.hwm_after = rp->delta.hwm;
    run.upserted = rp->delta.upserted;
    run.deleted = rp->delta.deleted;
    if (ferry_state_run_begin(st ? st : own, &run, &e) == FERRY_OK) {
        run.ended = (int64_t)time(NULL);
        run.code = rp->code;
        snprintf(run.msg, sizeof(run.msg), "%s", msg);
        if (ferry_state_run_put(st ? st : own, &run, &e))
            log_warn("cannot record the cutover run: %s", e.msg);
    } else {
        log_warn("cannot record the cutover run: %s", e.msg);
    }
    prog = ferry_progress_open(cfg->target.state, "cutover", run.id, cfg->target.tenant,
                               rp->delta.hwm, 1);
    ferry_progress_end(prog, rp->code, msg, rp->delta.hwm, 0, rp->delta.upserted,
                       rp->delta.deleted);
    ferry_progress_close(prog);
    ferry_state_close(own);
}

/* ---- entry ---- */

int ferry_cutover(const struct ferry_config *cfg, const struct ferry_cutover_opts *o,
                  struct ferry_error *err)
{
    struct ferry_state *st = NULL;
    struct report rp;
    double busy = 0;
    int rc;

    memset(&rp, 0, sizeof(rp));
    rp.t0 = now_s();
    rp.step = STEP_CHECK;
    if (o->nhooks > FERRY_CUTOVER_MAX_HOOKS) {
        rc = ferry_error_set(err, FERRY_EUSAGE, "at most %d --then hooks", FERRY_CUTOVER_MAX_HOOKS);
        goto out;
    }
    rp.hook_status = calloc(o->nhooks ? o->nhooks : 1, sizeof(*rp.hook_status));
    if (!rp.hook_status) {
        rc = ferry_error_set(err, FERRY_ENOMEM, "out of memory");
        goto out;
    }
    rc = check_state(cfg, o, &rp, err);
    if (!rc && !rp.already)
        rc = check_target(cfg, err);
    if (rc || rp.already)
        goto out;

    rp.step = STEP_FREEZE;
    if (!o->quiet)
        log_info("cutover: freezing tenant %s on the source", cfg->target.tenant);
    rc = freeze_source(cfg, &rp, err);
    if (rc)
        goto out;
    if (!o->quiet)
        log_info("cutover: tenant %s frozen at change-log head %" PRId64, cfg->target.tenant,
                 rp.head);

    rp.step = STEP_DELTA;
    rc = final_delta(cfg, o, &rp, err);
    /*
     * Refused because another cutover of this target finished meanwhile
     * (the target is live: its delta must write nothing): that one stands.
     */
    if (rc == FERRY_ECONFIG && !o->force) {
        struct ferry_error e;
        struct report seen;

        memset(&seen, 0, sizeof(seen));
        if (check_state(cfg, o, &seen, &e) == FERRY_OK && seen.already) {
            ferry_error_clear(err);
            rc = FERRY_OK;
            ferry_cutover_release(&rp.rec);
            rp.rec = seen.rec;
            rp.already = 1;
            rp.head = seen.head;
            rp.delta = seen.delta;
            rp.step = STEP_CHECK;
        } else {
            ferry_cutover_release(&seen.rec);
        }
    }
    if (rc || rp.already)
        goto out;

    /* Held from here to the end: no other ferry-dst moves the marks under the record. */
    rp.step = STEP_VERIFY;
    do
        rc = ferry_state_open(cfg->target.state, 0, &st, err);
    while (rc && wait_busy(&busy, o, err));
    /*
     * Another cutover of this target may have finished while this one
     * waited for the state: its record stands, its hooks ran (they ran
     * twice when two cutovers were started at once).
     */
    if (!rc)
        rc = read_record(st, o, &rp, err);
    if (!rc && rp.already)
        rp.step = STEP_CHECK;
    if (rc || rp.already)
        goto out;
    if (!o->quiet)
        log_info("cutover: verifying every table with the source frozen");
    rc = verify_and_record(cfg, st, &rp, err);
    if (rc)
        goto out;

    rp.step = STEP_HOOKS;
    rc = run_hooks(cfg, o, &rp, err);
    if (rc)
        goto out;

    rp.step = STEP_RECORD;
    rp.rec.done = 1;
    rc = ferry_state_cutover_put(st, &rp.rec, err);
    if (rc)
        goto out;
    rp.step = STEP_DONE;
out:
    rp.code = rc;
    if (rp.step > STEP_CHECK)
        record_run(cfg, st, &rp, err);
    if (o->json)
        print_json(cfg, o, &rp, err);
    else
        print_text(cfg, o, &rp);
    ferry_state_close(st);
    ferry_cutover_release(&rp.rec);
    free(rp.hook_status);
    return rc;
}
