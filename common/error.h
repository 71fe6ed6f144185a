/*
 * error.h - one error enum for all of ferry, with names, messages and exit
 * codes generated from a single table.
 *
 * Every fallible function returns an int: 0 (FERRY_OK) on success, a
 * FERRY_E* code otherwise, and fills the caller's struct ferry_error with a
 * one-line human message (lowercase, no trailing period, says what failed
 * first and what to do). Foreign errors (sqlite3_errmsg, PQerrorMessage,
 * ERR_get_error, mdb_strerror, curl's error buffer) are translated at the
 * wrapper that calls the library, with their detail.
 */
#ifndef FERRY_ERROR_H
#define FERRY_ERROR_H

#include <stddef.h>

/*
 * X(name, exit status, default message)
 * Exit statuses are the contract in DESIGN.md: 0 success, 1 a check failed,
 * 2 usage or config error, 3 auth refused, 4 source unreachable, 5 data or
 * schema error.
 */
#define FERRY_ERRORS(X)                                                                            \
    X(OK, 0, "success")                                                                            \
    X(EUSAGE, 2, "usage error")                                                                    \
    X(ECONFIG, 2, "configuration error")                                                           \
    X(EMISMATCH, 1, "source and target differ")                                                    \
    X(EAUTH, 3, "authentication refused")                                                          \
    X(EFORBIDDEN, 3, "not authorised for that tenant")                                             \
    X(EUNREACHABLE, 4, "source unreachable")                                                       \
    X(ESCHEMA, 5, "schema error")                                                                  \
    X(EDATA, 5, "data error")                                                                      \
    X(ECLASH, 5, "row belongs to another tenant")                                                  \
    X(EPROTO, 5, "malformed message")                                                              \
    X(ETOOBIG, 5, "message over the size limit")                                                   \
    X(ENOTFOUND, 5, "not found")                                                                   \
    X(EDB, 5, "database error")                                                                    \
    X(EIO, 5, "i/o error")                                                                         \
    X(ENOSPC, 5, "no space left on device")                                                        \
    X(ENOMEM, 5, "out of memory")                                                                  \
    X(EINTR, 5, "interrupted")                                                                     \
    X(EINTERNAL, 5, "internal error")                                                              \
    X(ESNAPGONE, 5, "snapshot gone")

enum ferry_code {
#define FERRY_ERR_ENUM(name, status, msg) FERRY_##name,
    FERRY_ERRORS(FERRY_ERR_ENUM)
#undef FERRY_ERR_ENUM
        FERRY_NCODES
};

#define FERRY_ERRMSG_MAX 256

struct ferry_error {
    int code;                   /* enum ferry_code */
    char msg[FERRY_ERRMSG_MAX]; /* one line, no trailing newline */
};

/* "EDB" style name of a code, static storage. */
const char *ferry_strcode(int code);
/* Default message of a code, static storage. */
const char *ferry_strerror(int code);
/* Process exit status for a code (see FERRY_ERRORS). */
int ferry_exit_status(int code);

/*
 * Fill err (may be NULL) with code and a printf-style message; returns code so
 * callers can write `return ferry_error_set(err, FERRY_EDB, "...", ...);`.
 */
int ferry_error_set(struct ferry_error *err, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Prefix err->msg with "what: " (keeps the code). Returns err->code. */
int ferry_error_prefix(struct ferry_error *err, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

void ferry_error_clear(struct ferry_error *err);

#endif
