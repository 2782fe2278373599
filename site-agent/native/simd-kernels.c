/*
 * Kernels in wasm SIMD128 for training on the WASM backend (NHWC tensors, HWIO filters): the
 * forward convolution (which, on flipped filters, is also the input gradient), the filter gradient
 * dW, and element-wise ops with one value per channel or per (sample, channel) (norm layers'
 * scale and shift). The convolutions are register-tiled GEMMs: 4 rows (pixels or input channels)
 * × 8 output channels in eight accumulators, one broadcast load per row and two vector loads per
 * reduction step.
 *
 * The module imports tfjs-backend-wasm's own memory and works on tensors where they lie: no copy
 * in or out. So it must never write memory of its own: no static data, no shadow stack (build.sh
 * checks the compiled module for both); every pointer is an address the caller allocated.
 *
 * Why dW exists: XNNPACK (inside tfjs-backend-wasm) computes dW as a forward convolution whose
 * "filter" is dy, so every call repacks a new filter, and its GEMM streams the whole reduction
 * (N·OH·OW pixels) from memory for every output tile. Here the reduction is cut into blocks of a
 * few output rows that stay in cache while every tap and channel tile of dW accumulates over
 * them, and no operand is repacked. The forward convolution likewise reads the filter as it is
 * (XNNPACK packs it on every call, and in training it changes every step).
 *
 * dw[ky][kx][ci][co] = sum over (n, oy, ox) of x[n][oy·sh + ky − top][ox·sw + kx − left][ci] · dy[n][oy][ox][co]
 * (taps that fall into the padding contribute nothing). Requires cin % 4 == 0 and cout % 4 == 0;
 * the caller uses another path for other shapes.
 *
 * Freestanding C (no libc), built by build.sh into simd-kernels.wasm, which is committed.
 */
#include <wasm_simd128.h>

#define EXPORT(name) __attribute__((export_name(name)))

/* Output rows per reduction block: x rows (ROWS·sh + kh) and dy rows (ROWS) of one image stay in cache. */
#define ROWS 4

static inline int max_i(int a, int b) { return a > b ? a : b; }
static inline int min_i(int a, int b) { return a < b ? a : b; }
/* ceil(a / b) for b > 0 and any sign of a. */
static inline int ceil_div(int a, int b) { return a >= 0 ? (a + b - 1) / b : -((-a) / b); }
/* floor(a / b) for b > 0 and any sign of a. */
static inline int floor_div(int a, int b) { return a >= 0 ? a / b : -((-a + b - 1) / b); }

/* 4 input channels × 8 output channels: eight accumulators, two dy loads, four broadcasts per pixel. */
static void tile4x8(const float *x, const float *dy, float *dw, int cout, int rows, int x_row_stride,
                    int dy_row_stride, int x_px_stride, int count) {
  v128_t a00 = wasm_v128_load(dw), a01 = wasm_v128_load(dw + 4);
  v128_t a10 = wasm_v128_load(dw + cout), a11 = wasm_v128_load(dw + cout + 4);
  v128_t a20 = wasm_v128_load(dw + 2 * cout), a21 = wasm_v128_load(dw + 2 * cout + 4);
  v128_t a30 = wasm_v128_load(dw + 3 * cout), a31 = wasm_v128_load(dw + 3 * cout + 4);
  for (int r = 0; r < rows; r++) {
    const float *xp = x + r * x_row_stride;
    const float *dp = dy + r * dy_row_stride;
    for (int i = 0; i < count; i++, xp += x_px_stride, dp += cout) {
      v128_t d0 = wasm_v128_load(dp), d1 = wasm_v128_load(dp + 4);
      v128_t b0 = wasm_v128_load32_splat(xp);
      v128_t b1 = wasm_v128_load32_splat(xp + 1);
      v128_t b2 = wasm_v128_load32_splat(xp + 2);
      v128_t b3 = wasm_v128_load32_splat(xp + 3);
      a00 = wasm_f32x4_add(a00, wasm_f32x4_mul(b0, d0));
      a01 = wasm_f32x4_add(a01, wasm_f32x4_mul(b0, d1));
      a10 = wasm_f32x4_add(a10, wasm_f32x4_mul(b1, d0));
      a11 = wasm_f32x4_add(a11, wasm_f32x4_mul(b1, d1));
      a20 = wasm_f32x4_add(a20, wasm_f32x4_mul(b2, d0));
      a21 = wasm_f32x4_add(a21, wasm_f32x4_mul(b2, d1));
      a30 = wasm_f32x4_add(a30, wasm_f32x4_mul(b3, d0));
      a31 = wasm_f32x4_add(a31, wasm_f32x4_mul(b3, d1));
    }
  }
  wasm_v128_store(dw, a00), wasm_v128_store(dw + 4, a01);
  wasm_v128_store(dw + cout, a10), wasm_v128_store(dw + cout + 4, a11);
  wasm_v128_store(dw + 2 * cout, a20), wasm_v128_store(dw + 2 * cout + 4, a21);
  wasm_v128_store(dw + 3 * cout, a30), wasm_v128_store(dw + 3 * cout + 4, a31);
}

