/* schema.c - helpers over struct ferry_table_info. */
#include "schema.h"

#include "error.h"

#include <stdlib.h>
#include <string.h>

size_t ferry_table_npk(const struct ferry_table_info *t)
{
    size_t n = 0;

    for (size_t i = 0; i < t->ncols; i++)
        if (t->cols[i].pk)
            n++;
    return n;
}

int ferry_table_pkcol(const struct ferry_table_info *t, size_t k)
{
    for (size_t i = 0; i < t->ncols; i++)
        if (t->cols[i].pk == (int)k + 1)
            return (int)i;
    return -1;
}

int ferry_table_colidx(const struct ferry_table_info *t, const char *name)
{
    for (size_t i = 0; i < t->ncols; i++)
        if (strcmp(t->cols[i].name, name) == 0)
            return (int)i;
    return -1;
}

static char *dup_or_null(const char *s, int *fail)
{
    char *d;

    if (!s)
        return NULL;
    d = strdup(s);
    if (!d)
        *fail = 1;
    return d;
}

int ferry_table_info_copy(struct ferry_table_info *dst, const struct ferry_table_info *src)
{
    int fail = 0;

    memset(dst, 0, sizeof(*dst));
    dst->name = dup_or_null(src->name, &fail);
    dst->scope_sql = dup_or_null(src->scope_sql, &fail);
    dst->without_rowid = src->without_rowid;
    dst->rows = src->rows;
    dst->cols = calloc(src->ncols ? src->ncols : 1, sizeof(*dst->cols));
    dst->fks = calloc(src->nfks ? src->nfks : 1, sizeof(*dst->fks));
    if (!dst->cols || !dst->fks)
        fail = 1;
    for (size_t i = 0; i < src->ncols && !fail; i++) {
        dst->cols[i] = src->cols[i];
        dst->cols[i].name = dup_or_null(src->cols[i].name, &fail);
        dst->cols[i].type = dup_or_null(src->cols[i].type, &fail);
        dst->ncols = i + 1;
    }
    for (size_t i = 0; i < src->nfks && !fail; i++) {
        const struct ferry_fkey *sf = &src->fks[i];
        struct ferry_fkey *df = &dst->fks[i];

        dst->nfks = i + 1;
        df->cascade = sf->cascade;
        df->parent = dup_or_null(sf->parent, &fail);
        df->cols = calloc(sf->ncols ? sf->ncols : 1, sizeof(char *));
        df->pcols = calloc(sf->ncols ? sf->ncols : 1, sizeof(char *));
        if (!df->cols || !df->pcols) {
            fail = 1;
            break;
        }
        df->ncols = sf->ncols;
        for (size_t j = 0; j < sf->ncols; j++) {
            df->cols[j] = dup_or_null(sf->cols[j], &fail);
            df->pcols[j] = dup_or_null(sf->pcols[j], &fail);
        }
    }
    if (fail) {
        ferry_table_info_release(dst);
        return FERRY_ENOMEM;
    }
    return FERRY_OK;
}

void ferry_table_info_release(struct ferry_table_info *t)
{
    if (!t)
        return;
    for (size_t i = 0; i < t->ncols; i++) {
        free(t->cols[i].name);
        free(t->cols[i].type);
    }
    free(t->cols);
    for (size_t i = 0; i < t->nfks; i++) {
        struct ferry_fkey *fk = &t->fks[i];

        for (size_t j = 0; j < fk->ncols; j++) {
            free(fk->cols[j]);
            free(fk->pcols[j]);
        }
        free(fk->cols);
        free(fk->pcols);
        free(fk->parent);
    }
    free(t->fks);
    free(t->name);
    free(t->scope_sql);
    memset(t, 0, sizeof(*t));
}

void ferry_tables_free(struct ferry_table_info *t, size_t n)
{
    if (!t)
        return;
    for (size_t i = 0; i < n; i++)
        ferry_table_info_release(&t[i]);
    free(t);
}
