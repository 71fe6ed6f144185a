/*
 * test_db_pg.c - the PostgreSQL adapter against a real server started for
 * the test (scripts/pgcluster.sh). Oracles: known values, and what psql
 * prints for the same rows. Exits 77 (skipped) only when no server binaries
 * exist.
 */
#include "common/db/db.h"

#include "pgcluster.h"
#include "test.h"

#include <errno.h>
#include <float.h>
#include <math.h>
#include <sys/resource.h>
#include <sys/wait.h>

#if defined(__has_feature)
#if __has_feature(address_sanitizer)
#define FERRY_ASAN 1
#endif
#endif

static char url[1024];
static char bindir[512];

static void start_cluster(void)
{
    if (test_pg_start("db_pg", "ferry_test", url, sizeof(url)) == 77) {
        printf("**************************************************************\n"
               "SKIP test_db_pg: no PostgreSQL server binaries on this machine\n"
               "**************************************************************\n");
        exit(77);
    }
    ASSERT_EQ(test_pg_script("bindir", bindir, sizeof(bindir)), 0);
}

/*
 * What psql -At prints for sql, with the session settings the adapter uses
 * (so that the text forms are comparable). Static storage.
 */
static const char *psql(const char *sql)
{
    static char out[1 << 16];
    char path[600];
    char cmd[4096];
    FILE *f;

    /* through a file: no shell quoting of the SQL to get wrong */
    snprintf(path, sizeof(path), "%s/oracle.sql", test_pg_tmp);
    f = fopen(path, "w");
    ASSERT(f != NULL);
    ASSERT(fputs(sql, f) >= 0);
    ASSERT_EQ(fclose(f), 0);
    snprintf(cmd, sizeof(cmd),
             "PGOPTIONS='-c DateStyle=ISO,MDY -c IntervalStyle=iso_8601 -c TimeZone=UTC "
             "-c extra_float_digits=3 -c bytea_output=hex' '%s/psql' -X -At -v ON_ERROR_STOP=1 "
             "-d '%s' -f '%s'",
             bindir, url, path);
    ASSERT_EQ(test_run_capture(cmd, out, sizeof(out)), 0);
    return out;
}

static int64_t psql_int(const char *sql)
{
    const char *s = psql(sql);
    char *end;
    long long v = strtoll(s, &end, 10);

    ASSERT(end != s && *end == '\0');
    return (int64_t)v;
}

static struct ferry_db *open_db(int flags)
{
    struct ferry_error err = {0};
    struct ferry_db *db = NULL;
    int rc = ferry_db_open(url, flags, &db, &err);

    if (rc)
        fprintf(stderr, "open: %s\n", err.msg);
    ASSERT_EQ(rc, 0);
    ASSERT_EQ(ferry_db_engine(db), FERRY_ENGINE_PG);
    return db;
}

static void exec_ok(struct ferry_db *db, const char *sql)
{
    struct ferry_error err = {0};
    int rc = ferry_db_exec(db, sql, &err);

    if (rc)
        fprintf(stderr, "exec: %s\n", err.msg);
    ASSERT_EQ(rc, 0);
}

static struct ferry_stmt *prepare_ok(struct ferry_db *db, const char *sql)
{
    struct ferry_error err = {0};
    struct ferry_stmt *st = NULL;
    int rc = ferry_db_prepare(db, sql, &st, &err);

    if (rc)
        fprintf(stderr, "prepare: %s\n", err.msg);
    ASSERT_EQ(rc, 0);
    return st;
}

static void bind_ok(struct ferry_stmt *st, int idx, struct ferry_value v)
{
    struct ferry_error err = {0};
    int rc = ferry_stmt_bind(st, idx, &v, &err);

    if (rc)
        fprintf(stderr, "bind %d: %s\n", idx, err.msg);
    ASSERT_EQ(rc, 0);
}

/* Step and expect a row (want 1) or the end (want 0). */
static void step_ok(struct ferry_stmt *st, int want)
{
    struct ferry_error err = {0};
    int row = -1;
    int rc = ferry_stmt_step(st, &row, &err);

    if (rc)
        fprintf(stderr, "step: %s\n", err.msg);
    ASSERT_EQ(rc, 0);
    ASSERT_EQ(row, want);
}

static struct ferry_value fv_float(double f)
{
    struct ferry_value v = {.type = FERRY_FLOAT};

    v.u.f = f;
    return v;
}

static struct ferry_value fv_blob(const void *p, size_t n)
{
    struct ferry_value v = {.type = FERRY_BLOB};

    v.u.s.p = p;
    v.u.s.n = n;
    return v;
}

static void assert_text(const struct ferry_value *v, const char *want)
{
    ASSERT_EQ(v->type, FERRY_TEXT);
    if (v->u.s.n != strlen(want) || memcmp(v->u.s.p, want, v->u.s.n) != 0) {
        fprintf(stderr, "text value '%.*s' != '%s'\n", (int)v->u.s.n, v->u.s.p, want);
        ASSERT(0);
    }
    test_count++;
}

static uint64_t bits(double d)
{
    uint64_t u;

    memcpy(&u, &d, sizeof(u));
    return u;
}

