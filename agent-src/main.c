/*
 * main.c - the ferry-src command line: `ferry-src <command> [options]`.
 *
 * Commands are rows of one table: a command names the options it needs and
 * accepts, and main() checks them before it runs, so each command function
 * only does its job. Errors end as one line "ferry-src: <msg>" on stderr and
 * the exit status of their code (DESIGN.md); usage errors exit 2.
 */
#include "../common/authkeys.h"
#include "../common/buf.h"
#include "../common/config.h"
#include "../common/crypto.h"
#include "../common/db/db.h"
#include "../common/error.h"
#include "../common/log.h"
#include "../common/scope.h"
#include "capture.h"
#include "freeze.h"
#include "serve.h"

#include <getopt.h>
#include <stdarg.h>
#include <stdio.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#ifndef FERRY_VERSION
#define FERRY_VERSION "0.1.0"
#endif

#define PROG "ferry-src"
#define SQL_MAX (64 * 1024)

/* Options a command needs or accepts. */
#define OPT_CONFIG 0x1
#define OPT_TENANT 0x2
#define OPT_REASON 0x4
#define OPT_OUT 0x8
#define OPT_BITS 0x10
#define OPT_COMMENT 0x20
#define OPT_LOCK_WAIT 0x40

struct cli {
    const char *config;
    const char *tenant;
    const char *reason;    /* freeze */
    const char *out;       /* keygen */
    const char *bits;      /* keygen */
    const char *comment;   /* keys add */
    const char *lock_wait; /* install */
    char **args;           /* positional arguments after the command */
    int nargs;
};

struct command {
    const char *name;
    int (*run)(const struct cli *cli, struct ferry_error *err);
    unsigned need;  /* OPT_* that must be given */
    unsigned allow; /* OPT_* that may be given */
    int max_args;   /* positional arguments after the command */
    const char *synopsis;
    const char *summary;
};

static int cmd_help(const struct cli *cli, struct ferry_error *err);
static int cmd_install(const struct cli *cli, struct ferry_error *err);
static int cmd_uninstall(const struct cli *cli, struct ferry_error *err);
static int cmd_serve(const struct cli *cli, struct ferry_error *err);
static int cmd_scope(const struct cli *cli, struct ferry_error *err);
static int cmd_freeze(const struct cli *cli, struct ferry_error *err);
static int cmd_unfreeze(const struct cli *cli, struct ferry_error *err);
static int cmd_prune(const struct cli *cli, struct ferry_error *err);
static int cmd_keygen(const struct cli *cli, struct ferry_error *err);
static int cmd_keys_add(const struct cli *cli, struct ferry_error *err);
static int cmd_keys_list(const struct cli *cli, struct ferry_error *err);
static int cmd_keys_revoke(const struct cli *cli, struct ferry_error *err);

static const struct command commands[] = {
    {"install", cmd_install, OPT_CONFIG, OPT_CONFIG | OPT_LOCK_WAIT, 0, "install --config C",
     "add change capture (log table, triggers) to the source database"},
    {"uninstall", cmd_uninstall, OPT_CONFIG, OPT_CONFIG, 0, "uninstall --config C",
     "remove every trigger and table ferry added"},
    {"serve", cmd_serve, OPT_CONFIG, OPT_CONFIG, 0, "serve --config C",
     "serve tenant batches over HTTP until SIGINT or SIGTERM"},
    {"scope", cmd_scope, OPT_CONFIG | OPT_TENANT, OPT_CONFIG | OPT_TENANT, 0,
     "scope --config C --tenant ID", "show the tables and row counts of one tenant"},
    {"freeze", cmd_freeze, OPT_CONFIG | OPT_TENANT, OPT_CONFIG | OPT_TENANT | OPT_REASON, 0,
     "freeze --config C --tenant ID", "refuse writes to the tenant's rows (migration mode)"},
    {"unfreeze", cmd_unfreeze, OPT_CONFIG | OPT_TENANT, OPT_CONFIG | OPT_TENANT, 0,
     "unfreeze --config C --tenant ID", "accept writes to the tenant's rows again"},
    {"prune", cmd_prune, OPT_CONFIG, OPT_CONFIG, 1, "prune --config C SEQ",
     "drop change-log entries below SEQ (the lowest mark of every target)"},
    {"keygen", cmd_keygen, OPT_OUT, OPT_OUT | OPT_BITS, 0, "keygen --out FILE [--bits N]",
     "create the source's key pair: FILE (mode 0600) and FILE.pub"},
    {"keys add", cmd_keys_add, OPT_CONFIG | OPT_TENANT, OPT_CONFIG | OPT_TENANT | OPT_COMMENT, 1,
     "keys add -c C -t ID FILE.pub", "authorise a target's key (FILE.pub) for one tenant"},
    {"keys list", cmd_keys_list, OPT_CONFIG, OPT_CONFIG, 0, "keys list --config C",
     "show the authorised keys: tenant, fingerprint, comment"},
    {"keys revoke", cmd_keys_revoke, OPT_CONFIG, OPT_CONFIG, 1, "keys revoke -c C SHA256:...",
     "revoke a key, open sessions included, without a restart"},
    {"help", cmd_help, 0, 0, 0, "help", "show this help"},
};

