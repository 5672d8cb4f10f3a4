#include "capi/capi.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <exception>
#include <new>
#include <string>
#include <vector>

#include "cpu/dispatch.h"
#include "optim/registry.h"
#include "optim/rule_traits.h"

namespace gdfast::capi {
namespace {

thread_local std::string t_last_error;

// A rejected call: its status and message (for last_error()).
struct Rejected {
  int status;
  std::string message;
};

std::string number(double x) {
  char text[32];
  std::snprintf(text, sizeof text, "%g", x);
  return text;
}

// As gdfast._spec.Range.describe words it, so both front doors say the same.
std::string describe(const optim::Range& r) {
  std::string text = "a finite number";
  const char* joiner = " ";
  if (r.lo != -optim::kInfinity) {
    text += joiner + std::string(r.lo_open ? "> " : ">= ") + number(r.lo);
    joiner = " and ";
  }
  if (r.hi != optim::kInfinity)
    text += joiner + std::string(r.hi_open ? "< " : "<= ") + number(r.hi);
  return text;
}

inline bool contains(const optim::Range& r, double x) {
  if (!std::isfinite(x)) return false;
  return (r.lo_open ? x > r.lo : x >= r.lo) && (r.hi_open ? x < r.hi : x <= r.hi);
}

// Out of line: the accepting path of a call stays small enough to inline.
[[noreturn]] void reject_value(const char* name, const optim::Range& r, double x) {
  throw Rejected{GDFAST_ERROR_VALUE,
                 std::string(name) + ": expected " + describe(r) + ", got " + number(x)};
}

// The hyperparameter struct's layout, as tools/gen_native_api.py writes it for the headers:
// "<id>:<name>(<field>:<r|f|s>,...,step:i,grad_scale:r)[param,<inputs>|<states>]".
template <class Rule>
std::string layout_text() {
  static const char kKinds[] = {'r', 'f', 's'};
  std::string text =
      std::to_string(static_cast<int>(optim::RuleId<Rule>::value)) + ":" + Rule::kName + "(";
  std::apply(
      [&](const auto&... f) {
        ((text += std::string(f.name) + ":" + kKinds[static_cast<int>(f.kind)] + ","), ...);
      },
      Rule::kFields);
  text += "step:i,grad_scale:r)[param";
  for (const char* name : Rule::kInputs) text += std::string(",") + name;
  const char* joiner = "|";
  for (const optim::StateSpec& s : Rule::kStates) {
    text += joiner + std::string(s.name);
    joiner = ",";
  }
  return text + "]";
}

std::uint64_t fnv1a(const std::string& text) {
  std::uint64_t hash = 14695981039346656037ull;
  for (const unsigned char c : text) hash = (hash ^ c) * 1099511628211ull;
  return hash;
}

template <class Rule>
std::uint64_t layout_hash() {
  static const std::uint64_t hash = fnv1a(layout_text<Rule>());
  return hash;
}

// The struct is one 8-byte slot per field: double, or int64_t for flags (and the step).
double real_slot(const unsigned char* slots, std::size_t i) {
  double x;
  std::memcpy(&x, slots + 8 * i, 8);
  return x;
}
std::int64_t int_slot(const unsigned char* slots, std::size_t i) {
  std::int64_t x;
  std::memcpy(&x, slots + 8 * i, 8);
  return x;
}

// Step 1 is a parameter's first: its scalar states take their start values (a number, or a
// hyperparameter's value: ASGD's eta starts at lr), whatever the caller's struct holds.
template <class Rule>
void start_scalar_states(typename Rule::Hyper& h) {
  const auto value_of = [&](const char* name) {
    double value = 0.0;
    const auto take = [&](const auto& f) {
      if (std::strcmp(f.name, name) == 0) value = static_cast<double>(h.*(f.member));
    };
    std::apply([&](const auto&... f) { (take(f), ...); }, Rule::kFields);
    return value;
  };
  const auto start = [&](const auto& f) {
    if constexpr (std::is_same_v<std::remove_reference_t<decltype(h.*(f.member))>, double>) {
      if (f.kind == optim::FieldKind::kScalarState) {
        h.*(f.member) = f.start_from != nullptr ? value_of(f.start_from) : f.initial;
      }
    }
  };
  std::apply([&](const auto&... f) { (start(f), ...); }, Rule::kFields);
}

template <class Rule>
typename Rule::Hyper read_hyper(const unsigned char* slots) {
  typename Rule::Hyper h{};
  std::size_t i = 0;
  const auto read = [&](const auto& field) {
    using M = std::remove_reference_t<decltype(h.*(field.member))>;
    if constexpr (std::is_same_v<M, bool>) {
      h.*(field.member) = int_slot(slots, i) != 0;
    } else {
      const double x = real_slot(slots, i);
      if (!contains(field.range, x)) reject_value(field.name, field.range, x);
      h.*(field.member) = x;
    }
    ++i;
  };
  std::apply([&](const auto&... field) { (read(field), ...); }, Rule::kFields);
  const std::int64_t step = int_slot(slots, i);
  if (Rule::kStepCount != optim::StepCount::kNone && (step < 1 || step > (std::int64_t{1} << 53))) {
    throw Rejected{GDFAST_ERROR_VALUE,
                   "step: expected an int >= 1 and <= 2**53, got " + std::to_string(step)};
  }
  h.step = static_cast<index_t>(step);
  h.grad_scale = real_slot(slots, i + 1);
  if (!contains(optim::kPositive, h.grad_scale)) {
    reject_value("grad_scale", optim::kPositive, h.grad_scale);
  }
  if (h.step == 1) start_scalar_states<Rule>(h);
  if constexpr (optim::HasInvalid<Rule>::value) {
    if (const char* problem = Rule::invalid(h)) throw Rejected{GDFAST_ERROR_VALUE, problem};
  }
  return h;
}

template <class Rule>
void write_scalar_states(const typename Rule::Hyper& h, unsigned char* slots) {
  std::size_t i = 0;
  const auto write = [&](const auto& field) {
    if (field.kind == optim::FieldKind::kScalarState) {
      const double x = h.*(field.member);
      std::memcpy(slots + 8 * i, &x, 8);
    }
    ++i;
  };
  std::apply([&](const auto&... field) { (write(field), ...); }, Rule::kFields);
}

// One array of the call: its role's name, which tensor, its bytes, whether it is written.
struct Span {
  const char* role;
  std::int64_t tensor;
  std::uintptr_t begin, end;
  bool written;
};

std::string name_of(const Span& s) {
  return std::string(s.role) + "[" + std::to_string(s.tensor) + "]";
}

[[noreturn]] void reject_overlap(const Span& a, const Span& b) {
  throw Rejected{GDFAST_ERROR_ARGUMENT, name_of(a) + " overlaps " + name_of(b) +
                                            " (an array that is written must not share memory "
                                            "with another)"};
}

// Written arrays must not share a byte with any other array (read-only ones may share).
void check_disjoint(Span* spans, std::size_t num_spans) {
  const auto clash = [](const Span& a, const Span& b) {
    return (a.written || b.written) && a.begin < b.end && b.begin < a.end;
  };
  if (num_spans <= 8) {  // one tensor: pairwise, no sort
    for (std::size_t i = 0; i < num_spans; ++i) {
      for (std::size_t j = 0; j < i; ++j) {
        if (clash(spans[i], spans[j])) reject_overlap(spans[i], spans[j]);
      }
    }
    return;
  }
  std::sort(spans, spans + num_spans,
            [](const Span& a, const Span& b) { return a.begin < b.begin; });
  // Sweep in address order, keeping the span reaching furthest so far (and the furthest
  // written one): any later span starting before its end overlaps it.
  const Span* reach = nullptr;
  const Span* written_reach = nullptr;
  for (std::size_t i = 0; i < num_spans; ++i) {
    const Span& s = spans[i];
    const Span* other = s.written ? reach : written_reach;
    if (other != nullptr && s.begin < other->end) reject_overlap(s, *other);
    if (reach == nullptr || s.end > reach->end) reach = &s;
    if (s.written && (written_reach == nullptr || s.end > written_reach->end)) written_reach = &s;
  }
}

template <class Rule>
void step_rule(std::uint64_t layout, void* hyper, int dtype_code, std::int64_t count,
               const std::int64_t* sizes, void* const* const* roles) {
  if (layout != layout_hash<Rule>()) {
    throw Rejected{GDFAST_ERROR_ABI,
                   "the hyperparameter struct has another layout than this "
                   "gdfast's (" +
                       layout_text<Rule>() + "): rebuild against this gdfast's headers"};
  }
  if (hyper == nullptr) throw Rejected{GDFAST_ERROR_ARGUMENT, "hyper: null pointer"};
  if (dtype_code != GDFAST_FLOAT32 && dtype_code != GDFAST_FLOAT64) {
    throw Rejected{GDFAST_ERROR_ARGUMENT,
                   "dtype: expected GDFAST_FLOAT32 (0) or GDFAST_FLOAT64 "
                   "(1), got " +
                       std::to_string(dtype_code)};
  }
  if (count < 0) {
    throw Rejected{GDFAST_ERROR_ARGUMENT, "count: expected >= 0, got " + std::to_string(count)};
  }
  if (count > 0 && (sizes == nullptr || roles == nullptr)) {
    throw Rejected{GDFAST_ERROR_ARGUMENT,
                   sizes == nullptr ? "sizes: null pointer" : "roles: null pointer"};
  }
  auto* slots = static_cast<unsigned char*>(hyper);
  typename Rule::Hyper h = read_hyper<Rule>(slots);
  const unsigned flags = Rule::flags(h);

  // The roles the kernel reads, in its order: param, inputs, the states these options use.
  constexpr int kInputs = optim::kNumInputs<Rule>;
  constexpr int kMaxRoles = 1 + kInputs + optim::kNumStates<Rule>;
  int used[kMaxRoles];
  const char* names[kMaxRoles];
  int num_used = 0;
  for (int r = 0; r < kMaxRoles; ++r) {
    if (r > kInputs && !optim::uses_state<Rule>(r - 1 - kInputs, flags)) continue;
    names[num_used] = r == 0         ? "param"
                      : r <= kInputs ? Rule::kInputs[r - 1]
                                     : Rule::kStates[r - 1 - kInputs].name;
    used[num_used++] = r;
  }
  if (count > 0) {
    for (int u = 0; u < num_used; ++u) {
      if (roles[used[u]] == nullptr) {
        throw Rejected{GDFAST_ERROR_ARGUMENT, std::string(names[u]) + ": null pointer"};
      }
    }
  }

  const auto dtype = static_cast<Dtype>(dtype_code);
  const std::int64_t element = dtype == Dtype::kFloat32 ? 4 : 8;
  // One tensor (the common case from a loop): no allocation.
  void* one_arrays[kMaxRoles];
  index_t one_offsets[2];
  Span one_spans[kMaxRoles];
  std::vector<void*> many_arrays;
  std::vector<index_t> many_offsets;
  std::vector<Span> many_spans;
  void** arrays = one_arrays;
  index_t* offsets = one_offsets;
  Span* spans = one_spans;
  if (count > 1) {
    const auto cells = static_cast<std::size_t>(count) * static_cast<std::size_t>(num_used);
    many_arrays.resize(cells);
    many_offsets.resize(static_cast<std::size_t>(count) + 1);
    many_spans.resize(cells);
    arrays = many_arrays.data();
    offsets = many_offsets.data();
    spans = many_spans.data();
  }
  std::size_t num_spans = 0;
  offsets[0] = 0;
  for (std::int64_t t = 0; t < count; ++t) {
    const std::int64_t n = sizes[t];
    if (n < 0 || n > INT64_MAX / 8 - offsets[t]) {
      throw Rejected{GDFAST_ERROR_ARGUMENT, "sizes[" + std::to_string(t) +
                                                "]: expected a size in [0, 2**60), got " +
                                                std::to_string(n)};
    }
    offsets[t + 1] = offsets[t] + n;
    for (int u = 0; u < num_used; ++u) {
      void* p = roles[used[u]][t];
      arrays[t * num_used + u] = p;
      if (n == 0) continue;
      const auto address = reinterpret_cast<std::uintptr_t>(p);
      if (p == nullptr || (address & static_cast<std::uintptr_t>(element - 1)) != 0) {
        throw Rejected{GDFAST_ERROR_ARGUMENT,
                       name_of({names[u], t, 0, 0, false}) +
                           (p == nullptr ? ": null pointer" : ": not aligned to its element size")};
      }
      const bool written = u == 0 || u > kInputs;
      spans[num_spans++] = {names[u], t, address,
                            address + static_cast<std::uintptr_t>(n * element), written};
    }
  }
  check_disjoint(spans, num_spans);

  StepArgs args{num_used, static_cast<index_t>(count), arrays, offsets, nullptr};
  cpu::run_step<Rule>(h, dtype, args);
  if constexpr (optim::HasAdvance<Rule>::value) {
    Rule::advance(h);
    write_scalar_states<Rule>(h, slots);
  }
}

int step_any(int rule, std::uint64_t layout, void* hyper, int dtype, std::int64_t count,
             const std::int64_t* sizes, void* const* const* roles) {
  const char* rule_name = "";
  try {
    switch (rule) {
#define GDFAST_OPTIMIZER(Rule, header)                                 \
  case static_cast<int>(optim::OptimizerId::Rule):                     \
    rule_name = optim::Rule::kName;                                    \
    step_rule<optim::Rule>(layout, hyper, dtype, count, sizes, roles); \
    break;
#include "optim/optimizers.def"
#undef GDFAST_OPTIMIZER
      default:
        throw Rejected{GDFAST_ERROR_ABI,
                       "rule: no optimizer has id " + std::to_string(rule) + " in this gdfast"};
    }
  } catch (const Rejected& e) {
    t_last_error = *rule_name != '\0' ? std::string(rule_name) + ": " + e.message : e.message;
    return e.status;
  } catch (const std::exception& e) {  // out of memory, or an unusable GDFAST_ISA
    t_last_error = std::string(rule_name) + ": " + e.what();
    return GDFAST_ERROR_INTERNAL;
  }
  return GDFAST_OK;
}

const char* last_error() { return t_last_error.c_str(); }

const gdfast_capi kTable = {GDFAST_CAPI_ABI_VERSION,
                            static_cast<std::uint32_t>(optim::kNumOptimizers), &step_any,
                            &last_error};

}  // namespace

const gdfast_capi* table() { return &kTable; }

}  // namespace gdfast::capi