/* Every listed type: what the adapter reads equals the known value and psql's text form. */
static void test_types(struct ferry_db *db)
{
    static const char *text_cols[] = {"n",  "tx", "vc",   "bp", "j",   "jb",   "u",   "d",
                                      "tm", "ts", "tstz", "iv", "arr", "tarr", "ttz", "dom"};
    static const char *text_want[] = {
        "12345678901234567890.123456789",
        "h\xc3\xa9llo, \"w\" 'x' \\ ?",
        "short",
        "ab   ",
        "{\"b\": [1, 2.50],  \"a\": null}",
        "{\"a\": null, \"b\": [1, 2.50]}",
        "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11",
        "2024-02-29",
        "23:59:59.999999",
        "1999-12-31 23:59:59.5",
        "2024-01-02 01:04:05.25+00",
        "P1Y2M3DT4H5M6.5S",
        "{1,NULL,-3}",
        "{a,\"b c\",\"\\\"q\\\"\",NULL}",
        "12:00:00+02",
        "7",
    };
    static const char cols[] = "i2, i4, i8, o, f4, f8, b, by, n, tx, vc, bp, j, jb, u, d, tm, ts,"
                               " tstz, iv, arr, tarr, ttz, dom, nul";
    struct ferry_error err = {0};
    struct ferry_stmt *st;
    struct ferry_stmt *ins;
    struct ferry_value v;
    char sql[512];
    char row1[4096];
    int nc;

    exec_ok(db, "CREATE DOMAIN posint AS text CHECK (VALUE <> '');"
                "CREATE TABLE types (id int PRIMARY KEY, i2 int2, i4 int4, i8 int8, o oid,"
                " f4 float4, f8 float8, b bool, by bytea, n numeric, tx text, vc varchar(10),"
                " bp char(5), j json, jb jsonb, u uuid, d date, tm time, ts timestamp,"
                " tstz timestamptz, iv interval, arr int[], tarr text[], ttz timetz,"
                " dom posint, nul text)");
    exec_ok(db, "INSERT INTO types VALUES (1, -32768, 2147483647, -9223372036854775808, 4294967295,"
                " 0.1, 0.1, true, '\\x00ff0a', 12345678901234567890.123456789,"
                " 'h\xc3\xa9llo, \"w\" ''x'' \\ ?', 'short', 'ab', "
                "'{\"b\": [1, 2.50],  \"a\": null}', '{\"b\": [1, 2.50],  \"a\": null}',"
                " 'A0EEBC99-9C0B-4EF8-BB6D-6BB9BD380A11', '2024-02-29', '23:59:59.999999',"
                " '1999-12-31 23:59:59.5', '2024-01-02 03:04:05.25+02', "
                "'1 year 2 mons 3 days 4:05:06.5', '{1,NULL,-3}', ARRAY['a','b c','\"q\"',NULL],"
                " '12:00:00+02', '7', NULL)");

    snprintf(sql, sizeof(sql), "SELECT %s FROM types WHERE id = ?", cols);
    st = prepare_ok(db, sql);
    nc = ferry_stmt_ncols(st);
    ASSERT_EQ(nc, 25);
    ASSERT_STR(ferry_stmt_colname(st, 0), "i2");
    ASSERT_STR(ferry_stmt_colname(st, 24), "nul");
    bind_ok(st, 1, ferry_value_int(1));
    step_ok(st, 1);

    ferry_stmt_column(st, 0, &v);
    ASSERT_EQ(v.type, FERRY_INT);
    ASSERT_EQ(v.u.i, -32768);
    ferry_stmt_column(st, 1, &v);
    ASSERT_EQ(v.type, FERRY_INT);
    ASSERT_EQ(v.u.i, 2147483647);
    ferry_stmt_column(st, 2, &v);
    ASSERT_EQ(v.type, FERRY_INT);
    ASSERT(v.u.i == INT64_MIN);
    ferry_stmt_column(st, 3, &v);
    ASSERT_EQ(v.type, FERRY_INT);
    ASSERT_EQ(v.u.i, 4294967295LL);
    ferry_stmt_column(st, 4, &v);
    ASSERT_EQ(v.type, FERRY_FLOAT);
    ASSERT(bits(v.u.f) == bits((double)0.1f));
    ferry_stmt_column(st, 5, &v);
    ASSERT_EQ(v.type, FERRY_FLOAT);
    ASSERT(bits(v.u.f) == bits(0.1));
    ferry_stmt_column(st, 6, &v);
    ASSERT_EQ(v.type, FERRY_INT);
    ASSERT_EQ(v.u.i, 1);
    ferry_stmt_column(st, 7, &v);
    ASSERT_EQ(v.type, FERRY_BLOB);
    ASSERT_EQ(v.u.s.n, 3);
    ASSERT(memcmp(v.u.s.p, "\x00\xff\x0a", 3) == 0);
    for (int i = 0; i < 16; i++) {
        char q[128];

        ferry_stmt_column(st, 8 + i, &v);
        assert_text(&v, text_want[i]);
        /* the second oracle: psql's text output of the same value */
        snprintf(q, sizeof(q), "SELECT %s FROM types WHERE id = 1", text_cols[i]);
        assert_text(&v, psql(q));
    }
    ferry_stmt_column(st, 24, &v);
    ASSERT_EQ(v.type, FERRY_NULL);
    step_ok(st, 0);

    /* the values read, bound back into another row, make the same row */
    snprintf(sql, sizeof(sql),
             "INSERT INTO types (id, %s) VALUES (2, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?,"
             " ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
             cols);
    ins = prepare_ok(db, sql);
    ferry_stmt_reset(st);
    bind_ok(st, 1, ferry_value_int(1));
    step_ok(st, 1);
    for (int i = 0; i < nc; i++) {
        ferry_stmt_column(st, i, &v);
        bind_ok(ins, i + 1, v);
    }
    step_ok(ins, 0);
    ASSERT_EQ(ferry_stmt_changes(ins), 1);
    ferry_stmt_free(ins);
    ferry_stmt_free(st);
    snprintf(sql, sizeof(sql), "SELECT %s FROM types WHERE id = 1", cols);
    snprintf(row1, sizeof(row1), "%s", psql(sql));
    snprintf(sql, sizeof(sql), "SELECT %s FROM types WHERE id = 2", cols);
    ASSERT_STR(psql(sql), row1);

    /* timestamptz input in another zone reads back as UTC ISO */
    ASSERT_STR(psql("SELECT tstz = '2024-01-02 01:04:05.25Z' FROM types WHERE id = 2"), "t");
    (void)err;
}

