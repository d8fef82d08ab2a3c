/* Fused ROI memory read on the CPU (docs/DESIGN.md, per-frame step 5): scores, softmax and value
 * blend of every memory frame in one pass per query pixel, the ROI branch's coarse search and its
 * bilinear fine window included. Built and loaded by mast/core/attention_c.py (cc -O3
 * -march=native, once per CPU kind); tested against mast.core.attention_spec.
 *
 * Entry points: mast_offsets (the ROI branch's coarse search: soft-argmax centre offsets), mast_fine
 * (its fine windows' terms), mast_read (every frame's scores, softmax terms and values, merged into
 * the label distribution), and the layout helpers. Restricted windows and the coarse search
 * vectorise over VL neighbouring query pixels ("lanes") and reuse each loaded key vector for QB
 * query rows; the ROI branch's fine windows (each pixel's own fractional centre) are scored per
 * group of pixels whose windows land in one small cell, vectorised over the window's columns, each
 * loaded key vector reused for up to 8 pixels (3 with AVX2). The block sizes (QB, BB) can be set
 * with -D flags for sweeps (benchmarks/bench_fused_bank.py --cflags=...). Built with -DMAST_BF16
 * (AVX512-BF16), key and query "channels" are bf16 pairs (mast_layout_pairs) scored by vdpbf16ps
 * (mac); everything after the dot products stays float32.
 *
 * Layouts (float32, zero padded by the caller so that every window read lies inside):
 *   query   [H][C][wl]          row by row, each row channel by channel, width rounded up to 16 (wl).
 *   qT      [H*W][C]            the same query, channels last.
 *   key     [hp][C][wp]         a memory frame's key, padded by `pad` top and left (row by row:
 *                               a window's rows are C * wp floats apart, its channels wp).
 *   value   [hp][L][wp]         its label map, same padding.
 *   offsets [2][H][W]           ROI centre offsets o_p (dy, dx; feature pixels), float64.
 */
#include <math.h>
#if defined(__AVX512F__) || defined(__AVX__)
#include <immintrin.h>
#endif
#include <stdint.h>
#include <string.h>

/* VL lanes a vector: 16 with AVX-512, else 8 (AVX2) */
#ifdef __AVX512F__
#define VL 16
#ifndef QB
#define QB 4                   /* block_scores: query rows a block */
#endif
#ifndef BB
#define BB 6                   /* block_scores: window columns a block (QB rows x BB accumulators) */
#endif
#else
#define VL 8
#ifndef QB
#define QB 2                   /* 16 registers: 2 x 5 accumulators, 2 query and 1 key vector */
#endif
#ifndef BB
#define BB 5
#endif
#endif
typedef float vf __attribute__((vector_size(4 * VL)));
typedef float vfu __attribute__((vector_size(4 * VL), aligned(4)));
typedef int32_t vi __attribute__((vector_size(4 * VL)));

#ifndef XB                     /* block_scores: lane blocks scored together (their scores: XB * QB * n * n vectors) */
#if VL == 16
#define XB 1                   /* AVX-512: 1, 2 or 8 alike (bench_fused_bank --cflags=-DXB=...) */
#else
#define XB 16                  /* AVX2: 16 (a 240x427 row) against 1: read -7 % at 240x427 and 480x854, the coarse search -18 % */
#endif
#endif
#ifndef FK                     /* mast_fine: blocks of pixels scored key row by key row together */
#if VL == 16
#define FK 1                   /* AVX-512: 1 and 4 alike */
#else
#define FK 8                   /* AVX2: 8 / 4 / 1: read 37.8 / 38.9 / 40.2 ms, 2 threads (bench_fused_bank --cflags=-DFK=...) */
#endif
#endif
#define MAXCOLS 64             /* window columns read at most: R <= 31 */
#define MAXV (MAXCOLS / VL)
#define MAXF 16                /* memory frames */
#define MAXP 8                 /* mast_fine: pixels a block at most */
#define MAXL 16                /* label channels */
#define EXP_FLOOR (-80.0f)     /* mast.core.config.EXP_FLOOR */

static inline vf load(const float *p) { return *(const vfu *)p; }
/* a loaded vector kept in a register: without this GCC folds the load into every FMA that uses it
 * (one load per FMA instead of one per vector: unaligned 64-byte loads cross cache lines, and the
 * read became load-bound at about half its FMA rate on Zen 4) */
#ifdef __AVX__
static inline vf keep_in_register(vf x) { __asm__("" : "+v"(x)); return x; }
#else
static inline vf keep_in_register(vf x) { return x; }    /* no AVX: GCC splits x into SSE halves */
#endif
static inline void store(float *p, vf x) { *(vfu *)p = x; }
static inline vf splat(float x) {      /* a broadcast ((vf){0} + x would add 0, as -0.0 + 0 != -0.0) */
    const vf v = {x};
    return __builtin_shuffle(v, (vi){0});
}
/* acc + a * b lane by lane (one FMA). MAST_BF16 (AVX512-BF16 builds): a and b hold bf16 pairs, each
 * 32-bit lane channels 2c and 2c + 1 (mast_layout_pairs), and acc gains both products (vdpbf16ps:
 * bf16 products are exact in float32, accumulated in float32): a pair layout's "channel" c is a pair. */
