/*
 * value.h - one database value, the unit every engine, the wire format and
 * the appliers exchange.
 *
 * The five kinds are SQLite's storage classes; they are also msgpack's nil,
 * int, float, str and bin, so a SQLite row maps to the wire without loss.
 * TEXT is a byte string with a length: it may hold NUL bytes and invalid
 * UTF-8. FLOAT is always a double carried bit-exactly (-0.0 stays -0.0).
 *
 * A struct ferry_value never owns its bytes: p points into a buffer owned by
 * whoever produced the value (a statement row, a decoded message) and is
 * valid as long as that owner says.
 */
#ifndef FERRY_VALUE_H
#define FERRY_VALUE_H

#include <stddef.h>
#include <stdint.h>

enum ferry_type {
    FERRY_NULL = 0,
    FERRY_INT = 1,
    FERRY_FLOAT = 2,
    FERRY_TEXT = 3,
    FERRY_BLOB = 4,
};

struct ferry_value {
    enum ferry_type type;
    union {
        int64_t i;         /* FERRY_INT */
        double f;          /* FERRY_FLOAT */
        struct {           /* FERRY_TEXT, FERRY_BLOB */
            const char *p; /* borrowed; not NUL-terminated */
            size_t n;
        } s;
    } u;
};

/*
 * The shortest decimal that reads back to exactly v (17 significant digits
 * always do; fewer usually do and store nicer in numeric or text columns),
 * "NaN", "Infinity" or "-Infinity": how a FLOAT is written as text, by the
 * PostgreSQL adapter and by verify's coercions alike. size >= 32.
 */
void ferry_double_text(double v, char *out, size_t size);

static inline struct ferry_value ferry_value_null(void)
{
    struct ferry_value v = {.type = FERRY_NULL};
    return v;
}

static inline struct ferry_value ferry_value_int(int64_t i)
{
    struct ferry_value v = {.type = FERRY_INT};
    v.u.i = i;
    return v;
}

static inline struct ferry_value ferry_value_text(const char *p, size_t n)
{
    struct ferry_value v = {.type = FERRY_TEXT};
    v.u.s.p = p;
    v.u.s.n = n;
    return v;
}

#endif
