#include "cpu/isa.h"

#if defined(__x86_64__) || defined(_M_X64)
#define GDFAST_X86 1
#if defined(_MSC_VER)
#include <intrin.h>
#else
#include <cpuid.h>
#endif
#if defined(__APPLE__)
#include <sys/sysctl.h>
#endif
#endif

namespace gdfast::cpu {
namespace {

#if GDFAST_X86
struct CpuidRegs {
  unsigned eax = 0, ebx = 0, ecx = 0, edx = 0;
};

CpuidRegs cpuid(unsigned leaf, unsigned subleaf) {
  CpuidRegs r;
#if defined(_MSC_VER)
  int regs[4];
  __cpuidex(regs, static_cast<int>(leaf), static_cast<int>(subleaf));
  r = {static_cast<unsigned>(regs[0]), static_cast<unsigned>(regs[1]),
       static_cast<unsigned>(regs[2]), static_cast<unsigned>(regs[3])};
#else
  __cpuid_count(leaf, subleaf, r.eax, r.ebx, r.ecx, r.edx);
#endif
  return r;
}

unsigned long long xgetbv0() {
#if defined(_MSC_VER)
  return _xgetbv(0);
#else
  unsigned eax = 0, edx = 0;
  __asm__ volatile("xgetbv" : "=a"(eax), "=d"(edx) : "c"(0));
  return (static_cast<unsigned long long>(edx) << 32) | eax;
#endif
}

bool bit(unsigned reg, int b) { return ((reg >> b) & 1u) != 0; }

// macOS enables a thread's AVX-512 state on its first AVX-512 instruction (a trap), so XCR0
// lacks the AVX-512 bits until then; the kernel says whether it will do so in sysctl.
bool macos_enables_avx512_on_demand() {
#if defined(__APPLE__)
  int value = 0;
  size_t size = sizeof(value);
  return sysctlbyname("hw.optional.avx512f", &value, &size, nullptr, 0) == 0 && value == 1;
#else
  return false;
#endif
}

struct X86Features {
  bool sse2 = false, avx2_level = false, avx512_level = false;
};

// x86-64-v3 and -v4 as the psABI defines them, plus the OS saving the wider registers
// (XCR0), without which the instructions exist but fault.
X86Features detect_x86() {
  X86Features f;
  const unsigned max_leaf = cpuid(0, 0).eax;
  const CpuidRegs l1 = cpuid(1, 0);
  f.sse2 = bit(l1.edx, 26);
  if (max_leaf < 7 || !bit(l1.ecx, 27)) return f;  // no OSXSAVE: no AVX state at all
  const CpuidRegs l7 = cpuid(7, 0);
  const CpuidRegs e1 = cpuid(0x80000001u, 0);
  const unsigned long long xcr0 = xgetbv0();
  const bool os_avx = (xcr0 & 0x6) == 0x6;         // XMM and YMM state
  const bool os_avx512 = (xcr0 & 0xE6) == 0xE6 ||  // plus opmask, ZMM_Hi256, Hi16_ZMM
                         (os_avx && macos_enables_avx512_on_demand());
  const bool v3 = bit(l1.ecx, 12) /*fma*/ && bit(l1.ecx, 22) /*movbe*/ && bit(l1.ecx, 28) /*avx*/ &&
                  bit(l1.ecx, 29) /*f16c*/ && bit(l7.ebx, 3) /*bmi1*/ && bit(l7.ebx, 5) /*avx2*/ &&
                  bit(l7.ebx, 8) /*bmi2*/ && bit(e1.ecx, 5) /*lzcnt*/;
  f.avx2_level = v3 && os_avx;
  const bool v4 = bit(l7.ebx, 16) /*avx512f*/ && bit(l7.ebx, 17) /*dq*/ && bit(l7.ebx, 28) /*cd*/ &&
                  bit(l7.ebx, 30) /*bw*/ && bit(l7.ebx, 31) /*vl*/;
  f.avx512_level = f.avx2_level && v4 && os_avx512;
  return f;
}
#endif

bool cpu_supports(const std::string& isa) {
#if GDFAST_X86
  static const X86Features f = detect_x86();
  if (isa == "baseline") return f.sse2;
  if (isa == "avx2") return f.avx2_level;
  if (isa == "avx512") return f.avx512_level;
#endif
  // "scalar" runs everywhere; NEON is part of the aarch64 baseline.
  return isa == "scalar" || isa == "neon";
}

}  // namespace

const std::vector<std::string>& compiled_isas() {
  static const std::vector<std::string> names = {
#define GDFAST_ISA(name) #name,
#include "cpu/isa_list.def"
#undef GDFAST_ISA
  };
  return names;
}

const std::vector<std::string>& supported_isas() {
  static const std::vector<std::string> names = [] {
    std::vector<std::string> out;
    for (const auto& name : compiled_isas()) {
      if (cpu_supports(name)) out.push_back(name);
    }
    return out;
  }();
  return names;
}

bool cpu_is_intel() {
#if GDFAST_X86
  const CpuidRegs v = cpuid(0, 0);  // "GenuineIntel" in ebx, edx, ecx
  return v.ebx == 0x756e6547u && v.edx == 0x49656e69u && v.ecx == 0x6c65746eu;
#else
  return false;
#endif
}

bool cpu_lacks_baseline() {
#if GDFAST_X86
  return !cpu_supports("baseline");
#else
  return false;
#endif
}

}  // namespace gdfast::cpu
