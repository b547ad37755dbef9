/* hist: log-bucket latency histogram (layout in hist.h). */
#include "bench/hist.h"

#include <math.h>
#include <string.h>

void hist_init(hist *h)
{
    memset(h, 0, sizeof *h);
}

int hist_index(uint64_t v)
{
    if (v < (1u << HIST_SUB_BITS))
        return (int)v;
    int top_bit = 63 - __builtin_clzll(v);   /* >= HIST_SUB_BITS */
    int shift = top_bit - HIST_SUB_BITS + 1; /* >= 1 */
    uint64_t mantissa = v >> shift;          /* in [HALF, 2 * HALF) */
    return (1 << HIST_SUB_BITS) + (shift - 1) * HIST_HALF + (int)(mantissa - HIST_HALF);
}

uint64_t hist_bucket_top(int index)
{
    if (index < (1 << HIST_SUB_BITS))
        return (uint64_t)index;
    int k = index - (1 << HIST_SUB_BITS);
    int shift = k / HIST_HALF + 1;
    uint64_t mantissa = (uint64_t)(k % HIST_HALF + HIST_HALF);
    uint64_t low = mantissa << shift;
    return low + ((uint64_t)1 << shift) - 1;
}

void hist_add(hist *h, uint64_t v)
{
    h->buckets[hist_index(v)]++;
    h->count++;
    h->sum += (double)v;
    if (v > h->max)
        h->max = v;
}

void hist_merge(hist *dst, const hist *src)
{
    for (int i = 0; i < HIST_BUCKETS; i++)
        dst->buckets[i] += src->buckets[i];
    dst->count += src->count;
    dst->sum += src->sum;
    if (src->max > dst->max)
        dst->max = src->max;
}

uint64_t hist_quantile(const hist *h, double q)
{
    if (h->count == 0)
        return 0;
    uint64_t want = (uint64_t)ceil(q * (double)h->count);
    if (want < 1)
        want = 1;
    uint64_t seen = 0;
    for (int i = 0; i < HIST_BUCKETS; i++) {
        seen += h->buckets[i];
        if (seen >= want) {
            uint64_t top = hist_bucket_top(i);
            return top < h->max ? top : h->max;
        }
    }
    return h->max;
}

uint64_t hist_max(const hist *h)
{
    return h->max;
}

double hist_mean(const hist *h)
{
    return h->count > 0 ? h->sum / (double)h->count : 0;
}
