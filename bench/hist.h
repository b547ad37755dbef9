/* hist: a fixed-size latency histogram with logarithmic buckets (the HDR
 * histogram idea): values below 128 are exact, larger ones fall in one of 64
 * buckets per power of two, so a reported quantile is within 1/64 (1.6 %)
 * of the true value. Adding is a few instructions and never allocates; one
 * histogram per thread, merged at the end. */
#ifndef BENCH_HIST_H
#define BENCH_HIST_H

#include <stdint.h>

enum {
    HIST_SUB_BITS = 7,                    /* 128 exact values */
    HIST_HALF = 1 << (HIST_SUB_BITS - 1), /* buckets per power of two */
    HIST_BUCKETS = (1 << HIST_SUB_BITS) + (64 - HIST_SUB_BITS) * HIST_HALF,
};

typedef struct hist {
    uint64_t count;
    uint64_t max;
    double sum;
    uint64_t buckets[HIST_BUCKETS];
} hist;

/* Empties h. A zero-filled hist is also empty. */
void hist_init(hist *h);

/* Counts one value (any unit; the bench uses nanoseconds). */
void hist_add(hist *h, uint64_t v);

/* Adds every count of src to dst. */
void hist_merge(hist *dst, const hist *src);

/* The smallest value v such that at least q (0..1) of the values are <= v,
 * reported as the highest value of its bucket (never below the true
 * quantile, at most 1/64 above it). 0 for an empty histogram. */
uint64_t hist_quantile(const hist *h, double q);

/* The exact largest value added; 0 when empty. */
uint64_t hist_max(const hist *h);

/* The exact mean; 0 when empty. */
double hist_mean(const hist *h);

/* Bucket index of v and the highest value that bucket holds; exposed for
 * the unit test of the bucket layout. */
int hist_index(uint64_t v);
uint64_t hist_bucket_top(int index);

#endif
