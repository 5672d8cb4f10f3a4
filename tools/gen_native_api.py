"""Writes the per-optimizer parts of gdfast's native API from the registry (each optimizer's one
description, read through the built ``gdfast._core``):

- ``gdfast/include/gdfast/capi_rules.h``: C hyperparameter structs, defaults, typed wrappers;
- ``gdfast/cython_api.pxd``: the same for Cython (the functions ``gdfast/cython_api.pyx`` exports).

Run it after adding or changing an optimizer (``python tools/gen_native_api.py``); ``--check``
fails if the committed files differ from what it would write (tests/test_native_api.py runs it).
"""

from __future__ import annotations

import argparse
import sys
import textwrap
from pathlib import Path
from typing import List, Sequence

from gdfast._spec import RULES, Rule

ROOT = Path(__file__).resolve().parent.parent
HEADER = ROOT / "gdfast" / "include" / "gdfast" / "capi_rules.h"
PXD = ROOT / "gdfast" / "cython_api.pxd"
KIND_CODES = {"real": "r", "flag": "f", "scalar_state": "s"}
STATUS = ("OK", "ERROR_ARGUMENT", "ERROR_VALUE", "ERROR_ABI", "ERROR_INTERNAL")


def layout_text(rule: Rule) -> str:
    """As csrc/capi/capi.cpp spells a struct's layout; a call checks the two agree."""
    fields = "".join(f"{f.name}:{KIND_CODES[f.kind]}," for f in rule.fields)
    states = "|" + ",".join(rule.state_names) if rule.states else ""
    inputs = ",".join(rule.inputs)
    return f"{rule.id}:{rule.name}({fields}step:i,grad_scale:r)[param,{inputs}{states}]"


def layout_hash(rule: Rule) -> int:
    """64-bit FNV-1a of layout_text, as the C++ side computes it."""
    h = 14695981039346656037
    for byte in layout_text(rule).encode():
        h = ((h ^ byte) * 1099511628211) % 2**64
    return h


def roles(rule: Rule) -> List[str]:
    return ["param", *rule.inputs, *rule.state_names]


def start_value(rule: Rule, name: str) -> str:
    field = next(f for f in rule.fields if f.name == name)
    if field.kind == "flag":
        return str(int(field.default))
    value = rule.scalar_start(field, {f.name: f.default for f in rule.options})
    return repr(float(value))


def field_note(rule: Rule, name: str) -> str:
    field = next(f for f in rule.fields if f.name == name)
    if field.kind == "scalar_state":
        start = field.start_from or repr(float(field.default))
        return f"scalar state: step 1 starts it at {start}, each step writes it back"
    if field.kind == "flag":
        return f"flag (0 or 1), default {int(field.default)}"
    return f"default {field.default!r}, {field.range.describe()}"


STEP_NOTES = {
    "counted": "the step count after this step: 1 on the first",
    "first_call": "1 on the first step (it writes momentum_buffer), then 2 or more",
    "none": "unused by this rule",
}


def state_note(rule: Rule) -> str:
    return ", ".join(f"{s.name} (only if {s.when}, else may be NULL)" if s.when else s.name
                     for s in rule.states)


def wrap(head: str, params: Sequence[str], tail: str, indent: str = "    ") -> str:
    """`head` + params joined by ", " + `tail`, broken into lines of at most 100 columns."""
    lines, line = [], head
    for i, param in enumerate(params):
        piece = param + (", " if i + 1 < len(params) else tail)
        if len(line) + len(piece.rstrip()) > 100:
            lines.append(line.rstrip())
            line = indent
        line += piece
    return "\n".join([*lines, line])


