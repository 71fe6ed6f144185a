/*
 * test_checksum.c - row hashes against known vectors (SHA-256 of the
 * canonical encoding, computed independently with Python's hashlib), and
 * range counts, checksums and splits over a real SQLite database whose
 * tenant rows are known by construction.
 */
#include "common/checksum.h"
#include "common/db/db.h"
#include "common/scope.h"

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

static uint64_t row_hash(const struct ferry_value *v, size_t n)
{
    static struct ferry_rowhash *rh;
    struct ferry_error err;
    uint64_t h = 0;

    /* one hasher for every row, as verify uses it: no state leaks between rows */
    if (!rh)
        ASSERT_EQ(ferry_rowhash_new(1 << 20, &rh, &err), FERRY_OK);
    ASSERT_EQ(ferry_rowhash_row(rh, v, n, &h, &err), FERRY_OK);
    return h;
}

static struct ferry_value flt(double d)
{
    struct ferry_value v = {.type = FERRY_FLOAT};

    v.u.f = d;
    return v;
}

static struct ferry_value blob(const char *p, size_t n)
{
    struct ferry_value v = {.type = FERRY_BLOB};

    v.u.s.p = p;
    v.u.s.n = n;
    return v;
}

/*
 * Expected values: hashlib.sha256(encoding).digest()[:8] read big-endian,
 * with the encoding of checksum.h built by hand in Python.
 */
static void test_vectors(void)
{
    struct ferry_value row[5];

    ASSERT(row_hash(NULL, 0) == UINT64_C(0xe3b0c44298fc1c14)); /* SHA-256("") */
    row[0] = ferry_value_null();
    ASSERT(row_hash(row, 1) == UINT64_C(0x6e340b9cffb37a98)); /* SHA-256("\0") */

    row[0] = ferry_value_int(1);
    row[1] = ferry_value_text("a", 1);
    row[2] = flt(-0.0);
    row[3] = blob("\x00\xff", 2);
    row[4] = ferry_value_null();
    ASSERT(row_hash(row, 5) == UINT64_C(0x0166381f45ec0da8));
    /* +0.0 is another value than -0.0 */
    row[2] = flt(0.0);
    ASSERT(row_hash(row, 5) == UINT64_C(0x5e1721a95726841d));

    row[0] = ferry_value_int(INT64_MIN);
    row[1] = ferry_value_text("h\xc3\xa9", 3);
    row[2] = blob("", 0);
    row[3] = ferry_value_text("", 0);
    ASSERT(row_hash(row, 4) == UINT64_C(0xef292678a6eee295));

    /* the type is part of the value: '1', 1, x'31' and 1.0 all differ */
    row[0] = ferry_value_text("1", 1);
    ASSERT(row_hash(row, 1) == UINT64_C(0x0e31e64fa5bb43ae));
    row[0] = ferry_value_int(1);
    ASSERT(row_hash(row, 1) == UINT64_C(0xf52f3a746c254565));
    row[0] = blob("1", 1);
    ASSERT(row_hash(row, 1) == UINT64_C(0xef0ca6eaedace03f));
    row[0] = flt(1.0);
    ASSERT(row_hash(row, 1) == UINT64_C(0xc701170e1364e328));

    /* a row over the hasher's limit is refused, not truncated */
    {
        struct ferry_rowhash *small = NULL;
        struct ferry_error err;
        uint64_t h = 0;

        ASSERT_EQ(ferry_rowhash_new(10, &small, &err), FERRY_OK);
        row[0] = ferry_value_text("0123456789", 10);
        ASSERT_EQ(ferry_rowhash_row(small, row, 1, &h, &err), FERRY_ETOOBIG);
        row[0] = ferry_value_text("0", 1);
        ASSERT_EQ(ferry_rowhash_row(small, row, 1, &h, &err), FERRY_OK);
        ASSERT(h == UINT64_C(0x0eecaee0239c370f)); /* the row of TEXT "0" */
        ferry_rowhash_free(small);
    }
}

/* ---- ranges over a database ---- */

