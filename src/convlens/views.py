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

from convlens.errors import ConfigError, ConvlensError, DataError, LayerError, unknown_name

if TYPE_CHECKING:  # the heavy layers are imported where they are used
    import torch
    from torch import nn

    from convlens.conv.arithmetic import IntOrPair
    from convlens.conv.explain import Trace
    from convlens.data.dataset import ImageDataset
    from convlens.diagnose import Diagnosis
    from convlens.explain import Target
    from convlens.explain.base import Explanation
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
    from convlens.data.spec import is_spec, parse
    from convlens.data.transforms import fit_images

    if is_spec(spec.name) and parse(spec.name).kind == "folder" and ds.shape != handle.input_shape:
        c, h, w = handle.input_shape  # a folder is read at the model's size: resized and centre-cropped
        ds = load_dataset(spec.name, split, size=(h, w), channels=c if c in (1, 3) else None)
    computed = None
    if not spec.mean:  # no published constants: those of the training split, as in training
        ref = ds if split == "train" else load_dataset(spec.name, "train", data_dir=data_dir, check=False)
        computed = (ref.mean, ref.std)
    norm = handle.normalisation(computed)
    assert norm is not None  # for mypy: constants given, published or computed
    mean, std = norm
    if ds.shape == handle.input_shape and (tuple(mean), tuple(std)) == (ds.mean, ds.std):
        return ds
    if ds.shape == handle.input_shape:  # (a streamed dataset has no images to replace)
        return dataclasses.replace(ds, mean=tuple(mean), std=tuple(std))
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
    engine: str = "inprocess",
    address: str | None = None,
) -> FaithfulnessView:
    """Score ``methods`` on ``n`` images of ``split`` of the model's dataset
    (:func:`convlens.explain.faithfulness`) and draw the mean deletion and insertion curves."""
    from convlens.explain import faithfulness as score
    from convlens.viz.explain import faithfulness_figure

    handle = _handle(source)
    ds = dataset_for(handle, split, data=data, data_dir=data_dir)
    names: str | list[str] = methods if isinstance(methods, str) else list(methods)
    report = score(handle, ds, names, n=n, layer=layer, target=target, steps=steps,
                   sanity_images=sanity_images, seed=seed, batch_size=batch_size, progress=None,
                   engine=engine, address=address)
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
    engine: str = "inprocess",
    address: str | None = None,
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
    report = topk_examples(handle, ds, layer, k=k, channels=channels, batch_size=batch_size, progress=progress,
                           engine=engine, address=address)
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
    from convlens.data.spec import slug

    return Path("runs") / f"{arch}-{slug(dataset)}-seed{seed}"


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


# --- report and app -----------------------------------------------------------------------------
# What the HTML report (convlens.report) and the local web app (convlens.app) show, computed
# here once: the faces only lay it out.


@dataclass
class ModelCard:
    """What a model is: its layers (shape, parameters, receptive field), how it was trained."""

    name: str
    input_shape: tuple[int, int, int]
    classes: tuple[str, ...]
    columns: tuple[str, ...]
    rows: list[list[str]]  # one per layer, matching ``columns``
    total_params: int | None
    total_macs: int | None
    architecture: dict[str, object]  # the run's model config ({} for a --model)
    training: dict[str, object]  # seed, data, hyperparameters, versions ({} for a --model)
    test_accuracy: float | None
    curves: Explained | None  # the training curve, for a run with completed epochs


def model_card(source: Run | ModelHandle) -> ModelCard:
    """The layer table of ``source`` (:func:`convlens.inspect.receptive.receptive_field`) and,
    for a run, its training configuration, test accuracy and training curve."""
    from convlens.conv.arithmetic import COLUMNS
    from convlens.inspect.receptive import receptive_field
    from convlens.viz.curves import training_curve

    handle = _handle(source)
    table = receptive_field(handle.model, handle.input_shape)
    training: dict[str, object] = {}
    architecture: dict[str, object] = {}
    accuracy, curves = None, None
    if handle.run is not None:
        cfg = handle.run.config
        for key, value in sorted(cfg.model.to_dict().items()):
            items = value if isinstance(value, list) and all(isinstance(v, dict) for v in value) else None
            if items is None:
                architecture[key] = value
            for n, item in enumerate(items or []):  # one row per conv block: its settings in order
                architecture[f"{key} {n + 1}"] = ", ".join(f"{k}={v}" for k, v in item.items())
        data = cfg.data
        training = {"seed": cfg.seed, "data": f"{data.name}: {data.train_size:,} training and {data.test_size:,} "
                    f"test images", **{k: cfg.train[k] for k in sorted(cfg.train)},
                    **{f"version of {k}": cfg.versions[k] for k in sorted(cfg.versions)}}
        accuracy = handle.run.test_accuracy
        if handle.run.metrics.get("epochs"):
            curves = training_curve(handle.run.metrics, title=f"{handle.name} on {data.name}")
    return ModelCard(handle.name, handle.input_shape, tuple(handle.data.classes), tuple(COLUMNS), table.cells(),
                     table.total_params, table.total_macs, architecture, training, accuracy, curves)


