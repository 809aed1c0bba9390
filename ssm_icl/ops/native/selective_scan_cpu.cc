// Fused CPU selective scan (Mamba v1 S6 recurrence) as XLA FFI custom calls.
//
// Built on first use by ssm_icl/ops/native_scan.py (which documents the
// build, the cache and the fallback) and called through `jax.ffi.ffi_call`.
//
// XLA:CPU runs a `lax.scan` step as a dozen small kernels on one [b, n, e]
// state; their per-kernel cost, not arithmetic, dominates the Mamba train
// step on CPU. Here one call runs the whole recurrence of a layer: one batch
// row per task on XLA's intra-op thread pool, the state of a row ([n, e],
// e contiguous so the inner loops vectorise) in cache for all its steps.
//
// Recurrence, per batch row, with a_t = exp(delta_t * A):
//   h_t = a_t * h_{t-1} + du_t * B_t,   y_t = sum_n C_t h_t
// Backward (g_t = dL/dh_t including the paths through later states):
//   g_t = C_t dy_t + a_{t+1} g_{t+1}
//   dL/d delta_t = sum_n g_t h_{t-1} a_t A,   dL/dA = sum_{b,t} g_t h_{t-1} a_t delta_t
//   dL/d du_t = sum_n g_t B_t,  dL/dB_t = sum_e g_t du_t,  dL/dC_t = sum_e h_t dy_t
// The forward pass saves the state entering every chunk of `chunk` steps;
// the backward pass recomputes one chunk of states at a time (memory
// O(b l e / chunk * n) instead of O(b l e n)).
//
// Every operand and result has the batch as its leading axis, so XLA may
// split the call along the batch (registered as batch partitionable); dA is
// therefore returned per batch row and summed by the caller.
//
// Shapes: b batch, l length, e channels (d_inner), n d_state, c chunks.
// All buffers are float32, row-major.

#include <algorithm>
#include <atomic>
#include <cmath>
#include <condition_variable>
#include <cstdint>
#include <cstring>
#include <memory>
#include <mutex>
#include <vector>

#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;

