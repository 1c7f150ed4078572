// The fast sampler's gated resnets as compiled calls (native_blocks.py builds and loads it; native_chains.py
// calls it): a chain of ul blocks at one pixel (smoothing_block_chain), a u block over a whole row
// (smoothing_row_block), a shifted conv over a run of a row's outputs (smoothing_conv_rows).
//
// A pixel step of a ul-stream gated resnet at batch N and F filters (fast_ops.FastGatedResnet.pixel):
//   x_slot = concat_elu(x)                    the block input's cache slot, (N, 2F)
//   h      = term [+ skip_a @ w_skip] + a_in @ w_in        a_in: the patches that read x_slot, (N, K_in)
//   h_slot = concat_elu(h)
//   g      = base_out + a_out @ w_out                      (N, 2F)
//   out    = x + g[:, :F] * sigmoid(g[:, F:])
// Weights come packed once: (K, P) row-major with P the outputs padded to whole vectors, zeros beyond.
// The matmuls are register-tiled for batches of small rows (16 x 320 by 320 x 80: the sizes MKL runs at
// ~80 GFLOP/s on its AVX2 code); exp, expm1 and sigmoid are vectorised here to float rounding (a few ulp).
// Only float32. Strides are in elements; every row is contiguous.
#include <cstdint>
#include <cstring>

#if defined(__AVX512F__)
#define VMAX 5           // vectors per register tile (4 rows x 5 = 20 accumulators of 32 registers)
constexpr int W = 16;    // floats per vector
#elif defined(__AVX2__)
#define VMAX 3           // 4 x 3 = 12 accumulators of 16 registers
constexpr int W = 8;
#else
#define VMAX 3           // 128-bit vectors (SSE, NEON)
constexpr int W = 4;
#endif
constexpr int R = 4;     // rows per register tile

typedef float vf __attribute__((vector_size(W * 4)));
typedef int32_t vi __attribute__((vector_size(W * 4)));

static inline vf load(const float* p) { vf v; std::memcpy(&v, p, sizeof v); return v; }
static inline void store(float* p, vf v) { std::memcpy(p, &v, sizeof v); }
static inline vf splat(float x) { return vf{} + x; }

// exp(x), Cephes' single-precision range reduction and polynomial; NaN stays NaN, above log(FLT_MAX) it is
// inf. Below -86.6 it returns exp(-86.6) (~2e-38, where the true value is 0 to within 2e-38).
static inline vf vexp(vf x0) {
  vf x = x0 < -86.6f ? splat(-86.6f) : x0;
  x = x > 88.7228f ? splat(88.7228f) : x;
  vf t = x * 1.44269504088896341f;
  vf n = (t + 12582912.0f) - 12582912.0f;  // round to nearest (|t| < 2^22)
  vf r = x - n * 0.693359375f + n * 2.12194440e-4f;
  vf p = splat(1.9875691500e-4f);
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  p = p * r * r + r + 1.0f;
  vi bits = (__builtin_convertvector(n, vi) + 126) << 23;  // 2^(n - 1): n = 128 stays finite
  vf half_scale;
  std::memcpy(&half_scale, &bits, sizeof half_scale);
  vf y = p * half_scale * 2.0f;
  return x0 > 88.7228f ? splat(__builtin_inff()) : y;
}

// expm1(x): Taylor's series to x^8 where |x| < 0.5 (truncation below 2e-8 relative), else exp(x) - 1.
static inline vf vexpm1(vf x) {
  vf p = splat(1.0f / 40320);
  p = p * x + 1.0f / 5040;
  p = p * x + 1.0f / 720;
  p = p * x + 1.0f / 120;
  p = p * x + 1.0f / 24;
  p = p * x + 1.0f / 6;
  p = p * x + 0.5f;
  vf small = x + x * x * p;
  vf ax = x < 0.0f ? -x : x;
  return ax < 0.5f ? small : vexp(x) - 1.0f;  // NaN: not < 0.5, and exp(NaN) - 1 is NaN
}

static inline vf velu(vf x) { return x > 0.0f ? x : vexpm1(x); }
static inline vf vsigmoid(vf x) { return 1.0f / (1.0f + vexp(-x)); }

// c (m x nv*W, row stride ldc) = a (m x k) @ b (k x nv*W, packed). Row i of a starts at a + i * lda and is
// read in `segs` segments of k / segs contiguous floats, segment t at + t * seg_stride: a conv's patch over
// the rows of its window (segs = 1 and seg_stride unused for a plain matrix).
struct Lhs {
  const float* a;
  long lda, segs, seglen, seg_stride;
};

