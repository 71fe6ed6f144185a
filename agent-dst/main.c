/*
 * main.c - the ferry-dst command line.
 */
#include "../common/config.h"
#include "../common/crypto.h"
#include "../common/error.h"
#include "../common/log.h"
#include "cutover.h"
#include "follow.h"
#include "sync.h"
#include "verify.h"

#include <curl/curl.h>
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

static const char usage[] =
    "usage: ferry-dst <command> [options]\n"
    "\n"
    "commands:\n"
    "  sync    --config C [--dry-run]   bulk copy, then deltas; resumable\n"
    "  status  --config C [--json]      what the state says, without the source\n"
    "  keygen  --out FILE [--bits N]    this target's key pair: FILE (0600), FILE.pub\n"
    "  verify  --config C [--repair] [--keyed-hash] [--json]\n"
    "                                   compare with the source (counts, checksums, keys);\n"
    "                                   --repair pulls the differing keys again;\n"
    "                                   --keyed-hash hashes rows with SipHash in the agents\n"
    "                                   even between two PostgreSQL servers (slower)\n"
    "  cutover --config C [--then CMD]... [--force] [--json]\n"
    "                                   freeze the tenant on the source, final delta, verify,\n"
    "                                   record, then run each CMD (sh -c); the source stays\n"
    "                                   frozen whatever happens\n"
    "  follow  --config C --interval SECONDS [--json]\n"
    "                                   delta syncs until SIGINT/SIGTERM, with the lag\n"
    "\n"
    "options: -v/--verbose, -q/--quiet, -h/--help, --version\n"
    "exit status: 0 ok, 1 a check failed, 2 usage or config error, 3 auth refused,\n"
    "             4 source unreachable, 5 data or schema error\n";

struct opts {
    const char *config;
    const char *out;  /* keygen */
    const char *bits; /* keygen */
    int dry_run;
    int repair; /* verify */
    int keyed;  /* verify */
    /* cutover: hooks in order, --force; follow: --interval */
    const char *then[FERRY_CUTOVER_MAX_HOOKS];
    size_t nthen;
    int force;
    const char *interval;
    int json;
    int quiet;
    int verbose;
};

/*
 * --json: an error before any report (no config, an unreachable source, a
 * refused key) as one JSON object on stdout too, for scripts that read it.
 */
static void json_error(const struct ferry_error *err)
{
    printf("{\"ok\":false,\"code\":\"%s\",\"exit\":%d,\"msg\":", ferry_strcode(err->code),
           ferry_exit_status(err->code));
    ferry_json_str(stdout, err->msg[0] ? err->msg : ferry_strerror(err->code));
    printf("}\n");
}

static int fail(const struct ferry_error *err)
{
    fprintf(stderr, "ferry-dst: %s\n", err->msg[0] ? err->msg : ferry_strerror(err->code));
    return ferry_exit_status(err->code);
}

static int load(const struct opts *o, struct ferry_config *cfg, struct ferry_error *err)
{
    int rc;

    if (!o->config)
        return ferry_error_set(err, FERRY_EUSAGE, "--config is required");
    rc = ferry_config_load(o->config, cfg, err);
    if (!rc)
        rc = ferry_config_require_dst(cfg, err);
    return rc;
}

static volatile sig_atomic_t sync_stop;

static void on_sync_stop(int sig)
{
    (void)sig;
    sync_stop = 1;
}

/*
 * SIGINT or SIGTERM (systemd stopping the unit, a ^C) ends the sync after
 * the page or batch being applied, recorded as stopped, resumable; a
 * second one ends it at once (SA_RESETHAND).
 */
static int cmd_sync(const struct opts *o, struct ferry_error *err)
{
    struct ferry_config cfg;
    struct ferry_sync_opts so = {.dry_run = o->dry_run, .quiet = o->quiet, .stop = &sync_stop};
    struct sigaction sa, old_int, old_term;
    int rc;

    memset(&cfg, 0, sizeof(cfg));
    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = on_sync_stop;
    sigemptyset(&sa.sa_mask);
    sa.sa_flags = SA_RESETHAND | SA_RESTART;
    sigaction(SIGINT, &sa, &old_int);
    sigaction(SIGTERM, &sa, &old_term);
    rc = load(o, &cfg, err);
    if (!rc)
        rc = ferry_sync(&cfg, &so, err);
    ferry_config_release(&cfg);
    sigaction(SIGINT, &old_int, NULL);
    sigaction(SIGTERM, &old_term, NULL);
    return rc;
}