def c_rule(rule: Rule) -> str:
    up, hyper = rule.name.upper(), f"gdfast_{rule.name}_hyper"
    members = [(("int64_t" if f.kind == "flag" else "double"), f.name, field_note(rule, f.name))
               for f in rule.fields]
    members += [("int64_t", "step", STEP_NOTES[rule.step]),
                ("double", "grad_scale", "gradients are divided by this (AMP), default 1.0")]
    body = "\n".join(f"  {t} {n}; /* {note} */" for t, n, note in members)
    defaults = ", ".join([*(start_value(rule, f.name) for f in rule.fields), "1", "1.0"])
    names = roles(rule)
    single = wrap(f"static inline int gdfast_{rule.name}_step(",
                  ["const gdfast_capi *api", f"{hyper} *hyper", "int dtype", "int64_t n",
                   *(("const void *" if n in rule.inputs else "void *") + n for n in names)],
                  ") {")
    multi = wrap(f"static inline int gdfast_{rule.name}_step_multi(",
                 ["const gdfast_capi *api", f"{hyper} *hyper", "int dtype", "int64_t count",
                  "const int64_t *sizes",
                  *(("const void *const *" if n in rule.inputs else "void *const *") + n
                    for n in names)], ") {")
    arrays = wrap("  void *arrays[] = {",
                  [f"(void *){n}" if n in rule.inputs else n for n in names], "};")
    single_roles = wrap("  void *const *const roles[] = {",
                        [f"&arrays[{i}]" for i in range(len(names))], "};")
    multi_roles = wrap("  void *const *const roles[] = {",
                       [f"(void *const *){n}" if n in rule.inputs else n for n in names], "};")
    about = textwrap.fill(f"{rule.name}: {rule.summary}. Arrays: param, "
                          f"{', '.join(rule.inputs)}; states {state_note(rule)}.",
                          width=97, initial_indent="/* ", subsequent_indent=" * ")
    return f"""\
{about} */
#define GDFAST_RULE_{up} {rule.id}
#define GDFAST_{up}_LAYOUT UINT64_C({layout_hash(rule):#018x})
typedef struct {hyper} {{
{body}
}} {hyper};
#define GDFAST_{up}_DEFAULTS {{{defaults}}}

{single}
{arrays}
{single_roles}
  return api->step(GDFAST_RULE_{up}, GDFAST_{up}_LAYOUT, hyper, dtype, 1, &n, roles);
}}

{multi}
{multi_roles}
  return api->step(GDFAST_RULE_{up}, GDFAST_{up}_LAYOUT, hyper, dtype, count, sizes, roles);
}}
"""


def header(rules: Sequence[Rule]) -> str:
    parts = "\n".join(c_rule(r) for r in rules)
    return f"""\
/* Generated by tools/gen_native_api.py from gdfast's registry: do not edit. Included by
 * gdfast/capi.h, which documents the API. */
#ifndef GDFAST_CAPI_RULES_H_
#define GDFAST_CAPI_RULES_H_

#ifdef __cplusplus
extern "C" {{
#endif

{parts}
#ifdef __cplusplus
}}
#endif

#endif /* GDFAST_CAPI_RULES_H_ */
"""