static void test_floats(struct ferry_db *db)
{
    double vals[64];
    size_t nv = 0;
    struct ferry_stmt *ins;
    struct ferry_stmt *sel;
    struct ferry_value v;
    uint64_t x = 0x9e3779b97f4a7c15ULL;

    vals[nv++] = 0.1;
    vals[nv++] = -0.0;
    vals[nv++] = 0.0;
    vals[nv++] = 1e-300;
    vals[nv++] = 4.9406564584124654e-324;  /* smallest subnormal */
    vals[nv++] = 2.2250738585072009e-308;  /* largest subnormal */
    vals[nv++] = -2.2250738585072014e-308; /* -DBL_MIN */
    vals[nv++] = DBL_MAX;
    vals[nv++] = -DBL_MAX;
    vals[nv++] = 1.0 / 3.0;
    vals[nv++] = M_PI;
    vals[nv++] = 9007199254740993.0; /* 2^53 + 1 rounds: still one exact double */
    vals[nv++] = 123456789012345680000.0;
    vals[nv++] = INFINITY;
    vals[nv++] = -INFINITY;
    while (nv < 63) {
        double d;

        /* random bit patterns (xorshift), NaNs excluded: their payload is not kept */
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        memcpy(&d, &x, sizeof(d));
        if (!isnan(d))
            vals[nv++] = d;
    }
    vals[nv++] = NAN;

    exec_ok(db, "CREATE TABLE fl (id int PRIMARY KEY, f float8, g float4, n numeric, t text)");
    ins = prepare_ok(db, "INSERT INTO fl VALUES (?, ?, ?, ?, ?)");
    for (size_t i = 0; i < nv; i++) {
        ferry_stmt_reset(ins);
        bind_ok(ins, 1, ferry_value_int((int64_t)i));
        bind_ok(ins, 2, fv_float(vals[i]));
        bind_ok(ins, 3, fv_float((double)(float)vals[i]));
        bind_ok(ins, 4, isinf(vals[i]) ? ferry_value_null() : fv_float(vals[i]));
        bind_ok(ins, 5, fv_float(vals[i]));
        step_ok(ins, 0);
    }
    ferry_stmt_free(ins);

    sel = prepare_ok(db, "SELECT f, g, t::float8 FROM fl ORDER BY id");
    for (size_t i = 0; i < nv; i++) {
        step_ok(sel, 1);
        ferry_stmt_column(sel, 0, &v);
        ASSERT_EQ(v.type, FERRY_FLOAT);
        if (isnan(vals[i])) {
            ASSERT(isnan(v.u.f));
        } else if (bits(v.u.f) != bits(vals[i])) {
            fprintf(stderr, "float %zu: %.17g (%016llx) != %.17g\n", i, v.u.f,
                    (unsigned long long)bits(v.u.f), vals[i]);
            ASSERT(0);
        }
        ferry_stmt_column(sel, 1, &v);
        ASSERT_EQ(v.type, FERRY_FLOAT);
        ASSERT(isnan(vals[i]) ? isnan(v.u.f) : bits(v.u.f) == bits((double)(float)vals[i]));
        /* the text sent for a text column is exact too */
        ferry_stmt_column(sel, 2, &v);
        ASSERT(isnan(vals[i]) ? isnan(v.u.f) : bits(v.u.f) == bits(vals[i]));
    }
    step_ok(sel, 0);
    ferry_stmt_free(sel);

    /* server-side oracle: the stored values equal the literals PostgreSQL parses itself */
    ASSERT_STR(psql("SELECT f = 0.1::float8, g = 0.1::float4 FROM fl WHERE id = 0"), "t|t");
    ASSERT_STR(psql("SELECT f::text, n::text, t FROM fl WHERE id = 1"), "-0|0|-0");
    ASSERT_STR(psql("SELECT f = 1e-300::float8 FROM fl WHERE id = 3"), "t");
    ASSERT_STR(psql("SELECT f::text FROM fl WHERE id = 4"), "5e-324");
    ASSERT_STR(psql("SELECT f::text FROM fl WHERE id = 5"), "2.225073858507201e-308");
    ASSERT_STR(psql("SELECT n = 2.225073858507201e-308 FROM fl WHERE id = 5"), "t");
    ASSERT_STR(psql("SELECT f::text FROM fl WHERE id = 13"), "Infinity");
    ASSERT_STR(psql("SELECT f::text FROM fl WHERE id = 14"), "-Infinity");
    ASSERT_STR(psql("SELECT f::text, n::text FROM fl WHERE id = 63"), "NaN|NaN");

    /* values the server computes read back bit-exactly */
    sel = prepare_ok(db, "SELECT '-0'::float8, 5e-324::float8, 'Infinity'::float8,"
                         " '-Infinity'::float8, 'NaN'::float8, 1e-300::float8, 0.1::float4");
    step_ok(sel, 1);
    ferry_stmt_column(sel, 0, &v);
    ASSERT(bits(v.u.f) == bits(-0.0));
    ferry_stmt_column(sel, 1, &v);
    ASSERT(bits(v.u.f) == bits(4.9406564584124654e-324));
    ferry_stmt_column(sel, 2, &v);
    ASSERT(isinf(v.u.f) && v.u.f > 0);
    ferry_stmt_column(sel, 3, &v);
    ASSERT(isinf(v.u.f) && v.u.f < 0);
    ferry_stmt_column(sel, 4, &v);
    ASSERT(isnan(v.u.f));
    ferry_stmt_column(sel, 5, &v);
    ASSERT(bits(v.u.f) == bits(1e-300));
    ferry_stmt_column(sel, 6, &v);
    ASSERT(bits(v.u.f) == bits((double)0.1f));
    ferry_stmt_free(sel);
}

static void test_ints_bytes_numeric(struct ferry_db *db)
{
    static const int64_t ints[] = {INT64_MIN, INT64_MIN + 1, -1, 0, 1, INT64_MAX - 1, INT64_MAX};
    unsigned char all[512];
    struct ferry_error err = {0};
    struct ferry_stmt *st;
    struct ferry_value v;
    const char *num = "12345678901234567890.123456789";
    const char *big = "-0.000000000000000000000000000000000000001000";
    char hex[1100];

    exec_ok(db, "CREATE TABLE ib (id int PRIMARY KEY, i int8, by bytea, n numeric, t text)");
    st = prepare_ok(db, "INSERT INTO ib (id, i) VALUES (?, ?)");
    for (size_t k = 0; k < sizeof(ints) / sizeof(ints[0]); k++) {
        ferry_stmt_reset(st);
        bind_ok(st, 1, ferry_value_int((int64_t)k));
        bind_ok(st, 2, ferry_value_int(ints[k]));
        step_ok(st, 0);
    }
    ferry_stmt_free(st);
    ASSERT_STR(psql("SELECT string_agg(i::text, ',' ORDER BY id) FROM ib"),
               "-9223372036854775808,-9223372036854775807,-1,0,1,9223372036854775806,"
               "9223372036854775807");
    st = prepare_ok(db, "SELECT i FROM ib ORDER BY id");
    for (size_t k = 0; k < sizeof(ints) / sizeof(ints[0]); k++) {
        step_ok(st, 1);
        ferry_stmt_column(st, 0, &v);
        ASSERT_EQ(v.type, FERRY_INT);
        ASSERT(v.u.i == ints[k]);
    }
    step_ok(st, 0);
    ferry_stmt_free(st);

    /* bytea: every byte value twice (NULs included), and the empty value */
    for (int i = 0; i < 512; i++)
        all[i] = (unsigned char)(i % 256);
    st = prepare_ok(db, "INSERT INTO ib (id, by) VALUES (?, ?)");
    bind_ok(st, 1, ferry_value_int(100));
    bind_ok(st, 2, fv_blob(all, sizeof(all)));
    step_ok(st, 0);
    ferry_stmt_reset(st);
    bind_ok(st, 1, ferry_value_int(101));
    bind_ok(st, 2, fv_blob(NULL, 0));
    step_ok(st, 0);
    /* TEXT into bytea goes as raw bytes: a leading \x is not decoded as hex */
    ferry_stmt_reset(st);
    bind_ok(st, 1, ferry_value_int(102));
    bind_ok(st, 2, ferry_value_text("\\x41", 4));
    step_ok(st, 0);
    ferry_stmt_free(st);
    for (int i = 0; i < 512; i++)
        snprintf(hex + 2 * i, 3, "%02x", all[i]);
    ASSERT_STR(psql("SELECT encode(by, 'hex') FROM ib WHERE id = 100"), hex);
    ASSERT_STR(psql("SELECT by IS NOT NULL AND length(by) = 0 FROM ib WHERE id = 101"), "t");
    ASSERT_STR(psql("SELECT encode(by, 'hex') FROM ib WHERE id = 102"), "5c783431");
    st = prepare_ok(db, "SELECT by FROM ib WHERE id >= 100 ORDER BY id");
    step_ok(st, 1);
    ferry_stmt_column(st, 0, &v);
    ASSERT_EQ(v.type, FERRY_BLOB);
    ASSERT_EQ(v.u.s.n, sizeof(all));
    ASSERT(memcmp(v.u.s.p, all, sizeof(all)) == 0);
    step_ok(st, 1);
    ferry_stmt_column(st, 0, &v);
    ASSERT_EQ(v.type, FERRY_BLOB);
    ASSERT_EQ(v.u.s.n, 0);
    ASSERT(v.u.s.p != NULL);
    step_ok(st, 1);
    ferry_stmt_column(st, 0, &v);
    ASSERT_EQ(v.type, FERRY_BLOB);
    ASSERT_EQ(v.u.s.n, 4);
    ASSERT(memcmp(v.u.s.p, "\\x41", 4) == 0);
    step_ok(st, 0);
    ferry_stmt_free(st);

    /* NUL in TEXT cannot reach PostgreSQL text: refused by name, nothing written */
    st = prepare_ok(db, "INSERT INTO ib (id, t) VALUES (200, ?)");
    v = ferry_value_text("a\0b", 3);
    ASSERT_EQ(ferry_stmt_bind(st, 1, &v, &err), FERRY_EDATA);
    ASSERT(strstr(err.msg, "text value contains a NUL byte, which PostgreSQL text cannot hold"));
    v = fv_blob("a\0b", 3);
    ASSERT_EQ(ferry_stmt_bind(st, 1, &v, &err), FERRY_EDATA);
    ASSERT(strstr(err.msg, "NUL byte"));
    ASSERT(strstr(err.msg, "make the column bytea on the target, or change the value"));
    /* a BLOB without NUL into text goes as its bytes */
    bind_ok(st, 1, fv_blob("abc", 3));
    step_ok(st, 0);
    ferry_stmt_free(st);
    ASSERT_STR(psql("SELECT t FROM ib WHERE id = 200"), "abc");

    /* numeric stays exact both ways */
    st = prepare_ok(db, "INSERT INTO ib (id, n) VALUES (?, ?)");
    bind_ok(st, 1, ferry_value_int(300));
    bind_ok(st, 2, ferry_value_text(num, strlen(num)));
    step_ok(st, 0);
    ferry_stmt_reset(st);
    bind_ok(st, 1, ferry_value_int(301));
    bind_ok(st, 2, ferry_value_text(big, strlen(big)));
    step_ok(st, 0);
    ferry_stmt_free(st);
    ASSERT_STR(psql("SELECT n = 12345678901234567890.123456789 FROM ib WHERE id = 300"), "t");
    st = prepare_ok(db, "SELECT n, n * 10 FROM ib WHERE id IN (300, 301) ORDER BY id");
    step_ok(st, 1);
    ferry_stmt_column(st, 0, &v);
    assert_text(&v, num);
    ferry_stmt_column(st, 1, &v);
    assert_text(&v, "123456789012345678901.234567890");
    step_ok(st, 1);
    ferry_stmt_column(st, 0, &v);
    assert_text(&v, big);
    assert_text(&v, psql("SELECT n FROM ib WHERE id = 301"));
    step_ok(st, 0);
    ferry_stmt_free(st);
}