#ifdef MAST_BF16
#if VL != 16 || !defined(__AVX512BF16__)
#error "MAST_BF16 needs AVX512-BF16"
#endif
static inline vf mac(vf acc, vf a, vf b) { return (vf)_mm512_dpbf16_ps((__m512)acc, (__m512bh)a, (__m512bh)b); }
#else
static inline vf mac(vf acc, vf a, vf b) { return acc + a * b; }
#endif
static inline vf pick(vi m, vf a, vf b) { return (vf)(((vi)a & m) | ((vi)b & ~m)); }
/* a > b ? a : b and a < b ? a : b lane by lane: vmaxps / vminps return their second operand where
 * the comparison is false, as pick does (bit-equal, -0.0 and NaN included), in one instruction
 * instead of a compare and a blend */
#if VL == 16
static inline vf vmax(vf a, vf b) { return (vf)_mm512_max_ps((__m512)a, (__m512)b); }
static inline vf vmin(vf a, vf b) { return (vf)_mm512_min_ps((__m512)a, (__m512)b); }
#elif defined(__AVX__)
static inline vf vmax(vf a, vf b) { return (vf)_mm256_max_ps((__m256)a, (__m256)b); }
static inline vf vmin(vf a, vf b) { return (vf)_mm256_min_ps((__m256)a, (__m256)b); }
#else
static inline vf vmax(vf a, vf b) { return pick(a > b, a, b); }
static inline vf vmin(vf a, vf b) { return pick(a < b, a, b); }
#endif
static inline float hsum(vf x) { float s = 0; for (int i = 0; i < VL; i++) s += x[i]; return s; }
static inline float hmax(vf x) { float s = x[0]; for (int i = 1; i < VL; i++) s = x[i] > s ? x[i] : s; return s; }

/* exp(x - m) for x - m clamped to [EXP_FLOOR, 0] (Cephes expf polynomial, ~1 ulp): the floor of
 * mast.core.config; the ceiling only matters for the masked columns past the window. The power of
 * two is applied by vscalefps with AVX-512 (one instruction), else through the exponent bits. */
static inline vf vexp_shifted(vf s, vf m) {
    vf x = vmin(vmax(s - m, splat(EXP_FLOOR)), splat(0.0f));
    const vf magic = splat(12582912.0f);                 /* 1.5 * 2^23: round to nearest */
    vf n = (x * 1.44269504088896341f + magic) - magic;
    vf r = x - n * 0.693359375f + n * 2.12194440e-4f;
    vf p = splat(1.9875691500e-4f);
    p = p * r + 1.3981999507e-3f;
    p = p * r + 8.3334519073e-3f;
    p = p * r + 4.1665795894e-2f;
    p = p * r + 1.6666665459e-1f;
    p = p * r + 5.0000001201e-1f;
    p = p * r * r + r + 1.0f;
#ifdef __AVX512F__
    return (vf)_mm512_scalef_ps((__m512)p, (__m512)n);
#else
    vi e = (__builtin_convertvector(n, vi) + 127) << 23;
    vf scale;
    memcpy(&scale, &e, sizeof scale);
    return p * scale;
#endif
}

/* Scores of QR query rows (row stride qrs) of VL lanes each (q: lane 0 of row 0, channel stride
 * qcs) against their n x n windows of key pixels `step` apart (k: lane 0's window corner for row 0;
 * row j's window starts j window rows lower, krs apart): S[j * n * n + a * n + b], one vector each;
 * for NX neighbouring blocks of VL lanes at once (block x: q and k VL floats further, its scores at
 * S + x * QB * n * n). Window row t serves query row j at a = t - j: with QB rows each loaded key
 * vector feeds QB accumulators. The blocks are the inner loop, so a key row's lines, loaded for
 * one block, serve the next ones from L1 (AVX2 windows ran at ~55 % of the FMA peak block by block
 * against ~80 % this way, in a microbenchmark). step > 1: the ROI branch's dilated coarse search
 * (query rows step apart). */
/* Window columns [b, b + NB) of QB query rows against one key row (block_scores' inner block, NB <=
 * BB accumulators per row): each loaded key vector feeds QB accumulators, the query vectors stay in
 * registers. Inlined with a constant NB (block_scores' BB-wide blocks and its last, narrower one). */
