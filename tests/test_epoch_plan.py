"""Sample ids in training batches, epoch plans (rows, repeats, dropped modalities), sharding and subset views."""

from __future__ import annotations

import io

import pytest
import torch

from engine.data import Batch, EpochPlan, TensorData, epoch_permutation
from engine.train.data_parallel import ShardedBatches, ShardedData

N = 40  # rows 0, 4, 8, ... are val/test; the other 30 are train, so a train index is not a row number


def make_data() -> TensorData:
    """``a[r] = (r, -r)`` and ``b[r] = r + 1`` everywhere, so every row (and a zeroed input) is recognisable."""
    rows = torch.arange(N)
    x = {"a": torch.stack([rows, -rows], 1).float(), "b": (rows + 1).float().view(N, 1, 1).expand(N, 2, 2).clone()}
    held = rows[rows % 4 == 0]
    splits = {"train": rows[rows % 4 != 0], "val": held[::2], "test": held[1::2]}
    return TensorData(x=x, y=rows % 3, present={}, splits=splits, classes=["0", "1", "2"], modalities={},
                      name="n", source="s", stats={})


def expected(data: TensorData, ids: torch.Tensor, masks: torch.Tensor | None = None) -> Batch:
    """The batch of train ids ``ids`` built by hand: rows looked up in the split, dropped inputs zeroed."""
    rows = data.splits["train"][ids]
    x = {m: t[rows].clone() for m, t in data.x.items()}
    keep = None
    if masks is not None:
        keep = {"a": masks[:, 0], "b": masks[:, 1]}
        for m in x:
            x[m][~keep[m]] = 0.0
    return Batch(x, data.y[rows], ids, keep)


def assert_batches(got: list[Batch], want: list[Batch]) -> None:
    assert len(got) == len(want)
    for g, w in zip(got, want):
        assert torch.equal(g.ids, w.ids) and torch.equal(g.y, w.y)
        assert all(torch.equal(g.x[m], w.x[m]) for m in w.x)
        assert (g.masks is None) == (w.masks is None)
        if w.masks is not None:
            assert all(torch.equal(g.masks[m], w.masks[m]) for m in w.masks)


def test_ids_are_the_train_split_indices_of_the_rows_in_each_batch():
    data = make_data()
    batches = list(data.train_epoch(3, 1, 8, False).iterate())
    assert [b.ids.numel() for b in batches] == [8, 8, 8, 6]
    ids = torch.cat([b.ids for b in batches])
    assert ids.dtype == torch.int64
    assert torch.equal(ids, epoch_permutation(30, 3, 1, "cpu"))             # the seeded order, as before
    for b in batches:
        rows = data.splits["train"][b.ids]
        assert torch.equal(b.x["a"][:, 0], rows.float()) and torch.equal(b.y, rows % 3)
        assert b.masks is None


def test_a_plan_gives_exactly_its_rows_with_repeats_and_dropped_modalities_zeroed():
    data = make_data()
    rows = torch.tensor([3, 3, 0, 29, 3, 7, 0])
    masks = torch.tensor([[True, True], [True, False], [False, True], [True, True], [False, True],
                          [True, False], [True, True]])
    plan = EpochPlan(rows, masks, shuffle=False)
    got = list(data.train_epoch(0, 0, 3, False, plan=plan).iterate())
    assert_batches(got, [expected(data, rows[i:i + 3], masks[i:i + 3]) for i in (0, 3, 6)])
    assert got[0].x["b"][1].abs().sum() == 0 and got[0].x["a"][1, 0] == data.splits["train"][3]  # row 3, b dropped
    assert torch.equal(got[0].x["a"][2], torch.zeros(2)) and got[0].x["b"][2, 0, 0] == 2.0     # row 0 (= data row 1)
    # shuffled: the plan's samples, each with its mask row, in the (seed, epoch) order of their number
    perm = epoch_permutation(7, 5, 2, "cpu")
    shuffled = list(data.train_epoch(5, 2, 3, False, plan=EpochPlan(rows, masks)).iterate())
    assert_batches(shuffled, [expected(data, rows[perm][i:i + 3], masks[perm][i:i + 3]) for i in (0, 3, 6)])


def test_the_plan_of_every_train_row_shuffled_is_the_normal_epoch():
    data = make_data()
    plain = list(data.train_epoch(9, 4, 7, True).iterate())
    planned = list(data.train_epoch(9, 4, 7, True, plan=EpochPlan(torch.arange(30))).iterate())
    assert_batches(planned, plain)


@pytest.mark.parametrize("n_rows, batch, drop_last, n_batches", [(7, 3, False, 3), (7, 3, True, 2), (90, 8, False, 12),
                                                                 (1, 8, False, 1), (2, 8, True, 0)])
def test_the_number_of_batches_follows_the_plan(n_rows, batch, drop_last, n_batches):
    data = make_data()
    epoch = data.train_epoch(0, 0, batch, drop_last, plan=EpochPlan(torch.arange(n_rows) % 30))
    assert len(epoch) == n_batches == len(list(epoch.iterate()))


def test_a_planned_epoch_resumes_from_any_batch():
    data = make_data()
    plan = EpochPlan(torch.tensor([5, 1, 1, 20, 9, 9, 9, 2, 0, 11]), torch.rand(10, 2) > 0.4)
    epoch = data.train_epoch(2, 3, 4, False, plan=plan)
    whole = list(epoch.iterate())
    for start in range(len(epoch) + 1):
        assert_batches(list(epoch.iterate(start)), whole[start:])


