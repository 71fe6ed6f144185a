/*
 * config.c - the INI configuration of both agents, read with inih.
 *
 * What the INI syntax means here (inih 55 as Debian builds it: multi-line
 * values and inline comments on, 200-byte line buffer):
 * - keys and values are trimmed of leading and trailing blanks; quotes are
 *   kept as written (no unquoting), so `database = "x"` is the value "x"
 *   with its quotes;
 * - ';' or '#' at the start of a line (after blanks) starts a comment; ';'
 *   after a blank ends the value (`a ; note`), ';' inside a value does not
 *   (`a;b` stays `a;b`); '#' never does;
 * - an indented line right after a key continues that key's value (Python
 *   configparser style), even after a blank line. ferry accepts that only
 *   for SQL and list values ([table] scope, [mask] expressions, [scope]
 *   exclude), joining the lines with one space; anywhere else an indented
 *   line is an error, because it usually is an indented key that inih would
 *   otherwise swallow into the previous value;
 * - a line longer than the buffer is an error (inih would split it and
 *   parse the rest as a new line); split a long value over indented lines;
 * - an empty value is an error: a key given without a value is a mistake.
 *
 * inih (as built) does not pass line numbers to the handler, so lines are
 * read through our own reader (ini_parse_stream), which counts them; the
 * same reader checks section headers as they are read, so an unknown
 * section is reported at its own line even when it holds no keys.
 */
#include "config.h"

#include <ini.h>

#include <errno.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define BATCH_ROWS_DEFAULT 5000
#define BATCH_ROWS_MAX 1000000
#define SESSION_TTL_MAX (7L * 24 * 3600) /* handshake.h FERRY_HS_TTL_MAX */
#define NAME_MAX_SEEN 256                /* longer than any line inih hands over */

enum section {
    SEC_NONE,
    SEC_SOURCE,
    SEC_TARGET,
    SEC_SCOPE,
    SEC_TABLE,
    SEC_MASK,
    SEC_UNKNOWN,
};

static const char *const section_names[] = {
    [SEC_SOURCE] = "source", [SEC_TARGET] = "target", [SEC_SCOPE] = "scope",
    [SEC_TABLE] = "table",   [SEC_MASK] = "mask",
};

enum kind {
    K_STRING, /* a char * field of struct ferry_config */
    K_LONG,   /* a long field of struct ferry_config, min..max */
    K_EXCLUDE,
    K_TABLE_SCOPE,
};

/* Entries of keys[] below. */
#define KEY_STRING(sec, name, field)                                                               \
    {                                                                                              \
        sec, name, K_STRING, offsetof(struct ferry_config, field), 0, 0, NULL                      \
    }
#define KEY_LONG(sec, name, field, min, max, what)                                                 \
    {                                                                                              \
        sec, name, K_LONG, offsetof(struct ferry_config, field), min, max, what                    \
    }
#define KEY_OTHER(sec, name, kind)                                                                 \
    {                                                                                              \
        sec, name, kind, 0, 0, 0, NULL                                                             \
    }

