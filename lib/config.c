/*
 * config.c - configuration defaults, validation, and the worker's command line and
 * environment, built once per pool (explicit argv/envp for posix_spawn: no shell, no setenv).
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <limits.h>
#include <link.h>
#include <stdio.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "error.h"
#include "config.h"

#ifndef PYPOOL_DEFAULT_PYTHON
#define PYPOOL_DEFAULT_PYTHON "python3"
#endif

extern char **environ;

static void config_defaults(pypool_config *cfg)
{
    memset(cfg, 0, sizeof *cfg);
    cfg->struct_size = sizeof *cfg;
    cfg->size = 4;
    cfg->startup_timeout_ms = 10000;
    cfg->checkout_timeout_ms = 5000;
    cfg->call_timeout_ms = 30000;
    cfg->max_frame_bytes = 64u * 1024 * 1024;
    cfg->shutdown_grace_ms = 5000;
    cfg->ping_timeout_ms = 2000;
    cfg->leak_warn_ms = 60000;
    cfg->restart_backoff_min_ms = 10;
    cfg->restart_backoff_max_ms = 5000;
    cfg->crash_loop_starts = 3;
    cfg->log_level = PYPOOL_LOG_WARN;
    cfg->max_inflight = 1;
    cfg->cancel_grace_ms = 5000;
}

void pypool_config_init_sized(pypool_config *cfg, size_t struct_size)
{
    if (!cfg || struct_size < offsetof(pypool_config, size))
        return;
    pypool_config full;
    config_defaults(&full);
    size_t n = struct_size < sizeof full ? struct_size : sizeof full;
    memcpy(cfg, &full, n); /* never past the caller's struct */
    cfg->struct_size = n;
}

/* For callers that cannot use the macro (bindings through dlsym): this library's own size. */
#undef pypool_config_init
PYPOOL_API void pypool_config_init(pypool_config *cfg);
void pypool_config_init(pypool_config *cfg)
{
    pypool_config_init_sized(cfg, sizeof *cfg);
}

/* The caller's config as this library knows it: the fields an older caller lacks keep their
 * defaults. */
static int config_from_caller(const pypool_config *cfg, pypool_config *out)
{
    if (cfg->struct_size < offsetof(pypool_config, size) + sizeof cfg->size)
        return pypool__set_error(PYPOOL_EINVAL,
                                 "the config was not initialised: call pypool_config_init first");
    config_defaults(out);
    size_t n = cfg->struct_size < sizeof *out ? cfg->struct_size : sizeof *out;
    memcpy(out, cfg, n);
    out->struct_size = sizeof *out;
    return 0;
}

static int validate(const pypool_config *cfg)
{
    if (cfg->size == 0 || cfg->size > 4096)
        return pypool__set_error(PYPOOL_EINVAL, "size must be 1..4096 (got %u)", cfg->size);
    if (!cfg->worker_argv && (!cfg->module || !*cfg->module))
        return pypool__set_error(PYPOOL_EINVAL, "module is required unless worker_argv is set");
    if (cfg->worker_argv && !cfg->worker_argv[0])
        return pypool__set_error(PYPOOL_EINVAL, "worker_argv is empty");
    if (cfg->max_frame_bytes < 1024)
        return pypool__set_error(PYPOOL_EINVAL, "max_frame_bytes must be >= 1024");
    if (cfg->startup_timeout_ms <= 0 || cfg->ping_timeout_ms <= 0)
        return pypool__set_error(PYPOOL_EINVAL,
                                 "startup_timeout_ms and ping_timeout_ms must be > 0");
    if (cfg->call_timeout_ms <= 0 || cfg->checkout_timeout_ms < 0 || cfg->shutdown_grace_ms < 0)
        return pypool__set_error(PYPOOL_EINVAL, "timeouts must be positive");
    if (cfg->restart_backoff_min_ms < 0 ||
        cfg->restart_backoff_max_ms < cfg->restart_backoff_min_ms)
        return pypool__set_error(PYPOOL_EINVAL, "restart backoff range is invalid");
    if (cfg->crash_loop_starts == 0)
        return pypool__set_error(PYPOOL_EINVAL, "crash_loop_starts must be >= 1");
    if (cfg->max_inflight == 0 || cfg->max_inflight > PYPOOL_MAX_INFLIGHT)
        return pypool__set_error(PYPOOL_EINVAL, "max_inflight must be 1..%d (got %u)",
                                 PYPOOL_MAX_INFLIGHT, cfg->max_inflight);
    if (cfg->cancel_grace_ms < 0)
        return pypool__set_error(PYPOOL_EINVAL, "cancel_grace_ms must be >= 0");
    return 0;
}

