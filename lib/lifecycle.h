/* lifecycle.h - layer 3: the pool's references (see slots.h, "Lifetime"); create, warm, destroy
 * and stats are the public functions of lifecycle.c. */
#ifndef PYPOOL_LIFECYCLE_H
#define PYPOOL_LIFECYCLE_H

#include "slots.h"

/* Enter/leave a public function: holds a reference; refuses (ESHUTDOWN) once destroy began.
 * The last leave frees the pool. Neither takes mu. */
int pypool__enter(pypool *p);
void pypool__leave(pypool *p);
/* A reference for observers (stats): taken even while destroy runs, never refused. */
void pypool__hold(pypool *p);

#endif