static void test_rewrite(struct ferry_db *db)
{
    struct ferry_error err = {0};
    struct ferry_stmt *st;
    struct ferry_value v;
    int64_t n = -1;

    st = prepare_ok(db, "SELECT '?' AS \"q?\", ?::int AS a, 'it''s ?' AS b, E'\\'?' AS c,"
                        " $$ ? $$ AS d, $t$ ?'\" $t$ AS e, /* ? /* nested ? */ ? */ ? AS f -- ?\n"
                        ", \"we\"\"ird?\".x AS g FROM (SELECT 1 AS x) AS \"we\"\"ird?\"");
    ASSERT_EQ(ferry_stmt_ncols(st), 8);
    ASSERT_STR(ferry_stmt_colname(st, 0), "q?");
    bind_ok(st, 1, ferry_value_int(5));
    bind_ok(st, 2, ferry_value_text("bound", 5));
    v = ferry_value_int(1);
    ASSERT_EQ(ferry_stmt_bind(st, 3, &v, &err), FERRY_EDB); /* only two placeholders */
    step_ok(st, 1);
    ferry_stmt_column(st, 0, &v);
    assert_text(&v, "?");
    ferry_stmt_column(st, 1, &v);
    ASSERT_EQ(v.type, FERRY_INT);
    ASSERT_EQ(v.u.i, 5);
    ferry_stmt_column(st, 2, &v);
    assert_text(&v, "it's ?");
    ferry_stmt_column(st, 3, &v);
    assert_text(&v, "'?");
    ferry_stmt_column(st, 4, &v);
    assert_text(&v, " ? ");
    ferry_stmt_column(st, 5, &v);
    assert_text(&v, " ?'\" ");
    ferry_stmt_column(st, 6, &v);
    assert_text(&v, "bound");
    ferry_stmt_column(st, 7, &v);
    ASSERT_EQ(v.type, FERRY_INT);
    step_ok(st, 0);
    ferry_stmt_free(st);

    /* a parameter with no type context, and $1 written by hand is left alone */
    v = ferry_value_null();
    ASSERT_EQ(ferry_db_query_int(db, "SELECT (? IS NULL)::int", &v, 1, &n, &err), 0);
    ASSERT_EQ(n, 1);
    v = ferry_value_int(7);
    ASSERT_EQ(ferry_db_query_int(db, "SELECT count(*) FROM ib WHERE id > ? AND ? IS NOT NULL",
                                 (struct ferry_value[]){v, v}, 2, &n, &err),
              0);
    ASSERT_EQ(n, psql_int("SELECT count(*) FROM ib WHERE id > 7"));
    /* an INT goes where the server wants a bool */
    exec_ok(db, "CREATE TABLE flags (id int PRIMARY KEY, on_ bool)");
    st = prepare_ok(db, "INSERT INTO flags VALUES (?, ?)");
    bind_ok(st, 1, ferry_value_int(1));
    bind_ok(st, 2, ferry_value_int(1));
    step_ok(st, 0);
    ferry_stmt_free(st);
    ASSERT_STR(psql("SELECT on_ FROM flags"), "t");
}

static long maxrss_kb(void)
{
    struct rusage ru;

    getrusage(RUSAGE_SELF, &ru);
    return ru.ru_maxrss;
}

static void test_big_result(struct ferry_db *db)
{
    struct ferry_stmt *st;
    struct ferry_stmt *other;
    struct ferry_value v;
    int64_t rows = 0;
    int64_t sum = 0;
    long before = maxrss_kb();
    long after;
    int row = 1;
    struct ferry_error err = {0};

    /* 100k rows of ~300 bytes: about 35 MB if the whole result were held */
    st = prepare_ok(db, "SELECT g, repeat('x', 300) FROM generate_series(1, 100000) AS g");
    for (;;) {
        ASSERT_EQ(ferry_stmt_step(st, &row, &err), 0);
        if (!row)
            break;
        ferry_stmt_column(st, 0, &v);
        ASSERT_EQ(v.type, FERRY_INT);
        sum += v.u.i;
        ferry_stmt_column(st, 1, &v);
        if (v.type != FERRY_TEXT || v.u.s.n != 300)
            ASSERT(0);
        rows++;
    }
    ASSERT_EQ(rows, 100000);
    ASSERT_EQ(sum, 100000LL * 100001 / 2);
    ASSERT_EQ(rows, psql_int("SELECT count(*) FROM generate_series(1, 100000)"));
    after = maxrss_kb();
    printf("100k rows streamed, max RSS grew by %ld kB\n", after - before);
#if !defined(__SANITIZE_ADDRESS__) && !defined(FERRY_ASAN)
    /* held whole, the result would take over 35 MB; AddressSanitizer keeps freed memory */
    ASSERT(after - before < 16 * 1024);
#endif
    ferry_stmt_free(st);

    /* another statement run while one streams: the first resumes where it was */
    st = prepare_ok(db, "SELECT g FROM generate_series(1, 1000) AS g");
    other = prepare_ok(db, "SELECT count(*) FROM generate_series(1, 10)");
    for (int i = 1; i <= 1000; i++) {
        step_ok(st, 1);
        ferry_stmt_column(st, 0, &v);
        ASSERT_EQ(v.u.i, i);
        if (i == 10) {
            step_ok(other, 1);
            ferry_stmt_column(other, 0, &v);
            ASSERT_EQ(v.u.i, 10);
            step_ok(other, 0);
            exec_ok(db, "SELECT 1");
        }
    }
    step_ok(st, 0);
    /* a statement freed half-read leaves the connection usable */
    ferry_stmt_reset(st);
    step_ok(st, 1);
    ferry_stmt_free(st);
    ferry_stmt_reset(other);
    step_ok(other, 1);
    ferry_stmt_free(other);
}

