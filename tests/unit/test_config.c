/*
 * test_config.c - the INI configuration: a full file of both agents read
 * back field by field, and every error with its exact message.
 */
#include "common/config.h"

/* test.h's test_tmpdir() trips gcc's -Wformat-truncation at -O2 under -Werror */
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wformat-truncation"
#endif
#include "test.h"
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic pop
#endif

#include <stdio.h>
#include <string.h>

static const char *dir;
static char path[600];

static const char *write_conf(const char *text)
{
    static int n;
    FILE *f;

    snprintf(path, sizeof(path), "%s/c%d.ini", dir, ++n);
    f = fopen(path, "w");
    ASSERT(f != NULL);
    ASSERT_EQ(fputs(text, f) >= 0, 1);
    ASSERT_EQ(fclose(f), 0);
    return path;
}

/* Load text, expect ECONFIG and the message "PATH:LINE: tail" exactly. */
static void expect_error(const char *text, int line, const char *tail)
{
    struct ferry_config cfg;
    struct ferry_error err = {0};
    char want[FERRY_ERRMSG_MAX + 700];
    const char *p = write_conf(text);

    ASSERT_EQ(ferry_config_load(p, &cfg, &err), FERRY_ECONFIG);
    ASSERT_EQ(err.code, FERRY_ECONFIG);
    snprintf(want, sizeof(want), "%s:%d: %s", p, line, tail);
    ASSERT_STR(err.msg, want);
    ferry_config_release(&cfg);
}

static const char full[] = "; ferry configuration for both agents\n"
                           "[source]\n"
                           "database = sqlite:///srv/app.db\n"
                           "listen = 127.0.0.1:7700   ; inline comment, cut\n"
                           "batch_rows = 250\n"
                           "authorized_keys = /etc/ferry/authorized\n"
                           "identity = /etc/ferry/src.key\n"
                           "tls_cert = /etc/ferry/cert.pem\n"
                           "tls_key = /etc/ferry/key.pem\n"
                           "url = https://10.0.0.1:7700\n"
                           "public_key = /etc/ferry/src.pub\n"
                           "ca = /etc/ferry/ca.pem\n"
                           "\n"
                           "[target]\n"
                           "database = postgresql://ferry@localhost/app?sslmode=disable\n"
                           "state = /var/lib/ferry/team42\n"
                           "tenant = 42\n"
                           "identity = /etc/ferry/dst.key\n"
                           "\n"
                           "[scope]\n"
                           "root = teams\n"
                           "exclude = audit_log , sessions,, tmp_x ,\n"
                           "    more_excluded\n"
                           "\n"
                           "# a comment\n"
                           "[table posts]\n"
                           "scope = posts.board_ref IN (SELECT id FROM boards\n"
                           "    WHERE team = :tenant)\n"
                           "\n"
                           "[ table   boards ]\n"
                           "scope = boards.team = :tenant\n"
                           "\n"
                           "[mask]\n"
                           "users.email = 'user' || id || '@example.invalid'\n"
                           "app.users.name = 'x;y'\n";

