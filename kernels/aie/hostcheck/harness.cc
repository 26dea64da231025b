// Runs kernels/aie's kernels, compiled for the host over model/aie_api, on files of
// little-endian 32-bit words. Used by check_kernels.py.
//
//   harness gelu IN OUT CHUNK     bfloat16 values (in float32) through gelu_bf16, CHUNK a call
//   harness gelu32 IN OUT         float32 values through gelu16 (the bias_gelu epilogue's path)
//   harness softmax IN OUT COLS   rows of COLS through softmax_row_bf16
//   harness core A B C RTP0 ... RTP12 EPILOGUE
//                                 one GEMM core's loop (gemm.py's core_fn) over its A and B
//                                 streams (16-bit words, as the memory tiles deliver them),
//                                 writing its C objects, the 13 runtime parameters of gemm.py's
//                                 Plan.rtp as its counts: per row block (RTP0), RTP4 groups of
//                                 4 column tiles, then RTP5 of 3, RTP6 of 2, RTP7 of 1, each
//                                 k-tile of A serving a group's tiles in turn; then RTP8 groups
//                                 of 4 row blocks, RTP9 of 3, RTP10 of 2, RTP11 of 1, each
//                                 sweeping RTP12 column tiles, each k-tile of B serving the
//                                 group's tiles; EPILOGUE bf16 runs the bfloat16-output loop
//                                 (core_fn_bf16: groups of at most 3 column tiles), its C
//                                 objects widened
#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <iterator>
#include <string>
#include <vector>

#include "vmath.h"

extern "C" {
void gelu_bf16(const bfloat16 *in, bfloat16 *out, int32_t count);
void softmax_row_bf16(const bfloat16 *in, bfloat16 *out, int32_t cols);
void gemm_zero_f32(float *c);
void gemm_ktile_bf16_f32(const bfloat16 *a, const bfloat16 *b, float *c);
void gemm_bias_begin(int32_t tiles);
void gemm_bias_load(const bfloat16 *object);
void gemm_epilogue_bias(float *c);
void gemm_epilogue_bias_gelu(float *c);
void gemm_acc_zero(int32_t t);
void gemm_acc_ktile(const bfloat16 *a, const bfloat16 *b, int32_t t);
void gemm_acc_store_bf16(bfloat16 *c, int32_t t);
}

namespace {

template <typename T> std::vector<T> read_file(const char *path) {
  FILE *f = std::fopen(path, "rb");
  if (!f) {
    std::perror(path);
    std::exit(1);
  }
  std::fseek(f, 0, SEEK_END);
  const long bytes = std::ftell(f);
  std::fseek(f, 0, SEEK_SET);
  std::vector<T> v(static_cast<size_t>(bytes) / sizeof(T));
  if (std::fread(v.data(), sizeof(T), v.size(), f) != v.size())
    std::exit(1);
  std::fclose(f);
  return v;
}

template <typename T> void write_file(const char *path, const std::vector<T> &v) {
  FILE *f = std::fopen(path, "wb");
  if (!f || std::fwrite(v.data(), sizeof(T), v.size(), f) != v.size())
    std::exit(1);
  std::fclose(f);
}

// The high half of a float32 that holds a bfloat16 value, and back.
bfloat16 high_half(float x) { return amanuensis::bf16_exact(x); }
float widened(bfloat16 h) { return amanuensis::float_of(static_cast<uint32_t>(h.bits) << 16); }

} // namespace