static int has_fk(const struct ferry_table_info *t, const char *parent, const char *cols,
                  const char *pcols, int cascade)
{
    for (size_t i = 0; i < t->nfks; i++) {
        const struct ferry_fkey *fk = &t->fks[i];
        char a[256] = "";
        char b[256] = "";

        if (strcmp(fk->parent, parent) != 0 || fk->cascade != cascade)
            continue;
        for (size_t j = 0; j < fk->ncols; j++) {
            snprintf(a + strlen(a), sizeof(a) - strlen(a), "%s%s", j ? "," : "", fk->cols[j]);
            snprintf(b + strlen(b), sizeof(b) - strlen(b), "%s%s", j ? "," : "", fk->pcols[j]);
        }
        if (strcmp(a, cols) == 0 && strcmp(b, pcols) == 0)
            return 1;
    }
    return 0;
}

static void test_introspection(void)
{
    struct ferry_error err = {0};
    struct ferry_table_info t;
    struct ferry_db *db;
    char **names = NULL;
    size_t n = 0;
    int exists = -1;
    int64_t viol = -1;
    char list[512] = "";
    char out[1024];

    ASSERT_EQ(test_pg_script("createdb ferry_schema", out, sizeof(out)), 0);
    snprintf(url, sizeof(url), "%s", out);
    db = open_db(0);
    exec_ok(db, "CREATE TABLE teams (id int PRIMARY KEY, name text NOT NULL);"
                "CREATE TABLE channels (team_id int REFERENCES teams ON DELETE CASCADE,"
                " num int, title varchar(20), PRIMARY KEY (team_id, num));"
                "CREATE TABLE posts (id bigserial PRIMARY KEY, gone int, team_id int NOT NULL,"
                " chan_num int, body text, dbl int GENERATED ALWAYS AS (chan_num * 2) STORED,"
                " FOREIGN KEY (team_id, chan_num) REFERENCES channels ON DELETE CASCADE);"
                "ALTER TABLE posts DROP COLUMN gone;"
                "CREATE TABLE notes (id int PRIMARY KEY, post_id bigint REFERENCES posts(id),"
                " cnum int, tid int, FOREIGN KEY (cnum, tid) REFERENCES channels (num, team_id));"
                "CREATE TABLE \"Mixed Case\" (k text, j int, PRIMARY KEY (j, k));"
                "CREATE TABLE _ferry_changes (seq bigserial PRIMARY KEY);"
                "CREATE SCHEMA other;"
                "CREATE TABLE other.hidden (x int PRIMARY KEY);"
                "CREATE TABLE other.teams (id int PRIMARY KEY, extra int);"
                "CREATE TABLE parted (id int, t date, PRIMARY KEY (id, t)) PARTITION BY RANGE (t);"
                "CREATE TABLE parted_2024 PARTITION OF parted"
                " FOR VALUES FROM ('2024-01-01') TO ('2025-01-01');"
                "CREATE TABLE refs_parted (id int PRIMARY KEY, pid int, pt date,"
                " FOREIGN KEY (pid, pt) REFERENCES parted);");

    ASSERT_EQ(ferry_db_tables(db, &names, &n, &err), 0);
    for (size_t i = 0; i < n; i++) {
        snprintf(list + strlen(list), sizeof(list) - strlen(list), "%s%s", i ? "," : "", names[i]);
        free(names[i]);
    }
    free(names);
    ASSERT_STR(list, "Mixed Case,channels,notes,parted,posts,refs_parted,teams");
    /* the oracle: the catalog as psql sees it */
    ASSERT_STR(psql("SELECT string_agg(tablename, ',' ORDER BY tablename COLLATE \"C\")"
                    " FROM pg_tables WHERE schemaname = 'public' AND tablename NOT LIKE '\\_%'"
                    " AND tablename <> 'parted_2024'"),
               list);

    ASSERT_EQ(ferry_db_table_info(db, "channels", &t, &err), 0);
    ASSERT_STR(t.name, "channels");
    ASSERT_EQ(t.ncols, 3);
    ASSERT_STR(t.cols[0].name, "team_id");
    ASSERT_STR(t.cols[0].type, "integer");
    ASSERT_EQ(t.cols[0].pk, 1);
    ASSERT_EQ(t.cols[0].notnull, 1);
    ASSERT_STR(t.cols[1].name, "num");
    ASSERT_EQ(t.cols[1].pk, 2);
    ASSERT_STR(t.cols[2].type, "character varying(20)");
    ASSERT_EQ(t.cols[2].pk, 0);
    ASSERT_EQ(t.cols[2].notnull, 0);
    ASSERT_EQ(t.nfks, 1);
    ASSERT(has_fk(&t, "teams", "team_id", "id", 1));
    ASSERT_EQ(t.without_rowid, 0);
    ASSERT_EQ(t.rows, -1);
    ferry_table_info_release(&t);

    ASSERT_EQ(ferry_db_table_info(db, "posts", &t, &err), 0);
    ASSERT_EQ(t.ncols, 4); /* no dropped, no generated column */
    ASSERT_STR(t.cols[0].name, "id");
    ASSERT_STR(t.cols[0].type, "bigint");
    ASSERT_EQ(t.cols[0].pk, 1);
    ASSERT_STR(t.cols[1].name, "team_id");
    ASSERT_EQ(t.cols[1].notnull, 1);
    ASSERT_STR(t.cols[3].name, "body");
    ASSERT_EQ(t.nfks, 1);
    ASSERT(has_fk(&t, "channels", "team_id,chan_num", "team_id,num", 1));
    ferry_table_info_release(&t);

    ASSERT_EQ(ferry_db_table_info(db, "notes", &t, &err), 0);
    ASSERT_EQ(t.nfks, 2);
    ASSERT(has_fk(&t, "posts", "post_id", "id", 0));
    ASSERT(has_fk(&t, "channels", "cnum,tid", "num,team_id", 0));
    ferry_table_info_release(&t);

    ASSERT_EQ(ferry_db_table_info(db, "Mixed Case", &t, &err), 0);
    ASSERT_STR(t.cols[0].name, "k");
    ASSERT_EQ(t.cols[0].pk, 2);
    ASSERT_EQ(t.cols[1].pk, 1);
    ferry_table_info_release(&t);
    ASSERT_EQ(ferry_db_table_info(db, "mixed case", &t, &err), 0); /* as SQLite matches */
    ASSERT_STR(t.name, "Mixed Case");
    ferry_table_info_release(&t);

    /* a key to a partitioned table is one key, not one per partition */
    ASSERT_EQ(ferry_db_table_info(db, "refs_parted", &t, &err), 0);
    ASSERT_EQ(t.nfks, 1);
    ASSERT(has_fk(&t, "parted", "pid,pt", "id,t", 0));
    ferry_table_info_release(&t);

    /* teams of the current schema, not other.teams */
    ASSERT_EQ(ferry_db_table_info(db, "teams", &t, &err), 0);
    ASSERT_EQ(t.ncols, 2);
    ASSERT_STR(t.cols[1].name, "name");
    ferry_table_info_release(&t);

    /* the columns alone: what the description says, without its keys */
    {
        static const char *const described[] = {"channels",   "posts",       "notes", "Mixed Case",
                                                "mixed case", "refs_parted", "teams"};

        for (size_t k = 0; k < sizeof(described) / sizeof(described[0]); k++) {
            struct ferry_table_info c;

            exists = 0;
            ASSERT_EQ(ferry_db_table_info(db, described[k], &t, &err), 0);
            ASSERT_EQ(ferry_db_table_columns(db, described[k], &c, &exists, &err), 0);
            ASSERT_EQ(exists, 1);
            ASSERT_STR(c.name, t.name);
            ASSERT_EQ(c.ncols, t.ncols);
            for (size_t i = 0; i < t.ncols; i++) {
                ASSERT_STR(c.cols[i].name, t.cols[i].name);
                ASSERT_STR(c.cols[i].type, t.cols[i].type);
                ASSERT_EQ(c.cols[i].pk, t.cols[i].pk);
                ASSERT_EQ(c.cols[i].notnull, t.cols[i].notnull);
            }
            ASSERT_EQ(c.nfks, 0);
            ASSERT_EQ(c.rows, -1);
            ferry_table_info_release(&c);
            ferry_table_info_release(&t);
        }
        exists = 1;
        ASSERT_EQ(ferry_db_table_columns(db, "hidden", &t, &exists, &err), 0);
        ASSERT_EQ(exists, 0);
        ASSERT_EQ(t.ncols, 0);
        ASSERT(t.name == NULL);
    }

    ASSERT_EQ(ferry_db_table_info(db, "hidden", &t, &err), FERRY_ENOTFOUND);
    ASSERT(strstr(err.msg, "hidden"));
    ASSERT_EQ(ferry_db_table_exists(db, "hidden", &exists, &err), 0);
    ASSERT_EQ(exists, 0);
    ASSERT_EQ(ferry_db_table_exists(db, "teams", &exists, &err), 0);
    ASSERT_EQ(exists, 1);
    ASSERT_EQ(ferry_db_table_exists(db, "TEAMS", &exists, &err), 0);
    ASSERT_EQ(exists, 1);
    ASSERT_EQ(ferry_db_fk_check(db, "posts", &viol, &err), 0);
    ASSERT_EQ(viol, 0);
    ASSERT_EQ(ferry_db_fk_check(db, "nope", &viol, &err), FERRY_ENOTFOUND);

    /* with search_path on the other schema, that is what is listed */
    exec_ok(db, "SET search_path = other");
    ASSERT_EQ(ferry_db_tables(db, &names, &n, &err), 0);
    ASSERT_EQ(n, 2);
    ASSERT_STR(names[0], "hidden");
    ASSERT_STR(names[1], "teams");
    for (size_t i = 0; i < n; i++)
        free(names[i]);
    free(names);
    ferry_db_close(db);
}