/* A directory holding the runtime: the package and its generated protobuf module. */
static bool is_runtime(const char *dir)
{
    char path[PATH_MAX];
    struct stat st;
    int n = snprintf(path, sizeof path, "%s/pypool/pypool_pb2.py", dir);
    return n > 0 && (size_t)n < sizeof path && stat(path, &st) == 0 && S_ISREG(st.st_mode);
}

/* Tries one candidate; when it fails, appends "dir (why)" to the list of places looked at. */
static bool try_runtime(const char *dir, const char *why, char *out, size_t cap, char *looked,
                        size_t lcap)
{
    if (is_runtime(dir) && strlen(dir) < cap) {
        strcpy(out, dir);
        return true;
    }
    size_t used = strlen(looked);
    /* A list too long for the message is cut short, on purpose (the return value is checked
     * so that compilers see the truncation is expected). */
    if (used < lcap &&
        snprintf(looked + used, lcap - used, "%s%s (%s)", used ? ", " : "", dir, why) < 0)
        looked[used] = '\0';
    return false;
}

/* The directory of the canonical path `file` with the relative path `rel` applied to it, the
 * ".." steps taken lexically (sound: `file` has no symlinks left). False if it does not fit. */
static bool beside(const char *file, const char *rel, char *out, size_t cap)
{
    const char *slash = strrchr(file, '/');
    size_t len = slash ? (size_t)(slash - file) : 0;
    if (len >= cap)
        return false;
    memcpy(out, file, len);
    out[len] = '\0';
    for (const char *c = rel; *c;) {
        size_t n = strcspn(c, "/");
        if (n == 2 && c[0] == '.' && c[1] == '.') {
            char *up = strrchr(out, '/');
            len = up ? (size_t)(up - out) : 0;
            out[len] = '\0';
        } else if (n > 0 && !(n == 1 && c[0] == '.')) {
            if (len + 1 + n >= cap)
                return false;
            out[len++] = '/';
            memcpy(out + len, c, n);
            out[len += n] = '\0';
        }
        c += n + (c[n] == '/');
    }
    if (len == 0 && cap > 1)
        strcpy(out, "/");
    return true;
}

/*
 * The canonical path of the file this code was loaded from: libpypool.so (or a shared object
 * that links the static library), else the program that links the static library. For the
 * main program dladdr gives argv[0]'s spelling (relative, or a bare name found on PATH):
 * /proc/self/exe names it instead. *is_program tells which of the two it is.
 */
static const char *loaded_from(char *buf, bool *is_program)
{
    Dl_info info;
    struct link_map *map = NULL;
    bool found = dladdr1((void *)&pypool_config_init, &info, (void **)&map, RTLD_DL_LINKMAP);
    *is_program = !found || !map || !map->l_name || !map->l_name[0]; /* !found: static link */
    if (!*is_program)
        return info.dli_fname && realpath(info.dli_fname, buf) ? buf : NULL;
    ssize_t n = readlink("/proc/self/exe", buf, PATH_MAX - 1);
    if (n <= 0)
        return NULL;
    buf[n] = '\0';
    return buf;
}

#if defined(PYPOOL_BUILD_DIR) && defined(PYPOOL_RUNTIME_BUILD_DIR)
/* Whether the canonical path `self` lies inside the build tree this code was compiled in. */
static bool in_build_tree(const char *self)
{
    char build[PATH_MAX];
    const char *dir = realpath(PYPOOL_BUILD_DIR, build) ? build : PYPOOL_BUILD_DIR;
    size_t n = strlen(dir);
    return strncmp(self, dir, n) == 0 && self[n] == '/';
}
#endif

/*
 * Where the Python runtime (package pypool + pypool_pb2.py) lives, in this order:
 *   1. $PYPOOL_RUNTIME_DIR if set (and then only it);
 *   2. the build tree's runtime, when this code was loaded from a file inside that build tree
 *      (tests and examples run uninstalled);
 *   3. relative to the file this code was loaded from: <libdir>/../share/pypool/python for
 *      libpypool.so, <bindir>/../share/pypool/python for a program that links the static
 *      library, so an install works at any prefix and after the build tree is gone;
 *   4. the install directory chosen at configure time.
 * False if none holds it, with `looked` naming every place looked at and why.
 */