template <int RR, int V>
static inline void tile(const Lhs& x, const float* b, long ldb, float* c, long ldc) {
  vf acc[RR][V];
  for (int r = 0; r < RR; r++)
    for (int v = 0; v < V; v++) acc[r][v] = vf{};
  for (long t = 0; t < x.segs; t++) {
    const float* a = x.a + t * x.seg_stride;
    const float* bt = b + t * x.seglen * ldb;
    for (long q = 0; q < x.seglen; q++) {
      vf bv[V];
      for (int v = 0; v < V; v++) bv[v] = load(bt + q * ldb + W * v);
      for (int r = 0; r < RR; r++) {
        vf av = splat(a[r * x.lda + q]);
        for (int v = 0; v < V; v++) acc[r][v] += av * bv[v];
      }
    }
  }
  for (int r = 0; r < RR; r++)
    for (int v = 0; v < V; v++) store(c + r * ldc + W * v, acc[r][v]);
}

template <int RR>
static void tile_rows(const Lhs& x, long nv, const float* b, float* c, long ldc) {
  const long ldb = nv * W;
  long v = 0;
  for (; v + VMAX <= nv; v += VMAX) tile<RR, VMAX>(x, b + W * v, ldb, c + W * v, ldc);
  switch (nv - v) {
    case 1: tile<RR, 1>(x, b + W * v, ldb, c + W * v, ldc); break;
    case 2: tile<RR, 2>(x, b + W * v, ldb, c + W * v, ldc); break;
#if VMAX > 3
    case 3: tile<RR, 3>(x, b + W * v, ldb, c + W * v, ldc); break;
    case 4: tile<RR, 4>(x, b + W * v, ldb, c + W * v, ldc); break;
#endif
    default: break;
  }
}

static void gemm_segments(long m, Lhs x, long nv, const float* b, float* c) {
  const long ldc = nv * W;
  const float* a0 = x.a;
  long r = 0;
  for (; r + R <= m; r += R) {
    x.a = a0 + r * x.lda;
    tile_rows<R>(x, nv, b, c + r * ldc, ldc);
  }
  x.a = a0 + r * x.lda;
  switch (m - r) {
    case 1: tile_rows<1>(x, nv, b, c + r * ldc, ldc); break;
    case 2: tile_rows<2>(x, nv, b, c + r * ldc, ldc); break;
    case 3: tile_rows<3>(x, nv, b, c + r * ldc, ldc); break;
    default: break;
  }
}

static void gemm(long m, long k, long nv, const float* a, long lda, const float* b, float* c) {
  gemm_segments(m, Lhs{a, lda, 1, k, 0}, nv, b, c);
}

// dst[0, n) = f(src[0, n)) for a row of n floats, the tail through a padded vector
template <class Op>
static inline void map_row(const float* src, float* dst, long n, Op op) {
  long i = 0;
  for (; i + W <= n; i += W) store(dst + i, op(load(src + i)));
  if (i < n && n >= W && src != dst) {  // the tail as the last whole vector, recomputing a few values
    store(dst + n - W, op(load(src + n - W)));
  } else if (i < n) {
    float in[W] = {}, out[W];
    std::memcpy(in, src + i, (n - i) * 4);
    store(out, op(load(in)));
    std::memcpy(dst + i, out, (n - i) * 4);
  }
}

// slot (n x 2f) = concat_elu(x (n x f)) = [elu(x), elu(-x)]
static void concat_elu(long n, long f, const float* x, long ldx, float* slot, long ld_slot) {
  for (long r = 0; r < n; r++) {
    map_row(x + r * ldx, slot + r * ld_slot, f, velu);
    map_row(x + r * ldx, slot + r * ld_slot + f, f, [](vf v) { return velu(-v); });
  }
}