static struct ferry_db *db;
static struct ferry_scope *scope;

/*
 * teams 1..3; channels 1..30 round-robin over teams 1 and 2 (odd ids team 1,
 * even ids team 2), name "c<id>"; settings (team_id, key) with keys k0..k9
 * for teams 1 and 2 (a two-column key).
 */
static void setup(void)
{
    const char *dir = test_tmpdir("test_checksum");
    struct ferry_table_info *tables;
    struct ferry_error err;
    char url[700];
    char **names = NULL;
    size_t n = 0;

    snprintf(url, sizeof(url), "sqlite://%s/c.db", dir);
    ASSERT_EQ(ferry_db_open(url, FERRY_DB_CREATE, &db, &err), FERRY_OK);
    ASSERT_EQ(ferry_db_exec(db,
                            "CREATE TABLE teams(id INTEGER PRIMARY KEY, name TEXT);"
                            "CREATE TABLE channels(id INTEGER PRIMARY KEY,"
                            " team_id INTEGER REFERENCES teams(id), name TEXT);"
                            "CREATE TABLE settings(team_id INTEGER REFERENCES teams(id),"
                            " key TEXT, value, PRIMARY KEY(team_id, key)) WITHOUT ROWID;"
                            "INSERT INTO teams VALUES (1, 'one'), (2, 'two'), (3, 'three');"
                            "WITH RECURSIVE s(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM s "
                            " WHERE i < 30) INSERT INTO channels SELECT i, 2 - (i % 2), 'c' || i "
                            " FROM s;"
                            "WITH RECURSIVE s(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM s "
                            " WHERE i < 9) INSERT INTO settings SELECT t, 'k' || i, i * t "
                            " FROM s, (SELECT 1 AS t UNION ALL SELECT 2);",
                            &err),
              FERRY_OK);
    ASSERT_EQ(ferry_db_tables(db, &names, &n, &err), FERRY_OK);
    ASSERT_EQ(n, 3);
    tables = calloc(n, sizeof(*tables));
    ASSERT(tables != NULL);
    for (size_t i = 0; i < n; i++) {
        ASSERT_EQ(ferry_db_table_info(db, names[i], &tables[i], &err), FERRY_OK);
        free(names[i]);
    }
    free(names);
    ASSERT_EQ(ferry_scope_build(tables, n, "teams", &scope, &err), FERRY_OK);
    ASSERT_EQ(scope->ntables, 3);
}

/* Hash of channel id as the database holds it: (id, team_id, 'c<id>'). */
static uint64_t channel_hash(int64_t id)
{
    struct ferry_value v[3];
    char name[32];

    snprintf(name, sizeof(name), "c%lld", (long long)id);
    v[0] = ferry_value_int(id);
    v[1] = ferry_value_int(2 - (id % 2));
    v[2] = ferry_value_text(name, strlen(name));
    return row_hash(v, 3);
}

static struct ferry_checksum *open_table(const char *name, int64_t tenant)
{
    struct ferry_checksum *c = NULL;
    struct ferry_value tv = ferry_value_int(tenant);
    struct ferry_error err;
    int t = ferry_scope_find(scope, name);

    ASSERT(t >= 0);
    ASSERT_EQ(ferry_checksum_new(db, scope, (size_t)t, &tv, NULL, &c, &err), FERRY_OK);
    return c;
}

