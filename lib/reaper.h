/* reaper.h - layer 2, reaper side: the reaper thread's poll loop (reaper.c). */
#ifndef PYPOOL_REAPER_H
#define PYPOOL_REAPER_H

#include "slots.h"

int pypool__reaper_start(pypool *p);
void pypool__reaper_join(pypool *p);

#endif
