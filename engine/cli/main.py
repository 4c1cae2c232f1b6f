"""quantscope compare | rebuild | sensitivity | autofallback | bench | runs | providers | doctor.
Bad input: one sentence on stderr, exit 2, no traceback. Settings from the environment are read here, once."""

from __future__ import annotations

import argparse
import logging
import math
import sys
from collections.abc import Sequence

from engine.cli.progress_bar import StderrProgress
from engine.errors import QuantScopeError, unexpected_error_sentence

__all__ = ["main", "build_parser", "FLAGS"]

# the engine names an option; the CLI says which flag sets it
FLAGS = {"ray": "--ray", "sweep": "--sweep", "precision": "--precision", "select": "--select", "methods": "--methods",
         "fallback": "--fallback", "fallback_precision": "--fallback-precision", "ranges": "--range", "calib_method": "--calib-method",
         "op_types": "--op-types", "batch": "--batch", "provider": "--provider", "percentile": "--percentile",
         "screen_samples": "--screen-samples", "samples": "--samples", "target": "--target", "runs": "--runs",
         "images": "--image-*", "units": "--units", "strategy": "--strategy", "max_nodes": "--max-nodes"}


def _ray_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--ray", default=None, metavar="auto|ADDRESS",
                   help="run the probes on Ray: 'auto' starts a local runtime on this machine's cores and GPUs, an address "
                        "joins a cluster (needs pip install .[scale]; default: one after another, without Ray)")


def _index_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--no-index", action="store_true",
                   help="do not record this run in the run index ($QUANTSCOPE_RUNS_ROOT/index.sqlite3, default ~/.quantscope/runs)")