/* 4 input channels × 4 output channels: the remainder when cout is not a multiple of 8. */
static void tile4x4(const float *x, const float *dy, float *dw, int cout, int rows, int x_row_stride,
                    int dy_row_stride, int x_px_stride, int count) {
  v128_t a0 = wasm_v128_load(dw), a1 = wasm_v128_load(dw + cout);
  v128_t a2 = wasm_v128_load(dw + 2 * cout), a3 = wasm_v128_load(dw + 3 * cout);
  for (int r = 0; r < rows; r++) {
    const float *xp = x + r * x_row_stride;
    const float *dp = dy + r * dy_row_stride;
    for (int i = 0; i < count; i++, xp += x_px_stride, dp += cout) {
      v128_t d = wasm_v128_load(dp);
      a0 = wasm_f32x4_add(a0, wasm_f32x4_mul(wasm_v128_load32_splat(xp), d));
      a1 = wasm_f32x4_add(a1, wasm_f32x4_mul(wasm_v128_load32_splat(xp + 1), d));
      a2 = wasm_f32x4_add(a2, wasm_f32x4_mul(wasm_v128_load32_splat(xp + 2), d));
      a3 = wasm_f32x4_add(a3, wasm_f32x4_mul(wasm_v128_load32_splat(xp + 3), d));
    }
  }
  wasm_v128_store(dw, a0), wasm_v128_store(dw + cout, a1);
  wasm_v128_store(dw + 2 * cout, a2), wasm_v128_store(dw + 3 * cout, a3);
}

/*
 * dW. x: [n, h, w, cin], dy: [n, oh, ow, cout], dw: [kh, kw, cin, cout] (overwritten).
 * Strides sh, sw ≥ 1; top/left are the forward convolution's leading padding; no dilation.
 */
EXPORT("conv_filter_grad")
void conv_filter_grad(const float *x, const float *dy, float *dw, int n, int h, int w, int cin, int oh,
                      int ow, int cout, int kh, int kw, int sh, int sw, int top, int left) {
  const int dw_size = kh * kw * cin * cout;
  for (int i = 0; i < dw_size; i++) dw[i] = 0.0f;
  const int x_row = w * cin;
  const int dy_row = ow * cout;
  for (int img = 0; img < n; img++) {
    const float *xi = x + img * h * x_row;
    const float *dyi = dy + img * oh * dy_row;
    for (int oy0 = 0; oy0 < oh; oy0 += ROWS) {
      const int oy1 = min_i(oy0 + ROWS, oh);
      for (int ky = 0; ky < kh; ky++) {
        /* Output rows of this block whose input row iy = oy·sh + ky − top lies inside x. */
        const int ylo = max_i(oy0, ceil_div(top - ky, sh));
        const int yhi = min_i(oy1 - 1, floor_div(h - 1 + top - ky, sh));
        if (ylo > yhi) continue;
        const int rows = yhi - ylo + 1;
        for (int kx = 0; kx < kw; kx++) {
          const int xlo = max_i(0, ceil_div(left - kx, sw));
          const int xhi = min_i(ow - 1, floor_div(w - 1 + left - kx, sw));
          if (xlo > xhi) continue;
          const int count = xhi - xlo + 1;
          const float *xs = xi + (ylo * sh + ky - top) * x_row + (xlo * sw + kx - left) * cin;
          const float *ds = dyi + ylo * dy_row + xlo * cout;
          float *wt = dw + (ky * kw + kx) * cin * cout;
          for (int ci = 0; ci < cin; ci += 4) {
            int co = 0;
            for (; co + 8 <= cout; co += 8)
              tile4x8(xs + ci, ds + co, wt + ci * cout + co, cout, rows, sh * x_row, dy_row, sw * cin, count);
            for (; co < cout; co += 4)
              tile4x4(xs + ci, ds + co, wt + ci * cout + co, cout, rows, sh * x_row, dy_row, sw * cin, count);
          }
        }
      }
    }
  }
}

/*
 * The forward convolution, tiles of 4 output pixels of one row × 8 (or 4) output channels.
 * x points at the first valid tap of the first pixel; w at the first valid tap of the packed
 * filter of this channel tile ([kh][kw][cin][lanes], contiguous, so a tile streams it in order);
 * the taps are nky rows × nkx columns, w_row floats apart per filter row; px is the distance
 * between the pixels' inputs.
 */