#define NCOMMANDS (sizeof(commands) / sizeof(commands[0]))

static void usage_line(FILE *f)
{
    fprintf(f, "usage: " PROG " <command> [options]; try '" PROG " --help'\n");
}

static void usage(FILE *f)
{
    fprintf(f, "usage: " PROG " <command> [options]\n\ncommands:\n");
    for (size_t i = 0; i < NCOMMANDS; i++)
        fprintf(f, "  %-30s %s\n", commands[i].synopsis, commands[i].summary);
    fprintf(f, "\noptions:\n"
               "  -c, --config FILE              configuration file (INI)\n"
               "  -t, --tenant ID                tenant id: the root table's key\n"
               "  -r, --reason TEXT              freeze: why (kept with the freeze)\n"
               "      --out FILE                 keygen: private key file (FILE.pub: public)\n"
               "      --bits N                   keygen: RSA key size (default 3072)\n"
               "      --comment TEXT             keys add: a note shown by keys list\n"
               "      --lock-wait SECONDS        install on PostgreSQL: how long to keep trying\n"
               "                                 for locks the application holds (default 60)\n"
               "  -v, --verbose                  debug logging\n"
               "  -q, --quiet                    warnings and errors only\n"
               "  -h, --help                     show this help\n"
               "      --version                  show the version\n"
               "\nexit status: 0 success, 2 usage or config error, 3 auth refused,\n"
               "5 data, schema or database error\n");
}

static int cmd_help(const struct cli *cli, struct ferry_error *err)
{
    (void)cli;
    (void)err;
    usage(stdout);
    return FERRY_OK;
}

/* Load and check the configuration; *cfg is released by the caller whatever happens. */
static int load_config(const struct cli *cli, struct ferry_config *cfg, struct ferry_error *err)
{
    int rc;

    rc = ferry_config_load(cli->config, cfg, err);
    if (rc)
        return rc;
    ferry_capture_config_path(cli->config);
    return ferry_config_require_src(cfg, err);
}

static int cmd_install(const struct cli *cli, struct ferry_error *err)
{
    struct ferry_config cfg;
    struct ferry_db *db = NULL;
    struct ferry_scope *s = NULL;
    long wait = FERRY_INSTALL_LOCK_WAIT;
    int rc;

    if (cli->lock_wait) {
        char *end = NULL;

        errno = 0;
        wait = strtol(cli->lock_wait, &end, 10);
        if (errno || end == cli->lock_wait || *end || wait < 1 || wait > 86400)
            return ferry_error_set(err, FERRY_EUSAGE,
                                   "--lock-wait takes whole seconds from 1 to 86400, not '%s'",
                                   cli->lock_wait);
    }
    memset(&cfg, 0, sizeof(cfg));
    rc = load_config(cli, &cfg, err);
    if (rc)
        goto out;
    rc = ferry_db_open(cfg.source.database, 0, &db, err);
    if (rc)
        goto out;
    rc = ferry_scope_resolve(db, &cfg, &s, err);
    if (rc)
        goto out;
    rc = ferry_capture_install(db, s, wait, err);
    if (rc)
        goto out;
    /* After capture: its install drops every _ferry_ trigger, ours too. */
    rc = ferry_freeze_install(db, s, err);
    if (rc)
        goto out;
    printf("installed change capture on %zu tables: ", s->ntables);
    for (size_t i = 0; i < s->ntables; i++)
        printf("%s%s", i ? ", " : "", s->tables[i].info.name);
    printf("\n");
out:
    ferry_scope_free(s);
    ferry_db_close(db);
    ferry_config_release(&cfg);
    return rc;
}

