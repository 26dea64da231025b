// A host-side model of the subset of the AIE API (aie_api/aie.hpp) that kernels/aie uses, so
// that the kernels' own source compiles with a host C++ compiler and its logic can be held
// against the Rust emulator. It is NOT the AIE API: it models the semantics NUMERICS.md
// assumes of the hardware (lane-wise IEEE float32 additions rounded to nearest even, exact
// bfloat16 products, gradual underflow, wrapping integer lanes, and an mmul that adds its
// products one at a time in increasing k). Whether the device behaves so is exactly what the
// device-versus-emulator test has to establish; whether the real API accepts these calls is
// what compiling with Peano establishes. Only hostcheck/run.sh puts this directory on an
// include path.
#pragma once

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <type_traits>
#include <utility>

struct bfloat16 {
  uint16_t bits;
  bfloat16() = default;
  bfloat16(float f) {
    uint32_t b;
    std::memcpy(&b, &f, 4);
    bits = static_cast<uint16_t>((b + 0x7fffu + ((b >> 16) & 1u)) >> 16);
  }
  operator float() const {
    const uint32_t b = static_cast<uint32_t>(bits) << 16;
    float f;
    std::memcpy(&f, &b, 4);
    return f;
  }
};
using int16 = int16_t;
using int32 = int32_t;
struct accfloat {};

