// Stress test of the thread pool (csrc/cpu/parallel.cpp), built by tests/test_pool_native.py
// with ThreadSanitizer: every part of every region runs exactly once, whatever the part count,
// wake policy, thread count (oversubscribed too) and pauses that let workers park, also with
// several threads starting regions at once. Exits non-zero on a miscount.
#include <atomic>
#include <chrono>
#include <cstdio>
#include <random>
#include <thread>
#include <vector>

#include "cpu/parallel.h"

namespace {

constexpr int kMaxParts = 16;

struct Region {
  std::atomic<int> runs[kMaxParts];
  int work;
};

void run_part(void* ctx, int part) {
  auto* region = static_cast<Region*>(ctx);
  region->runs[part].fetch_add(1, std::memory_order_relaxed);
  volatile double sink = 0;
  for (int i = 0; i < region->work; ++i) sink = sink + i;
}

long miscounts(const Region& region, int parts) {
  long bad = 0;
  for (int p = 0; p < kMaxParts; ++p) bad += region.runs[p].load() != (p < parts ? 1 : 0);
  return bad;
}

}  // namespace

int main() {
  std::mt19937 rng(1);
  long bad = 0;
  for (int threads : {2, 3, 5}) {
    gdfast::cpu::set_num_threads(threads);
    for (int r = 0; r < 20000; ++r) {
      Region region{{}, static_cast<int>(rng() % 2000)};
      const int parts = 1 + static_cast<int>(rng() % static_cast<unsigned>(threads));
      gdfast::cpu::parallel_run(parts, run_part, &region, rng() % 2 == 0);
      bad += miscounts(region, parts);
      if (rng() % 500 == 0) std::this_thread::sleep_for(std::chrono::microseconds(200));
    }
  }
  std::atomic<long> concurrent_bad{0};
  std::vector<std::thread> callers;
  for (int t = 0; t < 3; ++t) {
    callers.emplace_back([&concurrent_bad] {
      for (int r = 0; r < 3000; ++r) {
        Region region{{}, 100};
        gdfast::cpu::parallel_run(3, run_part, &region, r % 3 == 0);
        concurrent_bad += miscounts(region, 3);
      }
    });
  }
  for (auto& t : callers) t.join();
  std::printf("miscounted parts: %ld sequential, %ld concurrent\n", bad, concurrent_bad.load());
  return bad == 0 && concurrent_bad == 0 ? 0 : 1;
}