static void test_sums(void)
{
    struct ferry_checksum *c = open_table("channels", 1);
    struct ferry_error err;
    struct ferry_value lo = ferry_value_int(10), hi = ferry_value_int(20);
    uint64_t want = 0, sum = 0;
    int64_t count = 0;

    /* team 1: the 15 odd ids 1..29 */
    for (int64_t id = 1; id <= 29; id += 2)
        want += channel_hash(id);
    ASSERT_EQ(ferry_checksum_sum(c, NULL, 0, NULL, 0, &count, &sum, &err), FERRY_OK);
    ASSERT_EQ(count, 15);
    ASSERT(sum == want);

    /* [10, 20): 11, 13, 15, 17, 19; bounds on one side only */
    want = 0;
    for (int64_t id = 11; id <= 19; id += 2)
        want += channel_hash(id);
    ASSERT_EQ(ferry_checksum_sum(c, &lo, 1, &hi, 1, &count, &sum, &err), FERRY_OK);
    ASSERT_EQ(count, 5);
    ASSERT(sum == want);
    ASSERT_EQ(ferry_checksum_sum(c, &lo, 1, NULL, 0, &count, &sum, &err), FERRY_OK);
    ASSERT_EQ(count, 10); /* 11..29 */
    ASSERT_EQ(ferry_checksum_sum(c, NULL, 0, &hi, 1, &count, &sum, &err), FERRY_OK);
    ASSERT_EQ(count, 10); /* 1..19 */
    /* hi is exclusive, lo inclusive */
    lo = ferry_value_int(11);
    hi = ferry_value_int(11);
    ASSERT_EQ(ferry_checksum_sum(c, &lo, 1, &hi, 1, &count, &sum, &err), FERRY_OK);
    ASSERT_EQ(count, 0);
    ASSERT(sum == 0);
    /* a bound of the wrong width */
    ASSERT_EQ(ferry_checksum_sum(c, &lo, 2, NULL, 0, &count, &sum, &err), FERRY_EDATA);
    ferry_checksum_free(c);

    /* the other tenant's rows are its own: 15 even ids, a different sum */
    c = open_table("channels", 2);
    want = 0;
    for (int64_t id = 2; id <= 30; id += 2)
        want += channel_hash(id);
    ASSERT_EQ(ferry_checksum_sum(c, NULL, 0, NULL, 0, &count, &sum, &err), FERRY_OK);
    ASSERT_EQ(count, 15);
    ASSERT(sum == want);
    ferry_checksum_free(c);

    /* a tenant without rows */
    c = open_table("channels", 3);
    ASSERT_EQ(ferry_checksum_sum(c, NULL, 0, NULL, 0, &count, &sum, &err), FERRY_OK);
    ASSERT_EQ(count, 0);
    ferry_checksum_free(c);

    /* a row moved to another tenant leaves this tenant's sum */
    ASSERT_EQ(ferry_db_exec(db, "UPDATE channels SET team_id = 3 WHERE id = 5", &err), FERRY_OK);
    c = open_table("channels", 1);
    ASSERT_EQ(ferry_checksum_sum(c, NULL, 0, NULL, 0, &count, &sum, &err), FERRY_OK);
    ASSERT_EQ(count, 14);
    ferry_checksum_free(c);
    ASSERT_EQ(ferry_db_exec(db, "UPDATE channels SET team_id = 1 WHERE id = 5", &err), FERRY_OK);
}