static void test_transactions(struct ferry_db *db)
{
    struct ferry_error err = {0};
    struct ferry_db *db2 = open_db(0);
    struct ferry_db *ro = open_db(FERRY_DB_READONLY);
    struct ferry_stmt *st;
    int64_t n = -1;

    exec_ok(db, "CREATE TABLE tx (id int PRIMARY KEY)");
    ASSERT_EQ(ferry_db_begin(db, &err), 0);
    exec_ok(db, "INSERT INTO tx VALUES (1)");
    ferry_db_rollback(db);
    ASSERT_STR(psql("SELECT count(*) FROM tx"), "0");

    ASSERT_EQ(ferry_db_begin(db, &err), 0);
    st = prepare_ok(db, "INSERT INTO tx SELECT g FROM generate_series(1, 3) AS g");
    step_ok(st, 0);
    ASSERT_EQ(ferry_stmt_changes(st), 3);
    ferry_stmt_free(st);
    /* a failed prepare inside a transaction leaves it usable (as on SQLite) */
    st = NULL;
    ASSERT_EQ(ferry_db_prepare(db, "SELEC nonsense", &st, &err), FERRY_EDB);
    ASSERT(strstr(err.msg, "SQLSTATE 42601"));
    /* so does one that needs the untyped-parameter retry */
    ASSERT_EQ(ferry_db_query_int(db, "SELECT count(*) FROM tx WHERE ? IS NULL",
                                 (struct ferry_value[]){ferry_value_null()}, 1, &n, &err),
              0);
    ASSERT_EQ(n, 3);
    ASSERT_EQ(ferry_db_commit(db, &err), 0);
    ASSERT_STR(psql("SELECT string_agg(id::text, ',' ORDER BY id) FROM tx"), "1,2,3");

    /* update/delete counts; a SELECT counts no changes */
    st = prepare_ok(db, "UPDATE tx SET id = id + 10 WHERE id >= ?");
    bind_ok(st, 1, ferry_value_int(2));
    step_ok(st, 0);
    ASSERT_EQ(ferry_stmt_changes(st), 2);
    ferry_stmt_free(st);
    st = prepare_ok(db, "SELECT id FROM tx");
    while (1) {
        int row;

        ASSERT_EQ(ferry_stmt_step(st, &row, &err), 0);
        if (!row)
            break;
    }
    ASSERT_EQ(ferry_stmt_changes(st), 0);
    ferry_stmt_free(st);

    /* a failed statement aborts the transaction: COMMIT must not report success */
    ASSERT_EQ(ferry_db_begin(db, &err), 0);
    ASSERT_EQ(ferry_db_exec(db, "INSERT INTO tx VALUES (1)", &err), FERRY_EDB);
    ASSERT(strstr(err.msg, "SQLSTATE 23505"));
    ASSERT_EQ(ferry_db_commit(db, &err), FERRY_EDB);
    ASSERT(strstr(err.msg, "rolled the transaction back"));
    ferry_db_rollback(db);

    /* begin_read sees one snapshot while another connection writes */
    ASSERT_EQ(ferry_db_begin_read(db, &err), 0);
    ASSERT_EQ(ferry_db_query_int(db, "SELECT count(*) FROM tx", NULL, 0, &n, &err), 0);
    ASSERT_EQ(n, 3);
    exec_ok(db2, "INSERT INTO tx VALUES (100)");
    ASSERT_EQ(ferry_db_query_int(db, "SELECT count(*) FROM tx", NULL, 0, &n, &err), 0);
    ASSERT_EQ(n, 3);
    ASSERT_EQ(ferry_db_exec(db, "INSERT INTO tx VALUES (101)", &err), FERRY_EDB);
    ASSERT(strstr(err.msg, "SQLSTATE 25006")); /* read-only transaction */
    ferry_db_rollback(db);
    ASSERT_EQ(ferry_db_query_int(db, "SELECT count(*) FROM tx", NULL, 0, &n, &err), 0);
    ASSERT_EQ(n, 4);

    /* a rollback ends a statement whose rows were still streaming; reset revives it */
    ASSERT_EQ(ferry_db_begin_read(db, &err), 0);
    st = prepare_ok(db, "SELECT g FROM generate_series(1, 5000) AS g");
    step_ok(st, 1);
    step_ok(st, 1);
    ferry_db_rollback(db);
    {
        int row = -1;

        ASSERT_EQ(ferry_stmt_step(st, &row, &err), FERRY_EDB);
        ASSERT(strstr(err.msg, "rollback"));
        ASSERT_EQ(row, 0);
    }
    ferry_stmt_reset(st);
    step_ok(st, 1);
    ferry_stmt_free(st);

    /* statements freed inside a transaction are deallocated once it ends */
    ASSERT_EQ(ferry_db_begin(db, &err), 0);
    for (int i = 0; i < 5; i++)
        ferry_stmt_free(prepare_ok(db, "SELECT 1"));
    ASSERT_EQ(
        ferry_db_query_int(db, "SELECT count(*) FROM pg_prepared_statements", NULL, 0, &n, &err),
        0);
    ASSERT_EQ(n, 6);
    ASSERT_EQ(ferry_db_commit(db, &err), 0);
    ASSERT_EQ(
        ferry_db_query_int(db, "SELECT count(*) FROM pg_prepared_statements", NULL, 0, &n, &err),
        0);
    ASSERT_EQ(n, 1); /* only the statement running this count */

    /* a READONLY connection never writes */
    ASSERT_EQ(ferry_db_exec(ro, "INSERT INTO tx VALUES (102)", &err), FERRY_EDB);
    ASSERT(strstr(err.msg, "SQLSTATE 25006"));
    ASSERT_STR(psql("SELECT count(*) FROM tx"), "4");
    ferry_db_close(ro);
    ferry_db_close(db2);
}

