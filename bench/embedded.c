/*
 * embedded.c - the embedded-CPython baseline: the same bench_work.py functions called from C
 * threads through the GIL (PyGILState_Ensure), in this process. Built only when CMake found
 * python3-embed; embedded_stub.c stands in otherwise. It shows where a process pool wins:
 * CPU-bound Python work scales with workers, while every embedded thread queues on one GIL.
 *
 * The interpreter is started lazily on the first call, without installing signal handlers,
 * and the main thread releases the GIL right away so any thread can take it.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <pthread.h>

#include "bench.h"

static pthread_once_t emb_once = PTHREAD_ONCE_INIT;
static PyObject *emb_funcs[2]; /* echo, burn_1ms */
static PyThreadState *emb_main_state;
static bool emb_ok;

static void emb_start(void)
{
    Py_InitializeEx(0);
    PyObject *sys_path = PySys_GetObject("path"); /* borrowed */
    PyObject *dir = PyUnicode_FromString(BENCH_PY_DIR);
    if (sys_path && dir)
        PyList_Insert(sys_path, 0, dir);
    Py_XDECREF(dir);
    PyObject *mod = PyImport_ImportModule("bench_work");
    if (mod) {
        emb_funcs[0] = PyObject_GetAttrString(mod, "echo");
        emb_funcs[1] = PyObject_GetAttrString(mod, "burn_1ms");
        Py_DECREF(mod);
    }
    emb_ok = emb_funcs[0] && emb_funcs[1];
    if (!emb_ok)
        PyErr_Print();
    emb_main_state = PyEval_SaveThread();
}

bool emb_available(void)
{
    pthread_once(&emb_once, emb_start);
    return emb_ok;
}

int emb_call(const char *method, const void *payload, size_t len)
{
    if (!emb_available())
        return -1;
    PyObject *fn = strcmp(method, "burn_1ms") == 0 ? emb_funcs[1] : emb_funcs[0];
    PyGILState_STATE g = PyGILState_Ensure();
    PyObject *arg = PyBytes_FromStringAndSize(payload, (Py_ssize_t)len);
    PyObject *res = arg ? PyObject_CallOneArg(fn, arg) : NULL;
    int rc = -1;
    if (res && PyBytes_Check(res) && (size_t)PyBytes_GET_SIZE(res) == len)
        rc = 0;
    Py_XDECREF(res);
    Py_XDECREF(arg);
    if (rc != 0)
        PyErr_Clear();
    PyGILState_Release(g);
    return rc;
}

void emb_shutdown(void)
{
    /* Left running on purpose: Py_Finalize with threads that once held the GIL is fragile, and
     * the process exits right after the report anyway. */
}
