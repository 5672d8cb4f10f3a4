/* gdfast's C API: the fused optimizer steps for C and C++ extensions, without Python in the
 * call and without the GIL. Cython code uses gdfast/cython_api.pxd instead (no header needed).
 *
 * Nothing of gdfast is linked at build time: the functions are reached through a table that
 * gdfast._core exports as a capsule, so one binary works with every gdfast of the same ABI
 * version. Build with `-I$(python -c "import gdfast; print(gdfast.get_include())")`, then:
 *
 *     const gdfast_capi *api = gdfast_import_capi();  // with the GIL; NULL + exception if not
 *     gdfast_adam_hyper h = GDFAST_ADAM_DEFAULTS;
 *     h.lr = 1e-2; h.step = 1;
 *     if (gdfast_adam_step(api, &h, GDFAST_FLOAT32, n, param, grad, m, v, NULL) != GDFAST_OK)
 *       fprintf(stderr, "%s\n", api->last_error());
 *
 * Each optimizer has a hyperparameter struct (gdfast/capi_rules.h, generated from its one
 * description): one 8-byte slot per field in declared order (double for reals and scalar
 * states, int64_t for flags), then step (int64_t) and grad_scale (double). Keep it between
 * steps: scalar states (NAdam's mu_product, ASGD's eta and mu) are set to their start on
 * step 1 and written back after each step. */
#ifndef GDFAST_CAPI_H_
#define GDFAST_CAPI_H_

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Incompatible changes of this file bump it (adding an optimizer does not). */
#define GDFAST_CAPI_ABI_VERSION 1
#define GDFAST_CAPI_CAPSULE "gdfast._core._C_API"

enum gdfast_dtype { GDFAST_FLOAT32 = 0, GDFAST_FLOAT64 = 1 };

enum gdfast_status {
  GDFAST_OK = 0,
  GDFAST_ERROR_ARGUMENT = 1, /* a null, misaligned or overlapping array, a bad size or dtype */
  GDFAST_ERROR_VALUE = 2,    /* a hyperparameter or step out of range, or options that clash */
  GDFAST_ERROR_ABI = 3,      /* an unknown rule, or a struct layout this gdfast does not have */
  GDFAST_ERROR_INTERNAL = 4
};

typedef struct gdfast_capi {
  uint32_t abi_version; /* GDFAST_CAPI_ABI_VERSION of the gdfast that made the table */
  uint32_t num_rules;   /* rule ids are 0 .. num_rules - 1; new rules take new ids */
  /* One step of rule `rule` over `count` tensors of `sizes[t]` elements of `dtype` in host
   * (CPU) memory, contiguous, on gdfast's thread pool. `roles[r][t]` is tensor t's array of role r: param, the rule's inputs
   * (the gradient), then its states in declared order (a state the options leave unused may be
   * NULL). `layout` is the struct's GDFAST_<RULE>_LAYOUT. Every argument is checked before any
   * array is written; on failure nothing is written and last_error() says why. Thread-safe. */
  int (*step)(int rule, uint64_t layout, void *hyper, int dtype, int64_t count,
              const int64_t *sizes, void *const *const *roles);
  /* The message of this thread's last failed call ("" if none). */
  const char *(*last_error)(void);
} gdfast_capi;

#ifdef Py_PYTHON_H
/* Imports gdfast and returns its table, or NULL with a Python exception set (ImportError if
 * its ABI version differs from this header's). Call with the GIL held. (Declared where
 * Python.h is included before this header.) */
static inline const gdfast_capi *gdfast_import_capi(void) {
  const gdfast_capi *api = (const gdfast_capi *)PyCapsule_Import(GDFAST_CAPI_CAPSULE, 0);
  if (api != NULL && api->abi_version != GDFAST_CAPI_ABI_VERSION) {
    PyErr_Format(PyExc_ImportError, "gdfast C API: built for ABI version %d, gdfast has %u",
                 GDFAST_CAPI_ABI_VERSION, (unsigned)api->abi_version);
    return NULL;
  }
  return api;
}
#endif

#ifdef __cplusplus
}
#endif

#include "gdfast/capi_rules.h"

#endif /* GDFAST_CAPI_H_ */
