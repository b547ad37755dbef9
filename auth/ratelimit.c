/* Per-principal token buckets. One mutex guards a chained hash table (keyed
 * SipHash, so ids cannot be chosen to collide) and an LRU list; memory is
 * bounded by max_keys: buckets idle long enough to be full again are
 * dropped as they are met at the LRU tail, and when the table is full the
 * least recently used bucket goes. */
#include "auth/auth_int.h"

#include <sodium.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

enum { MAX_KEY_LEN = 1024 };

typedef struct bucket {
    struct bucket *hnext;         /* hash chain */
    struct bucket *newer, *older; /* LRU list */
    uint64_t hash;
    double tokens;
    int64_t last_us;
    size_t key_len;
    char key[];
} bucket;

struct auth_ratelimit {
    pthread_mutex_t mu;
    double rate;       /* tokens per second */
    double burst;      /* bucket capacity */
    int64_t refill_us; /* time for an empty bucket to fill up */
    size_t max;
    size_t count;
    bucket **table;
    size_t mask;
    bucket *newest, *oldest;
    unsigned char hkey[crypto_shorthash_KEYBYTES];
};

/* ceil() for 0 <= x < 2^62, without libm. */
static int64_t ceil_pos(double x)
{
    int64_t i = (int64_t)x;
    return (double)i < x ? i + 1 : i;
}

auth_ratelimit *auth_ratelimit_new(double rate_per_s, double burst, size_t max_keys)
{
    if (!(rate_per_s > 0 && rate_per_s <= 1e9) || !(burst > 0 && burst <= 1e9) || max_keys == 0 ||
        max_keys > ((size_t)1 << 24))
        return NULL;
    if (auth__sodium_ready() != 0)
        return NULL;
    auth_ratelimit *rl = calloc(1, sizeof *rl);
    if (rl == NULL)
        return NULL;
    size_t slots = 16;
    while (slots < max_keys)
        slots <<= 1;
    rl->table = calloc(slots, sizeof *rl->table);
    if (rl->table == NULL || pthread_mutex_init(&rl->mu, NULL) != 0) {
        free(rl->table);
        free(rl);
        return NULL;
    }
    rl->mask = slots - 1;
    rl->rate = rate_per_s;
    rl->burst = burst;
    double refill = burst / rate_per_s * 1e6;
    rl->refill_us = refill > 1e15 ? (int64_t)1e15 : ceil_pos(refill);
    rl->max = max_keys;
    randombytes_buf(rl->hkey, sizeof rl->hkey);
    return rl;
}

void auth_ratelimit_free(auth_ratelimit *rl)
{
    if (rl == NULL)
        return;
    bucket *b = rl->newest;
    while (b != NULL) {
        bucket *next = b->older;
        free(b);
        b = next;
    }
    pthread_mutex_destroy(&rl->mu);
    free(rl->table);
    free(rl);
}

static void lru_unlink(auth_ratelimit *rl, bucket *b)
{
    if (b->newer != NULL)
        b->newer->older = b->older;
    else
        rl->newest = b->older;
    if (b->older != NULL)
        b->older->newer = b->newer;
    else
        rl->oldest = b->newer;
    b->newer = b->older = NULL;
}

static void lru_push(auth_ratelimit *rl, bucket *b)
{
    b->older = rl->newest;
    b->newer = NULL;
    if (rl->newest != NULL)
        rl->newest->newer = b;
    rl->newest = b;
    if (rl->oldest == NULL)
        rl->oldest = b;
}

static void evict(auth_ratelimit *rl, bucket *b)
{
    bucket **pp = &rl->table[b->hash & rl->mask];
    while (*pp != b)
        pp = &(*pp)->hnext;
    *pp = b->hnext;
    lru_unlink(rl, b);
    rl->count--;
    free(b);
}

static void refill(const auth_ratelimit *rl, bucket *b, int64_t now_us)
{
    if (now_us <= b->last_us)
        return; /* clock did not advance; never refill backwards */
    double t = b->tokens + (double)(now_us - b->last_us) / 1e6 * rl->rate;
    b->tokens = t > rl->burst ? rl->burst : t;
    b->last_us = now_us;
}

