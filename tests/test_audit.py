"""convlens.audit: the variants against their definition, its numbers against direct
computation on other architectures, the model left as it came, bad input, and the
acceptance runs on Patch-MNIST (biased and control) and Colored-MNIST trained with
views.train_run (what `convlens train` runs) from the directories `make-dataset` writes."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from _helpers import cli_call, mnist_full, one_thread
from convlens import views
from convlens.data.dataset import ImageDataset
from convlens.data.synthetic import colored_mnist, load_masks, patch_mnist
from convlens.diagnose import audit
from convlens.diagnose._variants import partners
from convlens.errors import ConfigError, DataError

# --- small models and data -----------------------------------------------------------------------


class ResidualNet(nn.Module):
    """Not a seed-cnn: a residual block, global average pooling, 3 input channels."""

    def __init__(self, channels: int = 3, classes: int = 4) -> None:
        super().__init__()
        self.stem = nn.Conv2d(channels, 8, 3, padding=1)
        self.block = nn.Sequential(nn.Conv2d(8, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, padding=1))
        self.head = nn.Linear(8, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.stem(x))
        h = torch.relu(h + self.block(h))
        return self.head(h.mean((2, 3)))


def random_data(n: int = 40, c: int = 3, h: int = 12, w: int = 12, classes: int = 4, seed: int = 0) -> ImageDataset:
    g = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (n, c, h, w), generator=g, dtype=torch.int64).to(torch.uint8)
    labels = torch.arange(n) % classes
    return ImageDataset(images, labels, tuple(f"c{i}" for i in range(classes)), "toy", "test", "memory",
                        (0.5,) * c, (0.25,) * c)


def random_masks(data: ImageDataset, seed: int = 1) -> np.ndarray:
    n, _, h, w = data.images.shape
    return np.random.default_rng(seed).random((n, h, w)) < 0.4


def by_definition(x: np.ndarray, m: np.ndarray, labels: np.ndarray, seed: int, fill: int = 0) -> dict[str, np.ndarray]:
    """The variants written out image by image, pixel by pixel, in NumPy."""
    j = partners(labels, seed)
    out = {k: np.empty_like(x) for k in ("original", "only-foreground", "only-background", "mixed-same", "mixed-rand")}
    for i in range(len(x)):
        for a in range(x.shape[2]):
            for b in range(x.shape[3]):
                fg = m[i, a, b]
                out["original"][i, :, a, b] = x[i, :, a, b]
                out["only-foreground"][i, :, a, b] = x[i, :, a, b] if fg else fill
                out["only-background"][i, :, a, b] = fill if fg else x[i, :, a, b]
                for name in ("mixed-same", "mixed-rand"):
                    p = j[name][i]
                    out[name][i, :, a, b] = x[i, :, a, b] if fg else (fill if m[p, a, b] else x[p, :, a, b])
    if x.shape[1] == 3:
        out["grayscale"] = np.repeat(np.round(x.astype(np.float64).mean(1, keepdims=True)), 3, 1).astype(np.uint8)
        out["swap-red-green"] = x[:, [1, 0, 2]]
        out["swap-red-blue"] = x[:, [2, 1, 0]]
        out["swap-green-blue"] = x[:, [0, 2, 1]]
    return out


# --- variants, numbers, state ----------------------------------------------------------------------


def test_partners_are_same_class_and_never_self() -> None:
    labels = np.array([0, 0, 1, 1, 1, 2, 0, 3])  # classes 2 and 3 have one image: its own partner
    j = partners(labels, 5)
    assert (labels[j["mixed-same"]] == labels).all()
    single = np.isin(labels, [2, 3])
    assert (j["mixed-same"] != np.arange(8))[~single].all() and (j["mixed-same"] == np.arange(8))[single].all()
    assert sorted(j["mixed-same"]) == list(range(8)) and sorted(j["mixed-rand"]) == list(range(8))


@pytest.mark.parametrize("fill", [0, 200])
def test_variant_images_equal_their_definition_pixel_by_pixel(fill: int) -> None:
    data = random_data()
    masks = random_masks(data)
    torch.manual_seed(0)
    result = audit(ResidualNet(), data, masks=masks, seed=7, fill=fill, examples=len(data))
    assert result.examples == sorted(result.examples, key=lambda i: (i >= 4, i))  # one per class first
    order = np.asarray(result.examples)
    expect = by_definition(data.images.numpy(), masks, data.labels.numpy(), seed=7, fill=fill)
    assert list(result.example_images) == list(expect)
    for name, images in expect.items():
        assert np.array_equal(result.example_images[name], images[order]), name


def _direct(model: nn.Module, data: ImageDataset, masks: np.ndarray, seed: int) -> tuple[dict[str, float], float]:
    """Accuracy on each variant and the pooled Grad-CAM background share, computed directly."""
    from convlens.explain import cam

    variants = by_definition(data.images.numpy(), masks, data.labels.numpy(), seed)
    model.eval()
    accs = {}
    with torch.no_grad():
        for name, x in variants.items():
            pred = model(data.normalise(torch.from_numpy(x))).argmax(1)
            accs[name] = float((pred == data.labels).double().mean())
        pred = model(data.normalise(data.images)).argmax(1)
    maps = cam(model, data.normalise(data.images), method="gradcam", target=pred).maps.double().clamp_min(0)
    bg = torch.from_numpy(~masks).double()
    return accs, float((maps * bg).sum() / maps.sum())


@pytest.mark.parametrize("arch", ["small-bn-cnn", "residual-rgb"])
def test_numbers_equal_a_direct_computation_on_other_architectures(arch: str) -> None:
    from convlens.models import build_model

    torch.manual_seed(0)
    if arch == "small-bn-cnn":  # 1 channel, batch norm, dropout
        model = build_model("small-bn-cnn", input_size=(12, 12), num_classes=4)
        data = random_data(c=1)
    else:
        model, data = ResidualNet(), random_data(c=3)
    masks = random_masks(data)
    result = audit(model, data, masks=masks, seed=3, batch_size=16)
    accs, mass = _direct(model, data, masks, seed=3)
    assert result.variants == pytest.approx(accs, abs=1e-12)
    assert result.bg_gap == pytest.approx(accs["mixed-same"] - accs["mixed-rand"])
    assert result.background_mass == pytest.approx(mass, rel=1e-5)
    assert [c.layer for c in result.channels] == [n for n, m in model.named_modules() if isinstance(m, nn.Conv2d)][-2:]
    d = json.loads(json.dumps(result.to_dict()))
    assert d["variants"] == pytest.approx(accs) and d["bg_gap"] == pytest.approx(result.bg_gap)


def test_channel_shares_equal_a_direct_computation() -> None:
    import torch.nn.functional as F

    torch.manual_seed(1)
    model, data = ResidualNet(), random_data(n=12, c=3)
    masks = random_masks(data)
    result = audit(model, data, masks=masks, channel_layers=["stem"])
    with torch.no_grad():
        a = model.stem(data.normalise(data.images)).double()
        a0 = model.stem(data.normalise(torch.zeros(1, 3, 12, 12, dtype=torch.uint8))).double()
    e = (a - a0) ** 2
    bg = 1 - F.adaptive_avg_pool2d(torch.from_numpy(masks).double()[:, None], (12, 12))
    shares = ((e * bg).sum((0, 2, 3)) / e.sum((0, 2, 3))).numpy()
    (check,) = result.channels
    assert check.shares == pytest.approx(shares, rel=1e-9)
    assert check.driven == [c for c in np.argsort(-shares, kind="stable") if shares[c] > max(0.5, check.area)]


def test_the_model_is_left_as_it_came() -> None:
    from convlens.models import build_model

    torch.manual_seed(0)
    model = build_model("small-bn-cnn", input_size=(12, 12), num_classes=4)
    model.train()
    next(m for m in model.modules() if isinstance(m, nn.BatchNorm2d)).eval()  # mixed flags come back mixed
    flags = {n: m.training for n, m in model.named_modules()}
    first = next(model.parameters())
    first.requires_grad_(False)
    last = list(model.parameters())[-1]
    last.grad = torch.full_like(last, 0.5)
    handle = model.register_forward_hook(lambda *a: None)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    audit(model, random_data(c=1), masks=random_masks(random_data(c=1)))
    assert {n: m.training for n, m in model.named_modules()} == flags
    assert not first.requires_grad and all(p.requires_grad for p in list(model.parameters())[1:])
    assert torch.equal(last.grad, torch.full_like(last, 0.5)) and all(
        p.grad is None for p in list(model.parameters())[:-1])
    assert all(torch.equal(state[k], v) for k, v in model.state_dict().items())  # BN statistics too
    assert sum(len(m._forward_hooks) + len(m._forward_pre_hooks) + len(m._backward_hooks)
               for m in model.modules()) == 1
    handle.remove()


# --- bad input -------------------------------------------------------------------------------------


class NotAClassifier(nn.Module):
    def __init__(self, shape: tuple[int, ...]) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 2, 3)
        self.shape = shape

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x).mean() * torch.ones(x.shape[0], *self.shape)


def test_bad_input_gets_one_clear_line(tmp_path: Path) -> None:
    data = random_data()
    good = random_masks(data)
    model = ResidualNet()
    cases = [
        (dict(masks=good[:-1]), DataError, r"masks have shape \(39, 12, 12\) but the data holds 40 images of 12×12"),
        (dict(masks=good.astype(np.uint8)), DataError, "masks must be boolean .* got uint8; convert them"),
        (dict(masks=[[True]]), DataError, "masks must be a boolean array N×H×W or a .npy file, got list"),
        (dict(masks=tmp_path / "none.npy"), DataError, "masks file .*none.npy does not exist"),
    ]
    (tmp_path / "junk.npy").write_text("not numpy")
    cases.append((dict(masks=tmp_path / "junk.npy"), DataError, "is not a NumPy .npy array"))
    for kwargs, kind, message in cases:
        with pytest.raises(kind, match=message):
            audit(model, data, **kwargs)
    with pytest.raises(ConfigError, match=r"returned \(8, 4, 1\) for a batch of 8 images; .* scores N × classes"):
        audit(NotAClassifier((4, 1)), data, batch_size=8)
    with pytest.raises(ConfigError, match="the model scores 7 classes but the data has 4"):
        audit(NotAClassifier((7,)), data)
    with pytest.raises(DataError, match="is empty: there is nothing to audit"):
        audit(model, data.subset(torch.arange(0)))
    with pytest.raises(DataError, match="audit needs an ImageDataset"):
        audit(model, data.images)  # type: ignore[arg-type]
    np.save(tmp_path / "ok.npy", good)
    assert audit(model, data, masks=tmp_path / "ok.npy").masks_from.startswith("given: ")


# --- the test beds ---------------------------------------------------------------------------------

STEPS = 80  # a few epochs' worth of a cheap run: the shortcut is learned, the digits well enough


@pytest.fixture(scope="module")
def beds(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple]:
    """Patch-MNIST rho=0.95 and 0.1 and Colored-MNIST written as directories, a seed-cnn
    trained on each from seed 0 (views.train_run reading --data-dir), each audited once."""
    from convlens.train import TrainConfig

    root = tmp_path_factory.mktemp("beds")
    source = mnist_full()
    out = {}
    for name, bed in (("biased", patch_mnist(0.95, seed=0, source=source)),
                      ("control", patch_mnist(0.1, seed=0, source=source)),
                      ("colour", colored_mnist(seed=0, source=source))):
        d = bed.save(root / name)
        with one_thread():
            run = views.train_run(root / f"run-{name}", data_dir=d, device="cpu",
                                  config=TrainConfig(steps=STEPS, seed=0, augment_shift=0))
            test = views.dataset_for(run, "test", data_dir=d)
            result = audit(run.model, test, masks=load_masks(d, "test-foreground"))
        out[name] = (d, run, result)
    return out


def test_patch_mnist_audit_flags_the_biased_model_and_not_the_control(beds: dict[str, tuple]) -> None:
    biased, control = beds["biased"][2], beds["control"][2]
    assert biased.biased and "likely background-biased" in biased.verdict
    assert not control.biased and control.verdict.startswith("no sign of background or colour bias")
    assert biased.bg_gap - control.bg_gap >= 0.30
    assert biased.background_mass - control.background_mass >= 0.3
    assert abs(control.bg_gap) <= 0.03
    assert biased.variants["only-background"] > 0.9  # the patch alone gives the class


def test_colored_mnist_reversed_environment_and_colour_named(beds: dict[str, tuple]) -> None:
    _, run, result = beds["colour"]
    assert run.test_accuracy < 0.5  # the reversed environment
    assert result.biased and "colour" in result.verdict
    reason = next(r for r in result.reasons if r.startswith("colour shortcut"))
    assert "red and green swapped" in reason and "red images" in reason and "green images" in reason
    assert result.colour is not None and result.colour["strongest"] == "swap-red-green"
    assert result.variants["swap-red-green"] > 0.5 > result.variants["original"]


def test_cli_audit_writes_everything_once(beds: dict[str, tuple], tmp_path: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    d, run, result = beds["biased"]
    out = tmp_path / "audit"
    code, stdout, err = cli_call(capsys, "audit", str(run.path), "--out", str(out), "--data-dir", str(d))
    assert code == 0, err
    assert "likely background-biased" in stdout.replace("\n", " ")
    report = json.loads((out / "audit.json").read_text())
    assert report["biased"] and report["variants"] == pytest.approx(result.variants)
    assert report["bg_gap"] == pytest.approx(result.bg_gap) and report["masks"].endswith("test-foreground.npy")
    names = sorted(p.name for p in out.iterdir())
    assert names == sorted(["audit.json", *(f"{s}.{e}" for s in views.AUDIT_FIGURES for e in ("png", "svg", "json"))])
    for stem in views.AUDIT_FIGURES:
        side = json.loads((out / f"{stem}.json").read_text())
        assert side["caption"] and side["alt"]
    before = {p.name: p.stat().st_mtime_ns for p in out.iterdir()}
    code, _, err = cli_call(capsys, "audit", str(run.path), "--out", str(out), "--data-dir", str(d))
    assert code == 1 and len(err.strip().splitlines()) == 1 and "--force" in err
    code, _, err = cli_call(capsys, "audit", str(run.path), "--out", str(tmp_path / "b"), "--masks",
                            str(d / "train-foreground.npy"), "--data-dir", str(d))
    assert code == 1 and "masks have shape (7500, 28, 28) but the data holds 1500 images" in err
    assert not (tmp_path / "b").exists()
    assert {p.name: p.stat().st_mtime_ns for p in out.iterdir()} == before


def test_cli_audit_of_a_user_model(beds: dict[str, tuple], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    d = beds["biased"][0]
    out = tmp_path / "user"
    code, _, err = cli_call(capsys, "audit", "--model", "zoo:SeedCNN", "--data-dir", str(d), "--out", str(out),
                                 "--n", "200")
    assert code == 0, err
    report = json.loads((out / "audit.json").read_text())
    assert report["dataset"] == "patch-mnist" and report["n"] == 200
    assert set(report["variants"]) == {"original", "only-foreground", "only-background", "mixed-same", "mixed-rand"}
