/* error.c - the error table, and helpers that fill struct ferry_error. */
#include "error.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

static const struct {
    const char *name;
    int status;
    const char *msg;
} table[] = {
#define FERRY_ERR_ROW(name, status, msg) {#name, status, msg},
    FERRY_ERRORS(FERRY_ERR_ROW)
#undef FERRY_ERR_ROW
};

const char *ferry_strcode(int code)
{
    if (code < 0 || code >= FERRY_NCODES)
        return "EUNKNOWN";
    return table[code].name;
}

const char *ferry_strerror(int code)
{
    if (code < 0 || code >= FERRY_NCODES)
        return "unknown error";
    return table[code].msg;
}

int ferry_exit_status(int code)
{
    if (code < 0 || code >= FERRY_NCODES)
        return 5;
    return table[code].status;
}

int ferry_error_set(struct ferry_error *err, int code, const char *fmt, ...)
{
    va_list ap;

    if (!err)
        return code;
    err->code = code;
    va_start(ap, fmt);
    vsnprintf(err->msg, sizeof(err->msg), fmt, ap);
    va_end(ap);
    /* A message is one line: fold any newline a foreign library gave us. */
    for (char *p = err->msg; *p; p++)
        if (*p == '\n' || *p == '\r')
            *p = ' ';
    for (size_t n = strlen(err->msg); n > 0 && err->msg[n - 1] == ' '; n--)
        err->msg[n - 1] = '\0';
    return code;
}

int ferry_error_prefix(struct ferry_error *err, const char *fmt, ...)
{
    char head[FERRY_ERRMSG_MAX];
    char old[FERRY_ERRMSG_MAX];
    va_list ap;

    if (!err)
        return FERRY_EINTERNAL;
    va_start(ap, fmt);
    vsnprintf(head, sizeof(head), fmt, ap);
    va_end(ap);
    memcpy(old, err->msg, sizeof(old));
    /* Truncation is fine: a message is a line for a human, cut at 255 bytes. */
    {
        size_t hn = strnlen(head, sizeof(err->msg) - 1);
        size_t on = strnlen(old, sizeof(old));

        memcpy(err->msg, head, hn);
        if (hn + 2 < sizeof(err->msg)) {
            memcpy(err->msg + hn, ": ", 2);
            hn += 2;
        }
        if (on > sizeof(err->msg) - 1 - hn)
            on = sizeof(err->msg) - 1 - hn;
        memcpy(err->msg + hn, old, on);
        err->msg[hn + on] = '\0';
    }
    return err->code;
}

void ferry_error_clear(struct ferry_error *err)
{
    if (!err)
        return;
    err->code = FERRY_OK;
    err->msg[0] = '\0';
}
