// Argument and data checks of the kernels: each raises RuntimeError with its message.
//
// The message is built by plain string appends, never through an iostream. On the GPU machine
// (torch 2.11.0+cu130 wheel, image's g++, 2026-12-04) every TORCH_CHECK that failed crashed the
// process instead of raising: cuda-gdb put the segfault in the ostream integer formatting of
// its message (c10::str), compiled into our library; why it breaks there we did not establish.
// std::to_string and torch's own names for types and devices stay out of the streams.
#pragma once

#include <c10/core/Device.h>
#include <c10/core/ScalarType.h>
#include <c10/util/ArrayRef.h>

#include <cstdint>
#include <stdexcept>
#include <string>
#include <type_traits>

namespace dyco::check_detail {

inline void append(std::string& out, const char* text) { out += text; }
inline void append(std::string& out, const std::string& text) { out += text; }
inline void append(std::string& out, c10::ScalarType type) { out += c10::toString(type); }
inline void append(std::string& out, const c10::Device& device) { out += device.str(); }

template <typename Int, std::enable_if_t<std::is_integral_v<Int>, int> = 0>
void append(std::string& out, Int value) {
  out += std::to_string(value);
}

inline void append(std::string& out, c10::ArrayRef<int64_t> values) {
  out += "[";
  for (size_t i = 0; i < values.size(); ++i) out += (i ? ", " : "") + std::to_string(values[i]);
  out += "]";
}

template <typename... Parts>
std::string message(const Parts&... parts) {
  std::string out;
  (append(out, parts), ...);
  return out;
}

}  // namespace dyco::check_detail

#define DYCO_CHECK(condition, ...)                                                 \
  do {                                                                             \
    if (!(condition))                                                              \
      throw std::runtime_error(::dyco::check_detail::message(__VA_ARGS__));        \
  } while (0)
