"""The fused CPU memory read (``attention_kernel.c``) on numpy arrays, torch-free: one pass per query
pixel for the scores, softmax and value blend of every memory frame, the ROI branch included
(docs/DESIGN.md, step 5). Trackers keep a :class:`FusedBank` (each memory slot laid out for the
kernel once per write: the torch backend's ``OneHotBank``, the onnxruntime backend);
:func:`memory_read` is one read of a bank made for it (:mod:`mast.core.attention_native` gives it
torch tensors).

The C source ships with the package and is compiled on first use with the host's C compiler
(``$CC``, else ``cc``; ``-O3 -march=native``, plus ``$MAST_ATTENTION_CFLAGS``) into
``$MAST_CACHE_DIR`` (default ``~/.cache/mast``), one library per source, compiler flags and CPU
flags, so a cache shared between machines never runs code built for another instruction set.
Vectors are 16 floats where the compiler targets AVX-512, else 8 (AVX2). Without a compiler
:func:`available` says why and callers keep their own implementation (PyTorch, the ONNX graph).
On AVX512-BF16 CPUs a second build (``-DMAST_BF16``, :func:`bf16_available`) scores keys and queries
laid out as bf16 channel pairs (``FusedBank(pairs=True)``: the ``--precision bf16`` read).

Threads: each stage's work (query rows, coarse-search rows, fine-window pixel groups) is split over
``threads`` Python threads; ctypes releases the GIL for the call, so they run in parallel. The arrays handed to the kernel are 64-byte aligned (its rows are
multiples of 16 floats, so each vector load stays in one cache line).
"""
from __future__ import annotations

import ctypes
import hashlib
import os
import platform
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

from mast.core.config import MAX_RADIUS, AttentionConfig
from mast.core.errors import DependencyError

SOURCE = Path(__file__).with_name("attention_kernel.c")
FLAGS = ("-O3", "-march=native", "-shared", "-fPIC", "-fno-math-errno")
EXTRA_FLAGS = "MAST_ATTENTION_CFLAGS"   # environment: more compiler flags (e.g. -mno-avx512f: the AVX2 build)
MAX_FRAMES = 16
MAX_LABELS = 16
ALIGN = 64          # bytes


class _Frame(ctypes.Structure):
    """``Frame`` of ``attention_kernel.c``."""

    _fields_ = [("roi", ctypes.c_int), ("pad", ctypes.c_int), ("wp", ctypes.c_int),
                ("key", ctypes.c_void_p), ("value", ctypes.c_void_p), ("terms", ctypes.c_void_p)]


def _cpu_flags() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith(("flags", "Features")):
                return line
    except OSError:
        pass
    return platform.processor()


def _cache_dir() -> Path:
    return Path(os.environ.get("MAST_CACHE_DIR", Path.home() / ".cache" / "mast"))


@lru_cache(maxsize=1)
def _library() -> ctypes.CDLL:
    """The compiled kernel (built once per source, flags and CPU kind). Raises DependencyError."""
    return _build(())


@lru_cache(maxsize=1)
def _bf16_library() -> ctypes.CDLL:
    """The kernel built with ``-DMAST_BF16`` (dot products of bf16 pairs: AVX512-BF16 CPUs only; see
    :func:`bf16_available`). Raises DependencyError."""
    if " avx512_bf16" not in _cpu_flags():
        raise DependencyError("the bf16 fused read needs a CPU with AVX512-BF16 (avx512_bf16 in /proc/cpuinfo)")
    return _build(("-DMAST_BF16",))