static const struct key {
    enum section sec;
    const char *name;
    enum kind kind;
    size_t off; /* K_STRING, K_LONG: offset of the field in struct ferry_config */
    long min, max;
    const char *what; /* K_LONG: "an integer", "a number of seconds" */
} keys[] = {
    KEY_STRING(SEC_SOURCE, "database", source.database),
    KEY_STRING(SEC_SOURCE, "listen", source.listen),
    KEY_LONG(SEC_SOURCE, "batch_rows", source.batch_rows, 1, BATCH_ROWS_MAX, "an integer"),
    KEY_LONG(SEC_SOURCE, "session_ttl", source.session_ttl, 1, SESSION_TTL_MAX,
             "a number of seconds"),
    KEY_LONG(SEC_SOURCE, "max_message", source.max_message, 1, FERRY_MAX_MESSAGE_MB,
             "a number of MB"),
    KEY_LONG(SEC_SOURCE, "freeze_wait", source.freeze_wait, 1, FERRY_FREEZE_WAIT_MAX,
             "a number of seconds"),
    KEY_STRING(SEC_SOURCE, "authorized_keys", source.authorized_keys),
    KEY_STRING(SEC_SOURCE, "identity", source.identity),
    KEY_STRING(SEC_SOURCE, "tls_cert", source.tls_cert),
    KEY_STRING(SEC_SOURCE, "tls_key", source.tls_key),
    KEY_STRING(SEC_SOURCE, "metrics_token", source.metrics_token),
    KEY_STRING(SEC_SOURCE, "url", source.url),
    KEY_STRING(SEC_SOURCE, "public_key", source.public_key),
    KEY_STRING(SEC_SOURCE, "ca", source.ca),
    KEY_STRING(SEC_TARGET, "database", target.database),
    KEY_STRING(SEC_TARGET, "state", target.state),
    KEY_STRING(SEC_TARGET, "tenant", target.tenant),
    KEY_STRING(SEC_TARGET, "identity", target.identity),
    KEY_STRING(SEC_SOURCE, "schema", source.schema),
    KEY_STRING(SEC_TARGET, "schema", target.schema),
    KEY_STRING(SEC_SCOPE, "root", scope.root),
    KEY_OTHER(SEC_SCOPE, "exclude", K_EXCLUDE),
    KEY_OTHER(SEC_TABLE, "scope", K_TABLE_SCOPE),
};

struct parse {
    struct ferry_config *cfg;
    struct ferry_error *err;
    FILE *f;
    int line;               /* number of the line inih is handling */
    int indented;           /* that line starts with a blank */
    int failed;             /* err is set; stop reading */
    unsigned char seen[64]; /* K_LONG keys given, by index in keys[] */
    char *exclude;          /* [scope] exclude as written, split at the end */
    /* the key set last since the last section header, for continuations */
    int have_last;
    char last_section[NAME_MAX_SEEN];
    char last_name[NAME_MAX_SEEN];
    char **last_value; /* where a continuation appends, or NULL if not allowed */
};

