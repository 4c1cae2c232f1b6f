"""quantscope compare | rebuild | sensitivity | autofallback | bench | runs | providers | doctor. Bad input: one sentence on stderr, exit 2, no traceback."""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Sequence

from engine.cli.progress_bar import StderrProgress
from engine.errors import QuantScopeError, unexpected_error_sentence

__all__ = ["main", "build_parser"]


def _quant_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--fallback", nargs="*", default=[], metavar="NODE", help="ONNX node names kept out of INT8")
    p.add_argument("--fallback-precision", default="fp16", choices=["fp16", "fp32"])
    p.add_argument("--range", dest="ranges", action="append", default=[], metavar="TENSOR=MIN,MAX",
                   help="custom calibration range for a tensor (repeatable)")
    p.add_argument("--provider", default=None, help="auto | cpu | cuda | tensorrt (default: auto, or the run's)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    _index_arg(p)


def _index_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--no-index", action="store_true",
                   help="do not record this run in the run index ($QUANTSCOPE_RUNS_ROOT/index.sqlite3, default ~/.quantscope/runs)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="quantscope", description="Find and fix the layers that INT8 quantization hurts.")
    sub = parser.add_subparsers(dest="command", required=True)
    c = sub.add_parser("compare", help="quantize a model and compare FP32 vs INT8 layer by layer")
    c.add_argument("model", help="the FP32 .onnx model")
    c.add_argument("--calib", required=True, help="calibration data: .npz, .npy, Polygraphy inputs .json, image folder or .zip")
    c.add_argument("--data", default=None, help="evaluation data (default: the calibration data)")
    c.add_argument("--labels", default=None, help=".npy of integer labels for the evaluation data")
    c.add_argument("--batch", type=int, default=8)
    c.add_argument("--calib-method", default="minmax", help="minmax | entropy | percentile")
    c.add_argument("--op-types", nargs="+", default=None, metavar="OP", help="op types to quantize (default: Conv ConvTranspose Gemm MatMul)")
    c.add_argument("--out", required=True, help="run folder to write")
    c.add_argument("--max-model-mb", type=float, default=2048, help="refuse larger models (default 2048)")
    _quant_args(c)
    r = sub.add_parser("rebuild", help="re-emit a run's INT8 model with another fallback set (no recalibration) and re-compare")
    r.add_argument("run_dir")
    _quant_args(r)
    se = sub.add_parser("sensitivity", help="isolated per-node sensitivity (two views) -> DIR/sensitivity.csv")
    se.add_argument("run_dir")
    se.add_argument("--provider", default=None)
    se.add_argument("--quiet", action="store_true")
    af = sub.add_parser("autofallback", help="find a small fallback set meeting a target, rebuild with it -> DIR/autofallback.json")
    af.add_argument("run_dir")
    af.add_argument("--target", required=True, help="cosine=X | snr_db=Y | top1_agreement=Z | accuracy_drop=D")
    af.add_argument("--max-nodes", type=int, default=None)
    af.add_argument("--strategy", default="both", help="greedy | bisect | both")
    af.add_argument("--units", default="node", help="node | residual | activation")
    af.add_argument("--provider", default=None)
    af.add_argument("--quiet", action="store_true")
    _index_arg(af)
    lb = sub.add_parser("bench", help="latency of FP32, FP16, full INT8 and the current mixed build -> DIR/latency.json")
    lb.add_argument("run_dir")
    lb.add_argument("--runs", type=int, default=50)
    lb.add_argument("--warmup", type=int, default=10)
    lb.add_argument("--provider", default=None)
    lb.add_argument("--quiet", action="store_true")
    ru = sub.add_parser("runs", help="list past runs from the run index, including incomplete (killed) ones")
    ru.add_argument("--workspace", default=None, help="only this workspace's runs ('cli' for runs started from the command line)")
    ru.add_argument("--json", action="store_true", help="one JSON object per line")
    sub.add_parser("providers", help="list the backends usable here")
    sub.add_parser("doctor", help="versions, providers, GPU and which features are usable here (start bug reports with it)")
    return parser


def _fmt(x: float) -> str:
    return "inf" if x == math.inf else f"{x:.2f}"


def _report(result, out=None) -> None:
    out = out or sys.stdout
    s = result.summary
    print(f"backend: {s.backend} ({s.backend_note})", file=out)
    for name, m in s.outputs.items():
        print(f"output {name}: cosine {m.cosine:.5f}  SNR {_fmt(m.snr_db)} dB", file=out)
    t = s.task
    if t.get("top1_agreement") is not None:
        acc = "" if t.get("candidate_accuracy") is None else f"  accuracy {t['reference_accuracy']:.4f} -> {t['candidate_accuracy']:.4f}"
        print(f"top-1 agreement {t['top1_agreement']:.4f}{acc}", file=out)
    print(s.headline, file=out)
    for w in s.warnings:
        print(f"warning: {w}", file=out)
    print(f"results in {result.run_dir}", file=out)


def _open_index(args):
    """The run index, or None with --no-index; an index that cannot be opened warns but never stops a run."""
    if getattr(args, "no_index", False):
        return None
    from engine.run_index import RunIndex

    try:
        return RunIndex()
    except QuantScopeError as err:
        print(f"warning: {err} This run is not recorded in the index.", file=sys.stderr)
        return None


def _tracked(index, kind: str, model: str, run_dir: str, work):
    if index is None:
        return work()
    from engine.run_index import CLI_WORKSPACE

    return index.record(CLI_WORKSPACE, kind, model, lambda _folder: work(), run_dir)


def _model_of(run_dir: str) -> str:
    import json
    from pathlib import Path

    try:
        return str(json.loads((Path(run_dir) / "config.json").read_text())["model"])
    except (OSError, ValueError, KeyError, TypeError):
        return Path(run_dir).name


def _print_runs(args) -> None:
    import json

    from engine.run_index import RunIndex

    records = RunIndex().runs(args.workspace)
    if args.json:
        for r in records:
            row = r.as_row()
            print(json.dumps({k: str(v) if isinstance(v, float) and not math.isfinite(v) else v for k, v in row.items()}))
        return
    if not records:
        print("no runs recorded yet")
        return
    print(f"{'run':>5} {'started':19} {'status':10} {'kind':12} {'workspace':16} {'SNR dB':>7} {'fallback':>8}  model / folder / note")
    for r in records:
        snr = "-" if r.snr_db is None else _fmt(r.snr_db)
        note = f"  {r.message}" if r.message else ""
        print(f"{r.id:>5} {r.as_row()['started']:19} {r.status.value:10} {r.kind:12} {r.workspace:16} {snr:>7} {len(r.fallback):>8}  "
              f"{r.model}  {r.run_dir}{note}")


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    progress = (lambda ev: None) if getattr(args, "quiet", False) else StderrProgress()
    try:
        if args.command == "doctor":
            from engine.doctor import doctor_lines

            print("\n".join(doctor_lines()))
            return 0
        if args.command == "runs":
            _print_runs(args)
            return 0
        if args.command == "providers":
            from engine.backends.select import available_providers

            for name, ok in available_providers().items():
                print(f"{name:9} {'available' if ok else 'not available'}")
            return 0
        if args.command == "bench":
            from engine.latency import measure_latency

            rows = measure_latency(args.run_dir, provider=args.provider, runs=args.runs, warmup=args.warmup, progress=progress)
            print(f"{'build':22} {'median ms':>10} {'p90 ms':>8} {'SNR dB':>8} {'reformats':>9}")
            for r in rows:
                if r.median_ms is None:
                    print(f"{r.build:22} {r.note}")
                    continue
                snr = "inf" if r.snr_db == math.inf else f"{r.snr_db:.2f}"
                print(f"{r.build:22} {r.median_ms:10.3f} {r.p90_ms:8.3f} {snr:>8} {'-' if r.reformat_layers is None else r.reformat_layers:>9}")
            print(f"batch {rows[0].batch}, {args.runs} timed runs after {args.warmup} warm-up; wrote {args.run_dir}/latency.json")
            return 0
        if args.command == "sensitivity":
            from engine.diagnose import sensitivity

            frame = sensitivity(args.run_dir, provider=args.provider, progress=progress)
            top = frame.iloc[0]
            print(f"{len(frame)} nodes probed; most sensitive alone: {top['node']} "
                  f"(SNR {top['only_this_quantized_snr_db']:.2f} dB when only it is INT8); wrote {args.run_dir}/sensitivity.csv")
            return 0
        if args.command == "autofallback":
            from engine.diagnose import autofallback
            from engine.pipeline import rebuild

            index = _open_index(args)

            def tracked_rebuild(run_dir, **kw):
                return _tracked(index, "autofallback", _model_of(run_dir), run_dir, lambda: rebuild(run_dir, **kw))

            res = autofallback(args.run_dir, args.target, max_nodes=args.max_nodes, strategy=args.strategy, units=args.units,
                               provider=args.provider, progress=progress, rebuild_fn=tracked_rebuild)
            print(res.message)
            for name, r in res.strategies.items():
                print(f"  {name}: {len(r.fallback)} node(s) after pruning ({len(r.before_pruning)} before), {r.probes} probes")
            print(f"wrote {args.run_dir}/autofallback.json and rebuilt {args.run_dir}/candidate.onnx")
            return 0 if res.met else 1
        from engine.quantize.config import CalibrationMethod, FallbackPrecision, QuantConfig, RangeOverride

        ranges = tuple(RangeOverride.parse(r) for r in args.ranges)
        precision = FallbackPrecision.parse(args.fallback_precision)
        if args.command == "compare":
            from pathlib import Path

            from engine.pipeline import compare
            from engine.quantize.config import TRT_INT8_OP_TYPES

            config = QuantConfig(
                calibration=CalibrationMethod.parse(args.calib_method),
                op_types=tuple(args.op_types or TRT_INT8_OP_TYPES),
                fallback=frozenset(args.fallback), fallback_precision=precision, ranges=ranges,
            )
            result = _tracked(_open_index(args), "compare", Path(args.model).name, args.out, lambda: compare(
                args.model, args.calib, out_dir=args.out, data=args.data, labels=args.labels, config=config,
                batch_size=args.batch, provider=args.provider or "auto", progress=progress,
                max_model_bytes=int(args.max_model_mb * 1024**2)))
        else:
            from engine.pipeline import rebuild

            result = _tracked(_open_index(args), "rebuild", _model_of(args.run_dir), args.run_dir, lambda: rebuild(
                args.run_dir, fallback=args.fallback, ranges=ranges or None, fallback_precision=precision,
                provider=args.provider, progress=progress))
        _report(result)
        return 0
    except QuantScopeError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("error: interrupted; earlier results in the run folder are untouched.", file=sys.stderr)
        return 130
    except Exception as err:  # noqa: BLE001 - the last line of defence: one sentence, never a traceback
        print(f"error: {unexpected_error_sentence(err)}", file=sys.stderr)
        return 3


if __name__ == "__main__":
    sys.exit(main())
