// The GEMM contract's per-core kernels on AIE2 (AIE-ML): C[m, n] (float32) accumulated over
// k-tiles of A[m, k] x B[k, n] (bfloat16), then the epilogue (bias, or bias and GELU).
// kernels/src/gemm.rs and kernels/NUMERICS.md section 2 state the numerics; kernels/src/emu.rs
// computes them on the CPU to the bit.
//
// Layout of the core's buffers (the memory tile's DMA transforms in gemm.py produce them):
// A is cut into MMUL_R x MMUL_S blocks, B into MMUL_S x MMUL_T blocks and C into
// MMUL_R x MMUL_T blocks; each block is contiguous and row-major inside, and the blocks are
// in row-major order. This is the layout of mlir-aie's aie_kernels/aie2/mm.cc and its
// whole-array design (programming_examples/basic/matrix_multiplication/whole_array), which
// this file follows in structure; the accumulation is different (see gemm_ktile_bf16_f32).
//
// Compile-time parameters (build.sh passes them): DIM_M, DIM_K, DIM_N (the per-core tile,
// 64 x 64 x 32), MMUL_R, MMUL_S, MMUL_T (the mmul shape: 4 x 8 x 4 on XDNA1), GEMM_MAX_N_PAD
// (the largest padded N of a dispatch, which sizes the bias stash), and GEMM_OUTPUT_BF16 for
// the object of the bfloat16-output GEMM (attention's scores, which stay on the device): its
// C tile is accumulated in float32 in the core's own memory and leaves rounded to bfloat16.

#include <aie_api/aie.hpp>
#include <stdint.h>

#include "vmath.h"

#ifndef DIM_M
#define DIM_M 64
#endif
#ifndef DIM_K
#define DIM_K 64
#endif
#ifndef DIM_N
#define DIM_N 32
#endif
#ifndef MMUL_R
#define MMUL_R 4
#endif
#ifndef MMUL_S
#define MMUL_S 8
#endif
#ifndef MMUL_T
#define MMUL_T 4
#endif
#ifndef GEMM_MAX_N_PAD
#define GEMM_MAX_N_PAD 5120
#endif
// Core columns of the array (N is spread over them): 4, as in GemmContract::XDNA1.
#ifndef GEMM_BIAS
// The bias entry points and their data (the stash); gemm_bf16.o is built without them
// (-DGEMM_BIAS=0), its core's memory holding the group's accumulator tiles instead.
#define GEMM_BIAS 1
#endif
#ifndef GEMM_COLUMNS
#define GEMM_COLUMNS 4
#endif

