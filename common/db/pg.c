/*
 * pg.c - placeholder for the PostgreSQL adapter so that the build links
 * before the real one lands. The PostgreSQL adapter's author replaces this
 * whole file.
 */
#include "engine.h"

static int pg_open(const char *url, int flags, struct ferry_db **out, struct ferry_error *err)
{
    (void)url;
    (void)flags;
    *out = NULL;
    return ferry_error_set(err, FERRY_ECONFIG, "postgresql support is not built yet");
}

const struct ferry_db_ops ferry_pg_ops = {
    .open = pg_open,
};
