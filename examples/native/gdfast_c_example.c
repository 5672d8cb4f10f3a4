/* gdfast's fused steps called from a C extension through the C API (gdfast/capi.h, found
 * with gdfast.get_include()): adam_step(param, grad, exp_avg, exp_avg_sq, lr, step) steps
 * four writable C-contiguous float32 or float64 buffers in place, the GIL released. */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include "gdfast/capi.h"

static const gdfast_capi *api;

static PyObject *adam_step(PyObject *self, PyObject *args) {
  PyObject *objects[4];
  double lr;
  long long step;
  if (!PyArg_ParseTuple(args, "OOOOdL", &objects[0], &objects[1], &objects[2], &objects[3], &lr,
                        &step)) {
    return NULL;
  }
  Py_buffer views[4];
  int held = 0, status = GDFAST_OK;
  for (; held < 4; ++held) {
    int flags = PyBUF_C_CONTIGUOUS | PyBUF_FORMAT | (held == 1 ? 0 : PyBUF_WRITABLE);
    if (PyObject_GetBuffer(objects[held], &views[held], flags) != 0) goto done;
  }
  const char *format = views[0].format;
  int dtype = format[0] == 'f' ? GDFAST_FLOAT32 : format[0] == 'd' ? GDFAST_FLOAT64 : -1;
  int64_t n = (int64_t)(views[0].len / views[0].itemsize);
  for (int i = 1; i < 4; ++i) {
    if (strcmp(views[i].format, format) != 0 || views[i].len != views[0].len) {
      PyErr_SetString(PyExc_ValueError, "adam_step: the buffers differ in type or length");
      goto done;
    }
  }
  gdfast_adam_hyper hyper = GDFAST_ADAM_DEFAULTS;
  hyper.lr = lr;
  hyper.step = step;
  Py_BEGIN_ALLOW_THREADS
  status = gdfast_adam_step(api, &hyper, dtype, n, views[0].buf, views[1].buf, views[2].buf,
                            views[3].buf, NULL);
  Py_END_ALLOW_THREADS
  if (status != GDFAST_OK) PyErr_SetString(PyExc_ValueError, api->last_error());
done:
  while (held > 0) PyBuffer_Release(&views[--held]);
  if (PyErr_Occurred()) return NULL;
  Py_RETURN_NONE;
}

static PyMethodDef methods[] = {
    {"adam_step", adam_step, METH_VARARGS, "Adam on four buffers, in place."},
    {NULL, NULL, 0, NULL}};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "gdfast_c_example", NULL, -1,
                                    methods};

PyMODINIT_FUNC PyInit_gdfast_c_example(void) {
  api = gdfast_import_capi();
  if (api == NULL) return NULL;
  return PyModule_Create(&module);
}