static void test_connect_errors(void)
{
    struct ferry_error err = {0};
    struct ferry_db *db = NULL;
    char bad[1200];

    ASSERT_EQ(
        ferry_db_open("postgresql:///postgres?host=/nonexistent-ferry&port=5999", 0, &db, &err),
        FERRY_EDB);
    ASSERT(db == NULL);
    printf("bad host: %s\n", err.msg);
    ASSERT(strstr(err.msg, "cannot connect to PostgreSQL at /nonexistent-ferry:5999: ") == err.msg);
    ASSERT(strstr(err.msg, "No such file or directory"));
    ASSERT(strchr(err.msg, '\t') == NULL);

    /* a database that does not exist, on the live server */
    snprintf(bad, sizeof(bad), "%s", url);
    {
        char *q = strstr(bad, "?");
        char tail[600];

        ASSERT(q);
        snprintf(tail, sizeof(tail), "%s", q);
        snprintf(bad, sizeof(bad), "postgresql:///no_such_db%s", tail);
    }
    ASSERT_EQ(ferry_db_open(bad, 0, &db, &err), FERRY_EDB);
    printf("bad database: %s\n", err.msg);
    ASSERT(strstr(err.msg, "cannot connect to PostgreSQL at "));
    ASSERT(strstr(err.msg, "no_such_db"));

    ASSERT_EQ(ferry_db_open("postgresql://?bogus_option=1", 0, &db, &err), FERRY_ECONFIG);
    printf("bad url: %s\n", err.msg);
    ASSERT(strstr(err.msg, "invalid PostgreSQL URL"));

    /* errors on a live connection carry the SQLSTATE */
    db = open_db(0);
    ASSERT_EQ(ferry_db_exec(db, "SELECT * FROM no_such_table", &err), FERRY_EDB);
    ASSERT(strstr(err.msg, "no_such_table"));
    ASSERT(strstr(err.msg, "SQLSTATE 42P01"));
    ferry_db_close(db);
}

/*
 * Bulk load: every kind of value, escapes, bytea from BLOB and TEXT, a
 * table name that needs quoting; the oracle is psql reading the rows back.
 * A NUL in text is refused naming the column, and the transaction is then
 * rolled back with nothing loaded.
 */