static int cmd_uninstall(const struct cli *cli, struct ferry_error *err)
{
    struct ferry_config cfg;
    struct ferry_db *db = NULL;
    int rc;

    memset(&cfg, 0, sizeof(cfg));
    rc = load_config(cli, &cfg, err);
    if (rc)
        goto out;
    /* No scope here: uninstall must work even when the schema no longer resolves. */
    rc = ferry_db_open(cfg.source.database, 0, &db, err);
    if (rc)
        goto out;
    rc = ferry_freeze_uninstall(db, err);
    if (rc)
        goto out;
    rc = ferry_capture_uninstall(db, err);
    if (rc)
        goto out;
    printf("removed change capture\n");
out:
    ferry_db_close(db);
    ferry_config_release(&cfg);
    return rc;
}

static int cmd_serve(const struct cli *cli, struct ferry_error *err)
{
    struct ferry_config cfg;
    int rc;

    memset(&cfg, 0, sizeof(cfg));
    rc = load_config(cli, &cfg, err);
    if (rc)
        goto out;
    rc = ferry_serve(&cfg, err);
out:
    ferry_config_release(&cfg);
    return rc;
}

/* Rows of table t of s that belong to the tenant. */
static int count_rows(struct ferry_db *db, const struct ferry_scope *s, size_t t,
                      const struct ferry_value *tenant, const char *pred, int nparams,
                      int64_t *count, struct ferry_error *err)
{
    struct ferry_buf sql;
    struct ferry_value *args = NULL;
    int rc;

    ferry_buf_init(&sql, SQL_MAX);
    rc = ferry_buf_adds(&sql, "SELECT count(*) FROM ");
    if (!rc)
        rc = ferry_buf_add_ident(&sql, s->tables[t].info.name);
    if (!rc)
        rc = ferry_buf_addf(&sql, " WHERE %s", pred);
    if (rc) {
        ferry_error_set(err, rc, "count query for %s: %s", s->tables[t].info.name,
                        ferry_strerror(rc));
        goto out;
    }
    if (nparams > 0) {
        args = calloc((size_t)nparams, sizeof(*args));
        if (!args) {
            rc = ferry_error_set(err, FERRY_ENOMEM, "out of memory");
            goto out;
        }
        for (int i = 0; i < nparams; i++)
            args[i] = *tenant;
    }
    rc = ferry_db_query_int(db, sql.data, args, (size_t)(nparams > 0 ? nparams : 0), count, err);
out:
    free(args);
    ferry_buf_release(&sql);
    return rc;
}

/* "tables not in scope: a (excluded), b (not reachable from teams)" */
static int print_out_of_scope(struct ferry_db *db, const struct ferry_config *cfg,
                              const struct ferry_scope *s, struct ferry_error *err)
{
    char **names = NULL;
    size_t n = 0;
    size_t shown = 0;
    int rc;

    rc = ferry_db_tables(db, &names, &n, err);
    if (rc)
        goto out;
    printf("not in scope:");
    for (size_t i = 0; i < n; i++) {
        if (ferry_scope_find(s, names[i]) >= 0)
            continue;
        printf("%s %s (%s)", shown ? "," : "", names[i],
               ferry_config_excluded(cfg, names[i]) ? "excluded" : "not reachable from root");
        shown++;
    }
    printf("%s\n", shown ? "" : " none");
out:
    for (size_t i = 0; i < n; i++)
        free(names[i]);
    free(names);
    return rc;
}

