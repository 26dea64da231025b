// The vector arithmetic of kernels/NUMERICS.md on AIE2 (AIE-ML), 16 lanes at a time: the
// bfloat16 rounding b(v), the contract's exponential (section 3.1), reciprocal (3.2), GELU
// (5), the 16-lane tree sum (1) and the conversions between bfloat16 and float32 lanes.
// kernels/src/vmath.rs and kernels/src/gelu.rs are the bit-exact CPU statement of the same
// formulas; the order of every addition below follows them.
//
// The arithmetic model (NUMERICS.md section 1) maps onto AIE-ML as in its section 6:
// - a product takes two bfloat16 operands: aie::mul / aie::mac / aie::msc on
//   aie::vector<bfloat16, 16> into an aie::accum<accfloat, 16>; the product of two 8-bit
//   significands is exact in float32, so a multiply-add has the one rounding of its addition;
// - a float32 addition is an accfloat accumulator addition (aie::add / aie::sub of an
//   accumulator and a float vector);
// - b(v) is computed on the float32 bits with integer vector operations, so no hardware
//   float-to-bfloat16 conversion (and no rounding-mode register) is involved;
// - powers of two, the reciprocal's first guess, comparisons and the selection of special
//   values (saturation, flush to zero, canonical NaN) are integer operations on the bits.
// What a device has to confirm (accumulator additions round to nearest even; subnormal
// handling; the scalar division) is listed in kernels/aie/README.md.
//
// Written against the AIE API (aie_api/aie.hpp) as used by mlir-aie's aie_kernels/aie2
// (mm.cc, softmax.cc, gelu.cc) and aie_runtime_lib/AIE2/vec_math.h; no code is taken from
// them.

#ifndef AMANUENSIS_VMATH_H
#define AMANUENSIS_VMATH_H

#include <aie_api/aie.hpp>
#include <stdint.h>

// 0: b(v) rounds to nearest, ties to even (bf16::Rounding::NearestEven, the contract's
// default). 1: b(v) truncates (bf16::Rounding::Truncate). Must match the host's contract.
#ifndef AMANUENSIS_BF16_TRUNCATE
#define AMANUENSIS_BF16_TRUNCATE 0
#endif

