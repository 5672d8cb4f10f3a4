// gdfast's own small thread pool: created on first use, threads parked between calls, one
// parallel region per optimizer call. Not OpenMP, so it never fights torch's runtime; where
// that runtime is already loaded, regions run on its threads instead (parallel_run).
#pragma once

#include <string>

namespace gdfast::cpu {

// Threads a step may use (the caller's thread included). Default: GDFAST_NUM_THREADS if set,
// else the CPUs in this process's affinity mask.
int get_num_threads();
// n >= 1. Waits for a region in flight to finish first.
void set_num_threads(int n);

// Runs fn(ctx, part) for part in [0, parts), part 0 on the calling thread; returns when all
// are done. parts <= get_num_threads(). If another thread is using the pool, runs every part
// on the calling thread instead (results are the same; only the speed differs). Parked
// workers are woken only if `wake_parked`: for small work a wake-up (tens of microseconds
// on a VM) costs more than it saves, but workers still spinning from a previous call help.
// Where an OpenMP runtime is already loaded in the process (torch's), every region runs on its
// threads instead, unless GDFAST_OPENMP=0: they may still be spinning from torch's work.
void parallel_run(int parts, void (*fn)(void* ctx, int part), void* ctx, bool wake_parked);

// The file of the OpenMP runtime regions run on now, or "" (none loaded, turned off, or a
// forked child).
std::string openmp_runtime();

}  // namespace gdfast::cpu