namespace aie {

template <typename T, unsigned N> struct vector {
  T v[N];
  T operator[](unsigned i) const { return v[i]; }
  template <typename U> vector<U, N * sizeof(T) / sizeof(U)> cast_to() const {
    vector<U, N * sizeof(T) / sizeof(U)> r;
    std::memcpy(r.v, v, sizeof(v));
    return r;
  }
};

template <typename Tag, unsigned N> struct accum {
  float a[N];
  template <typename U> void from_vector(const vector<U, N> &x) {
    static_assert(std::is_same_v<U, float>);
    for (unsigned i = 0; i < N; ++i)
      a[i] = x.v[i];
  }
  template <typename U> vector<U, N> to_vector() const {
    static_assert(std::is_same_v<U, float>);
    vector<float, N> r;
    for (unsigned i = 0; i < N; ++i)
      r.v[i] = a[i];
    return r;
  }
};

template <unsigned N> struct mask {
  bool m[N];
};

template <typename T, unsigned N> auto zeros() {
  if constexpr (std::is_same_v<T, accfloat>) {
    accum<accfloat, N> r;
    for (auto &x : r.a)
      x = 0.0f;
    return r;
  } else {
    vector<T, N> r;
    std::memset(r.v, 0, sizeof(r.v));
    return r;
  }
}

template <typename T, unsigned N> vector<T, N> broadcast(T x) {
  vector<T, N> r;
  for (auto &e : r.v)
    e = x;
  return r;
}

template <typename T, unsigned N>
std::pair<vector<T, N>, vector<T, N>> interleave_zip(const vector<T, N> &a, const vector<T, N> &b,
                                                     unsigned step) {
  static_assert(N % 2 == 0);
  (void)step; // the kernels use step 1
  vector<T, N> lo, hi;
  for (unsigned i = 0; i < N / 2; ++i) {
    lo.v[2 * i] = a.v[i];
    lo.v[2 * i + 1] = b.v[i];
    hi.v[2 * i] = a.v[N / 2 + i];
    hi.v[2 * i + 1] = b.v[N / 2 + i];
  }
  return {lo, hi};
}

template <typename T, unsigned N>
vector<T, 2 * N> concat(const vector<T, N> &a, const vector<T, N> &b) {
  vector<T, 2 * N> r;
  for (unsigned i = 0; i < N; ++i) {
    r.v[i] = a.v[i];
    r.v[N + i] = b.v[i];
  }
  return r;
}

template <typename T, unsigned N> vector<T, N / 2> filter_odd(const vector<T, N> &a, unsigned step) {
  (void)step; // the kernels use step 1
  vector<T, N / 2> r;
  for (unsigned i = 0; i < N / 2; ++i)
    r.v[i] = a.v[2 * i + 1];
  return r;
}

// Integer lanes wrap; a float vector added to an accumulator is one float32 addition a lane.
template <typename T, unsigned N> vector<T, N> add(const vector<T, N> &a, const vector<T, N> &b) {
  static_assert(std::is_integral_v<T>);
  using U = std::make_unsigned_t<T>;
  vector<T, N> r;
  for (unsigned i = 0; i < N; ++i)
    r.v[i] = static_cast<T>(static_cast<U>(a.v[i]) + static_cast<U>(b.v[i]));
  return r;
}
template <typename T, unsigned N> vector<T, N> sub(const vector<T, N> &a, const vector<T, N> &b) {
  static_assert(std::is_integral_v<T>);
  using U = std::make_unsigned_t<T>;
  vector<T, N> r;
  for (unsigned i = 0; i < N; ++i)
    r.v[i] = static_cast<T>(static_cast<U>(a.v[i]) - static_cast<U>(b.v[i]));
  return r;
}
template <unsigned N>
accum<accfloat, N> add(const accum<accfloat, N> &a, const vector<float, N> &b) {
  accum<accfloat, N> r;
  for (unsigned i = 0; i < N; ++i)
    r.a[i] = a.a[i] + b.v[i];
  return r;
}
template <unsigned N>
accum<accfloat, N> sub(const accum<accfloat, N> &a, const vector<float, N> &b) {
  accum<accfloat, N> r;
  for (unsigned i = 0; i < N; ++i)
    r.a[i] = a.a[i] - b.v[i];
  return r;
}

template <typename T, unsigned N>
vector<T, N> bit_and(const vector<T, N> &a, const vector<T, N> &b) {
  vector<T, N> r;
  for (unsigned i = 0; i < N; ++i)
    r.v[i] = a.v[i] & b.v[i];
  return r;
}
template <typename T, unsigned N>
vector<T, N> bit_xor(const vector<T, N> &a, const vector<T, N> &b) {
  vector<T, N> r;
  for (unsigned i = 0; i < N; ++i)
    r.v[i] = a.v[i] ^ b.v[i];
  return r;
}
// The core's rounding and saturation modes: the model's shifts are the plain arithmetic and
// wrapping shifts that floor rounding and no saturation give, so the model only checks that
// a kernel sets those two before it shifts.
enum class rounding_mode { floor, ceil, positive_inf, negative_inf, symmetric_inf, symmetric_zero, conv_even, conv_odd };
enum class saturation_mode { none, truncate, saturate, symmetric };
inline bool shift_modes_set = false;
inline void require_shift_modes() {
  if (!shift_modes_set) {
    std::fputs("aie model: a shift before the kernel set floor rounding and no saturation\n",
               stderr);
    std::abort();
  }
}
inline void set_rounding(rounding_mode m) { shift_modes_set = m == rounding_mode::floor; }
inline void set_saturation(saturation_mode m) {
  shift_modes_set = shift_modes_set && m == saturation_mode::none;
}

template <typename T, unsigned N> vector<T, N> downshift(const vector<T, N> &a, unsigned s) {
  require_shift_modes();
  vector<T, N> r; // arithmetic on signed lanes
  for (unsigned i = 0; i < N; ++i)
    r.v[i] = static_cast<T>(a.v[i] >> s);
  return r;
}
template <typename T, unsigned N> vector<T, N> upshift(const vector<T, N> &a, unsigned s) {
  require_shift_modes();
  using U = std::make_unsigned_t<T>;
  vector<T, N> r;
  for (unsigned i = 0; i < N; ++i)
    r.v[i] = static_cast<T>(static_cast<U>(a.v[i]) << s);
  return r;
}

#define AMANUENSIS_MODEL_COMPARE(name, op)                                                   \
  template <typename T, unsigned N> mask<N> name(const vector<T, N> &a, const vector<T, N> &b) { \
    static_assert(std::is_integral_v<T>);                                                     \
    mask<N> r;                                                                                \
    for (unsigned i = 0; i < N; ++i)                                                          \
      r.m[i] = a.v[i] op b.v[i];                                                              \
    return r;                                                                                 \
  }
AMANUENSIS_MODEL_COMPARE(lt, <)
AMANUENSIS_MODEL_COMPARE(gt, >)
AMANUENSIS_MODEL_COMPARE(le, <=)
AMANUENSIS_MODEL_COMPARE(ge, >=)
AMANUENSIS_MODEL_COMPARE(eq, ==)
#undef AMANUENSIS_MODEL_COMPARE

// Lanes of b where the mask is set, of a elsewhere.
template <typename T, unsigned N>
vector<T, N> select(const vector<T, N> &a, const vector<T, N> &b, const mask<N> &m) {
  vector<T, N> r;
  for (unsigned i = 0; i < N; ++i)
    r.v[i] = m.m[i] ? b.v[i] : a.v[i];
  return r;
}

template <typename T, unsigned N> vector<T, N> max(const vector<T, N> &a, const vector<T, N> &b) {
  static_assert(std::is_integral_v<T>);
  vector<T, N> r;
  for (unsigned i = 0; i < N; ++i)
    r.v[i] = a.v[i] > b.v[i] ? a.v[i] : b.v[i];
  return r;
}
template <typename T, unsigned N> T reduce_max(const vector<T, N> &a) {
  static_assert(std::is_integral_v<T>);
  T m = a.v[0];
  for (unsigned i = 1; i < N; ++i)
    m = a.v[i] > m ? a.v[i] : m;
  return m;
}

// Products of bfloat16 lanes are exact in float32; a multiply-add rounds once.
template <unsigned N>
accum<accfloat, N> mul(const vector<bfloat16, N> &a, const vector<bfloat16, N> &b) {
  accum<accfloat, N> r;
  for (unsigned i = 0; i < N; ++i)
    r.a[i] = static_cast<float>(a.v[i]) * static_cast<float>(b.v[i]);
  return r;
}
template <unsigned N>
accum<accfloat, N> mac(const accum<accfloat, N> &c, const vector<bfloat16, N> &a,
                       const vector<bfloat16, N> &b) {
  accum<accfloat, N> r;
  for (unsigned i = 0; i < N; ++i)
    r.a[i] = c.a[i] + static_cast<float>(a.v[i]) * static_cast<float>(b.v[i]);
  return r;
}
template <unsigned N>
accum<accfloat, N> msc(const accum<accfloat, N> &c, const vector<bfloat16, N> &a,
                       const vector<bfloat16, N> &b) {
  accum<accfloat, N> r;
  for (unsigned i = 0; i < N; ++i)
    r.a[i] = c.a[i] - static_cast<float>(a.v[i]) * static_cast<float>(b.v[i]);
  return r;
}

// R x S times S x T, row-major blocks; each output adds its S products one at a time.
template <unsigned R, unsigned S, unsigned T, typename TA, typename TB, typename Tag> struct mmul {
  static constexpr unsigned size_A = R * S, size_B = S * T, size_C = R * T;
  accum<accfloat, size_C> c;
  explicit mmul(const accum<accfloat, size_C> &init) : c(init) {}
  void mac(const vector<TA, size_A> &a, const vector<TB, size_B> &b) {
    for (unsigned i = 0; i < R; ++i)
      for (unsigned j = 0; j < T; ++j)
        for (unsigned p = 0; p < S; ++p)
          c.a[i * T + j] = c.a[i * T + j] +
                           static_cast<float>(a.v[i * S + p]) * static_cast<float>(b.v[p * T + j]);
  }
  accum<accfloat, size_C> to_accum() const { return c; }
};

template <unsigned N, typename T> vector<std::remove_cv_t<T>, N> load_v(const T *p) {
  vector<std::remove_cv_t<T>, N> r;
  std::memcpy(r.v, p, sizeof(r.v));
  return r;
}
template <unsigned N, typename T> vector<std::remove_cv_t<T>, N> load_unaligned_v(const T *p) {
  return load_v<N>(p);
}
template <typename T, unsigned N> T *store_v(T *p, const vector<T, N> &v) {
  std::memcpy(p, v.v, sizeof(v.v));
  return p;
}
template <typename T, unsigned N> T *store_unaligned_v(T *p, const vector<T, N> &v) {
  return store_v(p, v);
}

} // namespace aie