static void conv_tile4x8(const float *x, const float *w, float *y, int cout, int nky, int nkx, int cin,
                         int x_row, int w_row, int px) {
  v128_t a00 = wasm_f32x4_splat(0), a01 = a00, a10 = a00, a11 = a00, a20 = a00, a21 = a00, a30 = a00, a31 = a00;
  for (int ky = 0; ky < nky; ky++) {
    const float *xp = x + ky * x_row;
    const float *wp = w + ky * w_row;
    for (int k = 0; k < nkx * cin; k++, wp += 8) {
      v128_t d0 = wasm_v128_load(wp), d1 = wasm_v128_load(wp + 4);
      v128_t b0 = wasm_v128_load32_splat(xp + k);
      v128_t b1 = wasm_v128_load32_splat(xp + px + k);
      v128_t b2 = wasm_v128_load32_splat(xp + 2 * px + k);
      v128_t b3 = wasm_v128_load32_splat(xp + 3 * px + k);
      a00 = wasm_f32x4_add(a00, wasm_f32x4_mul(b0, d0));
      a01 = wasm_f32x4_add(a01, wasm_f32x4_mul(b0, d1));
      a10 = wasm_f32x4_add(a10, wasm_f32x4_mul(b1, d0));
      a11 = wasm_f32x4_add(a11, wasm_f32x4_mul(b1, d1));
      a20 = wasm_f32x4_add(a20, wasm_f32x4_mul(b2, d0));
      a21 = wasm_f32x4_add(a21, wasm_f32x4_mul(b2, d1));
      a30 = wasm_f32x4_add(a30, wasm_f32x4_mul(b3, d0));
      a31 = wasm_f32x4_add(a31, wasm_f32x4_mul(b3, d1));
    }
  }
  wasm_v128_store(y, a00), wasm_v128_store(y + 4, a01);
  wasm_v128_store(y + cout, a10), wasm_v128_store(y + cout + 4, a11);
  wasm_v128_store(y + 2 * cout, a20), wasm_v128_store(y + 2 * cout + 4, a21);
  wasm_v128_store(y + 3 * cout, a30), wasm_v128_store(y + 3 * cout + 4, a31);
}

static void conv_tile4x4(const float *x, const float *w, float *y, int cout, int nky, int nkx, int cin,
                         int x_row, int w_row, int px) {
  v128_t a0 = wasm_f32x4_splat(0), a1 = a0, a2 = a0, a3 = a0;
  for (int ky = 0; ky < nky; ky++) {
    const float *xp = x + ky * x_row;
    const float *wp = w + ky * w_row;
    for (int k = 0; k < nkx * cin; k++, wp += 4) {
      v128_t d = wasm_v128_load(wp);
      a0 = wasm_f32x4_add(a0, wasm_f32x4_mul(wasm_v128_load32_splat(xp + k), d));
      a1 = wasm_f32x4_add(a1, wasm_f32x4_mul(wasm_v128_load32_splat(xp + px + k), d));
      a2 = wasm_f32x4_add(a2, wasm_f32x4_mul(wasm_v128_load32_splat(xp + 2 * px + k), d));
      a3 = wasm_f32x4_add(a3, wasm_f32x4_mul(wasm_v128_load32_splat(xp + 3 * px + k), d));
    }
  }
  wasm_v128_store(y, a0), wasm_v128_store(y + cout, a1);
  wasm_v128_store(y + 2 * cout, a2), wasm_v128_store(y + 3 * cout, a3);
}

/* One output pixel × 8 or 4 output channels (lanes): pixels at the padded border and the rest of a row. */
static void conv_tile1(const float *x, const float *w, float *y, int lanes, int nky, int nkx, int cin, int x_row,
                       int w_row) {
  v128_t a0 = wasm_f32x4_splat(0), a1 = a0;
  for (int ky = 0; ky < nky; ky++) {
    const float *xp = x + ky * x_row;
    const float *wp = w + ky * w_row;
    if (lanes == 8)
      for (int k = 0; k < nkx * cin; k++, wp += 8) {
        v128_t b = wasm_v128_load32_splat(xp + k);
        a0 = wasm_f32x4_add(a0, wasm_f32x4_mul(b, wasm_v128_load(wp)));
        a1 = wasm_f32x4_add(a1, wasm_f32x4_mul(b, wasm_v128_load(wp + 4)));
      }
    else
      for (int k = 0; k < nkx * cin; k++, wp += 4)
        a0 = wasm_f32x4_add(a0, wasm_f32x4_mul(wasm_v128_load32_splat(xp + k), wasm_v128_load(wp)));
  }
  wasm_v128_store(y, a0);
  if (lanes == 8) wasm_v128_store(y + 4, a1);
}

