"""MCR (Kontras et al. 2025): the permutation game's values and gradient routing (encoders and head, against
the literal block-by-block game), L_Con, L_CEB, the separate unimodal heads and the pre-training stage,
fusion dropout, the head calls, M = 3, every fusion, a deterministic backward, end-to-end run, exact resume
and a finished run extended to N epochs equal to the run planned for N."""

import math

import pytest
import torch
import torch.nn.functional as F

from engine.errors import PresetError
from engine.methods import METHODS, MethodContext
from engine.methods.mcr import MCRConfig, jsd_rows, permute_rows, permuted_sets, sup_ntxent
from engine.models import ModalitySpec, ModelSpec, build_model
from engine.models.encoders.mlp import MLPConfig
from engine.run import resume_run
from engine.store import read_metrics

from methodkit import hand_step
from runtools import (assert_extension_is_the_planned_run, extension_preset, last_checkpoint, metric_rows,
                      planned_and_extended, same_tensors, straight_and_cut, tiny_preset)

B, C = 6, 3
K = {"greedy": -1.0, "ind": 0.0, "colab": 1.0}
FUSIONS = ["concat", "sum", "film", "gated"]


def make(mods=("a", "b"), fusion="concat", dims=None, epoch=0, fusion_dropout=0.0, **options):
    torch.manual_seed(0)
    dims = dims or {m: 4 for m in mods}
    fusion_options = {"dropout": fusion_dropout} | ({"hidden": 8} if fusion in ("film", "gated") else {})
    spec = ModelSpec(tuple(ModalitySpec(m, "mlp", MLPConfig(hidden=[8], dim=dims[m])) for m in mods), fusion,
                     fusion_options)
    shapes = {m: (5 + i,) for i, m in enumerate(mods)}
    model = build_model(spec, shapes, C)
    ctx = MethodContext(modalities=list(mods), n_classes=C, epochs=3, steps_per_epoch=1, device=torch.device("cpu"))
    method = METHODS.get("mcr")(MCRConfig(**options), ctx)
    method.setup(model)
    step = hand_step(model, torch.optim.SGD(method.parameter_groups(model), lr=0.1), epoch)
    x = {m: torch.randn(B, *shapes[m]) for m in mods}
    y = torch.tensor([0, 1, 2, 0, 1, 2])
    return model, method, step, x, y


def permuted(features, which, perms, mods, detach=()):
    """The game's stacked features: modalities in ``which`` row-permuted, the others repeated N times."""
    out = {}
    for i, m in enumerate(mods):
        z = features[m][perms[i].reshape(-1)] if m in which else features[m].repeat(perms.shape[1], 1)
        out[m] = z.detach() if m in detach else z
    return out


def j_full(model, features, fused, which, perms, mods, detach=(), frozen_head=False):
    """J(S) = mean JSD(F(S permuted), P) with nothing detached except ``detach`` (and P, given detached);
    ``frozen_head``: the head's parameters get no gradient from the permuted prediction."""
    stacked = permuted(features, which, perms, mods, detach)
    if frozen_head:
        params = {k: v.detach() for k, v in model.fusion.named_parameters()}
        logits, _ = torch.func.functional_call(model.fusion, params, (stacked,))
    else:
        logits, _ = model.head(stacked)
    return jsd_rows(logits, fused.repeat(perms.shape[1], 1)).mean()


def grads(loss, params):
    return [g if g is not None else torch.zeros_like(p)
            for g, p in zip(torch.autograd.grad(loss, params, retain_graph=True, allow_unused=True), params)]


def assert_close(a, b):
    for u, v in zip(a, b):
        assert torch.allclose(u, v, atol=1e-6, rtol=1e-4), (u - v).abs().max()


