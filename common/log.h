/*
 * log.h - leveled logging to stderr.
 *
 * Messages are one line each, prefixed with the program name and level.
 * The macros skip formatting below the current level. Never log key
 * material, session secrets or row contents.
 */
#ifndef FERRY_LOG_H
#define FERRY_LOG_H

#include <stdio.h>

enum ferry_log_level {
    FERRY_LOG_ERROR = 0,
    FERRY_LOG_WARN = 1,
    FERRY_LOG_INFO = 2,
    FERRY_LOG_DEBUG = 3,
};

extern int ferry_log_level;

void ferry_log_init(const char *progname, int level);
void ferry_log_write(int level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/*
 * s as a JSON string on f (the agents' --json output and run log): quotes,
 * backslashes and control bytes escaped, other bytes as they are.
 */
void ferry_json_str(FILE *f, const char *s);

#define ferry_log(level, ...)                                                                      \
    do {                                                                                           \
        if ((level) <= ferry_log_level)                                                            \
            ferry_log_write((level), __VA_ARGS__);                                                 \
    } while (0)
#define log_error(...) ferry_log(FERRY_LOG_ERROR, __VA_ARGS__)
#define log_warn(...) ferry_log(FERRY_LOG_WARN, __VA_ARGS__)
#define log_info(...) ferry_log(FERRY_LOG_INFO, __VA_ARGS__)
#define log_debug(...) ferry_log(FERRY_LOG_DEBUG, __VA_ARGS__)

#endif