static inline __attribute__((always_inline)) void row_block(int NB, const float *row, const float *qx, long qcs,
                                                           long qrs, long kcs, int step, int C, int b, vf *s, long sj) {
    vf acc[QB][BB];
    for (int j = 0; j < QB; j++) for (int i = 0; i < NB; i++) acc[j][i] = splat(0.0f);
    for (int c = 0; c < C; c++) {
        const float *p = row + c * kcs + step * b, *qq = qx + c * qcs;
        vf qv[QB];
        for (int j = 0; j < QB; j++) qv[j] = keep_in_register(load(qq + j * qrs));
        for (int i = 0; i < NB; i++) {
            const vf kv = keep_in_register(load(p + step * i));
            for (int j = 0; j < QB; j++) acc[j][i] = mac(acc[j][i], qv[j], kv);
        }
    }
    for (int j = 0; j < QB; j++) for (int i = 0; i < NB; i++) s[j * sj + b + i] = acc[j][i];
}

static void block_scores(int QR, int NX, const float *q, long qcs, long qrs, const float *k, long kcs, long krs,
                         int step, int C, int n, vf *S) {
    const long sx = (long)QB * n * n;                   /* a lane block's scores */
    for (int t = 0; t < n + QR - 1; t++) {
        if (QR == QB && t >= QB - 1 && t < n) {
            const long sj = (long)n * n - n;            /* row j's window row t - j: s + j * (n * n - n) */
            for (int x = 0; x < NX; x++) {
                const float *row = k + t * krs + x * VL, *qx = q + x * VL;
                vf *s = S + x * sx + t * n;
                int b = 0;
                for (; b + BB <= n; b += BB) row_block(BB, row, qx, qcs, qrs, kcs, step, C, b, s, sj);
                /* the last n % BB columns in one narrower block (they ran column by column, each
                 * loaded query vector feeding one FMA: R = 8 has 5 of its 17 columns there with AVX-512) */
                switch (n - b) {
                case 1: row_block(1, row, qx, qcs, qrs, kcs, step, C, b, s, sj); break;
                case 2: row_block(2, row, qx, qcs, qrs, kcs, step, C, b, s, sj); break;
                case 3: row_block(3, row, qx, qcs, qrs, kcs, step, C, b, s, sj); break;
#if BB > 4
                case 4: row_block(4, row, qx, qcs, qrs, kcs, step, C, b, s, sj); break;
#endif
#if BB > 5
                case 5: row_block(5, row, qx, qcs, qrs, kcs, step, C, b, s, sj); break;
#endif
                default:            /* -DBB above 6 (sweeps): column by column */
                    for (; b < n; b++) row_block(1, row, qx, qcs, qrs, kcs, step, C, b, s, sj);
                }
            }
            continue;
        }
        for (int x = 0; x < NX; x++)
            for (int j = 0; j < QR; j++) {
                const int a = t - j;
                if (a < 0 || a >= n) continue;
                const float *row = k + t * krs + x * VL;
                vf *s = S + x * sx + (long)j * n * n + a * n;
                const float *qj = q + x * VL + j * qrs;
                int b = 0;
                for (; b + 8 <= n; b += 8) {
                    vf acc[8];
                    for (int i = 0; i < 8; i++) acc[i] = splat(0.0f);
                    for (int c = 0; c < C; c++) {
                        const vf qv = load(qj + c * qcs);
                        const float *p = row + c * kcs + step * b;
                        for (int i = 0; i < 8; i++) acc[i] = mac(acc[i], qv, load(p + step * i));
                    }
                    for (int i = 0; i < 8; i++) s[b + i] = acc[i];
                }
                for (; b < n; b++) {
                    vf acc = splat(0.0f);
                    for (int c = 0; c < C; c++) acc = mac(acc, load(qj + c * qcs), load(row + c * kcs + step * b));
                    s[b] = acc;
                }
            }
    }
}

static vf lane_peak(const vf *S, int m) {
    vf p = S[0];
    for (int i = 1; i < m; i++) p = vmax(p, S[i]);
    return p;
}

/* Rows [r0, r1) of out [hp][C][wp] (zero padded) from x [C][H][W] placed at (top, left): the
 * layouts above, without PyTorch's threads (whose spinning would compete with ours). */
void mast_layout(const float *x, int C, int H, int W, int top, int left, int wp, int r0, int r1, float *out) {
    for (int r = r0; r < r1; r++) {
        const int y = r - top;
        for (int c = 0; c < C; c++) {
            float *o = out + ((long)r * C + c) * wp;
            if (y < 0 || y >= H) {
                memset(o, 0, sizeof(float) * wp);
                continue;
            }
            memset(o, 0, sizeof(float) * left);
            memcpy(o + left, x + ((long)c * H + y) * W, sizeof(float) * W);
            memset(o + left + W, 0, sizeof(float) * (wp - left - W));
        }
    }
}

/* Pixels grouped by the T x T cell where their fine window lands (p + floor(o_p)), by a counting
 * sort: order [H * W] pixel indices group by group, starts [G + 1] where each group begins;
 * count [cells * T + 1] is scratch (cells >= the cells spanned: attention_c._by_cell), key [H * W] too.
 * Inside a group the pixels are sorted by the row of the cell their window starts on, so that a
 * block of them (mast_fine) mostly shares its key rows: n + 1 rows instead of up to n + T. Returns G. */