# -- the divergence and the permutation values on a hand-made head ------------------------------
def test_jsd_is_zero_for_an_ignored_modality_and_analytic_when_the_prediction_flips():
    model, method, _, _, y = make(n_permutations=3, dims={"a": 2, "b": 2})
    s = 2.0
    with torch.no_grad():
        model.fusion.linear.weight.zero_()
        model.fusion.linear.weight[:2, :2] = s * torch.eye(2)   # a: class = argmax of z_a; b ignored
        model.fusion.linear.bias.zero_()
    feats = {"a": torch.tensor([[1.0, 0.0], [0.0, 1.0]]), "b": torch.randn(2, 2)}
    y = torch.tensor([0, 1])
    fused, _ = model.head(feats)
    swap = torch.tensor([1, 0]).expand(2, 3, 2)               # every permutation swaps the two samples
    game = method.game(model, feats, fused, swap, y)
    z = math.exp(s) + 2                                       # C = 3: p = (e^s, 1, 1) / z, q = (1, e^s, 1) / z
    p, q = [math.exp(s) / z, 1 / z, 1 / z], [1 / z, math.exp(s) / z, 1 / z]
    analytic = sum(0.5 * a * math.log(2 * a / (a + b)) + 0.5 * b * math.log(2 * b / (a + b)) for a, b in zip(p, q))
    j = dict(zip(method.sets, game.j_sets.tolist()))
    assert j[("a",)] == pytest.approx(analytic, rel=1e-5) and j[("b",)] == pytest.approx(0.0, abs=1e-7)
    live = method.game_live(game, y)
    assert live["method/J_a"].item() == pytest.approx(analytic, rel=1e-5)
    # permutation importance: fused accuracy 1; with b permuted still 1 (a kept), with a permuted 0
    assert live["score/a"].item() == 1.0 and live["score/b"].item() == 0.0
    assert live["method/mipd"].item() == pytest.approx(0.0, abs=1e-7)   # greedy, M = 2: zero in value
    assert jsd_rows(fused, fused).abs().max().item() < 1e-7


# -- gradient routing -----------------------------------------------------------------------------
@pytest.mark.parametrize("fusion", FUSIONS)
@pytest.mark.parametrize("game", ["greedy", "ind", "colab"])
def test_each_encoder_gets_minus_lambda_times_own_plus_k_other(game, fusion):
    """README: grad_theta_m L_MIPD = -lambda (grad_theta_m J_m + k grad_theta_m J_other), k = -1/0/+1."""
    model, method, _, x, y = make(fusion=fusion, game=game, game_weight=0.3, n_permutations=4,
                                  reference_gradient=False)
    feats = model.encode(x)
    fused, _ = model.head(feats)
    perms = method.draw_permutations(B, y.device)
    loss = method.game(model, feats, fused, perms, y).loss
    ref = fused.detach()
    j = {m: j_full(model, feats, ref, (m,), perms, ["a", "b"]) for m in "ab"}
    for m, other in (("a", "b"), ("b", "a")):
        params = model.encoder_parameters(m)
        own, oth = grads(j[m], params), grads(j[other], params)
        expected = [-0.3 * (g1 + K[game] * g2) for g1, g2 in zip(own, oth)]
        assert_close(grads(loss, params), expected)
        assert any(g.abs().sum() > 0 for g in expected)
    # game_head = "frozen": the same encoder gradients, and with P detached none for the head
    _, frozen, *_ = make(fusion=fusion, game=game, game_weight=0.3, n_permutations=4, reference_gradient=False,
                         game_head="frozen")
    loss = frozen.game(model, feats, fused, perms, y).loss
    for m in "ab":
        assert_close(grads(loss, model.encoder_parameters(m)), grads(method.game(model, feats, fused, perms, y).loss,
                                                                     model.encoder_parameters(m)))
    assert_close(grads(loss, model.head_parameters()), [torch.zeros_like(p) for p in model.head_parameters()])