static int fail(struct parse *ps, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static int fail(struct parse *ps, int code, const char *fmt, ...)
{
    char msg[FERRY_ERRMSG_MAX];
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    ps->failed = 1;
    return ferry_error_set(ps->err, code, "%s:%d: %s", ps->cfg->path, ps->line, msg);
}

static int oom(struct parse *ps)
{
    return fail(ps, FERRY_ENOMEM, "out of memory reading the configuration");
}

/* Levenshtein distance, or a large number for names too long to bother. */
static size_t edit_distance(const char *a, const char *b)
{
    size_t row[64];
    size_t la = strlen(a);
    size_t lb = strlen(b);

    if (lb >= sizeof(row) / sizeof(row[0]) || la >= 64)
        return SIZE_MAX;
    for (size_t j = 0; j <= lb; j++)
        row[j] = j;
    for (size_t i = 1; i <= la; i++) {
        size_t diag = row[0];

        row[0] = i;
        for (size_t j = 1; j <= lb; j++) {
            size_t up = row[j];
            size_t best = diag + (a[i - 1] != b[j - 1]);

            if (up + 1 < best)
                best = up + 1;
            if (row[j - 1] + 1 < best)
                best = row[j - 1] + 1;
            row[j] = best;
            diag = up;
        }
    }
    return row[lb];
}

/* Close enough to be a typo: at most 2 edits, and fewer than half the word. */
static int is_close(const char *typed, const char *known, size_t *best)
{
    size_t d = edit_distance(typed, known);

    if (d > 2 || d * 2 >= strlen(known) || d >= *best)
        return 0;
    *best = d;
    return 1;
}

static void trim(const char **p, size_t *n)
{
    while (*n > 0 && (**p == ' ' || **p == '\t')) {
        (*p)++;
        (*n)--;
    }
    while (*n > 0 && ((*p)[*n - 1] == ' ' || (*p)[*n - 1] == '\t'))
        (*n)--;
}

/*
 * Classify a section header's text (what is between the brackets). For
 * [table NAME], the trimmed NAME is returned in name and nlen.
 */
static enum section classify(const char *text, size_t len, const char **name, size_t *nlen)
{
    const char *p = text;
    size_t n = len;

    *name = NULL;
    *nlen = 0;
    trim(&p, &n);
    for (int s = SEC_SOURCE; s <= SEC_MASK; s++) {
        size_t k = strlen(section_names[s]);

        if (n < k || memcmp(p, section_names[s], k) != 0)
            continue;
        if (n == k)
            return (enum section)s;
        if (s == SEC_TABLE && (p[k] == ' ' || p[k] == '\t')) {
            *name = p + k;
            *nlen = n - k;
            trim(name, nlen);
            return SEC_TABLE;
        }
    }
    return SEC_UNKNOWN;
}

/* Check a "[...]" header line as the reader sees it. */
static int check_header(struct parse *ps, const char *line)
{
    const char *close = strchr(line, ']');
    const char *name;
    const char *suggest = NULL;
    size_t nlen;
    size_t best = SIZE_MAX;
    char typed[NAME_MAX_SEEN];

    if (!close)
        return 0; /* inih reports the syntax error with this line's number */
    switch (classify(line + 1, (size_t)(close - line - 1), &name, &nlen)) {
    case SEC_TABLE:
        if (nlen == 0)
            return fail(ps, FERRY_ECONFIG, "[table] needs a table name: [table NAME]");
        return 0;
    case SEC_UNKNOWN:
        break;
    default:
        return 0;
    }
    name = line + 1;
    nlen = (size_t)(close - line - 1);
    trim(&name, &nlen);
    snprintf(typed, sizeof(typed), "%.*s", (int)nlen, name);
    for (int s = SEC_SOURCE; s <= SEC_MASK; s++)
        if (is_close(typed, section_names[s], &best))
            suggest = section_names[s];
    if (suggest)
        return fail(ps, FERRY_ECONFIG, "unknown section [%s]; did you mean [%s]?", typed, suggest);
    return fail(ps, FERRY_ECONFIG,
                "unknown section [%s]: sections are [source], [target], [scope], [table NAME] "
                "and [mask]",
                typed);
}

/* inih's line reader: fgets that counts lines and refuses split lines. */
static char *read_line(char *str, int num, void *stream)
{
    struct parse *ps = stream;
    const char *p;
    size_t len;
    int c;

    if (ps->failed || !fgets(str, num, ps->f))
        return NULL;
    ps->line++;
    len = strlen(str);
    if (len == 0 || str[len - 1] != '\n') {
        c = getc(ps->f);
        if (c != EOF) {
            fail(ps, FERRY_ECONFIG,
                 "line longer than %d bytes (or holding a NUL byte): split a long value over "
                 "indented lines",
                 num - 3);
            return NULL;
        }
    }
    ps->indented = str[0] == ' ' || str[0] == '\t';
    p = str + strspn(str, " \t");
    if (ps->line == 1 && memcmp(p, "\xEF\xBB\xBF", 3) == 0)
        p += 3;
    if (*p == '[') {
        ps->have_last = 0;
        if (check_header(ps, p))
            return NULL;
    }
    return str;
}

static int unknown_key(struct parse *ps, enum section sec, const char *secname, const char *name)
{
    const char *suggest = NULL;
    const char *elsewhere = NULL;
    size_t best = SIZE_MAX;

    for (size_t i = 0; i < sizeof(keys) / sizeof(keys[0]); i++) {
        if (keys[i].sec != sec) {
            if (strcmp(keys[i].name, name) == 0)
                elsewhere = section_names[keys[i].sec];
            continue;
        }
        if (is_close(name, keys[i].name, &best))
            suggest = keys[i].name;
    }
    if (suggest)
        return fail(ps, FERRY_ECONFIG, "unknown key '%s' in [%s]; did you mean '%s'?", name,
                    secname, suggest);
    if (elsewhere)
        return fail(ps, FERRY_ECONFIG, "unknown key '%s' in [%s]; it belongs in [%s]", name,
                    secname, elsewhere);
    return fail(ps, FERRY_ECONFIG, "unknown key '%s' in [%s]", name, secname);
}

static int set_string(struct parse *ps, char **field, const char *secname, const char *name,
                      const char *value)
{
    if (*field)
        return fail(ps, FERRY_ECONFIG, "duplicate key '%s' in [%s]", name, secname);
    *field = strdup(value);
    if (!*field)
        return oom(ps);
    return 0;
}

static int set_long(struct parse *ps, size_t i, const char *secname, const char *value)
{
    const struct key *k = &keys[i];
    char *end;
    long v;

    if (ps->seen[i])
        return fail(ps, FERRY_ECONFIG, "duplicate key '%s' in [%s]", k->name, secname);
    ps->seen[i] = 1;
    errno = 0;
    v = strtol(value, &end, 10);
    if (errno || end == value || *end != '\0' || v < k->min || v > k->max)
        return fail(ps, FERRY_ECONFIG, "%s must be %s from %ld to %ld, not '%s'", k->name, k->what,
                    k->min, k->max, value);
    *(long *)((char *)ps->cfg + k->off) = v;
    return 0;
}

static int set_table_scope(struct parse *ps, const char *table, size_t tlen, const char *secname,
                           const char *value)
{
    struct ferry_config *cfg = ps->cfg;
    struct ferry_table_conf *t = NULL;
    struct ferry_table_conf *v;
    int rc;

    for (size_t i = 0; i < cfg->ntables; i++)
        if (strlen(cfg->tables[i].name) == tlen && memcmp(cfg->tables[i].name, table, tlen) == 0)
            t = &cfg->tables[i];
    if (!t) {
        v = realloc(cfg->tables, (cfg->ntables + 1) * sizeof(*v));
        if (!v)
            return oom(ps);
        cfg->tables = v;
        t = &cfg->tables[cfg->ntables];
        memset(t, 0, sizeof(*t));
        t->name = strndup(table, tlen);
        if (!t->name)
            return oom(ps);
        cfg->ntables++;
    }
    rc = set_string(ps, &t->scope, secname, "scope", value);
    if (!rc)
        ps->last_value = &t->scope;
    return rc;
}

static int set_mask(struct parse *ps, const char *name, const char *value)
{
    struct ferry_config *cfg = ps->cfg;
    const char *dot = strrchr(name, '.');
    struct ferry_mask_conf *v;
    struct ferry_mask_conf *m;
    size_t tlen;

    /* The last dot splits, so a schema-qualified "app.users.email" names table "app.users". */
    if (!dot || dot == name || dot[1] == '\0')
        return fail(ps, FERRY_ECONFIG, "mask key '%s' must be TABLE.COLUMN", name);
    tlen = (size_t)(dot - name);
    for (size_t i = 0; i < cfg->nmasks; i++)
        if (strlen(cfg->masks[i].table) == tlen && memcmp(cfg->masks[i].table, name, tlen) == 0 &&
            strcmp(cfg->masks[i].column, dot + 1) == 0)
            return fail(ps, FERRY_ECONFIG, "duplicate key '%s' in [mask]", name);
    v = realloc(cfg->masks, (cfg->nmasks + 1) * sizeof(*v));
    if (!v)
        return oom(ps);
    cfg->masks = v;
    m = &cfg->masks[cfg->nmasks];
    memset(m, 0, sizeof(*m));
    cfg->nmasks++;
    m->table = strndup(name, tlen);
    m->column = strdup(dot + 1);
    m->expr = strdup(value);
    if (!m->table || !m->column || !m->expr)
        return oom(ps);
    ps->last_value = &m->expr;
    return 0;
}

/* An indented line: append it to the value it continues, with one space. */
static int continue_value(struct parse *ps, const char *secname, const char *name,
                          const char *value)
{
    size_t a;
    size_t b = strlen(value);
    char *p;

    if (!ps->last_value)
        return fail(ps, FERRY_ECONFIG,
                    "indented line continues '%s' in [%s], which takes one line: remove the "
                    "indentation",
                    name, secname);
    a = strlen(*ps->last_value);
    p = realloc(*ps->last_value, a + 1 + b + 1);
    if (!p)
        return oom(ps);
    p[a] = ' ';
    memcpy(p + a + 1, value, b + 1);
    *ps->last_value = p;
    return 0;
}

static int on_key(struct parse *ps, const char *section, const char *name, const char *value)
{
    const char *tname;
    size_t tlen;
    enum section sec = classify(section, strlen(section), &tname, &tlen);
    char secname[NAME_MAX_SEEN];
    int rc;

    ps->last_value = NULL;
    if (section[0] == '\0')
        return fail(ps, FERRY_ECONFIG,
                    "key '%s' is outside any section: put it under [source], [target], [scope], "
                    "[table NAME] or [mask]",
                    name);
    if (sec == SEC_UNKNOWN) /* the reader refused the header already; not reached */
        return fail(ps, FERRY_ECONFIG, "unknown section [%s]", section);
    /* messages name the section as it should be written, whatever the spacing */
    if (sec == SEC_TABLE)
        snprintf(secname, sizeof(secname), "table %.*s", (int)tlen, tname);
    else
        snprintf(secname, sizeof(secname), "%s", section_names[sec]);
    if (value[0] == '\0')
        return fail(ps, FERRY_ECONFIG, "empty value for '%s' in [%s]", name, secname);
    if (sec == SEC_MASK)
        return set_mask(ps, name, value);
    for (size_t i = 0; i < sizeof(keys) / sizeof(keys[0]); i++) {
        if (keys[i].sec != sec || strcmp(keys[i].name, name) != 0)
            continue;
        switch (keys[i].kind) {
        case K_STRING:
            return set_string(ps, (char **)((char *)ps->cfg + keys[i].off), secname, name, value);
        case K_LONG:
            return set_long(ps, i, secname, value);
        case K_EXCLUDE:
            rc = set_string(ps, &ps->exclude, secname, name, value);
            if (!rc)
                ps->last_value = &ps->exclude;
            return rc;
        case K_TABLE_SCOPE:
            return set_table_scope(ps, tname, tlen, secname, value);
        }
    }
    return unknown_key(ps, sec, secname, name);
}

static int on_pair(void *user, const char *section, const char *name, const char *value)
{
    struct parse *ps = user;
    int rc;

    if (ps->failed)
        return 0;
    if (ps->indented && ps->have_last && strcmp(ps->last_section, section) == 0 &&
        strcmp(ps->last_name, name) == 0)
        rc = continue_value(ps, section, name, value);
    else
        rc = on_key(ps, section, name, value);
    if (rc)
        return 0;
    ps->have_last = 1;
    snprintf(ps->last_section, sizeof(ps->last_section), "%s", section);
    snprintf(ps->last_name, sizeof(ps->last_name), "%s", name);
    return 1;
}

/* Split [scope] exclude at commas; blanks around names and empty items are dropped. */
static int split_exclude(struct parse *ps)
{
    struct ferry_config *cfg = ps->cfg;
    const char *p = ps->exclude;
    size_t n = 1;

    for (const char *q = p; *q; q++)
        n += *q == ',';
    cfg->scope.exclude = calloc(n, sizeof(char *));
    if (!cfg->scope.exclude)
        return ferry_error_set(ps->err, FERRY_ENOMEM, "out of memory reading the configuration");
    while (*p) {
        const char *item = p;
        size_t len = strcspn(p, ",");

        p += len;
        if (*p == ',')
            p++;
        trim(&item, &len);
        if (len == 0)
            continue;
        cfg->scope.exclude[cfg->scope.nexclude] = strndup(item, len);
        if (!cfg->scope.exclude[cfg->scope.nexclude])
            return ferry_error_set(ps->err, FERRY_ENOMEM,
                                   "out of memory reading the configuration");
        cfg->scope.nexclude++;
    }
    return 0;
}

/*
 * schema = NAME for a PostgreSQL database: the URL gains libpq's
 * options=-c search_path="NAME", so every connection of every command
 * resolves the application's tables (and creates ferry's) in that schema.
 */
static int apply_schema(const struct ferry_config *cfg, char **url, const char *schema,
                        const char *sec, struct ferry_error *err)
{
    static const char hex[] = "0123456789ABCDEF";
    size_t n, at;
    char *out;

    if (!schema || !*url)
        return 0;
    if (strncmp(*url, "postgresql://", 13) != 0 && strncmp(*url, "postgres://", 11) != 0)
        return ferry_error_set(err, FERRY_ECONFIG,
                               "config %s: [%s] schema applies to a postgresql:// database only",
                               cfg->path, sec);
    if (strstr(*url, "options="))
        return ferry_error_set(err, FERRY_ECONFIG,
                               "config %s: [%s] schema and an options= parameter in the database "
                               "URL: set search_path in one place",
                               cfg->path, sec);
    n = strlen(schema);
    if (n > 63)
        return ferry_error_set(err, FERRY_ECONFIG, "config %s: [%s] schema is over 63 bytes",
                               cfg->path, sec);
    for (size_t i = 0; i < n; i++) {
        char c = schema[i];

        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '_'))
            return ferry_error_set(err, FERRY_ECONFIG,
                                   "config %s: [%s] schema '%s': letters, digits and _ only",
                                   cfg->path, sec, schema);
    }
    at = strlen(*url);
    out = malloc(at + 64 + 3 * n);
    if (!out)
        return ferry_error_set(err, FERRY_ENOMEM, "out of memory reading the configuration");
    memcpy(out, *url, at);
    /* -c search_path="NAME", percent-encoded: quoted, so its case is kept */
    at += (size_t)snprintf(out + at, 64, "%soptions=-c%%20search_path%%3D%%22",
                           strchr(*url, '?') ? "&" : "?");
    for (size_t i = 0; i < n; i++)
        out[at++] = schema[i];
    out[at++] = '%';
    out[at++] = hex[0x22 >> 4];
    out[at++] = hex[0x22 & 15];
    out[at] = '\0';
    free(*url);
    *url = out;
    return 0;
}

