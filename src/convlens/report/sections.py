"""The sections of the report: a small registry, in page order.

Each :class:`Section` says whether it has something to show for a report
(``available``) and lays it out (``build``) from :mod:`convlens.views`; a section whose
data is absent is left out. A later feature plugs in with one :func:`register` call (or
one entry of :data:`convlens.views.RESULT_FILES` for a result file written beside the run).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from convlens.report.html import Block, Figure, PngFigure, Table, Text

if TYPE_CHECKING:
    from convlens.models.handle import ModelHandle
    from convlens.views import ChosenInput


@dataclass
class ReportContext:
    """What the sections read: the model, an optional second model, the data and the inputs shown."""

    handle: ModelHandle
    inputs: Sequence[ChosenInput]
    compare: ModelHandle | None = None
    data_dir: str | os.PathLike[str] | None = None
    methods: Sequence[str] = ()
    cache: dict[str, object] = field(default_factory=dict)

    @property
    def run_dir(self) -> Path | None:
        return self.handle.path


@dataclass(frozen=True)
class Section:
    key: str
    title: str
    build: Callable[[ReportContext], list[Block]]
    available: Callable[[ReportContext], bool] = lambda ctx: True


#: The registered sections, in page order.
SECTIONS: list[Section] = []


def register(section: Section, *, before: str | None = None) -> Section:
    """Add ``section`` (at the end, or before the section keyed ``before``)."""
    if any(s.key == section.key for s in SECTIONS):
        raise ValueError(f"a report section {section.key!r} is already registered")
    keys = [s.key for s in SECTIONS]
    SECTIONS.insert(keys.index(before) if before in keys else len(SECTIONS), section)
    return section


# --- the sections ---------------------------------------------------------------------------------


def _model_card(ctx: ReportContext) -> list[Block]:
    from convlens import views

    card = views.model_card(ctx.handle)
    c, h, w = card.input_shape
    words = [f"{card.name}: reads {c}×{h}×{w} inputs and scores {len(card.classes)} classes "
             f"({', '.join(card.classes[:10])}{', ...' if len(card.classes) > 10 else ''})."]
    if card.total_params is not None:
        words.append(f"{card.total_params:,} parameters" + (f", {card.total_macs:,} multiply-accumulates per input."
                                                            if card.total_macs else "."))
    if card.test_accuracy is not None:
        words.append(f"Test accuracy {card.test_accuracy:.2%}.")
    blocks: list[Block] = [
        Text([" ".join(words), "rf: receptive field (input pixels one unit sees); jump: input pixels between "
              "neighbouring units; start: centre of unit (0, 0)'s field, in input pixels."]),
        Table("Layers, in the order the forward pass finished them", card.columns, card.rows),
    ]
    if card.architecture:
        blocks.append(Table("Architecture (the run's model configuration)", ("field", "value"),
                            list(card.architecture.items())))
    if card.training:
        blocks.append(Table("Training configuration", ("setting", "value"), list(card.training.items())))
    if card.curves is not None:
        blocks.append(Figure(card.curves, "the training curve"))
    return blocks


def _convolution(ctx: ReportContext) -> list[Block]:
    from convlens import views

    step = views.conv_step(ctx.handle, ctx.inputs[0])
    e = step.trace
    i, j = e.position
    kh, kw = e.kernel.shape[1:]
    return [
        Text([f"The first convolution of the model, {step.layer}, worked out for one output value: filter "
              f"{step.channel} at output position ({i}, {j}) (its strongest response on {ctx.inputs[0].label}). "
              f"The {kh}×{kw} window of the input (normalised as in training) is multiplied element by element "
              f"with the filter; the {e.products.size} products sum to {float(e.products.sum()):.6g}, and with "
              f"the bias {e.bias:.6g} that is {float(e.total):.6g}: the value the layer computes there "
              f"({float(e.value):.6g})."]),
        Figure(step.figure, f"how {step.layer}[{step.channel}] at ({i}, {j}) is made"),
        Table(f"The {e.products.size} products of filter {step.channel}", ("tap (row, col)", "input", "weight",
              "product"), [(f"({t['tap'][0]}, {t['tap'][1]})" + ("" if t["channel"] == 0 else f" ch {t['channel']}"),
                           f"{t['value']:.4f}", f"{t['weight']:.4f}", f"{t['product']:.4f}") for t in e.terms()]),
    ]


def _convs(ctx: ReportContext) -> list[str]:
    from torch import nn

    return [n for n, m in ctx.handle.model.named_modules() if isinstance(m, nn.Conv2d)]


def _filters(ctx: ReportContext) -> list[Block]:
    from convlens import views

    blocks: list[Block] = [Figure(views.filters(ctx.handle, layer, max_filters=64), f"the filters of {layer}")
                           for layer in _convs(ctx)[:3]]
    if ctx.handle.run is not None and ctx.handle.run.snapshots():
        blocks.append(Figure(views.evolution(ctx.handle.run), "how the first layer's filters evolved in training"))
    return blocks


def _maps(ctx: ReportContext) -> list[Block]:
    from convlens import views

    blocks: list[Block] = []
    for chosen in ctx.inputs[:1]:
        for layer in _convs(ctx)[:3]:
            blocks.append(Figure(views.maps(ctx.handle, chosen, layer, stage="relu"),
                                 f"feature maps of {layer} for {chosen.label}"))
    return blocks


def _cams(ctx: ReportContext) -> list[Block]:
    from convlens import views

    blocks: list[Block] = []
    rows = []
    for chosen in ctx.inputs:
        for method in ctx.methods:
            fig = views.cam_view(ctx.handle, chosen, method=method)
            s = views.cam_scores(ctx.handle, chosen, method=method)
            rows.append((f"{fig.title or method}, {chosen.label}", f"{s['deletion_auc']:.3f}",
                         f"{s['insertion_auc']:.3f}", f"{s['average_drop']:.1f}", f"{s['increase_in_confidence']:.1f}"))
            blocks.append(Figure(fig, f"{method} on {chosen.label}", dpi=80))
    table = Table("Faithfulness of each heatmap on its own input (deletion AUC: lower is better; insertion AUC: "
                  "higher is better; Average Drop %: lower is better; Increase in Confidence %: higher is better)",
                  ("heatmap", "deletion AUC", "insertion AUC", "Avg Drop %", "Inc Conf %"), rows)
    return [Text(["Which pixels drive the prediction, by each method, with how faithful each heatmap is: the "
                  "model's probability for its class as the most relevant pixels are deleted (set to black) or "
                  "inserted into a blurred copy, 16 steps."]), table, *blocks]


def _comparison(ctx: ReportContext) -> list[Block]:
    from convlens import views

    assert ctx.compare is not None  # for mypy: available() checked it
    view = views.compare_models(ctx.handle, ctx.compare, probe=False, data_dir=ctx.data_dir, gallery=4)
    d = view.disagreement
    text = Text([f"Model A is {ctx.handle.name} ({ctx.handle.path}); model B is {ctx.compare.name} "
                 f"({ctx.compare.path}). On the {view.split} split, A is right on {d.accuracy_a:.2%} and B on "
                 f"{d.accuracy_b:.2%} of {d.n:,} images."])
    return [text, *(Figure(fig, stem.replace("-", " ")) for stem, fig in view.figures.items())]


def _saved(key: str) -> Callable[[ReportContext], list[Block]]:
    def build(ctx: ReportContext) -> list[Block]:
        from convlens import views

        assert ctx.run_dir is not None  # for mypy: available() checked it
        blocks: list[Block] = []
        for result in views.saved_results(ctx.run_dir, [f"{key}.json"]):
            if result.numbers:
                blocks.append(Table(f"{result.title}: the numbers in {result.path.name}", ("quantity", "value"),
                                    list(result.numbers)))
            blocks += [PngFigure(f.png.read_bytes(), f.caption, f.alt, f.stem) for f in result.figures]
        return blocks

    return build


def _has_saved(key: str) -> Callable[[ReportContext], bool]:
    def available(ctx: ReportContext) -> bool:
        from convlens import views

        return ctx.run_dir is not None and bool(views.saved_results(ctx.run_dir, [f"{key}.json"]))

    return available


register(Section("model", "Model card", _model_card))
register(Section("convolution", "The convolution, worked out", _convolution,
                 lambda ctx: bool(ctx.inputs) and bool(_convs(ctx))))
register(Section("filters", "Filters", _filters, lambda ctx: bool(_convs(ctx))))
register(Section("maps", "Feature maps", _maps, lambda ctx: bool(ctx.inputs) and bool(_convs(ctx))))
register(Section("cams", "Class activation maps and their faithfulness", _cams,
                 lambda ctx: bool(ctx.inputs) and bool(ctx.methods)))
register(Section("comparison", "Comparison with another model", _comparison, lambda ctx: ctx.compare is not None))
register(Section("saved-comparison", "Comparison (computed earlier)", _saved("compare"),
                 lambda ctx: ctx.compare is None and _has_saved("compare")(ctx)))
register(Section("diagnosis", "Diagnosis", _saved("diagnosis"), _has_saved("diagnosis")))
register(Section("audit", "Background and spurious-cue audit", _saved("audit"), _has_saved("audit")))
register(Section("featvis", "Feature visualisation", _saved("featvis-*-scores"), _has_saved("featvis-*-scores")))
