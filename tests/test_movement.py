"""Effective movement on made-up parameter trajectories."""

import pytest
import torch

from profl_strategy.movement import ConvergenceDetector, effective_movement


def line(n: int) -> list[torch.Tensor]:
    return [torch.tensor([float(i), 2.0 * i]) for i in range(n)]


def zigzag(n: int) -> list[torch.Tensor]:
    return [torch.tensor([1.0 if i % 2 else -1.0, 0.0]) for i in range(n)]


def test_straight_path_moves_fully() -> None:
    assert effective_movement(line(6)) == pytest.approx(1.0)


def test_oscillation_has_no_net_movement() -> None:
    assert effective_movement(zigzag(5)) == pytest.approx(0.0)
    # odd number of steps: net = one step out of five
    assert effective_movement(zigzag(6)) == pytest.approx(0.2)


def test_still_block_counts_as_converged() -> None:
    assert effective_movement([torch.ones(3)] * 4) == 0.0


def test_scalar_variant_uses_norms() -> None:
    rotating = [torch.tensor([1.0, 0.0]), torch.tensor([0.0, 1.0]), torch.tensor([-1.0, 0.0])]
    assert effective_movement(rotating, "vector") == pytest.approx(2 / (2 * 2**0.5))
    assert effective_movement(rotating, "scalar") == 0.0  # constant norm
    assert effective_movement(line(4), "scalar") == pytest.approx(1.0)


def test_detector_needs_full_window_and_patience() -> None:
    det = ConvergenceDetector(window=4, threshold=0.3, patience=2)
    traj = zigzag(9)
    det.reset(traj[0])
    ems = [det.update(w) for w in traj[1:]]
    assert ems[:3] == [None, None, None]
    assert all(em is not None and em < 0.3 for em in ems[3:])
    det.reset(traj[0])
    for w in traj[1:5]:
        det.update(w)
    assert not det.converged  # one round below the threshold only
    det.update(traj[5])
    assert det.converged


def test_moving_block_never_converges() -> None:
    det = ConvergenceDetector(window=3, threshold=0.3, patience=1)
    traj = line(10)
    det.reset(traj[0])
    for w in traj[1:]:
        det.update(w)
        assert not det.converged


@pytest.mark.parametrize(
    "kwargs",
    [{"window": 1}, {"threshold": 0.0}, {"threshold": 1.0}, {"patience": 0}, {"variant": "x"}],
)
def test_bad_parameters_are_rejected(kwargs: dict) -> None:
    args = {"window": 3, "threshold": 0.3, "patience": 2} | kwargs
    with pytest.raises(ValueError):
        ConvergenceDetector(**args)
