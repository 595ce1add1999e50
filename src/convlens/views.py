"""Ready-made views of a run: compute with the library, then draw with :mod:`convlens.viz`.

These functions are what the command line, the report and the web app call. They
choose inputs, read the model through :mod:`convlens.inspect` and :mod:`convlens.explain`
(or the NumPy convolution of :mod:`convlens.conv`), and hand plain arrays and numbers to
:mod:`convlens.viz`, which never reads a model itself. Each figure comes back as an
:class:`~convlens.viz.Explained`.

>>> run = convlens.load_run("convlens-demo/run")                      # doctest: +SKIP
>>> fig1 = filters(run, "conv1")                                     # doctest: +SKIP
>>> fig2 = maps(run, choose_input(run, digit=7), "conv1", stage="relu")  # doctest: +SKIP
>>> convlens.viz.save(fig2, "figures", "maps-conv1")                   # doctest: +SKIP

Any ``nn.Module`` will do, trained or not:

>>> from convlens.models import build_model
>>> filters(build_model("seed-cnn"), "conv2").title
'conv2: 32 filters 5×5'

The convolution views need no model:

>>> x = conv_input(matrix="1,2,3;4,5,6;7,8,9")
>>> k = conv_kernel(x, kernel="1,0;0,-1", padding=1)
>>> float(k.trace((0, 0)).total)
-1.0
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Literal, TypedDict, cast

import numpy as np
from numpy.typing import NDArray

from convlens.errors import ConfigError, DataError, LayerError, unknown_name

if TYPE_CHECKING:  # the heavy layers are imported where they are used
    import torch
    from torch import nn

    from convlens.conv.arithmetic import IntOrPair
    from convlens.conv.explain import Trace
    from convlens.data.dataset import ImageDataset
    from convlens.explain import Target
    from convlens.explain.faithfulness import FaithfulnessReport
    from convlens.inspect.feature_maps import Stage
    from convlens.inspect.topk import TopKReport
    from convlens.models.handle import ModelHandle
    from convlens.models.run import Run
    from convlens.train.callbacks import Callback
    from convlens.train.config import TrainConfig
    from convlens.viz.figure import Explained
    from convlens.viz.palettes import PaletteName

    Source = Run | ModelHandle | nn.Module

Split = Literal["test", "train"]


# --- inputs -------------------------------------------------------------------------------------


@dataclass
class ChosenInput:
    """One input, ready for the model (``x``: normalised 1×C×H×W) and for display."""

    x: torch.Tensor
    pixels: torch.Tensor  # (C, H, W) uint8 as drawn
    label: str  # e.g. "test digit 7 (index 0)"
    index: int | None = None
    true_class: int | None = None


def _handle(source: Run | ModelHandle) -> ModelHandle:
    from convlens.models.handle import ModelHandle

    return source if isinstance(source, ModelHandle) else ModelHandle.from_run(source)


def _pick(ds: ImageDataset, digit: int | str | None, index: int | None, nth: int) -> int:
    """The index of the ``nth`` example of class ``digit``, or ``index``, in ``ds``."""
    if digit is not None:
        return ds.index_of(digit, nth)
    if index is None:
        raise ConfigError("choose an input: --digit D or --index N")
    return index


def dataset_for(source: Run | ModelHandle, split: Split = "test", *, data: ImageDataset | None = None,
                data_dir: str | os.PathLike[str] | None = None) -> ImageDataset:
    """Split ``split`` of the model's dataset (``data`` if given, else read from
    ``data_dir``), checked against what the model was trained on and ready for it.

    The data must have the dataset's name and classes; for a run, it must also match
    the fingerprints recorded at training time (image shape, mean pixel, or the very
    same pixels: :func:`convlens.data.fingerprint.check_against`); a run written before
    fingerprints were recorded is used unchecked, with one note saying so. For a
    user's model (``--model``) the images are fitted to its input shape
    (:func:`convlens.data.transforms.fit_images`) and carry its normalisation.

    Raises:
        ConfigError, DataError: the data is not the model's (the message says how to fix it).
    """
    import dataclasses

    from convlens.data import load_dataset

    handle = _handle(source)
    spec = handle.data
    if data is not None:
        if data.name != spec.name or data.split != split:
            raise ConfigError(f"the data given is {data.name} {data.split}, not {spec.name} {split}")
        ds = data
    else:
        ds = load_dataset(spec.name, split, data_dir=data_dir)
    where = f"the {ds.name} {split} split ({ds.source})"
    named = f"run {handle.path}" if handle.path is not None else handle.name
    if spec.classes and tuple(ds.classes) != tuple(spec.classes):
        raise DataError(f"{where} has classes {list(ds.classes)[:10]} but {named} was trained on "
                        f"{list(spec.classes)[:10]}; use the data it was trained on")
    if handle.run is not None:
        if spec.fingerprints:
            from convlens.data.fingerprint import check_against

            trained_on = spec.source if "://" in spec.source or not spec.source else str(Path(spec.source).parent)
            check_against(spec.fingerprints, ds, what=where, run=named, where=trained_on)
        else:
            import warnings

            from convlens.errors import ConvlensNote

            warnings.warn(ConvlensNote(
                f"{named} records no fingerprint of its training data (written by an older convlens), so the data "
                "it is used with is not checked; train it again to record one"), stacklevel=2)
        if ds.shape != handle.input_shape:
            c, h, w = handle.input_shape
            raise DataError(f"{where} holds {'×'.join(map(str, ds.shape))} images but {named} reads {c}×{h}×{w}; "
                            "use the data it was trained on")
        if spec.mean and (tuple(spec.mean), tuple(spec.std)) != (ds.mean, ds.std):  # normalised as in training
            ds = dataclasses.replace(ds, mean=tuple(spec.mean), std=tuple(spec.std))
        return ds
    from convlens.data.transforms import fit_images

    computed = None
    if not spec.mean:  # no published constants: those of the training split, as in training
        ref = ds if split == "train" else load_dataset(spec.name, "train", data_dir=data_dir, check=False)
        computed = (ref.mean, ref.std)
    norm = handle.normalisation(computed)
    assert norm is not None  # for mypy: constants given, published or computed
    mean, std = norm
    if ds.shape == handle.input_shape and (tuple(mean), tuple(std)) == (ds.mean, ds.std):
        return ds
    return dataclasses.replace(ds, images=fit_images(ds.images, handle.input_shape), mean=tuple(mean), std=tuple(std))


def choose_input(
    source: Run | ModelHandle,
    *,
    digit: int | str | None = None,
    index: int | None = None,
    image: str | os.PathLike[str] | None = None,
    nth: int = 0,
    split: Split = "test",
    data_dir: str | os.PathLike[str] | None = None,
    data: ImageDataset | None = None,
) -> ChosenInput:
    """Pick exactly one of: the ``nth`` example of class ``digit``, example ``index``
    of ``split`` of the model's dataset, or an ``image`` file (fitted to the model's
    input size and normalised like the training data).

    ``data``, if given, is that split already in memory (nothing is read from disk).
    """
    given = [k for k, v in (("digit", digit), ("index", index), ("image", image)) if v is not None]
    if len(given) != 1:
        raise ConfigError("choose exactly one input: --digit D, --index N or --image FILE")
    handle = _handle(source)
    spec = handle.data
    from convlens.data import load_dataset, load_image, normalise

    if image is not None:
        c, h, w = handle.input_shape
        pixels = load_image(image, size=(h, w), channels=c)
        norm = handle.normalisation()
        if norm is None:  # a dataset without published constants: those of its training images
            ref = load_dataset(spec.name, "train", data_dir=data_dir)
            norm = handle.normalisation((ref.mean, ref.std))
        assert norm is not None  # for mypy: computed above
        return ChosenInput(normalise(pixels, *norm), pixels[0], f"image {Path(image).name}")
    ds = dataset_for(handle, split, data=data, data_dir=data_dir)  # checked, fitted and normalised for the model
    i = _pick(ds, digit, index, nth)
    x, y = ds.item(i)  # checks the index
    return ChosenInput(x, ds.images[i], f"{split} {ds.label_kind} {ds.classes[y]} (index {i})", i, y)


def _model(source: Source) -> nn.Module:
    from torch import nn

    return source if isinstance(source, nn.Module) else source.model


def _on_model_device(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    import torch

    return x.to(next(model.parameters(), torch.empty(0)).device)


# --- Figures 1 and 2 ----------------------------------------------------------------------------


def conv_weight(model: nn.Module, layer: str) -> NDArray[np.float64]:
    """The weight (out, in/groups, kh, kw) of the conv layer ``layer`` as float64."""
    import torch
    from torch import nn

    from convlens.viz.describe import listing

    modules = dict(model.named_modules())
    convs = [n for n, m in modules.items() if isinstance(m, nn.Conv2d)]
    if layer not in modules:
        raise LayerError(unknown_name("layer", layer, convs or list(modules)))
    module = modules[layer]
    if not isinstance(module, nn.Conv2d):
        raise LayerError(
            f"layer {layer!r} is a {type(module).__name__}, not a Conv2d; conv layers are {listing(convs)}"
        )
    return module.weight.detach().to("cpu", torch.float64).numpy()


def filters(model: Source, layer: str = "conv1", *, scale: Literal["shared", "per-filter"] = "shared",
            palette: PaletteName = "default", rgb: bool | None = None, max_filters: int | None = None) -> Explained:
    """Figure 1: the filters of conv layer ``layer`` (see :func:`convlens.viz.filters.filters_figure`)."""
    from convlens.viz.filters import filters_figure

    return filters_figure(conv_weight(_model(model), layer), layer, scale=scale, palette=palette, rgb=rgb,
                          max_filters=max_filters)


def maps(model: Source, chosen: ChosenInput, layer: str = "conv1", *, stage: Stage = "conv",
         sort: bool = False, scale: Literal["shared", "per-map"] = "shared",
         palette: PaletteName = "default", channels: Sequence[int] | None = None) -> Explained:
    """Figure 2: ``chosen`` beside the feature maps of ``layer`` at ``stage`` (only the
    given ``channels``, if any; a figure draws at most
    :data:`convlens.viz.maps.MAX_MAP_TILES` maps)."""
    from convlens.inspect.feature_maps import feature_maps
    from convlens.viz.maps import maps_figure

    m = _model(model)
    fm = feature_maps(m, _on_model_device(m, chosen.x), layer, stage)
    stage_name = stage if not fm.computed else f"{stage} (computed by convlens on {layer}'s output)"
    values = fm.maps[0].cpu().numpy()
    picked: list[int] | None = None
    if channels is not None:
        picked = [int(c) for c in channels]
        bad = [c for c in picked if not 0 <= c < values.shape[0]]
        if bad or not picked:
            raise ConfigError(f"channels {bad or picked} are out of range: {layer} has channels 0..{values.shape[0] - 1}")
        values = values[picked]
    return maps_figure(chosen.pixels.numpy(), values, layer, stage=stage_name, input_label=chosen.label,
                       sort=sort, scale=scale, palette=palette, channels=picked)


def evolution(run: Run, *, filters: int = 8, palette: PaletteName = "default") -> Explained:
    """How the first layer's filters changed during training (from the run's snapshots)."""
    from convlens.viz.filters import filter_evolution_figure

    snaps = run.snapshots()
    if not snaps:
        raise ConfigError(f"run {run.path} recorded no filter snapshots; train it with snapshot_every > 0")
    if len(snaps) > 8:  # keep the figure readable: first, last and evenly spaced steps
        steps = sorted(snaps)
        keep = sorted({steps[round(i * (len(steps) - 1) / 7)] for i in range(8)})
        snaps = {s: snaps[s] for s in keep}
    return filter_evolution_figure({s: w.numpy() for s, w in snaps.items()}, run.snapshot_layer,
                                   filters=filters, palette=palette)


# --- heatmaps for one input ---------------------------------------------------------------------


def _class_label(cls: int, names: Sequence[str] | None) -> str:
    if cls < 0:
        return "the target function"
    return f"class {names[cls]}" if names is not None and cls < len(names) else f"class {cls}"


def _class_names(source: Source, class_names: Sequence[str] | None) -> Sequence[str] | None:
    """``class_names`` if given, else those of the run's or handle's dataset."""
    from torch import nn

    if class_names is not None or isinstance(source, nn.Module):
        return class_names
    return tuple(_handle(source).data.classes) or None


def cam_view(
    model: Source,
    chosen: ChosenInput,
    *,
    method: str = "gradcam",
    layer: str | Sequence[str] | None = None,
    target: Target = None,
    palette: PaletteName = "default",
    alpha: float = 0.5,
    class_names: Sequence[str] | None = None,
    batch_size: int | None = None,
    **options: object,
) -> Explained:
    """Explain one chosen input (:func:`choose_input`) with one method and draw the
    overlay. ``model`` is a run, a handle or an ``nn.Module``; ``class_names`` default to
    the run's. A ``"topK"`` target draws the comparison of the K classes instead.
    ``batch_size`` (perturbation methods) and ``options`` go to the method."""
    from convlens.explain import cam
    from convlens.viz.explain import comparison_figure, overlay_figure

    m = _model(model)
    names = _class_names(model, class_names)
    if batch_size is not None:
        options["batch_size"] = batch_size
    result = cam(m, _on_model_device(m, chosen.x), method=method, layer=layer, target=target, **options)
    pixels = chosen.pixels.numpy()
    heats = result.normalised.detach().cpu().numpy()
    probs = result.probabilities[0].detach().cpu().numpy()
    layer_name = ", ".join(result.layers) or None
    if len(result) > 1:
        panels = [(_class_label(int(c), names) + f" (p = {probs[int(c)]:.2f})", heats[i])
                  for i, c in enumerate(result.target.tolist())]
        return comparison_figure(pixels, panels, target=f"the top {len(result)} classes ({result.title})",
                                 probabilities=probs, class_names=names, layer=layer_name,
                                 input_label=chosen.label, palette=palette, alpha=alpha)
    cls = int(result.target[0])
    p = float(result.target_probability[0])
    return overlay_figure(pixels, heats[0], method=result.title, target=_class_label(cls, names),
                          probability=p, layer=layer_name, input_label=chosen.label, palette=palette, alpha=alpha)


def compare_view(
    model: Source,
    chosen: ChosenInput,
    *,
    methods: str | Sequence[str] = "all",
    layer: str | Sequence[str] | None = None,
    target: Target = None,
    palette: PaletteName = "default",
    alpha: float = 0.5,
    class_names: Sequence[str] | None = None,
    batch_size: int | None = None,
    **options: object,
) -> Explained:
    """Explain one chosen input with several methods (one shared forward pass) and draw
    them side by side with the predicted probabilities. ``batch_size`` (perturbation
    methods) and ``options`` go to the methods that take them."""
    from convlens.explain import explain
    from convlens.viz.explain import comparison_figure

    m = _model(model)
    names = _class_names(model, class_names)
    if batch_size is not None:
        options["batch_size"] = batch_size
    results = explain(m, _on_model_device(m, chosen.x), methods, layer=layer, target=target, **options)
    first = next(iter(results.values()))
    if len(first) != 1:
        raise ConfigError("a method comparison explains one target: use --target pred or a class, not topK")
    panels = [(r.title, r.normalised[0].detach().cpu().numpy()) for r in results.values()]
    cls = int(first.target[0])
    layers = sorted({name for r in results.values() for name in r.layers})
    return comparison_figure(
        chosen.pixels.numpy(), panels, target=_class_label(cls, names),
        probabilities=first.probabilities[0].detach().cpu().numpy(), class_names=names,
        layer=", ".join(layers) or None, input_label=chosen.label, palette=palette, alpha=alpha,
    )


@dataclass
class FaithfulnessView:
    """A :class:`~convlens.explain.FaithfulnessReport`, its split, and its curves drawn."""

    report: FaithfulnessReport
    split: str
    dataset: str
    figure: Explained


def faithfulness(
    source: Run | ModelHandle,
    methods: str | Sequence[str] = ("gradcam",),
    *,
    n: int = 500,
    layer: str | Sequence[str] | None = None,
    target: Target = None,
    steps: int = 32,
    sanity_images: int = 32,
    split: Split = "test",
    seed: int = 0,
    batch_size: int = 64,
    data_dir: str | os.PathLike[str] | None = None,
    data: ImageDataset | None = None,
    palette: PaletteName = "default",
) -> FaithfulnessView:
    """Score ``methods`` on ``n`` images of ``split`` of the model's dataset
    (:func:`convlens.explain.faithfulness`) and draw the mean deletion and insertion curves."""
    from convlens.explain import faithfulness as score
    from convlens.viz.explain import faithfulness_figure

    handle = _handle(source)
    ds = dataset_for(handle, split, data=data, data_dir=data_dir)
    names: str | list[str] = methods if isinstance(methods, str) else list(methods)
    report = score(handle.model, ds, names, n=n, layer=layer, target=target, steps=steps,
                   sanity_images=sanity_images, seed=seed, batch_size=batch_size, progress=None)
    fig = faithfulness_figure(report.curves(), n_images=report.n_images, palette=palette)
    return FaithfulnessView(report, split, handle.data.name, fig)


@dataclass
class TopKView:
    """A :class:`~convlens.inspect.TopKReport`, the data it ran on, and a gallery per layer key."""

    report: TopKReport
    data: ImageDataset
    figures: dict[str, Explained]


def topk(
    source: Run | ModelHandle,
    layer: str = "conv2",
    *,
    k: int = 9,
    channels: Sequence[int] | None = None,
    split: Split = "test",
    shown: int = 16,
    batch_size: int = 256,
    data: ImageDataset | None = None,
    data_dir: str | os.PathLike[str] | None = None,
    palette: PaletteName = "default",
    progress: bool | None = None,
) -> TopKView:
    """The ``k`` inputs of ``split`` that excite each channel of ``layer`` most
    (:func:`convlens.inspect.topk_examples`), and a gallery of the first ``shown`` of
    ``channels`` (default: of all channels) per layer key.

    The budget is checked before any data is read: ``k`` is at most
    :data:`convlens.inspect.topk.MAX_K` and a gallery draws at most
    :data:`convlens.viz.inspect.MAX_GALLERY_TILES` tiles (``shown`` rows × ``k + 1``).
    The data pass and the drawing each report through the progress bar (``progress``:
    None shows it on a terminal only).
    """
    from convlens._progress import progress_bar
    from convlens.inspect.topk import check_k, topk_examples
    from convlens.viz.inspect import check_gallery, topk_gallery

    k = check_k(k)
    show = list(channels)[:shown] if channels else None
    check_gallery(len(show) if show else shown, k)
    handle = _handle(source)
    ds = dataset_for(handle, split, data=data, data_dir=data_dir)
    report = topk_examples(handle.model, ds, layer, k=k, channels=channels, batch_size=batch_size, progress=progress)
    figures: dict[str, Explained] = {}
    rows = sum(len(show or r.channels[:shown]) for r in report.layers.values())
    with progress_bar("drawing the top-k gallery", rows, enabled=progress) as bar:
        for key, result in report.items():
            figures[key] = topk_gallery(result, channels=show, max_channels=shown, palette=palette,
                                        on_row=bar.advance)
    return TopKView(report, ds, figures)


# --- the convolution itself ---------------------------------------------------------------------


@dataclass(frozen=True)
class ConvInput:
    """An input for the NumPy convolution: ``x`` float64 C×H×W and the words for it."""

    x: NDArray[np.float64]
    label: str


def conv_input(
    source: ModelHandle | None = None,
    *,
    digit: int | str | None = None,
    index: int | None = None,
    image: str | os.PathLike[str] | None = None,
    matrix: str | None = None,
    nth: int = 0,
    split: Split = "test",
    dataset: str = "mnist",
    data_dir: str | os.PathLike[str] | None = None,
    normalised: bool = False,
) -> ConvInput:
    """Exactly one of: a small ``matrix`` written as rows (``"1,2;3,4"``), an ``image`` file,
    or example ``digit``/``index`` of ``split`` of ``source``'s dataset (else ``dataset``).

    Pixels are scaled to [0, 1]; with ``normalised`` (a learned filter will look at them)
    they are fitted and normalised as the model ``source`` was trained on instead.

    >>> conv_input(matrix="1,2;3,4").x.shape
    (1, 2, 2)
    """
    from convlens.conv.explain import parse_matrix, to_float_image

    given = [k for k, v in (("--digit", digit), ("--index", index), ("--image", image), ("--matrix", matrix))
             if v is not None]
    if len(given) != 1:
        raise ConfigError("choose exactly one input: --digit D, --index N, --image FILE or --matrix ROWS")
    if matrix is not None:
        return ConvInput(parse_matrix(matrix)[None], f'input "{matrix.strip()}"')
    if source is not None and normalised:
        chosen = choose_input(source, digit=digit, index=index, image=image, nth=nth, split=split, data_dir=data_dir)
        return ConvInput(chosen.x[0].double().numpy(), f"{chosen.label} (normalised as in training)")
    if image is not None:
        from convlens.data import load_image

        return ConvInput(to_float_image(load_image(image).numpy()), f"image {Path(image).name}")
    from convlens.data import load_dataset

    ds = load_dataset(source.data.name if source is not None else dataset, split, data_dir=data_dir)
    i = _pick(ds, digit, index, nth)
    if not 0 <= i < len(ds):
        raise DataError(f"--index {i}: the {split} split has examples 0..{len(ds) - 1}")
    label = f"{split} {ds.label_kind} {ds.classes[int(ds.labels[i])]} (index {i})"
    return ConvInput(to_float_image(ds.images[i].numpy()), label)


class ConvParams(TypedDict, total=False):
    """The geometry of one convolution, as :func:`convlens.conv.conv2d` takes it."""

    stride: IntOrPair
    padding: IntOrPair | str
    dilation: IntOrPair
    padding_mode: str


_SETTING_KEYS = frozenset(ConvParams.__annotations__)


def conv_params(setting: Mapping[str, object]) -> ConvParams:
    """``setting`` (e.g. :func:`convlens.conv.parse_params`'s output) as :class:`ConvParams`,
    refused if it holds anything but stride, padding, dilation and padding_mode.

    >>> conv_params({"stride": 2, "padding": "same"})
    {'stride': 2, 'padding': 'same'}
    """
    unknown = set(setting) - _SETTING_KEYS
    if unknown:
        raise ConfigError(f"setting {dict(setting)}: unknown keys {sorted(unknown)}; only stride (s), padding (p), "
                          "dilation (d) and padding_mode (mode) apply here")
    return cast(ConvParams, dict(setting))  # the keys are checked; conv2d checks the values


@dataclass(frozen=True)
class ConvKernel:
    """A kernel ready for the NumPy convolution.

    ``weight`` is kh×kw (a classic kernel or a matrix) or C×kh×kw (a learned filter, or a
    classic kernel spread over the C input channels); ``params`` are the stride, padding,
    dilation and padding mode (the layer's for a learned filter, then the options');
    ``x`` is what the kernel looks at: the input itself, or what the filter's layer
    receives from the model when it runs on the input.
    """

    name: str
    weight: NDArray[np.float64]
    bias: float
    x: NDArray[np.float64]
    params: ConvParams = field(default_factory=lambda: ConvParams())

    def trace(self, position: tuple[int, int] | None = None, *, bias: float | None = None,
              flip: bool = False) -> Trace:
        """How output ``position`` (default: the strongest response) is made
        (:func:`convlens.conv.explain.explain`)."""
        from convlens.conv.explain import explain

        return explain(self.x, self.weight, position, bias=self.bias if bias is None else bias, flip=flip,
                       **self.params)


def _geometry(stride: IntOrPair | None, padding: IntOrPair | str | None, dilation: IntOrPair | None,
              padding_mode: str | None) -> ConvParams:
    given = {"stride": stride, "padding": padding, "dilation": dilation, "padding_mode": padding_mode}
    return conv_params({k: v for k, v in given.items() if v is not None})


def conv_kernel(
    x: ConvInput | NDArray[np.float64],
    source: ModelHandle | None = None,
    *,
    kernel: str | None = None,
    filter: str | None = None,
    stride: IntOrPair | None = None,
    padding: IntOrPair | str | None = None,
    dilation: IntOrPair | None = None,
    padding_mode: str | None = None,
) -> ConvKernel:
    """One kernel: a classic ``kernel`` by name or a matrix (``"1,0;0,-1"``), or the learned
    ``filter`` ``"layer:channel"`` of ``source``; given stride, padding, dilation and
    padding mode override the filter's layer's (defaults: PyTorch's)."""
    from convlens.conv.explain import parse_kernel

    image = x.x if isinstance(x, ConvInput) else np.asarray(x, dtype=np.float64)
    if (kernel is None) == (filter is None):
        raise ConfigError("choose one kernel: --kernel NAME|ROWS (e.g. sobel_x) or --filter LAYER:CHANNEL with a RUN")
    params: ConvParams = {}
    if filter is not None:
        if source is None:
            raise ConfigError("--filter needs a model: give a run directory (RUN) or --model")
        from convlens.inspect.receptive import conv_filter, layer_input

        f = conv_filter(source.model, filter)
        params = ConvParams(stride=f.stride, padding=f.padding, dilation=f.dilation, padding_mode=f.padding_mode)
        seen = layer_input(source.model, f.layer, image)
        weight, bias, name = np.asarray(f.weight, dtype=np.float64), f.bias, f.label
    else:
        name, weight = parse_kernel(str(kernel))
        bias, seen = 0.0, image
        if image.shape[0] > 1:  # a classic kernel on several channels: the mean of its responses
            weight = np.broadcast_to(weight / image.shape[0], (image.shape[0], *weight.shape)).copy()
    params.update(_geometry(stride, padding, dilation, padding_mode))
    return ConvKernel(name, weight, float(bias), seen, params)


#: The six settings :func:`conv_panel` shows by default.
DEFAULT_SETTINGS: tuple[ConvParams, ...] = (
    ConvParams(stride=1, padding=0, dilation=1),
    ConvParams(stride=1, padding="same", dilation=1),
    ConvParams(stride=2, padding=0, dilation=1),
    ConvParams(stride=2, padding=1, dilation=1),
    ConvParams(stride=1, padding=0, dilation=2),
    ConvParams(stride=3, padding=2, dilation=2),
)


def conv_panel(k: ConvKernel, settings: Sequence[Mapping[str, object]] | None = None, *,
               palette: PaletteName = "default", label: str = "", pixel: float = 0.07) -> Explained:
    """The map kernel ``k`` makes from its input under each of ``settings`` (stride,
    padding, dilation, padding_mode; default :data:`DEFAULT_SETTINGS`), drawn side by
    side at their true sizes (:func:`convlens.viz.conv.hyperparameter_panel`)."""
    from convlens.conv.kernels import filter_map
    from convlens.viz.conv import hyperparameter_panel

    chosen = list(DEFAULT_SETTINGS) if settings is None else [conv_params(s) for s in settings]
    if not chosen:
        raise ConfigError("the panel needs at least one setting")
    made = [filter_map(k.x, k.weight, k.bias, **s) for s in chosen]
    return hyperparameter_panel(k.x, made, chosen, kernel_size=k.weight.shape[-2:], palette=palette,
                                label=label, pixel=pixel)


def conv_apply(
    x: ConvInput,
    source: ModelHandle | None = None,
    *,
    kernels: Sequence[str] = (),
    filters: Sequence[str] = (),
    stride: IntOrPair | None = None,
    padding: IntOrPair | str | None = "same",
    dilation: IntOrPair | None = None,
    padding_mode: str | None = None,
    flip: bool = False,
    palette: PaletteName = "default",
) -> Explained:
    """Classic ``kernels`` (names or matrices) and learned ``filters`` (``"layer:channel"``
    of a layer that reads the image) of ``source`` applied to ``x``, side by side."""
    from convlens.conv.kernels import filter_map
    from convlens.viz.conv import kernel_figure

    if not kernels and not filters:
        raise ConfigError("give at least one --kernel NAME (see --list) or --filter LAYER:CHANNEL")
    if filters and source is None:
        raise ConfigError("--filter needs a model: give a run directory (RUN) or --model")
    from convlens.conv.explain import parse_kernel

    entries: list[tuple[str, NDArray[np.float64], float]] = [(*parse_kernel(t), 0.0) for t in kernels]
    if filters:
        from convlens.inspect.receptive import conv_filter

        assert source is not None  # for mypy: checked above
        for spec in filters:
            f = conv_filter(source.model, spec)
            if f.weight.shape[0] != x.x.shape[0]:
                raise ConfigError(
                    f"{spec}: {f.layer} reads {f.weight.shape[0]} channels, not the image; "
                    f"use `convlens conv explain --filter {spec}` or `convlens maps` for deeper layers"
                )
            entries.append((f.label, np.asarray(f.weight, dtype=np.float64), f.bias))
    params = _geometry(stride, padding if padding is not None else "same", dilation, padding_mode)
    made = [(name, w, filter_map(x.x, w, b, flip=flip, **params)) for name, w, b in entries]
    return kernel_figure(x.x, made, stride=params.get("stride", 1), padding=params["padding"],
                         dilation=params.get("dilation", 1), palette=palette, label=x.label)


# --- training -----------------------------------------------------------------------------------


def default_run_dir(arch: str = "seed-cnn", dataset: str = "mnist", seed: int = 0) -> Path:
    """Where ``convlens train`` writes a run unless told: ``runs/<arch>-<dataset>-seed<seed>``."""
    return Path("runs") / f"{arch}-{dataset}-seed{seed}"


def train_run(
    out: str | os.PathLike[str],
    *,
    arch: str = "seed-cnn",
    dataset: str = "mnist",
    data_dir: str | os.PathLike[str] | None = None,
    config: TrainConfig | None = None,
    device: str = "auto",
    callbacks: Sequence[Callback] = (),
    data: tuple[ImageDataset, ImageDataset] | None = None,
    overwrite: bool = False,
) -> Run:
    """Train ``arch`` (sized for the data's channels, image size and classes) on ``dataset``
    and write the run directory ``out``; what ``convlens train`` and the demo do.

    ``data`` is ``(train, test)`` already in memory; by default both splits are loaded
    from ``data_dir`` (see :func:`convlens.data.load_dataset`). The config and ``out``
    are checked before any data is read: ``out`` is claimed (a second writer fails), and
    an earlier run there is replaced only with ``overwrite`` (see
    :func:`convlens.train.train`).
    """
    from convlens._atomic import claim
    from convlens.models.run import ensure_replaceable
    from convlens.train.config import TrainConfig

    cfg = config or TrainConfig()
    cfg.validate()
    with claim(out):
        ensure_replaceable(out, overwrite=overwrite)
        return _train_run(out, arch, dataset, data_dir, cfg, device, callbacks, data, overwrite)


def _train_run(out: str | os.PathLike[str], arch: str, dataset: str, data_dir: str | os.PathLike[str] | None,
               cfg: TrainConfig, device: str, callbacks: Sequence[Callback],
               data: tuple[ImageDataset, ImageDataset] | None, overwrite: bool) -> Run:
    from convlens.models.registry import get_config
    from convlens.train.loop import train

    if data is None:
        from convlens.data import load_dataset

        data = (load_dataset(dataset, "train", data_dir=data_dir), load_dataset(dataset, "test", data_dir=data_dir))
    train_data, test_data = data
    c, h, w = train_data.shape
    model_cfg = get_config(arch, in_channels=c, input_size=(h, w), num_classes=len(train_data.classes))
    return train(model_cfg, train_data, test_data, out, cfg, device=device, callbacks=callbacks, overwrite=overwrite)


# --- comparing two models -----------------------------------------------------------------------

if TYPE_CHECKING:
    from convlens.compare import Disagreement, FilterMatch, ProbeReport, Similarity


#: The figures :func:`compare_models` can draw, by file stem ("disagreements" only where the models disagree).
COMPARE_FIGURES = ("cka", "filters-matched", "accuracy-difference", "disagreements")


@dataclass
class ComparisonView:
    """What :func:`compare_models` computed, and its figures (by file stem)."""

    similarity: Similarity
    match: FilterMatch
    disagreement: Disagreement
    probe: ProbeReport | None
    figures: dict[str, Explained]
    split: str

    def to_dict(self) -> dict[str, object]:
        """Everything as JSON-ready numbers (what ``convlens compare`` writes to ``compare.json``)."""
        return {
            "split": self.split,
            "cka": self.similarity.to_dict(),
            "filters": self.match.to_dict(),
            "disagreement": self.disagreement.to_dict(),
            "probe": None if self.probe is None else self.probe.to_dict(),
            "figures": {stem: {"caption": f.caption, "alt": f.alt} for stem, f in self.figures.items()},
        }


def compare_models(
    source_a: Run | ModelHandle,
    source_b: Run | ModelHandle,
    *,
    layers_a: Sequence[str] | None = None,
    layers_b: Sequence[str] | None = None,
    estimator: Literal["exact", "minibatch"] = "exact",
    pool: Literal["flatten", "mean"] = "flatten",
    split: Split = "test",
    probe: bool = True,
    probe_epochs: int = 4,
    gallery: int = 6,
    method: str = "gradcam",
    batch_size: int = 256,
    data_dir: str | os.PathLike[str] | None = None,
    palette: PaletteName = "default",
) -> ComparisonView:
    """Compare two models on ``split`` of A's dataset: CKA of their layers, matched first-layer
    filters, where their predictions differ (with both models' CAMs), and linear probes
    (fitted on the train split) beside CKA. Returns the results and their figures."""
    import torch

    from convlens.compare import cka, conv_layers, disagreement, linear_probe, match_filters
    from convlens.data import load_dataset, normalise
    from convlens.explain import cam
    from convlens.viz.compare import (
        accuracy_difference_figure,
        cka_figure,
        disagreement_gallery,
        matched_filters_figure,
    )

    ha, hb = _handle(source_a), _handle(source_b)
    if ha.input_shape != hb.input_shape:
        raise ConfigError(f"model A reads inputs of shape {ha.input_shape} and model B {hb.input_shape}; compare "
                          "models that read the same inputs (give --input-shape for a --model)")
    if ha.data.name != hb.data.name:
        raise ConfigError(f"model A reads {ha.data.name} and model B {hb.data.name}; compare models of one dataset")
    ds = load_dataset(ha.data.name, split, data_dir=data_dir)
    mean, std = ha.data.mean or ds.mean, ha.data.std or ds.std
    if tuple(ds.shape) != tuple(ha.input_shape):
        raise DataError(f"the {ds.name} {split} images are {ds.shape} but the models read {ha.input_shape}")
    sim = cka(ha.model, hb.model, ds, layers_a=layers_a, layers_b=layers_b, estimator=estimator, pool=pool,
              batch_size=batch_size, progress=None)
    figures: dict[str, Explained] = {
        "cka": cka_figure(sim.matrix, sim.layers_a, sim.layers_b, estimator=estimator, kernel=sim.kernel,
                          n_inputs=sim.n_inputs, stderr=sim.stderr, palette=palette)}
    first_a, first_b = conv_layers(ha.model)[0], conv_layers(hb.model)[0]
    match = match_filters(ha.model, hb.model, ds, first_a, first_b, batch_size=batch_size, progress=None)
    figures["filters-matched"] = matched_filters_figure(
        conv_weight(ha.model, first_a), conv_weight(hb.model, first_b), match.a_channels.tolist(),
        match.b_channels.tolist(), match.matched.tolist(), layer_a=first_a, layer_b=first_b,
        threshold=match.threshold, palette=palette)
    dis = disagreement(ha.model, hb.model, ds, classes=ds.classes, batch_size=batch_size, progress=None)
    figures["accuracy-difference"] = accuracy_difference_figure(
        dis.per_class("a"), dis.per_class("b"), dis.classes, accuracy_a=dis.accuracy_a, accuracy_b=dis.accuracy_b,
        p_value=dis.p_value, palette=palette)
    shown = dis.indices[:gallery]
    if len(shown):
        x = normalise(ds.images[torch.as_tensor(shown)], mean, std)
        heats = []
        for model, pred in ((ha.model, dis.pred_a), (hb.model, dis.pred_b)):
            result = cam(model, _on_model_device(model, x), method=method, target=torch.as_tensor(pred[shown]))
            heats.append([h for h in result.normalised.detach().cpu().numpy()])
        labels = [f"#{int(i)}: true {dis.classes[dis.labels[i]]}, A {dis.classes[dis.pred_a[i]]}, "
                  f"B {dis.classes[dis.pred_b[i]]}" for i in shown]
        figures["disagreements"] = disagreement_gallery(
            [ds.images[int(i)].numpy() for i in shown], heats[0], heats[1], labels, method=result.title,
            n_total=dis.n, palette=palette)
    report = None
    if probe:
        train = load_dataset(ha.data.name, "train", data_dir=data_dir)
        report = linear_probe(ha.model, hb.model, train, ds, list(sim.layers_a), list(sim.layers_b),
                              classes=len(ds.classes), epochs=probe_epochs, batch_size=batch_size, progress=None)
    return ComparisonView(sim, match, dis, report, figures, split)