def naive_game(model, method, feats, fused, perms, mods, routing):
    """The game written out literally: one head call per block (receiver r, set S, sign), the other
    modalities' parts detached, the reference P not detached. ``routing``: "slice" detaches a modality's
    whole logit contribution (the release's linear head: W_m and b/M follow z_m), "features" detaches its
    features with the head live (``F(Z1s, sg(Z2r))``), "frozen" also detaches the head's parameters."""
    n = perms.shape[1]
    total = torch.zeros(())
    for block in method.blocks:
        live = mods if block.receiver is None else [block.receiver]
        stacked = permuted(feats, block.permuted, perms, mods)
        if routing == "slice":
            _, parts = model.head(stacked)
            logits = sum(parts[m] if m in live else parts[m].detach() for m in mods)
        else:
            inputs = {m: z if m in live else z.detach() for m, z in stacked.items()}
            if routing == "frozen":
                params = {k: v.detach() for k, v in model.fusion.named_parameters()}
                logits, _ = torch.func.functional_call(model.fusion, params, (inputs,))
            else:
                logits, _ = model.head(inputs)
        total = total + block.sign * jsd_rows(logits, fused.repeat(n, 1)).mean()
    return method.cfg.game_weight * total


ROUTING = {("player", "concat"): "slice", ("player", "sum"): "slice", ("player", "film"): "features",
           ("player", "gated"): "features"}


@pytest.mark.parametrize("mods", [("a", "b"), ("a", "b", "c")])
@pytest.mark.parametrize("game", ["greedy", "ind", "colab"])
@pytest.mark.parametrize("fusion", FUSIONS)
@pytest.mark.parametrize("head", ["player", "frozen"])
def test_game_gradients_equal_the_block_by_block_game_for_every_parameter(head, fusion, game, mods):
    """Every parameter (encoders and head) gets the gradient of the literal block-by-block game: with
    game_head = "player", an additive head's slice W_m (and b/M) follows encoder m (the release's linear
    head), a non-additive head is live in every block; with "frozen" the head is detached."""
    model, method, _, x, y = make(mods, fusion=fusion, game=game, game_weight=0.5, n_permutations=3, game_head=head)
    feats = model.encode(x)
    fused, _ = model.head(feats)
    perms = method.draw_permutations(B, y.device)
    loss = method.game(model, feats, fused, perms, y).loss
    naive = naive_game(model, method, feats, fused, perms, list(mods), ROUTING.get((head, fusion), "frozen"))
    params = list(model.parameters())
    assert loss.item() == pytest.approx(naive.item(), abs=1e-7)
    assert_close(grads(loss, params), grads(naive, params))
    # with P constant, the head gets a game gradient only as a player (greedy with M = 2 and a non-additive
    # head: the blocks cancel exactly)
    detached = grads(method.game(model, feats, fused.detach(), perms, y).loss, model.head_parameters())
    cancels = head == "frozen" or (ROUTING[(head, fusion)] == "features" and game == "greedy" and len(mods) == 2)
    assert any(g.abs().max() > 0 for g in detached) != cancels


def test_greedy_two_modalities_gradient_does_not_depend_on_the_reference_path():
    results = []
    for reference in (True, False):
        model, method, _, x, y = make(fusion="film", n_permutations=4, reference_gradient=reference)
        feats = model.encode(x)
        fused, _ = model.head(feats)
        torch.manual_seed(2)
        loss = method.game(model, feats, fused, method.draw_permutations(B, y.device), y).loss
        results.append(grads(loss, list(model.parameters())))
    assert_close(*results)


def test_one_modality_is_refused():
    with pytest.raises(PresetError, match="at least two"):
        make(mods=("a",))


def test_zeroing_the_game_weight_leaves_only_the_task_gradient():
    grads_by_weight = {}
    for w in (0.0, 0.2):
        model, method, step, x, y = make(game_weight=w, contrastive_weight=0.0, n_permutations=4)
        out = model(x)
        torch.manual_seed(5)
        loss, live = method.loss(out, y, step)
        grads_by_weight[w] = (grads(loss, model.encoder_parameters("b")), live)
    (g0, live0), (g1, live1) = grads_by_weight[0.0], grads_by_weight[0.2]
    assert "method/J_a" not in live0 and "method/J_a" in live1
    assert live0["coef/b"].item() == 0.0 and live1["coef/b"].item() == pytest.approx(0.2)
    assert any(not torch.allclose(u, v) for u, v in zip(g0, g1))


