/*
 * Parcel memory: blocks that remember their capacity, and a small per-thread cache of the
 * large ones.
 *
 * A parcel's data and the copies ReadString/ReadBuffer hand out can be up to 200 KB. Such
 * blocks are past glibc's mmap threshold (or get trimmed off the heap's top when freed),
 * so each fresh one costs page faults on every round of create/write/read/destroy. A
 * library must not tune its host's allocator (mallopt), so the kit keeps a few large
 * blocks itself: a freed block of CK__MEM_BIG bytes or more waits in its thread's cache
 * (at most CK__MEM_SLOTS blocks and CK__MEM_KEEP bytes a thread) for the next request
 * that fits, already faulted in. Smaller blocks go straight to malloc/free (its per-thread
 * caches serve them well).
 *
 * Ownership: a block belongs to whoever ck__mem_alloc'ed it until ck__mem_free; a cached
 * block belongs to its thread's cache, freed when the thread exits.
 */
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "ck_internal.h"

#define CK__MEM_HEAD 16                 /* keeps the block's capacity; keeps alignment */
#define CK__MEM_BIG (32 * 1024)         /* blocks this large are cached */
#define CK__MEM_SLOTS 4
#define CK__MEM_KEEP (1024 * 1024)      /* bytes a thread's cache holds at most */

typedef struct {
    void *block[CK__MEM_SLOTS]; /* raw blocks (header included) */
    size_t cap[CK__MEM_SLOTS];  /* their usable capacity */
    size_t held;
} cache_t;

static pthread_key_t cache_key;
static pthread_once_t cache_once = PTHREAD_ONCE_INIT;
static CK__TLS cache_t *thread_cache; /* also reachable here (leak checkers scan TLS) */

static void drop_cache(void *arg) {
    cache_t *c = arg;
    for (int i = 0; i < CK__MEM_SLOTS; i++) free(c->block[i]);
    free(c);
    thread_cache = NULL;
}

static void make_key(void) { pthread_key_create(&cache_key, drop_cache); }

static cache_t *cache(void) {
    if (thread_cache == NULL) {
        pthread_once(&cache_once, make_key);
        cache_t *c = calloc(1, sizeof *c);
        if (c == NULL || pthread_setspecific(cache_key, c) != 0) {
            free(c);
            return NULL;
        }
        thread_cache = c;
    }
    return thread_cache;
}

static size_t *head_of(void *ptr) { return (size_t *)((unsigned char *)ptr - CK__MEM_HEAD); }

size_t ck__mem_cap(const void *ptr) {
    return ptr == NULL ? 0 : *head_of((void *)ptr);
}

void *ck__mem_alloc(size_t n) {
    if (n > SIZE_MAX - CK__MEM_HEAD) return NULL;
    if (n >= CK__MEM_BIG) {
        cache_t *c = cache();
        int best = -1; /* the smallest cached block that fits */
        for (int i = 0; c != NULL && i < CK__MEM_SLOTS; i++)
            if (c->block[i] != NULL && c->cap[i] >= n && (best < 0 || c->cap[i] < c->cap[best]))
                best = i;
        if (best >= 0) {
            unsigned char *raw = c->block[best];
            c->held -= c->cap[best];
            c->block[best] = NULL;
            return raw + CK__MEM_HEAD;
        }
    }
    unsigned char *raw = malloc(n + CK__MEM_HEAD);
    if (raw == NULL) return NULL;
    *(size_t *)raw = n;
    return raw + CK__MEM_HEAD;
}

void ck__mem_free(void *ptr) {
    if (ptr == NULL) return;
    size_t cap = *head_of(ptr);
    void *raw = head_of(ptr);
    cache_t *c = cap >= CK__MEM_BIG && cap <= CK__MEM_KEEP ? cache() : NULL;
    if (c != NULL) {
        /* a free slot, else the smallest block if this one is larger */
        int slot = -1;
        for (int i = 0; i < CK__MEM_SLOTS; i++) {
            if (c->block[i] == NULL) {
                slot = i;
                break;
            }
            if (c->cap[i] < cap && (slot < 0 || c->cap[i] < c->cap[slot])) slot = i;
        }
        if (slot >= 0) {
            size_t held = c->held - (c->block[slot] ? c->cap[slot] : 0) + cap;
            if (held <= CK__MEM_KEEP) {
                free(c->block[slot]);
                c->block[slot] = raw;
                c->cap[slot] = cap;
                c->held = held;
                return;
            }
        }
    }
    free(raw);
}

int ck__mem_reserve(void **ptr, size_t used, size_t need) {
    size_t cap = ck__mem_cap(*ptr);
    if (need <= cap) return 0;
    /* Geometric growth: no value written in small pieces copies the data over and over. */
    size_t n = cap < 64 ? 64 : cap;
    while (n < need) n = n > SIZE_MAX / 2 ? need : n * 2;
    void *grown = ck__mem_alloc(n);
    if (grown == NULL) return -1;
    if (used) memcpy(grown, *ptr, used);
    ck__mem_free(*ptr);
    *ptr = grown;
    return 0;
}
