// CUDA runtime errors become C++ exceptions (and so Python exceptions), never aborts.
#pragma once

#include <cuda_runtime.h>

#include <stdexcept>
#include <string>

#define GDFAST_CUDA_CHECK(expr)                                                      \
  do {                                                                               \
    const cudaError_t gdfast_error_ = (expr);                                        \
    if (gdfast_error_ != cudaSuccess) {                                              \
      throw std::runtime_error(std::string("gdfast CUDA error in ") + #expr + ": " + \
                               cudaGetErrorString(gdfast_error_));                   \
    }                                                                                \
  } while (0)

namespace gdfast::cuda {

// Makes `device` current for a scope and restores the caller's device after it.
class DeviceGuard {
 public:
  explicit DeviceGuard(int device) {
    GDFAST_CUDA_CHECK(cudaGetDevice(&previous_));
    if (device != previous_) GDFAST_CUDA_CHECK(cudaSetDevice(device));
  }
  ~DeviceGuard() { cudaSetDevice(previous_); }
  DeviceGuard(const DeviceGuard&) = delete;
  DeviceGuard& operator=(const DeviceGuard&) = delete;

 private:
  int previous_ = 0;
};

}  // namespace gdfast::cuda