static void test_full(void)
{
    struct ferry_config cfg;
    struct ferry_error err = {0};
    const struct ferry_table_conf *t;
    const char *p = write_conf(full);

    ASSERT_EQ(ferry_config_load(p, &cfg, &err), 0);
    ASSERT_STR(cfg.path, p);
    ASSERT_STR(cfg.source.database, "sqlite:///srv/app.db");
    ASSERT_STR(cfg.source.listen, "127.0.0.1:7700");
    ASSERT_EQ(cfg.source.batch_rows, 250);
    ASSERT_STR(cfg.source.authorized_keys, "/etc/ferry/authorized");
    ASSERT_STR(cfg.source.identity, "/etc/ferry/src.key");
    ASSERT_STR(cfg.source.tls_cert, "/etc/ferry/cert.pem");
    ASSERT_STR(cfg.source.tls_key, "/etc/ferry/key.pem");
    ASSERT_STR(cfg.source.url, "https://10.0.0.1:7700");
    ASSERT_STR(cfg.source.public_key, "/etc/ferry/src.pub");
    ASSERT_STR(cfg.source.ca, "/etc/ferry/ca.pem");
    ASSERT_STR(cfg.target.database, "postgresql://ferry@localhost/app?sslmode=disable");
    ASSERT_STR(cfg.target.state, "/var/lib/ferry/team42");
    ASSERT_STR(cfg.target.tenant, "42");
    ASSERT_STR(cfg.target.identity, "/etc/ferry/dst.key");
    ASSERT_STR(cfg.scope.root, "teams");
    ASSERT_EQ(cfg.scope.nexclude, 4);
    ASSERT_STR(cfg.scope.exclude[0], "audit_log");
    ASSERT_STR(cfg.scope.exclude[1], "sessions");
    ASSERT_STR(cfg.scope.exclude[2], "tmp_x");
    ASSERT_STR(cfg.scope.exclude[3], "more_excluded");
    ASSERT_EQ(ferry_config_excluded(&cfg, "sessions"), 1);
    ASSERT_EQ(ferry_config_excluded(&cfg, "more_excluded"), 1);
    ASSERT_EQ(ferry_config_excluded(&cfg, "session"), 0);
    ASSERT_EQ(ferry_config_excluded(&cfg, "posts"), 0);

    ASSERT_EQ(cfg.ntables, 2);
    t = ferry_config_table(&cfg, "posts");
    ASSERT(t != NULL);
    ASSERT_STR(t->scope, "posts.board_ref IN (SELECT id FROM boards WHERE team = :tenant)");
    t = ferry_config_table(&cfg, "boards");
    ASSERT(t != NULL);
    ASSERT_STR(t->name, "boards");
    ASSERT_STR(t->scope, "boards.team = :tenant");
    ASSERT(ferry_config_table(&cfg, "teams") == NULL);

    ASSERT_EQ(cfg.nmasks, 2);
    ASSERT_STR(cfg.masks[0].table, "users");
    ASSERT_STR(cfg.masks[0].column, "email");
    ASSERT_STR(cfg.masks[0].expr, "'user' || id || '@example.invalid'");
    ASSERT_STR(cfg.masks[1].table, "app.users"); /* the last dot splits */
    ASSERT_STR(cfg.masks[1].column, "name");
    ASSERT_STR(cfg.masks[1].expr, "'x;y'"); /* ';' without a blank before it is data */

    ASSERT_EQ(ferry_config_require_src(&cfg, &err), 0);
    ASSERT_EQ(ferry_config_require_dst(&cfg, &err), 0);
    ferry_config_release(&cfg);
    ASSERT(cfg.path == NULL && cfg.tables == NULL);
    ferry_config_release(&cfg); /* twice is harmless */
}