namespace {

using namespace amanuensis;
using MMUL = aie::mmul<MMUL_R, MMUL_S, MMUL_T, bfloat16, bfloat16, accfloat>;

constexpr unsigned ROW_BLOCKS = DIM_M / MMUL_R; // block rows of A and C
constexpr unsigned K_STEPS = DIM_K / MMUL_S;    // mmul steps in one k-tile
constexpr unsigned COL_BLOCKS = DIM_N / MMUL_T; // block columns of B and C

static_assert(DIM_M % (2 * MMUL_R) == 0, "two block rows per iteration");
static_assert(DIM_N % (2 * MMUL_T) == 0, "two block columns per iteration");
static_assert(DIM_K % MMUL_S == 0, "whole mmul steps per k-tile");
static_assert(MMUL::size_C % LANES == 0 && LANES % MMUL_T == 0,
              "a 16-lane vector of C lies in one block and covers whole block rows");
static_assert((DIM_K * DIM_N) % 2 == 0 && DIM_N % 2 == 0 && MMUL_T % 2 == 0,
              "a bias float keeps its two halves together through the B layout");

#if GEMM_BIAS
// The bias of this core's column of the array, for one dispatch: tile j of the column is
// columns (j * GEMM_COLUMNS + column) * DIM_N .. + DIM_N of the bias. Filled by
// gemm_bias_load at the start of each dispatch; read tile after tile by the epilogue, whose
// output tiles come in the same order (column tiles inner, row blocks outer).
alignas(32) float bias_stash[GEMM_MAX_N_PAD / GEMM_COLUMNS];
int32_t bias_tiles;  // column tiles of this dispatch (N_pad / (GEMM_COLUMNS * DIM_N))
int32_t bias_cursor; // the next output tile's column tile
int32_t bias_part;   // the next part of the bias to take from the B stream
// The current tile's bias laid out as the 16-lane vectors of each block column of C (kept
// out of the stack, which mlir-aie sizes at 1 KiB by default).
alignas(64) float bias_lanes[COL_BLOCKS * LANES];
#endif

#ifdef GEMM_OUTPUT_BF16
// The float32 C tiles of the bfloat16-output GEMM, in the blocked layout, one for each tile
// of the group a core accumulates at once (gemm.py's GROUP["bf16"]): the C objects that leave
// the core are bfloat16, so the sums are kept here until the last k-tile.
#ifndef GEMM_GROUP_BF16
#define GEMM_GROUP_BF16 3
#endif
alignas(64) float acc_tiles[GEMM_GROUP_BF16][DIM_M * DIM_N];
#endif

// C += A x B for one pair of MMUL_R-row block rows and one pair of MMUL_T-column block
// columns: four partial sums of the k-tile, each accumulated from +0 in increasing k, then
// each added into C.
inline void ktile_quad(const bfloat16 *__restrict pA, const bfloat16 *__restrict pB,
                       float *__restrict pC, unsigned z, unsigned j) {
  const bfloat16 *__restrict a0 = pA + (z * K_STEPS) * MMUL::size_A;
  const bfloat16 *__restrict a1 = pA + ((z + 1) * K_STEPS) * MMUL::size_A;
  const bfloat16 *__restrict b0 = pB + j * MMUL::size_B;
  const bfloat16 *__restrict b1 = pB + (j + 1) * MMUL::size_B;

  // The k-tile's own accumulators, from +0 (kernels/src/emu.rs starts each k-tile's sum at
  // +0 and adds the products in increasing k). The mmul unit adds the MMUL_S products of
  // one step to the accumulator in an order of its own, possibly with one rounding for the
  // step instead of one per product: that is the one place where the device may differ
  // from the contract's strictly sequential sum (gemm.rs, NUMERICS.md 2), and what the
  // device-versus-emulator test measures.
  MMUL c00(aie::zeros<accfloat, MMUL::size_C>());
  MMUL c01(aie::zeros<accfloat, MMUL::size_C>());
  MMUL c10(aie::zeros<accfloat, MMUL::size_C>());
  MMUL c11(aie::zeros<accfloat, MMUL::size_C>());

  for (unsigned step = 0; step < K_STEPS; ++step) {
    const aie::vector<bfloat16, MMUL::size_A> A0 = aie::load_v<MMUL::size_A>(a0);
    const aie::vector<bfloat16, MMUL::size_A> A1 = aie::load_v<MMUL::size_A>(a1);
    const aie::vector<bfloat16, MMUL::size_B> B0 = aie::load_v<MMUL::size_B>(b0);
    const aie::vector<bfloat16, MMUL::size_B> B1 = aie::load_v<MMUL::size_B>(b1);
    a0 += MMUL::size_A;
    a1 += MMUL::size_A;
    b0 += COL_BLOCKS * MMUL::size_B;
    b1 += COL_BLOCKS * MMUL::size_B;
    c00.mac(A0, B0);
    c01.mac(A0, B1);
    c10.mac(A1, B0);
    c11.mac(A1, B1);
  }

  // The k-tile's partial sums added into C, one float32 addition each: C holds the sum of
  // the earlier k-tiles (or +0 before the first), so the tiles are added in increasing order.
  float *__restrict c_top = pC + (z * COL_BLOCKS + j) * MMUL::size_C;
  float *__restrict c_bottom = pC + ((z + 1) * COL_BLOCKS + j) * MMUL::size_C;
  aie::store_v(c_top, aie::add(c00.to_accum(), aie::load_v<MMUL::size_C>(c_top))
                          .to_vector<float>());
  aie::store_v(c_top + MMUL::size_C,
               aie::add(c01.to_accum(), aie::load_v<MMUL::size_C>(c_top + MMUL::size_C))
                   .to_vector<float>());
  aie::store_v(c_bottom, aie::add(c10.to_accum(), aie::load_v<MMUL::size_C>(c_bottom))
                             .to_vector<float>());
  aie::store_v(
      c_bottom + MMUL::size_C,
      aie::add(c11.to_accum(), aie::load_v<MMUL::size_C>(c_bottom + MMUL::size_C))
          .to_vector<float>());
}

#if GEMM_BIAS
// The epilogue on one C tile: the bias of the current column tile added in float32 to every
// output (NUMERICS.md 2, step 5), then, with GELU, the contract's GELU (section 5) whose
// bfloat16 result is stored back as a float32 (low half zero), as the emulator does.
template <bool Gelu> inline void epilogue(float *__restrict pC) {
  const float *__restrict bias = bias_stash + bias_cursor * DIM_N;
  // Lane l of a vector in block column bj holds column bj * MMUL_T + l % MMUL_T.
  for (unsigned bj = 0; bj < COL_BLOCKS; ++bj)
    for (unsigned l = 0; l < LANES; ++l)
      bias_lanes[bj * LANES + l] = bias[bj * MMUL_T + l % MMUL_T];
  for (unsigned block = 0; block < ROW_BLOCKS * COL_BLOCKS; ++block) {
    const vf b = aie::load_v<LANES>(bias_lanes + (block % COL_BLOCKS) * LANES);
    for (unsigned v = 0; v < MMUL::size_C / LANES; ++v) {
      float *__restrict p = pC + block * MMUL::size_C + v * LANES;
      vf x = fadd(aie::load_v<LANES>(p), b);
      if constexpr (Gelu)
        x = gelu16(x);
      aie::store_v(p, x);
    }
  }
  bias_cursor = bias_cursor + 1 == bias_tiles ? 0 : bias_cursor + 1;
}
#endif

} // namespace

