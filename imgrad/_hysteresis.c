/* Native hysteresis for imgrad: one flood fill from every strong pixel, O(pixels).
 *
 * The same result as the torch path of imgrad.thresholds (exact connected-component labelling):
 * a candidate ("weak") pixel is kept iff a chain of 4- or 8-connected candidates links it to a
 * seed ("strong" candidate) of the same image. Plain buffers only (the buffer protocol: numpy
 * arrays from ``tensor.numpy()``), no torch or numpy headers. The loops run without the GIL.
 *
 * grid(grid, out, n, h, w, connectivity)
 *     ``grid``: the flat zero-bordered (n, h + 2, w + 2) state grid of imgrad.thresholds
 *     (0 background, 1 candidate, 2 seed; 1, 2, 4 or 8-byte integers, C-contiguous, writable).
 *     Reached pixels are overwritten with 3. ``out``: n * h * w bytes, zeroed by the caller;
 *     1 is written where a pixel is kept.
 * masks(weak, strong, out, n, h, w, connectivity)
 *     ``weak``, ``strong``: n * h * w bytes (masks, non-zero where set; not bordered); a seed is
 *     a pixel that is both weak and strong. ``out``: n * h * w bytes, written entirely (0 or 1).
 *     The inputs are only read.
 */

#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <stdint.h>
#include <string.h>

#if defined(_MSC_VER) && !defined(restrict)
#define restrict __restrict
#endif

/* ------------------------------------------------------------------------- a growable stack */

/* The flood's stack. Kept in local variables (never behind a pointer), so that the compiler
 * keeps its top in a register while it stores to the byte arrays. */
typedef struct {
    Py_ssize_t *data;
    Py_ssize_t capacity; /* entries allocated */
} Room;

/* ``room`` grown to at least ``need`` entries; ``data`` NULL if that fails (``room.data`` is
 * then still held by the caller). Runs without the GIL: the raw allocator. */
static Room
grow(Room room, Py_ssize_t need)
{
    Room bigger = {NULL, room.capacity ? room.capacity : 4096};
    while (bigger.capacity < need) {
        if (bigger.capacity > PY_SSIZE_T_MAX / 2 / (Py_ssize_t)sizeof(Py_ssize_t)) {
            return bigger;
        }
        bigger.capacity *= 2;
    }
    bigger.data = PyMem_RawRealloc(room.data, (size_t)bigger.capacity * sizeof(Py_ssize_t));
    return bigger;
}

/* Room for ``more`` entries above ``size``, or ``goto fail``. */
#define RESERVE(room, size, more)                                                                 \
    do {                                                                                          \
        if ((size) + (more) > (room).capacity) {                                                  \
            Room bigger_ = grow((room), (size) + (more));                                         \
            if (bigger_.data == NULL) {                                                           \
                goto fail;                                                                        \
            }                                                                                     \
            (room) = bigger_;                                                                     \
        }                                                                                         \
    } while (0)

/* The neighbours, 4-connected first: rows and columns offsets. */
static const Py_ssize_t DR[8] = {0, 0, -1, 1, -1, -1, 1, 1};
static const Py_ssize_t DC[8] = {-1, 1, 0, 0, -1, 1, -1, 1};

/* ------------------------------------------------------------ the bordered state grid (canny) */

/* Seeds (2) are found row by row, 32 cells at a time (a vectorised test skips the runs
 * without one), and each is flooded at once, depth first. Stack entries are pairs (grid
 * index, out index): a neighbour at grid offset ``dr * (w + 2) + dc`` is at out offset
 * ``dr * w + dc`` (the same image: the zero border is never entered). A candidate is marked
 * reached (3) when it is pushed, so each is pushed once. (A branch-free flood, storing every
 * neighbour and moving the top by 0 or 2, measured slower: 2x on a spiral.) */