def first_conv(model: Source) -> str:
    """The name of the first ``nn.Conv2d`` of ``model`` (in ``named_modules()`` order)."""
    from torch import nn

    for name, module in _model(model).named_modules():
        if isinstance(module, nn.Conv2d):
            return name
    raise LayerError("the model has no Conv2d layer: the convolution explainer needs one")


def spatial_layers(source: Run | ModelHandle) -> list[str]:
    """The layers whose output is a spatial map (feature maps and CAMs can be read there)."""
    from convlens.inspect import layers

    handle = _handle(source)
    return [r.name for r in layers(handle.model, handle.input_shape) if r.is_spatial]


@dataclass(frozen=True)
class Prediction:
    """The model's class probabilities for one input and the ``k`` most likely classes."""

    probabilities: tuple[float, ...]
    top: tuple[tuple[int, str, float], ...]  # (class index, class name, probability), most likely first


def predict(model: Source, chosen: ChosenInput, *, k: int = 5, class_names: Sequence[str] | None = None) -> Prediction:
    """Softmax probabilities of ``model`` on ``chosen`` and its top ``k`` classes."""
    import torch

    from convlens.inspect._state import evaluating

    m = _model(model)
    names = _class_names(model, class_names)
    with evaluating(m), torch.no_grad():
        probs = m(_on_model_device(m, chosen.x)).softmax(1)[0].double().cpu()
    top = torch.argsort(probs, descending=True, stable=True)[:k].tolist()
    shown = [names[c] if names is not None and c < len(names) else str(c) for c in top]
    return Prediction(tuple(float(p) for p in probs),
                      tuple((int(c), name, float(probs[c])) for c, name in zip(top, shown, strict=True)))


def image_input(source: Run | ModelHandle, data: bytes, *, name: str = "uploaded image") -> ChosenInput:
    """An image given as bytes (an upload, a drawing) as a model input, read by
    :func:`convlens.data.load_image` (its pixel limit refuses decompression bombs)."""
    import dataclasses
    import tempfile

    with tempfile.TemporaryDirectory(prefix="convlens-image-") as tmp:
        path = Path(tmp) / "image"
        path.write_bytes(data)
        try:
            chosen = choose_input(source, image=path)
        except ConvlensError as exc:  # the messages name our temporary file, not the user's
            text = str(exc).replace(f"image file {path}", f"the {name}").replace(str(path), f"the {name}")
            raise type(exc)(text) from None
    return dataclasses.replace(chosen, label=name)


@dataclass
class ConvStep:
    """One output value of the model's first conv layer, worked out (a :class:`~convlens.conv.explain.Trace`)."""

    layer: str
    channel: int
    trace: Trace
    figure: Explained
    params: ConvParams

    def to_dict(self) -> dict[str, object]:
        e = self.trace
        return {"layer": self.layer, "channel": self.channel, "position": list(e.position),
                "output_shape": list(e.output_shape), "stride": list(e.stride), "dilation": list(e.dilation),
                "pad": list(e.pad), "patch": e.window.tolist(), "kernel": e.kernel.tolist(),
                "products": e.products.tolist(), "sum": float(e.products.sum()), "bias": float(e.bias),
                "total": float(e.total), "value": float(e.value), "in_image": e.in_image.tolist()}


