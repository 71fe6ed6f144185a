/*
 * value.c - the one text form of a double that every engine path writes.
 */
#include "value.h"

#include <float.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>

void ferry_double_text(double v, char *out, size_t size)
{
    if (isnan(v)) {
        snprintf(out, size, "NaN");
        return;
    }
    if (isinf(v)) {
        snprintf(out, size, "%s", v < 0 ? "-Infinity" : "Infinity");
        return;
    }
    /*
     * A normal double has 53 bits of precision, so when a form of at most 15
     * significant digits reads back to it, rounding to 15 digits (which %g
     * writes without trailing zeros) is that form; 17 always reads back. So
     * three tries, not seventeen, on the bulk-load path. Subnormals have less
     * precision ("5e-324"): they take the long way.
     */
    for (int prec = fabs(v) < DBL_MIN ? 1 : 15; prec <= 17; prec++) {
        snprintf(out, size, "%.*g", prec, v);
        if (strtod(out, NULL) == v && (v != 0 || signbit(strtod(out, NULL)) == signbit(v)))
            return;
    }
}