# -- cost: one encoder pass, one head call on the batch ----------------------------------------------
@pytest.mark.parametrize("game", ["greedy", "ind", "colab"])
def test_all_permutations_go_through_one_head_call(game):
    model, method, step, x, y = make(game=game, n_permutations=5)
    rows, encoder_calls = [], []
    model.fusion.register_forward_hook(lambda mod, args, out: rows.append(out[0].shape[0]))
    model.encoders["a"].register_forward_hook(lambda mod, args, out: encoder_calls.append(1))
    method.train_step(x, y, step)
    # an additive head is row-wise: the game runs it on the B rows once and permutes the (B, C) logit
    # contributions, not 2 permuted sets x N x B feature rows
    assert rows == [B, B] and len(encoder_calls) == 1


@pytest.mark.parametrize("game, calls", [("greedy", [2 * 5 * B]), ("ind", [5 * B, 5 * B])])
def test_a_non_additive_player_head_runs_once_per_set_unless_its_game_gradient_cancels(game, calls):
    model, method, step, x, y = make(fusion="gated", game=game, n_permutations=5)
    rows = []
    model.fusion.register_forward_hook(lambda mod, args, out: rows.append(out[0].shape[0]))
    method.train_step(x, y, step)
    assert rows == [B] + calls


# -- unimodal heads (the release's encoder classifiers) ---------------------------------------------
@pytest.mark.parametrize("fusion", FUSIONS)
def test_unimodal_heads_are_apart_from_the_fusion_head_which_pretraining_leaves_fresh(fusion):
    model, method, step, x, y = make(fusion=fusion, pretrain_epochs=1, n_permutations=2)
    additive = fusion in ("concat", "sum")
    assert ("unimodal" in method.modules) == additive
    feats = model.encode(x)
    own = ({m: method.modules["unimodal"][m](feats[m]) for m in "ab"} if additive else model.head(feats)[1])
    for out in (method.forward(model, x), method.predict(model, x)):   # what metrics and the loss see
        assert all(torch.allclose(out.logits[m], own[m]) for m in "ab")
    fused_head = [p for n, p in model.fusion.named_parameters() if additive or not n.startswith("heads.")]
    before = [p.detach().clone() for p in fused_head]
    method.train_step(x, y, step)                                      # epoch 0: pre-training
    assert all(torch.equal(p, q) for p, q in zip(fused_head, before))  # the MCR stage starts with a fresh head
    _, method, step, *_ = make(fusion=fusion, pretrain_epochs=1, n_permutations=2, unimodal_heads="fusion")
    assert "unimodal" not in method.modules
    out = model(x)
    loss, _ = method.loss(method.forward(model, x), y, step)
    moved = any(g.abs().max() > 0 for g in grads(loss, fused_head))
    assert loss.item() == pytest.approx(sum(F.cross_entropy(out.logits[m], y) for m in "ab").item(), rel=1e-6)
    assert moved == additive   # "fusion": concat's/sum's unimodal logits are parts of the fused head


@pytest.mark.parametrize("fusion", ["concat", "gated"])
def test_with_no_unimodal_weight_the_separate_heads_learn_on_detached_features(fusion):
    model, method, step, x, y = make(fusion=fusion, unimodal_weight=0.0, n_permutations=2)
    out = method.forward(model, x)
    term = method.unimodal_term(model, out, y, torch.zeros(()))
    assert term.item() == pytest.approx(sum(F.cross_entropy(out.logits[m], y) for m in "ab").item(), rel=1e-6)
    heads = list((method.modules["unimodal"] if fusion == "concat" else model.fusion.heads).parameters())
    assert all(g.abs().max() > 0 for g in grads(term, heads))
    assert all(g.abs().max() == 0 for g in grads(term, model.encoder_parameters("a")))