def conv_step(source: Run | ModelHandle, chosen: ChosenInput, *, channel: int = 0,
              position: tuple[int, int] | None = None, stride: IntOrPair | None = None,
              padding: IntOrPair | str | None = None, dilation: IntOrPair | None = None,
              palette: PaletteName = "default") -> ConvStep:
    """How output ``position`` (default: the strongest) of filter ``channel`` of the model's
    first conv layer is made on ``chosen``; ``stride``/``padding``/``dilation`` override the layer's."""
    from convlens.viz.conv import explanation_figure

    handle = _handle(source)
    layer = first_conv(handle.model)
    x = ConvInput(chosen.x[0].double().cpu().numpy(), chosen.label)
    k = conv_kernel(x, handle, filter=f"{layer}:{channel}", stride=stride, padding=padding, dilation=dilation)
    if position is not None:
        ho, wo = k.trace().output_shape
        if not (0 <= position[0] < ho and 0 <= position[1] < wo):
            raise ConfigError(f"output position {position} is outside the {ho}×{wo} output; rows 0..{ho - 1}, "
                              f"columns 0..{wo - 1}")
    e = k.trace(position)
    return ConvStep(layer, channel, e, explanation_figure(e, palette=palette, label=f"{chosen.label} ⋆ {k.name}"),
                    k.params)


def cam_scores(source: Run | ModelHandle, chosen: ChosenInput, *, method: str = "gradcam",
               layer: str | Sequence[str] | None = None, steps: int = 16) -> dict[str, float]:
    """Faithfulness of ``method``'s heatmap on ``chosen`` alone (deletion and insertion AUC,
    Average Drop, Increase in Confidence; :func:`convlens.explain.faithfulness` on one image,
    black as the baseline, no randomisation check)."""
    import torch

    from convlens.explain import faithfulness as score

    handle = _handle(source)
    norm = handle.normalisation()
    x = _on_model_device(handle.model, chosen.x)
    black: float | torch.Tensor = 0.0
    if norm is not None:
        black = ((0.0 - torch.tensor(norm[0])) / torch.tensor(norm[1])).to(x.device)
    report = score(handle.model, x, method, n=None, layer=layer, steps=steps, baseline=black, sanity_images=0,
                   progress=False)
    row = report.rows()[0]
    return {"deletion_auc": row["deletion_auc"], "insertion_auc": row["insertion_auc"],
            "average_drop": row["average_drop"], "increase_in_confidence": row["increase_in_confidence"]}


@dataclass(frozen=True)
class SavedFigure:
    stem: str
    png: Path
    caption: str
    alt: str


@dataclass(frozen=True)
class SavedResult:
    """A result computed earlier and written beside a run (``compare.json``, ``diagnosis.json``, ...):
    its figures (PNG files next to the JSON, with captions and alt texts) and its top-level numbers."""

    key: str
    title: str
    path: Path
    figures: tuple[SavedFigure, ...]
    numbers: tuple[tuple[str, str], ...]


#: Result files the report and the app look for in a run directory (and in ``RUN/figures``,
#: ``RUN/compare``): file name -> title. A file is shown when it exists; its ``figures``
#: mapping (``stem -> {"caption", "alt"}``) names PNGs beside it.
RESULT_FILES: dict[str, str] = {
    "diagnosis.json": "Diagnosis",
    "audit.json": "Background and spurious-cue audit",
    "compare.json": "Comparison with another model",
    "featvis-*-scores.json": "Feature visualisation",  # one per `convlens featvis` figure
}


def saved_results(run_dir: str | os.PathLike[str], names: Sequence[str] | None = None) -> list[SavedResult]:
    """The result files of :data:`RESULT_FILES` (or ``names``) found in ``run_dir``, its
    ``figures/`` or a sub-directory named after the result; unreadable files are skipped.
    A name with ``*`` matches every such file of the first folder that has one (each its own
    result, keyed by its file stem)."""
    import json

    out = []
    root = Path(run_dir)
    for name in (names if names is not None else sorted(RESULT_FILES)):
        key = name.rsplit(".", 1)[0]
        folders = (root, root / "figures", root / key.replace("*", "").strip("-"))
        if "*" in name:
            paths = next((found for folder in folders if (found := sorted(folder.glob(name)))), [])
        else:
            paths = [folder / name for folder in folders]
        for path in paths:
            folder = path.parent
            if not path.is_file():
                continue
            try:
                content = json.loads(path.read_text(encoding="utf-8"))
            except (OSError, ValueError):
                continue
            if not isinstance(content, dict):
                continue
            listed = content.get("figures")
            figs: dict[str, object] = listed if isinstance(listed, dict) else {}
            shown = tuple(SavedFigure(str(stem), folder / f"{stem}.png", str(words.get("caption", "")),
                                      str(words.get("alt", "")))
                          for stem, words in sorted(figs.items())
                          if isinstance(words, dict) and (folder / f"{stem}.png").is_file())
            numbers = tuple((str(k), f"{v:.4g}" if isinstance(v, float) else str(v))
                            for k, v in sorted(content.items())
                            if isinstance(v, int | float | str) and not isinstance(v, bool))
            out.append(SavedResult(path.stem if "*" in name else key, RESULT_FILES.get(name, key), path, shown,
                                   numbers))
            if "*" not in name:
                break
    return out


