"""convlens.diagnose against independent oracles: brute-force counts, a direct NumPy ECE,
a brute-force cosine search, confident learning written out in NumPy, and the explain
engine's own CAMs and deletion curves; bad input; the model left as it came."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn

import convlens
from _helpers import mnist_small, one_thread, small_run
from convlens.diagnose import BINS, Diagnosis, diagnose
from convlens.diagnose.core import confident_learning
from convlens.errors import ConfigError, ConvlensError, DataError
from zoo import assert_same_state, model_state, seeded


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> nn.Module:
    import copy

    return copy.deepcopy(small_run(tmp_path_factory).run.model).eval()  # the shared run stays as it is


@pytest.fixture(scope="module")
def data() -> tuple[Any, Any]:
    return mnist_small()


@pytest.fixture(scope="module")
def result(trained: nn.Module, data: tuple[Any, Any]) -> Diagnosis:
    train, test = data
    with one_thread():
        return diagnose(trained, test, train=train.subset(range(300)), k=9, batch_size=64, progress=False)


def _probs(model: nn.Module, x: torch.Tensor) -> np.ndarray:
    with torch.no_grad():
        return model.eval()(x).softmax(1).double().numpy()


# --- oracles -----------------------------------------------------------------------------------


def test_confusion_and_per_class_scores_equal_a_brute_force_count(trained: nn.Module, data: tuple[Any, Any],
                                                                  result: Diagnosis) -> None:
    _, test = data
    p = _probs(trained, test.normalise(test.images))
    pred, y = p.argmax(1), test.labels.numpy()
    cm = np.zeros((10, 10), dtype=np.int64)
    for t, q in zip(y, pred, strict=True):  # one input at a time: the oracle
        cm[t, q] += 1
    assert result.confusion.dtype == np.int64
    np.testing.assert_array_equal(result.confusion, cm)
    assert result.n == len(test) and result.accuracy == pytest.approx(float((pred == y).mean()), abs=1e-12)
    for c in range(10):
        tp, fp, fn = cm[c, c], cm[:, c].sum() - cm[c, c], cm[c].sum() - cm[c, c]
        prec = tp / (tp + fp) if tp + fp else 0.0
        rec = tp / (tp + fn) if tp + fn else 0.0
        assert result.precision[c] == pytest.approx(prec)
        assert result.recall[c] == pytest.approx(rec)
        assert result.f1[c] == pytest.approx(2 * prec * rec / (prec + rec) if prec + rec else 0.0)
        assert result.support[c] == (y == c).sum()
    top5 = np.argsort(-p, axis=1)[:, :5]
    assert result.top_k == 5
    assert result.top_k_accuracy == pytest.approx(float((top5 == y[:, None]).any(1).mean()), abs=1e-12)
    assert result.n_errors == int((pred != y).sum()) > 0  # the small run makes mistakes to show


def test_ece_equals_a_direct_numpy_computation(trained: nn.Module, data: tuple[Any, Any], result: Diagnosis) -> None:
    _, test = data
    p = _probs(trained, test.normalise(test.images))
    conf, correct = p.max(1), (p.argmax(1) == test.labels.numpy())
    ece, edges = 0.0, np.linspace(0, 1, 16)
    for b in range(15):
        inside = (conf > edges[b]) & (conf <= edges[b + 1])
        if inside.any():
            ece += inside.mean() * abs(correct[inside].mean() - conf[inside].mean())
            assert result.reliability.counts[b] == inside.sum()
            assert result.reliability.accuracy[b] == pytest.approx(correct[inside].mean())
            assert result.reliability.confidence[b] == pytest.approx(conf[inside].mean(), abs=1e-6)
        else:
            assert result.reliability.counts[b] == 0 and np.isnan(result.reliability.accuracy[b])
    assert BINS == 15 and result.ece == pytest.approx(ece, abs=1e-6)


def test_gallery_picks_and_probabilities_follow_their_definitions(trained: nn.Module, data: tuple[Any, Any],
                                                                  result: Diagnosis) -> None:
    _, test = data
    p = _probs(trained, test.normalise(test.images))
    conf, pred, y = p.max(1), p.argmax(1), test.labels.numpy()
    wrong, right = np.flatnonzero(pred != y), np.flatnonzero(pred == y)
    srt = np.sort(p, 1)
    margin = srt[:, -1] - srt[:, -2]
    expect = {
        "confident_wrong": wrong[np.argsort(-conf[wrong], kind="stable")][:3],
        "unsure_right": right[np.argsort(conf[right], kind="stable")][:3],
        "ambiguous": np.argsort(margin, kind="stable")[:3],
    }
    for kind, idx in expect.items():
        items = result.errors[kind]
        assert [i.index for i in items] == idx.tolist(), kind
        for item in items:
            top3 = np.argsort(-p[item.index])[:3]
            assert [c for c, _ in item.top3] == top3.tolist()
            np.testing.assert_allclose([q for _, q in item.top3], p[item.index, top3], atol=1e-6)
            assert item.label == y[item.index] and item.predicted == pred[item.index]
            assert item.margin == pytest.approx(margin[item.index], abs=1e-6)
    assert all(not i.correct for i in result.errors["confident_wrong"])
    assert all(i.correct for i in result.errors["unsure_right"])


def test_gallery_maps_are_the_engines_cams_on_one_scale(trained: nn.Module, data: tuple[Any, Any],
                                                        result: Diagnosis) -> None:
    from convlens.explain import auc, perturbation_curves

    _, test = data
    item = result.errors["confident_wrong"][0]
    x = test.normalise(test.images[item.index:item.index + 1])
    np.testing.assert_allclose(item.x, x[0].numpy())
    pred = convlens.cam(trained, x, target=item.predicted).maps[0].numpy()
    true = convlens.cam(trained, x, target=item.label).maps[0].numpy()
    scale = max(pred.max(), true.max())
    np.testing.assert_allclose(item.cam_pred, pred / scale, atol=1e-5)
    np.testing.assert_allclose(item.cam_true, true / scale, atol=1e-5)
    np.testing.assert_allclose(item.cam_difference, (pred - true) / scale, atol=1e-5)
    assert result.layers == ("pool2",) and result.method == "gradcam"
    black = (0.0 - torch.tensor(test.mean)) / torch.tensor(test.std)
    curve = perturbation_curves(trained, x, torch.from_numpy(item.cam_pred)[None], item.predicted, steps=16,
                                baseline=black)
    assert item.deletion == pytest.approx(float(auc(curve)[0]), abs=1e-5)
    right = result.errors["unsure_right"][0]
    np.testing.assert_array_equal(right.cam_pred, right.cam_true)
    assert not right.cam_difference.any()


def test_neighbours_equal_a_brute_force_cosine_search(trained: nn.Module, data: tuple[Any, Any],
                                                      result: Diagnosis) -> None:
    train, _ = data
    pool = train.subset(range(300))
    assert result.feature_layer == "fc"
    *stages, head = trained.children()
    assert head is trained.get_submodule("fc")

    def fc_input(x: torch.Tensor) -> torch.Tensor:  # SmallCNN.forward, written out
        with torch.no_grad():
            for module in stages:
                x = module(x)
        return torch.flatten(x, 1).double()

    trained.eval()
    feats = [fc_input(pool.normalise(pool.images))]
    feats += [fc_input(torch.from_numpy(np.stack([i.x for i in items]))) for items in result.errors.values()]
    f_train = feats[0].numpy()
    f_train /= np.linalg.norm(f_train, axis=1, keepdims=True)
    queries = np.concatenate([f.numpy() for f in feats[1:]])
    items = [i for kind in result.errors.values() for i in kind]
    for q, item in zip(queries, items, strict=True):
        sims = f_train @ (q / np.linalg.norm(q))
        best = np.argsort(-sims, kind="stable")[:5]
        assert [n.index for n in item.neighbours] == best.tolist()
        np.testing.assert_allclose([n.similarity for n in item.neighbours], sims[best], atol=1e-9)
        assert [n.label for n in item.neighbours] == pool.labels[best].tolist()


def test_confident_learning_written_out_in_numpy() -> None:
    rng = np.random.default_rng(3)
    n, k = 400, 4
    logits = rng.normal(size=(n, k)) * 2
    labels = rng.integers(0, k, n)
    logits[np.arange(n), labels] += 2.5  # mostly right, with doubts
    p = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    suspects, thresholds = confident_learning(torch.from_numpy(p).float(), torch.from_numpy(labels))
    pf = torch.from_numpy(p).float().double().numpy()  # what the function sees
    t = np.array([pf[labels == j, j].mean() for j in range(k)])  # Northcutt et al., eq. 2
    np.testing.assert_allclose(thresholds.numpy(), t, rtol=1e-12)
    joint = np.zeros((k, k))
    for i in range(n):  # the confident joint, one input at a time
        above = [j for j in range(k) if pf[i, j] >= t[j]]
        if above:
            joint[labels[i], max(above, key=lambda c: pf[i, c])] += 1
    calibrated = joint / joint.sum(1, keepdims=True) * np.bincount(labels, minlength=k)[:, None]
    picked: dict[int, tuple[float, int]] = {}
    for i in range(k):  # prune by noise rate: the largest margins p_j - p_i of each cell
        members = np.flatnonzero(labels == i)
        for j in range(k):
            take = round(calibrated[i, j])
            if i == j or take == 0:
                continue
            margin = pf[members, j] - pf[members, i]
            for m in members[np.argsort(-margin, kind="stable")[:take]]:
                mj = pf[m, j] - pf[m, i]
                if m not in picked or mj > picked[m][0]:
                    picked[m] = (mj, j)
    expected = sorted(picked, key=lambda m: (pf[m, labels[m]], m))
    assert [(s.index, s.suspected) for s in suspects] == [(m, picked[m][1]) for m in expected]
    assert len(suspects) > 5
    np.testing.assert_allclose([s.self_confidence for s in suspects], [pf[m, labels[m]] for m in expected],
                               rtol=1e-12)


def test_cells_hold_their_inputs_and_mean_difference(trained: nn.Module, data: tuple[Any, Any],
                                                     result: Diagnosis) -> None:
    _, test = data
    pred, y = result.predictions, result.labels
    counts = [c.count for c in result.cells]
    assert counts == sorted(counts, reverse=True) and sum(counts) == result.n_errors
    for c in result.cells:
        assert c.items == np.flatnonzero((y == c.true) & (pred == c.predicted)).tolist()
    top = result.cells[0]
    assert top.mean_cam_difference is not None and top.averaged == min(16, top.count)
    conf = result.probabilities.max(1)
    members = np.array(top.items)[np.argsort(-conf[top.items], kind="stable")][:top.averaged]
    x = test.normalise(test.images[torch.as_tensor(members)])
    pm = convlens.cam(trained, x, target=torch.full((len(members),), top.predicted)).maps.numpy()
    tm = convlens.cam(trained, x, target=torch.full((len(members),), top.true)).maps.numpy()
    scale = np.maximum(pm.max((1, 2)), tm.max((1, 2)))[:, None, None]
    diff = np.divide(pm - tm, scale, out=np.zeros_like(pm), where=scale > 0)  # two zero maps differ by 0
    np.testing.assert_allclose(top.mean_cam_difference, diff.mean(0), atol=1e-5)
    assert result.cell(top.true, top.predicted) is top and result.cell(0, 0).count == 0


def test_to_dict_is_json_and_keeps_the_numbers(result: Diagnosis) -> None:
    d = json.loads(json.dumps(result.to_dict()))
    assert d["confusion"] == result.confusion.tolist()
    assert d["ece"] == pytest.approx(result.ece, abs=1e-6)
    assert [e["index"] for e in d["errors"]["confident_wrong"]] == [i.index for i in result.errors["confident_wrong"]]
    assert len(d["suspected_label_errors"]) == len(result.suspected_label_errors)
    with_maps = json.loads(json.dumps(result.to_dict(maps=True)))
    assert np.asarray(with_maps["errors"]["ambiguous"][0]["cam_pred"]).shape == (28, 28)


# --- label flips --------------------------------------------------------------------------------


def test_label_flips_are_found_among_the_suspects(tmp_path: Path) -> None:
    from _helpers import mnist_full
    from convlens.data.synthetic import label_flip
    from convlens.models import get_config
    from convlens.train import TrainConfig
    from convlens.train.loop import train

    full_train, full_test = mnist_full()
    with one_thread():
        run = train(get_config("seed-cnn"), full_train, full_test.subset(range(256)), tmp_path / "run",
                    TrainConfig(epochs=2, seed=0), device="cpu")
        bed = label_flip(50, split="test", seed=12, source=(full_train, full_test))  # the test bed users get
        noisy, flipped = bed.splits["test"], bed.details["flipped"]
        labels = noisy.labels
        d = diagnose(run.model, noisy, k=0, progress=False)
    assert len(flipped) == 50 and int((labels != full_test.labels).sum()) == 50
    top = {s.index for s in d.suspected_label_errors[:100]}
    found = len(top & set(flipped))
    assert found >= 40, (found, d.accuracy)
    assert all(s.given == int(labels[s.index]) for s in d.suspected_label_errors)


# --- other architectures, bad input, the model as it came ----------------------------------------


class PlainNet(nn.Module):
    """A plain-torch classifier on 3-channel 20×20 inputs, 4 classes."""

    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(3, 6, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(6, 8, 3),
                                  nn.ReLU())
        self.hidden = nn.Linear(8 * 8 * 8, 16)
        self.out = nn.Linear(16, 4)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.hidden(self.body(x).flatten(1)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(self.embed(x))


def test_a_plain_rgb_model_on_tensors_and_batches() -> None:
    torch.manual_seed(0)
    model = PlainNet()
    seeded(model, 1)
    x = torch.randn(90, 3, 20, 20)
    y = torch.randint(0, 4, (90,))
    xt = torch.randn(70, 3, 20, 20)
    d = diagnose(model, (x, y), train=(xt, torch.randint(0, 4, (70,))), k=6, batch_size=32, progress=False)
    with torch.no_grad():
        p = model(x).softmax(1)
        cm = np.zeros((4, 4), dtype=np.int64)
        np.add.at(cm, (y.numpy(), p.argmax(1).numpy()), 1)
        np.testing.assert_array_equal(d.confusion, cm)
        ft = model.embed(xt).double().numpy()
    assert d.feature_layer == "out" and d.classes == ("0", "1", "2", "3")
    ft /= np.linalg.norm(ft, axis=1, keepdims=True)
    for item in d.errors["ambiguous"]:
        with torch.no_grad():
            q = model.embed(torch.from_numpy(item.x)[None]).double().numpy()[0]
        best = np.argsort(-(ft @ (q / np.linalg.norm(q))), kind="stable")[:5]
        assert [n.index for n in item.neighbours] == best.tolist()
    assert d.errors["ambiguous"][0].cam_pred.shape == (20, 20)
    # the same data as a list of (x, y) batches (read twice: the pass, then the gallery's inputs)
    batches = [(x[i:i + 25], y[i:i + 25]) for i in range(0, 90, 25)]
    d2 = diagnose(model, batches, k=6, progress=False)
    np.testing.assert_array_equal(d2.confusion, cm)
    for kind in d.errors:
        assert [i.index for i in d2.errors[kind]] == [i.index for i in d.errors[kind]]
        np.testing.assert_allclose(d2.errors[kind][0].cam_pred, d.errors[kind][0].cam_pred, atol=1e-6)


def test_a_registered_batchnorm_architecture_on_mnist(data: tuple[Any, Any]) -> None:
    from convlens.models import build_model

    train, test = data
    model = seeded(build_model("small-bn-cnn"), 2)
    small = test.subset(range(64))
    d = diagnose(model, small, train=train.subset(range(64)), k=3, progress=False)
    with torch.no_grad():
        pred = model(small.normalise(small.images)).argmax(1).numpy()
    cm = np.zeros((10, 10), dtype=np.int64)
    np.add.at(cm, (small.labels.numpy(), pred), 1)
    np.testing.assert_array_equal(d.confusion, cm)
    assert all(len(i.neighbours) == 5 for items in d.errors.values() for i in items)


def test_the_model_is_left_as_it_came(data: tuple[Any, Any]) -> None:
    from convlens.models import build_model

    train, test = data
    model = seeded(build_model("small-bn-cnn"), 4).train()
    model.get_submodule(next(n for n, m in model.named_modules() if isinstance(m, nn.Conv2d))).requires_grad_(False)
    out = model(test.normalise(test.images[:4]))
    out.sum().backward()
    before = model_state(model)
    diagnose(model, test.subset(range(40)), train=train.subset(range(40)), k=6, progress=False)
    assert_same_state(before, model_state(model))


def _one_line(exc: pytest.ExceptionInfo[Any], *fragments: str) -> None:
    text = str(exc.value)
    assert "\n" not in text and text
    for f in fragments:
        assert f in text, text


def test_bad_input_gets_one_clear_line(data: tuple[Any, Any]) -> None:
    _, test = data
    small = test.subset(range(20))

    class Flat(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x.flatten()  # not N × classes

    e: pytest.ExceptionInfo[Any]
    with pytest.raises(ConfigError) as e:
        diagnose(Flat(), small)
    _one_line(e, "shape (15680,)", "N × classes")
    seven = nn.Sequential(nn.Flatten(), nn.Linear(784, 7))
    with pytest.raises(ConfigError) as e:
        diagnose(seven, small)
    _one_line(e, "7 scores per input", "10 classes")
    with pytest.raises(DataError) as e:
        diagnose(seven, (torch.randn(5, 1, 28, 28), torch.tensor([0, 1, 2, 3, 9])))
    _one_line(e, "label 9", "classes 0..6")
    with pytest.raises(DataError) as e:
        diagnose(seven, test.subset(torch.empty(0, dtype=torch.long)))
    _one_line(e, "empty")
    with pytest.raises(ConfigError) as e:
        diagnose(seven, iter([(torch.randn(2, 1, 28, 28), torch.tensor([0, 1]))]))
    _one_line(e, "one-shot iterator")
    with pytest.raises(ConfigError) as e:
        diagnose(seven, small, k=-1)
    _one_line(e, "k must be")
    with pytest.raises(ConvlensError) as e:
        diagnose(seven, small, method="gradcan")
    _one_line(e, "gradcam")


def test_a_dataset_without_errors_says_so(trained: nn.Module, data: tuple[Any, Any]) -> None:
    from convlens.viz.diagnose import cells_figure, gallery_figure

    _, test = data
    with torch.no_grad():
        right = (trained.eval()(test.normalise(test.images)).argmax(1) == test.labels).nonzero().squeeze(1)
    d = diagnose(trained, test.subset(right[:60]), k=6, progress=False)
    assert d.n_errors == 0 and d.errors["confident_wrong"] == [] and d.cells == []
    assert d.gallery_note is not None and d.gallery_note.startswith("no errors: all 60 inputs")
    assert len(d.errors["unsure_right"]) == 2 and d.suspected_label_errors == []
    fig = gallery_figure([], method="gradcam", n_inputs=60, note=d.gallery_note)
    assert "no errors" in fig.caption
    assert "no input is misclassified" in cells_figure([], method="gradcam", n_inputs=60).caption


def test_convlens_diagnose_is_callable_whichever_object_the_name_holds(trained: nn.Module,
                                                                       data: tuple[Any, Any]) -> None:
    import importlib

    _, test = data
    small = test.subset(range(30))
    package = importlib.import_module("convlens.diagnose")  # imported: Python may bind it as convlens.diagnose
    expected = diagnose(trained, small, k=0).confusion
    np.testing.assert_array_equal(package(trained, small, k=0).confusion, expected)
    np.testing.assert_array_equal(convlens.diagnose(trained, small, k=0).confusion, expected)
    assert isinstance(convlens.Diagnosis, type) and "diagnose" in convlens.__all__