static void test_split(void)
{
    struct ferry_checksum *c = open_table("channels", 1);
    struct ferry_ranges rs;
    struct ferry_error err;
    uint64_t total = 0;
    int64_t rows = 0;

    /*
     * 15 rows in 4 parts, in one pass: marks at rows 0..7, then every other
     * row (0, 2, ..., 14); 4 ranges start at marks 0, 2, 4, 6: rows 0, 4, 8,
     * 12, ids 1, 9, 17, 25.
     */
    ASSERT_EQ(ferry_checksum_split(c, NULL, 0, NULL, 0, 4, &rs, &err), FERRY_OK);
    ASSERT_EQ(rs.n, 4);
    {
        static const int64_t first[4] = {1, 9, 17, 25};
        static const int64_t count[4] = {4, 4, 4, 3};

        for (size_t i = 0; i < 4; i++) {
            ASSERT_EQ(rs.r[i].nfirst, 1);
            ASSERT_EQ(rs.r[i].first[0].type, FERRY_INT);
            ASSERT_EQ(rs.r[i].first[0].u.i, first[i]);
            ASSERT_EQ(rs.r[i].count, count[i]);
            rows += rs.r[i].count;
            total += rs.r[i].sum;
        }
    }
    ASSERT_EQ(rows, 15);
    {
        uint64_t sum = 0;
        int64_t n = 0;

        /* the whole is the sum of the parts; a range re-read alone gives its own numbers */
        ASSERT_EQ(ferry_checksum_sum(c, NULL, 0, NULL, 0, &n, &sum, &err), FERRY_OK);
        ASSERT(total == sum);
        ASSERT_EQ(ferry_checksum_sum(c, &rs.r[1].first[0], 1, &rs.r[2].first[0], 1, &n, &sum, &err),
                  FERRY_OK);
        ASSERT_EQ(n, rs.r[1].count);
        ASSERT(sum == rs.r[1].sum);
    }
    ferry_ranges_release(&rs);

    /* one part: the whole, from the first row */
    ASSERT_EQ(ferry_checksum_split(c, NULL, 0, NULL, 0, 1, &rs, &err), FERRY_OK);
    ASSERT_EQ(rs.n, 1);
    ASSERT_EQ(rs.r[0].first[0].u.i, 1);
    ASSERT_EQ(rs.r[0].count, 15);
    ASSERT(rs.r[0].sum == total);
    ferry_ranges_release(&rs);

    /* more parts than rows: one range per row, its sum the row's hash */
    ASSERT_EQ(ferry_checksum_split(c, NULL, 0, NULL, 0, 1024, &rs, &err), FERRY_OK);
    ASSERT_EQ(rs.n, 15);
    for (size_t i = 0; i < rs.n; i++) {
        ASSERT_EQ(rs.r[i].count, 1);
        ASSERT_EQ(rs.r[i].first[0].u.i, 1 + 2 * (int64_t)i);
        ASSERT(rs.r[i].sum == channel_hash(1 + 2 * (int64_t)i));
    }
    ferry_ranges_release(&rs);

    /* a bounded split: [10, 20) is 11..19 */
    {
        struct ferry_value lo = ferry_value_int(10), hi = ferry_value_int(20);

        ASSERT_EQ(ferry_checksum_split(c, &lo, 1, &hi, 1, 2, &rs, &err), FERRY_OK);
        ASSERT_EQ(rs.n, 2);
        ASSERT_EQ(rs.r[0].first[0].u.i, 11);
        ASSERT_EQ(rs.r[0].count, 2);
        ASSERT_EQ(rs.r[1].first[0].u.i, 15);
        ASSERT_EQ(rs.r[1].count, 3);
        ferry_ranges_release(&rs);
    }
    /* parts out of range */
    ASSERT_EQ(ferry_checksum_split(c, NULL, 0, NULL, 0, 0, &rs, &err), FERRY_EINTERNAL);
    ferry_ranges_release(&rs);
    ferry_checksum_free(c);

    /* no rows: no ranges */
    c = open_table("channels", 3);
    ASSERT_EQ(ferry_checksum_split(c, NULL, 0, NULL, 0, 8, &rs, &err), FERRY_OK);
    ASSERT_EQ(rs.n, 0);
    ferry_ranges_release(&rs);
    ASSERT_EQ(ferry_checksum_split(c, NULL, 0, NULL, 0, 1, &rs, &err), FERRY_OK);
    ASSERT_EQ(rs.n, 0);
    ferry_ranges_release(&rs);
    ferry_checksum_free(c);
}

