/*
 * machine.c - what the figures were measured on: online cores, CPU model, kernel, and the
 * version of the interpreter every contender runs.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/utsname.h>
#include <unistd.h>

#include "bench.h"

static void cpu_model(char *out, size_t len)
{
    snprintf(out, len, "unknown");
    FILE *f = fopen("/proc/cpuinfo", "r");
    if (!f)
        return;
    char line[256];
    while (fgets(line, sizeof line, f)) {
        char *colon = strchr(line, ':');
        if (strncmp(line, "model name", 10) != 0 || !colon)
            continue;
        colon += strspn(colon + 1, " \t") + 1;
        colon[strcspn(colon, "\n")] = '\0';
        snprintf(out, len, "%s", colon);
        break;
    }
    fclose(f);
}

static void python_version(const bench_opts *o, char *out, size_t len)
{
    const char *argv[] = {o->python, "-c", "import platform; print(platform.python_version())",
                          NULL};
    int status;
    char *text = bench_run_capture(argv, "", &status);
    snprintf(out, len, "%s", text && status == 0 ? text : "unknown");
    out[strcspn(out, "\n")] = '\0';
    free(text);
}

void machine_probe(const bench_opts *o, bench_machine *m)
{
    struct utsname u;
    m->cores = sysconf(_SC_NPROCESSORS_ONLN);
    cpu_model(m->cpu, sizeof m->cpu);
    if (uname(&u) == 0)
        snprintf(m->kernel, sizeof m->kernel, "%.40s %.100s %.40s", u.sysname, u.release,
                 u.machine);
    else
        snprintf(m->kernel, sizeof m->kernel, "unknown");
    python_version(o, m->python, sizeof m->python);
}