int mast_group(int H, int W, int T, const double *offsets, int32_t *order, int32_t *starts, int32_t *count,
               int32_t *key) {
    const long hw = (long)H * W;
    starts[0] = 0;
    if (hw == 0) return 0;
    int ymin = (int)floor(floor(offsets[0]) / T), xmin = (int)floor(floor(offsets[hw]) / T), ymax = ymin, xmax = xmin;
    for (long p = 1; p < hw; p++) {
        const int ty = (int)floor((p / W + floor(offsets[p])) / T), tx = (int)floor((p % W + floor(offsets[hw + p])) / T);
        ymin = ty < ymin ? ty : ymin; ymax = ty > ymax ? ty : ymax;
        xmin = tx < xmin ? tx : xmin; xmax = tx > xmax ? tx : xmax;
    }
    const int cols = xmax - xmin + 1;
    const size_t buckets = (size_t)(ymax - ymin + 1) * (size_t)cols * (size_t)T;    /* (cell, row in cell) */
    for (size_t b = 0; b <= buckets; b++) count[b] = 0;
    for (long p = 0; p < hw; p++) {
        const int y = (int)(p / W + floor(offsets[p])), ty = (int)floor((double)y / T);
        const int tx = (int)floor((p % W + floor(offsets[hw + p])) / T);
        key[p] = ((ty - ymin) * cols + (tx - xmin)) * T + (y - ty * T);
        count[key[p] + 1]++;
    }
    int groups = 0;
    long cell = -1;
    for (size_t b = 0; b < buckets; b++) {
        if (count[b + 1] > 0 && (long)(b / T) != cell) {
            starts[groups++] = count[b];
            cell = (long)(b / T);
        }
        count[b + 1] += count[b];
    }
    starts[groups] = (int32_t)hw;
    for (long p = 0; p < hw; p++) order[count[key[p]]++] = (int32_t)p;
    return groups;
}

/* Pixels [p0, p1) of out [H * W][C] from x [C][H][W] (channels last). */
void mast_channels_last(const float *x, int C, int H, int W, int p0, int p1, float *out) {
    for (int p = p0; p < p1; p++)
        for (int c = 0; c < C; c++) out[(long)p * C + c] = x[(long)c * H * W + p];
}

/* x as bfloat16 bits, rounded to nearest even (a NaN stays a NaN) */
static inline uint32_t bf16_bits(float x) {
    uint32_t u;
    memcpy(&u, &x, sizeof u);
    if ((u & 0x7fffffffu) > 0x7f800000u) return (u >> 16) | 0x40u;
    return (u + 0x7fffu + ((u >> 16) & 1u)) >> 16;
}

static inline uint32_t pair_at(const float *x, int C, long plane, long i, int c2) {
    const uint32_t lo = bf16_bits(x[(long)(2 * c2) * plane + i]);
    return 2 * c2 + 1 < C ? lo | bf16_bits(x[(long)(2 * c2 + 1) * plane + i]) << 16 : lo;
}

/* mast_layout for a MAST_BF16 build: out [hp][C2][wp] of 32-bit bf16 pairs (channels 2c, 2c + 1 of
 * x; C2 = ceil(C / 2), an odd C's last pair zero above), zero padded the same way. */
void mast_layout_pairs(const float *x, int C, int H, int W, int top, int left, int wp, int r0, int r1, uint32_t *out) {
    const int C2 = (C + 1) / 2;
    const long plane = (long)H * W;
    for (int r = r0; r < r1; r++) {
        const int y = r - top;
        for (int c = 0; c < C2; c++) {
            uint32_t *o = out + ((long)r * C2 + c) * wp;
            memset(o, 0, sizeof(uint32_t) * wp);
            if (y < 0 || y >= H) continue;
            for (int i = 0; i < W; i++) o[left + i] = pair_at(x, C, plane, (long)y * W + i, c);
        }
    }
}

/* mast_channels_last for a MAST_BF16 build: pixels [p0, p1) of out [H * W][C2] bf16 pairs. */
void mast_channels_last_pairs(const float *x, int C, int H, int W, int p0, int p1, uint32_t *out) {
    const int C2 = (C + 1) / 2;
    for (int p = p0; p < p1; p++)
        for (int c = 0; c < C2; c++) out[(long)p * C2 + c] = pair_at(x, C, (long)H * W, p, c);
}

/* Side T of the cells the ROI branch's pixels are grouped by (mast_group, mast_fine): as large as
 * the vectors a fine window's n + 1 columns need anyway allow, so that a cell's key square (n + T
 * columns) is scored with no wider vectors than one window: T = 7 at R = 12 (AVX2 and AVX-512: 32
 * lanes for 26 columns), 3 at R = 6 (16 lanes for 14), 15 / 7 at R = 8 (AVX-512 / AVX2; T was 4 at
 * any R, which made R = 6 and 8 score 32 lanes where 16 / 24 do). -DCELL4: the former T (A/B). */