namespace {

// exp(x) for x <= ~88 by range reduction and a degree-6 polynomial (relative
// error ~2e-7); written branch-free so the compiler vectorises the loops that
// call it (a libm call would not be). Inputs below -87 flush to ~0, which is
// where float32 exp underflows anyway.
inline float FastExp(float x) {
  // A ternary clamp (not fmin/fmax, which block vectorisation) keeps NaN.
  x = x < -87.0f ? -87.0f : (x > 88.0f ? 88.0f : x);
  const float n = std::nearbyint(x * 1.44269504088896341f);
  const float r = (x - n * 0.693359375f) + n * 2.12194440e-4f;
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  p = p * r * r + r + 1.0f;
  // 2^n from its exponent bits (a bit cast, not memcpy, so it vectorises).
  const int32_t bits = (static_cast<int32_t>(n) + 127) << 23;
  return p * __builtin_bit_cast(float, bits);
}

// Runs body(row) for row in [0, rows) on XLA's intra-op thread pool and
// waits. The calling thread takes rows too and waits only for rows taken by
// others, never for a scheduled task to start: a task that starts after
// every row is taken (or after this returned, when the pool was busy) finds
// none and touches nothing but the shared counters it co-owns.
template <typename F>
void ParallelRows(ffi::ThreadPool& pool, int64_t rows, const F& body) {
  const int64_t workers = std::min<int64_t>(rows, pool.num_threads());
  if (workers <= 1) {
    for (int64_t r = 0; r < rows; ++r) body(r);
    return;
  }
  struct Shared {
    std::atomic<int64_t> next{0};
    int64_t finished = 0;
    std::mutex mu;
    std::condition_variable cv;
  };
  auto shared = std::make_shared<Shared>();
  auto work = [rows, &body](Shared& s) {
    for (int64_t r = s.next.fetch_add(1); r < rows; r = s.next.fetch_add(1)) {
      body(r);
      std::lock_guard<std::mutex> lock(s.mu);
      if (++s.finished == rows) s.cv.notify_all();
    }
  };
  for (int64_t w = 1; w < workers; ++w) {
    pool.Schedule([shared, work]() { work(*shared); });
  }
  work(*shared);
  std::unique_lock<std::mutex> lock(shared->mu);
  shared->cv.wait(lock, [&] { return shared->finished == rows; });
}

struct Dims {
  int64_t b, l, e, n, chunk, c;
};

// The call's sizes from delta [b, l, e] and A [b, n, e]; false on bad ranks
// or chunk (the Python wrapper never passes those).
bool MakeDims(const ffi::Buffer<ffi::F32>& delta,
              const ffi::Buffer<ffi::F32>& A, int64_t chunk, Dims& d) {
  const auto dims = delta.dimensions();
  const auto a_dims = A.dimensions();
  if (dims.size() != 3 || a_dims.size() != 3 || chunk < 1) return false;
  d = Dims{dims[0], dims[1], dims[2], a_dims[1], chunk,
           (dims[1] + chunk - 1) / chunk};
  return true;
}

// The inner loops over e, on one state row i (restrict: no aliasing, so
// they vectorise).

// h = exp(delta * a) * h + du * b_i; y += h * c_i.
inline void ForwardRow(int64_t e, const float* __restrict__ a,
                       const float* __restrict__ delta,
                       const float* __restrict__ du, float b_i, float c_i,
                       float* __restrict__ h, float* __restrict__ y) {
  for (int64_t j = 0; j < e; ++j) {
    const float hv = FastExp(delta[j] * a[j]) * h[j] + du[j] * b_i;
    h[j] = hv;
    y[j] += hv * c_i;
  }
}

// decay = exp(delta * a); next = decay * prev + du * b_i.
inline void RecomputeRow(int64_t e, const float* __restrict__ a,
                         const float* __restrict__ delta,
                         const float* __restrict__ du, float b_i,
                         const float* __restrict__ prev,
                         float* __restrict__ next, float* __restrict__ decay) {
  for (int64_t j = 0; j < e; ++j) {
    const float av = FastExp(delta[j] * a[j]);
    decay[j] = av;
    next[j] = av * prev[j] + du[j] * b_i;
  }
}

struct RowGrads {
  float db, dc;
};

// One reverse step on row i: g (carried, times the later decay) gains
// c_i * dy; accumulates d_delta, dA, d_du; returns dB_i and dC_i.
inline RowGrads BackwardRow(int64_t e, const float* __restrict__ a,
                            const float* __restrict__ delta,
                            const float* __restrict__ du, float b_i, float c_i,
                            const float* __restrict__ dy,
                            const float* __restrict__ prev,
                            const float* __restrict__ cur,
                            const float* __restrict__ decay,
                            float* __restrict__ g, float* __restrict__ d_delta,
                            float* __restrict__ da,
                            float* __restrict__ d_du) {
  float db = 0.0f, dc = 0.0f;
  for (int64_t j = 0; j < e; ++j) {
    const float gv = g[j] + c_i * dy[j];
    const float gla = gv * prev[j] * decay[j];  // dL/d(delta a)
    d_delta[j] += gla * a[j];
    da[j] += gla * delta[j];
    d_du[j] += gv * b_i;
    db += gv * du[j];
    dc += cur[j] * dy[j];
    g[j] = gv * decay[j];
  }
  return {db, dc};
}

ffi::Error Forward(ffi::ThreadPool pool, ffi::Buffer<ffi::F32> delta,
                   ffi::Buffer<ffi::F32> du, ffi::Buffer<ffi::F32> A,
                   ffi::Buffer<ffi::F32> B, ffi::Buffer<ffi::F32> C,
                   ffi::Buffer<ffi::F32> h0, int64_t chunk,
                   ffi::ResultBuffer<ffi::F32> y,
                   ffi::ResultBuffer<ffi::F32> h_last,
                   ffi::ResultBuffer<ffi::F32> starts) {
  // delta, du, y: [b, l, e]; A: [b, n, e] (A broadcast over the batch);
  // B, C: [b, l, n]; h0, h_last: [b, n, e]; starts: [b, c, n, e].
  Dims d;
  if (!MakeDims(delta, A, chunk, d)) {
    return ffi::Error::InvalidArgument("selective scan: bad ranks or chunk");
  }
  const float* delta_p = delta.typed_data();
  const float* du_p = du.typed_data();
  const float* a_p = A.typed_data();
  const float* b_p = B.typed_data();
  const float* c_p = C.typed_data();
  const float* h0_p = h0.typed_data();
  float* y_p = y->typed_data();
  float* h_p = h_last->typed_data();
  float* s_p = starts->typed_data();
  const int64_t state = d.n * d.e;
  ParallelRows(pool, d.b, [&](int64_t r) {
    float* h = h_p + r * state;
    std::memcpy(h, h0_p + r * state, state * sizeof(float));
    for (int64_t t = 0; t < d.l; ++t) {
      if (t % d.chunk == 0) {
        std::memcpy(s_p + (r * d.c + t / d.chunk) * state, h,
                    state * sizeof(float));
      }
      const int64_t x = r * d.l + t;
      float* yt = y_p + x * d.e;
      std::fill(yt, yt + d.e, 0.0f);
      for (int64_t i = 0; i < d.n; ++i) {
        ForwardRow(d.e, a_p + r * state + i * d.e, delta_p + x * d.e,
                   du_p + x * d.e, b_p[x * d.n + i], c_p[x * d.n + i],
                   h + i * d.e, yt);
      }
    }
  });
  return ffi::Error::Success();
}

ffi::Error Backward(ffi::ThreadPool pool, ffi::Buffer<ffi::F32> delta,
                    ffi::Buffer<ffi::F32> du, ffi::Buffer<ffi::F32> A,
                    ffi::Buffer<ffi::F32> B, ffi::Buffer<ffi::F32> C,
                    ffi::Buffer<ffi::F32> starts, ffi::Buffer<ffi::F32> dy,
                    ffi::Buffer<ffi::F32> dh_last, int64_t chunk,
                    ffi::ResultBuffer<ffi::F32> d_delta,
                    ffi::ResultBuffer<ffi::F32> d_du,
                    ffi::ResultBuffer<ffi::F32> dA,
                    ffi::ResultBuffer<ffi::F32> dB,
                    ffi::ResultBuffer<ffi::F32> dC,
                    ffi::ResultBuffer<ffi::F32> dh0) {
  // As Forward; dy, d_delta, d_du: [b, l, e]; dB, dC: [b, l, n];
  // dA (per batch row), dh_last, dh0: [b, n, e].
  Dims d;
  if (!MakeDims(delta, A, chunk, d)) {
    return ffi::Error::InvalidArgument("selective scan: bad ranks or chunk");
  }
  const float* delta_p = delta.typed_data();
  const float* du_p = du.typed_data();
  const float* a_p = A.typed_data();
  const float* b_p = B.typed_data();
  const float* c_p = C.typed_data();
  const float* s_p = starts.typed_data();
  const float* dy_p = dy.typed_data();
  const float* dh_p = dh_last.typed_data();
  float* dd_p = d_delta->typed_data();
  float* ddu_p = d_du->typed_data();
  float* da_p = dA->typed_data();
  float* db_p = dB->typed_data();
  float* dc_p = dC->typed_data();
  float* dh0_p = dh0->typed_data();
  const int64_t state = d.n * d.e;
  ParallelRows(pool, d.b, [&](int64_t r) {
    const float* a_row = a_p + r * state;
    // hs[k]: the state after k steps of the chunk (hs[0] = its entry);
    // decay[k]: a of step k.
    std::vector<float> hs((d.chunk + 1) * state), decay(d.chunk * state);
    float* g = dh0_p + r * state;  // Carried as g_{t+1} * a_{t+1}.
    std::memcpy(g, dh_p + r * state, state * sizeof(float));
    float* da = da_p + r * state;
    std::fill(da, da + state, 0.0f);
    for (int64_t ci = d.c - 1; ci >= 0; --ci) {
      const int64_t t0 = ci * d.chunk, t1 = std::min(d.l, t0 + d.chunk);
      std::memcpy(hs.data(), s_p + (r * d.c + ci) * state,
                  state * sizeof(float));
      for (int64_t t = t0; t < t1; ++t) {
        const int64_t x = r * d.l + t, k = t - t0;
        const float* dl = delta_p + x * d.e;
        const float* u = du_p + x * d.e;
        const float* bt = b_p + x * d.n;
        for (int64_t i = 0; i < d.n; ++i) {
          RecomputeRow(d.e, a_row + i * d.e, dl, u, bt[i],
                       hs.data() + k * state + i * d.e,
                       hs.data() + (k + 1) * state + i * d.e,
                       decay.data() + k * state + i * d.e);
        }
      }
      for (int64_t t = t1 - 1; t >= t0; --t) {
        const int64_t x = r * d.l + t, k = t - t0;
        const float* dl = delta_p + x * d.e;
        const float* u = du_p + x * d.e;
        const float* bt = b_p + x * d.n;
        const float* ct = c_p + x * d.n;
        const float* dyt = dy_p + x * d.e;
        float* ddt = dd_p + x * d.e;
        float* ddut = ddu_p + x * d.e;
        for (int64_t j = 0; j < d.e; ++j) ddt[j] = ddut[j] = 0.0f;
        for (int64_t i = 0; i < d.n; ++i) {
          const int64_t o = i * d.e;
          const RowGrads rg = BackwardRow(
              d.e, a_row + o, dl, u, bt[i], ct[i], dyt,
              hs.data() + k * state + o, hs.data() + (k + 1) * state + o,
              decay.data() + k * state + o, g + o, ddt, da + o, ddut);
          db_p[x * d.n + i] = rg.db;
          dc_p[x * d.n + i] = rg.dc;
        }
      }
    }
  });
  return ffi::Error::Success();
}

}  // namespace

