/* One pass over a (reference, candidate) float32 pair for engine/compare/reducers.py: the six sums of metrics.py's
   STAT_FIELDS and the relative-error histogram of every step-th element below `end`, added to `counts`.

   The arithmetic is that of the numpy path (reducers.host_stats): d = c - r in float32; sums in float32 within blocks
   and float64 across them (float64 throughout where a float32 sum overflows); |d|/|r| in float32, 0 where d == 0, its
   bin the float32 bit pattern shifted right by `shift`. The histogram's sample is taken block by block, while the block
   is in cache. The GIL is released, so tensors of one batch reduce on several threads. */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <math.h>
#include <stdint.h>
#include <string.h>

#define BLOCK 2048 /* elements: both tensors' blocks stay in L1 for the sample */

typedef struct {
    Py_ssize_t step, end; /* the sampled elements: j = k * step, j < end */
    int shift;
    Py_ssize_t bins;
    int64_t *counts;
} Sample;

static inline uint32_t bits_of(float x) {
    uint32_t b;
    memcpy(&b, &x, sizeof b);
    return b;
}

/* The sampled elements in [from, to): their bins counted. |d|/|r|'s sign bit is cleared, so a NaN it makes (inf/inf
   where the reference holds inf: the sign bit set on x86) lands in the top bins, as the numpy path counts it. On the
   bit pattern, not with fabsf: the compiler drops fabsf of a quotient of non-negative values, NaN's sign unseen. */
static void sample(const float *r, const float *c, Py_ssize_t from, Py_ssize_t to, const Sample *h) {
    Py_ssize_t j = from % h->step ? from + h->step - from % h->step : from;
    if (h->step == 1) { /* contiguous (a tensor of at most twice the sample): bins computed vectorized, then counted */
        uint32_t bins[BLOCK];
        Py_ssize_t m = to - j;
        for (Py_ssize_t k = 0; k < m; ++k) {
            float d = fabsf(c[j + k] - r[j + k]);
            bins[k] = (d == 0.0f ? 0u : bits_of(d / fabsf(r[j + k])) & 0x7fffffffu) >> h->shift;
        }
        for (Py_ssize_t k = 0; k < m; ++k)
            if (bins[k] < (uint32_t)h->bins)
                h->counts[bins[k]] += 1;
        return;
    }
    for (; j < to; j += h->step) {
        float d = fabsf(c[j] - r[j]);
        uint32_t b = (d == 0.0f ? 0u : bits_of(d / fabsf(r[j])) & 0x7fffffffu) >> h->shift;
        if (b < (uint32_t)h->bins)
            h->counts[b] += 1;
    }
}

/* float32 sums within blocks (the compiler vectorizes them: -fassociative-math), float64 across blocks; the largest
   |d| compared as bit patterns, which order like the values for non-negative floats and put NaN above inf (numpy's max
   returns NaN too). Returns 0 where a sum is not finite. */
#if defined(__GNUC__) && !defined(__clang__) && __GNUC__ >= 11 && defined(__x86_64__) && defined(__linux__) && \
    defined(__GLIBC__) /* "arch=" clones need GCC 11; ifunc needs glibc (musl has none) */
__attribute__((target_clones("arch=x86-64-v3", "default"))) /* AVX2 and FMA where the CPU has them, chosen at load */
#endif
static int sums_f32(const float *r, const float *c, Py_ssize_t n, double *s, uint32_t *max_bits, const Sample *h) {
    uint32_t mb = 0;
    for (int q = 0; q < 5; ++q)
        s[q] = 0.0;
    for (Py_ssize_t i = 0; i < n; i += BLOCK) {
        Py_ssize_t e = i + BLOCK < n ? i + BLOCK : n;
        float rr = 0, cc = 0, rc = 0, dd = 0, sa = 0;
        uint32_t mx = 0;
        for (Py_ssize_t j = i; j < e; ++j) {
            float a = r[j], b = c[j], d = b - a, ad = fabsf(d);
            uint32_t bits = bits_of(ad);
            rr += a * a; cc += b * b; rc += a * b; dd += d * d; sa += ad;
            mx = bits > mx ? bits : mx;
        }
        if (h->bins && i < h->end)
            sample(r, c, i, e < h->end ? e : h->end, h);
        s[0] += rr; s[1] += cc; s[2] += rc; s[3] += dd; s[4] += sa;
        mb = mx > mb ? mx : mb;
    }
    *max_bits = mb;
    return isfinite(s[0]) && isfinite(s[1]) && isfinite(s[2]) && isfinite(s[3]) && isfinite(s[4]);
}

/* float64 throughout, |d| and its largest too: a difference of two large float32 values (3e38 and -3e38) overflows
   float32 but not float64, as the numpy path's fallback computes it */
static void sums_f64(const float *r, const float *c, Py_ssize_t n, double *s, double *max_abs) {
    double m = 0.0;
    for (int q = 0; q < 5; ++q)
        s[q] = 0.0;
    for (Py_ssize_t j = 0; j < n; ++j) {
        double a = r[j], b = c[j], d = b - a, ad = fabs(d);
        s[0] += a * a; s[1] += b * b; s[2] += a * b; s[3] += d * d; s[4] += ad;
        m = ad > m || ad != ad ? ad : m; /* NaN wins, as numpy's max */
    }
    *max_abs = m;
}

static PyObject *pair_stats(PyObject *self, PyObject *args) {
    Py_buffer rb, cb, hb;
    Sample h;
    if (!PyArg_ParseTuple(args, "y*y*nniw*", &rb, &cb, &h.step, &h.end, &h.shift, &hb))
        return NULL;
    PyObject *result = NULL;
    Py_ssize_t n = rb.len / (Py_ssize_t)sizeof(float);
    h.bins = hb.len / (Py_ssize_t)sizeof(int64_t);
    h.counts = (int64_t *)hb.buf;
    if (cb.len != rb.len || rb.len % (Py_ssize_t)sizeof(float) || h.step < 1 || h.end > n || h.shift < 0 ||
        h.shift > 31) {
        PyErr_SetString(PyExc_ValueError, "pair_stats: buffers of different sizes, or a sample outside them");
    } else {
        double s[5], max_abs;
        uint32_t max_bits;
        Py_BEGIN_ALLOW_THREADS
        if (sums_f32((const float *)rb.buf, (const float *)cb.buf, n, s, &max_bits, &h)) {
            float m;
            memcpy(&m, &max_bits, sizeof m);
            max_abs = m;
        } else {
            sums_f64((const float *)rb.buf, (const float *)cb.buf, n, s, &max_abs); /* activations near 1e19 */
        }
        Py_END_ALLOW_THREADS
        result = Py_BuildValue("(dddddd)", s[0], s[1], s[2], s[3], s[4], max_abs);
    }
    PyBuffer_Release(&rb);
    PyBuffer_Release(&cb);
    PyBuffer_Release(&hb);
    return result;
}

static PyMethodDef methods[] = {
    {"pair_stats", pair_stats, METH_VARARGS,
     "pair_stats(ref, cand, step, end, shift, counts) -> (rr, cc, rc, dd, sum_abs, max_abs): float32 buffers of equal "
     "size; counts, an int64 buffer of histogram bins, is added to (empty: no histogram)."},
    {NULL, NULL, 0, NULL}};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_pairstats", NULL, -1, methods};

PyMODINIT_FUNC PyInit__pairstats(void) { return PyModule_Create(&module); }
