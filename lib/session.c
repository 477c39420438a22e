/*
 * session.c - the session map: session id -> (slot, worker generation). Guarded by the pool
 * mutex. A binding whose generation no longer matches its slot's worker is stale: the state
 * it named died with that worker (the caller reports PYPOOL_ESESSION once and rebinds).
 */
#include <stdlib.h>
#include <string.h>

#include "session.h"

#define SESSION_BUCKETS_MIN 64

struct pypool__session {
    pypool__session *next;
    unsigned slot;
    uint64_t gen;
    char id[];
};

static uint64_t hash_id(const char *s)
{
    uint64_t h = 1469598103934665603ull; /* FNV-1a */
    while (*s)
        h = (h ^ (unsigned char)*s++) * 1099511628211ull;
    return h;
}

static pypool__session **bucket_of(pypool *p, const char *id)
{
    return &p->sessions[hash_id(id) % p->session_buckets];
}

static pypool__session **find(pypool *p, const char *id)
{
    if (!p->sessions)
        return NULL;
    for (pypool__session **it = bucket_of(p, id); *it; it = &(*it)->next)
        if (strcmp((*it)->id, id) == 0)
            return it;
    return NULL;
}

/* Doubles the bucket array when the map gets dense; keeps lookups O(1) with many sessions. */
static int grow(pypool *p)
{
    unsigned n = p->session_buckets ? p->session_buckets * 2 : SESSION_BUCKETS_MIN;
    pypool__session **buckets = calloc(n, sizeof *buckets);
    if (!buckets)
        return PYPOOL_ENOMEM;
    for (unsigned i = 0; i < p->session_buckets; i++) {
        pypool__session *e = p->sessions[i];
        while (e) {
            pypool__session *next = e->next;
            pypool__session **b = &buckets[hash_id(e->id) % n];
            e->next = *b;
            *b = e;
            e = next;
        }
    }
    free(p->sessions);
    p->sessions = buckets;
    p->session_buckets = n;
    return 0;
}

int pypool__session_lookup_locked(pypool *p, const char *id, unsigned *slot, uint64_t *gen)
{
    pypool__session **it = find(p, id);
    if (!it)
        return 0;
    *slot = (*it)->slot;
    *gen = (*it)->gen;
    return 1;
}

int pypool__session_bind_locked(pypool *p, const char *id, unsigned slot, uint64_t gen)
{
    if (p->nsessions >= (uint64_t)p->session_buckets * 2 && grow(p) != 0 && !p->sessions)
        return PYPOOL_ENOMEM;
    size_t len = strlen(id) + 1;
    pypool__session *e = malloc(sizeof *e + len);
    if (!e)
        return PYPOOL_ENOMEM;
    memcpy(e->id, id, len);
    e->slot = slot;
    e->gen = gen;
    pypool__session **b = bucket_of(p, id);
    e->next = *b;
    *b = e;
    p->nsessions++;
    if (p->slots[slot].generation == gen)
        p->slots[slot].sessions++;
    return 0;
}

void pypool__session_remove_locked(pypool *p, const char *id)
{
    pypool__session **it = find(p, id);
    if (!it)
        return;
    pypool__session *e = *it;
    *it = e->next;
    pypool__slot *s = &p->slots[e->slot];
    if (s->generation == e->gen && s->sessions > 0)
        s->sessions--;
    p->nsessions--;
    free(e);
}

void pypool__sessions_free(pypool *p)
{
    for (unsigned i = 0; i < p->session_buckets; i++) {
        pypool__session *e = p->sessions[i];
        while (e) {
            pypool__session *next = e->next;
            free(e);
            e = next;
        }
    }
    free(p->sessions);
    p->sessions = NULL;
    p->session_buckets = 0;
    p->nsessions = 0;
}