int ferry_config_load(const char *path, struct ferry_config *cfg, struct ferry_error *err)
{
    struct parse ps;
    int r;
    int rc = 0;

    memset(cfg, 0, sizeof(*cfg));
    memset(&ps, 0, sizeof(ps));
    cfg->source.batch_rows = BATCH_ROWS_DEFAULT;
    ps.cfg = cfg;
    ps.err = err;
    cfg->path = strdup(path);
    if (!cfg->path)
        return ferry_error_set(err, FERRY_ENOMEM, "out of memory reading the configuration");
    ps.f = fopen(path, "r");
    if (!ps.f)
        return ferry_error_set(err, FERRY_ECONFIG, "cannot read config %s: %s", path,
                               strerror(errno));
    errno = 0;
    r = ini_parse_stream(read_line, &ps, on_pair, &ps);
    if (ps.failed) {
        rc = err ? err->code : FERRY_ECONFIG;
        goto out;
    }
    if (ferror(ps.f)) {
        rc = ferry_error_set(err, FERRY_ECONFIG, "cannot read config %s: %s", path,
                             strerror(errno ? errno : EIO));
        goto out;
    }
    if (r == -2) {
        rc = ferry_error_set(err, FERRY_ENOMEM, "out of memory reading the configuration");
        goto out;
    }
    if (r != 0) {
        rc = ferry_error_set(err, FERRY_ECONFIG,
                             "%s:%d: syntax error: expected [section], KEY = VALUE or a comment",
                             path, r);
        goto out;
    }
    if (ps.exclude)
        rc = split_exclude(&ps);
    if (!rc)
        rc = apply_schema(cfg, &cfg->source.database, cfg->source.schema, "source", err);
    if (!rc)
        rc = apply_schema(cfg, &cfg->target.database, cfg->target.schema, "target", err);
out:
    fclose(ps.f);
    free(ps.exclude);
    return rc;
}

