#include "cpu/parallel.h"

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <cstdlib>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#if defined(__linux__)
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

// Spin this many relax instructions (tens of microseconds) before parking: back-to-back
// calls (one per param group) then skip the futex wake-up, and an idle pool costs nothing.
constexpr int kSpinIterations = 1 << 14;

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
    for (int i = 1; i < threads; ++i) workers_.emplace_back([this, i] { work(i); });
  }
  ~Pool() {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      stop_ = true;
      generation_.fetch_add(1, std::memory_order_release);
    }
    wake_.notify_all();
    for (auto& w : workers_) w.join();
  }
  Pool(const Pool&) = delete;
  Pool& operator=(const Pool&) = delete;

  int threads() const { return static_cast<int>(workers_.size()) + 1; }

  // Caller holds the region lock.
  void run(int parts, void (*fn)(void*, int), void* ctx) {
    fn_ = fn;
    ctx_ = ctx;
    parts_ = parts;
    pending_.store(static_cast<int>(workers_.size()), std::memory_order_relaxed);
    {
      std::lock_guard<std::mutex> lock(mutex_);
      generation_.fetch_add(1, std::memory_order_release);
    }
    wake_.notify_all();
    fn(ctx, 0);
    for (int i = 0; i < kSpinIterations && pending_.load(std::memory_order_acquire) != 0; ++i) {
      GDFAST_CPU_RELAX();
    }
    if (pending_.load(std::memory_order_acquire) != 0) {
      std::unique_lock<std::mutex> lock(mutex_);
      done_.wait(lock, [this] { return pending_.load(std::memory_order_acquire) == 0; });
    }
  }

 private:
  void work(int index) {
    std::uint64_t seen = 0;
    for (;;) {
      for (int i = 0; i < kSpinIterations && generation_.load(std::memory_order_acquire) == seen;
           ++i) {
        GDFAST_CPU_RELAX();
      }
      if (generation_.load(std::memory_order_acquire) == seen) {
        std::unique_lock<std::mutex> lock(mutex_);
        wake_.wait(lock, [&] { return generation_.load(std::memory_order_acquire) != seen; });
      }
      seen = generation_.load(std::memory_order_acquire);
      if (stop_) return;
      if (index < parts_) fn_(ctx_, index);
      if (pending_.fetch_sub(1, std::memory_order_acq_rel) == 1) {
        std::lock_guard<std::mutex> lock(mutex_);
        done_.notify_one();
      }
    }
  }

  std::vector<std::thread> workers_;
  std::mutex mutex_;
  std::condition_variable wake_, done_;
  std::atomic<std::uint64_t> generation_{0};
  std::atomic<int> pending_{0};
  bool stop_ = false;
  void (*fn_)(void*, int) = nullptr;
  void* ctx_ = nullptr;
  int parts_ = 0;
};

std::mutex g_region_mutex;  // one parallel region at a time; guards g_pool and g_threads
Pool* g_pool = nullptr;     // created on first parallel use
int g_threads = 0;          // 0: not yet read from the environment

int threads_locked() {
  if (g_threads == 0) g_threads = default_num_threads();
  return g_threads;
}

#if defined(__unix__) || defined(__APPLE__)
// A forked child has none of the parent's threads: forget (leak) the pool, start anew.
void forget_pool_in_child() {
  new (&g_region_mutex) std::mutex();
  g_pool = nullptr;
}
const int g_atfork_registered = pthread_atfork(nullptr, nullptr, forget_pool_in_child);
#endif

}  // namespace

int get_num_threads() {
  std::lock_guard<std::mutex> lock(g_region_mutex);
  return threads_locked();
}

void set_num_threads(int n) {
  std::lock_guard<std::mutex> lock(g_region_mutex);
  if (n == g_threads) return;
  delete g_pool;
  g_pool = nullptr;
  g_threads = n;
}

void parallel_run(int parts, void (*fn)(void* ctx, int part), void* ctx) {
  if (parts > 1) {
    std::unique_lock<std::mutex> lock(g_region_mutex, std::try_to_lock);
    if (lock.owns_lock()) {
      if (g_pool == nullptr) g_pool = new Pool(threads_locked());
      if (parts <= g_pool->threads()) {
        g_pool->run(parts, fn, ctx);
        return;
      }
    }
  }
  for (int part = 0; part < parts; ++part) fn(ctx, part);
}

}  // namespace gdfast::cpu