rd_code auth_ratelimit_take_at(auth_ratelimit *rl, const char *key, double cost, int64_t now_us,
                               int64_t *retry_after_ms, rd_err *err)
{
    rd_code rc = RD_OK;
    if (retry_after_ms != NULL)
        *retry_after_ms = 0;
    if (rl == NULL || key == NULL)
        return rd_errf(err, RD_INTERNAL, NULL, "no rate limiter or key");
    size_t len = strlen(key);
    if (len > MAX_KEY_LEN)
        return rd_errf(err, RD_INTERNAL, NULL, "rate-limit key longer than %d bytes", MAX_KEY_LEN);
    if (!(cost >= 1))
        cost = 1;
    if (cost > rl->burst)
        cost = rl->burst;
    unsigned char h8[crypto_shorthash_BYTES];
    crypto_shorthash(h8, (const unsigned char *)key, len, rl->hkey);
    uint64_t h = 0;
    for (int k = 0; k < 8; k++)
        h = (h << 8) | h8[k];

    pthread_mutex_lock(&rl->mu);
    bucket *b = rl->table[h & rl->mask];
    while (b != NULL && !(b->hash == h && b->key_len == len && memcmp(b->key, key, len) == 0))
        b = b->hnext;
    if (b != NULL)
        lru_unlink(rl, b);
    /* Buckets idle for a full refill are indistinguishable from new ones. */
    while (rl->oldest != NULL && now_us - rl->oldest->last_us >= rl->refill_us)
        evict(rl, rl->oldest);
    if (b == NULL) {
        if (rl->count >= rl->max && rl->oldest != NULL)
            evict(rl, rl->oldest);
        b = malloc(sizeof *b + len + 1);
        if (b == NULL) {
            rc = rd_errf(err, RD_INTERNAL, NULL, "out of memory");
            goto done;
        }
        b->hash = h;
        b->tokens = rl->burst;
        b->last_us = now_us;
        b->key_len = len;
        memcpy(b->key, key, len + 1);
        b->hnext = rl->table[h & rl->mask];
        rl->table[h & rl->mask] = b;
        rl->count++;
    } else {
        refill(rl, b, now_us);
    }
    lru_push(rl, b);
    if (b->tokens >= cost) {
        b->tokens -= cost;
    } else {
        double need_ms = (cost - b->tokens) / rl->rate * 1000.0;
        int64_t wait_ms = need_ms > 1e12 ? (int64_t)1e12 : ceil_pos(need_ms);
        if (wait_ms < 1)
            wait_ms = 1;
        if (retry_after_ms != NULL)
            *retry_after_ms = wait_ms;
        rc = rd_errf(err, RD_RATE_LIMITED, NULL, "rate limit exceeded; retry in %lld ms",
                     (long long)wait_ms);
    }
done:
    pthread_mutex_unlock(&rl->mu);
    return rc;
}

void auth_ratelimit_charge(auth_ratelimit *rl, const char *key, double cost)
{
    if (rl == NULL || key == NULL || !(cost > 0) || strlen(key) > MAX_KEY_LEN)
        return;
    size_t len = strlen(key);
    unsigned char h8[crypto_shorthash_BYTES];
    crypto_shorthash(h8, (const unsigned char *)key, len, rl->hkey);
    uint64_t h = 0;
    for (int k = 0; k < 8; k++)
        h = (h << 8) | h8[k];
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    int64_t now = (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
    pthread_mutex_lock(&rl->mu);
    bucket *b = rl->table[h & rl->mask];
    while (b != NULL && !(b->hash == h && b->key_len == len && memcmp(b->key, key, len) == 0))
        b = b->hnext;
    if (b != NULL) { /* no bucket: it was evicted as full; nothing to charge */
        refill(rl, b, now);
        b->tokens -= cost;
        if (b->tokens < -rl->burst)
            b->tokens = -rl->burst;
    }
    pthread_mutex_unlock(&rl->mu);
}

rd_code auth_ratelimit_take(auth_ratelimit *rl, const char *key, double cost,
                            int64_t *retry_after_ms, rd_err *err)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    int64_t now = (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
    return auth_ratelimit_take_at(rl, key, cost, now, retry_after_ms, err);
}

size_t auth_ratelimit_size(auth_ratelimit *rl)
{
    if (rl == NULL)
        return 0;
    pthread_mutex_lock(&rl->mu);
    size_t n = rl->count;
    pthread_mutex_unlock(&rl->mu);
    return n;
}