void ferry_config_release(struct ferry_config *cfg)
{
    if (!cfg)
        return;
    free(cfg->path);
    free(cfg->source.database);
    free(cfg->source.listen);
    free(cfg->source.authorized_keys);
    free(cfg->source.identity);
    free(cfg->source.tls_cert);
    free(cfg->source.tls_key);
    free(cfg->source.metrics_token);
    free(cfg->source.url);
    free(cfg->source.public_key);
    free(cfg->source.ca);
    free(cfg->target.database);
    free(cfg->target.state);
    free(cfg->target.tenant);
    free(cfg->target.identity);
    free(cfg->source.schema);
    free(cfg->target.schema);
    free(cfg->scope.root);
    for (size_t i = 0; i < cfg->scope.nexclude; i++)
        free(cfg->scope.exclude[i]);
    free(cfg->scope.exclude);
    for (size_t i = 0; i < cfg->ntables; i++) {
        free(cfg->tables[i].name);
        free(cfg->tables[i].scope);
    }
    free(cfg->tables);
    for (size_t i = 0; i < cfg->nmasks; i++) {
        free(cfg->masks[i].table);
        free(cfg->masks[i].column);
        free(cfg->masks[i].expr);
    }
    free(cfg->masks);
    memset(cfg, 0, sizeof(*cfg));
}

