"""The fast sampler's pixel steps: run eagerly, replayed as CUDA graphs, or audited for replay.

A pixel step is all the sampler does at pixel (i, j) once its row has started: the ul stream
at (i, j) and at the positions of the lower levels it determines, the head, the draw and the
writes of the drawn value (`fast._CachedTrunk.ul_pixel` and `fast_sample`'s loop). On a GPU
each of its ~100 small operations is a kernel launch of a few microseconds, so the loop is
bound by launches, not by arithmetic. With `graphs=True` on a CUDA device each distinct step
is captured once in a CUDA graph and then replayed: one launch per pixel. On a CPU there is
nothing to capture and the steps run eagerly.

A step can be replayed only if it reads and writes the same memory each time, keeps nothing
between steps outside that memory, and changes no Python state that later steps depend on. The
sampler is built for that: every per-row term is written into a buffer made once, every band
slides before its row's steps (a slide inside a step raises), and the draw's noise is copied
into fixed buffers per row. Two steps are the same step when their columns are equal and their
rows start alike (`_CachedTrunk.step_key`: which levels run, and where each band holds its
current row); that pair keys the graphs.

`audit=True` checks those conditions on any device, GPU or not: it runs the steps eagerly and
records, for every operation that launches work (views do not), the places (address, shape,
strides, dtype) of the tensors it reads or writes that its step did not make. Every step of a
key must touch the same places in the same order as the first; no step may read a tensor that
an earlier step made (in a graph that memory is private to the earlier graph and reused) or
that the eager work of its row made afresh (a graph would keep reading the first row's), nor
read a value back into Python. The first step of each key runs twice, as the warm-up before a
capture makes it, so the samples also show that running a step twice changes nothing.
tests/trainables/test_pixel_steps.py runs the audit at 28x28 and 32x32, finds the audited
samples equal to the eager ones, and shows that each way of breaking a replay is caught.

`RecordedGraph` does what a CUDA graph does, on any device: it records the operations a step
runs with the very tensors they touch, and replays them without the step's Python. The tests
replay the sampler's steps that way (`PixelSteps.recorded_graphs`) and get the eager samples
bit for bit; only CUDA's own part (the capture API, the shared memory pool) is left to a GPU.
"""
from __future__ import annotations

import weakref
from typing import Callable, Optional

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

from trainables.sampling.fast_ops import ActivationMap


class StepAuditError(AssertionError):
    """A pixel step that a CUDA graph could not replay faithfully."""


class _no_slides:
    """Bands may not slide inside a pixel step."""

    def __enter__(self):
        ActivationMap.sliding = False

    def __exit__(self, *exc):
        ActivationMap.sliding = True


def _tensors(tree) -> list:
    return [t for t in tree_flatten(tree)[0] if isinstance(t, torch.Tensor)]


class _PlaceRecorder(TorchDispatchMode):
    """Records the places each operation touches, of tensors the current step did not make, and
    what the step made. Given made_by (work outside a step), it only registers what is made."""

    def __init__(self, made_before: dict, made_by: str = ""):
        super().__init__()
        self.made_before = made_before  # storage address -> (weakref of a tensor, who made it)
        self.made_by = made_by  # registering work outside a step: what it is
        self.made: set = set()  # storage addresses made by this step
        self.outputs: list = []  # what this step made
        self.places: list = []
        self.stale: Optional[str] = None

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func is torch.ops.aten._local_scalar_dense.default and not self.made_by and self.stale is None:
            self.stale = "reads a value back into Python (a host sync, which a graph cannot capture)"
        seen, input_storages = [], set()
        for t in _tensors((args, kwargs)):
            storage = t.untyped_storage().data_ptr()
            input_storages.add(storage)
            if self.made_by or storage in self.made:
                continue
            ref, maker = self.made_before.get(storage, (None, ""))
            if ref is not None and ref() is not None and self.stale is None:
                self.stale = f"{func} reads a tensor {tuple(t.shape)} that {maker} made"
            seen.append((t.data_ptr(), tuple(t.shape), t.stride(), t.dtype))
        if not self.made_by and not func.is_view:  # a view launches no kernel; a cached view is made once
            self.places.append((str(func), tuple(seen)))
        out = func(*args, **kwargs)
        for t in _tensors(out):
            storage = t.untyped_storage().data_ptr()
            if storage not in input_storages:
                self.made.add(storage)
                if self.made_by:
                    self.made_before[storage] = (weakref.ref(t), self.made_by)
                else:
                    self.outputs.append(t)
        return out


class _OpRecorder(TorchDispatchMode):
    """Runs operations and records those that do work (views do none) with their tensors."""

    def __init__(self, ops: list):
        super().__init__()
        self.ops = ops

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        if not func.is_view:
            self.ops.append((func, args, kwargs, _tensors(out)))
        return out