def _build(defines: tuple[str, ...]) -> ctypes.CDLL:
    cc = os.environ.get("CC", "cc")
    if shutil.which(cc) is None:
        raise DependencyError(f"the fused CPU attention needs a C compiler: {cc!r} not found "
                              "(install gcc, or set CC)")
    flags = [*FLAGS, *os.environ.get(EXTRA_FLAGS, "").split(), *defines]
    source = SOURCE.read_bytes()
    tag = hashlib.sha256(b"\0".join([source, " ".join(flags).encode(), cc.encode(), _cpu_flags().encode()]))
    target = _cache_dir() / f"mast_attention_{tag.hexdigest()[:16]}.so"
    if not target.is_file():
        target.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
            built = Path(tmp) / target.name
            run = subprocess.run([cc, *flags, "-o", str(built), str(SOURCE), "-lm"], capture_output=True, text=True)
            if run.returncode != 0:
                raise DependencyError(f"compiling {SOURCE} with {cc} failed: {run.stderr.strip()[:500]}")
            os.replace(built, target)   # atomic: concurrent first uses see a whole library or none
    lib = ctypes.CDLL(str(target))
    lib.mast_read.restype = None
    lib.mast_read.argtypes = [ctypes.c_int] * 5 + [ctypes.c_void_p, ctypes.c_int, ctypes.c_void_p] \
        + [ctypes.c_int] * 2 + [ctypes.c_void_p] * 2
    lib.mast_fine.restype = None
    lib.mast_fine.argtypes = [ctypes.c_int] * 6 + [ctypes.c_void_p] + [ctypes.c_int] * 2 + [ctypes.c_void_p] * 5 \
        + [ctypes.c_int] * 2 + [ctypes.c_void_p] * 2
    lib.mast_offsets.restype = None
    lib.mast_offsets.argtypes = [ctypes.c_int] * 5 + [ctypes.c_void_p] + [ctypes.c_int] * 2 + [ctypes.c_void_p] \
        + [ctypes.c_int] * 3 + [ctypes.c_void_p] * 2
    for name in ("mast_layout", "mast_layout_pairs"):
        getattr(lib, name).restype = None
        getattr(lib, name).argtypes = [ctypes.c_void_p] + [ctypes.c_int] * 8 + [ctypes.c_void_p]
    for name in ("mast_channels_last", "mast_channels_last_pairs"):
        getattr(lib, name).restype = None
        getattr(lib, name).argtypes = [ctypes.c_void_p] + [ctypes.c_int] * 5 + [ctypes.c_void_p]
    lib.mast_group.restype = ctypes.c_int
    lib.mast_group.argtypes = [ctypes.c_int] * 3 + [ctypes.c_void_p] * 5
    lib.mast_work_floats.restype = ctypes.c_long
    lib.mast_work_floats.argtypes = [ctypes.c_int] * 4
    lib.mast_cell.restype = ctypes.c_int
    lib.mast_cell.argtypes = [ctypes.c_int]
    return lib


def available() -> str | None:
    """None when the fused kernel can run here, else why not (one line)."""
    return _why_not(_library)


def bf16_available() -> str | None:
    """None when the bf16 read (:class:`FusedBank` ``pairs=True``) can run here, else why not."""
    return _why_not(_bf16_library)


def _why_not(build: Callable[[], ctypes.CDLL]) -> str | None:
    """None when ``build()`` gives a library, else its DependencyError / OSError in one line."""
    try:
        build()
    except (DependencyError, OSError) as e:
        return str(e)
    return None


def in_domain(radius: int, n_frames: int, n_labels: int) -> bool:
    """Whether the kernel takes this read: R <= 31, at most 16 memory frames and 16 label channels."""
    return radius <= MAX_RADIUS and n_frames <= MAX_FRAMES and n_labels <= MAX_LABELS


def default_threads() -> int:
    """Threads a read uses when not told: the CPUs this process may run on."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def one_hot(ids: np.ndarray, n_labels: int) -> np.ndarray:
    """Label channel map ``[h, w]`` (integers in [0, n_labels)) -> one-hot values ``[n_labels, h, w]``
    float32: what a candidate carries into the blend (docs/DESIGN.md, step 3)."""
    return (ids[None] == np.arange(n_labels).reshape(-1, 1, 1)).astype(np.float32)


def memory_read(query: np.ndarray, keys: Sequence[np.ndarray], values: Sequence[np.ndarray],
                distances: Sequence[int], cfg: AttentionConfig = AttentionConfig(),
                threads: int | None = None) -> np.ndarray:
    """Label distribution of the query read from M memory frames by the fused kernel: one
    :class:`FusedBank` read (a bank kept between frames lays each slot out once per write).

    query:     ``[C, h, w]`` key of the frame being predicted.
    keys:      M arrays ``[C, h, w]``, the memory frames' keys.
    values:    M arrays ``[L, h, w]``, their label values (:func:`one_hot` of the label maps, or any values).
    distances: M frame distances d = t - m >= 1 (d > cfg.roi_threshold: ROI localisation).
    threads:   threads splitting the rows (None: :func:`default_threads`).
    Returns ``[L, h, w]`` float32, one softmax over the (2R+1)^2 candidates of every memory frame
    together. Inputs are read as float32. Shapes outside the kernel (:func:`in_domain`, mismatched
    maps) raise ValueError; no compiler raises DependencyError.
    """
    if not (len(keys) == len(values) == len(distances)) or not keys:
        raise ValueError("keys, values and distances need the same, non-zero length")
    bank = FusedBank(len(keys), cfg, threads)
    for slot, (k, v) in enumerate(zip(keys, values)):
        bank.write(slot, k, v)
    return bank.read(query, list(range(len(keys))), distances)


@dataclass
class _Laid:
    """One slot's maps in the kernel's layouts: key ``[hp, C, wp]``, values ``[hp, L, wp]``, zero
    padded by ``pad`` top and left; ``fresh`` while they hold the slot's last write."""

    pad: int
    wp: int
    key: np.ndarray
    value: np.ndarray
    fresh: bool = True