#define GRID_KERNEL(NAME, T, CONN)                                                                \
    static int NAME(T *restrict g, unsigned char *restrict out, Py_ssize_t n, Py_ssize_t h,       \
                    Py_ssize_t w)                                                                 \
    {                                                                                             \
        const Py_ssize_t row = w + 2, plane = (h + 2) * row;                                      \
        Room room = {NULL, 0};                                                                    \
        Py_ssize_t size = 0;                                                                      \
        for (Py_ssize_t img = 0; img < n; img++) {                                                \
            for (Py_ssize_t r = 1; r <= h; r++) {                                                 \
                T *line = g + img * plane + r * row + 1;                                          \
                const Py_ssize_t base = (img * h + r - 1) * w;                                    \
                for (Py_ssize_t c0 = 0; c0 < w; c0 += 32) {                                       \
                    const Py_ssize_t c1 = c0 + 32 < w ? c0 + 32 : w;                              \
                    int any = 0;                                                                  \
                    for (Py_ssize_t c = c0; c < c1; c++) {                                        \
                        any |= line[c] == 2;                                                      \
                    }                                                                             \
                    if (!any) {                                                                   \
                        continue;                                                                 \
                    }                                                                             \
                    for (Py_ssize_t c = c0; c < c1; c++) {                                        \
                        if (line[c] != 2) {                                                       \
                            continue;                                                             \
                        }                                                                         \
                        line[c] = 3;                                                              \
                        out[base + c] = 1;                                                        \
                        RESERVE(room, size, 2);                                                   \
                        room.data[size++] = (line - g) + c;                                       \
                        room.data[size++] = base + c;                                             \
                        while (size) {                                                            \
                            const Py_ssize_t o = room.data[--size];                               \
                            const Py_ssize_t q = room.data[--size];                               \
                            RESERVE(room, size, 2 * (CONN));                                      \
                            Py_ssize_t *restrict top = room.data;                                 \
                            for (int k = 0; k < (CONN); k++) {                                    \
                                const Py_ssize_t p = q + DR[k] * row + DC[k];                     \
                                if ((T)(g[p] - 1) < 2) { /* 1 or 2 */                             \
                                    const Py_ssize_t i = o + DR[k] * w + DC[k];                   \
                                    g[p] = 3;                                                     \
                                    out[i] = 1;                                                   \
                                    top[size] = p;                                                \
                                    top[size + 1] = i;                                            \
                                    size += 2;                                                    \
                                }                                                                 \
                            }                                                                     \
                        }                                                                         \
                    }                                                                             \
                }                                                                                 \
            }                                                                                     \
        }                                                                                         \
        PyMem_RawFree(room.data);                                                                 \
        return 1;                                                                                 \
    fail:                                                                                         \
        PyMem_RawFree(room.data);                                                                 \
        return 0;                                                                                 \
    }

GRID_KERNEL(grid_u8_4, uint8_t, 4)
GRID_KERNEL(grid_u8_8, uint8_t, 8)
GRID_KERNEL(grid_u16_4, uint16_t, 4)
GRID_KERNEL(grid_u16_8, uint16_t, 8)
GRID_KERNEL(grid_u32_4, uint32_t, 4)
GRID_KERNEL(grid_u32_8, uint32_t, 8)
GRID_KERNEL(grid_u64_4, uint64_t, 4)
GRID_KERNEL(grid_u64_8, uint64_t, 8)

static int
grid_kernel(void *g, Py_ssize_t itemsize, unsigned char *out, Py_ssize_t n, Py_ssize_t h,
            Py_ssize_t w, int conn)
{
    switch (itemsize) {
    case 1: return conn == 4 ? grid_u8_4(g, out, n, h, w) : grid_u8_8(g, out, n, h, w);
    case 2: return conn == 4 ? grid_u16_4(g, out, n, h, w) : grid_u16_8(g, out, n, h, w);
    case 4: return conn == 4 ? grid_u32_4(g, out, n, h, w) : grid_u32_8(g, out, n, h, w);
    default: return conn == 4 ? grid_u64_4(g, out, n, h, w) : grid_u64_8(g, out, n, h, w);
    }
}

/* ----------------------------------------------------------------- two unbordered bool masks */

/* The masks become a state in ``out`` (0, 1 candidate, 2 seed; 3 once reached), flooded as the
 * grid is, then turned into the result (1 where reached): the flood reads one byte array.
 * Stack entries are triples (index, row, column): a neighbour's bounds are checked on its row
 * and column (one outside the image reads the pixel itself, which is reached already), so the
 * masks need no border and no division. */