namespace amanuensis {

constexpr unsigned LANES = 16;

using vbf = aie::vector<bfloat16, LANES>;
using vf = aie::vector<float, LANES>;
using vi = aie::vector<int32, LANES>;
using vacc = aie::accum<accfloat, LANES>;
using vmask = aie::mask<LANES>;

// aie::upshift and aie::downshift of integer lanes go through an accumulator and back, so
// their result follows the core's rounding and saturation modes: the bit arithmetic here
// needs floor rounding (an arithmetic shift) and no saturation (a wrapping shift). Every
// kernel entry point that shifts sets them first, whatever ran on the core before.
inline void set_shift_modes() {
  aie::set_rounding(aie::rounding_mode::floor);
  aie::set_saturation(aie::saturation_mode::none);
}

// Stores the first `count` lanes of `v` at `p` (16-bit aligned), writing no byte outside
// them: a row's tail, and (all 16 lanes) a span's first and last vectors, since
// aie::store_unaligned_v reads and rewrites the 32-byte blocks around its target, bytes of a
// neighbouring buffer included, which a DMA may be filling at that moment.
inline void store_lanes(bfloat16 *p, aie::vector<bfloat16, LANES> v,
                        int32_t count = static_cast<int32_t>(LANES)) {
  alignas(32) bfloat16 lanes[LANES];
  aie::store_v(lanes, v);
  for (int32_t l = 0; l < count; ++l)
    p[l] = lanes[l];
}

// Stores the `i`-th of the `full` whole vectors of a span at `p`: through store_lanes at the
// span's two ends, where the unaligned store's 32-byte blocks reach outside the span, and
// aie::store_unaligned_v in between, where they hold only the span's own bytes (the vector
// before, already written, and the vector after, written next).
inline void store_span_vector(bfloat16 *p, aie::vector<bfloat16, LANES> v, int32_t i,
                              int32_t full) {
  if (i == 0 || i == full - 1)
    store_lanes(p, v);
  else
    aie::store_unaligned_v(p, v);
}

// Constants as their float32 bits (NUMERICS.md tables); splat_f and splat_bf make lanes of them.
constexpr uint32_t LOG2E_HI = 0x3fb90000u;    // 1.4453125
constexpr uint32_t LOG2E_LO = 0xbb2c0000u;    // -0.00262451171875
constexpr uint32_t ROUND_MAGIC = 0x4b400000u; // 1.5 * 2^23
constexpr uint32_t LN2_1 = 0x3f310000u;       // 0.69140625
constexpr uint32_t LN2_2 = 0x3ae40000u;       // 0.001739501953125
constexpr uint32_t LN2_3 = 0x35c00000u;       // 1.430511474609375e-6
constexpr uint32_t EXP_E0 = 0x3eaaaaabu;      // 1/3 (float32, only added)
constexpr uint32_t EXP_E1 = 0x3daaaaabu;      // 1/12 (float32, only added)
constexpr uint32_t EXP_E2 = 0x3c890000u;      // 1/60 rounded to bfloat16
constexpr uint32_t EXP_ARG_MIN = 0xc2300000u; // -44
constexpr uint32_t EXP_ARG_MAX = 0x42300000u; // 44
constexpr uint32_t RECIP_MAGIC = 0x7ef30000u;
constexpr uint32_t GELU_A = 0xbfcc422au;      // -2 sqrt(2/pi) (float32, only added)
constexpr uint32_t GELU_B_HI = 0xbd920000u;   // -2 sqrt(2/pi) 0.044715, bfloat16 high part
constexpr uint32_t GELU_B_LO = 0xb88a0000u;   // its remainder, bfloat16
constexpr uint32_t GELU_SATURATION = 0x40e00000u; // 7
constexpr uint32_t ONE = 0x3f800000u;
constexpr uint32_t HALF = 0x3f000000u;
constexpr uint32_t CANONICAL_NAN = 0x7fc00000u; // bfloat16 0x7fc0
constexpr uint32_t NEGATIVE_ZERO = 0x80000000u;
constexpr uint16_t CANONICAL_NAN_BF16 = 0x7fc0u;
constexpr uint16_t NEGATIVE_INFINITY_BF16 = 0xff80u;

// ---------------------------------------------------------------------------------------
// Scalar helpers (the scalar unit: integer bit operations; float arithmetic in software).

inline uint32_t bits_of(float x) { return __builtin_bit_cast(uint32_t, x); }
inline float float_of(uint32_t b) { return __builtin_bit_cast(float, b); }

// b(x) on the bits of a float32 that is not a NaN with a nonzero low half (NUMERICS.md 1).
inline uint32_t round_bits(uint32_t b) {
#if AMANUENSIS_BF16_TRUNCATE
  return b & 0xffff0000u;
#else
  return (b + 0x7fffu + ((b >> 16) & 1u)) & 0xffff0000u;
#endif
}

inline float round_scalar(float x) { return float_of(round_bits(bits_of(x))); }

inline bfloat16 bf16_of_bits(uint16_t h) { return __builtin_bit_cast(bfloat16, h); }

// A float32 that holds a bfloat16 value, as that bfloat16 (its high half; exact).
inline bfloat16 bf16_exact(float x) {
  return bf16_of_bits(static_cast<uint16_t>(bits_of(x) >> 16));
}

// ---------------------------------------------------------------------------------------
// Lane-wise conversions and bit views.

inline vi bits(vf v) { return v.cast_to<int32>(); }
inline vf floats(vi v) { return v.cast_to<float>(); }
inline vi splat_i(uint32_t b) { return aie::broadcast<int32, LANES>(static_cast<int32>(b)); }
inline vf splat_f(uint32_t b) { return floats(splat_i(b)); }
inline vbf splat_bf(uint32_t b) {
  return aie::broadcast<bfloat16, LANES>(bf16_of_bits(static_cast<uint16_t>(b >> 16)));
}

// bfloat16 lanes widened to float32 lanes: each bfloat16 becomes the high half of a word
// whose low half is zero (exact; no arithmetic involved).
inline vf widen(vbf x) {
  const auto halves = aie::interleave_zip(aie::zeros<bfloat16, LANES>(), x, 1);
  return aie::concat(halves.first, halves.second).cast_to<float>();
}

// Float32 lanes that hold bfloat16 values (low halves zero), as bfloat16 lanes: the high
// half of each word (exact; no conversion unit involved).
inline vbf narrow_exact(vf v) {
  return aie::filter_odd(v.cast_to<bfloat16>(), 1);
}

// b(v) lane by lane, as float32 lanes holding the bfloat16 values. Lanes holding NaN give
// some NaN or infinity; callers select the contract's NaN where it applies.
inline vf rb(vf v) {
  const vi b = bits(v);
#if AMANUENSIS_BF16_TRUNCATE
  return floats(aie::bit_and(b, splat_i(0xffff0000u)));
#else
  const vi lsb = aie::bit_and(aie::downshift(b, 16), splat_i(1));
  const vi biased = aie::add(aie::add(b, splat_i(0x7fffu)), lsb);
  return floats(aie::bit_and(biased, splat_i(0xffff0000u)));
#endif
}

// A value and its bfloat16 operand form, for values that feed products.
struct Rounded {
  vf f;  // b(v) as float32 lanes
  vbf h; // the same values as bfloat16 lanes
};

inline Rounded rounded(vf v) {
  const vf r = rb(v);
  return {r, narrow_exact(r)};
}

// ---------------------------------------------------------------------------------------
// Float32 arithmetic: accumulator additions, one rounding each.

inline vacc acc_of(vf v) {
  vacc a;
  a.from_vector(v);
  return a;
}
inline vf value(const vacc &a) { return a.to_vector<float>(); }
inline vf fadd(vf a, vf b) { return value(aie::add(acc_of(a), b)); }
inline vf fsub(vf a, vf b) { return value(aie::sub(acc_of(a), b)); }
// The exact product of two bfloat16 lane vectors.
inline vf prod(vbf a, vbf b) { return value(aie::mul(a, b)); }

// ---------------------------------------------------------------------------------------
// Comparisons on the bits: an integer key that orders float32 values as numbers (negative
// values have their magnitude bits flipped). NaNs are ordered somewhere; every caller
// overrides NaN lanes afterwards.

inline vi order_key(vi b) {
  return aie::bit_xor(b, aie::bit_and(aie::downshift(b, 31), splat_i(0x7fffffffu)));
}
constexpr int32 order_key_scalar(uint32_t b) {
  return static_cast<int32>((b & 0x80000000u) ? (b ^ 0x7fffffffu) : b);
}
inline vmask is_nan(vi b) {
  return aie::gt(aie::bit_and(b, splat_i(0x7fffffffu)), splat_i(0x7f800000u));
}

// ---------------------------------------------------------------------------------------
// NUMERICS.md 3.1: the exponential of float32 lanes, as float32 lanes (not rounded).
inline vf exp16(vf t) {
  const vi tb = bits(t);
  const vi key = order_key(tb);
  // Saturation: t > 44 is taken as 44.
  const vmask above = aie::gt(key, splat_i(order_key_scalar(EXP_ARG_MAX)));
  const vf t_in = floats(aie::select(tb, splat_i(EXP_ARG_MAX), above));

  // 1. v = th * LOG2E_HI + (tl * LOG2E_HI + th * LOG2E_LO)
  const Rounded th = rounded(t_in);
  const Rounded tl = rounded(fsub(t_in, th.f));
  vacc va = aie::mul(th.h, splat_bf(LOG2E_LO));
  va = aie::mac(va, tl.h, splat_bf(LOG2E_HI));
  va = aie::mac(va, th.h, splat_bf(LOG2E_HI));
  // 2. k = v + ROUND_MAGIC, n = k - ROUND_MAGIC: two additions, kept apart.
  const vf k = fadd(value(va), splat_f(ROUND_MAGIC));
  const vf n = fsub(k, splat_f(ROUND_MAGIC));
  const vbf nh = narrow_exact(n); // an integer, |n| <= 64: a bfloat16 value
  // 3. r = ((t - n * LN2_1) - n * LN2_2) - n * LN2_3
  vacc ra = acc_of(t_in);
  ra = aie::msc(ra, nh, splat_bf(LN2_1));
  ra = aie::msc(ra, nh, splat_bf(LN2_2));
  ra = aie::msc(ra, nh, splat_bf(LN2_3));
  const vf r = value(ra);
  // 4. The polynomial.
  const Rounded rh = rounded(r);
  const Rounded rl = rounded(fsub(r, rh.f));
  const vbf half_rh = narrow_exact(prod(rh.h, splat_bf(HALF))); // 0.5 * rh, exact
  vacc ha = aie::mul(rh.h, half_rh);                          // rh * (0.5 * rh)
  ha = aie::mac(ha, rh.h, rl.h);                              // + rh * rl
  const vf h = value(ha);
  vacc ia = acc_of(splat_f(EXP_E1));
  ia = aie::mac(ia, rh.h, splat_bf(EXP_E2)); // EXP_E1 + rh * EXP_E2
  const Rounded inner = rounded(value(ia));
  vacc qa = acc_of(splat_f(EXP_E0));
  qa = aie::mac(qa, rh.h, inner.h); // EXP_E0 + rh * b(...)
  const Rounded q_factor = rounded(value(qa));
  const vf q = prod(rh.h, q_factor.h);
  const Rounded hb = rounded(h);
  const Rounded qb = rounded(q);
  vacc pa = acc_of(h);
  pa = aie::mac(pa, hb.h, qb.h); // b(h) * b(q) + h
  const vf p = fadd(splat_f(ONE), fadd(r, value(pa)));
  // 5. p * 2^n: n added to the exponent field of p (exact, p in [0.70, 1.42], |n| <= 64).
  vi result = aie::add(bits(p), aie::upshift(bits(k), 23));
  const vmask below = aie::lt(key, splat_i(order_key_scalar(EXP_ARG_MIN)));
  result = aie::select(result, splat_i(0), below);
  result = aie::select(result, splat_i(CANONICAL_NAN), is_nan(tb));
  return floats(result);
}

// NUMERICS.md 3.2: the reciprocal of float32 lanes 1 <= d < 2^64, as two bfloat16 lane
// vectors whose sum approximates 1 / d.
struct Recip {
  vbf hi;
  vbf lo;
};

inline Recip recip16(vf d) {
  const Rounded dh = rounded(d);
  const Rounded dl = rounded(fsub(d, dh.f));
  const vi y0_bits = aie::sub(splat_i(RECIP_MAGIC), bits(dh.f));
  const vbf y0 = narrow_exact(floats(y0_bits)); // low halves of both terms are zero
  vacc e0a = acc_of(splat_f(ONE));
  e0a = aie::msc(e0a, dh.h, y0); // 1 - dh * y0
  e0a = aie::msc(e0a, dl.h, y0); // - dl * y0
  const Rounded e0 = rounded(value(e0a));
  vacc y1a = acc_of(floats(y0_bits));
  y1a = aie::mac(y1a, y0, e0.h); // y0 + y0 * b(e0)
  const Rounded y1 = rounded(value(y1a));
  vacc e1a = acc_of(splat_f(ONE));
  e1a = aie::msc(e1a, dh.h, y1.h);
  e1a = aie::msc(e1a, dl.h, y1.h);
  const Rounded e1 = rounded(value(e1a));
  const Rounded lo = rounded(prod(y1.h, e1.h));
  return {y1.h, lo.h};
}

// ---------------------------------------------------------------------------------------
// NUMERICS.md 5: GELU of float32 lanes x (any float32; NaN lanes give the canonical NaN),
// as float32 lanes holding the bfloat16 results.
inline vf gelu16(vf x) {
  const vi xbits = bits(x);
  // 1. Entry: xb = b(x).
  const Rounded xb = rounded(x);
  // 2. s = xb * xb, sh = b(s), sl = b(s - sh)
  const vf s = prod(xb.h, xb.h);
  const Rounded sh = rounded(s);
  const Rounded sl = rounded(fsub(s, sh.f));
  // 3. g = GELU_A + (sh * GELU_B_HI + (sl * GELU_B_HI + sh * GELU_B_LO))
  vacc ga = aie::mul(sh.h, splat_bf(GELU_B_LO));
  ga = aie::mac(ga, sl.h, splat_bf(GELU_B_HI));
  ga = aie::mac(ga, sh.h, splat_bf(GELU_B_HI));
  const vf g = fadd(splat_f(GELU_A), value(ga));
  const Rounded gh = rounded(g);
  const Rounded gl = rounded(fsub(g, gh.f));
  // 4. w = xb * gl + xb * gh
  vacc wa = aie::mul(xb.h, gh.h);
  wa = aie::mac(wa, xb.h, gl.h);
  // 5. d = 1 + exp(w); (rh, rl) = recip(d)
  const vf d = fadd(splat_f(ONE), exp16(value(wa)));
  const Recip r = recip16(d);
  // 6. Exit: b(xb * rl + xb * rh)
  vacc ya = aie::mul(xb.h, r.hi);
  ya = aie::mac(ya, xb.h, r.lo);
  vi result = bits(rb(value(ya)));
  // Saturation, then NaN (tested on the input: b() can turn a NaN payload into infinity).
  const vi key = order_key(bits(xb.f));
  const vmask high = aie::ge(key, splat_i(order_key_scalar(GELU_SATURATION)));
  const vmask low =
      aie::le(key, splat_i(order_key_scalar(GELU_SATURATION | 0x80000000u)));
  result = aie::select(result, bits(xb.f), high);
  result = aie::select(result, splat_i(NEGATIVE_ZERO), low);
  result = aie::select(result, splat_i(CANONICAL_NAN), is_nan(xbits));
  return floats(result);
}

// ---------------------------------------------------------------------------------------
// NUMERICS.md 1: the 16 lane totals combined by halving,
// (((a0+a8)+(a4+a12))+((a2+a10)+(a6+a14))) + (((a1+a9)+(a5+a13))+((a3+a11)+(a7+a15))).
// Scalar float32 additions (software on the AIE-ML scalar unit, IEEE nearest even).
inline float tree_sum(vf lanes) {
  float a[LANES];
  for (unsigned j = 0; j < LANES; ++j)
    a[j] = lanes[j];
  for (unsigned width = LANES / 2; width > 0; width /= 2)
    for (unsigned j = 0; j < width; ++j)
      a[j] = a[j] + a[j + width];
  return a[0];
}

} // namespace amanuensis

#endif // AMANUENSIS_VMATH_H