def explanation(model: Source, chosen: ChosenInput, *, method: str = "gradcam",
                layer: str | Sequence[str] | None = None, target: Target = None) -> Explanation:
    """:func:`convlens.explain.cam` of ``chosen`` on the model's device: the numbers a heatmap is drawn from."""
    from convlens.explain import cam

    m = _model(model)
    return cam(m, _on_model_device(m, chosen.x), method=method, layer=layer, target=target)


# --- audit: does the model look at the object or at the background (issue #12) ------------------

if TYPE_CHECKING:
    from convlens.diagnose.audit import Audit

#: The figures of :func:`audit_view`, by file stem.
AUDIT_FIGURES = ("audit-variants", "audit-background-mass", "audit-channels")


@dataclass
class AuditView:
    """What :func:`audit_view` computed (``audit``), its figures by file stem, and the data it read."""

    audit: Audit
    figures: dict[str, Explained]
    data: ImageDataset

    def to_dict(self) -> dict[str, object]:
        """The audit and the figures' captions (what ``convlens audit`` writes to ``audit.json``)."""
        return {**self.audit.to_dict(), "split": self.data.split, "dataset": self.data.name, "source": self.data.source,
                "figures": {stem: {"caption": f.caption, "alt": f.alt} for stem, f in self.figures.items()}}


def _made_data_dir(handle: ModelHandle, data_dir: str | os.PathLike[str] | None) -> str | os.PathLike[str] | None:
    """The data directory of a run trained on a ``convlens make-dataset`` directory: ``data_dir``
    if it holds that dataset, else the directory the run recorded (so ``convlens audit RUN``
    finds it without ``--data-dir``)."""
    from convlens.data.manifest import data_folder, read_manifest
    from convlens.data.sources import SOURCES

    name = handle.data.name
    if name in SOURCES:
        return data_dir
    given = data_folder(data_dir)
    if given is not None and given.is_dir() and (read_manifest(given) or {}).get("name") == name:
        return data_dir
    if handle.data.source and "://" not in handle.data.source:
        recorded = Path(handle.data.source).parent
        if recorded.is_dir() and (read_manifest(recorded) or {}).get("name") == name:
            return recorded
    return data_dir


def _dataset_masks(ds: ImageDataset, split: str) -> Path | None:
    """The foreground masks a made dataset directory holds for ``split`` (None if none)."""
    from convlens.data.manifest import read_manifest

    if "://" in ds.source or not ds.source:
        return None
    folder = Path(ds.source).parent
    manifest = read_manifest(folder) if folder.is_dir() else None
    if manifest is None or manifest.get("name") != ds.name:
        return None
    name = manifest.get("masks", {}).get(f"{split}-foreground")
    return folder / name if name else None