extern "C" {

// One block's pointers and strides at one column (fast_ops.FastGatedResnet.native_steps fills them).
struct Block {
  int64_t n, f, k_in, k_out, k_skip;       // batch, filters, K of conv_input, conv_out and the skip NIN
  float* x_slot; int64_t ld_x_slot;         // concat_elu(block input) goes here
  const float* a_in; int64_t ld_a_in;       // conv_input's patches (read x_slot)
  const float* w_in;                        // (k_in, nv_f * W) packed
  const float* term; int64_t ld_term;       // the base of h, (n, f) (ld_term = 0: one row for all)
  const float* skip_a; int64_t ld_skip_a;   // the skip NIN's input (n, 2f), or null
  int64_t skip_raw;                         // 1: skip_a is (n, f) raw values, concat_elu them first
  const float* w_skip;                      // (k_skip, nv_f * W) packed
  float* h_slot; int64_t ld_h_slot;         // concat_elu(h) goes here
  const float* a_out; int64_t ld_a_out;     // conv_out's patches (read h_slot)
  const float* w_out;                       // (k_out, nv_2f * W) packed
  const float* base_out; int64_t ld_base_out;  // bias of g, (n, 2f) (ld 0: one row for all)
  float* out;                               // the block output (n, f), contiguous
  float* scratch;                           // (n, (nv_f + nv_2f) * W + 2f) floats
};

// Run count blocks in order: the first reads x (row stride ldx), each next one the previous block's out.
void smoothing_block_chain(const Block* blocks, int64_t count, const float* x, int64_t ldx) {
  for (int64_t b = 0; b < count; b++) {
    const Block& d = blocks[b];
    if (b > 0) { x = blocks[b - 1].out; ldx = blocks[b - 1].f; }
    const long n = d.n, f = d.f, nv_f = (f + W - 1) / W, nv_g = (2 * f + W - 1) / W;
    float* h = d.scratch;                   // (n, nv_f * W)
    float* g = h + n * nv_f * W;            // (n, nv_g * W)
    float* skip_in = g + n * nv_g * W;      // (n, 2f)
    concat_elu(n, f, x, ldx, d.x_slot, d.ld_x_slot);
    // h = term + skip_a @ w_skip + a_in @ w_in, in the order eager addmm's add them
    gemm(n, d.k_in, nv_f, d.a_in, d.ld_a_in, d.w_in, h);
    const float* skip = nullptr;
    long ld_skip = 0;
    if (d.skip_a) {
      skip = d.skip_a, ld_skip = d.ld_skip_a;
      if (d.skip_raw) {
        concat_elu(n, f, d.skip_a, d.ld_skip_a, skip_in, 2 * f);
        skip = skip_in, ld_skip = 2 * f;
      }
      float* s = g;  // g is free until conv_out: the skip term goes there first
      gemm(n, d.k_skip, nv_f, skip, ld_skip, d.w_skip, s);
      for (long r = 0; r < n; r++)
        for (long c = 0; c < f; c++) h[r * nv_f * W + c] += d.term[r * d.ld_term + c] + s[r * nv_f * W + c];
    } else {
      for (long r = 0; r < n; r++)
        for (long c = 0; c < f; c++) h[r * nv_f * W + c] += d.term[r * d.ld_term + c];
    }
    concat_elu(n, f, h, nv_f * W, d.h_slot, d.ld_h_slot);
    gemm(n, d.k_out, nv_g, d.a_out, d.ld_a_out, d.w_out, g);
    for (long r = 0; r < n; r++) {
      float* gr = g + r * nv_g * W;
      const float* base = d.base_out + r * d.ld_base_out;
      for (long c = 0; c < 2 * f; c++) gr[c] += base[c];
      map_row(gr + f, gr + f, f, vsigmoid);
      const float* xr = x + r * ldx;
      float* o = d.out + r * f;
      for (long c = 0; c < f; c++) o[c] = xr[c] + gr[c] * gr[f + c];
    }
  }
}

// The vector math and the matmul alone, for the tests (tests/trainables/test_native_blocks.py).
void smoothing_map(int64_t op, const float* x, float* y, int64_t n) {
  switch (op) {
    case 0: map_row(x, y, n, vexp); break;
    case 1: map_row(x, y, n, vexpm1); break;
    case 2: map_row(x, y, n, velu); break;
    case 3: map_row(x, y, n, vsigmoid); break;
    default: break;
  }
}

void smoothing_gemm(int64_t m, int64_t k, int64_t nv, const float* a, int64_t lda, const float* b, float* c) {
  gemm(m, k, nv, a, lda, b, c);
}

// out[i, j] = concat_elu(x[i, j]) for (outer, inner) positions of f channels: the u stream's rows.
void smoothing_concat_elu(int64_t outer, int64_t inner, int64_t f, const float* x, int64_t xs0, int64_t xs1,
                          float* out, int64_t os0, int64_t os1) {
  for (int64_t i = 0; i < outer; i++)
    for (int64_t j = 0; j < inner; j++) concat_elu(1, f, x + i * xs0 + j * xs1, 0, out + i * os0 + j * os1, 0);
}

// One u-stream gated resnet over a whole row (fast_ops.FastGatedResnet.__call__ at column 0): the caches'
// current rows and their conv windows (the row above and this one, from the left margin) do not move.
struct RowBlock {
  int64_t n, m, f;                           // batch, row width, filters
  float* x_row; int64_t x_row_batch;         // x_map's current row at column 0: (n, m, 2f), positions 2f apart
  const float* x_win; int64_t x_win_batch, x_win_row, kh_in, kw_in;  // conv_input's window
  const float* w_in;                         // (kh_in * kw_in * 2f, nv_f * W) packed
  const float* bias_in;                      // (f): h's biases where no skip term is given
  float* h_row; int64_t h_row_batch;
  const float* h_win; int64_t h_win_batch, h_win_row, kh_out, kw_out;
  const float* w_out;                        // (kh_out * kw_out * 2f, nv_g * W) packed
  const float* base_out; int64_t base_out_batch, base_out_ld;  // (n, m, 2f) conditioning row, or a bias (0, 0)
  float* scratch;                            // m * (nv_f + nv_g) * W floats
};

// out (n, m, f), contiguous = the block's output for input x (strides xs0, xs1), given elu_x = concat_elu(x)
// (strides es0, es1) and the skip term (n, m, f) (strides ss0, ss1; null: bias_in).
void smoothing_row_block(const RowBlock* d, const float* x, int64_t xs0, int64_t xs1, const float* elu_x,
                         int64_t es0, int64_t es1, const float* skip, int64_t ss0, int64_t ss1, float* out) {
  const long n = d->n, m = d->m, f = d->f, nv_f = (f + W - 1) / W, nv_g = (2 * f + W - 1) / W;
  float* h = d->scratch;
  float* g = h + m * nv_f * W;
  for (long i = 0; i < n; i++) {
    float* x_row = d->x_row + i * d->x_row_batch;
    for (long j = 0; j < m; j++) std::memcpy(x_row + j * 2 * f, elu_x + i * es0 + j * es1, 2 * f * sizeof(float));
    gemm_segments(m, Lhs{d->x_win + i * d->x_win_batch, 2 * f, d->kh_in, d->kw_in * 2 * f, d->x_win_row}, nv_f, d->w_in, h);
    for (long j = 0; j < m; j++) {
      float* hj = h + j * nv_f * W;
      const float* base = skip ? skip + i * ss0 + j * ss1 : d->bias_in;
      for (long c = 0; c < f; c++) hj[c] = base[c] + hj[c];
    }
    concat_elu(m, f, h, nv_f * W, d->h_row + i * d->h_row_batch, 2 * f);
    gemm_segments(m, Lhs{d->h_win + i * d->h_win_batch, 2 * f, d->kh_out, d->kw_out * 2 * f, d->h_win_row}, nv_g, d->w_out, g);
    for (long j = 0; j < m; j++) {
      float* gj = g + j * nv_g * W;
      const float* base = d->base_out + i * d->base_out_batch + j * d->base_out_ld;
      for (long c = 0; c < 2 * f; c++) gj[c] = base[c] + gj[c];
      map_row(gj + f, gj + f, f, vsigmoid);
      const float* xj = x + i * xs0 + j * xs1;
      float* o = out + (i * m + j) * f;
      for (long c = 0; c < f; c++) o[c] = xj[c] + gj[c] * gj[f + c];
    }
  }
}

// A shifted conv at a run of m outputs of one row, for every image: out (batch, m, cout), contiguous, =
// base + the patches @ w. Image i's window starts at window + i * window_batch; output j's patch at + j * lda
// (the conv's stride times the channels), read as `rows` rows of seglen floats (the filter's columns times
// the channels), row t at + t * row_stride. base (i, j, c) at base + i * base_batch + j * base_ld + c (0
// strides: one bias for all). scratch: m * nv * W floats.
void smoothing_conv_rows(int64_t batch, int64_t m, const float* window, int64_t window_batch, int64_t lda,
                         int64_t rows, int64_t seglen, int64_t row_stride, const float* w, int64_t nv, int64_t cout,
                         const float* base, int64_t base_batch, int64_t base_ld, float* out, float* scratch) {
  for (int64_t i = 0; i < batch; i++) {
    gemm_segments(m, Lhs{window + i * window_batch, lda, rows, seglen, row_stride}, nv, w, scratch);
    for (int64_t j = 0; j < m; j++) {
      const float* src = scratch + j * nv * W;
      const float* bias = base + i * base_batch + j * base_ld;
      float* dst = out + (i * m + j) * cout;
      for (int64_t c = 0; c < cout; c++) dst[c] = bias[c] + src[c];
    }
  }
}

int64_t smoothing_vector_width(void) { return W; }

}  // extern "C"
