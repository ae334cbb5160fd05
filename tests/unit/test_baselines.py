"""Baselines: width slicing and per-slice aggregation, depth sub-models, tiers.

Short in-process runs of each baseline: ``tests/integration/test_baseline_runs.py``.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from flwr.app import Array, ArrayRecord

from profl_strategy.engine.engine import Assignment, RoundOutcome, RoundPlan
from profl_strategy.engine.protocol import Trained
from profl_strategy.engine.rounds import Returned
from profl_strategy.methods.baselines.depth import (
    DepthClassifier,
    DepthNet,
    DepthSubModel,
    depth_loss,
    heads_for,
    kd_ramp,
    key_map,
)
from profl_strategy.methods.baselines.depth_strategies import DepthFL, InclusiveFL
from profl_strategy.methods.baselines.submodel import TieredMethod
from profl_strategy.methods.baselines.width import (
    SliceUpdate,
    aggregate_slices,
    channel_index,
    groups_for,
    make_plan,
    shapes_of,
    slice_state,
    unslice_into,
    width_model,
)
from profl_strategy.methods.baselines.width_strategies import AllSmall, FedRolex, HeteroFL
from profl_strategy.task.model_key import ModelKey
from tests.support.strategies import CNN, strategy

RESNET = ModelKey("resnet18", 10, (3, 32, 32), 0.25)
VIT = ModelKey("vit", 10, (3, 32, 32), 0.5)


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def numpy_state(model: torch.nn.Module) -> dict[str, np.ndarray]:
    return {k: v.numpy().copy() for k, v in model.state_dict().items()}


# ---- width ---------------------------------------------------------------------------
def test_slicing_then_unslicing_round_trips() -> None:
    full = numpy_state(width_model(RESNET, 1.0))
    plan = make_plan(shapes_of(full), shapes_of(width_model(RESNET, 0.5).state_dict()), 3)
    sub = slice_state(full, plan)
    target = {k: np.zeros_like(v) for k, v in full.items()}
    unslice_into(target, sub, plan)
    again = slice_state(target, plan)
    assert all(np.array_equal(again[k], sub[k]) for k in sub)
    w = "blocks.1.0.conv1.weight"  # 16 -> 8 channels on both sides, window 3..10
    assert np.array_equal(target[w][3:11, 3:11], full[w][3:11, 3:11])
    assert not target[w][:3].any() and not target[w][11:].any()
    assert sub["blocks.0.bn1.num_batches_tracked"].shape == ()


@pytest.mark.parametrize("ratio", [0.5, 0.25, 0.125])
def test_nested_resnet_slices_load_into_the_width_r_model(ratio: float) -> None:
    full = numpy_state(width_model(RESNET, 1.0))
    small = width_model(RESNET, ratio)
    sub = slice_state(full, make_plan(shapes_of(full), shapes_of(small.state_dict())))
    small.load_state_dict({k: torch.from_numpy(v) for k, v in sub.items()}, strict=True)
    assert small.eval()(torch.randn(2, 3, 32, 32)).shape == (2, 10)
    # Nested: the width-r model is the leading corner of the width-2r one.
    half = slice_state(
        full, make_plan(shapes_of(full), shapes_of(width_model(RESNET, 2 * ratio).state_dict()))
    )
    inner = slice_state(half, make_plan(shapes_of(half), shapes_of(sub)))
    assert all(np.array_equal(inner[k], sub[k]) for k in sub)


def test_vit_slices_whole_heads_and_loads() -> None:
    full = numpy_state(width_model(VIT, 1.0))
    small = width_model(VIT, 0.5)
    plan = make_plan(shapes_of(full), shapes_of(small.state_dict()), 0, groups_for(VIT))
    sub = slice_state(full, plan)
    small.load_state_dict({k: torch.from_numpy(v) for k, v in sub.items()})
    assert small.eval()(torch.randn(2, 3, 32, 32)).shape == (2, 10)
    idx = plan["blocks.1.0.self_attention.in_proj_weight"][0]
    hidden, heads = VIT.spec().hidden_dim, VIT.spec().num_heads
    per_head = hidden // heads
    assert len(idx) == 3 * small_hidden(small) and idx[0] == 0 and idx[per_head // 2] == per_head


def small_hidden(model: torch.nn.Module) -> int:
    return model.state_dict()["head.ln.weight"].shape[0]


def test_per_slice_aggregation_averages_only_covering_nodes() -> None:
    glob = {"w": np.full((4, 4), 7.0, np.float32), "n": np.array(10, np.int64)}
    whole = (None, None)
    corner = (np.array([0, 1]), np.array([0, 1]))
    a = SliceUpdate({"w": np.ones((4, 4), np.float32), "n": np.array(2)}, {"w": whole, "n": ()}, 1)
    b = SliceUpdate({"w": np.full((2, 2), 3.0, np.float32)}, {"w": corner}, 3)
    out = aggregate_slices(glob, [a, b])
    assert np.allclose(out["w"][:2, :2], (1 * 1 + 3 * 3) / 4)
    assert np.allclose(out["w"][2:], 1.0) and np.allclose(out["w"][:2, 2:], 1.0)
    assert out["n"].dtype == np.int64 and out["n"] == 2  # only a covered it
    only_b = aggregate_slices(glob, [b])
    assert np.allclose(only_b["w"][:2, :2], 3.0) and np.allclose(only_b["w"][2:], 7.0)
    assert only_b["n"] == 10  # nobody covered it: global value kept
    # Label mask: b may only update row 1 of its slice.
    masked = SliceUpdate(b.state, b.plan, 3, rows={"w": np.array([1])})
    out = aggregate_slices(glob, [masked])
    assert np.allclose(out["w"][1, :2], 3.0) and np.allclose(out["w"][0], 7.0)


def test_fedrolex_window_rolls_and_wraps() -> None:
    assert list(channel_index(8, 4, 0)) == [0, 1, 2, 3]
    assert list(channel_index(8, 4, 1)) == [1, 2, 3, 4]
    assert list(channel_index(8, 4, 6)) == [6, 7, 0, 1]
    assert list(channel_index(8, 4, 8)) == list(channel_index(8, 4, 0))
    assert list(channel_index(12, 6, 1, groups=3)) == [1, 2, 5, 6, 9, 10]
    rolex, hetero = strategy(FedRolex), strategy(HeteroFL)
    w = "blocks.1.0.0.weight"
    windows = [rolex.plan(0.5, r)[w][0] for r in (1, 2)]
    assert list(windows[1]) == list((windows[0] + 1) % len(rolex.model.state_dict()[w]))
    assert list(hetero.plan(0.5, 1)[w][0]) == list(hetero.plan(0.5, 2)[w][0])


# ---- depth ---------------------------------------------------------------------------
@pytest.mark.parametrize("key", [CNN, RESNET])
def test_depth_sub_models_have_one_output_per_head(key: ModelKey) -> None:
    spec = key.spec()
    for k in range(1, spec.num_blocks + 1):
        for all_heads in (True, False):
            model = DepthSubModel(spec, k, heads_for(k, all_heads))
            outputs = model.eval()(torch.randn(2, *key.input_shape))
            assert len(outputs) == (k if all_heads else 1)
            assert all(o.shape == (2, 10) for o in outputs)


def test_depth_keys_map_onto_the_global_state() -> None:
    spec, last = CNN.spec(), CNN.spec().num_blocks
    glob = DepthNet(spec, group_tops=True).state_dict()
    for k in range(1, last + 1):
        sub = DepthSubModel(spec, k, heads_for(k, False)).state_dict()
        mapping = key_map(list(sub), k, last, group_tops=True)
        assert all(glob[g].shape == sub[s].shape for s, g in mapping.items())
        tops = {g.split(".")[1] for g in mapping.values() if g.startswith("tops.")}
        assert tops == ({str(k)} if k < last else set())
    sub = DepthSubModel(spec, last, heads_for(last, True)).state_dict()
    mapping = key_map(list(sub), last, last, group_tops=False)
    assert any(g.startswith("head.") for g in mapping.values())
    assert {g.split(".")[1] for g in mapping.values() if g.startswith("aux.")} == {"1", "2", "3"}


def test_depth_loss_and_kd_ramp() -> None:
    torch.manual_seed(0)
    y = torch.randint(0, 10, (8,))
    outs = [torch.randn(8, 10) for _ in range(3)]
    ce = sum(torch.nn.functional.cross_entropy(o, y) for o in outs)
    assert torch.isclose(depth_loss(outs, y, 0.0), ce)
    assert depth_loss(outs, y, 1.0) > ce
    assert kd_ramp(1, 10) < kd_ramp(5, 10) < kd_ramp(11, 10) == 1.0


def test_depthfl_merges_each_key_over_the_nodes_holding_it() -> None:
    s = strategy(DepthFL)
    before = {k: v.clone() for k, v in s.model.state_dict().items()}
    assignments, good = [], []
    for node, tier, value, n in ((1, s.ladder()[-1], 1.0, 1), (2, s.ladder()[-2], 4.0, 3)):
        p = s.payload(tier, 1)
        sent = Assignment(node, s.order(tier, 1), p.arrays, p.shapes, p.where)
        assignments.append(sent)
        full = {k: Array(np.full(shape, value, np.float32)) for k, shape in p.shapes.items()}
        trained = Trained(num_examples=n, train_loss=1.0, need_mb=tier.need_mb, memory_mb=1e9)
        good.append(Returned(node, sent, trained, trained.content(ArrayRecord(full))))
    plan = RoundPlan(1, 2, 2, s.ladder()[-2].need_mb, assignments, s.nodes)
    s.apply(plan, RoundOutcome(good=good, replies=2))
    after = s.model.state_dict()
    assert torch.allclose(after["blocks.0.0.0.weight"], torch.tensor((1 * 1 + 4 * 3) / 4))
    assert torch.allclose(after["blocks.1.0.0.weight"], torch.tensor(4.0))  # depth 2 only
    assert torch.allclose(after["aux.1.head.2.weight"], torch.tensor(13 / 4))  # both hold head 1
    assert torch.equal(after["blocks.3.0.0.weight"], before["blocks.3.0.0.weight"])
    assert torch.equal(after["head.2.weight"], before["head.2.weight"])


def test_inclusivefl_top_block_takes_momentum_from_the_larger_group() -> None:
    s = strategy(InclusiveFL, momentum=0.2)
    ladder = {int(t.value): t for t in s.ladder()}
    s.nodes.budgets = {1: ladder[1].need_mb, 2: ladder[4].need_mb}  # groups: depth 1 and 4
    assert s.groups() == [1, 4]
    old = {k: v.clone() for k, v in s.model.state_dict().items()}
    moved = {
        k: v + (1.0 if k.startswith("blocks.0.") else 0.5 if k.startswith("tops.1.") else 0.0)
        for k, v in old.items()
        if v.is_floating_point()
    }
    s.model.load_state_dict(moved, strict=False)
    s.distill(old)
    new = s.model.state_dict()
    w = "tops.1.0.0.weight"
    assert torch.allclose(new[w], old[w] + 0.8 * 0.5 + 0.2 * 1.0)
    # Buffers are not distilled.
    assert torch.allclose(new["tops.1.0.1.running_mean"], old["tops.1.0.1.running_mean"] + 0.5)


# ---- tiers ---------------------------------------------------------------------------
@pytest.mark.parametrize("cls", [HeteroFL, FedRolex, DepthFL, InclusiveFL])
def test_tier_choice_is_monotone_in_budget(cls: type[TieredMethod]) -> None:
    s = strategy(cls)
    needs = sorted(t.need_mb for t in s.ladder())
    budgets = np.linspace(0, needs[-1] * 1.2, 40)
    chosen = [s.tier_for(b) for b in budgets]
    values = [-1.0 if t is None else t.value for t in chosen]
    assert values == sorted(values)
    assert chosen[0] is None and chosen[-1] == s.ladder()[0]
    assert all(t is None or t.need_mb <= b for t, b in zip(chosen, budgets, strict=True))


def test_allsmall_takes_the_widest_model_the_smallest_budget_holds() -> None:
    s = strategy(AllSmall)
    ladder = s.make_ladder()
    s.nodes.budgets = {1: ladder[2].need_mb + 0.01, 2: ladder[0].need_mb * 2}
    assert s.choose_ratio() == ladder[2].value
    s.ratio = s.choose_ratio()
    s._ladder = None
    assert s.tier_for(1e9).value == s.ratio and s.tier_for(0.0) is None


def test_depth_classifier_is_the_deepest_trained_tier() -> None:
    s = strategy(DepthFL, ensemble=True)
    ladder = {int(t.value): t for t in s.ladder()}
    s.nodes.budgets = {1: ladder[2].need_mb}
    assert s.eval_depth() == 2
    model = s.final_model()
    assert isinstance(model, DepthClassifier) and len(model.net.heads) == 2
    assert model.eval()(torch.randn(2, 1, 28, 28)).shape == (2, 10)


def test_allsmall_checkpoint_keeps_its_width() -> None:
    s = strategy(AllSmall)
    s.ratio, s._ladder = 0.25, None
    s.model = s.build_model()
    state = s.state_dict()
    resumed = strategy(AllSmall)
    resumed.load_state_dict(state)
    assert resumed.ratio == 0.25
    assert all(torch.equal(v, state["model"][k]) for k, v in resumed.model.state_dict().items())
    assert resumed.memory_summary()["tier_peak_mb_est"] == {
        "r=0.25": round(s.ladder()[0].need_mb, 2)
    }