extern "C" {

// C = +0 before the first k-tile.
void gemm_zero_f32(float *__restrict c) {
  for (unsigned i = 0; i < DIM_M * DIM_N; i += LANES)
    aie::store_v(c + i, aie::zeros<float, LANES>());
}

// One k-tile: C += A x B, A and B bfloat16 in the blocked layout, C float32.
void gemm_ktile_bf16_f32(const bfloat16 *__restrict a, const bfloat16 *__restrict b,
                         float *__restrict c) {
  for (unsigned z = 0; z < ROW_BLOCKS; z += 2)
    for (unsigned j = 0; j < COL_BLOCKS; j += 2)
      ktile_quad(a, b, c, z, j);
}

#if GEMM_BIAS
// Starts a dispatch's bias: `tiles` is its number of column tiles (a runtime parameter of
// the dispatch, as the design's loop counts are). The parts that follow (gemm_bias_load) are
// counted from 0.
void gemm_bias_begin(int32_t tiles) {
  bias_tiles = tiles;
  bias_cursor = 0;
  bias_part = 0;
}

// Takes the next part of this column's bias from an object of the B stream.
//
// The host passes the bias as float32 [N_pad] in its own buffer, but a core has only two
// input channels (A and B), and every shim channel of the array already carries A or B; so
// gemm.py sends the bias down this column's B stream, before the first B tile, as whole B
// objects: the column's slice (tiles j = 0, 1, ... of DIM_N floats, read as bfloat16 halves)
// repeated until it fills a whole number of objects. The memory tile's B transform has
// blocked each object like B; the two halves of a float stay adjacent (they sit in the same
// row, in columns 2i and 2i + 1 of one MMUL_T-wide block), so each float is one aligned
// 32-bit word of the object. The core counts the parts itself, so that the design passes no
// loop index to the kernel (the loop's count is a runtime parameter).
void gemm_bias_load(const bfloat16 *__restrict object) {
  constexpr int32_t floats_per_object = DIM_K * DIM_N / 2;
  const int32_t slice = bias_tiles * DIM_N;
  const int32_t first = bias_part * floats_per_object;
  const int32_t last = first + floats_per_object < slice ? first + floats_per_object : slice;
  const uint32_t *__restrict words = reinterpret_cast<const uint32_t *>(object);
  uint32_t *__restrict stash = reinterpret_cast<uint32_t *>(bias_stash);
  for (int32_t f = first; f < last; ++f) {
    const int32_t unit = 2 * (f - first); // bfloat16 index in the row-major k x n object
    const int32_t row = unit / DIM_N;
    const int32_t col = unit % DIM_N;
    const int32_t blocked = ((row / MMUL_S) * COL_BLOCKS + col / MMUL_T) * (MMUL_S * MMUL_T) +
                            (row % MMUL_S) * MMUL_T + col % MMUL_T;
    stash[f] = words[blocked / 2];
  }
  bias_part = bias_part + 1;
}

// Epilogue `bias`: C += bias.
void gemm_epilogue_bias(float *__restrict c) { epilogue<false>(c); }

// Epilogue `bias_gelu`: C = gelu(C + bias), bfloat16 values held in float32.
void gemm_epilogue_bias_gelu(float *__restrict c) {
  set_shift_modes();
  epilogue<true>(c);
}
#endif

#ifdef GEMM_OUTPUT_BF16
// The bfloat16-output GEMM (gemm.py --output bf16): the accumulator tile = +0, the k-tiles
// added into it as gemm_ktile_bf16_f32 does, then stored to the C object rounded to
// bfloat16 by the contract's b(v) (NUMERICS.md 1), bit for bit what the host's rounding of
// float32 scores gives; a NaN becomes the canonical NaN (the host's rounding keeps NaNs
// NaN, and b(v) on the bits could turn one into an infinity). No epilogue. `t` names the
// group's tile (0 to GEMM_GROUP_BF16 - 1).
void gemm_acc_zero(int32_t t) { gemm_zero_f32(acc_tiles[t]); }

void gemm_acc_ktile(const bfloat16 *__restrict a, const bfloat16 *__restrict b, int32_t t) {
  gemm_ktile_bf16_f32(a, b, acc_tiles[t]);
}

void gemm_acc_store_bf16(bfloat16 *__restrict c, int32_t t) {
  set_shift_modes();
  const float *__restrict acc = acc_tiles[t];
  for (unsigned i = 0; i < DIM_M * DIM_N; i += LANES) {
    const vf x = aie::load_v<LANES>(acc + i);
    const vf r = floats(aie::select(bits(rb(x)), splat_i(CANONICAL_NAN), is_nan(bits(x))));
    aie::store_v(c + i, narrow_exact(r));
  }
}
#endif

} // extern "C"
