#include "cpu/dispatch.h"

#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <stdexcept>
#include <vector>

#include "cpu/isa.h"
#include "cpu/parallel.h"

namespace gdfast::cpu {
namespace {

// Below this many elements per thread a wake-up costs more than the work it saves.
constexpr index_t kMinElementsPerThread = 1 << 14;
// Below this many elements a step does not wake parked workers (it still uses spinning
// ones): a futex wake-up on a VM takes tens of microseconds, Adam does ~3.5e9 elements/s.
constexpr index_t kMinElementsToWake = 1 << 18;
// Thread ranges start on multiples of this many elements (a cache line of doubles or more),
// so two threads rarely write the same line.
constexpr index_t kSplitGranule = 64;

const KernelTable* table_by_name(const std::string& name) {
#define GDFAST_ISA(isa) \
  if (name == #isa) return &kernel_table_##isa();
#include "cpu/isa_list.def"
#undef GDFAST_ISA
  return nullptr;
}

std::string join(const std::vector<std::string>& names) {
  std::string out;
  for (const auto& n : names) out += (out.empty() ? "" : ", ") + n;
  return out;
}

const KernelTable* checked_table(const std::string& name, const char* source) {
  const KernelTable* table = table_by_name(name);
  if (table == nullptr) {
    throw std::invalid_argument(std::string(source) + ": unknown ISA level '" + name +
                                "'; this build has: " + join(compiled_isas()));
  }
  for (const auto& s : supported_isas()) {
    if (s == name) return table;
  }
  throw std::invalid_argument(
      std::string(source) + ": ISA level '" + name +
      "' is not supported by this CPU; supported: " + join(supported_isas()));
}

const KernelTable* initial_table() {
  const char* env = std::getenv("GDFAST_ISA");
  if (env != nullptr && *env != '\0') return checked_table(env, "GDFAST_ISA");
  return table_by_name(supported_isas().back());
}

std::atomic<const KernelTable*> g_active{nullptr};

// Software prefetch: measured on a 2-vCPU Xeon (Emerald Rapids), 1e8 fp32 elements, the rules
// with a square root and a division (Adam, RMSprop, Adagrad, NAdam) reach 81-90% of the
// in-place bound without it; 2 KiB ahead was the best distance or tied for it for every rule
// measured (1e7 and 1e8, arrays at equal and at different page offsets), where 1 KiB made
// Adagrad 1.6x and LAMB 1.2x slower at 1e8 and 768 B AdamW 1.5x. On Zen 5 it gained nothing at
// 512 B and lost 15-25% at 2-8 KiB, so it is on for Intel only unless GDFAST_PREFETCH says
// otherwise.
constexpr index_t kIntelPrefetchBytes = 2048;
constexpr index_t kMaxPrefetchBytes = 65536;
std::atomic<index_t> g_prefetch_bytes{-1};  // -1: not chosen yet

index_t checked_prefetch(long long bytes, const char* source) {
  if (bytes < 0 || bytes > kMaxPrefetchBytes) {
    throw std::invalid_argument(std::string(source) + ": expected a byte count in [0, " +
                                std::to_string(kMaxPrefetchBytes) + "], got " +
                                std::to_string(bytes));
  }
  return static_cast<index_t>(bytes);
}

index_t initial_prefetch() {
  const char* env = std::getenv("GDFAST_PREFETCH");
  if (env == nullptr || *env == '\0') return cpu_is_intel() ? kIntelPrefetchBytes : 0;
  char* end = nullptr;
  const long long bytes = std::strtoll(env, &end, 10);
  if (*end != '\0') {
    throw std::invalid_argument(std::string("GDFAST_PREFETCH: expected a byte count, got '") + env +
                                "'");
  }
  return checked_prefetch(bytes, "GDFAST_PREFETCH");
}

struct RangeJob {
  StepFn fn;
  const StepArgs* args;
  index_t total;
  int parts;
  index_t repeats;
};

// [begin, end) of the job, `repeats` times (once, except for the benchmark's compute bound).
void run_job_range(const RangeJob& job, index_t begin, index_t end) {
  for (index_t r = 0; r < job.repeats; ++r) job.fn(*job.args, begin, end);
}

void run_part(void* ctx, int part) {
  const auto& job = *static_cast<const RangeJob*>(ctx);
  const auto bound = [&](int p) {
    if (p == job.parts) return job.total;
    return (job.total / job.parts * p) / kSplitGranule * kSplitGranule;
  };
  const index_t begin = bound(part), end = bound(part + 1);
  if (begin < end) run_job_range(job, begin, end);
}

void run_job(StepFn fn, const StepArgs& args, index_t repeats) {
  const index_t total = args.offsets[args.num_tensors];
  if (total == 0) return;
  // Repeats amortise the wake-up, so then any split into granules pays.
  const index_t useful = total / (repeats > 1 ? kSplitGranule : kMinElementsPerThread);
  const int threads = get_num_threads();
  RangeJob job{fn, &args, total, useful < threads ? static_cast<int>(useful) : threads, repeats};
  if (job.parts <= 1) {
    run_job_range(job, 0, total);
    return;
  }
  parallel_run(job.parts, run_part, &job, repeats > 1 || total >= kMinElementsToWake);
}

// Whole chunks (kReduceChunk elements of a tensor) to each thread, so that every chunk's sums
// are one loop's, in element order.
struct ChunkJob {
  StepFn fn;
  const StepArgs* args;
  index_t chunks;
  int parts;
};

// Where chunk c starts in the virtual concatenation (the end of it all for c == chunks).
index_t chunk_start(const StepArgs& args, index_t c) {
  const index_t* first = args.first_chunk;
  const index_t t = std::upper_bound(first, first + args.num_tensors, c) - first - 1;
  if (t < 0 || c >= first[args.num_tensors]) return args.offsets[args.num_tensors];
  return args.offsets[t] + (c - first[t]) * kReduceChunk;
}

void run_chunk_part(void* ctx, int part) {
  const auto& job = *static_cast<const ChunkJob*>(ctx);
  const index_t begin = chunk_start(*job.args, job.chunks * part / job.parts);
  const index_t end = chunk_start(*job.args, job.chunks * (part + 1) / job.parts);
  if (begin < end) job.fn(*job.args, begin, end);
}

// Monitoring: the step's sums over the call added to args.monitor.
void run_monitored(StepFn fn, const StepArgs& args) {
  const std::vector<double> sums = run_tensor_sums(fn, args, kMonitorSums);
  for (int s = 0; s < kMonitorSums; ++s) args.monitor[s] += tensors_total(sums, kMonitorSums, s);
}

}  // namespace

const KernelTable& active_kernels() {
  const KernelTable* table = g_active.load(std::memory_order_acquire);
  if (table == nullptr) {
    table = initial_table();
    g_active.store(table, std::memory_order_release);
  }
  return *table;
}

void set_active_isa(const std::string& name) {
  g_active.store(checked_table(name, "isa"), std::memory_order_release);
}

index_t prefetch_bytes() {
  index_t bytes = g_prefetch_bytes.load(std::memory_order_relaxed);
  if (bytes < 0) {
    bytes = initial_prefetch();
    g_prefetch_bytes.store(bytes, std::memory_order_relaxed);
  }
  return bytes;
}

void set_prefetch_bytes(index_t bytes) {
  g_prefetch_bytes.store(checked_prefetch(bytes, "bytes"), std::memory_order_relaxed);
}

std::vector<double> run_tensor_sums(StepFn fn, const StepArgs& args_in, int sums) {
  StepArgs args = args_in;
  const index_t n = args.num_tensors;
  std::vector<index_t> first_chunk(static_cast<std::size_t>(n) + 1, 0);
  for (index_t t = 0; t < n; ++t) {
    const index_t size = args.offsets[t + 1] - args.offsets[t];
    first_chunk[static_cast<std::size_t>(t) + 1] =
        first_chunk[static_cast<std::size_t>(t)] + (size + kReduceChunk - 1) / kReduceChunk;
  }
  const index_t chunks = first_chunk.back();
  std::vector<double> chunk_sums(static_cast<std::size_t>(chunks * sums));
  args.first_chunk = first_chunk.data();
  args.chunk_sums = chunk_sums.data();
  const index_t total = args.offsets[n];
  const index_t useful = std::min(total / kMinElementsPerThread, chunks);
  const int threads = get_num_threads();
  ChunkJob job{fn, &args, chunks, useful < threads ? static_cast<int>(useful) : threads};
  if (job.parts <= 1) {
    if (total > 0) fn(args, 0, total);
  } else {
    parallel_run(job.parts, run_chunk_part, &job, total >= kMinElementsToWake);
  }
  std::vector<double> out(static_cast<std::size_t>(n * sums), 0.0);
  for (index_t t = 0; t < n; ++t) {
    for (index_t c = first_chunk[static_cast<std::size_t>(t)];
         c < first_chunk[static_cast<std::size_t>(t) + 1]; ++c) {
      for (int s = 0; s < sums; ++s) {
        out[static_cast<std::size_t>(t * sums + s)] +=
            chunk_sums[static_cast<std::size_t>(c * sums + s)];
      }
    }
  }
  return out;
}

void run_parallel(StepFn fn, const StepArgs& args) {
  if (args.monitor != nullptr) {
    run_monitored(fn, args);
  } else {
    run_job(fn, args, 1);
  }
}

void run_parallel_repeated(StepFn fn, const StepArgs& args, index_t repeats) {
  run_job(fn, args, repeats);
}

}  // namespace gdfast::cpu
