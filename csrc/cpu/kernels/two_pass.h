// The loops of a rule whose update needs sums over each whole tensor first (kTensorSums, LAMB's
// trust ratio): pass 1 updates the states and sums, per chunk, the squares of the values the
// rule names (ChunkSquares: bitwise the same for any lane width and thread split); pass 2 writes
// the param from the states and its tensor's factor (StepArgs::tensor_factor), which the host
// makes from the sums in between (cpu/dispatch.h). float32 and float64 arrays, every state used;
// in a float32 call, bfloat16/float16 params, grads and states and a float32 master copy of the
// param too (widened as loaded and narrowed as stored, to nearest or stochastically, as
// storage.h's loop does: the same places and rounding), and 8-bit states (quantized.h's
// buffers). Pass 1 sums from the moments as stored (narrow ones read back, 8-bit ones encoded
// and decoded again), which are the values pass 2 reads.
// Monitoring (StepArgs::monitor): pass 1 sums the gradient too, pass 2 the updates and params.
// Included only by kernels.cpp.
#pragma once

#include <algorithm>
#include <type_traits>

#include "core/step_args.h"
#include "cpu/kernel_table.h"
#include "cpu/kernels/elementwise.h"
#include "cpu/kernels/quantized.h"
#include "cpu/kernels/storage.h"
#include "cpu/kernels/tensor_list.h"
#include "optim/layout.h"

namespace gdfast::cpu::GDFAST_ISA_NAMESPACE {

// Each lane of elements [0, n) of one tensor's range, whole lanes then a partial one, given to
// lane(i, count).
template <class L, class Fn>
GDFAST_INLINE void for_each_lane(index_t n, Fn&& lane) {
  index_t i = 0;
  for (; i + L::kLanes <= n; i += L::kLanes) lane(i, index_t{L::kLanes});
  if (i < n) lane(i, n - i);
}

template <class L, class T>
GDFAST_INLINE L load_lane(const T* p, index_t count) {
  return count == L::kLanes ? L::load(p) : L::load_partial(p, count);
}

template <class L, class T>
GDFAST_INLINE void store_lane(T* p, index_t count, L x) {
  if (count == L::kLanes) {
    L::store(p, x);
  } else {
    L::store_partial(p, count, x);
  }
}

template <class Rule, unsigned kFlags, class T>
struct TwoPass {
  using L = Lane<T>;
  using Layout = optim::Layout<Rule, kFlags>;
  static constexpr int kStates = Layout::kNumStates;
  static constexpr int kSums = Rule::kTensorSums;
  static_assert(Layout::kNumInputs == 1 && Layout::kNumUsed == kStates,
                "a two-pass rule reads one input (the gradient) and uses every state");
  using Coef = typename Rule::template Coef<T>;

  // A tensor's arrays from one of its elements on, every one of the call's type T.
  struct FlatArrays {
    T* at[2 + kStates];
    template <int kSlot>
    GDFAST_INLINE L load(index_t i, index_t count) const {
      return load_lane<L>(at[kSlot] + i, count);
    }
    template <int kSlot>
    GDFAST_INLINE void store(index_t i, index_t count, L x) const {
      store_lane(at[kSlot] + i, count, x);
    }
    template <int kSlot>
    GDFAST_INLINE void prefetch(index_t i, bool written) const {
      prefetch_hint(at[kSlot] + i, written);
    }
  };

  // The same for a float32 call with narrow arrays or a master copy (storage.h's places: the
  // master is the param's wide place; narrow stores round to nearest, or stochastically with
  // the streams of the elements' indices, which a range never crosses the end of).
  struct StoredArrays {
    using X = StoredLanes<Rule, kFlags, AnyRecipe>;
    typename X::Arrays a;
    bool narrow_states;  // some state is stored narrower than float32
    template <int kSlot>
    GDFAST_INLINE L load(index_t i, index_t count) const {
      const auto at = X::template place<kSlot>(a, i);
      if (at.wide != nullptr) return load_lane<L>(at.wide, count);
      return Narrow16::load(at.type, at.narrow, count);
    }
    template <int kSlot>
    GDFAST_INLINE void store(index_t i, index_t count, L x) const {
      const auto at = X::template place<kSlot>(a, i);
      if (at.wide != nullptr) store_lane(at.wide, count, x);
      if (at.narrow == nullptr) return;
      if (a.stochastic && at.wide == nullptr) {  // (a param from its master: to nearest)
        const unsigned role = a.role[kSlot];
        const auto random16 =
            Narrow16::random16(Narrow16::random(a.key[role / 2], a.first + i), role);
        Narrow16::store(at.type, at.narrow, x, &random16, count);
      } else {
        Narrow16::store(at.type, at.narrow, x, nullptr, count);
      }
    }
    template <int kSlot>
    GDFAST_INLINE void prefetch(index_t i, bool written) const {
      const auto at = X::template place<kSlot>(a, i);
      if (at.wide != nullptr) prefetch_hint(at.wide, written);
      if (at.narrow != nullptr) prefetch_hint(at.narrow, written);
    }
  };

