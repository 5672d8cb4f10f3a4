#include "cpu/parallel.h"

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <exception>
#include <mutex>
#include <new>
#include <string>
#include <thread>
#include <vector>

#if defined(__linux__)
#include <dlfcn.h>
#include <link.h>
#include <pthread.h>
#include <sched.h>
#elif defined(__unix__) || defined(__APPLE__)
#include <pthread.h>
#endif

#if defined(__x86_64__) || defined(_M_X64)
#include <immintrin.h>
#define GDFAST_CPU_RELAX() _mm_pause()
#elif defined(__aarch64__)
#define GDFAST_CPU_RELAX() __asm__ __volatile__("yield")
#else
#define GDFAST_CPU_RELAX() ((void)0)
#endif

namespace gdfast::cpu {
namespace {

// Spin this long before parking: back-to-back calls (one per param group) then skip the
// futex wake-up, while an idle pool costs nothing.
constexpr auto kSpin = std::chrono::microseconds(50);
using Clock = std::chrono::steady_clock;

// Spins until done() or kSpin has passed; returns done().
template <class Done>
bool spin_until(Done done) {
  const auto deadline = std::chrono::steady_clock::now() + kSpin;
  for (;;) {
    for (int i = 0; i < 64; ++i) {
      if (done()) return true;
      GDFAST_CPU_RELAX();
    }
    if (std::chrono::steady_clock::now() > deadline) return done();
  }
}

int default_num_threads() {
  if (const char* env = std::getenv("GDFAST_NUM_THREADS")) {
    const int n = std::atoi(env);
    if (n >= 1) return n;
  }
#if defined(__linux__)
  cpu_set_t set;
  if (sched_getaffinity(0, sizeof(set), &set) == 0) {
    const int n = CPU_COUNT(&set);
    if (n >= 1) return n;
  }
#endif
  const unsigned n = std::thread::hardware_concurrency();
  return n >= 1 ? static_cast<int>(n) : 1;
}

class Pool {
 public:
  explicit Pool(int threads) {
    try {
      for (int i = 1; i < threads; ++i) workers_.emplace_back([this] { work(); });
    } catch (...) {
      stop_and_join();  // a thread that cannot start: no pool (destroying joinable threads aborts)
      throw;
    }
  }
  ~Pool() { stop_and_join(); }
  Pool(const Pool&) = delete;
  Pool& operator=(const Pool&) = delete;

  int threads() const { return static_cast<int>(workers_.size()) + 1; }
  bool all_parked() const {
    return parked_.load(std::memory_order_relaxed) == static_cast<int>(workers_.size());
  }

 private:
  void stop_and_join() {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      stop_.store(true, std::memory_order_relaxed);  // (published by the generation's release)
      generation_.fetch_add(1, std::memory_order_release);
    }
    wake_.notify_all();
    for (auto& w : workers_) w.join();
  }

 public:
  // Caller holds the region lock. Parts are claimed, not assigned: the caller runs part 0,
  // then claims whatever no worker has claimed yet, so a parked or descheduled worker costs a
  // step nothing but its share of the work (the caller never waits for a wake-up). The caller
  // waits only for parts a worker has claimed.
  void run(int parts, void (*fn)(void*, int), void* ctx, bool wake_parked) {
    fn_ = fn;
    ctx_ = ctx;
    finished_.store(0, std::memory_order_relaxed);
    const std::uint64_t generation = generation_.load(std::memory_order_relaxed) + 1;
    claims_.store(pack(generation, parts, 1), std::memory_order_release);  // part 0: ours
    {
      std::lock_guard<std::mutex> lock(mutex_);
      generation_.store(generation, std::memory_order_release);
    }
    if (wake_parked) wake_.notify_all();
    fn(ctx, 0);
    int ran = 1;
    for (int part, n; (part = claim(generation, n)) >= 0; ++ran) fn(ctx, part);
    const auto all_finished = [&] { return finished_.load(std::memory_order_acquire) == parts; };
    if (finished_.fetch_add(ran, std::memory_order_acq_rel) + ran == parts) return;
    if (!spin_until(all_finished)) {
      std::unique_lock<std::mutex> lock(mutex_);
      done_.wait(lock, all_finished);
    }
  }