class RecordedGraph:
    """What a CUDA graph does, on any device (for tests): capture records the operations a
    function runs, with the very tensors they read and write; replay runs those operations
    again on those tensors, without the Python that issued them. What an operation makes is
    written into the tensors it made at capture, as into a graph's private memory. A step
    that replays correctly this way replays correctly as a CUDA graph, unless CUDA itself
    differs (the capture API, its memory pool)."""

    def __init__(self):
        self.ops: list = []

    def capture(self, fn: Callable[[], None]) -> None:
        fn()  # the warm-up run, as before a CUDA capture
        with _OpRecorder(self.ops):
            fn()

    def replay(self) -> None:
        for func, args, kwargs, kept in self.ops:
            for made, into in zip(_tensors(func(*args, **kwargs)), kept):
                if made is not into:
                    into.copy_(made)


class _CudaGraph:
    def __init__(self, pool, side: "torch.cuda.Stream"):
        self.pool, self.side = pool, side

    def capture(self, fn: Callable[[], None]) -> None:
        # Once eagerly first, as capture wants (libraries set up their state outside it), then
        # captured, both on a side stream. Not `with torch.cuda.graph(...)`: it synchronizes and
        # empties the allocator's cache at every capture, ~140 times per 28x28 image here.
        self.side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(self.side):
            fn()
            self.graph = torch.cuda.CUDAGraph()
            self.graph.capture_begin(pool=self.pool)
            try:
                fn()
            finally:
                self.graph.capture_end()
        torch.cuda.current_stream().wait_stream(self.side)

    def replay(self) -> None:
        self.graph.replay()


class PixelSteps:
    """Samples row by row: `row(i)` runs the row's own work (`start(i)`: the u stream, the
    row's terms, the bands' slides, the draw's noise) eagerly, then `step(i, j)` at each column:
    eagerly, replayed as CUDA graphs (graphs=True on a CUDA device), or audited (audit=True)."""

    recorded_graphs = False  # tests: with graphs=True, RecordedGraph on any device instead of CUDA graphs

    def __init__(self, start: Callable[[int], None], step: Callable[[int, int], None],
                 key: Callable[[int], tuple], width: int, device: torch.device, *, graphs: bool = False,
                 audit: bool = False):
        self.start, self.step, self.key, self.width = start, step, key, width
        self.audit = audit
        self.graphs_on = graphs and not audit and (device.type == "cuda" or self.recorded_graphs)  # else eager
        self.graphs: dict = {}
        self.first_runs: dict = {}  # audit: key -> ((i, j), places)
        self.made_before: dict = {}
        if self.graphs_on and self.recorded_graphs:
            self.new_graph = RecordedGraph
        elif self.graphs_on:
            pool, side = torch.cuda.graph_pool_handle(), torch.cuda.Stream(device)
            self.new_graph = lambda: _CudaGraph(pool, side)

    def row(self, i: int) -> None:
        if self.audit:
            with _PlaceRecorder(self.made_before, made_by=f"the start of row {i}"):
                self.start(i)
        else:
            self.start(i)
        key = self.key(i)
        with _no_slides():
            for j in range(self.width):
                if self.graphs_on:
                    self._replay(key + (j,), i, j)
                elif self.audit:
                    self._audited(key + (j,), i, j)
                else:
                    self.step(i, j)

    def _replay(self, key: tuple, i: int, j: int) -> None:
        """Step (i, j) as the graph of its key, captured at the first step of the key. Capture
        runs the step before (the warm-up) and the replay after it: running a step again gives
        what running it once does, as it rewrites every value it writes before it reads it."""
        graph = self.graphs.get(key)
        if graph is None:
            graph = self.graphs[key] = self.new_graph()
            graph.capture(lambda: self.step(i, j))
        graph.replay()

    def _audited(self, key: tuple, i: int, j: int) -> None:
        if key not in self.first_runs:
            self._recorded(i, j, "the warm-up run of ")  # before a capture: the step runs twice, as in _replay
        places = self._recorded(i, j)
        (i0, j0), first = self.first_runs.setdefault(key, ((i, j), places))
        for n, (was, now) in enumerate(zip(first, places)):
            if was != now:
                raise StepAuditError(f"pixel step ({i}, {j}) is not a replay of step ({i0}, {j0}) of the same key: "
                                     f"operation {n} {now[0]} touches {now[1]}, where it touched {was[1]}")
        if len(first) != len(places):
            raise StepAuditError(f"pixel step ({i}, {j}) runs {len(places)} operations, "
                                 f"step ({i0}, {j0}) of the same key {len(first)}")

    def _recorded(self, i: int, j: int, run: str = "") -> list:
        """Runs step (i, j) and returns the places its operations touched."""
        recorder = _PlaceRecorder(self.made_before)
        with recorder:
            self.step(i, j)
        if recorder.stale is not None:
            raise StepAuditError(f"pixel step ({i}, {j}) {recorder.stale}: a replayed graph could not do that")
        for t in recorder.outputs:  # alive after the step: no later step may read it
            self.made_before[t.untyped_storage().data_ptr()] = (weakref.ref(t), f"{run}pixel step ({i}, {j})")
        return recorder.places
