/* keypack.c - bounded byte form of a primary key. */
#include "keypack.h"

#include "error.h"

#include <stdint.h>
#include <string.h>

int ferry_key_pack(struct ferry_buf *b, const struct ferry_value *vals, size_t n)
{
    int rc = FERRY_OK;

    for (size_t i = 0; i < n && !rc; i++) {
        const struct ferry_value *v = &vals[i];
        unsigned char tag = (unsigned char)v->type;

        rc = ferry_buf_add(b, &tag, 1);
        if (rc)
            break;
        switch (v->type) {
        case FERRY_INT:
            rc = ferry_buf_add(b, &v->u.i, sizeof(v->u.i));
            break;
        case FERRY_FLOAT:
            rc = ferry_buf_add(b, &v->u.f, sizeof(v->u.f));
            break;
        case FERRY_TEXT:
        case FERRY_BLOB: {
            uint64_t len = v->u.s.n;

            rc = ferry_buf_add(b, &len, sizeof(len));
            if (!rc)
                rc = ferry_buf_add(b, v->u.s.p, v->u.s.n);
            break;
        }
        case FERRY_NULL:
            break;
        }
    }
    return rc;
}

int ferry_key_unpack(const char *p, size_t len, struct ferry_value *vals, size_t max, size_t *n)
{
    size_t off = 0, i = 0;

    while (off < len) {
        struct ferry_value *v;
        uint64_t sl;

        if (i == max)
            return FERRY_EDATA;
        v = &vals[i++];
        switch ((unsigned char)p[off++]) {
        case FERRY_NULL:
            v->type = FERRY_NULL;
            break;
        case FERRY_INT:
            if (len - off < 8)
                return FERRY_EDATA;
            v->type = FERRY_INT;
            memcpy(&v->u.i, p + off, 8);
            off += 8;
            break;
        case FERRY_FLOAT:
            if (len - off < 8)
                return FERRY_EDATA;
            v->type = FERRY_FLOAT;
            memcpy(&v->u.f, p + off, 8);
            off += 8;
            break;
        case FERRY_TEXT:
        case FERRY_BLOB:
            v->type = (enum ferry_type)(unsigned char)p[off - 1];
            if (len - off < 8)
                return FERRY_EDATA;
            memcpy(&sl, p + off, 8);
            off += 8;
            if (sl > len - off)
                return FERRY_EDATA;
            v->u.s.p = p + off;
            v->u.s.n = (size_t)sl;
            off += (size_t)sl;
            break;
        default:
            return FERRY_EDATA;
        }
    }
    *n = i;
    return FERRY_OK;
}