int main(int argc, char **argv) {
  if (argc < 4)
    return 2;
  const std::string mode = argv[1];
  if (mode == "gelu") {
    const auto x = read_file<float>(argv[2]);
    const size_t chunk = std::strtoul(argv[4], nullptr, 10);
    std::vector<bfloat16> in(x.size()), out(x.size());
    std::transform(x.begin(), x.end(), in.begin(), high_half);
    for (size_t i = 0; i < x.size(); i += chunk)
      gelu_bf16(&in[i], &out[i], static_cast<int32_t>(std::min(chunk, x.size() - i)));
    std::vector<float> y(x.size());
    std::transform(out.begin(), out.end(), y.begin(), widened);
    write_file(argv[3], y);
  } else if (mode == "gelu32") {
    // As gemm_epilogue_bias_gelu does before its GELU.
    amanuensis::set_shift_modes();
    const auto x = read_file<float>(argv[2]);
    std::vector<float> y(x.size());
    for (size_t i = 0; i < x.size(); i += amanuensis::LANES) {
      alignas(32) float lanes[amanuensis::LANES] = {};
      const size_t n = std::min<size_t>(amanuensis::LANES, x.size() - i);
      std::copy(x.begin() + i, x.begin() + i + n, lanes);
      const amanuensis::vf r = amanuensis::gelu16(aie::load_v<amanuensis::LANES>(lanes));
      for (size_t j = 0; j < n; ++j)
        y[i + j] = r[j];
    }
    write_file(argv[3], y);
  } else if (mode == "softmax") {
    const auto x = read_file<float>(argv[2]);
    const size_t cols = std::strtoul(argv[4], nullptr, 10);
    std::vector<bfloat16> in(x.size()), out(x.size());
    std::transform(x.begin(), x.end(), in.begin(), high_half);
    for (size_t r = 0; r * cols < x.size(); ++r)
      softmax_row_bf16(&in[r * cols], &out[r * cols], static_cast<int32_t>(cols));
    std::vector<float> y(x.size());
    std::transform(out.begin(), out.end(), y.begin(), widened);
    write_file(argv[3], y);
  } else if (mode == "core" && argc == 19) {
    const auto a = read_file<uint16_t>(argv[2]);
    const auto b = read_file<uint16_t>(argv[3]);
    int rtp[13];
    for (int i = 0; i < 13; ++i)
      rtp[i] = std::atoi(argv[5 + i]);
    const int row_blocks = rtp[0], k_tiles = rtp[1], bias_parts = rtp[2], col_tiles = rtp[3];
    // Groups of `size` column tiles a row block; groups of `size` row blocks a dispatch.
    auto column_groups = [&](int size) { return rtp[8 - size]; };
    auto row_groups = [&](int size) { return rtp[12 - size]; };
    const int sweep = rtp[12];
    const std::string epilogue = argv[18];
    constexpr size_t a_size = DIM_M * DIM_K, b_size = DIM_K * DIM_N, c_size = DIM_M * DIM_N;
    constexpr int GROUP = 4;
    alignas(64) static bfloat16 a_obj[a_size], b_obj[b_size];
    alignas(64) static float c_objs[GROUP][c_size];
    alignas(64) static bfloat16 c_bf16[c_size];
    const bool bf16_out = epilogue == "bf16";
    size_t a_at = 0, b_at = 0;
    auto take = [](const std::vector<uint16_t> &s, size_t &at, bfloat16 *dst, size_t n) {
      if (at + n > s.size()) {
        std::fprintf(stderr, "stream too short\n");
        std::exit(3);
      }
      std::memcpy(dst, &s[at], n * 2);
      at += n;
    };
    std::vector<float> c;
    // A group's tiles after their last k-tile: the epilogue, then out in order.
    auto finish = [&](int size) {
      for (int t = 0; t < size; ++t) {
        if (epilogue == "bias")
          gemm_epilogue_bias(c_objs[t]);
        else if (epilogue == "bias_gelu")
          gemm_epilogue_bias_gelu(c_objs[t]);
        c.insert(c.end(), c_objs[t], c_objs[t] + c_size);
      }
    };
    // `size` output tiles at once, each k-tile of the shared operand (A, or B with
    // shared_is_a false) serving them all, the other's tiles taken in turn.
    auto group = [&](int size, bool shared_is_a) {
      for (int t = 0; t < size; ++t)
        gemm_zero_f32(c_objs[t]);
      for (int kt = 0; kt < k_tiles; ++kt) {
        if (shared_is_a)
          take(a, a_at, a_obj, a_size);
        else
          take(b, b_at, b_obj, b_size);
        for (int t = 0; t < size; ++t) {
          if (shared_is_a)
            take(b, b_at, b_obj, b_size);
          else
            take(a, a_at, a_obj, a_size);
          gemm_ktile_bf16_f32(a_obj, b_obj, c_objs[t]);
        }
      }
      finish(size);
    };
    if (bias_parts > 0)
      gemm_bias_begin(col_tiles);
    for (int part = 0; part < bias_parts; ++part) {
      take(b, b_at, b_obj, b_size);
      gemm_bias_load(b_obj);
    }
    for (int block = 0; block < row_blocks; ++block) {
      if (bf16_out) {
        constexpr int GROUP_BF16 = 3;
        for (int size = GROUP_BF16; size >= 1; --size) {
          for (int g = 0; g < column_groups(size); ++g) {
            for (int t = 0; t < size; ++t)
              gemm_acc_zero(t);
            for (int kt = 0; kt < k_tiles; ++kt) {
              take(a, a_at, a_obj, a_size);
              for (int t = 0; t < size; ++t) {
                take(b, b_at, b_obj, b_size);
                gemm_acc_ktile(a_obj, b_obj, t);
              }
            }
            for (int t = 0; t < size; ++t) {
              gemm_acc_store_bf16(c_bf16, t);
              std::transform(c_bf16, c_bf16 + c_size, std::back_inserter(c), widened);
            }
          }
        }
        continue;
      }
      for (int size = GROUP; size >= 1; --size)
        for (int g = 0; g < column_groups(size); ++g)
          group(size, true);
    }
    for (int size = GROUP; size >= 1 && !bf16_out; --size)
      for (int g = 0; g < row_groups(size); ++g)
        for (int j = 0; j < sweep; ++j)
          group(size, false);
    if (a_at != a.size() || b_at != b.size()) {
      std::fprintf(stderr, "streams not consumed whole: A %zu of %zu, B %zu of %zu\n", a_at,
                   a.size(), b_at, b.size());
      return 3;
    }
    write_file(argv[4], c);
  } else {
    return 2;
  }
  return 0;
}