# -- fusion dropout -----------------------------------------------------------------------------------
@pytest.mark.parametrize("fusion", FUSIONS)
def test_with_fusion_dropout_a_permutation_that_moves_nothing_scores_zero(fusion):
    model, method, _, x, y = make(fusion=fusion, fusion_dropout=0.5, n_permutations=4)
    out = model(x)                                         # the training pass, with its dropout masks
    identity = torch.arange(B).expand(2, 4, B)
    game = method.game(model, out.features, out.fused, identity, y)
    assert game.j_sets.abs().max().item() < 1e-6
    assert torch.allclose(game.reference, model.eval().head(out.features)[0])   # the dropout-free reference
    model.train()
    assert all(m.training for m in model.fusion.modules())  # the dropout layers are back in training mode
    perms = method.draw_permutations(B, y.device)
    assert method.game(model, out.features, out.fused, perms, y).j_sets.min().item() > 1e-5


# -- determinism ------------------------------------------------------------------------------------
def test_permuted_rows_have_the_indexing_gradient_bitwise_repeatably_on_two_threads():
    """z[idx] with repeated rows accumulates in a thread-dependent order on the CPU (at 32 x 32 x 32
    elements and two threads, nearly every repeat differs in the last bits); permute_rows does not."""
    torch.manual_seed(0)
    z = torch.randn(32, 32, requires_grad=True)
    perms = torch.rand(32, 32).argsort(-1)
    weight = torch.randn(32, 32, 32)
    assert torch.equal(permute_rows(z, perms), z[perms])
    expected = torch.autograd.grad((z[perms] * weight).sum(), z)[0]
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        got = [torch.autograd.grad((permute_rows(z, perms) * weight).sum(), z)[0] for _ in range(8)]
    finally:
        torch.set_num_threads(threads)
    assert torch.allclose(got[0], expected, atol=1e-5)
    assert all(torch.equal(g, got[0]) for g in got)


# -- three modalities and every fusion --------------------------------------------------------------
@pytest.mark.parametrize("fusion", FUSIONS)
def test_three_modalities_follow_the_released_3d_rule(fusion):
    mods = ["a", "b", "c"]
    model, method, step, x, y = make(mods, fusion=fusion, game_weight=0.2, n_permutations=3,
                                     reference_gradient=False)
    assert method.sets == permuted_sets(mods, "all") and len(method.sets) == 6
    feats = model.encode(x)
    fused, _ = model.head(feats)
    perms = method.draw_permutations(B, y.device)
    game = method.game(model, feats, fused, perms, y)
    assert game.head_rows == 6 * 3 * B
    ref = fused.detach()
    j = {s: j_full(model, feats, ref, s, perms, mods) for s in method.sets}
    for m in mods:  # greedy: -lambda (sum_{S contains m} grad J_S - sum_{S without m} grad J_S)
        params = model.encoder_parameters(m)
        per_set = {s: grads(j[s], params) for s in method.sets}
        expected = [-0.2 * sum((1.0 if m in s else -1.0) * per_set[s][i] for s in method.sets)
                    for i in range(len(params))]
        assert_close(grads(game.loss, params), expected)
    live = method.train_step(x, y, step).live
    assert {"method/J_a", "method/J_b+c", "score/c", "coef/c", "method/contrastive"} <= set(live)
    assert all(torch.isfinite(v) and v.dim() == 0 for v in live.values())


def test_permuted_set_families_for_four_modalities():
    mods = ["a", "b", "c", "d"]
    assert len(permuted_sets(mods, "all")) == 14
    assert permuted_sets(mods, "one_or_rest") == [("a",), ("b",), ("c",), ("d",), ("a", "b", "c"),
                                                  ("a", "b", "d"), ("a", "c", "d"), ("b", "c", "d")]
    assert permuted_sets(["a", "b"], "one_or_rest") == permuted_sets(["a", "b"], "all") == [("a",), ("b",)]