XLA_FFI_DEFINE_HANDLER_SYMBOL(
    SsmIclSelectiveScanFwd, Forward,
    ffi::Ffi::Bind()
        .Ctx<ffi::ThreadPool>()
        .Arg<ffi::Buffer<ffi::F32>>()  // delta
        .Arg<ffi::Buffer<ffi::F32>>()  // du
        .Arg<ffi::Buffer<ffi::F32>>()  // A
        .Arg<ffi::Buffer<ffi::F32>>()  // B
        .Arg<ffi::Buffer<ffi::F32>>()  // C
        .Arg<ffi::Buffer<ffi::F32>>()  // h0
        .Attr<int64_t>("chunk")
        .Ret<ffi::Buffer<ffi::F32>>()  // y
        .Ret<ffi::Buffer<ffi::F32>>()  // h_last
        .Ret<ffi::Buffer<ffi::F32>>());  // starts

XLA_FFI_DEFINE_HANDLER_SYMBOL(
    SsmIclSelectiveScanBwd, Backward,
    ffi::Ffi::Bind()
        .Ctx<ffi::ThreadPool>()
        .Arg<ffi::Buffer<ffi::F32>>()  // delta
        .Arg<ffi::Buffer<ffi::F32>>()  // du
        .Arg<ffi::Buffer<ffi::F32>>()  // A
        .Arg<ffi::Buffer<ffi::F32>>()  // B
        .Arg<ffi::Buffer<ffi::F32>>()  // C
        .Arg<ffi::Buffer<ffi::F32>>()  // starts
        .Arg<ffi::Buffer<ffi::F32>>()  // dy
        .Arg<ffi::Buffer<ffi::F32>>()  // dh_last
        .Attr<int64_t>("chunk")
        .Ret<ffi::Buffer<ffi::F32>>()  // d_delta
        .Ret<ffi::Buffer<ffi::F32>>()  // d_du
        .Ret<ffi::Buffer<ffi::F32>>()  // dA per batch row
        .Ret<ffi::Buffer<ffi::F32>>()  // dB
        .Ret<ffi::Buffer<ffi::F32>>()  // dC
        .Ret<ffi::Buffer<ffi::F32>>());  // dh0