@pytest.mark.parametrize("world", [2, 3])
def test_sharded_plan_batches_concatenate_to_the_global_batch(world):
    data = make_data()
    plan = EpochPlan(torch.tensor([4, 4, 4, 17, 0, 8, 29, 3, 12]), torch.rand(9, 2) > 0.5)
    whole = list(data.train_epoch(1, 0, 4, False, plan=plan).iterate())        # batches of 4, 4, 1 rows
    shards = [list(ShardedData(data, r, world).train_epoch(1, 0, 4, False, plan=plan).iterate())
              for r in range(world)]

    class Source:  # the batch-by-batch path of any other source (streamed data)
        def __len__(self):
            return len(whole)

        def iterate(self, start=0):
            yield from data.train_epoch(1, 0, 4, False, plan=plan).iterate(start)
    cut = [list(ShardedBatches(Source(), r, world).iterate()) for r in range(world)]
    for per_rank in (shards, cut):
        for b, w in enumerate(whole):
            k = -(-w.ids.numel() // world)                                       # padded with the batch's first rows
            pad = torch.arange(k * world) % w.ids.numel()
            joined = [per_rank[r][b] for r in range(world)]
            assert all(p.ids.numel() == k for p in joined)
            assert torch.equal(torch.cat([p.ids for p in joined]), w.ids[pad])
            for m in ("a", "b"):
                assert torch.equal(torch.cat([p.x[m] for p in joined]), w.x[m][pad])
                assert torch.equal(torch.cat([p.masks[m] for p in joined]), w.masks[m][pad])


@pytest.mark.parametrize("with_masks", [False, True])
def test_a_plan_survives_a_weights_only_checkpoint_round_trip(with_masks):
    data = make_data()
    plan = EpochPlan(torch.tensor([2, 2, 19, 7, 0]), torch.tensor([[True, False]] * 5) if with_masks else None,
                     shuffle=with_masks)
    buffer = io.BytesIO()
    torch.save({"plan": plan.state_dict()}, buffer)
    buffer.seek(0)
    back = EpochPlan.from_state(torch.load(buffer, weights_only=True)["plan"], device="cpu")
    assert torch.equal(back.rows, plan.rows) and back.shuffle == plan.shuffle
    assert (back.masks is None) == (not with_masks) and (back.masks is None or torch.equal(back.masks, plan.masks))
    assert_batches(list(data.train_epoch(6, 1, 2, False, plan=back).iterate(1)),
                   list(data.train_epoch(6, 1, 2, False, plan=plan).iterate(1)))


def test_bad_plans_are_refused():
    data = make_data()
    with pytest.raises(ValueError, match=r"0\.\.29; got values in 0\.\.30"):
        data.train_epoch(0, 0, 4, False, plan=EpochPlan(torch.tensor([0, 30])))
    with pytest.raises(ValueError, match="2 modalities"):
        data.train_epoch(0, 0, 4, False, plan=EpochPlan(torch.tensor([0, 1]), torch.ones(2, 3, dtype=torch.bool)))
    with pytest.raises(ValueError, match="non-empty 1-d int64"):
        EpochPlan(torch.tensor([], dtype=torch.int64))
    with pytest.raises(ValueError, match="bool tensor of shape"):
        EpochPlan(torch.tensor([0, 1]), torch.ones(2, 2))


def test_a_subset_view_trains_on_exactly_its_rows_and_evaluates_the_held_out_ones():
    data = make_data()
    train, held = torch.tensor([0, 5, 6, 7, 29, 13]), torch.tensor([1, 2, 3])
    view = data.subset(train, held)
    assert (view.split_size("train"), view.split_size("val"), view.split_size("test")) == (6, 3, 0)
    assert view.x is data.x                                                    # a view: no copy
    batches = list(view.train_epoch(0, 0, 4, False).iterate())
    ids = torch.cat([b.ids for b in batches])
    assert torch.equal(ids.sort().values, torch.arange(6))                     # the view's own train indices
    rows = data.splits["train"][train[ids]]                                    # ... map back through ``train``
    assert torch.equal(torch.cat([b.x["a"][:, 0] for b in batches]), rows.float())
    (xv, yv), = list(view.eval_batches("val", 8))
    held_rows = data.splits["train"][held]
    assert torch.equal(xv["a"][:, 0], held_rows.float()) and torch.equal(yv, held_rows % 3)
    assert torch.equal(view.class_counts("train"), torch.bincount(data.splits["train"][train] % 3, minlength=3))
    assert list(view.eval_batches("test", 8)) == []
    assert data.split_size("train") == 30                                      # the data itself is unchanged
    planned = list(view.train_epoch(0, 0, 8, False, plan=EpochPlan(torch.tensor([5, 5]), shuffle=False)).iterate())
    assert planned[0].x["a"][:, 0].tolist() == [float(data.splits["train"][13])] * 2
    with pytest.raises(ValueError, match="0..29"):
        data.subset(torch.tensor([30]))


def test_a_sharded_subset_is_sharded_like_the_data():
    data = make_data()
    view = ShardedData(data, 1, 2).subset(torch.arange(10))
    assert isinstance(view, ShardedData) and view.split_size("train") == 10
    whole = list(data.subset(torch.arange(10)).train_epoch(0, 0, 4, False).iterate())
    mine = list(view.train_epoch(0, 0, 4, False).iterate())
    assert [b.ids.tolist() for b in mine] == [w.ids[2:].tolist() for w in whole[:2]] + [whole[2].ids[1:].tolist()]
