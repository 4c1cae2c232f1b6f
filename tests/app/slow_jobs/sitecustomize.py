"""Put on PYTHONPATH of the browser test's Streamlit server only: a comparison at batch size 1 reports each step 50 ms
later, so a test can cancel a job that is certainly still running (500 steps: 25 s) without racing it. Comparisons at
any other batch size, and everything else, are untouched."""

import os
import time

if os.environ.get("QUANTSCOPE_TEST_SLOW_BATCH1") == "1":
    import engine

    _compare = engine.compare

    def _slow_at_batch_1(*args, batch_size=8, progress=None, **kwargs):
        if batch_size == 1 and progress is not None:
            forward = progress

            def progress(ev):
                time.sleep(0.05)
                forward(ev)

        if progress is None:
            return _compare(*args, batch_size=batch_size, **kwargs)
        return _compare(*args, batch_size=batch_size, progress=progress, **kwargs)

    engine.compare = _slow_at_batch_1