def audit_view(
    source: Run | ModelHandle,
    *,
    split: Split = "test",
    masks: object = None,
    data: ImageDataset | None = None,
    data_dir: str | os.PathLike[str] | None = None,
    method: str = "gradcam",
    layer: str | None = None,
    seed: int = 0,
    n: int | None = None,
    palette: PaletteName = "default",
) -> AuditView:
    """Audit the model for background (and colour) reliance on ``split`` of its dataset, and
    draw the variants, the background mass per class and the background-driven channels.

    Masks: ``masks`` if given (array or ``.npy`` path); else the foreground masks of a
    ``convlens make-dataset`` directory (``{split}-foreground.npy``); else derived
    (:func:`convlens.data.masks.foreground_masks`). ``n`` audits a seeded random sample of
    ``n`` images of the split (with their masks) instead of all of them.
    """
    from convlens.diagnose.audit import CHANNEL_SHARE, audit, load_masks
    from convlens.viz.audit import (
        audit_variants_figure,
        background_channels_figure,
        background_mass_figure,
    )

    handle = _handle(source)
    ds = dataset_for(handle, split, data=data, data_dir=_made_data_dir(handle, data_dir) if data is None else None)
    if masks is None and data is None:
        masks = _dataset_masks(ds, split)
    if n is not None and n < len(ds):
        keep = np.sort(np.random.default_rng(seed).choice(len(ds), size=max(int(n), 0), replace=False))
        masks = None if masks is None else load_masks(masks, ds)[keep]
        ds = ds.subset(keep)
    result = audit(handle.model, ds, masks=masks, method=method, layer=layer, seed=seed)
    names = list(result.example_images)
    labels = [f"#{i}: {ds.classes[int(ds.labels[i])]}" for i in result.examples]
    figures: dict[str, Explained] = {}
    if result.examples:
        figures["audit-variants"] = audit_variants_figure(
            result.example_images, {v: result.variants[v] for v in names}, chance=result.chance, labels=labels,
            n_images=result.n, bg_gap=result.bg_gap, palette=palette)
    from convlens.explain import get_method

    title = get_method(method).title
    figures["audit-background-mass"] = background_mass_figure(
        result.background_mass_per_class, result.gradient_mass_per_class, ds.classes,
        cam_overall=result.background_mass, gradient_overall=result.gradient_mass,
        area=1.0 - result.foreground_fraction, method=title, palette=palette)
    if result.channels:
        figures["audit-channels"] = background_channels_figure(
            [c.layer for c in result.channels], [c.shares for c in result.channels], [c.area for c in result.channels],
            [c.driven for c in result.channels], limit=CHANNEL_SHARE, palette=palette)
    return AuditView(result, figures, ds)

# --- diagnosis ----------------------------------------------------------------------------------


@dataclass
class DiagnosisView:
    """A :class:`~convlens.diagnose.Diagnosis`, the split it ran on, and its four figures
    (``confusion``, ``reliability``, ``gallery``, ``cells``)."""

    diagnosis: Diagnosis
    split: str
    dataset: str
    figures: dict[str, Explained]


def diagnosis(
    source: Run | ModelHandle,
    split: Split = "test",
    *,
    k: int = 24,
    method: str = "gradcam",
    layer: str | Sequence[str] | None = None,
    neighbours: int = 5,
    batch_size: int = 256,
    data: ImageDataset | None = None,
    train_data: ImageDataset | None = None,
    data_dir: str | os.PathLike[str] | None = None,
    palette: PaletteName = "default",
    progress: bool | None = None,
) -> DiagnosisView:
    """Diagnose the model on ``split`` of its dataset (:func:`convlens.diagnose`), with the
    nearest neighbours taken from its training split, and draw the four figures."""
    from convlens.diagnose import diagnose
    from convlens.viz.diagnose import (
        CellPanel,
        GalleryRow,
        cells_figure,
        confusion_figure,
        gallery_figure,
        reliability_figure,
    )

    handle = _handle(source)
    ds = dataset_for(handle, split, data=data, data_dir=data_dir)
    train = dataset_for(handle, "train", data=train_data, data_dir=data_dir) if neighbours else None
    chosen = layer if layer is None or isinstance(layer, str) else list(layer)
    d = diagnose(handle.model, ds, method=method, layer=chosen, k=k, train=train, neighbours=neighbours,
                 batch_size=batch_size, progress=progress)
    names = d.classes
    figures: dict[str, Explained] = {
        "confusion": confusion_figure(d.confusion, names, palette=palette,
                                      title=f"Confusion matrix, {ds.name} {split}"),
        "reliability": reliability_figure(d.reliability.edges, d.reliability.counts, d.reliability.confidence,
                                          d.reliability.accuracy, d.ece, palette=palette),
    }
    from convlens.diagnose.core import describe_kind

    rows = []
    for kind, items in d.errors.items():
        for item in items:
            near = ", ".join(f"#{nb.index} ({names[nb.label] if nb.label is not None else '?'})"
                             for nb in item.neighbours[:3])
            rows.append(GalleryRow(
                image=ds.images[item.index].numpy(), cam_pred=item.cam_pred, cam_true=item.cam_true,
                difference=item.cam_difference, kind=describe_kind(kind), true_name=names[item.label],
                predicted_name=names[item.predicted], index=item.index,
                top3=[(names[c], p) for c, p in item.top3], deletion=item.deletion,
                label_suspect=item.suspected_label_error, neighbours=f"nearest training: {near}" if near else ""))
    figures["gallery"] = gallery_figure(rows, method=method, layer=", ".join(d.layers) or None, n_inputs=d.n,
                                        note=d.gallery_note, palette=palette)
    figures["cells"] = cells_figure(
        [CellPanel(names[c.true], names[c.predicted], c.count, c.averaged, c.mean_cam_difference) for c in d.cells],
        method=method, n_inputs=d.n, palette=palette)
    return DiagnosisView(d, split, ds.name, figures)