class FusedBank:
    """Memory slots read by the fused kernel. Each slot's key and values are laid out (zero padded,
    rows 16-float aligned) at its first read after a write and reused by every later read until the
    next write; a slot keeps the widest padding any read needed (a restricted window reads any
    padding >= R; the ROI branch's is laid out for the largest dilation at the first ROI read). The
    query's layouts, the offsets and the work space are reused between reads too: once every slot
    has been read the way it will be (the default schedule: frame 21, when the second long-term
    frame is first read through its ROI) a read allocates nothing large and the bank keeps its size.
    At 240x427 with 62 key channels that is ~4.5 MB per restricted slot and ~16 MB per ROI slot.

    n_slots: slots of the bank. cfg: the attention read. threads: threads splitting the work (None:
    :func:`default_threads`). pairs: dot products of bf16 pairs (``vdpbf16ps``, float32 sums; AVX512-BF16
    CPUs, :func:`bf16_available`, else DependencyError): keys and queries are rounded to bf16 when laid
    out, so keys that already are bf16 values (a bf16 encoder) are read as they are, their products
    exact, only the order of the float32 sums differs from the float32 read; half the key memory.
    """

    def __init__(self, n_slots: int, cfg: AttentionConfig = AttentionConfig(), threads: int | None = None,
                 pairs: bool = False) -> None:
        if pairs and (reason := bf16_available()) is not None:
            raise DependencyError(reason)
        self.cfg = cfg
        self.pairs = pairs
        self.threads = threads or default_threads()
        self._maps: list[tuple[np.ndarray, np.ndarray] | None] = [None] * n_slots
        self._laid: list[_Laid | None] = [None] * n_slots
        self._scratch: dict[str, np.ndarray] = {}

    def write(self, slot: int, key: np.ndarray, values: np.ndarray) -> None:
        """Store ``slot``'s key ``[C, h, w]`` and values ``[L, h, w]`` (read as float32; arrays that
        already are contiguous float32 are kept by reference: change them only through ``write``)."""
        key, values = np.ascontiguousarray(key, np.float32), np.ascontiguousarray(values, np.float32)
        if key.ndim != 3 or values.ndim != 3 or key.shape[1:] != values.shape[1:]:
            raise ValueError(f"fused memory read: key [C, h, w] and values [L, h, w] of one h, w expected, got "
                             f"key {key.shape}, values {values.shape}")
        self._maps[slot] = (key, values)
        if (laid := self._laid[slot]) is not None:
            laid.fresh = False

    def read(self, query: np.ndarray, slots: Sequence[int], distances: Sequence[int]) -> np.ndarray:
        """Label distribution ``[L, h, w]`` float32 of ``query`` ``[C, h, w]`` read from ``slots`` at
        ``distances`` (:func:`memory_read`); ValueError for unwritten slots or mismatched shapes."""
        query = np.ascontiguousarray(query, np.float32)
        n_labels = self._check(query, slots, distances)
        lib, cfg = _bf16_library() if self.pairs else _library(), self.cfg
        c, h, w = query.shape
        ck, kind = ((c + 1) // 2, np.uint32) if self.pairs else (c, np.float32)   # the kernel's channels: pairs
        r, cell = cfg.radius, lib.mast_cell(cfg.radius)
        n_threads = max(1, min(self.threads, h))
        # ROI: the coarse search reaches g R pixels away, the fine windows at p + floor(o_p)
        # (|o_p| <= g R) and their cells' key squares R + cell + 1 more; laid out at once for the
        # largest dilation, which a long-term slot reaches within seconds (one layout, not three)
        roi_pad = cfg.max_dilation * r + r + cell + 2
        laid = [self._slot(lib, slot, roi_pad if cfg.uses_roi(d) else r, n_threads) for slot, d in zip(slots, distances)]
        rois = [i for i, d in enumerate(distances) if cfg.uses_roi(d)]
        work = self._buffer("work", (n_threads, lib.mast_work_floats(w, n_labels, r, len(slots)) + 16))
        q_rows = self._buffer("q_rows", (h, ck, _lanes(w)), kind)                    # [h, C, lanes]
        q_last = self._buffer("q_last", (h * w, ck), kind) if rois else None        # [h*w, C]: fine windows
        rows, last = ((lib.mast_layout_pairs, lib.mast_channels_last_pairs) if self.pairs
                      else (lib.mast_layout, lib.mast_channels_last))

        def query_layouts(lo: int, hi: int, t: int) -> None:
            rows(query.ctypes.data, c, h, w, 0, 0, q_rows.shape[2], lo, hi, q_rows.ctypes.data)
            if q_last is not None:
                last(query.ctypes.data, c, h, w, lo * w, hi * w, q_last.ctypes.data)

        _parallel([(query_layouts, lo, hi) for lo, hi in _split(h, n_threads)])
        terms = self._roi_terms(lib, q_rows, q_last, [laid[i] for i in rois], [distances[i] for i in rois],
                                n_labels, cell, work) if rois else []
        frames = (_Frame * len(slots))()
        for fr, lay in zip(frames, laid):
            fr.pad, fr.wp, fr.key, fr.value = lay.pad, lay.wp, lay.key.ctypes.data, lay.value.ctypes.data
        for i, t in zip(rois, terms):
            frames[i].roi, frames[i].terms = 1, t.ctypes.data
        out = np.empty((n_labels, h, w), np.float32)
        args = (ck, h, w, n_labels, r, q_rows.ctypes.data, len(slots), ctypes.addressof(frames))
        _parallel([(lambda lo, hi, t: lib.mast_read(*args, lo, hi, out.ctypes.data, _aligned(work[t])), lo, hi)
                   for lo, hi in _split(h, n_threads)])
        return out

    def _check(self, query: np.ndarray, slots: Sequence[int], distances: Sequence[int]) -> int:
        """The label channels L of a read of ``slots`` at ``distances`` by ``query``; ValueError for
        unwritten slots, mismatched shapes or a read outside the kernel (:func:`in_domain`)."""
        maps = [self._maps[s] for s in slots]
        if not slots or len(slots) != len(distances) or any(m is None for m in maps):
            raise ValueError(f"fused memory read: written slots and one distance each expected, got slots "
                             f"{list(slots)} ({sum(m is None for m in maps)} never written), distances {list(distances)}")
        if query.ndim != 3 or any(k.shape != query.shape or v.shape[0] != maps[0][1].shape[0] for k, v in maps):
            raise ValueError(f"fused memory read: query [C, h, w] {query.shape}, keys of its shape and values "
                             f"[L, h, w] of its h, w expected, got keys {[k.shape for k, _ in maps]}, values "
                             f"{[v.shape for _, v in maps]}")
        n_labels = maps[0][1].shape[0]
        if not in_domain(self.cfg.radius, len(slots), n_labels):
            raise ValueError(f"fused memory read: radius <= {MAX_RADIUS}, <= {MAX_FRAMES} frames and <= "
                             f"{MAX_LABELS} labels expected, got radius {self.cfg.radius}, {len(slots)} frames, "
                             f"{n_labels} labels")
        return n_labels

    def _roi_terms(self, lib: ctypes.CDLL, q_rows: np.ndarray, q_last: np.ndarray, laid: list[_Laid],
                   distances: list[int], n_labels: int, cell: int, work: np.ndarray) -> list[np.ndarray]:
        """The ROI frames' fine-window terms ``[L + 2, h * w]`` each (peak, sum of exp, values; what
        ``mast_read`` merges): every frame's coarse search in one pass over the threads, its pixels
        grouped by target cell, then every frame's fine windows in one pass balanced by pixels."""
        h, c, _ = q_rows.shape
        w, r = q_last.shape[0] // h, self.cfg.radius
        offsets = [self._buffer(f"offsets{k}", (2, h, w), np.float64) for k in range(len(laid))]
        _coarse_offsets(lib, q_rows, r, laid, [self.cfg.dilation(d) for d in distances], offsets, work)
        terms = [self._buffer(f"terms{k}", (n_labels + 2, h * w)) for k in range(len(laid))]
        groups = [_by_cell(lib, o, cell) for o in offsets]                       # (order, starts) each
        fine = [(c, h, w, n_labels, r, cell, q_last.ctypes.data, lay.pad, lay.wp, lay.key.ctypes.data,
                 lay.value.ctypes.data, o.ctypes.data, order.ctypes.data, starts.ctypes.data)
                for lay, o, (order, starts) in zip(laid, offsets, groups)]
        shares = _balanced([starts for _, starts in groups], work.shape[0])

        def fine_windows(lo: int, hi: int, t: int) -> None:
            for k, g0, g1 in shares[lo]:
                lib.mast_fine(*fine[k], g0, g1, terms[k].ctypes.data, _aligned(work[t]))

        _parallel([(fine_windows, i, i + 1) for i in range(len(shares))])
        return terms

    def _slot(self, lib: ctypes.CDLL, slot: int, pad: int, n_threads: int) -> _Laid:
        """``slot``'s maps laid out with padding >= ``pad`` (laid out now when stale or too narrow)."""
        laid = self._laid[slot]
        if laid is not None and laid.fresh and laid.pad >= pad:
            return laid
        key, values = self._maps[slot]
        pad = max(pad, laid.pad if laid is not None else 0)
        (c, h, w), n_labels = key.shape, values.shape[0]
        ck, kind = ((c + 1) // 2, np.uint32) if self.pairs else (c, np.float32)
        wp = -(-(2 * pad + 64 + _lanes(w)) // 16) * 16                    # rows 16-float aligned
        shapes = ((h + 2 * pad + 1, ck, wp), (h + 2 * pad + 1, n_labels, wp))
        if laid is None or (laid.key.shape, laid.value.shape) != shapes:
            laid = self._laid[slot] = _Laid(pad, wp, _empty(shapes[0], kind), _empty(shapes[1]))
        _layout(lib, [(key, laid.key, self.pairs), (values, laid.value, False)], pad, n_threads)
        laid.fresh = True
        return laid

    def _buffer(self, name: str, shape: tuple[int, ...], dtype: type = np.float32) -> np.ndarray:
        """A kept, aligned scratch array of this shape (contents undefined)."""
        buf = self._scratch.get(name)
        if buf is None or buf.shape != shape or buf.dtype != dtype:
            buf = self._scratch[name] = _empty(shape, dtype)
        return buf


def _lanes(w: int) -> int:
    """Query row width in the kernel's layouts: ``w`` rounded up to 16 (rows read 16 pixels at a time)."""
    return -(-w // 16) * 16


def _empty(shape: tuple[int, ...], dtype: type = np.float32) -> np.ndarray:
    """An uninitialised array whose first element is ``ALIGN``-byte aligned."""
    size = int(np.prod(shape)) * np.dtype(dtype).itemsize
    raw = np.empty(size + ALIGN, np.uint8)
    start = -raw.ctypes.data % ALIGN
    return raw[start: start + size].view(dtype).reshape(shape)


def _layout(lib: ctypes.CDLL, maps: list[tuple[np.ndarray, np.ndarray, bool]], pad: int, n_threads: int) -> None:
    """Each ``x`` ``[C, h, w]`` (contiguous float32) of ``maps`` placed at (pad, pad) in its ``out``
    ``[rows, C, width]`` (with ``pairs``: ``[rows, ceil(C / 2), width]`` bf16 pairs), zeros around it
    (rows split over the threads)."""

    def run(lo: int, hi: int, t: int) -> None:
        for x, out, pairs in maps:
            c, h, w = x.shape
            layout = lib.mast_layout_pairs if pairs else lib.mast_layout
            layout(x.ctypes.data, c, h, w, pad, pad, out.shape[2], lo, min(hi, out.shape[0]), out.ctypes.data)

    _parallel([(run, lo, hi) for lo, hi in _split(max(out.shape[0] for _, out, _ in maps), n_threads)])


def _by_cell(lib: ctypes.CDLL, offsets: np.ndarray, cell: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixels grouped by the ``cell x cell`` square where their fine window lands (p + floor(o_p)):
    ``order`` ``[h*w]`` int32 pixel indices, group by group (inside a group by the cell row where
    their windows start), and ``starts`` ``[G+1]`` int32 where each group begins in it."""
    _, h, w = offsets.shape
    reach = int(np.abs(offsets).max()) + 1                                # cells spanned: at most this
    cells = (-(-(h + 2 * reach) // cell) + 2) * (-(-(w + 2 * reach) // cell) + 2)
    order, starts = np.empty(h * w, np.int32), np.empty(h * w + 1, np.int32)
    count, scratch = np.empty(cells * cell + 1, np.int32), np.empty(h * w, np.int32)
    groups = lib.mast_group(h, w, cell, offsets.ctypes.data, order.ctypes.data, starts.ctypes.data,
                            count.ctypes.data, scratch.ctypes.data)
    return order, starts[: groups + 1]


def _balanced(starts: list[np.ndarray], parts: int) -> list[list[tuple[int, int, int]]]:
    """The pixel groups of several frames (frame k's group i: pixels ``starts[k][i] .. starts[k][i + 1]``)
    in ``parts`` shares of about equal pixel counts: share j lists ``(k, g0, g1)``, groups
    ``[g0, g1)`` of frame k (a group belongs to the share where its first pixel falls)."""
    sizes = [int(st[-1]) for st in starts]
    bounds = np.linspace(0, sum(sizes), parts + 1)
    shares: list[list[tuple[int, int, int]]] = []
    for lo, hi in zip(bounds, bounds[1:]):
        share, base = [], 0
        for k, (st, n) in enumerate(zip(starts, sizes)):
            g0, g1 = (int(np.searchsorted(st, min(max(x - base, 0), n))) for x in (lo, hi))
            if g1 > g0:
                share.append((k, g0, g1))
            base += n
        shares.append(share)
    return [sh for sh in shares if sh]


def _split(n: int, parts: int, block: int = 4) -> list[tuple[int, int]]:
    """[0, n) in ``parts`` contiguous ranges, in multiples of ``block`` where possible (the kernel's
    row block)."""
    blocks = -(-n // block)
    bounds = [min(n, block * (blocks * i // parts)) for i in range(parts + 1)]
    return [(lo, hi) for lo, hi in zip(bounds, bounds[1:]) if hi > lo]


@lru_cache(maxsize=4)
def _pool(threads: int) -> ThreadPoolExecutor:
    return ThreadPoolExecutor(threads, thread_name_prefix="mast-attention")


def _parallel(calls: list[tuple[Callable[[int, int, int], None], int, int]]) -> None:
    """Run ``fn(lo, hi, t)`` for each ``(fn, lo, hi)`` of ``calls``, call t in thread t (at most one
    call per work buffer ``t``)."""
    if len(calls) == 1:
        fn, lo, hi = calls[0]
        fn(lo, hi, 0)
        return
    futures = [_pool(len(calls)).submit(fn, lo, hi, t) for t, (fn, lo, hi) in enumerate(calls)]
    for f in futures:
        f.result()


def _coarse_offsets(lib: ctypes.CDLL, q_rows: np.ndarray, r: int, laid: list[_Laid], gammas: list[int],
                    offsets: list[np.ndarray], work: np.ndarray) -> None:
    """ROI centre offsets ``[2, h, w]`` float64 of each ROI frame into ``offsets`` (the coarse search):
    query ``q_rows`` ``[h, C, lanes]``, the frames' padded keys (``pad`` >= gamma R), radius ``r``;
    the rows of each residue modulo gamma of every frame split over the threads in one pass."""
    if not laid:
        return
    h, c, _ = q_rows.shape
    w = offsets[0].shape[2]
    units = [(k, ry, lo, hi) for k, g in enumerate(gammas) for ry in range(g)
             for lo, hi in _split(-(-(h - ry) // g), 2)]

    def run(lo: int, hi: int, t: int) -> None:
        for k, ry, i0, i1 in units[lo:hi]:
            lib.mast_offsets(c, h, w, r, gammas[k], q_rows.ctypes.data, laid[k].pad, laid[k].wp,
                             laid[k].key.ctypes.data, ry, i0, i1, offsets[k].ctypes.data, _aligned(work[t]))

    _parallel([(run, lo, hi) for lo, hi in _split(len(units), work.shape[0], block=1)])


def _aligned(buffer: np.ndarray) -> int:
    """Address of the first 64-byte aligned float of ``buffer`` (16 floats of slack)."""
    return -(-buffer.ctypes.data // ALIGN) * ALIGN
