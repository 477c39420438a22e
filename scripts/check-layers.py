#!/usr/bin/env python3
"""check-layers.py - no two files of lib/ may reference each other's symbols in a circle.

    check-layers.py <object dir>     (e.g. build/CMakeFiles/pypool_objects.dir/lib)

Reads every lib object file with `nm`, maps each symbol a file uses to the file that defines
it, prints each file's outgoing references, and exits 1 if the reference graph has a cycle
(docs/ARCHITECTURE.md: calls go only downward).
"""

import glob
import os
import subprocess
import sys


def references(objdir):
    defined, used = {}, {}
    for obj in sorted(glob.glob(os.path.join(objdir, "*.o"))):
        name = os.path.basename(obj)[: -len(".c.o")]
        out = subprocess.run(["nm", obj], capture_output=True, text=True, check=True).stdout
        for line in out.splitlines():
            parts = line.split()
            if len(parts) == 3 and parts[1] in "TDBR":
                defined[parts[2]] = name
            elif len(parts) == 2 and parts[0] == "U":
                used.setdefault(name, set()).add(parts[1])
    edges = {}
    for name, symbols in used.items():
        for sym in symbols:
            target = defined.get(sym)
            if target and target != name:
                edges.setdefault(name, set()).add(target)
    return edges


def cycles(edges):
    """Strongly connected components of more than one file (Tarjan)."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in edges.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return found


def main(argv):
    if len(argv) != 2 or not os.path.isdir(argv[1]):
        sys.stderr.write(__doc__)
        return 2
    edges = references(argv[1])
    if not edges:
        sys.stderr.write("check-layers: no object files in %s\n" % argv[1])
        return 2
    for name in sorted(edges):
        print("%-14s -> %s" % (name, " ".join(sorted(edges[name]))))
    found = cycles(edges)
    for component in found:
        print("CYCLE: " + " <-> ".join(component))
    print("%d files, %s" % (len(edges), "no cycle" if not found else "%d cycles" % len(found)))
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