static int cmd_scope(const struct cli *cli, struct ferry_error *err)
{
    struct ferry_config cfg;
    struct ferry_db *db = NULL;
    struct ferry_scope *s = NULL;
    struct ferry_value tenant;
    struct ferry_buf pred;
    int64_t *counts = NULL; /* the tenant's rows, per table of the scope */
    int in_txn = 0;
    int width = 5;
    int rc;

    memset(&cfg, 0, sizeof(cfg));
    ferry_buf_init(&pred, SQL_MAX);
    rc = load_config(cli, &cfg, err);
    if (rc)
        goto out;
    rc = ferry_db_open(cfg.source.database, FERRY_DB_READONLY, &db, err);
    if (rc)
        goto out;
    rc = ferry_scope_resolve(db, &cfg, &s, err);
    if (rc)
        goto out;
    rc = ferry_scope_tenant(s, cli->tenant, &tenant, err);
    if (rc)
        goto out;
    /* One snapshot, so the counts add up even while the application writes. */
    rc = ferry_db_begin_read(db, err);
    if (rc)
        goto out;
    in_txn = 1;
    counts = calloc(s->ntables, sizeof(*counts));
    if (!counts) {
        rc = ferry_error_set(err, FERRY_ENOMEM, "out of memory");
        goto out;
    }
    for (size_t t = 0; t < s->ntables; t++) {
        int nparams = 0;
        int len = (int)strlen(s->tables[t].info.name);

        if (len > width)
            width = len;
        ferry_buf_reset(&pred);
        rc = ferry_scope_pred(s, t, &pred, &nparams);
        if (rc) {
            ferry_error_set(err, rc, "scope predicate of %s: %s", s->tables[t].info.name,
                            ferry_strerror(rc));
            goto out;
        }
        rc = count_rows(db, s, t, &tenant, pred.data, nparams, &counts[t], err);
        if (rc)
            goto out;
    }
    /* a tenant the database does not have: the operator's --tenant (exit 2, as freeze's) */
    if (counts[0] == 0) {
        rc = ferry_error_set(err, FERRY_EUSAGE, "tenant %.64s not found in %s; check --tenant",
                             cli->tenant, ferry_scope_root(s)->name);
        goto out;
    }
    printf("tenant %s of %s: %zu tables in scope\n", cli->tenant, ferry_scope_root(s)->name,
           s->ntables);
    printf("%-*s  %5s  %-*s  %10s  %s\n", width, "table", "depth", width, "parent", "rows",
           "predicate (? = tenant)");
    for (size_t t = 0; t < s->ntables; t++) {
        const struct ferry_scope_table *st = &s->tables[t];
        const char *parent = st->parent >= 0      ? s->tables[st->parent].info.name
                             : st->info.scope_sql ? "(config)"
                                                  : "-";
        int nparams = 0;

        ferry_buf_reset(&pred);
        ferry_scope_pred(s, t, &pred, &nparams); /* built once already */
        printf("%-*s  %5d  %-*s  %10lld  %s\n", width, st->info.name, st->depth, width, parent,
               (long long)counts[t], pred.data);
    }
    rc = print_out_of_scope(db, &cfg, s, err);
out:
    if (in_txn)
        ferry_db_rollback(db);
    free(counts);
    ferry_buf_release(&pred);
    ferry_scope_free(s);
    ferry_db_close(db);
    ferry_config_release(&cfg);
    return rc;
}

/* freeze / unfreeze: the same switch the target flips with POST /v1/freeze. */
static int set_frozen(const struct cli *cli, int on, struct ferry_error *err)
{
    struct ferry_config cfg;
    struct ferry_freezer *f = NULL;
    int64_t head = 0;
    int rc;

    memset(&cfg, 0, sizeof(cfg));
    rc = load_config(cli, &cfg, err);
    if (!rc)
        rc = ferry_freeze_open(&cfg, &f, err);
    if (!rc)
        rc = ferry_freeze_set(f, cli->tenant, on, cli->reason ? cli->reason : "ferry-src freeze",
                              &head, err);
    if (rc == FERRY_ENOTFOUND) {
        /* a tenant the database does not have: the operator's --tenant (exit 2, as sync's) */
        char why[FERRY_ERRMSG_MAX];

        memcpy(why, err->msg, sizeof(why));
        rc = ferry_error_set(err, FERRY_EUSAGE, "%.200s; check --tenant", why);
    }
    if (!rc && on)
        printf("tenant %s is frozen (change log head %lld): writes to its rows are refused "
               "until ferry-src unfreeze --config %s --tenant %s\n",
               cli->tenant, (long long)head, cli->config, cli->tenant);
    else if (!rc)
        printf("tenant %s is not frozen: writes to its rows are accepted\n", cli->tenant);
    ferry_freeze_close(f);
    ferry_config_release(&cfg);
    return rc;
}

