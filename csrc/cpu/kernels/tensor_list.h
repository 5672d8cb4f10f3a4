// A step function over a tensor list: finds the tensors of a thread's element range and runs
// each one's segment through the rule's loop (elementwise.h), with the lanes of storage.h when
// some arrays are stored narrower than float32 (and the blocks of quantized.h for 8-bit states).
// Included only by kernels.cpp.
#pragma once

#include <algorithm>
#include <type_traits>
#include <utility>

#include "core/step_args.h"
#include "cpu/kernel_table.h"
#include "cpu/kernels/elementwise.h"
#include "cpu/kernels/quantized.h"
#include "cpu/kernels/storage.h"
#include "optim/layout.h"

namespace gdfast::cpu::GDFAST_ISA_NAMESPACE {

// Index of the tensor holding virtual element `at`: the last t with offsets[t] <= at.
inline index_t find_tensor(const index_t* offsets, index_t num_tensors, index_t at) {
  index_t lo = 0, hi = num_tensors;  // invariant: offsets[lo] <= at < offsets[hi]
  while (hi - lo > 1) {
    const index_t mid = lo + (hi - lo) / 2;
    if (offsets[mid] <= at) {
      lo = mid;
    } else {
      hi = mid;
    }
  }
  return lo;
}

// Elements [first, stop) of a tensor split where a stochastic-rounding stream ends (every 2^32
// elements of a tensor), as part(at, until).
template <class Part>
void for_each_stream_part(index_t first, index_t stop, Part&& part) {
  for (index_t at = first; at < stop;) {
    const index_t until = std::min((at | ((index_t{1} << 32) - 1)) + 1, stop);
    part(at, until);
    at = until;
  }
}

// Elements [first, stop) of tensor t, whose arrays all hold T, with monitoring sums of them if
// `sums` is set.
template <class Rule, unsigned kFlags, class T>
void run_flat_segment(const StepArgs& args, index_t t, index_t first, index_t stop,
                      MonitorSquares* sums) {
  constexpr int kArrays = optim::Layout<Rule, kFlags>::kNumArrays;
  const auto& coef = *static_cast<const typename Rule::template Coef<T>*>(args.coef);
  void* const* tensor_arrays = args.arrays + t * args.num_arrays;
  typename Lanes<Rule, kFlags, T>::Arrays arrays;
  arrays.grad_bound = static_cast<T>(args.grad_bound);
  for (int k = 0; k < kArrays; ++k) arrays.at[k] = static_cast<T*>(tensor_arrays[k]) + first;
  run_lanes<Lanes<Rule, kFlags, T>>(arrays, stop - first, coef,
                                    args.prefetch_bytes / static_cast<index_t>(sizeof(T)), sums);
}

// Elements [first, stop) of tensor t, with monitoring sums of them if `sums` is set.
template <class Rule, unsigned kFlags, class T>
void run_segment(const StepArgs& args, index_t t, index_t first, index_t stop,
                 MonitorSquares* sums) {
  const auto& coef = *static_cast<const typename Rule::template Coef<T>*>(args.coef);
  void* const* tensor_arrays = args.arrays + t * args.num_arrays;
  if constexpr (std::is_same_v<T, float>) {
    if (args.storage != nullptr) {
      for_each_stream_part(first, stop, [&](index_t at, index_t until) {
        if (args.storage->any_quantized) {
          run_quantized<Rule, kFlags>(args, t, at, until, args.offsets[t + 1] - args.offsets[t],
                                      coef, sums);
        } else {
          run_stored<Rule, kFlags>(args, t, tensor_arrays, at, until - at, coef, sums);
        }
      });
      return;
    }
  }
  run_flat_segment<Rule, kFlags, T>(args, t, first, stop, sums);
}

// Each tensor's part of elements [begin, end) of the virtual concatenation, as
// segment(t, first, stop): elements [first, stop) of tensor t (empty tensors skipped).
template <class Segment>
void for_each_segment(const StepArgs& args, index_t begin, index_t end, Segment&& segment) {
  for (index_t t = find_tensor(args.offsets, args.num_tensors, begin); begin < end; ++t) {
    const index_t stop = std::min(end, args.offsets[t + 1]) - args.offsets[t];
    const index_t first = begin - args.offsets[t];
    if (first < stop) segment(t, first, stop);
    begin = std::max(begin, args.offsets[t + 1]);
  }
}

// The same range, which starts at a chunk's start (the dispatcher's run_tensor_sums), chunk by
// chunk (kReduceChunk elements of one tensor): chunk(t, first, stop, sums) sums one into a
// ChunkSquares<kSums>, whose totals go to args.chunk_sums.
template <int kSums, class Chunk>
void for_each_chunk(const StepArgs& args, index_t begin, index_t end, Chunk&& chunk) {
  for_each_segment(args, begin, end, [&](index_t t, index_t first, index_t stop) {
    for (index_t at = first; at < stop; at += kReduceChunk) {
      ChunkSquares<kSums> sums;
      chunk(t, at, std::min(at + kReduceChunk, stop), sums);
      double* out = args.chunk_sums + (args.first_chunk[t] + at / kReduceChunk) * kSums;
      for (int s = 0; s < kSums; ++s) out[s] = sums.total(s);
    }
  });
}

template <class Rule, unsigned kFlags, class T>
void run_range(const StepArgs& args, index_t begin, index_t end) {
  if (args.chunk_sums == nullptr) {
    for_each_segment(args, begin, end, [&](index_t t, index_t first, index_t stop) {
      run_segment<Rule, kFlags, T>(args, t, first, stop, nullptr);
    });
  } else {  // monitoring
    for_each_chunk<kMonitorSums>(args, begin, end,
                                 [&](index_t t, index_t first, index_t stop, MonitorSquares& sums) {
                                   run_segment<Rule, kFlags, T>(args, t, first, stop, &sums);
                                 });
  }
}

// run_range for arrays all of type T (no narrow storage) and no monitoring: the benchmark's
// StreamWithInput, which needs no more.
template <class Rule, unsigned kFlags, class T>
void run_flat_range(const StepArgs& args, index_t begin, index_t end) {
  for_each_segment(args, begin, end, [&](index_t t, index_t first, index_t stop) {
    run_flat_segment<Rule, kFlags, T>(args, t, first, stop, nullptr);
  });
}

}  // namespace gdfast::cpu::GDFAST_ISA_NAMESPACE