static int cmd_status(const struct opts *o, struct ferry_error *err)
{
    struct ferry_config cfg;
    int rc;

    memset(&cfg, 0, sizeof(cfg));
    rc = load(o, &cfg, err);
    if (!rc)
        rc = ferry_status(&cfg, o->json, err);
    if (rc && o->json)
        json_error(err);
    ferry_config_release(&cfg);
    return rc;
}

static int cmd_verify(const struct opts *o, struct ferry_error *err)
{
    struct ferry_config cfg;
    struct ferry_verify_opts vo;
    struct ferry_verify_report rep;
    int rc;

    memset(&cfg, 0, sizeof(cfg));
    memset(&vo, 0, sizeof(vo));
    vo.repair = o->repair;
    vo.keyed = o->keyed;
    vo.json = o->json;
    memset(&rep, 0, sizeof(rep));
    rc = load(o, &cfg, err);
    if (!rc)
        rc = ferry_verify(&cfg, &vo, &rep, err);
    /* a verify that compared printed its report, errors and all */
    if (rc && o->json && !rep.tables)
        json_error(err);
    ferry_verify_report_release(&rep);
    ferry_config_release(&cfg);
    return rc;
}

static int cmd_cutover(const struct opts *o, struct ferry_error *err)
{
    struct ferry_config cfg;
    struct ferry_cutover_opts co;
    int rc;

    memset(&cfg, 0, sizeof(cfg));
    memset(&co, 0, sizeof(co));
    co.hooks = o->then;
    co.nhooks = o->nthen;
    co.force = o->force;
    co.json = o->json;
    co.quiet = o->quiet;
    rc = load(o, &cfg, err);
    if (!rc)
        rc = ferry_cutover(&cfg, &co, err); /* prints its report, errors and all */
    else if (o->json)
        json_error(err);
    ferry_config_release(&cfg);
    return rc;
}

static int cmd_follow(const struct opts *o, struct ferry_error *err)
{
    struct ferry_config cfg;
    struct ferry_follow_opts fo;
    char *end = NULL;
    int rc;

    memset(&cfg, 0, sizeof(cfg));
    memset(&fo, 0, sizeof(fo));
    if (!o->interval) {
        rc = ferry_error_set(err, FERRY_EUSAGE, "follow needs --interval SECONDS");
    } else {
        fo.interval = strtod(o->interval, &end);
        if (end == o->interval || *end || !(fo.interval > 0) || fo.interval > 86400)
            rc = ferry_error_set(err, FERRY_EUSAGE,
                                 "--interval must be a number of seconds above 0, at most 86400");
        else
            rc = load(o, &cfg, err);
    }
    fo.quiet = o->quiet;
    fo.json = o->json;
    if (!rc)
        rc = ferry_follow(&cfg, &fo, err); /* prints its lines, the last one's error too */
    else if (o->json)
        json_error(err);
    ferry_config_release(&cfg);
    return rc;
}

/* The key the source's operator authorises with ferry-src keys add (FILE.pub). */
static int cmd_keygen(const struct opts *o, struct ferry_error *err)
{
    struct ferry_key *k = NULL;
    unsigned long bits = 0;
    char pub[4096];
    struct stat st;
    char *end = NULL;
    int rc;

    if (!o->out)
        return ferry_error_set(err, FERRY_EUSAGE, "keygen needs --out FILE");
    if (o->bits) {
        bits = strtoul(o->bits, &end, 10);
        if (end == o->bits || *end || bits < FERRY_KEY_BITS_MIN || bits > FERRY_KEY_BITS_MAX)
            return ferry_error_set(err, FERRY_EUSAGE, "--bits must be %d..%d", FERRY_KEY_BITS_MIN,
                                   FERRY_KEY_BITS_MAX);
    }
    /* Refuse before the slow generation; ferry_key_save checks again, atomically. */
    snprintf(pub, sizeof(pub), "%s.pub", o->out);
    if (lstat(o->out, &st) == 0 || lstat(pub, &st) == 0)
        return ferry_error_set(err, FERRY_ECONFIG, "%s exists; remove it or choose another --out",
                               lstat(o->out, &st) == 0 ? o->out : pub);
    rc = ferry_key_generate((unsigned)bits, &k, err);
    if (!rc)
        rc = ferry_key_save(k, o->out, err);
    if (!rc)
        printf("wrote %s (private, mode 0600) and %s\nfingerprint %s\n", o->out, pub,
               ferry_key_fingerprint(k));
    ferry_key_free(k);
    return rc;
}

/*
 * Each command and the options it takes besides --quiet, --verbose and
 * --help (getopt_long's codes): any other is refused, so
 * that `cutover --dry-run` does not cut over.
 */