int mast_cell(int R) {
    const int n = 2 * R + 1;
#ifdef CELL4
    int t = 4;
#else
    int t = (n + 1 + VL - 1) / VL * VL - n;
#endif
    t = t < MAXCOLS - n ? t : MAXCOLS - n;
    return t > 1 ? t : 1;
}

/* Floats of work space the entry points need per call (64-byte aligned). */
long mast_work_floats(int W, int L, int R, int n_frames) {
    const int n = 2 * R + 1, wl = (W + 15) / 16 * 16;
    const long group = (long)FK * MAXP * (n + mast_cell(R) + 1) * (MAXCOLS + 16) + (long)n * MAXCOLS;   /* mast_fine: S and B */
    const long rows = (long)VL * QB * n * n * XB + (long)QB * n_frames * (L + 2) * wl;    /* mast_read */
    return (group > rows ? group : rows) + 16;
}

/* Coarse search of one ROI frame for the query rows y = ry + g * i, i in [i0, i1) (g: dilation):
 * offsets[(0|1) * H * W + y * W + x] = g * sum_k softmax_k(<Q_p, K[p + g k]>) k, k in [-R, R]^2.
 * The dilated window of VL neighbouring pixels is still VL neighbouring key pixels per candidate. */
void mast_offsets(int C, int H, int W, int R, int g, const float *qc, int pad, int wp, const float *key,
                  int ry, int i0, int i1, double *offsets, float *work) {
    const int n = 2 * R + 1, wl = (W + 15) / 16 * 16;
    const long krs = (long)C * wp;
    vf *S = (vf *)work;
    for (int i = i0; i < i1; i += QB) {
        const int QR = i1 - i < QB ? i1 - i : QB, y = ry + g * i;
        for (int x0 = 0; x0 < W; x0 += VL) {
            const int xb = (x0 / VL) % XB;                 /* this block's scores in the chunk's */
            if (xb == 0) {
                const int nx = (W - x0 + VL - 1) / VL < XB ? (W - x0 + VL - 1) / VL : XB;
                const float *k = key + (y - g * R + pad) * krs + x0 - g * R + pad;
                block_scores(QR, nx, qc + (long)y * C * wl + x0, wl, (long)g * C * wl, k, wp, g * krs, g, C, n, S);
            }
            for (int r = 0; r < QR; r++) {
                const vf *s = S + (long)xb * QB * n * n + (long)r * n * n;
                const vf m = lane_peak(s, n * n);
                double s0[VL] = {0}, sy[VL] = {0}, sx[VL] = {0};
                for (int a = 0; a < n; a++) {
                    vf rs = splat(0.0f), rxs = splat(0.0f), kx = splat((float)-R);    /* kx: b - R */
                    for (int b = 0; b < n; b++, kx += 1.0f) {
                        const vf e = vexp_shifted(s[a * n + b], m);
                        rs += e;
                        rxs += e * kx;
                    }
                    for (int l = 0; l < VL; l++) {
                        s0[l] += rs[l];
                        sy[l] += (double)(a - R) * rs[l];
                        sx[l] += rxs[l];
                    }
                }
                const long row = (long)(y + g * r) * W;
                for (int l = 0; l < VL && x0 + l < W; l++) {
                    offsets[row + x0 + l] = g * sy[l] / s0[l];
                    offsets[(long)H * W + row + x0 + l] = g * sx[l] / s0[l];
                }
            }
        }
    }
}

typedef struct {
    int roi;               /* 0: restricted window, 1: ROI localisation (fine window at p + o_p) */
    int pad;               /* padding of key and value (top and left) */
    int wp;                /* padded key / value row width */
    const float *key, *value;
    const float *terms;    /* ROI: [L + 2][H][W] the fine windows' peak, sum of exp and values (mast_fine) */
} Frame;

/* Scores of P pixels (query rows qs[p], channels last) against the same U rows of VL*NV key
 * columns (k: the top-left, channel stride kcs, row stride krs): S[p * sp + u * ss + column].
 * Each loaded key vector feeds P accumulators. AVX-512: the key vectors in registers, each query
 * value broadcast from memory into its FMAs; AVX2 (16 registers, no broadcast operand): the P query
 * values broadcast into registers, then one key vector at a time (P * NV + P + 1 registers). */
#if VL == 16
#define GROUP_CHANNEL(NV, P)                                                                        \
            vf kv[NV];                                                                             \
            for (int v = 0; v < NV; v++) kv[v] = keep_in_register(load(row + c * kcs + VL * v));    \
            for (int p = 0; p < P; p++) {                                                           \
                const vf qv = splat(qs[p][c]);                                                     \
                for (int v = 0; v < NV; v++) acc[p][v] = mac(acc[p][v], qv, kv[v]);                \
            }
