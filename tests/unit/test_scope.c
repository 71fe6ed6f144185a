/*
 * test_scope.c - names of ferry's objects (ferry_scope_objname): as before
 * up to PostgreSQL's 63 bytes, distinct and within them beyond.
 */
#include "test.h"

#include "common/crypto.h"
#include "common/scope.h"

#include <stdio.h>
#include <string.h>

/* The hex of the first 4 bytes of SHA-256(s), computed here independently of scope.c. */
static void hash8(const char *s, char out[9])
{
    unsigned char md[FERRY_SHA256_LEN];
    struct ferry_error err;

    ASSERT_EQ(ferry_sha256(s, strlen(s), md, &err), FERRY_OK);
    snprintf(out, 9, "%02x%02x%02x%02x", md[0], md[1], md[2], md[3]);
}

static void test_short_names_unchanged(void)
{
    char name[FERRY_OBJNAME_SIZE];
    /* "_ferry_k_" (9 bytes) + 54 = 63: the longest name kept as it is */
    const char *t54 = "abcdefghijklmnopqrstuvwxyzabcdefghijklmnopqrstuvwxyz01";

    ASSERT_EQ(ferry_scope_objname(name, "k", "posts"), FERRY_OK);
    ASSERT_STR(name, "_ferry_k_posts");
    ASSERT_EQ(ferry_scope_objname(name, "frz_fn", "posts"), FERRY_OK);
    ASSERT_STR(name, "_ferry_frz_fn_posts");
    ASSERT_EQ(strlen(t54), 54);
    ASSERT_EQ(ferry_scope_objname(name, "k", t54), FERRY_OK);
    ASSERT_EQ(strlen(name), 63);
    ASSERT(strcmp(name + 9, t54) == 0);
}

static void test_long_names_distinct(void)
{
    char a[FERRY_OBJNAME_SIZE], b[FERRY_OBJNAME_SIZE], want[FERRY_OBJNAME_SIZE], h[9];
    const char *ta = "customer_relationship_management_opportunity_line_items_a";
    const char *tb = "customer_relationship_management_opportunity_line_items_b";

    ASSERT(strlen(ta) > 54);
    ASSERT_EQ(ferry_scope_objname(a, "k", ta), FERRY_OK);
    ASSERT_EQ(ferry_scope_objname(b, "k", tb), FERRY_OK);
    ASSERT_EQ(strlen(a), 63);
    ASSERT_EQ(strlen(b), 63);
    ASSERT(strcmp(a, b) != 0);
    /* what fits of the name, "_", 8 hex digits of its SHA-256 */
    hash8(ta, h);
    snprintf(want, sizeof(want), "_ferry_k_%.45s_%s", ta, h);
    ASSERT_STR(a, want);
    /* the same table, the same name, every time */
    ASSERT_EQ(ferry_scope_objname(b, "k", ta), FERRY_OK);
    ASSERT_STR(b, a);
    /* a longer kind keeps less of the name */
    ASSERT_EQ(ferry_scope_objname(b, "frz_fn", ta), FERRY_OK);
    ASSERT_EQ(strlen(b), 63);
    snprintf(want, sizeof(want), "_ferry_frz_fn_%.40s_%s", ta, h);
    ASSERT_STR(b, want);
}

static void test_utf8_not_cut(void)
{
    char name[FERRY_OBJNAME_SIZE], h[9], want[FERRY_OBJNAME_SIZE];
    /* 44 ASCII bytes, then "é" (2 bytes) across the 45-byte cut, then more */
    const char *t = "abcdefghijklmnopqrstuvwxyzabcdefghijklmnopqr\xc3\xa9tail_of_the_name";

    ASSERT_EQ(ferry_scope_objname(name, "k", t), FERRY_OK);
    hash8(t, h);
    snprintf(want, sizeof(want), "_ferry_k_%.44s_%s", t, h);
    ASSERT_STR(name, want);
    ASSERT_EQ(strlen(name), 62);
}

int main(void)
{
    test_short_names_unchanged();
    test_long_names_distinct();
    test_utf8_not_cut();
    return TEST_DONE();
}