/* A split of many rows: stride doubling several times, ranges of about equal size. */
static void test_split_many(void)
{
    struct ferry_checksum *c;
    struct ferry_ranges rs;
    struct ferry_error err;
    uint64_t total = 0, sum = 0, parts_sum = 0;
    int64_t n = 0, rows = 0;

    ASSERT_EQ(ferry_db_exec(db,
                            "WITH RECURSIVE s(i) AS (SELECT 1001 UNION ALL SELECT i + 1 FROM s "
                            " WHERE i < 3000) INSERT INTO channels SELECT i, 3, 'c' || i FROM s",
                            &err),
              FERRY_OK);
    c = open_table("channels", 3);
    ASSERT_EQ(ferry_checksum_sum(c, NULL, 0, NULL, 0, &n, &total, &err), FERRY_OK);
    ASSERT_EQ(n, 2000);
    ASSERT_EQ(ferry_checksum_split(c, NULL, 0, NULL, 0, 32, &rs, &err), FERRY_OK);
    ASSERT_EQ(rs.n, 32);
    for (size_t i = 0; i < rs.n; i++) {
        const struct ferry_value *hi = i + 1 < rs.n ? rs.r[i + 1].first : NULL;

        /* 2000 / 32 = 62.5 rows a range, within a factor of two */
        ASSERT(rs.r[i].count >= 31 && rs.r[i].count <= 126);
        ASSERT(i == 0 || rs.r[i].first[0].u.i > rs.r[i - 1].first[0].u.i);
        ASSERT_EQ(ferry_checksum_sum(c, rs.r[i].first, 1, hi, hi ? 1 : 0, &n, &sum, &err),
                  FERRY_OK);
        ASSERT_EQ(n, rs.r[i].count);
        ASSERT(sum == rs.r[i].sum);
        rows += rs.r[i].count;
        parts_sum += rs.r[i].sum;
    }
    ASSERT_EQ(rs.r[0].first[0].u.i, 1001);
    ASSERT_EQ(rows, 2000);
    ASSERT(parts_sum == total);
    ferry_ranges_release(&rs);
    ferry_checksum_free(c);
    ASSERT_EQ(ferry_db_exec(db, "DELETE FROM channels WHERE team_id = 3", &err), FERRY_OK);
}

/* A two-column key with text: row-value bounds, and key bytes that outlive the statement. */
static void test_composite_key(void)
{
    struct ferry_checksum *c = open_table("settings", 2);
    struct ferry_ranges rs;
    struct ferry_error err;
    uint64_t sum = 0;
    int64_t n = 0;

    ASSERT_EQ(ferry_checksum_split(c, NULL, 0, NULL, 0, 3, &rs, &err), FERRY_OK);
    /* k0..k9 of team 2 in 3 parts: marks at rows 0..5, then 0, 2, 4, 6, 8; ranges at 0, 2, 6 */
    ASSERT_EQ(rs.n, 3);
    ASSERT_EQ(rs.r[0].nfirst, 2);
    ASSERT_EQ(rs.r[0].first[0].u.i, 2);
    ASSERT_EQ(rs.r[1].first[1].type, FERRY_TEXT);
    ASSERT_EQ(rs.r[1].first[1].u.s.n, 2);
    ASSERT(memcmp(rs.r[1].first[1].u.s.p, "k2", 2) == 0);
    ASSERT(memcmp(rs.r[2].first[1].u.s.p, "k6", 2) == 0);
    ASSERT_EQ(rs.r[0].count, 2);
    ASSERT_EQ(rs.r[2].count, 4);
    ASSERT_EQ(ferry_checksum_sum(c, rs.r[1].first, 2, rs.r[2].first, 2, &n, &sum, &err), FERRY_OK);
    ASSERT_EQ(n, 4);
    ASSERT(sum == rs.r[1].sum);
    {
        /* (2, 'k2') <= key < (2, 'k6'): the row values of team 2 only */
        struct ferry_value row[3];
        uint64_t want = 0;

        for (int i = 2; i < 6; i++) {
            char k[4];

            snprintf(k, sizeof(k), "k%d", i);
            row[0] = ferry_value_int(2);
            row[1] = ferry_value_text(k, 2);
            row[2] = ferry_value_int(2 * i);
            want += row_hash(row, 3);
        }
        ASSERT(sum == want);
    }
    ferry_ranges_release(&rs);
    ferry_checksum_free(c);
}

/*
 * Every kind of value, hashed by the engine (SQLite computes the row hash
 * in SQL) as the C encoding hashes it: the sum equals the sum of row_hash()
 * over the values bound; a masked column is hashed as its mask's value.
 */