static int require(const struct ferry_config *cfg, const char *value, const char *section,
                   const char *key, struct ferry_error *err)
{
    if (value)
        return 0;
    return ferry_error_set(err, FERRY_ECONFIG, "config %s: [%s] %s is missing",
                           cfg->path ? cfg->path : "(none)", section, key);
}

/*
 * A database URL of an engine ferry has (db.c opens the same ones): said
 * when the config loads, not only when a run first opens it (a run with
 * nothing to apply never does). Only the scheme is shown: the rest may
 * hold a password.
 */
static int require_url(const struct ferry_config *cfg, const char *url, const char *section,
                       struct ferry_error *err)
{
    static const char *const schemes[] = {"sqlite:", "postgresql:", "postgres:"};
    int rc = require(cfg, url, section, "database", err);
    size_t n;

    for (size_t i = 0; !rc && i < sizeof(schemes) / sizeof(schemes[0]); i++)
        if (strncmp(url, schemes[i], strlen(schemes[i])) == 0)
            return FERRY_OK;
    if (rc)
        return rc;
    n = strcspn(url, ":/@");
    return ferry_error_set(err, FERRY_ECONFIG,
                           "config %s: [%s] database '%.*s...' is not a database ferry knows: use "
                           "sqlite:///path or postgresql://...",
                           cfg->path ? cfg->path : "(none)", section, (int)(n > 16 ? 16 : n), url);
}