  // Runs pass(arrays) on tensor t's arrays from element `first` on, [first, stop) not crossing
  // a stochastic-rounding stream's end (a multiple of 2^32 elements).
  template <class Pass>
  static void with_arrays(const StepArgs& args, index_t t, index_t first, Pass&& pass) {
    void* const* tensor = args.arrays + t * args.num_arrays;
    if constexpr (std::is_same_v<T, float>) {
      if (args.storage != nullptr) {
        bool narrow_states = false;
        for (int k = 2; k < 2 + kStates; ++k) {
          narrow_states = narrow_states || args.storage->slot[k] != Dtype::kFloat32;
        }
        pass(StoredArrays{
            stored_arrays<Rule, kFlags>(*args.storage, t, tensor, first, args.grad_bound),
            narrow_states});
        return;
      }
    }
    FlatArrays flat;
    for (int k = 0; k < 2 + kStates; ++k) flat.at[k] = static_cast<T*>(tensor[k]) + first;
    pass(flat);
  }

  // One lane of pass 1's arrays, loaded (the gradient clamped by the call's bound, as every
  // rule's is).
  struct Loaded {
    L param, grad, state[kStates];
  };
  template <class A>
  struct Pass1Arrays {
    A arrays;
    L bound;
    index_t ahead;  // prefetch distance, elements (0: none)

    GDFAST_INLINE Loaded load(index_t i, index_t count) const {
      if (ahead != 0) {  // (as elementwise.h's loop: the division-bound rules need it on Intel)
        arrays.template prefetch<0>(i + ahead, false);
        arrays.template prefetch<1>(i + ahead, false);
        for_each_state(
            [&](auto k) { arrays.template prefetch<2 + decltype(k)::value>(i + ahead, true); });
      }
      Loaded x;
      x.param = arrays.template load<0>(i, count);
      x.grad = lane_min(bound, lane_max(-bound, arrays.template load<1>(i, count)));
      for_each_state(
          [&](auto k) { x.state[k] = arrays.template load<2 + decltype(k)::value>(i, count); });
      return x;
    }
    // The lane's moments updated and stored.
    GDFAST_INLINE void update(Loaded& x, index_t i, index_t count, const Coef& coef) const {
      Rule::template update_moments<kFlags>(x.grad, x.state, coef);
      for_each_state(
          [&](auto k) { arrays.template store<2 + decltype(k)::value>(i, count, x.state[k]); });
    }
    // The values to sum of a lane whose moments are as stored: the rule's, then (when there is
    // room for it: monitoring) the gradient.
    template <int kAll>
    GDFAST_INLINE static void to_sum(const Loaded& x, const Coef& coef, L (&summed)[kAll]) {
      L rule_sums[kSums];
      Rule::template summed<kFlags>(x.param, x.state, coef, rule_sums);
      for (int s = 0; s < kSums; ++s) summed[s] = rule_sums[s];
      if constexpr (kAll > kSums) summed[kSums] = x.grad;
    }
    // update, then to_sum from the moments as stored (narrow ones read back: rounded as pass 2
    // will read them).
    template <int kAll>
    GDFAST_INLINE void finish(Loaded& x, index_t i, index_t count, const Coef& coef,
                              L (&summed)[kAll]) const {
      update(x, i, count, coef);
      if constexpr (std::is_same_v<A, StoredArrays>) {
        if (arrays.narrow_states) {
          for_each_state(
              [&](auto k) { x.state[k] = arrays.template load<2 + decltype(k)::value>(i, count); });
        }
      }
      to_sum(x, coef, summed);
    }
  };

  template <class Fn>
  GDFAST_INLINE static void for_each_state(Fn&& fn) {
    optim::for_each_index(fn, std::make_integer_sequence<int, kStates>{});
  }

  // Pass 1 over elements [first, stop) of tensor t, from a chunk's start, within the chunk.
  // Whole blocks of 16 elements keep ChunkSquares' 16 accumulators in registers (element i of
  // the chunk into accumulator i % 16, as ChunkSquares adds them); the rest goes through it.
  // Each lane is loaded before the previous one is stored (see elementwise.h's run_lanes).
  // With kMonitor the gradient is summed too, after the rule's values (monitoring).
  template <bool kMonitor>
  static void moments(const StepArgs& args, index_t t, index_t first, index_t stop,
                      ChunkSquares<kSums + kMonitor>& sums) {
    if constexpr (std::is_same_v<T, float>) {
      if (args.storage != nullptr && args.storage->any_quantized) {
        quantized_moments<kMonitor>(args, t, first, stop, sums);
        return;
      }
    }
    with_arrays(args, t, first, [&](const auto& arrays) {
      moments_of<kMonitor>(
          Pass1Arrays<std::decay_t<decltype(arrays)>>{
              arrays, L(static_cast<T>(args.grad_bound)),
              args.prefetch_bytes / static_cast<index_t>(sizeof(T))},
          *static_cast<const Coef*>(args.coef), stop - first, sums);
    });
  }