#define MASKS_KERNEL(NAME, CONN)                                                                  \
    static int NAME(const unsigned char *restrict weak, const unsigned char *restrict strong,     \
                    unsigned char *restrict out, Py_ssize_t n, Py_ssize_t h, Py_ssize_t w)        \
    {                                                                                             \
        const Py_ssize_t total = n * h * w;                                                       \
        Room room = {NULL, 0};                                                                    \
        Py_ssize_t size = 0;                                                                      \
        for (Py_ssize_t i = 0; i < total; i++) {                                                  \
            out[i] = (unsigned char)((weak[i] != 0) * (1 + (strong[i] != 0)));                    \
        }                                                                                         \
        for (Py_ssize_t img = 0; img < n; img++) {                                                \
            for (Py_ssize_t r = 0; r < h; r++) {                                                  \
                unsigned char *line = out + (img * h + r) * w;                                    \
                for (Py_ssize_t c0 = 0; c0 < w; c0 += 64) {                                       \
                    const Py_ssize_t c1 = c0 + 64 < w ? c0 + 64 : w;                              \
                    int any = 0;                                                                  \
                    for (Py_ssize_t c = c0; c < c1; c++) {                                        \
                        any |= line[c] == 2;                                                      \
                    }                                                                             \
                    if (!any) {                                                                   \
                        continue;                                                                 \
                    }                                                                             \
                    for (Py_ssize_t c = c0; c < c1; c++) {                                        \
                        if (line[c] != 2) {                                                       \
                            continue;                                                             \
                        }                                                                         \
                        line[c] = 3;                                                              \
                        RESERVE(room, size, 3);                                                   \
                        room.data[size++] = (line - out) + c;                                     \
                        room.data[size++] = r;                                                    \
                        room.data[size++] = c;                                                    \
                        while (size) {                                                            \
                            const Py_ssize_t qc = room.data[--size];                              \
                            const Py_ssize_t qr = room.data[--size];                              \
                            const Py_ssize_t q = room.data[--size];                               \
                            RESERVE(room, size, 3 * (CONN));                                      \
                            Py_ssize_t *restrict top = room.data;                                 \
                            for (int k = 0; k < (CONN); k++) {                                    \
                                const Py_ssize_t pr = qr + DR[k], pc = qc + DC[k];                \
                                const Py_ssize_t inside = ((size_t)pr < (size_t)h) &              \
                                                          ((size_t)pc < (size_t)w);               \
                                const Py_ssize_t p = q + (DR[k] * w + DC[k]) * inside;            \
                                if ((unsigned char)(out[p] - 1) < 2) { /* 1 or 2 */               \
                                    out[p] = 3;                                                   \
                                    top[size] = p;                                                \
                                    top[size + 1] = pr;                                           \
                                    top[size + 2] = pc;                                           \
                                    size += 3;                                                    \
                                }                                                                 \
                            }                                                                     \
                        }                                                                         \
                    }                                                                             \
                }                                                                                 \
            }                                                                                     \
        }                                                                                         \
        for (Py_ssize_t i = 0; i < total; i++) {                                                  \
            out[i] = out[i] == 3;                                                                 \
        }                                                                                         \
        PyMem_RawFree(room.data);                                                                 \
        return 1;                                                                                 \
    fail:                                                                                         \
        PyMem_RawFree(room.data);                                                                 \
        return 0;                                                                                 \
    }

MASKS_KERNEL(masks_4, 4)
MASKS_KERNEL(masks_8, 8)

/* ------------------------------------------------------------------------- argument checks */

/* ``a * b`` into ``*result``; 0 if it overflows (a, b >= 0). */
static int
multiply(Py_ssize_t a, Py_ssize_t b, Py_ssize_t *result)
{
    if (a != 0 && b > PY_SSIZE_T_MAX / a) {
        return 0;
    }
    *result = a * b;
    return 1;
}

/* The pixel count ``n * (h + 2 * border) * (w + 2 * border)``; -1 with an exception set. */
static Py_ssize_t
pixels(Py_ssize_t n, Py_ssize_t h, Py_ssize_t w, Py_ssize_t border)
{
    Py_ssize_t plane, total;
    if (n < 0 || h < 0 || w < 0) {
        PyErr_SetString(PyExc_ValueError, "n, h and w must not be negative");
        return -1;
    }
    if (h > PY_SSIZE_T_MAX - 2 || w > PY_SSIZE_T_MAX - 2 ||
        !multiply(h + 2 * border, w + 2 * border, &plane) || !multiply(n, plane, &total)) {
        PyErr_SetString(PyExc_OverflowError, "the grid is too large");
        return -1;
    }
    return total;
}

/* A C-contiguous buffer of ``count`` integers (bool included) of 1 byte (``one_byte``) or of 1,
 * 2, 4 or 8 bytes; 0 with an exception set (and nothing held) if it is not one. */
static int
get_buffer(PyObject *obj, Py_buffer *view, const char *name, Py_ssize_t count, int writable,
           int one_byte)
{
    int flags = PyBUF_C_CONTIGUOUS | PyBUF_FORMAT | (writable ? PyBUF_WRITABLE : 0);
    if (PyObject_GetBuffer(obj, view, flags) < 0) {
        return 0;
    }
    const char *format = view->format ? view->format : "B";
    if (*format == '<' || *format == '=' || *format == '@' || *format == '|') {
        format++;
    }
    const Py_ssize_t size = view->itemsize;
    const int integer = strchr("?bBhHiIlLqQ", *format) != NULL && format[1] == '\0';
    if (!integer || (one_byte ? size != 1 : (size != 1 && size != 2 && size != 4 && size != 8))) {
        PyErr_Format(PyExc_TypeError, "%s must hold %s integers, got format '%s' of %zd bytes",
                     name, one_byte ? "1-byte" : "1, 2, 4 or 8-byte", view->format, size);
        PyBuffer_Release(view);
        return 0;
    }
    if (view->len % size != 0 || view->len / size != count) {
        PyErr_Format(PyExc_ValueError, "%s must have %zd items, got %zd", name, count,
                     view->len / size);
        PyBuffer_Release(view);
        return 0;
    }
    return 1;
}