static bool runtime_dir(char *out, size_t cap, char *looked, size_t lcap)
{
    looked[0] = '\0';
    const char *env = getenv("PYPOOL_RUNTIME_DIR");
    if (env && *env)
        return try_runtime(env, "PYPOOL_RUNTIME_DIR", out, cap, looked, lcap);
    char self_buf[PATH_MAX], near[PATH_MAX];
    bool is_program = false;
    const char *self = loaded_from(self_buf, &is_program);
#if defined(PYPOOL_BUILD_DIR) && defined(PYPOOL_RUNTIME_BUILD_DIR)
    if (self && in_build_tree(self) &&
        try_runtime(PYPOOL_RUNTIME_BUILD_DIR, "the build tree", out, cap, looked, lcap))
        return true;
#endif
#if defined(PYPOOL_RUNTIME_FROM_LIBDIR) && defined(PYPOOL_RUNTIME_FROM_BINDIR)
    const char *rel = is_program ? PYPOOL_RUNTIME_FROM_BINDIR : PYPOOL_RUNTIME_FROM_LIBDIR;
    if (self && beside(self, rel, near, sizeof near)) {
        char why[PATH_MAX + 32];
        snprintf(why, sizeof why, "relative to %s", self);
        if (try_runtime(near, why, out, cap, looked, lcap))
            return true;
    }
#endif
#ifdef PYPOOL_RUNTIME_INSTALL_DIR
    if (try_runtime(PYPOOL_RUNTIME_INSTALL_DIR, "the configure-time install prefix", out, cap,
                    looked, lcap))
        return true;
#endif
    (void)near;
    (void)self;
    return false;
}

#define WORKER_BOOTSTRAP                                                                           \
    "import sys; sys.path[:] = [e for e in sys.path if e]; "                                       \
    "from pypool.__main__ import run; run()"

static const char *python_interpreter(const pypool_config *cfg)
{
    if (cfg->python && *cfg->python)
        return cfg->python;
    const char *env = getenv("PYPOOL_PYTHON");
    if (env && *env)
        return env;
    return PYPOOL_DEFAULT_PYTHON;
}

static size_t count_strv(const char *const *v)
{
    size_t n = 0;
    while (v && v[n])
        n++;
    return n;
}

static void free_strv(char **v)
{
    for (size_t i = 0; v && v[i]; i++)
        free(v[i]);
    free(v);
}

static char **build_argv(const pypool_config *cfg)
{
    if (cfg->worker_argv) {
        size_t n = count_strv(cfg->worker_argv);
        char **argv = calloc(n + 1, sizeof *argv);
        for (size_t i = 0; argv && i < n; i++) {
            argv[i] = strdup(cfg->worker_argv[i]);
            if (!argv[i]) {
                free_strv(argv);
                return NULL;
            }
        }
        return argv;
    }
    /* "-c" rather than "-m pypool": runpy's imports cost every worker start ~1.5 ms. "-c" puts
     * the host's working directory ('') first on sys.path, and an empty PYTHONPATH entry adds it
     * too: a stray pypool.py or json.py there would be imported and run. PYTHONSAFEPATH (envp)
     * stops the first on Python >= 3.11; the bootstrap drops every '' entry before any import,
     * on any version. */
    const char *words[] = {python_interpreter(cfg), "-c", WORKER_BOOTSTRAP, "--module",
                           cfg->module};
    size_t n = sizeof words / sizeof words[0];
    char **argv = calloc(n + 1, sizeof *argv);
    for (size_t i = 0; argv && i < n; i++) {
        argv[i] = strdup(words[i]);
        if (!argv[i]) {
            free_strv(argv);
            return NULL;
        }
    }
    return argv;
}

static bool env_overridden(const char *entry, const char *const *extra)
{
    const char *eq = strchr(entry, '=');
    size_t klen = eq ? (size_t)(eq - entry) : strlen(entry);
    static const char *const ours[] = {
        "PYTHONPATH",       "PYTHONSAFEPATH",          "PYPOOL_PARENT_PID",
        "PYPOOL_MAX_FRAME", "PYPOOL_PROTOCOL_VERSION", "PYPOOL_MAX_INFLIGHT"};
    for (size_t i = 0; i < sizeof ours / sizeof ours[0]; i++)
        if (strlen(ours[i]) == klen && strncmp(entry, ours[i], klen) == 0)
            return true;
    for (size_t i = 0; extra && extra[i]; i++)
        if (strncmp(extra[i], entry, klen) == 0 && extra[i][klen] == '=')
            return true;
    return false;
}

/* Appends the non-empty entries of a ':'-separated list to out (which has room): Python reads
 * an empty PYTHONPATH entry as the working directory, which must never be on sys.path. */
static void append_path_entries(char *out, const char *list)
{
    for (const char *e = list; e && *e;) {
        size_t n = strcspn(e, ":");
        if (n > 0) {
            if (*out)
                strcat(out, ":");
            strncat(out, e, n);
        }
        e += n + (e[n] == ':');
    }
}

