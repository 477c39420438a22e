/* session.h - layer 2, client side: the session map, session id -> (slot, worker generation). */
#ifndef PYPOOL_SESSION_H
#define PYPOOL_SESSION_H

#include "slots.h"

void pypool__sessions_free(pypool *p);
/* With mu held. */
int pypool__session_lookup_locked(pypool *p, const char *id, unsigned *slot, uint64_t *gen);
int pypool__session_bind_locked(pypool *p, const char *id, unsigned slot, uint64_t gen);
void pypool__session_remove_locked(pypool *p, const char *id);

#endif
