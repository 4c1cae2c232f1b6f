"""Pieces several pages show: the inputs a job would run on (Compare, Sweep), and for a result the equivalent CLI
command (Compare, Rebuild)."""

from __future__ import annotations

import dataclasses
import math

import streamlit as st

import engine
from app import state
from app.cached import data_digest, model_facts, model_fixed_batch
from app.command import cli_command
from app.inputs import Inputs
from app.layer_table import origins
from app.report import EXECUTION_NOTE, execution_note
from app.samples import default_name, sample_inputs

__all__ = ["batch_size_input", "delta_color", "change_text", "output_tiles", "every_output", "EXECUTION_NOTE", "execution_note", "inputs_in_use", "run_config", "run_inputs", "command_for", "command_expander", "amplifier_notes",
           "not_of_inputs_in_use"]


def inputs_in_use() -> tuple[Inputs | None, str | None]:
    """The inputs a job of this page runs on (the bundled sample unless the Load page is set to Upload), shown in a
    caption, and why it cannot run on them now (None if it can), shown as a warning with a link to Load."""
    ss = st.session_state
    inputs: Inputs | None = ss.get(state.INPUTS)
    upload_mode = ss.get(state.LOAD_SOURCE) == "Upload"
    if inputs is None and not upload_mode:
        inputs = ss[state.INPUTS] = sample_inputs(default_name())
    blocked = None
    if ss.get(state.PENDING_UPLOAD):
        blocked = (f"You chose {', '.join(ss[state.PENDING_UPLOAD].values())} on the Load page but did not click Use these "
                   "files, so they are not checked or used yet. Apply them on the Load page (or remove them there) first.")
    elif upload_mode and (inputs is None or inputs.sample):
        blocked = ("The Load page is set to Upload but no files have been applied, so there is nothing of yours to compare; "
                   "apply files there, or switch Source to Bundled sample.")
    if inputs is not None:
        st.caption(f"Model: **{inputs.name}** ({'bundled sample' if inputs.sample else 'uploaded'})")
        if ss.get(state.LOAD_FAILED) and not blocked:
            st.warning(f"The last files you tried on the Load page were refused, so this still runs on {inputs.name}.")
    if blocked:
        st.warning(blocked)
        st.page_link("views/load.py", label="Go to Load", icon=":material/upload_file:")
    return inputs, blocked


def not_of_inputs_in_use(result: engine.ComparisonResult, *, buttons: tuple[str, ...] = (), on_compare: bool = False) -> None:
    """A warning where the result shown is not of the files in use: after other files were applied on the Load page (or
    a run of another model opened from History), the last result stays, but under the new model's name it read as the
    new model's (found trying the app on PP-OCRv4's recogniser). Model and samples are matched by the content digests
    the run recorded, so the same files applied again are the same; a run from before digests goes by the model's name.
    buttons: the page's actions, which work on this result's run, so the warning says so (Sensitivity and Latency ran
    on the old model without a word)."""
    inputs: Inputs | None = st.session_state.get(state.INPUTS)
    if inputs is None:
        return
    s = result.summary
    try:
        model = model_facts(inputs.model).digest
    except (engine.QuantScopeError, OSError):
        return  # the Load page says what is wrong with these files
    job = st.session_state.get(state.JOB)
    running = job is not None and job.active and job.kind == "compare"  # 'press Run comparison' while it ran read as stuck
    see = "press **Run comparison**" if on_compare else "run a comparison on the Compare page"
    named = " and ".join(f"**{b}**" for b in buttons)
    acts = f" {named} here work{'s' if len(buttons) == 1 else ''} on this result's run, not on the files in use." if buttons else ""
    if not (s.model_sha256 == model if s.model_sha256 else s.model == inputs.name):
        then = "the comparison running now shows that one when it finishes" if running else f"{see} to see that one"
        st.warning(f"This result is of **{s.model}**, not of the model in use now (**{inputs.name}**): {then}.{acts}")
    elif _other_samples(result, data_digest(inputs.model, inputs.data or inputs.calib, inputs.images), inputs.images):
        then = "the comparison running now compares these when it finishes" if running else f"{see} to see it on these"
        st.warning(f"This result compared {s.model} on other samples than the files in use now: {then}.{acts}")


def _other_samples(result: engine.ComparisonResult, digest: str, images: engine.ImagePreprocess | None) -> bool:
    """Whether the result's samples differ from those in use (digest: theirs, "" where not known cheaply: images). A
    run on images has no digest either: it differs from arrays in use, and from images prepared another way (a trial
    applied an .npz after comparing a zip of photos, and the 9-sample result stayed without a word)."""
    if result.summary.data_sha256 and digest:
        return digest != result.summary.data_sha256
    try:
        ran_on = engine.RunFolder(result.run_dir).read_config().images
    except (engine.QuantScopeError, OSError, ValueError, KeyError):
        return False  # an old run without its settings: nothing to tell by
    if ran_on is None:
        return False  # arrays without a digest (a run from before digests): nothing to tell by
    return images is None or images != ran_on


def amplifier_notes(result: engine.ComparisonResult, limit: int = 3) -> list[str]:
    """The engine's amplifier sentences, each with where its node came from in the user's file."""
    layers = result.layers
    origin = origins(layers)
    notes = []
    for a in result.summary.amplifiers[:limit]:
        mine = origin.get(a.node, "")
        notes.append(a.sentence + (f" ({a.node} is part of {mine} in your file)" if mine and mine != a.node else ""))
    return notes


