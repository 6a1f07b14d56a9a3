// Attention kernels for the compiled CPU engine (genie_robot.models.cpu_kernels builds and loads this).
//
// At batch 1 a MaskGIT step of a small model attends over few tokens: 80 per frame, a few past frames per
// token. There the CPU SDPA kernel (small BLAS calls per block of queries), and inductor's code for the
// queries' and keys' RMS norms and for the cached temporal attention (a dozen parallel loops, a horizontal
// sum per key), spend most of their time outside the arithmetic. These kernels take the attention module's
// qkv projection as it comes out of its matmul and do the norms and the attention in one pass, float32
// only, written with GCC's generic vectors (16 floats: AVX-512 here, pairs or quads of narrower registers
// elsewhere), so the build needs no CPU-specific intrinsics.
//
// genie::attention(qkv, q_weight, k_weight, eps, scale, causal, keys) -> (y, k):
//   qkv [N, L, 3, H, dh] (any strides, the last 1): per sequence n and head h, the queries and keys
//   RMS-normed (x / sqrt(mean(x^2) + eps) * weight, as torch.nn.RMSNorm), then softmax(scale q k^T) v over
//   the L positions, causal or not. y [N, L, H*dh]: heads side by side, as the output projection reads
//   them. k: the normed keys [N, L, H, dh] when `keys` (what a sampling cache stores), else empty.
// genie::cached_attention(qkv, q_weight, k_weight, eps, cache_k, cache_v, valid, scale) -> (y, k):
//   one new position per row: qkv [N, 3, H, dh]; each row's query attends over the valid slots of its
//   cache row (cache_k/v [N, H, W, dh], normed keys; valid bool [W]) and its own key. The invalid slots are
//   never read. y [N, H*dh]; k: the row's normed key [N, H, dh], for the cache once the frame is final.
// genie::maskgit_sample(logits, ids, mask_id, u, keep, inv_temperature, block) -> ids: one MaskGIT step, the
//   rule of genie_robot.models.sampling.step (and core.maskgit.sample_step): each masked token (ids == mask_id)
//   drawn from softmax(logits * inv_temperature) by inverse CDF with its uniform (float32 numerators, float64
//   sums per block of `block` entries, the entry found inside its block), then each row's `keep` least
//   confident new draws masked again (a stable order; known tokens have confidence +inf). Only the masked
//   rows' logits are read.

#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <c10/util/Exception.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <tuple>
#include <limits>
#include <vector>