static void test_values_in_sql(void)
{
    static const char nul_text[] = "a\0b", bad_utf8[] = "\xff\xfe", nul_blob[] = "\0\1\0\xff";
    struct ferry_value vals[10];
    struct ferry_value row[3];
    struct ferry_stmt *ins = NULL;
    struct ferry_checksum *c = NULL;
    struct ferry_value tv = ferry_value_int(3);
    struct ferry_error err;
    const char *masks[3] = {NULL, NULL, "'m' || key"};
    uint64_t want = 0, want_masked = 0, sum = 0;
    int64_t count = 0;
    size_t nv = 0;
    int t = ferry_scope_find(scope, "settings");
    int r = 0;

    ASSERT(t >= 0);
    vals[nv++] = ferry_value_null();
    vals[nv++] = ferry_value_int(INT64_MIN);
    vals[nv++] = flt(-0.0);
    vals[nv++] = flt(5e-324);
    vals[nv++] = ferry_value_text(nul_text, 3);
    vals[nv++] = ferry_value_text(bad_utf8, 2);
    vals[nv++] = ferry_value_text("", 0);
    vals[nv++] = blob(nul_blob, 4);
    vals[nv++] = blob("", 0);
    ASSERT_EQ(ferry_db_prepare(db, "INSERT INTO settings VALUES (3, ?, ?)", &ins, &err), FERRY_OK);
    for (size_t i = 0; i < nv; i++) {
        char key[8], mask[8];

        snprintf(key, sizeof(key), "v%zu", i);
        snprintf(mask, sizeof(mask), "mv%zu", i);
        row[0] = ferry_value_int(3);
        row[1] = ferry_value_text(key, strlen(key));
        row[2] = vals[i];
        ferry_stmt_reset(ins);
        ASSERT_EQ(ferry_stmt_bind(ins, 1, &row[1], &err), FERRY_OK);
        ASSERT_EQ(ferry_stmt_bind(ins, 2, &row[2], &err), FERRY_OK);
        ASSERT_EQ(ferry_stmt_step(ins, &r, &err), FERRY_OK);
        want += row_hash(row, 3);
        row[2] = ferry_value_text(mask, strlen(mask));
        want_masked += row_hash(row, 3);
    }
    ferry_stmt_free(ins);

    ASSERT_EQ(ferry_checksum_new(db, scope, (size_t)t, &tv, NULL, &c, &err), FERRY_OK);
    ASSERT_EQ(ferry_checksum_sum(c, NULL, 0, NULL, 0, &count, &sum, &err), FERRY_OK);
    ASSERT_EQ(count, (int64_t)nv);
    ASSERT(sum == want);
    ferry_checksum_free(c);
    ASSERT_EQ(ferry_checksum_new(db, scope, (size_t)t, &tv, masks, &c, &err), FERRY_OK);
    ASSERT_EQ(ferry_checksum_sum(c, NULL, 0, NULL, 0, &count, &sum, &err), FERRY_OK);
    ASSERT_EQ(count, (int64_t)nv);
    ASSERT(sum == want_masked);
    ferry_checksum_free(c);
    ASSERT_EQ(ferry_db_exec(db, "DELETE FROM settings WHERE team_id = 3", &err), FERRY_OK);

    /* rows whose root row is gone belong to no one, not even to a tenant of that key */
    ASSERT_EQ(ferry_db_exec(db, "UPDATE channels SET team_id = 4 WHERE id = 5", &err), FERRY_OK);
    c = open_table("channels", 4);
    ASSERT_EQ(ferry_checksum_sum(c, NULL, 0, NULL, 0, &count, &sum, &err), FERRY_OK);
    ASSERT_EQ(count, 0);
    ferry_checksum_free(c);
    ASSERT_EQ(ferry_db_exec(db, "UPDATE channels SET team_id = 1 WHERE id = 5", &err), FERRY_OK);
}

int main(void)
{
    test_vectors();
    setup();
    test_sums();
    test_split();
    test_split_many();
    test_composite_key();
    test_values_in_sql();
    ferry_scope_free(scope);
    ferry_db_close(db);
    return TEST_DONE();
}