/*
 * The operator picks SEQ: the lowest mark among this source's targets
 * (ferry-dst status shows each one's). A target still below it is refused
 * by the producer, never silently left with a gap.
 */
static int cmd_prune(const struct cli *cli, struct ferry_error *err)
{
    struct ferry_config cfg;
    struct ferry_db *db = NULL;
    int64_t deleted = 0;
    long long before;
    char *end = NULL;
    int rc;

    memset(&cfg, 0, sizeof(cfg));
    if (cli->nargs != 1)
        return ferry_error_set(err, FERRY_EUSAGE, "prune needs SEQ: the lowest mark to keep");
    errno = 0;
    before = strtoll(cli->args[0], &end, 10);
    if (errno || !end || *end || end == cli->args[0] || before < 1)
        return ferry_error_set(err, FERRY_EUSAGE, "prune: '%.64s' is not a positive seq",
                               cli->args[0]);
    rc = load_config(cli, &cfg, err);
    if (!rc)
        rc = ferry_db_open(cfg.source.database, 0, &db, err);
    if (!rc)
        rc = ferry_capture_prune(db, (int64_t)before, &deleted, err);
    if (!rc)
        printf("pruned %lld change-log entries below seq %lld\n", (long long)deleted, before);
    ferry_db_close(db);
    ferry_config_release(&cfg);
    return rc;
}

static int cmd_freeze(const struct cli *cli, struct ferry_error *err)
{
    return set_frozen(cli, 1, err);
}

static int cmd_unfreeze(const struct cli *cli, struct ferry_error *err)
{
    return set_frozen(cli, 0, err);
}

/* ---- keys ---- */

static int cmd_keygen(const struct cli *cli, struct ferry_error *err)
{
    struct ferry_key *k = NULL;
    unsigned long bits = 0;
    char pub[4096];
    struct stat st;
    char *end = NULL;
    int rc;

    if (cli->bits) {
        bits = strtoul(cli->bits, &end, 10);
        if (end == cli->bits || *end || bits < FERRY_KEY_BITS_MIN || bits > FERRY_KEY_BITS_MAX)
            return ferry_error_set(err, FERRY_EUSAGE, "--bits must be %d..%d", FERRY_KEY_BITS_MIN,
                                   FERRY_KEY_BITS_MAX);
    }
    /* Refuse before the slow generation; ferry_key_save checks again, atomically. */
    snprintf(pub, sizeof(pub), "%s.pub", cli->out);
    if (lstat(cli->out, &st) == 0 || lstat(pub, &st) == 0)
        return ferry_error_set(err, FERRY_ECONFIG, "%s exists; remove it or choose another --out",
                               lstat(cli->out, &st) == 0 ? cli->out : pub);
    rc = ferry_key_generate((unsigned)bits, &k, err);
    if (!rc)
        rc = ferry_key_save(k, cli->out, err);
    if (!rc)
        printf("wrote %s (private, mode 0600) and %s\nfingerprint %s\n", cli->out, pub,
               ferry_key_fingerprint(k));
    ferry_key_free(k);
    return rc;
}

/* The authorised keys file named by the config; *ak owned, free with ferry_authkeys_free. */
static int open_authkeys(const struct cli *cli, struct ferry_authkeys **ak, struct ferry_error *err)
{
    struct ferry_config cfg;
    int rc;

    memset(&cfg, 0, sizeof(cfg));
    *ak = NULL;
    rc = ferry_config_load(cli->config, &cfg, err);
    if (!rc && !cfg.source.authorized_keys)
        rc = ferry_error_set(err, FERRY_ECONFIG,
                             "config %s: [source] authorized_keys is missing: set it to the file "
                             "that lists the targets' keys",
                             cli->config);
    if (!rc)
        rc = ferry_authkeys_open(cfg.source.authorized_keys, ak, err);
    ferry_config_release(&cfg);
    return rc;
}

