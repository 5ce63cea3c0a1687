"""relearning (Diagnosing & Re-learning): k-means purity of each modality's features on the training and the
validation split gives alpha_m = tanh(lambda |P_train - P_val|), and every reinit_epoch epochs each encoder
moves to alpha_m theta_init + (1 - alpha_m) theta, the fusion head untouched."""

import math

import pytest
import torch

from engine.methods.relearning import kmeans, kmeans_pp, lloyd, min_max_scale, purity, strengths

from methodkit import THREE, Kit


def blobs(centres: list[list[float]], n: int, spread: float, seed: int = 0) -> torch.Tensor:
    """n rows around each centre, (len(centres) * n, d), in centre order."""
    g = torch.Generator().manual_seed(seed)
    c = torch.tensor(centres)
    return (c.repeat_interleave(n, 0) + spread * torch.randn(len(centres) * n, c.shape[1], generator=g))


def generator(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# -- the pieces on hand-made numbers -----------------------------------------------------------------
def test_min_max_scale_maps_every_column_onto_minus_one_to_one():
    z = torch.tensor([[0.0, 5.0, 2.0], [2.0, 7.0, 2.0], [1.0, 6.0, 2.0]])
    assert min_max_scale(z).tolist() == [[-1.0, -1.0, -1.0], [1.0, 1.0, -1.0], [0.0, 0.0, -1.0]]


def test_purity_counts_each_clusters_majority_class():
    clusters = torch.tensor([0, 0, 0, 1, 1, 2])
    y = torch.tensor([0, 0, 1, 1, 1, 2])
    assert purity(clusters, y, 3, 3).item() == pytest.approx(5 / 6)
    assert purity(torch.zeros(6, dtype=torch.long), y, 3, 3).item() == pytest.approx(3 / 6)  # one cluster: class 1
    assert purity(y, y, 3, 3).item() == 1.0


def test_kmeans_separates_separable_clusters_and_purity_is_one():
    z = blobs([[6.0, 0.0, 0.0], [-6.0, 0.0, 0.0], [0.0, 6.0, 0.0], [0.0, 0.0, -6.0]], 40, 0.3)
    y = torch.arange(4).repeat_interleave(40)
    labels, inertia = kmeans(min_max_scale(z), 4, iters=20, restarts=3, generator=generator())
    assert purity(labels, y, 4, 4).item() == 1.0
    # one cluster per class: the partition is the classes' up to renaming
    assert sorted(set(zip(labels.tolist(), y.tolist()))) == sorted({(labels[40 * k].item(), k) for k in range(4)})
    assert len(set(labels.tolist())) == 4 and inertia.item() > 0


def test_purity_is_lower_when_the_classes_are_mixed_in_the_clusters():
    z = blobs([[6.0, 0.0], [-6.0, 0.0]], 60, 0.3)
    half = torch.tensor([0, 1]).repeat(30)           # each blob holds both classes, half and half
    y = torch.cat([half, half])
    labels, _ = kmeans(min_max_scale(z), 2, iters=20, restarts=2, generator=generator())
    assert purity(labels, y, 2, 2).item() == pytest.approx(0.5)
    y_mostly = torch.cat([torch.zeros(45, dtype=torch.long), torch.ones(15, dtype=torch.long),
                          torch.ones(60, dtype=torch.long)])   # blob 1: 45 of class 0, 15 of class 1
    assert purity(labels, y_mostly, 2, 2).item() == pytest.approx(105 / 120)


def test_kmeans_is_reproducible_from_the_generator_and_keeps_the_lowest_inertia_restart():
    z = min_max_scale(blobs([[1.0, 0.0], [-1.0, 0.0], [0.0, 1.5]], 30, 0.8, seed=3))
    a, ia = kmeans(z, 3, iters=15, restarts=4, generator=generator(5))
    b, ib = kmeans(z, 3, iters=15, restarts=4, generator=generator(5))
    assert torch.equal(a, b) and torch.equal(ia, ib)
    labels, inertia = lloyd(z, kmeans_pp(z, 3, 4, generator(5)), 15)   # the same 4 runs, one by one
    assert inertia.shape == (4,) and ia.item() == inertia.min().item()
    assert torch.equal(a, labels[inertia.argmin()])
    # each run's inertia is the sum of squared distances to its own cluster means
    for r in range(4):
        means = torch.stack([z[labels[r] == c].mean(0) for c in range(3)])
        assert inertia[r].item() == pytest.approx(((z - means[labels[r]]) ** 2).sum().item(), rel=1e-5)


def test_strength_is_tanh_of_lambda_times_the_purity_gap():
    train = torch.tensor([0.9, 0.6, 0.5])
    val = torch.tensor([0.7, 0.6, 0.8])
    alpha = strengths(train, val, 3.0)
    assert alpha.tolist() == pytest.approx([math.tanh(0.6), 0.0, math.tanh(0.9)], rel=1e-5)
    assert strengths(train, val, 0.0).tolist() == [0.0, 0.0, 0.0]


# -- the schedule ------------------------------------------------------------------------------------
def test_reinitialisation_epochs_every_reinit_epoch_at_most_reinit_num_times():
    kit = Kit.build("relearning", {"reinit_epoch": 2, "reinit_num": 2})
    assert [e for e in range(10) if kit.method.scheduled(e)] == [1, 3]   # after 2 and 4 completed epochs
    kit = Kit.build("relearning")   # the release's 20 / 3
    assert [e for e in range(90) if kit.method.scheduled(e)] == [19, 39, 59]


def test_a_run_reinitialises_at_the_scheduled_epochs_and_reports_the_diagnosis():
    kit = Kit.build("relearning", {"reinit_epoch": 1, "reinit_num": 2, "kmeans_iters": 10, "kmeans_restarts": 2},
                    epochs=3)
    moves = []
    reinitialise = kit.method.reinitialise

    def recording(model, alpha):
        before = {m: [p.detach().clone() for p in model.encoder_parameters(m)] for m in kit.modalities}
        reinitialise(model, alpha)
        moves.append((before, alpha.clone()))

    kit.method.reinitialise = recording
    kit.fit()
    events = [(f["epoch"], f) for name, _, f in kit.recorder.events if name == "reinit"]
    assert [e for e, _ in events] == [0, 1] and len(moves) == 2
    assert kit.method.reinits == 2
    # the live values: alpha 0 before the first diagnosis, then the last one's; the purity once diagnosed
    assert all(live["coef/a"].item() == 0.0 and "score/a" not in live for live in kit.lives[:7])
    assert kit.lives[-1]["coef/a"].item() == pytest.approx(events[-1][1]["alpha_a"])
    assert kit.epoch_values[0]["score/b"].item() == pytest.approx(events[0][1]["purity_train_b"])
    for _, f in events:
        for m in kit.modalities:
            assert 1 / 3 <= f[f"purity_train_{m}"] <= 1.0 and 1 / 3 <= f[f"purity_val_{m}"] <= 1.0
            gap = abs(f[f"purity_train_{m}"] - f[f"purity_val_{m}"])
            assert f[f"alpha_{m}"] == pytest.approx(math.tanh(3.0 * gap), abs=1e-6)
    assert kit.epoch_values[1]["method/gap/a"].item() == pytest.approx(
        abs(events[1][1]["purity_train_a"] - events[1][1]["purity_val_a"]), abs=1e-6)
    assert kit.epoch_values[2]["method/reinits"] == 2.0   # no third re-initialisation after epoch 2


# -- the re-initialisation ---------------------------------------------------------------------------
def test_reinitialisation_moves_each_encoder_exactly_and_leaves_the_head(monkeypatch):
    kit = Kit.build("relearning", {"reinit_epoch": 1, "move_lambda": 3.0}, modalities=THREE, fusion="sum",
                    dropout=0.0)
    init = {m: {k: p.detach().clone() for k, p in kit.params(m).items()} for m in kit.modalities}
    for _ in range(4):
        kit.step()
    before = kit.snapshot()
    assert all(not torch.equal(before[k], init["a"][k]) for k in init["a"])   # trained away from the init
    # a known diagnosis: gaps 0.2, 0 and 0.3
    monkeypatch.setattr(kit.method, "diagnose", lambda model, epoch: (torch.tensor([0.9, 0.6, 0.5]),
                                                                      torch.tensor([0.7, 0.6, 0.8])))
    events = kit.method.on_epoch_end(0, kit.model, {})
    alpha = {"a": torch.tensor(math.tanh(0.6)), "b": torch.tensor(0.0), "c": torch.tensor(math.tanh(0.9))}
    assert events[0]["alpha_a"] == pytest.approx(math.tanh(0.6)) and events[0]["alpha_b"] == 0.0
    after = kit.snapshot()
    for m in kit.modalities:
        a = kit.method.alpha[kit.modalities.index(m)]
        assert a.item() == pytest.approx(alpha[m].item(), rel=1e-6)
        for k, p0 in init[m].items():
            assert torch.equal(after[k], a * p0 + (1.0 - a) * before[k]), k
            if m == "b":
                assert torch.equal(after[k], before[k])
    assert kit.changed(before) == {k for m in ("a", "c") for k in init[m]}   # the heads stay as they are
    # the strongest pull goes where the gap is largest
    dist = {m: sum((after[k] - init[m][k]).norm() ** 2 for k in init[m]) /
            sum((before[k] - init[m][k]).norm() ** 2 for k in init[m]) for m in ("a", "c")}
    assert dist["c"] < dist["a"] < 1.0


def test_initial_weights_are_kept_in_the_state_and_restored_into_a_fresh_method():
    kit = Kit.build("relearning", {"reinit_epoch": 1, "kmeans_iters": 5, "kmeans_restarts": 1}, epochs=1)
    init = [p.detach().clone() for p in kit.model.encoder_parameters("a")]
    kit.fit()
    state = kit.trainer.state_dict()
    model, method = kit.loaded(state)   # setup() sees trained weights; the state's init wins
    for p, p0 in zip(method.init["a"], init):
        assert torch.equal(p, p0)
    assert method.reinits == 1 and torch.equal(method.alpha, kit.method.alpha)


def test_the_diagnosis_is_reproducible_runs_in_eval_mode_and_sees_the_features():
    kit = Kit.build("relearning", {"kmeans_iters": 10, "kmeans_restarts": 2}, modalities=THREE, epochs=1)
    kit.fit()
    first = kit.method.diagnose(kit.model, 4)
    assert kit.model.training
    again = kit.method.diagnose(kit.model, 4)
    assert torch.equal(first[0], again[0]) and torch.equal(first[1], again[1])
    train, val = first
    assert ((train >= 1 / 3) & (train <= 1)).all() and ((val >= 1 / 3) & (val <= 1)).all()
    # features that are the one-hot label give purity 1 on both splits
    z, y = kit.method.features(kit.model, "train")
    assert z["a"].shape[0] == y.shape[0] == kit.data.split_size("train")
    onehot = torch.nn.functional.one_hot(y, 3).float()
    labels, _ = kmeans(min_max_scale(onehot), 3, 10, 2, generator())
    assert purity(labels, y, 3, 3).item() == 1.0