#else
#define GROUP_CHANNEL(NV, P)                                                                        \
            vf qv[P];                                                                              \
            for (int p = 0; p < P; p++) qv[p] = keep_in_register(splat(qs[p][c]));                 \
            for (int v = 0; v < NV; v++) {                                                          \
                const vf kv = keep_in_register(load(row + c * kcs + VL * v));                      \
                for (int p = 0; p < P; p++) acc[p][v] = mac(acc[p][v], qv[p], kv);                 \
            }
#endif
#define GROUP(NV, P)                                                                                \
static void group##NV##_##P(const float *const *qs, int C, const float *k, long kcs, long krs, int U, \
                            float *S, long sp, int ss) {                                            \
    for (int u = 0; u < U; u++) {                                                                   \
        const float *row = k + u * krs;                                                             \
        vf acc[P][NV];                                                                             \
        for (int p = 0; p < P; p++) for (int v = 0; v < NV; v++) acc[p][v] = splat(0.0f);           \
        for (int c = 0; c < C; c++) {                                                               \
            GROUP_CHANNEL(NV, P)                                                                    \
        }                                                                                           \
        for (int p = 0; p < P; p++) for (int v = 0; v < NV; v++) store(S + p * sp + u * ss + VL * v, acc[p][v]); \
    }                                                                                               \
}
typedef void (*GroupFn)(const float *const *, int, const float *, long, long, int, float *, long, int);
/* per NV (key vectors a row, 1..MAXV): the block sizes P of its group functions, smallest first
 * (0: none), and the functions; a block of P pixels runs the first size >= P (repeating a pixel) */
GROUP(1, 1) GROUP(1, 2) GROUP(2, 1) GROUP(2, 2) GROUP(3, 1) GROUP(3, 2) GROUP(4, 1) GROUP(4, 2)
#if VL == 16
GROUP(1, 4) GROUP(1, 8) GROUP(2, 4) GROUP(2, 8) GROUP(3, 4) GROUP(4, 4)
static const int SIZES[MAXV][4] = {{1, 2, 4, 8}, {1, 2, 4, 8}, {1, 2, 4, 0}, {1, 2, 4, 0}};
static const GroupFn GROUPS[MAXV][4] = {{group1_1, group1_2, group1_4, group1_8}, {group2_1, group2_2, group2_4, group2_8},
                                        {group3_1, group3_2, group3_4, NULL}, {group4_1, group4_2, group4_4, NULL}};
#else
GROUP(1, 7) GROUP(2, 5) GROUP(3, 3) GROUP(4, 3) GROUP(5, 1) GROUP(5, 2) GROUP(6, 1) GROUP(6, 2) GROUP(7, 1) GROUP(8, 1)
static const int SIZES[MAXV][4] = {{1, 2, 7, 0}, {1, 2, 5, 0}, {1, 2, 3, 0}, {1, 2, 3, 0},
                                   {1, 2, 0, 0}, {1, 2, 0, 0}, {1, 0, 0, 0}, {1, 0, 0, 0}};
static const GroupFn GROUPS[MAXV][4] = {{group1_1, group1_2, group1_7, NULL}, {group2_1, group2_2, group2_5, NULL},
                                        {group3_1, group3_2, group3_3, NULL}, {group4_1, group4_2, group4_3, NULL},
                                        {group5_1, group5_2, NULL, NULL}, {group6_1, group6_2, NULL, NULL},
                                        {group7_1, NULL, NULL, NULL}, {group8_1, NULL, NULL, NULL}};
#endif

/* One pixel's fine-window terms: its (n + 1)^2 integer scores Sp (row stride ss) blended with the
 * bilinear weights of (fy, fx) into the n x n window (B: scratch, rows MAXCOLS apart; columns past
 * n masked by neg / keep), their peak, sum of exp and L values (vb: row stride vrs, label stride
 * wp) blended the same way: terms[0], terms[hw], terms[(2 + l) hw]. */
static void fine_pixel(const float *Sp, int ss, const float *vb, long vrs, int wp, int L, int n, int nv,
                       const vf *neg, const vf *keep, float fy, float fx, float *B, float *terms, long hw) {
    const float w00 = (1 - fy) * (1 - fx), w01 = (1 - fy) * fx, w10 = fy * (1 - fx), w11 = fy * fx;
    vf mv = splat(-INFINITY);
    for (int a = 0; a < n; a++)
        for (int v = 0; v < nv; v++) {
            const float *s = Sp + a * ss + VL * v;
            const vf blend = w00 * load(s) + w01 * load(s + 1) + w10 * load(s + ss) + w11 * load(s + ss + 1);
            store(B + a * MAXCOLS + VL * v, blend);
            mv = vmax(mv, blend + neg[v]);
        }
    const float m = hmax(mv);
    vf es = splat(0.0f), ev[MAXL];
    for (int l = 0; l < L; l++) ev[l] = splat(0.0f);
    for (int a = 0; a < n; a++)
        for (int v = 0; v < nv; v++) {
            const vf e = vexp_shifted(load(B + a * MAXCOLS + VL * v), splat(m)) * keep[v];
            es += e;
            for (int l = 0; l < L; l++) {
                const float *q = vb + (long)l * wp + (long)a * vrs + VL * v;
                ev[l] += e * (w00 * load(q) + w01 * load(q + 1) + w10 * load(q + vrs) + w11 * load(q + vrs + 1));
            }
        }
    terms[0] = m;
    terms[hw] = hsum(es);
    for (int l = 0; l < L; l++) terms[(2 + l) * hw] = hsum(ev[l]);
}