static int cmd_keys_add(const struct cli *cli, struct ferry_error *err)
{
    struct ferry_authkeys *ak = NULL;
    const struct ferry_authkey *k;
    int rc;

    if (cli->nargs != 1)
        return ferry_error_set(err, FERRY_EUSAGE,
                               "keys add needs the target's public key file (ferry-dst keygen "
                               "wrote it as FILE.pub)");
    rc = open_authkeys(cli, &ak, err);
    if (!rc)
        rc = ferry_authkeys_add(ak, cli->tenant, cli->args[0], cli->comment, err);
    if (rc)
        goto out;
    k = ferry_authkeys_get(ak, ferry_authkeys_count(ak) - 1);
    printf("authorised %s for tenant %s\n", k->fingerprint, k->tenant);
out:
    ferry_authkeys_free(ak);
    return rc;
}

static int cmd_keys_list(const struct cli *cli, struct ferry_error *err)
{
    struct ferry_authkeys *ak = NULL;
    size_t n;
    int width = 6;
    int rc;

    rc = open_authkeys(cli, &ak, err);
    if (rc)
        goto out;
    n = ferry_authkeys_count(ak);
    for (size_t i = 0; i < n; i++) {
        int len = (int)strlen(ferry_authkeys_get(ak, i)->tenant);
        if (len > width)
            width = len;
    }
    printf("%-*s  %-*s  %s\n", width, "tenant", FERRY_FPR_LEN, "fingerprint", "comment");
    for (size_t i = 0; i < n; i++) {
        const struct ferry_authkey *k = ferry_authkeys_get(ak, i);
        printf("%-*s  %s  %s\n", width, k->tenant, k->fingerprint, k->comment);
    }
out:
    ferry_authkeys_free(ak);
    return rc;
}

static int cmd_keys_revoke(const struct cli *cli, struct ferry_error *err)
{
    struct ferry_authkeys *ak = NULL;
    const struct ferry_authkey *k = NULL;
    char tenant[FERRY_TENANT_MAX + 1];
    int rc;

    if (cli->nargs != 1)
        return ferry_error_set(err, FERRY_EUSAGE,
                               "keys revoke needs the key's fingerprint (SHA256:..., as keys list "
                               "shows it)");
    rc = open_authkeys(cli, &ak, err);
    if (rc)
        goto out;
    tenant[0] = '\0';
    if (ferry_authkeys_find(ak, cli->args[0], &k, NULL) == FERRY_OK)
        snprintf(tenant, sizeof(tenant), "%s", k->tenant);
    rc = ferry_authkeys_revoke(ak, cli->args[0], err);
    if (rc)
        goto out;
    printf("revoked %s (tenant %s); its open sessions end at their next request\n", cli->args[0],
           tenant);
out:
    ferry_authkeys_free(ak);
    return rc;
}

/* A command of one word ("serve") or two ("keys add"); *used: how many words it took. */
static const struct command *find_command(char **words, int nwords, int *used)
{
    char two[64];

    if (nwords >= 2) {
        snprintf(two, sizeof(two), "%s %s", words[0], words[1]);
        for (size_t i = 0; i < NCOMMANDS; i++)
            if (strcmp(commands[i].name, two) == 0) {
                *used = 2;
                return &commands[i];
            }
    }
    *used = 1;
    for (size_t i = 0; i < NCOMMANDS; i++)
        if (strcmp(commands[i].name, words[0]) == 0)
            return &commands[i];
    return NULL;
}

static int usage_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* Say what was wrong, then the usage line; returns the usage exit status. */
static int usage_error(const char *fmt, ...)
{
    va_list ap;

    fprintf(stderr, PROG ": ");
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fprintf(stderr, "\n");
    usage_line(stderr);
    return ferry_exit_status(FERRY_EUSAGE);
}