def cython_rule(rule: Rule) -> str:
    struct = f"{rule.name.capitalize()}Hyper"
    about = textwrap.fill(f"{rule.name}: {rule.summary}. Arrays: param, "
                          f"{', '.join(rule.inputs)}; states {state_note(rule)}.",
                          width=100, initial_indent="# ", subsequent_indent="# ")
    lines = [about, "cdef enum:", f"    RULE_{rule.name.upper()} = {rule.id}",
             f"ctypedef struct {struct}:"]
    for f in rule.fields:
        lines.append(f"    {'int64_t' if f.kind == 'flag' else 'double'} {f.name}"
                     f"  # {field_note(rule, f.name)}")
    lines += [f"    int64_t step  # {STEP_NOTES[rule.step]}",
              "    double grad_scale  # gradients are divided by this (AMP), default 1.0", "",
              f"cdef inline {struct} {rule.name}_defaults() noexcept nogil:",
              f"    cdef {struct} h"]
    lines += [f"    h.{f.name} = {start_value(rule, f.name)}" for f in rule.fields]
    lines += ["    h.step = 1", "    h.grad_scale = 1.0", "    return h", ""]
    names = roles(rule)
    count, layout = len(names), f"{layout_hash(rule):#018x}ULL"
    lines += [wrap(f"cdef inline int {rule.name}_step(",
                   [f"{struct}* hyper", "int dtype", "int64_t n",
                    *(("const void* " if n in rule.inputs else "void* ") + n for n in names)],
                   ") noexcept nogil:", " " * 8),
              f"    cdef void* arrays[{count}]", f"    cdef void** roles[{count}]"]
    for i, n in enumerate(names):
        lines.append(f"    arrays[{i}] = {'<void*>' if n in rule.inputs else ''}{n}")
        lines.append(f"    roles[{i}] = &arrays[{i}]")
    lines += [f"    return step_v1(RULE_{rule.name.upper()}, {layout}, hyper, dtype, 1, &n, roles)",
              ""]
    lines += [wrap(f"cdef inline int {rule.name}_step_multi(",
                   [f"{struct}* hyper", "int dtype", "int64_t count", "const int64_t* sizes",
                    *(("const void** " if n in rule.inputs else "void** ") + n for n in names)],
                   ") noexcept nogil:", " " * 8),
              f"    cdef void** roles[{count}]"]
    lines += [f"    roles[{i}] = {'<void**>' if n in rule.inputs else ''}{n}"
              for i, n in enumerate(names)]
    lines.append(f"    return step_v1(RULE_{rule.name.upper()}, {layout}, hyper, dtype, count, "
                 "sizes, roles)")
    return "\n".join(lines) + "\n"


def pxd(rules: Sequence[Rule]) -> str:
    status = "\n".join(f"    {name} = {i}" for i, name in enumerate(STATUS))
    parts = "\n\n".join(cython_rule(r) for r in rules)
    return f"""\
# Generated by tools/gen_native_api.py from gdfast's registry: do not edit.
#
# gdfast's fused optimizer steps for Cython, callable without the GIL. Cimport what you use
# (`from gdfast.cython_api cimport AdamHyper, adam_defaults, adam_step, FLOAT32, OK`): nothing
# of gdfast is linked at build time; the functions come from the compiled module
# gdfast.cython_api when your module is imported, which fails there if this gdfast's ABI
# version differs from the one you built against (the version is in the function's name).
#
# <name>_step(&hyper, dtype, n, param, <inputs>, <states>) steps one tensor of n elements;
# <name>_step_multi(&hyper, dtype, count, sizes, params, <inputs>, <states>) steps `count`
# tensors given as arrays of pointers, one per role, in one call on gdfast's thread pool.
# States the options leave unused may be NULL. Both return OK (0) or an error status, having
# then written nothing; last_error() says why. Scalar states are written back into hyper.

from libc.stdint cimport int64_t, uint64_t

cdef enum:
    ABI_VERSION = 1
    FLOAT32 = 0
    FLOAT64 = 1
{status}

cdef int step_v1(int rule, uint64_t layout, void* hyper, int dtype, int64_t count,
                 const int64_t* sizes, void*** roles) noexcept nogil
# The message of this thread's last failed call.
cdef const char* last_error() noexcept nogil


{parts}"""


def main(argv: Sequence[str] = ()) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true",
                        help="fail if the committed files are not what this would write")
    args = parser.parse_args(argv)
    rules = sorted(RULES.values(), key=lambda r: r.id)
    stale = []
    for path, text in ((HEADER, header(rules)), (PXD, pxd(rules))):
        if args.check:
            if not path.exists() or path.read_text() != text:
                stale.append(str(path.relative_to(ROOT)))
        else:
            path.write_text(text)
    if stale:
        print(f"out of date: {', '.join(stale)}; run python tools/gen_native_api.py",
              file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