static void test_copy(struct ferry_db *db)
{
    static const char *const cols[] = {"id", "t", "b", "f", "ok", "n"};
    struct ferry_error err = {0};
    struct ferry_value row[6];
    int64_t rows = -1;
    int rc;

    exec_ok(db, "CREATE TABLE \"Copy Me\" (id bigint PRIMARY KEY, t text, b bytea,"
                " f double precision, ok boolean, n numeric)");
    exec_ok(db, "BEGIN");
    rc = ferry_db_copy_begin(db, "Copy Me", cols, 6, &err);
    if (rc)
        fprintf(stderr, "copy_begin: %s\n", err.msg);
    ASSERT_EQ(rc, 0);
    row[0] = ferry_value_int(1);
    row[1] = ferry_value_text("tab\there\nnew\\line\r", 18);
    row[2] = fv_blob("\0\x01\xff\\", 4);
    row[3] = fv_float(0.1);
    row[4] = ferry_value_int(1);
    row[5] = ferry_value_text("12345678901234567890.000000000000000001", 39);
    ASSERT_EQ(ferry_db_copy_row(db, row, &err), 0);
    row[0] = ferry_value_int(2);
    row[1] = ferry_value_text("\\N", 2);
    row[2] = ferry_value_text("as text", 7);
    row[3] = fv_float(-0.0);
    row[4] = ferry_value_int(0);
    row[5] = ferry_value_null();
    ASSERT_EQ(ferry_db_copy_row(db, row, &err), 0);
    row[0] = ferry_value_int(3);
    row[1] = ferry_value_null();
    row[2] = ferry_value_null();
    row[3] = fv_float(5e-324);
    row[4] = ferry_value_null();
    row[5] = ferry_value_int(-7);
    ASSERT_EQ(ferry_db_copy_row(db, row, &err), 0);
    for (int i = 4; i < 2004; i++) {
        row[0] = ferry_value_int(i);
        row[3] = fv_float(i / 3.0);
        ASSERT_EQ(ferry_db_copy_row(db, row, &err), 0);
    }
    rc = ferry_db_copy_end(db, &rows, &err);
    if (rc)
        fprintf(stderr, "copy_end: %s\n", err.msg);
    ASSERT_EQ(rc, 0);
    ASSERT_EQ(rows, 2003);
    exec_ok(db, "COMMIT");
    ASSERT_STR(
        psql("SELECT id, t, b, f, ok, n FROM \"Copy Me\" WHERE id < 4 ORDER BY id"),
        "1|tab\there\nnew\\line\r|\\x0001ff5c|0.1|t|12345678901234567890.000000000000000001\n"
        "2|\\N|\\x61732074657874|-0|f|\n"
        "3|||5e-324||-7");
    ASSERT_EQ(psql_int("SELECT count(*) FROM \"Copy Me\" WHERE f = id / 3.0::float8"), 2000);

    /* a NUL in text: refused by name, nothing loaded */
    exec_ok(db, "BEGIN");
    ASSERT_EQ(ferry_db_copy_begin(db, "Copy Me", cols, 6, &err), 0);
    row[0] = ferry_value_int(5000);
    row[1] = ferry_value_text("a\0b", 3);
    row[2] = ferry_value_null();
    row[3] = fv_float(1);
    row[4] = ferry_value_null();
    row[5] = ferry_value_null();
    ASSERT_EQ(ferry_db_copy_row(db, row, &err), FERRY_EDATA);
    ASSERT(strstr(err.msg, "column t") != NULL);
    ASSERT(strstr(err.msg, "NUL") != NULL);
    ferry_db_rollback(db);
    /* invalid UTF-8 (a lone continuation byte, a surrogate): refused by name too */
    exec_ok(db, "BEGIN");
    ASSERT_EQ(ferry_db_copy_begin(db, "Copy Me", cols, 6, &err), 0);
    row[1] = ferry_value_text("ok \xe2\x9c\x93 \x80", 8);
    ASSERT_EQ(ferry_db_copy_row(db, row, &err), FERRY_EDATA);
    ASSERT(strstr(err.msg, "column t") != NULL);
    ASSERT(strstr(err.msg, "UTF-8") != NULL);
    ferry_db_rollback(db);
    exec_ok(db, "BEGIN");
    ASSERT_EQ(ferry_db_copy_begin(db, "Copy Me", cols, 6, &err), 0);
    row[1] = ferry_value_text("\xed\xa0\x80", 3);
    ASSERT_EQ(ferry_db_copy_row(db, row, &err), FERRY_EDATA);
    ferry_db_rollback(db);
    ASSERT_EQ(psql_int("SELECT count(*) FROM \"Copy Me\""), 2003);

    /* a value the column type rejects: the server's error at the end, then rollback */
    exec_ok(db, "BEGIN");
    ASSERT_EQ(ferry_db_copy_begin(db, "Copy Me", cols, 6, &err), 0);
    row[0] = ferry_value_int(5001);
    row[1] = ferry_value_null();
    row[5] = ferry_value_text("not a number", 12);
    ASSERT_EQ(ferry_db_copy_row(db, row, &err), 0);
    ASSERT_EQ(ferry_db_copy_end(db, &rows, &err), FERRY_EDB);
    ASSERT(strstr(err.msg, "Copy Me") != NULL);
    ferry_db_rollback(db);
    /* abandoned mid-copy by a rollback: the connection stays usable */
    exec_ok(db, "BEGIN");
    ASSERT_EQ(ferry_db_copy_begin(db, "Copy Me", cols, 6, &err), 0);
    row[5] = ferry_value_null();
    ASSERT_EQ(ferry_db_copy_row(db, row, &err), 0);
    ferry_db_rollback(db);
    ASSERT_EQ(psql_int("SELECT count(*) FROM \"Copy Me\""), 2003);
    exec_ok(db, "DROP TABLE \"Copy Me\"");
}

/* What the server reported, read without a statement, against SHOW through psql. */
static void test_server_settings(void)
{
    struct ferry_db *db = open_db(0);
    const char *p;

    ASSERT_EQ(ferry_db_server_version(db), psql_int("SHOW server_version_num"));
    p = ferry_db_server_param(db, "server_encoding");
    ASSERT(p != NULL);
    ASSERT_STR(p, psql("SHOW server_encoding"));
    /* a setting changed in the session is reported again */
    exec_ok(db, "SET TimeZone = 'Asia/Tokyo'");
    p = ferry_db_server_param(db, "TimeZone");
    ASSERT(p != NULL);
    ASSERT_STR(p, "Asia/Tokyo");
    /* one the server does not report */
    ASSERT(ferry_db_server_param(db, "work_mem") == NULL);
    ferry_db_close(db);
}

/* The session's synchronous_commit is on (1), or not (0). */
static int64_t sync_commit_on(struct ferry_db *db)
{
    struct ferry_error err = {0};
    int64_t on = -1;

    ASSERT_EQ(ferry_db_query_int(db,
                                 "SELECT (pg_catalog.current_setting('synchronous_commit') = "
                                 "'on')::int",
                                 NULL, 0, &on, &err),
              0);
    return on;
}

/*
 * A database (or server, or role) whose synchronous_commit is off: the
 * session's commits still wait for the disk, at connect and after a lazy
 * stretch of group commit (RESET gave off back, and a target server's
 * crash lost change batches whose marks had moved past them).
 */
static void test_durable(void)
{
    struct ferry_error err = {0};
    struct ferry_db *db;
    int64_t local = 0;

    psql("DO $$BEGIN EXECUTE format('ALTER DATABASE %I SET synchronous_commit = off', "
         "current_database()); END$$");
    ASSERT_STR(psql("SHOW synchronous_commit"), "off");
    db = open_db(0);
    ASSERT_EQ(sync_commit_on(db), 1);
    ASSERT_EQ(ferry_db_durable(db, 0, &err), 0);
    ASSERT_EQ(sync_commit_on(db), 0);
    ASSERT_EQ(ferry_db_durable(db, 1, &err), 0);
    ASSERT_EQ(sync_commit_on(db), 1);
    ferry_db_close(db);
    psql("DO $$BEGIN EXECUTE format('ALTER DATABASE %I SET synchronous_commit = local', "
         "current_database()); END$$");
    /* a durable setting of its own is kept */
    db = open_db(0);
    ASSERT_EQ(ferry_db_durable(db, 0, &err), 0);
    ASSERT_EQ(ferry_db_durable(db, 1, &err), 0);
    ASSERT_EQ(ferry_db_query_int(db,
                                 "SELECT (pg_catalog.current_setting('synchronous_commit') = "
                                 "'local')::int",
                                 NULL, 0, &local, &err),
              0);
    ASSERT_EQ(local, 1);
    ferry_db_close(db);
    psql("DO $$BEGIN EXECUTE format('ALTER DATABASE %I RESET synchronous_commit', "
         "current_database()); END$$");
}

int main(void)
{
    struct ferry_db *db;

    start_cluster();
    test_connect_errors();
    db = open_db(0);
    test_types(db);
    test_floats(db);
    test_ints_bytes_numeric(db);
    test_rewrite(db);
    test_big_result(db);
    test_transactions(db);
    test_copy(db);
    ferry_db_close(db);
    test_introspection();
    test_server_settings();
    test_durable();
    test_pg_passed();
    return TEST_DONE();
}
