"""`convlens audit` (does the model look at the object or the background?) and
`convlens make-dataset` (test beds with known ground truth)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Literal

import click

from convlens.cli._app import app
from convlens.cli._common import (
    console,
    data_dir_option,
    device_option,
    figures_dest,
    force_option,
    method_option,
    model_source,
    open_source,
    palette_option,
)

if TYPE_CHECKING:
    from convlens.viz.palettes import PaletteName

AUDIT_JSON = "audit.json"


@app.command()
@model_source
@click.option("--split", type=click.Choice(["test", "train"]), default="test", show_default=True)
@click.option("--masks", type=click.Path(path_type=Path), default=None,
              help="Foreground masks: a .npy file of boolean N×H×W, True on the object [default: the data "
                   "directory's, else derived: brightest channel above 32, dilated by 2 pixels].")
@method_option
@click.option("--layer", default=None, help="Layer of the CAM [default: the last one with a spatial map].")
@click.option("--seed", type=int, default=0, show_default=True,
              help="Seed of the mixed variants' partners (and of the --n sample).")
@click.option("--n", type=click.IntRange(min=1), default=None,
              help="Audit a seeded random sample of this many images [default: the whole split].")
@palette_option
@data_dir_option
@device_option
@click.option("--out", type=click.Path(path_type=Path), default=None,
              help="Directory for the figures and audit.json [default: the run directory's figures/].")
@force_option
def audit(run: Path | None, spec: str | None, weights: Path | None, dataset: str, input_shape: str | None,
          split: Literal["test", "train"], masks: Path | None, method: str, layer: str | None, seed: int,
          n: int | None, palette: PaletteName, data_dir: Path | None, device: str, out: Path | None, force: bool) -> None:
    """Does RUN (or --model) look at the object or at the background (or at colour)?

    Accuracy on only-foreground, only-background, mixed-same and mixed-rand images (BG-Gap),
    the share of Grad-CAM and input-gradient mass on the background, the channels of the last
    conv layers that fire on the background, and a verdict; writes three figures and audit.json."""
    import json

    from convlens import views
    from convlens._atomic import write_files
    from convlens.viz.figure import figure_files

    h = open_source(run, spec, weights, dataset, input_shape, device)
    stems = list(views.AUDIT_FIGURES)
    dest = figures_dest(h, out, stems, force, files=(AUDIT_JSON,))
    view = views.audit_view(h, split=split, masks=masks, data_dir=data_dir, method=method, layer=layer, seed=seed,
                            n=n, palette=palette)
    content: dict[str, bytes] = {}
    for stem, fig in view.figures.items():
        files = figure_files(stem)
        sidecar = {"title": fig.title, "caption": fig.caption, "alt": fig.alt, "png": files[0], "svg": files[1],
                   "software": "convlens", "files": files[:2]}
        content[files[0]] = fig.png_bytes()
        content[files[1]] = fig.svg_bytes()
        content[files[2]] = (json.dumps(sidecar, indent=2) + "\n").encode()
    report = {"software": "convlens", "kind": "convlens-audit", "files": [AUDIT_JSON, *content], **view.to_dict()}
    content[AUDIT_JSON] = (json.dumps(report, indent=1, allow_nan=False, default=str) + "\n").encode()
    write_files(dest, content, overwrite=force)
    con = console()
    a = view.audit
    con.print(f"{view.data.name} {split} ({a.n:,} images; masks {a.masks_from})")
    for name, acc in a.variants.items():
        con.print(f"  {name:16s} {acc:7.2%}")
    con.print(f"BG-Gap: {a.bg_gap * 100:.1f} pp   background mass: {a.method} {a.background_mass:.1%}, "
              f"input gradient {a.gradient_mass:.1%}"
              + (f" ({a.cam_empty:,} images have no positive {a.method} value)" if a.cam_empty else ""))
    for c in a.channels:
        shown = ", ".join(str(ch) for ch in c.driven[:10]) + (" ..." if len(c.driven) > 10 else "")
        con.print(f"{c.layer}: {len(c.driven)} of {len(c.shares)} channels background-driven"
                  + (f" ({shown})" if c.driven else ""))
    con.print(("[bold red]" if a.biased else "[bold]") + a.verdict + "[/]")
    con.print(f"figures ({', '.join(view.figures)}) and {AUDIT_JSON}: [bold]{dest}[/]")


@app.command("make-dataset")
@click.argument("kind", type=click.Choice(["patch-mnist", "colored-mnist", "label-flip"]))
@click.option("--out", type=click.Path(path_type=Path), required=True, help="Directory to write the dataset into.")
@click.option("--rho", type=click.FloatRange(0, 1), default=0.95, show_default=True,
              help="patch-mnist: fraction of training images whose patch sits at their class's position "
                   "(0.1 with ten classes: the control, patch independent of the label).")
@click.option("--patch", type=click.IntRange(min=1), default=6, show_default=True, help="patch-mnist: patch size (pixels).")
@click.option("--test", "test_split", type=click.Choice(["aligned", "conflicting", "none"]), default="aligned",
              show_default=True, help="patch-mnist: which test split is the directory's test split.")
@click.option("--label-noise", type=click.FloatRange(0, 1), default=0.25, show_default=True,
              help="colored-mnist: probability that a label is flipped.")
@click.option("--k", type=click.IntRange(min=0), default=50, show_default=True, help="label-flip: labels to flip.")
@click.option("--split", type=click.Choice(["test", "train"]), default="test", show_default=True,
              help="label-flip: the split whose labels are flipped.")
@click.option("--seed", type=int, default=0, show_default=True)
@data_dir_option
@force_option
def make_dataset(kind: str, out: Path, rho: float, patch: int, test_split: Literal["aligned", "conflicting", "none"],
                 label_noise: float, k: int, split: Literal["test", "train"], seed: int, data_dir: Path | None,
                 force: bool) -> None:
    """Write a test bed made from MNIST (read from --data-dir) as IDX files, masks (.npy) and
    dataset.json, for every command's --data-dir: patch-mnist (a class-specific bright patch),
    colored-mnist (Arjovsky et al.'s colour shortcut), label-flip (k labels flipped at known indices)."""
    from convlens.data import synthetic

    synthetic.check_out(out, overwrite=force)  # before the work
    if kind == "patch-mnist":
        bed = synthetic.patch_mnist(rho, seed=seed, patch=patch, test=test_split, data_dir=data_dir)
    elif kind == "colored-mnist":
        bed = synthetic.colored_mnist(seed=seed, label_noise=label_noise, data_dir=data_dir)
    else:
        bed = synthetic.label_flip(k, split=split, seed=seed, data_dir=data_dir)
    path = bed.save(out, overwrite=force)
    con = console()
    con.print(f"{bed.title}: [bold]{path}[/]")
    for name, ds in bed.splits.items():
        c, hh, w = ds.shape
        con.print(f"  {name:12s} {len(ds):6,} images {c}×{hh}×{w}, {len(ds.classes)} classes")
    con.print(f"  masks: {', '.join(f'{n}.npy' for n in bed.masks)}")
    d = bed.details
    if kind == "patch-mnist":
        con.print(f"  patch {d['patch']}×{d['patch']} at its class's position in {d['train_aligned']:,} of "
                  f"{d['train_size']:,} training images (rho={d['rho']:g}); test split: {d['test']}")
    elif kind == "colored-mnist":
        con.print("  colour agrees with the label in " + ", ".join(
            f"{env} {share:.1%}" for env, share in d["colour_label_agreement"].items()))
    else:
        con.print(f"  {d['k']} {d['split']} labels flipped; indices in {d['split']}-flipped.npy")
    con.print(f"use it with: --data-dir {path}")