/* ROI fine windows of one memory frame for the pixel groups [g0, g1): group i holds the pixels
 * order[starts[i] .. starts[i+1]) (y * W + x), whose windows land in one T x T cell (the caller
 * groups them): they share one (n + T)-row key square, scored once for all of them. Per pixel:
 * the integer (n+1)^2 window at p + floor(o_p), its scores and values blended with the bilinear
 * weights of frac(o_p). terms: [L + 2][H * W] peak, sum of exp, exp-weighted values. */
void mast_fine(int C, int H, int W, int L, int R, int T, const float *qT, int pad, int wp, const float *key,
               const float *value, const double *offsets, const int32_t *order, const int32_t *starts,
               int g0, int g1, float *terms, float *work) {
    const int n = 2 * R + 1, nv = (2 * R + 2 + VL - 1) / VL, U = n + T, nvu = (n + T + VL - 1) / VL;
    const int *sizes = SIZES[nvu - 1];
    int pmax = 1;                                          /* pixels a block: the largest group function */
    for (int i = 0; i < 4; i++) pmax = sizes[i] > pmax ? sizes[i] : pmax;
    const int ss = VL * nvu + 16;
    const long hw = (long)H * W, vrs = (long)L * wp, krs = (long)C * wp, sp = (long)(U + 1) * ss;
    const long sb = MAXP * sp;                             /* a block's scores */
    float *S = work, *B = S + FK * sb;
    vf neg[MAXV], keep[MAXV];                            /* the window's n columns: 0/-inf, 1/0 */
    for (int v = 0; v < nv; v++)
        for (int i = 0; i < VL; i++) {
            neg[v][i] = VL * v + i < n ? 0.0f : -INFINITY;
            keep[v][i] = VL * v + i < n ? 1.0f : 0.0f;
        }
    memset(S, 0, sizeof(float) * FK * sb);
    for (int g = g0; g < g1; g++) {
        /* the group's key square: rows and columns of the cell's windows */
        const long first = order[starts[g]];
        const int cy = (int)floor((first / W + floor(offsets[first])) / T);
        const int cx = (int)floor((first % W + floor(offsets[hw + first])) / T);
        const int top0 = cy * T - R + pad, left0 = cx * T - R + pad;
        for (int c0 = starts[g]; c0 < starts[g + 1]; c0 += FK * pmax) {
            /* a chunk of up to FK blocks of pmax pixels: each key row of the square scored for every
             * block that reads it in turn (the row's lines stay in L1 from one block to the next) */
            int nb = 0, P_[FK], slot_[FK], u0_[FK], u1_[FK], lo = U, hi = 0;
            const float *qs_[FK][MAXP];
            for (int i0 = c0; i0 < starts[g + 1] && nb < FK; i0 += pmax, nb++) {
                const int P = starts[g + 1] - i0 < pmax ? starts[g + 1] - i0 : pmax;
                int slot = 0;
                while (sizes[slot] < P) slot++;
                for (int p = 0; p < MAXP; p++) qs_[nb][p] = qT + (long)order[i0 + (p < P ? p : P - 1)] * C;
                /* the block's rows of the key square: from its highest window to its lowest (n + 1
                 * rows each; the cell's T - 1 more only where its windows start on different rows) */
                int u0 = U, u1 = 0;
                for (int p = 0; p < P; p++) {
                    const long px = order[i0 + p];
                    const int du = (int)(px / W) - R + (int)floor(offsets[px]) + pad - top0;
                    u0 = du < u0 ? du : u0;
                    u1 = du + n + 1 > u1 ? du + n + 1 : u1;
                }
                P_[nb] = P, slot_[nb] = slot, u0_[nb] = u0, u1_[nb] = u1;
                lo = u0 < lo ? u0 : lo;
                hi = u1 > hi ? u1 : hi;
            }
            for (int u = lo; u < hi; u++)
                for (int k = 0; k < nb; k++)
                    if (u >= u0_[k] && u < u1_[k])
                        GROUPS[nvu - 1][slot_[k]](qs_[k], C, key + (long)(top0 + u) * krs + left0, wp, krs, 1,
                                                  S + k * sb + (long)(u - u0_[k]) * ss, sp, ss);
            for (int k = 0; k < nb; k++)
                for (int p = 0; p < P_[k]; p++) {
                    const long px = order[c0 + k * pmax + p];
                    const double oy = offsets[px], ox = offsets[hw + px], by = floor(oy), bx = floor(ox);
                    const int top = (int)(px / W) - R + (int)by + pad, left = (int)(px % W) - R + (int)bx + pad;
                    fine_pixel(S + k * sb + p * sp + (long)(top - top0 - u0_[k]) * ss + (left - left0), ss,
                               value + (long)top * vrs + left, vrs, wp, L, n, nv, neg, keep,
                               (float)(oy - by), (float)(ox - bx), B, terms + px, hw);
                }
        }
    }
}