static void test_defaults_and_required(void)
{
    struct ferry_config cfg;
    struct ferry_error err = {0};
    char want[700];
    const char *p = write_conf("[source]\ndatabase = sqlite:a.db\n"
                               "[target]\ndatabase = sqlite:b.db\nstate = /tmp/s\n"
                               "[source]\nurl = http://h:1\n");

    ASSERT_EQ(ferry_config_load(p, &cfg, &err), 0);
    ASSERT_EQ(cfg.source.batch_rows, 5000);
    ASSERT(cfg.source.listen == NULL);
    ASSERT_STR(cfg.source.url, "http://h:1"); /* a section may be reopened */
    ASSERT_EQ(cfg.scope.nexclude, 0);
    ASSERT_EQ(ferry_config_excluded(&cfg, "x"), 0);
    ASSERT_EQ(ferry_config_require_src(&cfg, &err), FERRY_ECONFIG);
    snprintf(want, sizeof(want), "config %s: [scope] root is missing", p);
    ASSERT_STR(err.msg, want);
    ASSERT_EQ(ferry_config_require_dst(&cfg, &err), FERRY_ECONFIG);
    snprintf(want, sizeof(want), "config %s: [target] tenant is missing", p);
    ASSERT_STR(err.msg, want);
    ferry_config_release(&cfg);

    p = write_conf("[scope]\nroot = teams\n[target]\ntenant = 1\n");
    ASSERT_EQ(ferry_config_load(p, &cfg, &err), 0);
    ASSERT_EQ(ferry_config_require_src(&cfg, &err), FERRY_ECONFIG);
    snprintf(want, sizeof(want), "config %s: [source] database is missing", p);
    ASSERT_STR(err.msg, want);
    ASSERT_EQ(ferry_config_require_dst(&cfg, &err), FERRY_ECONFIG);
    snprintf(want, sizeof(want), "config %s: [target] database is missing", p);
    ASSERT_STR(err.msg, want);
    ferry_config_release(&cfg);

    p = write_conf("[target]\ndatabase = sqlite:d\nstate = s\ntenant = 1\n");
    ASSERT_EQ(ferry_config_load(p, &cfg, &err), 0);
    ASSERT_EQ(ferry_config_require_dst(&cfg, &err), FERRY_ECONFIG);
    snprintf(want, sizeof(want), "config %s: [source] url is missing", p);
    ASSERT_STR(err.msg, want);
    ferry_config_release(&cfg);

    /* a database of no engine ferry has, said at load: its scheme only (a password may follow) */
    p = write_conf("[source]\ndatabase = mysql://u:secret@h/db\nurl = http://h:1\n"
                   "[scope]\nroot = t\n[target]\ndatabase = d.db\nstate = s\ntenant = 1\n");
    ASSERT_EQ(ferry_config_load(p, &cfg, &err), 0);
    ASSERT_EQ(ferry_config_require_src(&cfg, &err), FERRY_ECONFIG);
    snprintf(want, sizeof(want),
             "config %s: [source] database 'mysql...' is not a database ferry knows: use "
             "sqlite:///path or postgresql://...",
             p);
    ASSERT_STR(err.msg, want);
    ASSERT(strstr(err.msg, "secret") == NULL);
    ASSERT_EQ(ferry_config_require_dst(&cfg, &err), FERRY_ECONFIG);
    ASSERT(strstr(err.msg, "[target] database 'd.db...'") != NULL);
    ferry_config_release(&cfg);

    /* batch_rows bounds are inclusive */
    p = write_conf("[source]\nbatch_rows = 1000000\n");
    ASSERT_EQ(ferry_config_load(p, &cfg, &err), 0);
    ASSERT_EQ(cfg.source.batch_rows, 1000000);
    ferry_config_release(&cfg);
    p = write_conf("[source]\nbatch_rows = 1\n");
    ASSERT_EQ(ferry_config_load(p, &cfg, &err), 0);
    ASSERT_EQ(cfg.source.batch_rows, 1);
    ASSERT_EQ(cfg.source.session_ttl, 0); /* not given: the agent's default */
    ferry_config_release(&cfg);

    /* freeze_wait: seconds, 1 to 50 */
    p = write_conf("[source]\nfreeze_wait = 50\n");
    ASSERT_EQ(ferry_config_load(p, &cfg, &err), 0);
    ASSERT_EQ(cfg.source.freeze_wait, 50);
    ferry_config_release(&cfg);

    /* session_ttl: seconds, 1 s to a week */
    p = write_conf("[source]\nsession_ttl = 604800\n");
    ASSERT_EQ(ferry_config_load(p, &cfg, &err), 0);
    ASSERT_EQ(cfg.source.session_ttl, 604800);
    ferry_config_release(&cfg);
    p = write_conf("[source]\nsession_ttl = 1\n");
    ASSERT_EQ(ferry_config_load(p, &cfg, &err), 0);
    ASSERT_EQ(cfg.source.session_ttl, 1);
    ASSERT_EQ(cfg.source.freeze_wait, 0); /* not given: FERRY_FREEZE_WAIT_DEFAULT */
    /* max_message not given: 1024 MB, the most PostgreSQL values need */
    ASSERT_EQ(ferry_config_max_message(&cfg), (size_t)1 << 30);
    ferry_config_release(&cfg);

    /* max_message: MB, 1 to 1024, in bytes for the agents */
    p = write_conf("[source]\nmax_message = 64\n");
    ASSERT_EQ(ferry_config_load(p, &cfg, &err), 0);
    ASSERT_EQ(ferry_config_max_message(&cfg), (size_t)64 << 20);
    ferry_config_release(&cfg);
    p = write_conf("[source]\nmax_message = 1\n");
    ASSERT_EQ(ferry_config_load(p, &cfg, &err), 0);
    ASSERT_EQ(ferry_config_max_message(&cfg), (size_t)1 << 20);
    ferry_config_release(&cfg);
}

