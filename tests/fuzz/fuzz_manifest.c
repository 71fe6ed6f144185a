/*
 * fuzz_manifest.c - libFuzzer target for ferry_manifest_decode.
 *
 * Any input: the decoder returns, and a refusal is EPROTO/ETOOBIG/ENOMEM
 * with a one-line message. An accepted manifest is encoded again; that must
 * decode to the same manifest, and encoding it again must give the same
 * bytes.
 */
#include "common/error.h"
#include "common/schema.h"
#include "proto/proto.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define CHECK(cond)                                                                                \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__, #cond);               \
            abort();                                                                               \
        }                                                                                          \
    } while (0)

static void check_refusal(int rc, const struct ferry_error *err)
{
    CHECK(rc == FERRY_EPROTO || rc == FERRY_ETOOBIG || rc == FERRY_ENOMEM);
    CHECK(err->code == rc);
    CHECK(err->msg[0] != '\0');
    CHECK(strchr(err->msg, '\n') == NULL);
}

static void check_table(const struct ferry_table_info *a, const struct ferry_table_info *b)
{
    CHECK(strcmp(a->name, b->name) == 0);
    CHECK(a->ncols == b->ncols && a->ncols > 0);
    for (size_t i = 0; i < a->ncols; i++) {
        CHECK(strcmp(a->cols[i].name, b->cols[i].name) == 0);
        CHECK(strcmp(a->cols[i].type, b->cols[i].type) == 0);
        CHECK(a->cols[i].notnull == b->cols[i].notnull);
        CHECK(a->cols[i].pk == b->cols[i].pk);
        CHECK(a->cols[i].pk >= 0 && (size_t)a->cols[i].pk <= a->ncols);
    }
    CHECK(a->nfks == b->nfks);
    for (size_t i = 0; i < a->nfks; i++) {
        CHECK(strcmp(a->fks[i].parent, b->fks[i].parent) == 0);
        CHECK(a->fks[i].ncols == b->fks[i].ncols && a->fks[i].ncols > 0);
        for (size_t j = 0; j < a->fks[i].ncols; j++) {
            CHECK(strcmp(a->fks[i].cols[j], b->fks[i].cols[j]) == 0);
            CHECK(strcmp(a->fks[i].pcols[j], b->fks[i].pcols[j]) == 0);
        }
        CHECK(a->fks[i].cascade == b->fks[i].cascade);
    }
    CHECK(a->without_rowid == b->without_rowid);
    CHECK((a->scope_sql == NULL) == (b->scope_sql == NULL));
    CHECK(!a->scope_sql || strcmp(a->scope_sql, b->scope_sql) == 0);
    CHECK(a->rows == b->rows);
    /* the key positions are 1..npk, each once */
    for (size_t k = 0; k < ferry_table_npk(a); k++)
        CHECK(ferry_table_pkcol(a, k) >= 0);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct ferry_manifest *m = NULL, *m2 = NULL;
    struct ferry_error err = {0};
    char *enc1 = NULL, *enc2 = NULL;
    size_t len1, len2;
    int rc;

    rc = ferry_manifest_decode((const char *)data, size, NULL, &m, &err);
    if (rc) {
        check_refusal(rc, &err);
        CHECK(m == NULL);
        return 0;
    }
    CHECK(ferry_manifest_encode(m, &enc1, &len1, &err) == 0);
    rc = ferry_manifest_decode(enc1, len1, NULL, &m2, &err);
    if (rc)
        fprintf(stderr, "re-encoded manifest refused: %s\n", err.msg);
    CHECK(rc == 0);
    CHECK(strcmp(m->tenant, m2->tenant) == 0);
    CHECK(strcmp(m->root, m2->root) == 0);
    CHECK(m->head == m2->head && m->pending == m2->pending);
    CHECK((m->snapshot == NULL) == (m2->snapshot == NULL));
    CHECK(!m->snapshot || strcmp(m->snapshot, m2->snapshot) == 0);
    CHECK(m->ntables == m2->ntables);
    for (size_t i = 0; i < m->ntables; i++)
        check_table(&m->tables[i], &m2->tables[i]);
    CHECK(ferry_manifest_encode(m2, &enc2, &len2, &err) == 0);
    CHECK(len1 == len2 && memcmp(enc1, enc2, len1) == 0);
    ferry_manifest_free(m);
    ferry_manifest_free(m2);
    free(enc1);
    free(enc2);
    return 0;
}
