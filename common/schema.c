/* schema.c - helpers over struct ferry_table_info. */
#include "schema.h"

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
