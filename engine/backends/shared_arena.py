"""One CPU memory arena for every ONNX Runtime accuracy session of the process, returned to the system when the last one
closes.

Accuracy sessions take turns (the reference, the marked and the plain candidate; then a probe's gated, recorder and
suffix sessions), and with an arena each, every open session kept memory at its largest run's size: the ranking's
sessions at 32 samples held 1.39 GB of a MobileNetV3 compare at once. With one arena, what one session freed serves
the next: 0.98 GB, every result bit for bit the same. An arena is never returned while it lives, so a second after the
last session sharing it closed, if none opened since, it is shrunk (a run of a one-node session with ONNX Runtime's
arena shrinkage option, about 0.08 s). Not at once: a session's outputs are numpy arrays over arena memory, and those
still held when it closes (a loop's last final outputs) keep their whole region from being returned; and a job opening
its next sessions straight away (a compare's ranking after its loop) keeps the memory it is about to need again.
MobileNetV3: 0.32 GB held after a compare and a rebuild, where an arena a session left 0.44 GB. ONNX Runtime never
returns the arena's first region (the size of the process's first allocation there), nor a region an output still held
sits in."""

from __future__ import annotations

import atexit
import threading

import numpy as np

__all__ = ["SharedCpuArena", "SHARED_CPU_ARENA"]


class SharedCpuArena:
    SHRINK_AFTER_S = 1.0

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._registered: bool | None = None  # None: not tried yet in this process
        self._open = 0
        self._shrinker = None
        self._timer: threading.Timer | None = None
        self._closed = False
        self.shrinks = 0  # how many times the arena was shrunk (tests)
        # a shrink running while the interpreter shuts down aborted the process ("terminate called without an active
        # exception"): at exit, wait for one in flight, start none after, and drop the one-node session while all is alive
        atexit.register(self._close)

    def _close(self) -> None:
        with self._lock:
            self._closed = True
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None
            self._shrinker = None

    def acquire(self) -> bool:
        """Whether the session about to open may use the shared arena (session.use_env_allocators); counted as open
        until `release`. False where the runtime refuses to register it: the session keeps an arena of its own."""
        import onnxruntime as ort

        with self._lock:
            if self._registered is None:
                try:
                    info = ort.OrtMemoryInfo("Cpu", ort.OrtAllocatorType.ORT_ARENA_ALLOCATOR, 0, ort.OrtMemType.DEFAULT)
                    # ORT's defaults: no limit, growing by powers of two (growing by what is asked fragmented it: 1.54 GB)
                    ort.create_and_register_allocator(info, ort.OrtArenaCfg(0, -1, -1, -1))
                    self._registered = True
                except Exception:  # noqa: BLE001 - a runtime without environment allocators: an arena per session
                    self._registered = False
            if self._registered:
                self._open += 1
                if self._timer is not None:
                    self._timer.cancel()
                    self._timer = None
            return self._registered

    def release(self) -> None:
        """A session that `acquire`d has closed; after the last one, the arena's free memory goes back to the system
        SHRINK_AFTER_S later unless a session opened meanwhile."""
        with self._lock:
            self._open = max(0, self._open - 1)
            if self._open or self._timer is not None or self._closed:
                return
            self._timer = threading.Timer(self.SHRINK_AFTER_S, self._shrink_if_idle)
            self._timer.daemon = True
            self._timer.start()

    def _shrink_if_idle(self) -> None:
        with self._lock:
            if self._timer is not threading.current_thread():  # cancelled and replaced, or a session opened
                return
            self._timer = None
            if self._open or self._closed:
                return
            try:
                self._shrink()
                self.shrinks += 1
            except Exception:  # noqa: BLE001 - memory kept is no error: the next session reuses it
                self._shrinker = None

    def _shrink(self) -> None:
        import onnx
        import onnxruntime as ort
        from onnx import TensorProto, helper

        if self._shrinker is None:
            graph = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "shrink",
                                      [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
                                      [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])])
            model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], ir_version=8)
            onnx.checker.check_model(model)
            options = ort.SessionOptions()
            options.add_session_config_entry("session.use_env_allocators", "1")
            options.intra_op_num_threads = options.inter_op_num_threads = 1  # no pool of spinning threads for a no-op
            options.add_session_config_entry("session.intra_op.allow_spinning", "0")
            self._shrinker = (ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"]),
                              ort.RunOptions())
            self._shrinker[1].add_run_config_entry("memory.enable_memory_arena_shrinkage", "cpu:0")
        session, run_options = self._shrinker
        session.run(None, {"x": np.zeros(1, np.float32)}, run_options)


SHARED_CPU_ARENA = SharedCpuArena()