  template <bool kMonitor, class A>
  static void moments_of(const Pass1Arrays<A>& a_ref, const Coef& coef_ref, index_t n,
                         ChunkSquares<kSums + kMonitor>& sums) {
    // Local copies: stores to the arrays cannot alias them, so they stay in registers (as
    // elementwise.h's run_lanes).
    const Pass1Arrays<A> a = a_ref;
    const Coef coef = coef_ref;
    using Wide = Lane<double>;
    constexpr int kAll = kSums + kMonitor;
    constexpr int kBlock = ChunkSquares<kSums>::kAccumulators;
    constexpr int kLanesPerBlock = kBlock / L::kLanes;
    constexpr int kWidePerBlock = kBlock / Wide::kLanes;
    const index_t blocks_end = n / kBlock * kBlock;
    Wide acc[kAll][kWidePerBlock];
    for (int s = 0; s < kAll; ++s) {
      for (int q = 0; q < kWidePerBlock; ++q) acc[s][q] = Wide(0.0);
    }
    if (blocks_end > 0) {
      Loaded current = a.load(0, L::kLanes);
      for (index_t i = 0; i < blocks_end; i += kBlock) {
        for (int j = 0; j < kLanesPerBlock; ++j) {
          const index_t at = i + j * L::kLanes;
          const Loaded next =
              at + L::kLanes < blocks_end ? a.load(at + L::kLanes, L::kLanes) : current;
          L summed[kAll];
          a.finish(current, at, L::kLanes, coef, summed);
          for (int s = 0; s < kAll; ++s) {
            constexpr int kPerLane = ChunkSquares<kAll>::template kWidePerLane<L>;
            Wide squares[kPerLane];
            ChunkSquares<kAll>::widened_squares(summed[s], squares);
            for (int q = 0; q < kPerLane; ++q) {
              acc[s][j * kPerLane + q] = acc[s][j * kPerLane + q] + squares[q];
            }
          }
          current = next;
        }
      }
    }
    for (int s = 0; s < kAll; ++s) {  // (the accumulators were 0: these are their sums)
      for (int q = 0; q < kWidePerBlock; ++q) {
        Wide::store(sums.acc[s] + q * Wide::kLanes, acc[s][q]);
      }
    }
    sums.next = blocks_end;
    for_each_lane<L>(n - blocks_end, [&](index_t k, index_t count) {
      Loaded x = a.load(blocks_end + k, count);
      L summed[kAll];
      a.finish(x, blocks_end + k, count, coef, summed);
      sums.add_inline(summed, count);
    });
  }

  // Pass 1 with 8-bit states (a float32 call), over [first, stop) from a chunk's start, so from
  // a block's: a group of blocks at a time, decoded into quantized.h's buffers, the moments
  // updated there, encoded with each block's new maximum and decoded again, then summed in
  // chunk order (so the sums are of the moments pass 2 decodes).
  template <bool kMonitor>
  static void quantized_moments(const StepArgs& args, index_t t, index_t first, index_t stop,
                                ChunkSquares<kSums + kMonitor>& sums) {
    const Coef& coef = *static_cast<const Coef*>(args.coef);
    QuantizedStates<2 + kStates> q(args, t);
    for (index_t at = first; at < stop;) {
      const index_t end = std::min(stop, at + kQuantGroup);
      q.decode(at, end);
      const Pass1Arrays<StoredArrays> a{buffers(q, t, at, args.grad_bound),
                                        L(static_cast<T>(args.grad_bound)), 0};
      for_each_lane<L>(end - at, [&](index_t i, index_t count) {
        Loaded x = a.load(i, count);
        a.update(x, i, count, coef);
      });
      q.encode(at, end, 1);
      q.decode(at, end);
      for_each_lane<L>(end - at, [&](index_t i, index_t count) {
        L summed[kSums + kMonitor];
        a.to_sum(a.load(i, count), coef, summed);
        sums.add_inline(summed, count);
      });
      at = end;
    }
  }

  // Tensor t's arrays from element `at` on, each 8-bit state at its buffer in q (a float32
  // call; storage.h's general places: one loop serves every layout, which keeps the wheel
  // small for a mode chosen for memory).
  static StoredArrays buffers(QuantizedStates<2 + kStates>& q, index_t t, index_t at,
                              double grad_bound) {
    return {q.template stored<Rule, kFlags>(t, at, grad_bound), false};
  }