def run_config(result: engine.ComparisonResult) -> engine.RunConfig:
    """The run's settings as of this result (an earlier build of the folder keeps its own quantization settings)."""
    cfg = engine.RunFolder(result.run_dir).read_config()
    return dataclasses.replace(cfg, quant=result.summary.config, batch_size=result.summary.batch_size)


def run_inputs(result: engine.ComparisonResult) -> Inputs | None:
    """The files this result's run compared, if this session knows them."""
    known = st.session_state.get(state.RUN_INPUTS, {}).get(str(result.run_dir))
    if known is not None:
        return known
    current: Inputs | None = st.session_state.get(state.INPUTS)
    return current if current is not None and current.name == result.summary.model else None


def command_for(result: engine.ComparisonResult) -> str:
    try:
        return cli_command(run_config(result), run_inputs(result))
    except engine.QuantScopeError:
        return cli_command(engine.RunConfig(model=result.summary.model, batch_size=result.summary.batch_size,
                                            requested_provider="auto", provider="cpu", backend=result.summary.backend,
                                            quant=result.summary.config, samples=result.summary.samples, calibration_samples=0,
                                            has_labels=False, cache_bytes=0, memory_bytes=0), None)


def command_expander(result: engine.ComparisonResult, expanded: bool = False) -> str:
    command = command_for(result)
    inputs = run_inputs(result)
    with st.expander("The same run from the command line", expanded=expanded):
        st.code(command, language="bash")
        if inputs is None:
            st.caption("This session does not know which files this run compared: put your model and data where the "
                       "placeholders are.")
        elif inputs.sample:
            st.caption("Run it from the QuantScope checkout: the paths are the bundled sample's.")
        else:
            st.caption("The paths are the names of the files you uploaded (the server keeps its own copies under its runs "
                       "folder): run it in the folder that holds them.")
    return command


def batch_size_input(column, inputs: Inputs | None, key: str) -> int:
    """The batch size control of Compare and Sweep: fixed and disabled where the model fixes its batch dimension (the
    captcha recogniser's 25 became 1 only after the run, and a sweep recorded 25 for a batch of 1)."""
    fixed = model_fixed_batch(inputs.model if inputs is not None else None)
    if fixed is not None:
        return int(column.number_input("Batch size", min_value=fixed, max_value=fixed, value=fixed, key=f"{key}_fixed_{fixed}",
                                       disabled=True, help=f"The model fixes its batch dimension at {fixed}, so batches are {fixed}."))
    # not value=25: a configuration opened from the Sweep page sets the key; a sweep starts from the Compare page's choice
    st.session_state.setdefault(key, st.session_state.get("cmp_batch", 25))
    return int(column.number_input("Batch size", min_value=1, max_value=512, key=key))


def delta_color(delta: str | None) -> str:
    """A metric's delta colour: grey where it shows no change ('+0.00%' drew a green arrow up, read as a gain in the
    captcha re-trial), else Streamlit's usual green up and red down."""
    return "off" if delta is not None and not any(ch in "123456789" for ch in delta) else "normal"


def change_text(after: float, before: float, unit: str, digits: int) -> str | None:
    """'+1.23 dB'; None where either side is not a finite number (an exact output's SNR is infinite)."""
    if not (math.isfinite(after) and math.isfinite(before)):
        return None
    return f"{after - before:+.{digits}f}{unit}"


def output_tiles(s: engine.Summary, before: engine.Summary | None = None) -> list[tuple[str, str, str | None, str | None]]:
    """(label, value, change against `before`, help) for the final outputs. A model with several outputs gets first the
    figure its headline and ranking use (every output together, each against its own signal), then its first output's:
    the layout detector's tile showed only its first output's 1.47 dB beside a headline's 2.4 dB and a report's 6.5 dB."""
    out = next(iter(s.outputs.values()))
    b_out = next(iter(before.outputs.values())) if before is not None else None
    n = len(s.outputs)
    name = next(iter(s.outputs))
    tiles = []
    if n > 1:
        together = s.outputs_together_snr_db()
        counted = len(s.float_outputs) if s.float_outputs else n
        tiles.append((f"SNR, all {n} outputs" if counted == n else f"SNR, {counted} float output{'s' if counted != 1 else ''} of {n}",
                      f"{engine.format_metric('snr_db', together)} dB",
                      change_text(together, before.outputs_together_snr_db(), " dB", 2) if before is not None else None,
                      "Every output against its own signal (the mean of their noise-to-signal power ratios): the figure the "
                      "headline and the ranking use. Each output's own figure is listed under the tiles."))
    first = f", output 1 of {n}" if n > 1 else ""
    tiles.append((f"Final-output SNR{first}", f"{engine.format_metric('snr_db', out.snr_db)} dB",
                  change_text(out.snr_db, b_out.snr_db, " dB", 2) if b_out is not None else None,
                  f"Output '{name}'." + (" After against before." if b_out is not None else "")))
    tiles.append((f"Final-output cosine{first}", engine.format_metric("cosine", out.cosine),
                  change_text(out.cosine, b_out.cosine, "", 5) if b_out is not None else None, f"Output '{name}'."))
    return tiles


def every_output(s: engine.Summary, before: engine.Summary | None = None) -> str:
    """One line with each output's SNR and cosine (and its SNR before a rebuild), for a model with several outputs."""
    parts = []
    for name, m in s.outputs.items():
        was = before.outputs.get(name) if before is not None else None
        parts.append(f"'{name}' {engine.format_metric('snr_db', m.snr_db)} dB SNR"
                     + (f" (was {engine.format_metric('snr_db', was.snr_db)})" if was is not None else "")
                     + f", cosine {engine.format_metric('cosine', m.cosine)}")
    return "Every output: " + "; ".join(parts) + ". The ranking and the headline count every float output, each against its own signal."