# --- feature visualisation ----------------------------------------------------------------------

if TYPE_CHECKING:
    from convlens.inspect.featvis import FeatVis, Reliability
    from convlens.inspect.kinds import FilterKinds


@dataclass
class FeatVisView:
    """What :func:`featvis_view` computed: the visualisations, the natural top-k they are
    shown beside, the reliability scores, and the figure."""

    vis: FeatVis
    topk: TopKReport
    reliability: Reliability
    figure: Explained
    kinds: FilterKinds | None = None

    def to_dict(self) -> dict[str, object]:
        return {
            "layer": self.vis.layer, "channels": self.vis.channels, "settings": self.vis.settings,
            "activation": self.vis.activation.tolist(), "peak": self.vis.peak.tolist(),
            "ratio_to_best_natural": [None if not np.isfinite(r) else float(r) for r in self.reliability.ratio],
            "similarity": self.reliability.similarity.tolist(), "similarity_layer": self.reliability.earlier,
            "kinds": None if self.kinds is None else self.kinds.to_dict(),
            "caption": self.figure.caption, "alt": self.figure.alt,
        }


def featvis_view(
    source: Run | ModelHandle,
    layer: str = "conv2",
    channels: Sequence[int] | None = None,
    *,
    steps: int = 256,
    k: int = 6,
    split: Split = "test",
    seed: int = 0,
    batch_size: int = 256,
    data: ImageDataset | None = None,
    data_dir: str | os.PathLike[str] | None = None,
    palette: PaletteName = "default",
    **options: object,
) -> FeatVisView:
    """Visualise ``channels`` of ``layer`` (:func:`convlens.featvis`; ``options`` go to it)
    and show each beside its ``k`` natural top-k examples from ``split``
    (:func:`convlens.topk_examples`), with the reliability scores
    (:func:`convlens.inspect.featvis.reliability`). For the model's first conv layer the
    filter kinds (:func:`convlens.classify_filters`) are computed too.

    Everything the user gave is checked before the optimisation and the data pass."""
    from convlens.errors import positive_int
    from convlens.inspect.featvis import MAX_STEPS, featvis, layer_channels, reliability
    from convlens.inspect.topk import check_k, topk_examples
    from convlens.viz.featvis import MAX_ROWS, featvis_figure

    handle = _handle(source)
    steps = positive_int("steps", steps)
    if steps > MAX_STEPS:
        raise ConfigError(f"steps={steps} is more than the {MAX_STEPS} one visualisation takes; a few hundred "
                          "are usual (--steps 256)")
    k = check_k(k)
    n_channels, _ = layer_channels(handle.model, layer, handle.input_shape)
    chosen = list(range(n_channels)) if channels is None else [int(c) for c in channels]
    bad = [c for c in chosen if not 0 <= c < n_channels]
    if bad or not chosen:
        raise ConfigError(f"channel {bad[0]} is out of range: {layer} has channels 0..{n_channels - 1}" if bad
                          else "no channels given")
    if len(chosen) > MAX_ROWS:
        raise ConfigError(f"{len(chosen)} channels is more than the {MAX_ROWS} one figure draws; pick some with "
                          "--channels, e.g. 0-31")
    ds = dataset_for(handle, split, data=data, data_dir=data_dir)
    vis = featvis(handle, layer, chosen, steps=steps, seed=seed, **options)  # type: ignore[arg-type]
    report = topk_examples(handle.model, ds, layer, k=k, channels=chosen, crops=False, batch_size=batch_size,
                           progress=False)
    top = report[layer]
    rows = [top.row(c) for c in vis.channels]
    index = top.indices[rows]  # (N, k)
    natural = ds.normalise(ds.images[index.flatten()]).reshape(len(rows), top.k, *ds.shape)
    best = top.values[rows, 0]
    rel = reliability(handle, vis, natural, best)
    pixels = (ds.images[index.flatten()].double() / 255.0).reshape(len(rows), top.k, *ds.shape).numpy()
    fig = featvis_figure(vis.images, vis.channels, layer, natural=pixels, natural_values=top.values[rows].numpy(),
                         natural_index=index.numpy(), ratio=rel.ratio, similarity=rel.similarity,
                         earlier=rel.earlier, steps=steps, param=str(vis.settings["param"]), n_inputs=len(ds),
                         split=split, palette=palette)
    kinds = None
    from torch import nn

    first = next((n for n, m in handle.model.named_modules() if isinstance(m, nn.Conv2d)), None)
    if layer == first:
        from convlens.inspect.kinds import classify_filters

        kinds = classify_filters(conv_weight(handle.model, layer), layer)
        fig.caption += f" {kinds.summary()}."
    return FeatVisView(vis, report, rel, fig, kinds)