# -- L_Con and L_CEB -----------------------------------------------------------------------------
def brute_ntxent(z, labels, t):
    """pytorch_metric_learning NTXentLoss, written pair by pair."""
    z = F.normalize(z, dim=-1)
    losses = []
    for a in range(len(z)):
        negs = [torch.exp(z[a] @ z[n] / t) for n in range(len(z)) if labels[n] != labels[a]]
        for p in range(len(z)):
            if p != a and labels[p] == labels[a]:
                num = torch.exp(z[a] @ z[p] / t)
                losses.append(-torch.log(num / (num + sum(negs, torch.tensor(0.0)))))
    return torch.stack(losses).mean()


def test_supervised_ntxent_known_value_and_pairwise_definition():
    e = torch.eye(2)
    value = sup_ntxent([e, e], torch.tensor([0, 1, 0, 1]), 0.5)
    assert value.item() == pytest.approx(math.log(1 + 2 * math.exp(-2.0)), rel=1e-6)
    torch.manual_seed(1)
    feats = [torch.randn(5, 3), torch.randn(5, 3), torch.randn(5, 3)]
    labels = torch.tensor([0, 1, 1, 2, 0]).repeat(3)
    assert sup_ntxent(feats, labels, 0.1).item() == pytest.approx(brute_ntxent(torch.cat(feats), labels, 0.1).item(),
                                                                  rel=1e-5)
    pure = torch.arange(5).repeat(3)
    assert sup_ntxent(feats, pure, 0.5).item() == pytest.approx(brute_ntxent(torch.cat(feats), pure, 0.5).item(),
                                                                rel=1e-5)


def test_total_loss_adds_every_term_and_ceb_reconstructs_from_the_detached_prediction():
    model, method, step, x, y = make(game_weight=0.1, unimodal_weight=0.5, contrastive_weight=0.7,
                                     bottleneck_weight=2.0, n_permutations=3)
    out = method.forward(model, x)
    torch.manual_seed(9)
    loss, live = method.loss(out, y, step)
    torch.manual_seed(9)
    game = method.game(model, out.features, out.fused, method.draw_permutations(B, y.device), y).loss
    z = torch.cat([out.features["a"], out.features["b"]], dim=1)
    ceb = F.mse_loss(z, method.modules["ceb"](out.fused.detach()))
    con = sup_ntxent([out.features["a"], out.features["b"]], y.repeat(2), 0.5)
    ce = F.cross_entropy(out.fused, y) + 0.5 * (F.cross_entropy(out.logits["a"], y) + F.cross_entropy(out.logits["b"], y))
    assert loss.item() == pytest.approx((ce + game + 0.7 * con + 2.0 * ceb).item(), rel=1e-6)
    assert live["method/bottleneck"].item() == pytest.approx(ceb.item(), rel=1e-6)
    assert live["method/contrastive"].item() == pytest.approx(con.item(), rel=1e-6)
    head_grad = grads(ceb, model.head_parameters())
    assert all(g.abs().max() == 0 for g in head_grad)         # the prediction is detached
    assert any(g.abs().max() > 0 for g in grads(ceb, model.encoder_parameters("a")))


def test_contrastive_term_needs_equal_feature_sizes():
    with pytest.raises(PresetError, match="method.contrastive_weight"):
        make(dims={"a": 4, "b": 6})
    make(dims={"a": 4, "b": 6}, contrastive_weight=0.0)