int main(int argc, char **argv)
{
    static const struct option longopts[] = {
        {"config", required_argument, NULL, 'c'},    {"tenant", required_argument, NULL, 't'},
        {"reason", required_argument, NULL, 'r'},    {"out", required_argument, NULL, 'o'},
        {"bits", required_argument, NULL, 'b'},      {"comment", required_argument, NULL, 'm'},
        {"lock-wait", required_argument, NULL, 'w'}, {"verbose", no_argument, NULL, 'v'},
        {"quiet", no_argument, NULL, 'q'},           {"help", no_argument, NULL, 'h'},
        {"version", no_argument, NULL, 'V'},         {NULL, 0, NULL, 0},
    };
    const struct command *cmd;
    struct ferry_error err;
    struct cli cli;
    unsigned given = 0;
    int words = 1;
    int level = FERRY_LOG_INFO;
    int opt;
    int rc;

    memset(&cli, 0, sizeof(cli));
    ferry_error_clear(&err);
    /* Our own messages, under our name rather than argv[0]'s path. */
    opterr = 0;
    for (;;) {
        opt = getopt_long(argc, argv, ":c:t:r:vqh", longopts, NULL);
        if (opt == -1)
            break;
        switch (opt) {
        case 'c':
            cli.config = optarg;
            given |= OPT_CONFIG;
            break;
        case 't':
            cli.tenant = optarg;
            given |= OPT_TENANT;
            break;
        case 'r':
            cli.reason = optarg;
            given |= OPT_REASON;
            break;
        case 'o':
            cli.out = optarg;
            given |= OPT_OUT;
            break;
        case 'b':
            cli.bits = optarg;
            given |= OPT_BITS;
            break;
        case 'm':
            cli.comment = optarg;
            given |= OPT_COMMENT;
            break;
        case 'w':
            cli.lock_wait = optarg;
            given |= OPT_LOCK_WAIT;
            break;
        case 'v':
            level = FERRY_LOG_DEBUG;
            break;
        case 'q':
            level = FERRY_LOG_WARN;
            break;
        case 'h':
            usage(stdout);
            return 0;
        case 'V':
            printf(PROG " " FERRY_VERSION "\n");
            return 0;
        case ':':
            return usage_error("option '%s' needs a value", argv[optind - 1]);
        default:
            if (optopt)
                return usage_error("unknown option '-%c'", optopt);
            return usage_error("unknown option '%s'", argv[optind - 1]);
        }
    }
    ferry_log_init(PROG, level);

    if (optind >= argc)
        return usage_error("missing command");
    cmd = find_command(argv + optind, argc - optind, &words);
    if (!cmd && strcmp(argv[optind], "keys") == 0)
        return usage_error("keys needs add, list or revoke");
    if (!cmd)
        return usage_error("unknown command '%s'", argv[optind]);
    cli.args = argv + optind + words;
    cli.nargs = argc - optind - words;
    if (cli.nargs > cmd->max_args)
        return usage_error("unexpected argument '%s'", cli.args[cmd->max_args]);
    if ((cmd->need & OPT_CONFIG) && !(given & OPT_CONFIG))
        return usage_error("%s needs --config FILE", cmd->name);
    if ((cmd->need & OPT_TENANT) && !(given & OPT_TENANT))
        return usage_error("%s needs --tenant ID", cmd->name);
    if ((given & ~cmd->allow) & OPT_CONFIG)
        return usage_error("%s takes no --config", cmd->name);
    if ((given & ~cmd->allow) & OPT_TENANT)
        return usage_error("%s takes no --tenant", cmd->name);
    if ((given & ~cmd->allow) & OPT_REASON)
        return usage_error("%s takes no --reason", cmd->name);
    if ((cmd->need & OPT_OUT) && !(given & OPT_OUT))
        return usage_error("%s needs --out FILE", cmd->name);
    if ((given & ~cmd->allow) & OPT_OUT)
        return usage_error("%s takes no --out", cmd->name);
    if ((given & ~cmd->allow) & OPT_BITS)
        return usage_error("%s takes no --bits", cmd->name);
    if ((given & ~cmd->allow) & OPT_COMMENT)
        return usage_error("%s takes no --comment", cmd->name);
    if ((given & ~cmd->allow) & OPT_LOCK_WAIT)
        return usage_error("%s takes no --lock-wait", cmd->name);

    ferry_crypto_init();
    rc = cmd->run(&cli, &err);
    if (rc) {
        fprintf(stderr, PROG ": %s\n", err.msg[0] ? err.msg : ferry_strerror(rc));
        return ferry_exit_status(rc);
    }
    return 0;
}