  // Pass 1 over [begin, end) of the virtual concatenation, which starts at a chunk's start:
  // each chunk's sums into args.chunk_sums (and the gradient's, when monitoring).
  static void run_moments(const StepArgs& args, index_t begin, index_t end) {
    if (args.monitor != nullptr) {
      for_each_chunk<kSums + 1>(
          args, begin, end,
          [&](index_t t, index_t first, index_t stop, ChunkSquares<kSums + 1>& sums) {
            moments<true>(args, t, first, stop, sums);
          });
    } else {
      for_each_chunk<kSums>(args, begin, end,
                            [&](index_t t, index_t first, index_t stop, ChunkSquares<kSums>& sums) {
                              moments<false>(args, t, first, stop, sums);
                            });
    }
  }

  // Pass 2 over elements [first, first + n) of tensor t; each lane loaded before the previous
  // one is stored (see elementwise.h's run_lanes). With `sums` (monitoring, within a chunk from
  // its start), the squares of the update (new param - old) and of the new param.
  static void apply(const StepArgs& args, index_t t, index_t first, index_t n,
                    ChunkSquares<2>* sums) {
    const Coef& coef = *static_cast<const Coef*>(args.coef);
    const L factor(static_cast<T>(args.tensor_factor[t]));
    if constexpr (std::is_same_v<T, float>) {
      if (args.storage != nullptr && args.storage->any_quantized) {
        // (decoded a group at a time; a group never crosses a rounding stream's end)
        QuantizedStates<2 + kStates> q(args, t);
        for (index_t at = first; at < first + n;) {
          const index_t end = std::min(first + n, (at / kQuantGroup + 1) * kQuantGroup);
          q.decode(at, end);
          apply_to(buffers(q, t, at, args.grad_bound), coef, factor, 0, end - at, sums);
          at = end;
        }
        return;
      }
    }
    with_arrays(args, t, first, [&](const auto& arrays) {
      apply_to(arrays, coef, factor, args.prefetch_bytes / static_cast<index_t>(sizeof(T)), n,
               sums);
    });
  }

  template <class A>
  static void apply_to(const A& arrays_ref, const Coef& coef_ref, L factor, index_t ahead,
                       index_t n, ChunkSquares<2>* sums) {
    const A arrays = arrays_ref;  // (local copies, as in moments_of)
    const Coef coef = coef_ref;
    struct Lanes2 {
      L param, state[kStates];
    };
    const auto load = [&](index_t i, index_t count) {
      if (ahead != 0) {
        arrays.template prefetch<0>(i + ahead, true);
        for_each_state(
            [&](auto k) { arrays.template prefetch<2 + decltype(k)::value>(i + ahead, false); });
      }
      Lanes2 x;
      x.param = arrays.template load<0>(i, count);
      for_each_state(
          [&](auto k) { x.state[k] = arrays.template load<2 + decltype(k)::value>(i, count); });
      return x;
    };
    const auto finish = [&](Lanes2& x, index_t i, index_t count) {
      const L before = x.param;
      Rule::template apply<kFlags>(x.param, x.state, coef, factor);
      arrays.template store<0>(i, count, x.param);
      if (sums != nullptr) {
        const L update_param[2] = {x.param - before, x.param};
        sums->add(update_param, count);
      }
    };
    index_t i = 0;
    if (n >= L::kLanes) {
      Lanes2 current = load(0, L::kLanes);
      for (; i + 2 * L::kLanes <= n; i += L::kLanes) {
        const Lanes2 next = load(i + L::kLanes, L::kLanes);
        finish(current, i, L::kLanes);
        current = next;
      }
      finish(current, i, L::kLanes);
      i += L::kLanes;
    }
    if (i < n) {
      Lanes2 tail = load(i, n - i);
      finish(tail, i, n - i);
    }
  }

  // Pass 2 over [begin, end) of the virtual concatenation; when monitoring, whole chunks from
  // a chunk's start, each one's two sums into args.chunk_sums.
  static void run_apply(const StepArgs& args, index_t begin, index_t end) {
    if (args.monitor != nullptr) {
      for_each_chunk<2>(args, begin, end,
                        [&](index_t t, index_t first, index_t stop, ChunkSquares<2>& sums) {
                          apply(args, t, first, stop - first, &sums);
                        });
    } else {
      for_each_segment(args, begin, end, [&](index_t t, index_t first, index_t stop) {
        // (chunks never cross a stochastic-rounding stream's end)
        for_each_stream_part(first, stop, [&](index_t at, index_t until) {
          apply(args, t, at, until - at, nullptr);
        });
      });
    }
  }
};

}  // namespace gdfast::cpu::GDFAST_ISA_NAMESPACE