/* Label distribution of query rows [y0, y1): out[(l * H + y) * W + x] (ROI frames' terms precomputed). */
void mast_read(int C, int H, int W, int L, int R, const float *qc, int n_frames,
               const Frame *frames, int y0, int y1, float *out, float *work) {
    const int n = 2 * R + 1, wl = (W + 15) / 16 * 16;
    const long row_state = (long)n_frames * (L + 2) * wl;
    vf *SV = (vf *)work;                               /* XB * QB * n * n lane scores (work is 64-byte aligned) */
    float *state = work + (long)VL * QB * n * n * XB;     /* [QB][n_frames][L + 2][wl]: peak, sum, values */
    for (int y = y0; y < y1; y += QB) {
        const int QR = y1 - y < QB ? y1 - y : QB;
        for (int f = 0; f < n_frames; f++) {
            const Frame *fr = frames + f;
            const long krs = (long)C * fr->wp, vrs = (long)L * fr->wp;
            if (!fr->roi) {
                /* restricted window: VL pixels x QR rows a block, scores, softmax and values */
                for (int x0 = 0; x0 < W; x0 += VL) {
                    const long col = x0 - R + fr->pad;
                    const int xb = (x0 / VL) % XB;         /* this block's scores in the chunk's */
                    if (xb == 0) {
                        const int nx = (W - x0 + VL - 1) / VL < XB ? (W - x0 + VL - 1) / VL : XB;
                        block_scores(QR, nx, qc + (long)y * C * wl + x0, wl, (long)C * wl,
                                     fr->key + (y - R + fr->pad) * krs + col, fr->wp, krs, 1, C, n, SV);
                    }
                    for (int r = 0; r < QR; r++) {
                        const vf *s = SV + (long)xb * QB * n * n + (long)r * n * n;
                        const vf m = lane_peak(s, n * n);
                        vf es = splat(0.0f), ev[MAXL];
                        for (int l = 0; l < L; l++) ev[l] = splat(0.0f);
                        const float *vb = fr->value + (y + r - R + fr->pad) * vrs + col;
                        for (int a = 0; a < n; a++)
                            for (int b = 0; b < n; b++) {
                                const vf e = vexp_shifted(s[a * n + b], m);
                                es += e;
                                for (int l = 0; l < L; l++) ev[l] += e * load(vb + (long)l * fr->wp + a * vrs + b);
                            }
                        float *st = state + r * row_state + (long)f * (L + 2) * wl;
                        store(st + x0, m);
                        store(st + wl + x0, es);
                        for (int l = 0; l < L; l++) store(st + (2L + l) * wl + x0, ev[l]);
                    }
                }
                continue;
            }
            /* ROI: the fine windows' terms, computed by mast_fine */
            for (int r = 0; r < QR; r++) {
                float *st = state + r * row_state + (long)f * (L + 2) * wl;
                for (int l = 0; l < L + 2; l++)
                    memcpy(st + (long)l * wl, fr->terms + (long)l * H * W + (long)(y + r) * W, sizeof(float) * W);
            }
        }
        /* one softmax over every frame's candidates: rescale each frame to the common peak */
        for (int r = 0; r < QR; r++) {
            const float *st = state + r * row_state;
            for (int x = 0; x < W; x++) {
                float top = -INFINITY, total = 0.0f, scale[MAXF];
                for (int f = 0; f < n_frames; f++) {
                    const float p = st[(long)f * (L + 2) * wl + x];
                    top = p > top ? p : top;
                }
                for (int f = 0; f < n_frames; f++) {
                    const float d = st[(long)f * (L + 2) * wl + x] - top;
                    scale[f] = expf(d > EXP_FLOOR ? d : EXP_FLOOR);
                    total += st[((long)f * (L + 2) + 1) * wl + x] * scale[f];
                }
                for (int l = 0; l < L; l++) {
                    float sum = 0.0f;
                    for (int f = 0; f < n_frames; f++) sum += st[((long)f * (L + 2) + 2 + l) * wl + x] * scale[f];
                    out[((long)l * H + y + r) * W + x] = sum / total;
                }
            }
        }
    }
}
