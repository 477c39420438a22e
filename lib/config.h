/* config.h - layer 3: the configuration copied into a pool, and the worker's argv/envp. */
#ifndef PYPOOL_CONFIG_H
#define PYPOOL_CONFIG_H

#include "slots.h"

/* Validates the caller's config (any older size: see "ABI" in pypool.h) and copies it, with its
 * strings and the worker's command line and environment, into the pool. */
int pypool__config_copy(pypool *p, const pypool_config *cfg);
void pypool__config_free(pypool *p);

#endif