 private:
  // claims_ = generation (high 32 bits, wrapping) | parts (16) | next unclaimed part (16):
  // one word, so that a worker waking late can never claim a part of another region.
  static std::uint64_t pack(std::uint64_t generation, int parts, int next) {
    return (generation << 32) | (static_cast<std::uint64_t>(parts) << 16) |
           static_cast<std::uint64_t>(next);
  }

  // The next part of region `generation` for this thread, or -1 if none is left; sets
  // `parts` to the region's part count.
  int claim(std::uint64_t generation, int& parts) {
    std::uint64_t word = claims_.load(std::memory_order_acquire);
    for (;;) {
      parts = static_cast<int>((word >> 16) & 0xffff);
      const int next = static_cast<int>(word & 0xffff);
      if ((word >> 32) != (generation & 0xffffffffu) || next >= parts) return -1;
      if (claims_.compare_exchange_weak(word, word + 1, std::memory_order_acq_rel,
                                        std::memory_order_acquire)) {
        return next;
      }
    }
  }

  void work() {
    std::uint64_t seen = 0;
    for (;;) {
      if (!spin_until([&] { return generation_.load(std::memory_order_acquire) != seen; })) {
        std::unique_lock<std::mutex> lock(mutex_);
        parked_.fetch_add(1, std::memory_order_relaxed);
        wake_.wait(lock, [&] { return generation_.load(std::memory_order_acquire) != seen; });
        parked_.fetch_sub(1, std::memory_order_relaxed);
      }
      seen = generation_.load(std::memory_order_acquire);
      if (stop_.load(std::memory_order_relaxed)) return;
      // fn_ and ctx_ are the claimed region's: the next region cannot start (and rewrite
      // them) before this part is counted finished.
      for (int part, parts; (part = claim(seen, parts)) >= 0;) {
        fn_(ctx_, part);
        if (finished_.fetch_add(1, std::memory_order_acq_rel) + 1 == parts) {
          std::lock_guard<std::mutex> lock(mutex_);
          done_.notify_one();
        }
      }
    }
  }

  std::vector<std::thread> workers_;
  std::mutex mutex_;
  std::condition_variable wake_, done_;
  std::atomic<std::uint64_t> generation_{0};
  std::atomic<std::uint64_t> claims_{0};
  std::atomic<int> finished_{0};
  std::atomic<int> parked_{0};  // workers blocked on wake_ (a hint: only speed depends on it)
  // Atomic: a worker that claimed no part of the last region read it with nothing ordering
  // that read before the write (ThreadSanitizer reported the race).
  std::atomic<bool> stop_{false};
  void (*fn_)(void*, int) = nullptr;
  void* ctx_ = nullptr;
};

// Every region runs on an OpenMP runtime already loaded (torch's libgomp), if there is one:
// its threads spin for a while after its own regions (backward), so they take a part at once,
// where gdfast's workers would compete with them for the cores. Measured on 2 vCPUs
// (examples/torch_digits.py, the step timed in a training loop, against torch fused): small
// steps 208-220 us on the calling thread alone, 167-177 us on torch's threads; with 1.1M and
// 4.3M params, 0.72x and 0.63x torch fused's speed on gdfast's own workers, 1.12x and 1.03x on
// torch's threads. Out of a loop both run a large step as fast (GPT-2 small, 124M params).
// GDFAST_OPENMP=0 turns it off; a forked child never uses it (libgomp is not fork-safe).
using GompParallel = void (*)(void (*)(void*), void*, unsigned, unsigned);
GompParallel g_gomp_parallel = nullptr;  // guarded by g_region_mutex
bool g_openmp_forked = false;            // (set in a forked child)

#if defined(__linux__)
// How many objects the dynamic loader has loaded so far (9 ns to read, where a dlopen that
// finds nothing takes about 8 us: the lookup below is repeated only after a new load).
unsigned long long loaded_objects() {
  unsigned long long adds = 0;
  dl_iterate_phdr(
      [](dl_phdr_info* info, std::size_t, void* out) {
        *static_cast<unsigned long long*>(out) = info->dlpi_adds;
        return 1;  // (the first object carries the count)
      },
      &adds);
  return adds;
}
#endif

GompParallel loaded_openmp() {
#if defined(__linux__)
  static const bool allowed = [] {
    const char* env = std::getenv("GDFAST_OPENMP");
    return env == nullptr || std::string(env) != "0";
  }();
  static unsigned long long looked_at = 0;  // loaded_objects() at the last lookup
  if (g_gomp_parallel == nullptr && allowed && !g_openmp_forked && loaded_objects() != looked_at) {
    looked_at = loaded_objects();
    if (void* lib = dlopen("libgomp.so.1", RTLD_LAZY | RTLD_NOLOAD)) {  // loaded already?
      g_gomp_parallel = reinterpret_cast<GompParallel>(dlsym(lib, "GOMP_parallel"));
      dlclose(lib);  // (NOLOAD took a reference: the loader keeps the library)
    }
  }
  return g_openmp_forked ? nullptr : g_gomp_parallel;
#else
  return nullptr;
#endif
}

struct OpenMpJob {
  void (*fn)(void*, int);
  void* ctx;
  int parts;
  std::atomic<int> next{0};
};

// Every thread of the team claims parts until none is left, so a smaller team than asked
// for (a nested region, a thread limit) still runs them all.
void run_openmp_parts(void* data) {
  auto& job = *static_cast<OpenMpJob*>(data);
  for (int part; (part = job.next.fetch_add(1, std::memory_order_relaxed)) < job.parts;) {
    job.fn(job.ctx, part);
  }
}

bool run_on_loaded_openmp(int parts, void (*fn)(void*, int), void* ctx) {
  const GompParallel parallel = loaded_openmp();
  if (parallel == nullptr) return false;
  OpenMpJob job{fn, ctx, parts};
  parallel(run_openmp_parts, &job, static_cast<unsigned>(parts), 0);
  return true;
}

std::mutex g_region_mutex;            // one parallel region at a time; guards g_pool
Pool* g_pool = nullptr;               // created on first parallel use
std::atomic<int> g_threads{0};        // 0: not yet read from the environment
Clock::time_point g_last_region_end;  // guarded by g_region_mutex

// Lock-free, so that a caller never waits for another thread's region just to learn this.
int num_threads() {
  int n = g_threads.load(std::memory_order_relaxed);
  if (n == 0) {
    int expected = 0;
    n = default_num_threads();
    if (!g_threads.compare_exchange_strong(expected, n)) n = expected;
  }
  return n;
}

#if defined(__unix__) || defined(__APPLE__)
// A forked child has none of the parent's threads: forget (leak) the pool, start anew.
void forget_pool_in_child() {
  new (&g_region_mutex) std::mutex();
  g_pool = nullptr;
  g_openmp_forked = true;
}
const int g_atfork_registered = pthread_atfork(nullptr, nullptr, forget_pool_in_child);
#endif

}  // namespace