def _image_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("image folders and .zip files (ignored for array data)")
    g.add_argument("--image-layout", choices=["NCHW", "NHWC"], default=None, help="default: from the model input's shape")
    g.add_argument("--image-color", choices=["RGB", "BGR", "GRAY"], default=None, help="default: RGB (GRAY for 1 channel)")
    g.add_argument("--image-size", default=None, metavar="HxW", help="resize target, e.g. 224x224 (default: the model input's)")
    g.add_argument("--image-scale", type=float, default=1 / 255, help="pixel values are multiplied by this first (default 1/255)")
    g.add_argument("--image-mean", default="0", metavar="M[,M,M]", help="subtracted after scaling, per channel (default 0)")
    g.add_argument("--image-std", default="1", metavar="S[,S,S]", help="divided by after the mean, per channel (default 1)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="quantscope", description="Find and fix the layers that INT8 quantization hurts.")
    sub = parser.add_subparsers(dest="command", required=True)
    c = sub.add_parser("compare", help="quantize a model, compare FP32 vs INT8 layer by layer and rank the culprits")
    c.add_argument("model", help="the FP32 .onnx model")
    c.add_argument("--calib", required=True, help="calibration data: .npz, .npy, Polygraphy inputs .json, image folder or .zip")
    c.add_argument("--data", default=None, help="evaluation data (default: the calibration data)")
    c.add_argument("--labels", default=None, help=".npy of integer labels for the evaluation data")
    c.add_argument("--batch", type=int, default=8)
    c.add_argument("--calib-method", default="minmax", help="minmax | entropy (TensorRT's KL search over a 2048-bin |x| histogram) | percentile")
    c.add_argument("--percentile", type=float, default=99.999, help="for --calib-method percentile (default 99.999)")
    c.add_argument("--op-types", nargs="+", default=None, metavar="OP", help="op types to quantize (default: Conv ConvTranspose Gemm MatMul)")
    c.add_argument("--fallback", nargs="*", default=[], metavar="NODE", help="ONNX node names kept out of INT8")
    c.add_argument("--fallback-precision", default="fp16", choices=["fp16", "fp32"])
    c.add_argument("--range", dest="ranges", action="append", default=[], metavar="TENSOR=MIN,MAX",
                   help="custom calibration range for a tensor (repeatable)")
    c.add_argument("--screen-samples", type=int, default=32,
                   help="samples the culprit ranking's probes run on (default 32; 0 ranks by introduced noise only)")
    c.add_argument("--provider", default="auto", help="auto | cpu | cuda | tensorrt (default auto)")
    c.add_argument("--out", required=True, help="run folder to write")
    c.add_argument("--max-model-mb", type=float, default=2048, help="refuse larger models (default 2048)")
    c.add_argument("--sweep", default=None, metavar="DIR",
                   help="start from the best configuration a `quantscope sweep` found for this model (its calibration, "
                        "op types and precision replace those flags)")
    c.add_argument("--precision", default="int8", choices=["int8", "fp8"], help="INT8, or FP8 E4M3 Q/DQ (default int8)")
    c.add_argument("--quiet", action="store_true", help="no progress bars")
    _image_args(c)
    _ray_arg(c)
    _index_arg(c)
    r = sub.add_parser("rebuild", help="re-emit a run's INT8 model (no recalibration) and re-compare; a flag left out keeps "
                                       "the run's current value")
    r.add_argument("run_dir")
    r.add_argument("--fallback", nargs="*", default=None, metavar="NODE",
                   help="the new fallback set (`--fallback` alone clears it; default: keep the run's)")
    r.add_argument("--fallback-precision", default=None, choices=["fp16", "fp32"], help="default: keep the run's")
    r.add_argument("--range", dest="ranges", action="append", default=None, metavar="TENSOR=MIN,MAX",
                   help="custom calibration ranges, replacing the run's (repeatable; default: keep the run's)")
    r.add_argument("--clear-ranges", action="store_true", help="drop the run's custom ranges")
    r.add_argument("--provider", default=None, help="default: the backend the run resolved to")
    r.add_argument("--quiet", action="store_true")
    _index_arg(r)
    se = sub.add_parser("sensitivity", help="isolated per-node sensitivity (two views) -> DIR/sensitivity.csv")
    se.add_argument("run_dir")
    se.add_argument("--samples", type=int, default=64, help="probe on N cached samples spread over the data (default 64; 0 = all)")
    se.add_argument("--units", default="node", help="node | residual | activation")
    se.add_argument("--provider", default=None)
    se.add_argument("--quiet", action="store_true")
    _ray_arg(se)
    af = sub.add_parser("autofallback", help="find a small fallback set meeting a target, rebuild with it -> DIR/autofallback.json")
    af.add_argument("run_dir")
    af.add_argument("--target", required=True, help="cosine=X | snr_db=Y | top1_agreement=Z | accuracy_drop=D | text_agreement=T")
    af.add_argument("--max-nodes", type=int, default=None)
    af.add_argument("--strategy", default="both", help="greedy | bisect | both")
    af.add_argument("--units", default="node", help="node | residual | activation")
    af.add_argument("--samples", type=int, default=64, help="probe on N cached samples spread over the data (default 64; 0 = all)")
    af.add_argument("--provider", default=None)
    af.add_argument("--quiet", action="store_true")
    _ray_arg(af)
    _index_arg(af)
    sw = sub.add_parser("sweep", help="compare many quantization configurations of one or more models -> DIR/sweep.csv")
    sw.add_argument("models", nargs="+", help="FP32 .onnx models")
    sw.add_argument("--calib", required=True, help="calibration data (as for compare)")
    sw.add_argument("--data", default=None, help="evaluation data (default: the calibration data)")
    sw.add_argument("--labels", default=None)
    sw.add_argument("--methods", nargs="+", default=["minmax", "entropy", "percentile"], help="calibration methods")
    sw.add_argument("--percentiles", nargs="+", type=float, default=[99.999], help="for the percentile method")
    sw.add_argument("--op-types-sets", nargs="+", default=None, metavar="OP,OP",
                    help="op types to quantize, one comma-separated set per configuration (default: Conv,ConvTranspose,Gemm,MatMul)")
    sw.add_argument("--precisions", nargs="+", default=["int8"], choices=["int8", "fp8"])
    sw.add_argument("--batch", type=int, default=8)
    sw.add_argument("--provider", default="auto")
    sw.add_argument("--screen-samples", type=int, default=8, help="samples of each configuration's culprit screen (0: none)")
    sw.add_argument("--latency-runs", type=int, default=10, help="timed runs per configuration (0: no latency)")
    sw.add_argument("--select", default="snr_db", choices=["snr_db", "cosine", "top1_agreement", "accuracy", "text_agreement"],
                    help="the metric that marks each model's best configuration")
    sw.add_argument("--out", required=True)
    sw.add_argument("--quiet", action="store_true")
    _image_args(sw)
    _ray_arg(sw)
    lb = sub.add_parser("bench", help="latency of FP32, FP16, full INT8 and the run's current build -> DIR/latency.json")
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
    if t.top1_agreement is not None:
        acc = "" if t.candidate_accuracy is None else f"  accuracy {t.reference_accuracy:.4f} -> {t.candidate_accuracy:.4f}"
        print(f"top-1 agreement {t.top1_agreement:.4f}{acc}", file=out)
    if t.text_agreement is not None:
        print(f"text read the same as FP32 (greedy CTC decoding of {t.output}): {t.text_agreement:.4f} of {t.samples} samples", file=out)
    print(s.headline, file=out)
    if s.culprits:
        measured = s.ranking.method == "measured harm"
        how = (f"ordered by the {s.ranking.view} view; {s.ranking.plan or f'on {s.ranking.samples} samples'}" if measured
               else "introduced noise, dB")
        print(f"culprit ranking ({s.ranking.method}; {how}):", file=out)
        for c in s.culprits[:5]:
            gain = "no change (exact either way)" if math.isnan(c.gain_db) else f"{c.gain_db:+.2f} dB"  # inf - inf read '+nan dB'
            detail = (f"final outputs {_fmt(c.alone_snr_db)} dB with only it in INT8, {gain} with only it in fallback"
                      + (f" (on {c.samples} samples)" if c.samples else "") if measured and c.alone_snr_db == c.alone_snr_db
                      else f"a rough place from {c.samples} samples, whose figures were off by up to "
                           f"{s.ranking.first_stage_error_db:.1f} dB (not given)" if measured
                      else f"introduced {_fmt(c.introduced_db)} dB")
            print(f"  {c.rank:>3}. {c.node} ({c.op_type}): {detail}", file=out)
        if len(s.culprits) > 5:
            print(f"  ... {len(s.culprits) - 5} more in summary.json", file=out)
    for a in s.amplifiers[:3]:
        print(f"note: {a.sentence}; ticking it changes nothing.", file=out)
    for w in s.warnings:
        print(f"warning: {w}", file=out)
    if reused := int(s.timings.get("tensors_reused", 0)):  # a rebuild: rows it computes as the last build did
        print(f"{reused} of {len(result.layers)} tensors are computed as in the last build: their rows were read back, "
              "not measured again", file=out)
    print(f"results in {result.run_dir}", file=out)


def _open_index(args, settings):
    """The run index, or None with --no-index; an index that cannot be opened warns but never stops a run."""
    if getattr(args, "no_index", False):
        return None
    from engine.run_index import RunIndex

    try:
        return RunIndex(settings.runs_root)
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


def _print_runs(args, settings) -> None:
    import json

    from engine.run_index import RunIndex

    records = RunIndex(settings.runs_root).runs(args.workspace)
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


def _images(args):
    from engine.data.images import ImagePreprocess
    from engine.errors import ConfigError

    def numbers(text: str, what: str) -> tuple[float, ...]:
        try:
            return tuple(float(v) for v in text.split(","))
        except ValueError:
            raise ConfigError(f"--image-{what} '{text}' is not comma-separated numbers, e.g. 0.485,0.456,0.406.", option="images") from None

    height = width = None
    if args.image_size:
        h, sep, w = args.image_size.lower().partition("x")
        if not (sep and h.isdigit() and w.isdigit() and int(h) > 0 and int(w) > 0):
            raise ConfigError(f"--image-size '{args.image_size}' is not HEIGHTxWIDTH, e.g. 224x224.", option="images")
        height, width = int(h), int(w)
    return ImagePreprocess(height=height, width=width, layout=args.image_layout, color=args.image_color, scale=args.image_scale,
                           mean=numbers(args.image_mean, "mean"), std=numbers(args.image_std, "std"))


def _from_sweep(folder: str, model: str, config):
    """The compare's quantization from the best configuration a sweep found for `model` (its fallback, ranges and
    fallback precision stay those of the command line)."""
    from dataclasses import replace

    from engine.errors import ConfigError
    from engine.sweep import load_sweep

    best = load_sweep(folder).best(model)
    if best is None:
        raise ConfigError(f"The sweep in {folder} has no configuration of {model}; sweep this model first, or leave out --sweep.",
                          option="sweep")
    q = best.config.quant()
    return replace(config, calibration=q.calibration, op_types=q.op_types, percentile=q.percentile, precision=q.precision)


def _sweep(args, settings, progress, executor) -> int:
    from engine.sweep import sweep

    op_sets = [tuple(s.split(",")) for s in args.op_types_sets] if args.op_types_sets else None
    kw = {"op_type_sets": op_sets} if op_sets else {}
    res = sweep(args.models, args.calib, out_dir=args.out, data=args.data, labels=args.labels, methods=args.methods,
                percentiles=args.percentiles, precisions=args.precisions, batch_size=args.batch, provider=args.provider,
                images=_images(args), screen_samples=args.screen_samples, latency_runs=args.latency_runs, select=args.select,
                progress=progress, executor=executor, settings=settings, **kw)
    texts = any(r.text_agreement is not None for r in res.rows)  # a CTC recogniser: its text, not a top-1 class
    print(f"{'model':28} {'configuration':52} {'SNR dB':>8} {'text' if texts else 'top-1':>6} {'culprit':28} {'ms':>8}")
    for r in res.rows:
        if r.note:
            print(f"{r.model[:28]:28} {r.config.label[:52]:52} {r.note}")
            continue
        task = r.text_agreement if texts else r.top1_agreement
        top1 = "-" if task is None else f"{task:.3f}"
        ms = "-" if r.latency_ms is None else f"{r.latency_ms:.2f}"
        print(f"{r.model[:28]:28} {r.config.label[:52]:52} {_fmt(r.snr_db):>8} {top1:>6} {str(r.culprit)[:28]:28} {ms:>8}"
              f"{'  <- best' if r.best else ''}")
    timed = sorted({(r.model, r.latency_batch) for r in res.rows if r.latency_batch})
    if timed:  # a batch lowered to the memory setting is not the --batch asked for
        print("ms: median latency of a batch of " + ", ".join(f"{n} ({m})" if len(timed) > 1 else str(n) for m, n in timed)
              + " sample(s)")
    print(f"wrote {args.out}/sweep.csv and sweep.json ({res.executor}); `quantscope compare MODEL --sweep {args.out} ...` "
          "starts from the best configuration")
    return 0


def _run(args, settings, progress) -> int:
    from engine.scale import open_executor

    executor = open_executor(getattr(args, "ray", None))
    try:
        return _dispatch(args, settings, progress, executor)
    finally:
        executor.close()


def _dispatch(args, settings, progress, executor) -> int:
    if args.command == "doctor":
        from engine.doctor import doctor_lines

        print("\n".join(doctor_lines()))
        return 0
    if args.command == "runs":
        _print_runs(args, settings)
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
    if args.command == "sweep":
        return _sweep(args, settings, progress, executor)
    if args.command == "sensitivity":
        from engine.diagnose import sensitivity

        frame = sensitivity(args.run_dir, provider=args.provider, samples=args.samples or None, units=args.units, progress=progress,
                            pools=executor.probe_pool)
        top = frame.iloc[0]
        print(f"{len(frame)} units probed on {frame.attrs['samples']} samples; most harmful alone: {top['node']} "
              f"(final outputs {top['only_this_quantized_outputs_snr_db']:.2f} dB when only it is INT8); "
              f"wrote {args.run_dir}/sensitivity.csv")
        return 0
    if args.command == "autofallback":
        from engine.fallback import autofallback
        from engine.pipeline import rebuild

        index = _open_index(args, settings)

        def tracked_rebuild(run_dir, **kw):
            return _tracked(index, "autofallback", _model_of(run_dir), run_dir, lambda: rebuild(run_dir, settings=settings, **kw))

        res = autofallback(args.run_dir, args.target, max_nodes=args.max_nodes, strategy=args.strategy, units=args.units,
                           samples=args.samples or None, provider=args.provider, progress=progress, rebuild_fn=tracked_rebuild,
                           pools=executor.probe_pool)
        print(res.message)
        for name, r in res.strategies.items():
            print(f"  {name}: {len(r.fallback)} node(s) after pruning ({len(r.before_pruning)} before), {r.probes} probes")
        print(f"wrote {args.run_dir}/autofallback.json and " + (f"rebuilt {args.run_dir}/candidate.onnx" if res.fallback or res.met
                                                                 else "left the build as it was (no set to apply)"))
        return 0 if res.met else 1
    from engine.quantize.config import CalibrationMethod, FallbackPrecision, Precision, QuantConfig, RangeOverride

    if args.command == "compare":
        from pathlib import Path

        from engine.pipeline import compare
        from engine.quantize.config import TRT_INT8_OP_TYPES

        config = QuantConfig(
            calibration=CalibrationMethod.parse(args.calib_method),
            op_types=tuple(args.op_types or TRT_INT8_OP_TYPES),
            fallback=frozenset(args.fallback), fallback_precision=FallbackPrecision.parse(args.fallback_precision),
            ranges=tuple(RangeOverride.parse(r) for r in args.ranges), percentile=args.percentile,
            precision=Precision.parse(args.precision),
        )
        if args.sweep:
            config = _from_sweep(args.sweep, Path(args.model).name, config)
        images = _images(args)
        result = _tracked(_open_index(args, settings), "compare", Path(args.model).name, args.out, lambda: compare(
            args.model, args.calib, out_dir=args.out, data=args.data, labels=args.labels, config=config,
            batch_size=args.batch, provider=args.provider, images=images, progress=progress, screen_samples=args.screen_samples,
            max_model_bytes=int(args.max_model_mb * 1024**2), settings=settings, pools=executor.probe_pool))
    else:
        from engine.pipeline import rebuild

        ranges = () if args.clear_ranges else (None if args.ranges is None else tuple(RangeOverride.parse(r) for r in args.ranges))
        result = _tracked(_open_index(args, settings), "rebuild", _model_of(args.run_dir), args.run_dir, lambda: rebuild(
            args.run_dir, fallback=args.fallback, ranges=ranges, fallback_precision=args.fallback_precision,
            provider=args.provider, progress=progress, settings=settings))
    _report(result)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    progress = (lambda ev: None) if getattr(args, "quiet", False) else StderrProgress()
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")  # once, here, for the process
    try:
        from engine.settings import Settings

        return _run(args, Settings.from_env(), progress)
    except QuantScopeError as err:
        flag = FLAGS.get(err.option or "")
        print(f"error: {flag + ': ' if flag else ''}{err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("error: interrupted; earlier results in the run folder are untouched.", file=sys.stderr)
        return 130
    except Exception as err:  # noqa: BLE001 - the last line of defence: one sentence, never a traceback
        print(f"error: {unexpected_error_sentence(err)}", file=sys.stderr)
        return 3


if __name__ == "__main__":
    sys.exit(main())