/* PYTHONPATH=<cfg.python_path>:<the runtime>:<the host's PYTHONPATH>, empty entries left out. */
static char *make_pythonpath(const pypool_config *cfg, const char *runtime)
{
    const char *user = cfg->python_path;
    const char *host = getenv("PYTHONPATH");
    size_t room = strlen("PYTHONPATH=") + (user ? strlen(user) : 0) + strlen(runtime) +
                  (host ? strlen(host) : 0) + 3;
    char *env = malloc(room);
    if (!env)
        return NULL;
    char *list = env + strlen("PYTHONPATH=");
    memcpy(env, "PYTHONPATH=", strlen("PYTHONPATH=") + 1);
    append_path_entries(list, user);
    append_path_entries(list, runtime);
    append_path_entries(list, host);
    return env;
}

/* Host environment, minus what we set, plus cfg->env, plus PYTHONPATH and PYPOOL_* entries. */
static char **build_envp(const pypool_config *cfg, const char *runtime)
{
    size_t nhost = count_strv((const char *const *)environ);
    size_t nextra = count_strv(cfg->env);
    char **envp = calloc(nhost + nextra + 8, sizeof *envp);
    if (!envp)
        return NULL;
    size_t n = 0;
    bool ok = true;
    for (size_t i = 0; ok && i < nhost; i++)
        if (!env_overridden(environ[i], cfg->env))
            ok = (envp[n++] = strdup(environ[i])) != NULL;
    for (size_t i = 0; ok && i < nextra; i++)
        ok = (envp[n++] = strdup(cfg->env[i])) != NULL;
    if (ok)
        ok = (envp[n++] = make_pythonpath(cfg, runtime)) != NULL;
    if (ok) /* the working directory never goes on sys.path (see build_argv) */
        ok = (envp[n++] = strdup("PYTHONSAFEPATH=1")) != NULL;
    if (ok)
        ok = (envp[n++] = pypool__strdup_printf("PYPOOL_PARENT_PID=%d", (int)getpid())) != NULL;
    if (ok)
        ok = (envp[n++] = pypool__strdup_printf("PYPOOL_MAX_FRAME=%u", cfg->max_frame_bytes)) !=
             NULL;
    if (ok)
        ok = (envp[n++] = pypool__strdup_printf("PYPOOL_PROTOCOL_VERSION=%d",
                                                PYPOOL_PROTOCOL_VERSION)) != NULL;
    if (ok)
        ok = (envp[n++] = pypool__strdup_printf("PYPOOL_MAX_INFLIGHT=%u", cfg->max_inflight)) !=
             NULL;
    if (!ok) {
        free_strv(envp);
        return NULL;
    }
    return envp;
}

/* Copies one string into the pool's string block. */
static const char *keep(char **cursor, const char *s)
{
    if (!s)
        return NULL;
    size_t n = strlen(s) + 1;
    memcpy(*cursor, s, n);
    const char *copy = *cursor;
    *cursor += n;
    return copy;
}

int pypool__config_copy(pypool *p, const pypool_config *caller)
{
    pypool_config known;
    int rc = config_from_caller(caller, &known);
    if (rc)
        return rc;
    const pypool_config *cfg = &known;
    rc = validate(cfg);
    if (rc)
        return rc;
    p->cfg = *cfg;
    size_t total = 3;
    const char *strs[] = {cfg->python, cfg->module, cfg->python_path};
    for (size_t i = 0; i < 3; i++)
        total += strs[i] ? strlen(strs[i]) + 1 : 0;
    p->strings = malloc(total);
    p->child_argv = build_argv(cfg);
    char runtime[PATH_MAX], looked[2048];
    if (!runtime_dir(runtime, sizeof runtime, looked, sizeof looked)) {
        if (!cfg->worker_argv) /* a custom worker may not need it; ours does */
            return pypool__set_error(PYPOOL_ESPAWN,
                                     "the pypool Python runtime (pypool/pypool_pb2.py) was not "
                                     "found; looked in: %s. Set PYPOOL_RUNTIME_DIR to the "
                                     "directory that holds it (pkg-config --variable=pythondir "
                                     "pypool)",
                                     looked);
        runtime[0] = '\0';
    }
    p->child_envp = build_envp(cfg, runtime);
    if (!p->strings || !p->child_argv || !p->child_envp)
        return pypool__set_error(PYPOOL_ENOMEM, "out of memory copying the configuration");
    char *cursor = p->strings;
    p->cfg.python = keep(&cursor, cfg->python);
    p->cfg.module = keep(&cursor, cfg->module);
    p->cfg.python_path = keep(&cursor, cfg->python_path);
    p->cfg.worker_argv = NULL; /* copied into child_argv; the caller's may go away */
    p->cfg.env = NULL;
    return 0;
}

void pypool__config_free(pypool *p)
{
    free_strv(p->child_argv);
    free_strv(p->child_envp);
    free(p->strings);
    p->child_argv = p->child_envp = NULL;
    p->strings = NULL;
}