int get_num_threads() { return num_threads(); }

std::string openmp_runtime() {
  std::lock_guard<std::mutex> lock(g_region_mutex);
#if defined(__linux__)
  Dl_info info;
  const GompParallel parallel = loaded_openmp();
  if (parallel != nullptr && dladdr(reinterpret_cast<void*>(parallel), &info) != 0 &&
      info.dli_fname != nullptr) {
    return info.dli_fname;
  }
#endif
  return "";
}

void set_num_threads(int n) {
  std::lock_guard<std::mutex> lock(g_region_mutex);
  if (n == num_threads()) return;
  delete g_pool;
  g_pool = nullptr;
  g_threads.store(n);
}

void parallel_run(int parts, void (*fn)(void* ctx, int part), void* ctx, bool wake_parked) {
  if (parts > 1) {
    std::unique_lock<std::mutex> lock(g_region_mutex, std::try_to_lock);
    if (lock.owns_lock()) {
      if (run_on_loaded_openmp(parts, fn, ctx)) return;
      if (g_pool == nullptr) {
        try {
          g_pool = new Pool(num_threads());
        } catch (const std::exception&) {
          g_pool = nullptr;  // the OS gave no threads: run on the calling thread alone
        }
      }
      // Regions in quick succession (a loop of steps): wake the workers once, after which they
      // spin between the calls and every later region finds them awake.
      const bool wake = wake_parked || Clock::now() - g_last_region_end < kSpin;
      if (g_pool != nullptr && parts <= g_pool->threads() && parts <= 0xffff &&
          (wake || !g_pool->all_parked())) {
        g_pool->run(parts, fn, ctx, wake);
      } else {
        for (int part = 0; part < parts; ++part) fn(ctx, part);
      }
      g_last_region_end = Clock::now();
      return;
    }
  }
  for (int part = 0; part < parts; ++part) fn(ctx, part);
}

}  // namespace gdfast::cpu
