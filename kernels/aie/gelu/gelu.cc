// Elementwise GELU, bfloat16 in and out, on AIE2 (AIE-ML): kernels/NUMERICS.md section 5 (the
// tanh form written as x / (1 + exp(-2u))), computed by kernels/src/gelu.rs on the CPU to the
// bit. The arithmetic is gelu16 of common/vmath.h, shared with the GEMM's bias_gelu epilogue.
//
// A call handles `count` elements of one object (count >= 1, any value): whole 16-lane
// vectors, then a last partial vector through a padded buffer. Objects are not assumed to
// be 32-byte aligned (gelu.py's tail object can have any even length), so the data is read
// and written with unaligned vector accesses.
//
// The call shape follows mlir-aie's aie_kernels/aie2/gelu.cc (input, output, size); the
// arithmetic is the contract's, not that kernel's lookup-table tanh.

#include <aie_api/aie.hpp>
#include <stdint.h>

#include "vmath.h"

namespace {

using namespace amanuensis;

inline vbf gelu_lanes(vbf x) { return narrow_exact(gelu16(widen(x))); }

inline void gelu_span(const bfloat16 *__restrict in, bfloat16 *__restrict out, int32_t count) {
  const int32_t full = count / static_cast<int32_t>(LANES);
  const int32_t tail = count % static_cast<int32_t>(LANES);
  set_shift_modes();
  for (int32_t i = 0; i < full; ++i)
    store_span_vector(out + i * LANES, gelu_lanes(aie::load_unaligned_v<LANES>(in + i * LANES)),
                      i, full);
  if (tail) {
    alignas(32) bfloat16 lanes[LANES];
    for (int32_t l = 0; l < static_cast<int32_t>(LANES); ++l)
      lanes[l] = l < tail ? in[full * LANES + l] : bf16_of_bits(0);
    aie::store_v(lanes, gelu_lanes(aie::load_v<LANES>(lanes)));
    for (int32_t l = 0; l < tail; ++l)
      out[full * LANES + l] = lanes[l];
  }
}

} // namespace

extern "C" {

// GELU of `count` elements of the bulk objects.
void gelu_bf16(const bfloat16 *__restrict in, bfloat16 *__restrict out, int32_t count) {
  gelu_span(in, out, count);
}

// The same for the design's tail object, whose type (length) differs from the bulk
// objects' and so needs a symbol of its own.
void gelu_tail_bf16(const bfloat16 *__restrict in, bfloat16 *__restrict out, int32_t count) {
  gelu_span(in, out, count);
}

} // extern "C"