def filter_kinds(source: Source, layer: str | None = None, *, palette: PaletteName = "default"
                 ) -> tuple[FilterKinds, Explained]:
    """The kinds of ``layer``'s filters (default: the first conv layer) and a figure of them."""
    from torch import nn

    from convlens.inspect.kinds import classify_filters
    from convlens.viz.featvis import kinds_figure

    m = _model(source)
    if layer is None:
        layer = next((n for n, mod in m.named_modules() if isinstance(mod, nn.Conv2d)), None)
        if layer is None:
            raise LayerError("the model has no Conv2d layer whose filters could be classified")
    w = conv_weight(m, layer)
    kinds = classify_filters(w, layer)
    fig = kinds_figure(w, [k.kind for k in kinds], [k.angle for k in kinds], [k.r2 for k in kinds], layer,
                       kinds.summary(), palette=palette)
    return kinds, fig


@dataclass
class EvolutionView:
    """The evolution animation of a run's first conv layer (see :func:`evolution_view`)."""

    steps: list[int]
    kinds: list[FilterKinds]
    change: list[float]
    figure: Explained
    gif: bytes
    source: str  # "snapshots", "tracking", or "tracking and snapshots"

    def to_dict(self) -> dict[str, object]:
        return {"steps": self.steps, "source": self.source, "weight_change_from_start": self.change,
                "oriented": [k.n_oriented for k in self.kinds], "counts": [k.counts() for k in self.kinds],
                "start": self.kinds[0].to_dict(), "end": self.kinds[-1].to_dict(),
                "caption": self.figure.caption, "alt": self.figure.alt}


def evolution_view(run: Run, *, max_frames: int = 40, palette: PaletteName = "default") -> EvolutionView:
    """conv1 from step 0 to the end as an animation, with the number of edge-like filters
    and the weight change over the steps. Uses the run's filter snapshots and, when it
    was trained with ``--track``, its tracking records too; at most ``max_frames`` evenly
    spaced steps (the first and the last always)."""
    from convlens.inspect.kinds import classify_filters
    from convlens.train.tracking import TRACKING, load_tracking
    from convlens.viz.featvis import evolution_animation

    snaps, layer = run.snapshots(), run.snapshot_layer
    source = "snapshots"
    if (Path(run.path) / TRACKING).is_dir():  # the tracker's records, with the snapshots between them
        doc, arrays = load_tracking(run.path)
        tracked = {int(key.split("_")[-1]): v for key, v in arrays.items() if key.startswith("filters/")}
        if layer in ("", doc.get("layer")):
            snaps = {**snaps, **tracked}
            layer = str(doc.get("layer") or "conv1")
            source = "tracking and snapshots" if len(snaps) > len(tracked) else "tracking"
    if not snaps:
        raise ConfigError(f"run {run.path} recorded no filter snapshots; train it with snapshot_every > 0 or --track")
    steps = sorted(snaps)
    if len(steps) > max_frames:
        steps = sorted({steps[round(i * (len(steps) - 1) / (max_frames - 1))] for i in range(max_frames)})
    weights = {s: snaps[s].double().numpy() for s in steps}
    w0 = weights[steps[0]]
    base = float(np.linalg.norm(w0)) or 1.0
    change = [float(np.linalg.norm(weights[s] - w0)) / base for s in steps]
    kinds = [classify_filters(weights[s], layer) for s in steps]
    fig, gif = evolution_animation(weights, [k.n_oriented for k in kinds], change, layer,
                                   start_summary=kinds[0].summary(), end_summary=kinds[-1].summary(),
                                   palette=palette)
    fig.caption += f" At step {steps[0]}: {kinds[0].summary()}. At step {steps[-1]}: {kinds[-1].summary()}."
    return EvolutionView(steps, kinds, change, fig, gif, source)