int ferry_config_require_src(const struct ferry_config *cfg, struct ferry_error *err)
{
    int rc = require_url(cfg, cfg->source.database, "source", err);

    if (!rc)
        rc = require(cfg, cfg->scope.root, "scope", "root", err);
    return rc;
}

int ferry_config_require_dst(const struct ferry_config *cfg, struct ferry_error *err)
{
    int rc = require_url(cfg, cfg->target.database, "target", err);

    if (!rc)
        rc = require(cfg, cfg->target.state, "target", "state", err);
    if (!rc)
        rc = require(cfg, cfg->target.tenant, "target", "tenant", err);
    if (!rc)
        rc = require(cfg, cfg->source.url, "source", "url", err);
    /*
     * Credentials in the URL would be echoed in errors and kept in the
     * state (status shows the source): the agents authenticate with keys.
     */
    if (!rc) {
        const char *host = strstr(cfg->source.url, "://");
        size_t len;

        host = host ? host + 3 : cfg->source.url;
        len = strcspn(host, "/?#");
        if (memchr(host, '@', len))
            rc = ferry_error_set(err, FERRY_ECONFIG,
                                 "config %s: [source] url holds a user name or password "
                                 "(user:password@host); remove them: the agents authenticate "
                                 "with their keys",
                                 cfg->path ? cfg->path : "C");
    }
    return rc;
}

const struct ferry_table_conf *ferry_config_table(const struct ferry_config *cfg, const char *name)
{
    for (size_t i = 0; i < cfg->ntables; i++)
        if (strcmp(cfg->tables[i].name, name) == 0)
            return &cfg->tables[i];
    return NULL;
}

size_t ferry_config_max_message(const struct ferry_config *cfg)
{
    long mb = cfg->source.max_message > 0 ? cfg->source.max_message : FERRY_MAX_MESSAGE_MB;

    return (size_t)mb << 20;
}

int ferry_config_excluded(const struct ferry_config *cfg, const char *name)
{
    for (size_t i = 0; i < cfg->scope.nexclude; i++)
        if (strcmp(cfg->scope.exclude[i], name) == 0)
            return 1;
    return 0;
}