namespace {

constexpr int64_t LANES = 16;
typedef float vec __attribute__((vector_size(LANES * sizeof(float))));

inline vec load(const float* p) {
  vec v;
  std::memcpy(&v, p, sizeof(vec));
  return v;
}
inline void store(float* p, vec v) { std::memcpy(p, &v, sizeof(vec)); }
inline vec splat(float x) { return vec{x, x, x, x, x, x, x, x, x, x, x, x, x, x, x, x}; }
// Lanes from `n` on (0 <= n < 16) set to `fill`: a row's last, partial vector.
inline vec fill_from(vec x, int64_t n, float fill) {
  for (int64_t l = n; l < LANES; ++l) x[l] = fill;
  return x;
}
inline vec load_part(const float* p, int64_t n, float fill) {  // n < 16 floats, the rest `fill`
  vec x = splat(fill);
  std::memcpy(&x, p, n * sizeof(float));
  return x;
}

// Sum and maximum across the lanes by halving (log2(16) steps, not a chain of 15).
typedef float half8 __attribute__((vector_size(8 * sizeof(float))));
typedef float quarter4 __attribute__((vector_size(4 * sizeof(float))));
inline half8 low8(vec v) { return __builtin_shufflevector(v, v, 0, 1, 2, 3, 4, 5, 6, 7); }
inline half8 high8(vec v) { return __builtin_shufflevector(v, v, 8, 9, 10, 11, 12, 13, 14, 15); }
inline quarter4 low4(half8 v) { return __builtin_shufflevector(v, v, 0, 1, 2, 3); }
inline quarter4 high4(half8 v) { return __builtin_shufflevector(v, v, 4, 5, 6, 7); }
inline float hsum(vec v) {
  const quarter4 b = low4(low8(v) + high8(v)) + high4(low8(v) + high8(v));
  return (b[0] + b[2]) + (b[1] + b[3]);
}
inline vec vmax(vec a, vec b) { return a > b ? a : b; }
inline float hmax(vec v) {
  const half8 lo = low8(v), hi = high8(v), a = lo > hi ? lo : hi;
  const quarter4 l4 = low4(a), h4 = high4(a), b = l4 > h4 ? l4 : h4;
  return std::max(std::max(b[0], b[2]), std::max(b[1], b[3]));
}

// exp of each lane for x <= 0 (scores or logits minus their maximum): x = k ln2 + r, |r| <= ln2 / 2, so
// exp(x) = 2^k exp(r), exp(r) by its Taylor polynomial to r^7 (tested against std::exp). Below -87, where
// float's exp leaves the normal range, it is 0. std::exp one lane at a time cost more than the attention's
// arithmetic.
typedef int32_t ivec __attribute__((vector_size(LANES * sizeof(int32_t))));
inline vec vexp(vec in) {
  const vec x = in < -87.f ? splat(-87.f) : in;
  const vec shifter = splat(12582912.f);  // 1.5 * 2^23: adding it rounds to an integer, in the low bits
  const vec t = x * 1.44269504088896341f + shifter;
  const vec k = t - shifter;
  const vec r = x - k * 0.693359375f - k * -2.12194440e-4f;  // ln 2 in two parts, the first exact in float
  vec p = splat(1.f / 5040);
  p = p * r + 1.f / 720;
  p = p * r + 1.f / 120;
  p = p * r + 1.f / 24;
  p = p * r + 1.f / 6;
  p = p * r + 0.5f;
  p = p * r + 1.f;
  p = p * r + 1.f;
  ivec bits;
  std::memcpy(&bits, &t, sizeof(t));
  bits = (bits - 0x4B400000 + 127) << 23;  // 2^k from k, read out of t's low bits
  vec scale;
  std::memcpy(&scale, &bits, sizeof(scale));
  return in < -87.f ? vec{} : p * scale;
}

// Softmax numerators of scores[0..n) in place, returning 1 / their sum. `scores` has room for n rounded up to
// whole vectors; the entries past n come out 0.
inline float softmax_row(float* scores, int64_t n) {
  const float lowest = -std::numeric_limits<float>::infinity();
  vec m = splat(lowest);
  for (int64_t j = 0; j < n; j += LANES) m = vmax(m, fill_from(load(scores + j), n - j, lowest));  // past n: padding
  const float top = hmax(m);
  vec total{};
  for (int64_t j = 0; j < n; j += LANES) {
    const vec e = fill_from(vexp(load(scores + j) - top), n - j, 0.f);
    store(scores + j, e);
    total += e;
  }
  return 1.f / hsum(total);
}

void check_input(const at::Tensor& t, const char* op, const char* name) {
  TORCH_CHECK(t.device().is_cpu() && t.scalar_type() == at::kFloat, op, " takes float32 CPU tensors; ", name, " is ",
              t.scalar_type(), " on ", t.device());
  TORCH_CHECK(t.stride(-1) == 1, op, " needs ", name, "'s last dimension contiguous");
}

void check_norm_weight(const at::Tensor& w, int64_t dh, const char* op, const char* name) {
  check_input(w, op, name);
  TORCH_CHECK(w.dim() == 1 && w.size(0) == dh, op, ": ", name, " must be [", dh, "], got ", w.sizes());
}

// x[0..dh) RMS-normed, times `weight` and `scale`, into out (DV whole vectors).
template <int64_t DV>
inline void rms_norm(const float* x, const float* weight, float eps, float scale, float* out) {
  vec v[DV], sq{};
  for (int64_t c = 0; c < DV; ++c) {
    v[c] = load(x + c * LANES);
    sq += v[c] * v[c];
  }
  const float r = scale / std::sqrt(hsum(sq) / (DV * LANES) + eps);
  for (int64_t c = 0; c < DV; ++c) store(out + c * LANES, v[c] * load(weight + c * LANES) * r);
}

// Calls fn.template operator()<DV>() for the head width's DV = dh / 16 (1, 2, 4 or 8: dh 16 to 128), a
// template argument so that per-query accumulators of DV vectors stay in registers.
template <typename F>
void by_width(int64_t dh, const char* op, F&& fn) {
  switch (dh % LANES == 0 ? dh / LANES : 0) {
    case 1: return fn.template operator()<1>();
    case 2: return fn.template operator()<2>();
    case 4: return fn.template operator()<4>();
    case 8: return fn.template operator()<8>();
  }
  TORCH_CHECK(false, op, " takes head widths 16, 32, 64 or 128, got ", dh);
}

struct Strides {  // of qkv [N, L, 3, H, dh]
  int64_t n, l, part, h;
};

template <int64_t DV>
void attention_rows(const float* qkv, Strides st, int64_t n, int64_t len, int64_t heads, const float* qw,
                    const float* kw, float eps, float scale, bool causal, float* out, float* keys_out) {
  constexpr int64_t dh = DV * LANES;
  // Queries that share each loaded key or value vector; their output accumulators (QROWS x DV vectors) must
  // fit in the 32 vector registers. At dh 32, 8 was faster than 4 at 80 and at 320 tokens, and 12 slower.
  constexpr int64_t QROWS = DV <= 2 ? 8 : 4;
  const int64_t padded = (len + LANES - 1) / LANES * LANES;
  const int64_t blocks = (len + QROWS - 1) / QROWS;
  // Work items: (sequence, head, chunk of up to 8 query blocks); an item normalizes and transposes its
  // head's keys once, unless the item before it on this thread had the same head.
  const int64_t per_chunk = std::min<int64_t>(blocks, 8), chunks = (blocks + per_chunk - 1) / per_chunk;
  at::parallel_for(0, n * heads * chunks, 1, [&](int64_t begin, int64_t end) {
    std::vector<float> keys_t(dh * padded, 0.f), scores(QROWS * padded), queries(QROWS * dh);
    alignas(64) float key[dh];
    int64_t loaded = -1;
    for (int64_t item = begin; item < end; ++item) {
      const int64_t nh = item / chunks, chunk = item % chunks, i = nh / heads, h = nh % heads;
      const float* base = qkv + i * st.n + h * st.h;
      if (loaded != nh) {  // keys [dh][L], so a query's scores are vector FMAs over the keys
        for (int64_t j = 0; j < len; ++j) {
          rms_norm<DV>(base + j * st.l + st.part, kw, eps, 1.f, key);
          if (keys_out != nullptr && chunk == 0)  // once per key: only the head's first chunk writes them
            std::memcpy(keys_out + ((i * len + j) * heads + h) * dh, key, sizeof(key));
          for (int64_t d = 0; d < dh; ++d) keys_t[d * padded + j] = key[d];
        }
        loaded = nh;
      }
      const float* values = base + 2 * st.part;
      const int64_t first = chunk * per_chunk * QROWS, last = std::min(len, first + per_chunk * QROWS);
      for (int64_t i0 = first; i0 < last; i0 += QROWS) {
        const int64_t rows = std::min(QROWS, last - i0);
        for (int64_t r = 0; r < QROWS; ++r)  // a short last block repeats its last query
          rms_norm<DV>(base + (i0 + std::min(r, rows - 1)) * st.l, qw, eps, scale, &queries[r * dh]);
        // Keys a row may see: all of them, or (causal) up to its own position.
        const int64_t seen = causal ? i0 + rows : len;
        for (int64_t jv = 0; jv < seen; jv += LANES) {
          vec a[QROWS] = {};
          for (int64_t d = 0; d < dh; ++d) {
            const vec kv = load(&keys_t[d * padded + jv]);
            for (int64_t r = 0; r < QROWS; ++r) a[r] += splat(queries[r * dh + d]) * kv;
          }
          for (int64_t r = 0; r < QROWS; ++r) store(&scores[r * padded + jv], a[r]);
        }
        float inv[QROWS] = {};
        for (int64_t r = 0; r < rows; ++r) {
          const int64_t own = causal ? i0 + r + 1 : len;
          inv[r] = softmax_row(&scores[r * padded], own);
          std::fill(&scores[r * padded] + own, &scores[r * padded] + seen, 0.f);
        }
        vec acc[QROWS][DV] = {};
        for (int64_t j = 0; j < seen; ++j) {
          const float* vj = values + j * st.l;
          for (int64_t r = 0; r < QROWS; ++r) {
            const vec p = splat(scores[r * padded + j]);
            for (int64_t c = 0; c < DV; ++c) acc[r][c] += p * load(vj + c * LANES);
          }
        }
        for (int64_t r = 0; r < rows; ++r) {
          float* o = out + ((i * len + i0 + r) * heads + h) * dh;
          for (int64_t c = 0; c < DV; ++c) store(o + c * LANES, acc[r][c] * inv[r]);
        }
      }
    }
  });
}

std::tuple<at::Tensor, at::Tensor> attention(const at::Tensor& qkv, const at::Tensor& q_weight,
                                             const at::Tensor& k_weight, double eps, double scale, bool causal,
                                             bool keys) {
  const char* op = "genie::attention";
  check_input(qkv, op, "qkv");
  TORCH_CHECK(qkv.dim() == 5 && qkv.size(2) == 3, op, " takes qkv [N, L, 3, H, dh], got ", qkv.sizes());
  const int64_t n = qkv.size(0), len = qkv.size(1), heads = qkv.size(3), dh = qkv.size(4);
  check_norm_weight(q_weight, dh, op, "q_weight");
  check_norm_weight(k_weight, dh, op, "k_weight");
  auto y = at::empty({n, len, heads * dh}, qkv.options());
  auto k = keys ? at::empty({n, len, heads, dh}, qkv.options()) : at::empty({0}, qkv.options());
  const Strides st{qkv.stride(0), qkv.stride(1), qkv.stride(2), qkv.stride(3)};
  by_width(dh, op, [&]<int64_t DV>() {
    attention_rows<DV>(qkv.data_ptr<float>(), st, n, len, heads, q_weight.contiguous().data_ptr<float>(),
                       k_weight.contiguous().data_ptr<float>(), static_cast<float>(eps), static_cast<float>(scale),
                       causal, y.data_ptr<float>(), keys ? k.data_ptr<float>() : nullptr);
  });
  return {y, k};
}

template <int64_t DV>
void cached_rows(const float* qkv, Strides st, int64_t n, int64_t heads, const float* qw, const float* kw, float eps,
                 float scale, const float* cache_k, const float* cache_v, Strides cs, const std::vector<int64_t>& slots,
                 float* out, float* keys_out) {
  constexpr int64_t dh = DV * LANES;
  const int64_t used = static_cast<int64_t>(slots.size()), room = (used + 1 + LANES - 1) / LANES * LANES;
  at::parallel_for(0, n * heads, 16, [&](int64_t begin, int64_t end) {
    std::vector<float> scores(room);
    alignas(64) float q[dh];
    for (int64_t row = begin; row < end; ++row) {
      const int64_t i = row / heads, h = row % heads;
      const float* base = qkv + i * st.n + h * st.h;
      float* key = keys_out + row * dh;  // this row's normed key: scored here, kept for the cache
      rms_norm<DV>(base, qw, eps, scale, q);
      rms_norm<DV>(base + st.part, kw, eps, 1.f, key);
      const float* ck = cache_k + i * cs.n + h * cs.h;
      const float* cv = cache_v + i * cs.n + h * cs.h;
      vec qv[DV];
      for (int64_t c = 0; c < DV; ++c) qv[c] = load(q + c * LANES);
      for (int64_t j = 0; j <= used; ++j) {
        const float* kj = j < used ? ck + slots[j] * cs.l : key;
        vec a{};
        for (int64_t c = 0; c < DV; ++c) a += qv[c] * load(kj + c * LANES);
        scores[j] = hsum(a);
      }
      const float inv = softmax_row(scores.data(), used + 1);
      vec acc[DV] = {};
      for (int64_t j = 0; j <= used; ++j) {
        const float* vj = j < used ? cv + slots[j] * cs.l : base + 2 * st.part;
        const vec p = splat(scores[j]);
        for (int64_t c = 0; c < DV; ++c) acc[c] += p * load(vj + c * LANES);
      }
      float* o = out + row * dh;
      for (int64_t c = 0; c < DV; ++c) store(o + c * LANES, acc[c] * inv);
    }
  });
}

std::tuple<at::Tensor, at::Tensor> cached_attention(const at::Tensor& qkv, const at::Tensor& q_weight,
                                                    const at::Tensor& k_weight, double eps, const at::Tensor& cache_k,
                                                    const at::Tensor& cache_v, const at::Tensor& valid, double scale) {
  const char* op = "genie::cached_attention";
  check_input(qkv, op, "qkv");
  TORCH_CHECK(qkv.dim() == 4 && qkv.size(1) == 3, op, " takes one new position per row: qkv [N, 3, H, dh], got ",
              qkv.sizes());
  const int64_t n = qkv.size(0), heads = qkv.size(2), dh = qkv.size(3);
  check_norm_weight(q_weight, dh, op, "q_weight");
  check_norm_weight(k_weight, dh, op, "k_weight");
  check_input(cache_k, op, "cache_k");
  check_input(cache_v, op, "cache_v");
  TORCH_CHECK(cache_k.dim() == 4 && cache_k.size(0) == n && cache_k.size(1) == heads && cache_k.size(3) == dh &&
                  cache_v.sizes() == cache_k.sizes() && cache_v.strides() == cache_k.strides(),
              op, "'s caches must be [N, H, W, dh] = [", n, ", ", heads, ", W, ", dh, "], alike, got ", cache_k.sizes(),
              " and ", cache_v.sizes());
  const int64_t w = cache_k.size(2);
  TORCH_CHECK(valid.dim() == 1 && valid.size(0) == w && valid.scalar_type() == at::kBool && valid.device().is_cpu(),
              op, "'s valid mask must be a CPU bool [", w, "], got ", valid.sizes(), " ", valid.scalar_type());
  const at::Tensor ok = valid.contiguous();
  std::vector<int64_t> slots;
  for (int64_t j = 0; j < w; ++j)
    if (ok.data_ptr<bool>()[j]) slots.push_back(j);
  auto y = at::empty({n, heads * dh}, qkv.options());
  auto k = at::empty({n, heads, dh}, qkv.options());
  const Strides st{qkv.stride(0), 0, qkv.stride(1), qkv.stride(2)};
  const Strides cs{cache_k.stride(0), cache_k.stride(2), 0, cache_k.stride(1)};
  by_width(dh, op, [&]<int64_t DV>() {
    cached_rows<DV>(qkv.data_ptr<float>(), st, n, heads, q_weight.contiguous().data_ptr<float>(),
                    k_weight.contiguous().data_ptr<float>(), static_cast<float>(eps), static_cast<float>(scale),
                    cache_k.data_ptr<float>(), cache_v.data_ptr<float>(), cs, slots, y.data_ptr<float>(),
                    k.data_ptr<float>());
  });
  return {y, k};
}

typedef double dvec __attribute__((vector_size(8 * sizeof(double))));
inline dvec widen_sum(vec e) {  // the 16 floats summed pairwise into 8 doubles
  return __builtin_convertvector(low8(e), dvec) + __builtin_convertvector(high8(e), dvec);
}

// Softmax numerators exp(z * inv_t - top) of z[0..n) (float32), n <= 16 per call through `part`.
inline vec numerators(const float* z, int64_t n, float inv_t, float top) {
  const vec x = n == LANES ? load(z) : load_part(z, n, 0.f);
  const vec e = vexp(x * inv_t - top);
  return n == LANES ? e : fill_from(e, n, 0.f);
}

at::Tensor maskgit_sample(const at::Tensor& logits, const at::Tensor& ids, int64_t mask_id, const at::Tensor& u,
                          const at::Tensor& keep, const at::Tensor& inv_temperature, int64_t block) {
  const char* op = "genie::maskgit_sample";
  TORCH_CHECK(logits.device().is_cpu() && logits.scalar_type() == at::kFloat && logits.dim() == 3, op,
              " takes float32 CPU logits [B, S, V], got ", logits.scalar_type(), " ", logits.sizes());
  const int64_t b = logits.size(0), s = logits.size(1), v = logits.size(2);
  TORCH_CHECK(ids.scalar_type() == at::kLong && ids.sizes() == at::IntArrayRef({b, s}), op, ": ids must be int64 [",
              b, ", ", s, "], got ", ids.scalar_type(), " ", ids.sizes());
  TORCH_CHECK(u.scalar_type() == at::kDouble && u.sizes() == at::IntArrayRef({b, s}), op, ": u must be float64 [", b,
              ", ", s, "], got ", u.scalar_type(), " ", u.sizes());
  TORCH_CHECK(keep.numel() == 1 && inv_temperature.numel() == 1, op, " takes keep and inv_temperature as one number each");
  const int64_t blk = v % block == 0 ? block : v, blocks = v / blk;
  const at::Tensor z_all = logits.contiguous(), ids_c = ids.contiguous().cpu(), u_c = u.contiguous();
  const float inv_t = inv_temperature.item<float>();
  const int64_t still = keep.item<int64_t>();
  auto out = at::empty({b, s}, ids.options());
  std::vector<double> confidence(b * s);
  const float* zp = z_all.data_ptr<float>();
  const int64_t* idp = ids_c.data_ptr<int64_t>();
  const double* up = u_c.data_ptr<double>();
  int64_t* op_ = out.data_ptr<int64_t>();
  at::parallel_for(0, b * s, std::max<int64_t>(1, 16384 / v), [&](int64_t begin, int64_t end) {
    std::vector<double> cdf(blocks);
    std::vector<float> inside(blk);
    for (int64_t r = begin; r < end; ++r) {
      if (idp[r] != mask_id) {  // known: kept, and never re-masked
        op_[r] = idp[r];
        confidence[r] = std::numeric_limits<double>::infinity();
        continue;
      }
      const float* z = zp + r * v;
      vec m = splat(-std::numeric_limits<float>::infinity());
      for (int64_t j = 0; j < v; j += LANES) {
        const int64_t n = std::min(LANES, v - j);
        m = vmax(m, (n == LANES ? load(z + j) : load_part(z + j, n, -std::numeric_limits<float>::infinity())) * inv_t);
      }
      const float top = hmax(m);
      double run = 0.0;
      for (int64_t k = 0; k < blocks; ++k) {  // float32 numerators, summed per block in float64
        dvec acc{};
        for (int64_t j = 0; j < blk; j += LANES) acc += widen_sum(numerators(z + k * blk + j, std::min(LANES, blk - j), inv_t, top));
        double sum = 0.0;
        for (int64_t l = 0; l < 8; ++l) sum += acc[l];
        cdf[k] = run += sum;
      }
      const double total = cdf[blocks - 1], target = up[r] * total;
      int64_t k = 0;
      while (k < blocks - 1 && cdf[k] < target) ++k;
      const double before = k > 0 ? cdf[k - 1] : 0.0;
      for (int64_t j = 0; j < blk; j += LANES) {
        const int64_t n = std::min(LANES, blk - j);
        const vec e = numerators(z + k * blk + j, n, inv_t, top);
        std::memcpy(&inside[j], &e, n * sizeof(float));
      }
      double cum = 0.0;
      int64_t j = 0;
      for (; j < blk - 1; ++j) {  // the first entry whose cumulative sum reaches the target
        cum += inside[j];
        if (!(before + cum < target)) break;
      }
      op_[r] = k * blk + j;
      confidence[r] = std::log(static_cast<double>(inside[j]) / total);
    }
  });
  if (still > 0) {
    std::vector<int64_t> order(s);
    for (int64_t bi = 0; bi < b; ++bi) {  // the `keep` least confident of each row back under the mask
      const double* c = confidence.data() + bi * s;
      for (int64_t i = 0; i < s; ++i) order[i] = i;
      std::stable_sort(order.begin(), order.end(), [c](int64_t x, int64_t y) { return c[x] < c[y]; });
      for (int64_t i = 0; i < std::min(still, s); ++i) op_[bi * s + order[i]] = mask_id;
    }
  }
  return out;
}

}  // namespace

TORCH_LIBRARY(genie, m) {
  m.def("attention(Tensor qkv, Tensor q_weight, Tensor k_weight, float eps, float scale, bool causal, bool keys) "
        "-> (Tensor, Tensor)");
  m.def("cached_attention(Tensor qkv, Tensor q_weight, Tensor k_weight, float eps, Tensor cache_k, Tensor cache_v, "
        "Tensor valid, float scale) -> (Tensor, Tensor)");
  m.def("maskgit_sample(Tensor logits, Tensor ids, int mask_id, Tensor u, Tensor keep, Tensor inv_temperature, "
        "int block) -> Tensor");
}

TORCH_LIBRARY_IMPL(genie, CPU, m) {
  m.impl("attention", &attention);
  m.impl("cached_attention", &cached_attention);
  m.impl("maskgit_sample", &maskgit_sample);
}