/*
 * y = conv(x, w). x: [n, h, w, cin]; w: [kh, kw, cin, cout]; y: [n, oh, ow, cout]; packed: scratch
 * of kh·kw·cin·cout floats, 16-byte aligned, for the filter rearranged by output-channel tile.
 * Zero padding of top rows / left columns at the start and whatever the output size implies at
 * the end (taps outside x are skipped, so nothing is copied to pad). Requires cout % 4 == 0; no
 * dilation.
 */
EXPORT("conv2d")
void conv2d(const float *x, const float *w, float *packed, float *y, int n, int h, int wd, int cin, int oh, int ow,
            int cout, int kh, int kw, int sh, int sw, int top, int left) {
  const int taps = kh * kw * cin;
  /* Pack: tile t of `lanes` channels holds [kh][kw][cin][lanes] at packed + taps·8·t. */
  for (int co = 0; co < cout; co += 8) {
    const int lanes = co + 8 <= cout ? 8 : 4;
    float *dst = packed + taps * co;
    for (int k = 0; k < taps; k++)
      for (int l = 0; l < lanes; l++) dst[k * lanes + l] = w[k * cout + co + l];
  }
  const int x_row = wd * cin;
  const int px = sw * cin;
  /* Output columns whose taps all lie inside x: the 4-pixel tiles run there. */
  const int in_lo = max_i(0, ceil_div(left, sw));
  const int in_hi = min_i(ow - 1, floor_div(wd - kw + left, sw));
  for (int img = 0; img < n; img++)
    for (int oy = 0; oy < oh; oy++) {
      const int iy = oy * sh - top;
      const int ky0 = max_i(0, -iy), ky1 = min_i(kh, h - iy);
      float *yr = y + (img * oh + oy) * ow * cout;
      if (ky0 >= ky1) { /* a row made only of padding */
        for (int i = 0; i < ow * cout; i++) yr[i] = 0.0f;
        continue;
      }
      const float *xr = x + (img * h + iy + ky0) * x_row;
      const int nky = ky1 - ky0;
      for (int co = 0; co < cout; co += 8) {
        const int lanes = co + 8 <= cout ? 8 : 4;
        const int w_row = kw * cin * lanes;
        const float *wt = packed + taps * co + ky0 * w_row;
        int ox = 0;
        while (ox < ow) {
          if (ox >= in_lo && ox + 3 <= in_hi) {
            /* Interior: 4 pixels at a time, every tap inside x. */
            const float *xp = xr + (ox * sw - left) * cin;
            if (lanes == 8)
              conv_tile4x8(xp, wt, yr + ox * cout + co, cout, nky, kw, cin, x_row, w_row, px);
            else
              conv_tile4x4(xp, wt, yr + ox * cout + co, cout, nky, kw, cin, x_row, w_row, px);
            ox += 4;
            continue;
          }
          /* Border pixels and the rest of a row: one pixel, the taps clipped to x. */
          const int ix = ox * sw - left;
          const int kx0 = max_i(0, -ix), kx1 = min_i(kw, wd - ix);
          float *yp = yr + ox * cout + co;
          if (kx0 >= kx1)
            for (int i = 0; i < lanes; i++) yp[i] = 0.0f;
          else
            conv_tile1(xr + (ix + kx0) * cin, wt + kx0 * cin * lanes, yp, lanes, nky, kx1 - kx0, cin, x_row, w_row);
          ox++;
        }
      }
    }
}

/*
 * y = x ∘ v with one value of v per channel, either shared by all samples (v_stride 0) or one row
 * per sample (v_stride = c: group norm's per-(sample, channel) scale and shift). x and y:
 * [outer, inner, c]; v: [outer or 1, c]. op 0: x·v, 1: x + v, 2: x − v. tfjs-backend-wasm's
 * broadcasting binary kernels walk such shapes element by element with index arithmetic.
 */
EXPORT("channel_op")
void channel_op(const float *x, const float *v, float *y, int outer, int inner, int c, int v_stride, int op) {
  for (int o = 0; o < outer; o++) {
    const float *vr = v + o * v_stride;
    const float *xr = x + o * inner * c;
    float *yr = y + o * inner * c;
    if (c % 4 == 0) {
      for (int i = 0; i < inner; i++, xr += c, yr += c)
        for (int k = 0; k < c; k += 4) {
          v128_t a = wasm_v128_load(xr + k), b = wasm_v128_load(vr + k);
          wasm_v128_store(yr + k, op == 0 ? wasm_f32x4_mul(a, b) : op == 1 ? wasm_f32x4_add(a, b) : wasm_f32x4_sub(a, b));
        }
    } else {
      for (int i = 0; i < inner; i++, xr += c, yr += c)
        for (int k = 0; k < c; k++) yr[k] = op == 0 ? xr[k] * vr[k] : op == 1 ? xr[k] + vr[k] : xr[k] - vr[k];
    }
  }
}