# -- pre-training stage and resume state -------------------------------------------------------------
def test_pretraining_uses_only_the_unimodal_losses_then_switches_to_mcr():
    model, method, step, x, y = make(pretrain_epochs=1, bottleneck_weight=1.0, n_permutations=2)
    calls = []
    model.fusion.register_forward_hook(lambda mod, args, out: calls.append(1))
    out = method.forward(model, x)
    loss, live = method.loss(out, y, step)
    assert loss.item() == pytest.approx(sum(F.cross_entropy(out.logits[m], y) for m in "ab").item(), rel=1e-6)
    assert len(calls) == 1 and live["coef/a"].item() == 0.0 and "method/J_a" not in live
    assert method.on_epoch_start(0, model) == [{"name": "stage", "stage": "pretrain"}]
    assert method.on_epoch_start(1, model) == [{"name": "stage", "stage": "mcr"}]
    assert method.on_epoch_start(2, model) == []
    step.epoch = 1
    loss, live = method.loss(out, y, step)
    assert len(calls) == 2 and {"method/J_a", "method/bottleneck", "method/contrastive"} <= set(live)


def test_state_dict_round_trip_restores_the_ceb_decoder():
    _, method, *_ = make(bottleneck_weight=1.0)
    state = method.state_dict()
    _, other, *_ = make(bottleneck_weight=1.0)
    with torch.no_grad():
        for p in other.modules.parameters():
            p.add_(1.0)
    other.load_state_dict(state)
    for k, v in other.state_dict()["modules"].items():
        assert torch.equal(v, state["modules"][k]), k


# -- end to end -------------------------------------------------------------------------------------
PRESET = tiny_preset('name = "mcr"\nn_permutations = 4\npretrain_epochs = 1\nbottleneck_weight = 0.5',
                     name="mcr", seed=3, optimizer="adam", lr=0.01)


def assert_same_run(a, b):
    assert same_tensors(last_checkpoint(a)["model"], last_checkpoint(b)["model"])
    assert metric_rows(a) == metric_rows(b)


def test_end_to_end_run_logs_the_live_values_and_resumes_bitwise(tmp_path):
    runs = tmp_path / "runs"
    # the second run is interrupted mid-epoch inside the MCR stage, then resumed: bitwise the same run
    straight, cut = straight_and_cut(tmp_path, PRESET, 10)
    assert straight.state == "finished"
    log = read_metrics(straight.run_dir / "metrics.jsonl")
    stages = [(e["stage"], e["step"]) for e in log.events() if e["name"] == "stage"]
    assert stages == [("pretrain", 0), ("mcr", 7)]
    train = [r for r in log.metric_rows() if r["split"] == "train"]
    late = train[-1]["m"]
    for name in ("method/J_a", "method/J_b", "method/contrastive", "method/bottleneck", "method/mipd",
                 "score/a", "score/b", "coef/a", "method/ce_fused"):
        assert name in late, name
    assert late["coef/a"] == pytest.approx(0.1) and train[0]["m"]["coef/a"] == 0.0
    assert "method/J_a" not in train[0]["m"]
    resumed = resume_run(cut.run_id, runs_dir=runs)
    assert resumed.state == "finished"
    assert_same_run(straight.run_dir, resumed.run_dir)


# -- a finished run trained longer is the run planned that long -------------------------------------
@pytest.mark.parametrize("mods, fusion", [(("a", "b"), "concat"), (("a", "b", "c"), "gated")])
def test_a_run_extended_to_n_epochs_is_bitwise_the_run_planned_for_n(mods, fusion, tmp_path):
    """1 epoch (pre-training) extended to 3 (then MCR) equals 3 planned, on two CPU threads; N * B * d =
    32 * 32 * 32 permuted feature elements per modality, where indexing's backward was thread-dependent
    (a race: it showed in most, not all, of these runs)."""
    table = 'name = "mcr"\nn_permutations = 32\npretrain_epochs = 1\nbottleneck_weight = 0.5'
    planned, extended = planned_and_extended(tmp_path, lambda epochs: extension_preset(mods, fusion, 32, table, epochs))
    assert planned.state == extended.state == "finished"
    assert_extension_is_the_planned_run(planned.run_dir, extended.run_dir)
