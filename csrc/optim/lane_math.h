// Scalar versions of the few lane functions the update rules call besides + - * /.
// SIMD lane types provide the same names (found by argument-dependent lookup), with the
// same IEEE semantics, so that every instantiation of a rule computes bit-identical results.
#pragma once

#include <cmath>

#include "core/config.h"

namespace gdfast::optim {

GDFAST_HD float lane_sqrt(float x) { return ::sqrtf(x); }
GDFAST_HD double lane_sqrt(double x) { return ::sqrt(x); }

// max as x86 maxps defines it: a > b ? a : b (a NaN in b propagates).
GDFAST_HD float lane_max(float a, float b) { return a > b ? a : b; }
GDFAST_HD double lane_max(double a, double b) { return a > b ? a : b; }

// min as x86 minps defines it: a < b ? a : b (a NaN in b propagates).
GDFAST_HD float lane_min(float a, float b) { return a < b ? a : b; }
GDFAST_HD double lane_min(double a, double b) { return a < b ? a : b; }

GDFAST_HD float lane_abs(float x) { return ::fabsf(x); }
GDFAST_HD double lane_abs(double x) { return ::fabs(x); }

// Comparisons give a lane mask (here a bool; a SIMD lane type has its own mask type), which
// lane_where turns into a per-element choice. Ordered: false where either side is NaN.
GDFAST_HD bool lane_gt(float a, float b) { return a > b; }
GDFAST_HD bool lane_gt(double a, double b) { return a > b; }
GDFAST_HD bool lane_lt(float a, float b) { return a < b; }
GDFAST_HD bool lane_lt(double a, double b) { return a < b; }
GDFAST_HD bool lane_is_nan(float a) { return a != a; }
GDFAST_HD bool lane_is_nan(double a) { return a != a; }
GDFAST_HD float lane_where(bool mask, float a, float b) { return mask ? a : b; }
GDFAST_HD double lane_where(bool mask, double a, double b) { return mask ? a : b; }

// sign(x) in {-1, 0, +1}; zeros and NaN are returned unchanged (as torch.sign does).
template <class T>
GDFAST_HD T lane_sign_scalar(T x) {
  return x > T(0) ? T(1) : (x < T(0) ? T(-1) : x);
}
GDFAST_HD float lane_sign(float x) { return lane_sign_scalar(x); }
GDFAST_HD double lane_sign(double x) { return lane_sign_scalar(x); }

}  // namespace gdfast::optim
