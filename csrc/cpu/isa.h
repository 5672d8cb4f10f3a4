// Which instruction-set levels this build has and which the running CPU (and OS) support.
#pragma once

#include <string>
#include <vector>

namespace gdfast::cpu {

// Levels compiled into this build, lowest first ("scalar", "baseline", "avx2", ...).
const std::vector<std::string>& compiled_isas();
// Compiled levels the running CPU and OS can execute, lowest first.
const std::vector<std::string>& supported_isas();
// True if the CPU lacks what the platform baseline build needs (then importing must fail).
bool cpu_lacks_baseline();
// True on Intel x86 CPUs (whose hardware prefetchers fall behind the heavier rules' loops).
bool cpu_is_intel();

}  // namespace gdfast::cpu