static int
check_connectivity(int connectivity)
{
    if (connectivity != 4 && connectivity != 8) {
        PyErr_Format(PyExc_ValueError, "connectivity must be 4 or 8, got %d", connectivity);
        return 0;
    }
    return 1;
}

/* ------------------------------------------------------------------------------ the module */

static PyObject *
hysteresis_grid(PyObject *self, PyObject *args)
{
    PyObject *grid_obj, *out_obj;
    Py_ssize_t n, h, w;
    int connectivity, ok = 1;
    Py_buffer grid, out;
    if (!PyArg_ParseTuple(args, "OOnnni:grid", &grid_obj, &out_obj, &n, &h, &w, &connectivity)) {
        return NULL;
    }
    if (!check_connectivity(connectivity)) {
        return NULL;
    }
    const Py_ssize_t cells = pixels(n, h, w, 1), inside = pixels(n, h, w, 0);
    if (cells < 0 || inside < 0) {
        return NULL;
    }
    if (!get_buffer(grid_obj, &grid, "grid", cells, 1, 0)) {
        return NULL;
    }
    if (!get_buffer(out_obj, &out, "out", inside, 1, 1)) {
        PyBuffer_Release(&grid);
        return NULL;
    }
    if (inside > 0) {
        Py_BEGIN_ALLOW_THREADS
        ok = grid_kernel(grid.buf, grid.itemsize, out.buf, n, h, w, connectivity);
        Py_END_ALLOW_THREADS
    }
    PyBuffer_Release(&out);
    PyBuffer_Release(&grid);
    if (!ok) {
        return PyErr_NoMemory();
    }
    Py_RETURN_NONE;
}

static PyObject *
hysteresis_masks(PyObject *self, PyObject *args)
{
    PyObject *weak_obj, *strong_obj, *out_obj;
    Py_ssize_t n, h, w;
    int connectivity, ok = 1;
    Py_buffer weak, strong, out;
    if (!PyArg_ParseTuple(args, "OOOnnni:masks", &weak_obj, &strong_obj, &out_obj, &n, &h, &w,
                          &connectivity)) {
        return NULL;
    }
    if (!check_connectivity(connectivity)) {
        return NULL;
    }
    const Py_ssize_t inside = pixels(n, h, w, 0);
    if (inside < 0) {
        return NULL;
    }
    if (!get_buffer(weak_obj, &weak, "weak", inside, 0, 1)) {
        return NULL;
    }
    if (!get_buffer(strong_obj, &strong, "strong", inside, 0, 1)) {
        PyBuffer_Release(&weak);
        return NULL;
    }
    if (!get_buffer(out_obj, &out, "out", inside, 1, 1)) {
        PyBuffer_Release(&strong);
        PyBuffer_Release(&weak);
        return NULL;
    }
    if (inside > 0) {
        Py_BEGIN_ALLOW_THREADS
        ok = (connectivity == 4 ? masks_4 : masks_8)(weak.buf, strong.buf, out.buf, n, h, w);
        Py_END_ALLOW_THREADS
    }
    PyBuffer_Release(&out);
    PyBuffer_Release(&strong);
    PyBuffer_Release(&weak);
    if (!ok) {
        return PyErr_NoMemory();
    }
    Py_RETURN_NONE;
}

static PyMethodDef methods[] = {
    {"grid", hysteresis_grid, METH_VARARGS,
     "grid(grid, out, n, h, w, connectivity): hysteresis on the zero-bordered (n, h+2, w+2) "
     "state grid (0 / 1 candidate / 2 seed; reached cells become 3), into out (n*h*w bytes, "
     "zeroed)."},
    {"masks", hysteresis_masks, METH_VARARGS,
     "masks(weak, strong, out, n, h, w, connectivity): hysteresis on (n, h, w) byte masks, "
     "into out (n*h*w bytes, all written)."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT,
    "_hysteresis",
    "imgrad's native hysteresis: a flood fill from every seed (see imgrad._native).",
    0,
    methods,
};

PyMODINIT_FUNC
PyInit__hysteresis(void)
{
    return PyModule_Create(&module);
}
