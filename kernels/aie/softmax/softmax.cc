// Row-wise softmax, bfloat16 in and out, on AIE2 (AIE-ML): kernels/NUMERICS.md section 4,
// computed by kernels/src/softmax.rs on the CPU to the bit.
//
// For one row x[0 .. cols]:
//   m    = max of the row (the inputs are bfloat16 values already: the host rounds them);
//   e[i] = b(exp(x[i] - m)), stored in the output row;
//   s    = the 16-lane sum of the e[i] (lane j adds e[j], e[j + 16], ...; the lanes combined
//          by halving);
//   r    = 1 / s, one float32 division on the scalar unit; rh = b(r), rl = b(r - rh);
//   y[i] = b(e[i] * rl + e[i] * rh), written over e[i].
// A row holding a NaN or +inf, or only -inf, is a row of the canonical NaN (0x7fc0); -inf
// elements of other rows give 0.
//
// The host sends exactly rows x cols bfloat16 values, rows back to back, with no padding of
// a row: Whisper's rows are 1500 = 93 x 16 + 12 long. The last partial vector of a row is
// copied into a 16-lane buffer whose missing lanes hold -inf (so they take no part in the
// maximum, and their exponentials, forced to 0, add nothing to the lane sums), and only the
// row's own elements are written back. Rows are not 32-byte aligned in general (1500 x 2
// bytes), so rows are read and written with unaligned vector accesses.
//
// Structure after mlir-aie's aie_kernels/aie2/softmax.cc (one call per block of data,
// exponentials stored then scaled in a second pass); the arithmetic is the contract's.

#include <aie_api/aie.hpp>
#include <stdint.h>

#include "vmath.h"

namespace {

using namespace amanuensis;
using vh = aie::vector<int16, LANES>;

inline vbf load_row(const bfloat16 *p) { return aie::load_unaligned_v<LANES>(p); }
inline void store_row(bfloat16 *row, int32_t i, int32_t full, vbf v) {
  store_span_vector(row + i * LANES, v, i, full);
}

// The last `count` (< 16) elements of a row, padded with -inf.
inline vbf load_tail(const bfloat16 *p, int32_t count) {
  alignas(32) bfloat16 lanes[LANES];
  for (int32_t l = 0; l < static_cast<int32_t>(LANES); ++l)
    lanes[l] = l < count ? p[l] : bf16_of_bits(NEGATIVE_INFINITY_BF16);
  return aie::load_v<LANES>(lanes);
}


// Integer key of bfloat16 bits that orders them as numbers (see order_key in vmath.h).
inline vh order_key16(vh b) {
  return aie::bit_xor(b, aie::bit_and(aie::downshift(b, 15),
                                      aie::broadcast<int16, LANES>(0x7fff)));
}

// Running state of the first pass: the largest key and the largest magnitude bits.
struct Scan {
  vh key;
  vh magnitude;
};

inline void scan(Scan &s, vbf x) {
  const vh b = x.cast_to<int16>();
  s.key = aie::max(s.key, order_key16(b));
  s.magnitude = aie::max(s.magnitude, aie::bit_and(b, aie::broadcast<int16, LANES>(0x7fff)));
}

// e = b(exp(x - m)) of 16 elements, with -inf elements (row masking and tail padding) at 0.
inline vf exponentials(vbf x, vf m) {
  const vf e = rb(exp16(fsub(widen(x), m)));
  const vmask minus_inf =
      aie::eq(x.cast_to<int16>(),
              aie::broadcast<int16, LANES>(static_cast<int16>(NEGATIVE_INFINITY_BF16)));
  // Lane i of the mask is element i, whatever the element width.
  return floats(aie::select(bits(e), splat_i(0), minus_inf));
}

// y = b(e * rl + e * rh) of 16 elements.
inline vbf normalised(vbf e, vbf rh, vbf rl) {
  vacc y = aie::mul(e, rh);
  y = aie::mac(y, e, rl);
  return narrow_exact(rb(value(y)));
}

} // namespace

extern "C" {

// Softmax of one row of `cols` values (cols >= 1), `in` to `out`.
void softmax_row_bf16(const bfloat16 *__restrict in, bfloat16 *__restrict out, int32_t cols) {
  set_shift_modes();
  const int32_t full = cols / static_cast<int32_t>(LANES);
  const int32_t tail = cols % static_cast<int32_t>(LANES);

  // Pass 1: the maximum, and whether the row holds a NaN or an infinity.
  Scan s{aie::broadcast<int16, LANES>(static_cast<int16>(0x807f)), // key of -inf
         aie::zeros<int16, LANES>()};
  for (int32_t i = 0; i < full; ++i)
    scan(s, load_row(in + i * LANES));
  if (tail)
    scan(s, load_tail(in + full * LANES, tail));
  const int16 max_key = aie::reduce_max(s.key);
  const int16 max_magnitude = aie::reduce_max(s.magnitude);
  const uint16_t m_bits =
      static_cast<uint16_t>(max_key < 0 ? (max_key ^ 0x7fff) : max_key);
  const bool any_nan = static_cast<uint16_t>(max_magnitude) > 0x7f80u;
  const bool m_infinite = (m_bits & 0x7fffu) == 0x7f80u; // +inf present, or only -inf
  if (any_nan || m_infinite) {
    const vbf nan = aie::broadcast<bfloat16, LANES>(bf16_of_bits(CANONICAL_NAN_BF16));
    for (int32_t i = 0; i < full; ++i)
      store_row(out, i, full, nan);
    if (tail)
      store_lanes(out + full * LANES, nan, tail);
    return;
  }
  const vf m = aie::broadcast<float, LANES>(float_of(static_cast<uint32_t>(m_bits) << 16));

  // Pass 2: e = b(exp(x - m)) into `out`, and the 16 lane sums of the e (from +0; the tail's
  // padding lanes add +0).
  vf sums = aie::zeros<float, LANES>();
  for (int32_t i = 0; i < full; ++i) {
    const vf e = exponentials(load_row(in + i * LANES), m);
    sums = fadd(sums, e);
    store_row(out, i, full, narrow_exact(e));
  }
  if (tail) {
    const vf e = exponentials(load_tail(in + full * LANES, tail), m);
    sums = fadd(sums, e);
    store_lanes(out + full * LANES, narrow_exact(e), tail);
  }

  // r = 1 / s, correctly rounded (software float32 division on the scalar unit), and its
  // two bfloat16 parts.
  const float r = 1.0f / tree_sum(sums);
  const float r_hi = round_scalar(r);
  const float r_lo = round_scalar(r - r_hi);
  const vbf rh = aie::broadcast<bfloat16, LANES>(bf16_exact(r_hi));
  const vbf rl = aie::broadcast<bfloat16, LANES>(bf16_exact(r_lo));

  // Pass 3: y = b(e * rl + e * rh).
  for (int32_t i = 0; i < full; ++i)
    store_row(out, i, full, normalised(load_row(out + i * LANES), rh, rl));
  if (tail)
    store_lanes(out + full * LANES, normalised(load_tail(out + full * LANES, tail), rh, rl),
               tail);
}

} // extern "C"
