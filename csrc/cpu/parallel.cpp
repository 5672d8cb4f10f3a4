#include "cpu/parallel.h"

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <exception>
#include <cstdlib>
#include <new>
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

// Spin this long before parking: back-to-back calls (one per param group) then skip the
// futex wake-up, while an idle pool costs nothing.
constexpr auto kSpin = std::chrono::microseconds(50);

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
      for (int i = 1; i < threads; ++i) workers_.emplace_back([this, i] { work(i); });
    } catch (...) {
      stop_and_join();  // a thread that cannot start: no pool (destroying joinable threads aborts)
      throw;
    }
  }
  ~Pool() { stop_and_join(); }
  Pool(const Pool&) = delete;
  Pool& operator=(const Pool&) = delete;

  int threads() const { return static_cast<int>(workers_.size()) + 1; }

 private:
  void stop_and_join() {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      stop_ = true;
      generation_.fetch_add(1, std::memory_order_release);
    }
    wake_.notify_all();
    for (auto& w : workers_) w.join();
  }

 public:
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
    if (!spin_until([this] { return pending_.load(std::memory_order_acquire) == 0; })) {
      std::unique_lock<std::mutex> lock(mutex_);
      done_.wait(lock, [this] { return pending_.load(std::memory_order_acquire) == 0; });
    }
  }

 private:
  void work(int index) {
    std::uint64_t seen = 0;
    for (;;) {
      if (!spin_until([&] { return generation_.load(std::memory_order_acquire) != seen; })) {
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

std::mutex g_region_mutex;       // one parallel region at a time; guards g_pool
Pool* g_pool = nullptr;          // created on first parallel use
std::atomic<int> g_threads{0};   // 0: not yet read from the environment

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
}
const int g_atfork_registered = pthread_atfork(nullptr, nullptr, forget_pool_in_child);
#endif

}  // namespace

int get_num_threads() { return num_threads(); }

void set_num_threads(int n) {
  std::lock_guard<std::mutex> lock(g_region_mutex);
  if (n == num_threads()) return;
  delete g_pool;
  g_pool = nullptr;
  g_threads.store(n);
}

void parallel_run(int parts, void (*fn)(void* ctx, int part), void* ctx) {
  if (parts > 1) {
    std::unique_lock<std::mutex> lock(g_region_mutex, std::try_to_lock);
    if (lock.owns_lock()) {
      if (g_pool == nullptr) {
        try {
          g_pool = new Pool(num_threads());
        } catch (const std::exception&) {
          g_pool = nullptr;  // the OS gave no threads: run on the calling thread alone
        }
      }
      if (g_pool != nullptr && parts <= g_pool->threads()) {
        g_pool->run(parts, fn, ctx);
        return;
      }
    }
  }
  for (int part = 0; part < parts; ++part) fn(ctx, part);
}

}  // namespace gdfast::cpu