static const struct {
    const char *name;
    int (*fn)(const struct opts *o, struct ferry_error *err);
    const char *takes;
} commands[] = {
    {"sync", cmd_sync, "cn"},       {"status", cmd_status, "cj"},     {"keygen", cmd_keygen, "ob"},
    {"verify", cmd_verify, "crkj"}, {"cutover", cmd_cutover, "ctfj"}, {"follow", cmd_follow, "cij"},
};

int main(int argc, char **argv)
{
    static const struct option longopts[] = {
        {"config", required_argument, NULL, 'c'},
        {"dry-run", no_argument, NULL, 'n'},
        {"json", no_argument, NULL, 'j'},
        {"quiet", no_argument, NULL, 'q'},
        {"verbose", no_argument, NULL, 'v'},
        {"help", no_argument, NULL, 'h'},
        {"version", no_argument, NULL, 'V'},
        {"out", required_argument, NULL, 'o'},
        {"bits", required_argument, NULL, 'b'},
        {"repair", no_argument, NULL, 'r'},
        {"then", required_argument, NULL, 't'},
        {"force", no_argument, NULL, 'f'},
        {"interval", required_argument, NULL, 'i'},
        {"keyed-hash", no_argument, NULL, 'k'},
        {NULL, 0, NULL, 0},
    };
    struct ferry_error err;
    struct opts o;
    const char *cmd;
    char given[32] = ""; /* the options' codes, once each */
    int c, rc;

    memset(&o, 0, sizeof(o));
    ferry_error_clear(&err);
    if (argc < 2) {
        fputs(usage, stderr);
        return 2;
    }
    cmd = argv[1];
    if (!strcmp(cmd, "-h") || !strcmp(cmd, "--help") || !strcmp(cmd, "help")) {
        fputs(usage, stdout);
        return 0;
    }
    if (!strcmp(cmd, "--version")) {
        puts("ferry-dst 0.1.0");
        return 0;
    }
    optind = 2;
    while ((c = getopt_long(argc, argv, "c:nqvh", longopts, NULL)) != -1) {
        if (c > 0 && c != '?' && !strchr(given, c) && strlen(given) + 1 < sizeof(given))
            given[strlen(given)] = (char)c;
        switch (c) {
        case 'c':
            o.config = optarg;
            break;
        case 'n':
            o.dry_run = 1;
            break;
        case 'r':
            o.repair = 1;
            break;
        case 'k':
            o.keyed = 1;
            break;
        case 't':
            if (o.nthen == FERRY_CUTOVER_MAX_HOOKS) {
                fprintf(stderr, "ferry-dst: at most %d --then hooks\n", FERRY_CUTOVER_MAX_HOOKS);
                return 2;
            }
            o.then[o.nthen++] = optarg;
            break;
        case 'f':
            o.force = 1;
            break;
        case 'i':
            o.interval = optarg;
            break;
        case 'j':
            o.json = 1;
            break;
        case 'o':
            o.out = optarg;
            break;
        case 'b':
            o.bits = optarg;
            break;
        case 'q':
            o.quiet = 1;
            break;
        case 'v':
            o.verbose = 1;
            break;
        case 'h':
            fputs(usage, stdout);
            return 0;
        default:
            fputs(usage, stderr);
            return 2;
        }
    }
    if (optind < argc) {
        fprintf(stderr, "ferry-dst: unexpected argument '%s'\n%s", argv[optind], usage);
        return 2;
    }
    ferry_log_init("ferry-dst",
                   o.verbose ? FERRY_LOG_DEBUG : (o.quiet ? FERRY_LOG_WARN : FERRY_LOG_INFO));
    for (size_t i = 0; i < sizeof(commands) / sizeof(commands[0]); i++) {
        if (strcmp(cmd, commands[i].name) != 0)
            continue;
        for (const char *g = given; *g; g++) {
            const struct option *lo = longopts;

            if (strchr("qvh", *g) || strchr(commands[i].takes, *g))
                continue;
            while (lo->name && lo->val != *g)
                lo++;
            fprintf(stderr,
                    "ferry-dst: %s does not take --%s (ferry-dst --help lists each "
                    "command's options)\n",
                    cmd, lo->name ? lo->name : "?");
            return 2;
        }
        ferry_crypto_init();
        curl_global_init(CURL_GLOBAL_DEFAULT);
        rc = commands[i].fn(&o, &err);
        curl_global_cleanup();
        return rc ? fail(&err) : 0;
    }
    fprintf(stderr, "ferry-dst: unknown command '%s'\n%s", cmd, usage);
    return 2;
}