static void test_errors(void)
{
    struct ferry_config cfg;
    struct ferry_error err = {0};
    char want[700];
    char longline[400];

    /* misspelt keys, with the closest known key when it is close */
    expect_error("[target]\ndatabse = sqlite:x.db\n", 2,
                 "unknown key 'databse' in [target]; did you mean 'database'?");
    expect_error("[source]\n\nbatch_row = 5\n", 3,
                 "unknown key 'batch_row' in [source]; did you mean 'batch_rows'?");
    expect_error("[source]\ntenant = 42\n", 2,
                 "unknown key 'tenant' in [source]; it belongs in "
                 "[target]");
    expect_error("[source]\ncolour = blue\n", 2, "unknown key 'colour' in [source]");
    expect_error("[scope]\nroot = t\nexlcude = a\n", 3,
                 "unknown key 'exlcude' in [scope]; did you mean 'exclude'?");
    expect_error("[table posts]\nscpoe = x = 1\n", 2,
                 "unknown key 'scpoe' in [table posts]; did you mean 'scope'?");
    expect_error("[ table  posts ]\nroot = x\n", 2,
                 "unknown key 'root' in [table posts]; it belongs in [scope]");

    /* unknown sections, reported at the header even when empty */
    expect_error("[source]\nurl = x\n[tagret]\n", 3,
                 "unknown section [tagret]; did you mean [target]?");
    expect_error("[database]\nurl = x\n", 1,
                 "unknown section [database]: sections are [source], [target], [scope], "
                 "[table NAME] and [mask]");
    expect_error("[tables posts]\nscope = x\n", 1,
                 "unknown section [tables posts]: sections are [source], [target], [scope], "
                 "[table NAME] and [mask]");
    expect_error("[table]\nscope = x\n", 1, "[table] needs a table name: [table NAME]");
    expect_error("root = teams\n", 1,
                 "key 'root' is outside any section: put it under [source], [target], [scope], "
                 "[table NAME] or [mask]");

    /* duplicates, also across a reopened section */
    expect_error("[target]\ntenant = 1\ntenant = 2\n", 3, "duplicate key 'tenant' in [target]");
    expect_error("[target]\ntenant = 1\n[source]\nurl = u\n[target]\ntenant = 1\n", 6,
                 "duplicate key 'tenant' in [target]");
    expect_error("[source]\nbatch_rows = 5\nbatch_rows = 5\n", 3,
                 "duplicate key 'batch_rows' in [source]");
    expect_error("[scope]\nexclude = a\nexclude = b\n", 3, "duplicate key 'exclude' in [scope]");
    expect_error("[table t]\nscope = a\n[table t]\nscope = b\n", 4,
                 "duplicate key 'scope' in [table t]");
    expect_error("[mask]\nu.e = 'a'\nu.e = 'b'\n", 3, "duplicate key 'u.e' in [mask]");

    /* batch_rows: an integer in 1..1000000, nothing else */
    static const char *const bad_rows[] = {
        "abc", "0", "-5", "1000001", "12x", "1.5", "99999999999999999999", "0x10"};
    for (size_t i = 0; i < sizeof(bad_rows) / sizeof(bad_rows[0]); i++) {
        char text[128];
        char tail[128];

        snprintf(text, sizeof(text), "[source]\nbatch_rows = %s\n", bad_rows[i]);
        snprintf(tail, sizeof(tail), "batch_rows must be an integer from 1 to 1000000, not '%s'",
                 bad_rows[i]);
        expect_error(text, 2, tail);
    }

    /* over 50 s the target's request would stall out first */
    expect_error("[source]\nfreeze_wait = 51\n", 2,
                 "freeze_wait must be a number of seconds from 1 to 50, not '51'");
    expect_error("[source]\nfreeze_wait = 0\n", 2,
                 "freeze_wait must be a number of seconds from 1 to 50, not '0'");
    expect_error("[source]\nsession_ttl = 0\n", 2,
                 "session_ttl must be a number of seconds from 1 to 604800, not '0'");
    expect_error("[source]\nsession_ttl = 604801\n", 2,
                 "session_ttl must be a number of seconds from 1 to 604800, not '604801'");
    expect_error("[source]\nsession_ttl = 15m\n", 2,
                 "session_ttl must be a number of seconds from 1 to 604800, not '15m'");
    expect_error("[source]\nsession_ttl = 60\nsession_ttl = 60\n", 3,
                 "duplicate key 'session_ttl' in [source]");
    expect_error("[source]\nmax_message = 0\n", 2,
                 "max_message must be a number of MB from 1 to 1024, not '0'");
    expect_error("[source]\nmax_message = 1025\n", 2,
                 "max_message must be a number of MB from 1 to 1024, not '1025'");
    expect_error("[source]\nmax_message = 64MB\n", 2,
                 "max_message must be a number of MB from 1 to 1024, not '64MB'");
    expect_error("[source]\nsession_tll = 60\n", 2,
                 "unknown key 'session_tll' in [source]; did you mean 'session_ttl'?");

    /* values and lines */
    expect_error("[target]\ntenant =\n", 2, "empty value for 'tenant' in [target]");
    expect_error("[mask]\nemail = 'x'\n", 2, "mask key 'email' must be TABLE.COLUMN");
    expect_error("[mask]\n.email = 'x'\n", 2, "mask key '.email' must be TABLE.COLUMN");
    expect_error("[target]\n  database = a\n  state = b\n", 3,
                 "indented line continues 'database' in [target], which takes one line: remove "
                 "the indentation");
    expect_error("[target]\ntenant = 1\njust words\n", 3,
                 "syntax error: expected [section], KEY = VALUE or a comment");
    memset(longline, 'x', sizeof(longline));
    memcpy(longline, "[table t]\nscope = ", 18);
    memcpy(longline + sizeof(longline) - 2, "\n", 2);
    expect_error(longline, 2,
                 "line longer than 197 bytes (or holding a NUL byte): split a long value over "
                 "indented lines");

    /* a missing file */
    snprintf(path, sizeof(path), "%s/nosuch.ini", dir);
    ASSERT_EQ(ferry_config_load(path, &cfg, &err), FERRY_ECONFIG);
    snprintf(want, sizeof(want), "cannot read config %s: No such file or directory", path);
    ASSERT_STR(err.msg, want);
    ferry_config_release(&cfg);
    /* a directory is not a file */
    ASSERT_EQ(ferry_config_load(dir, &cfg, &err), FERRY_ECONFIG);
    snprintf(want, sizeof(want), "cannot read config %s: Is a directory", dir);
    ASSERT_STR(err.msg, want);
    ferry_config_release(&cfg);
}

int main(void)
{
    dir = test_tmpdir("config");
    test_full();
    test_defaults_and_required();
    test_errors();
    return TEST_DONE();
}
