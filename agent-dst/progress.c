/*
 * progress.c - progress lines and the run log (see progress.h).
 */
#include "progress.h"

#include "../common/error.h"
#include "../common/log.h"

#include <fcntl.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define PROGRESS_TTY_SECS 0.2
#define PROGRESS_LOG_SECS 10.0
#define PATH_MAX_LEN 4096
#define RUNS_LOG_MAX (16L << 20) /* bytes of runs.log before it becomes runs.log.1 */

struct ferry_progress {
    FILE *log; /* runs.log, NULL when there is none or it failed */
    int tty;   /* stderr is a terminal: lines rewritten in place */
    int quiet;
    int64_t run;
    double t0;
    /* the table being copied */
    char table[256];
    int64_t first_rows; /* rows already there when this run reached the table */
    double table_t0;
    double shown;  /* when the line was last drawn / logged */
    int line_open; /* a \r line is on the terminal without its newline */
};

static double now_s(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* {"time":"...","run":N,"event":"name" then the caller's fields, then "}\n". */
static void event_begin(struct ferry_progress *p, const char *event)
{
    char when[32];
    time_t t = time(NULL);
    struct tm tm;

    gmtime_r(&t, &tm);
    strftime(when, sizeof(when), "%Y-%m-%dT%H:%M:%SZ", &tm);
    fprintf(p->log, "{\"time\":\"%s\",\"run\":%" PRId64 ",\"event\":\"%s\"", when, p->run, event);
}

static void event_end(struct ferry_progress *p)
{
    fputs("}\n", p->log);
    if (fflush(p->log) != 0 || ferror(p->log)) {
        log_warn("cannot write the run log; it stops here");
        fclose(p->log);
        p->log = NULL;
    }
}

struct ferry_progress *ferry_progress_open(const char *state_dir, const char *kind, int64_t run,
                                           const char *tenant, int64_t hwm, int quiet)
{
    struct ferry_progress *p = calloc(1, sizeof(*p));
    char path[PATH_MAX_LEN];

    if (!p)
        return NULL;
    p->tty = isatty(STDERR_FILENO);
    p->quiet = quiet;
    p->run = run;
    p->t0 = now_s();
    if (state_dir && snprintf(path, sizeof(path), "%s/runs.log", state_dir) < (int)sizeof(path)) {
        /* 0600 like the state: the log names tables and the tenant. */
        int fd;
        struct stat sb;

        /* One older generation is kept: follow appends every round. */
        if (stat(path, &sb) == 0 && sb.st_size > RUNS_LOG_MAX) {
            char old[PATH_MAX_LEN + 2];

            if (snprintf(old, sizeof(old), "%s.1", path) < (int)sizeof(old))
                rename(path, old);
        }
        fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0600);

        if (fd >= 0)
            p->log = fdopen(fd, "a");
        if (!p->log) {
            log_warn("cannot open the run log %s; the run goes on without it", path);
            if (fd >= 0)
                close(fd);
        }
    }
    if (p->log) {
        event_begin(p, "start");
        fprintf(p->log, ",\"kind\":");
        ferry_json_str(p->log, kind ? kind : "sync");
        fprintf(p->log, ",\"tenant\":");
        ferry_json_str(p->log, tenant ? tenant : "");
        fprintf(p->log, ",\"hwm\":%" PRId64, hwm);
        event_end(p);
    }
    return p;
}

static void fmt_eta(double secs, char *out, size_t n)
{
    if (secs < 0 || secs > 1e7)
        snprintf(out, n, "?");
    else if (secs >= 3600)
        snprintf(out, n, "%dh%02dm", (int)(secs / 3600), (int)(secs / 60) % 60);
    else if (secs >= 60)
        snprintf(out, n, "%dm%02ds", (int)(secs / 60), (int)secs % 60);
    else
        snprintf(out, n, "%ds", (int)(secs + 0.5));
}

/* "posts  1200/5000 rows  24%  800 rows/s  ETA 5s" */
static void describe(const struct ferry_progress *p, int64_t rows, int64_t estimate, double now,
                     int done, char *out, size_t n)
{
    double dt = now - p->table_t0;
    double rate = dt > 0 ? (double)(rows - p->first_rows) / dt : 0;
    char eta[32];

    if (done) {
        snprintf(out, n, "copy %s: %" PRId64 " rows in %.2f s (%.0f rows/s)", p->table, rows, dt,
                 rate);
        return;
    }
    if (estimate > 0 && rate > 0) {
        fmt_eta((double)(estimate > rows ? estimate - rows : 0) / rate, eta, sizeof(eta));
        snprintf(out, n, "copy %s: %" PRId64 "/%" PRId64 " rows %3d%%  %.0f rows/s  ETA %s",
                 p->table, rows, estimate,
                 (int)(100.0 * (double)(rows < estimate ? rows : estimate) / (double)estimate),
                 rate, eta);
    } else {
        snprintf(out, n, "copy %s: %" PRId64 " rows  %.0f rows/s", p->table, rows, rate);
    }
}

void ferry_progress_table(struct ferry_progress *p, const char *table, int64_t rows,
                          int64_t estimate, int done)
{
    double now = now_s();
    char line[512];

    if (!p)
        return;
    if (strcmp(p->table, table) != 0) {
        snprintf(p->table, sizeof(p->table), "%s", table);
        p->first_rows = rows;
        p->table_t0 = now;
        p->shown = now;
        if (!done)
            return;
    }
    if (done && p->log) {
        event_begin(p, "table");
        fprintf(p->log, ",\"table\":");
        ferry_json_str(p->log, table);
        fprintf(p->log, ",\"rows\":%" PRId64 ",\"copied\":%" PRId64 ",\"secs\":%.3f", rows,
                rows - p->first_rows, now - p->table_t0);
        event_end(p);
    }
    if (p->quiet)
        goto out;
    describe(p, rows, estimate, now, done, line, sizeof(line));
    if (p->tty) {
        if (done || now - p->shown >= PROGRESS_TTY_SECS) {
            fprintf(stderr, "\r%s\033[K%s", line, done ? "\n" : "");
            p->line_open = !done;
            p->shown = now;
        }
    } else if (done || now - p->shown >= PROGRESS_LOG_SECS) {
        log_info("%s", line);
        p->shown = now;
    }
out:
    if (done)
        p->table[0] = '\0';
}

/* A run that ends mid-table must not leave the cursor after a \r line. */
static void close_line(struct ferry_progress *p)
{
    if (p->line_open) {
        fputc('\n', stderr);
        p->line_open = 0;
    }
}

void ferry_progress_deltas(struct ferry_progress *p, int64_t before, int64_t after,
                           int64_t upserted, int64_t deleted)
{
    if (!p)
        return;
    close_line(p);
    if (p->log) {
        event_begin(p, "deltas");
        fprintf(p->log,
                ",\"from\":%" PRId64 ",\"to\":%" PRId64 ",\"upserted\":%" PRId64
                ",\"deleted\":%" PRId64,
                before, after, upserted, deleted);
        event_end(p);
    }
}

void ferry_progress_end(struct ferry_progress *p, int code, const char *msg, int64_t hwm,
                        int64_t copied, int64_t upserted, int64_t deleted)
{
    if (!p)
        return;
    close_line(p);
    if (!p->log)
        return;
    if (code) {
        event_begin(p, "error");
        fprintf(p->log, ",\"code\":\"%s\",\"msg\":", ferry_strcode(code));
        ferry_json_str(p->log, msg ? msg : "");
        event_end(p);
        if (!p->log)
            return;
    }
    event_begin(p, "end");
    fprintf(p->log,
            ",\"code\":\"%s\",\"hwm\":%" PRId64 ",\"copied\":%" PRId64 ",\"upserted\":%" PRId64
            ",\"deleted\":%" PRId64 ",\"secs\":%.3f",
            ferry_strcode(code), hwm, copied, upserted, deleted, now_s() - p->t0);
    event_end(p);
}

void ferry_progress_close(struct ferry_progress *p)
{
    if (!p)
        return;
    close_line(p);
    if (p->log)
        fclose(p->log);
    free(p);
}
