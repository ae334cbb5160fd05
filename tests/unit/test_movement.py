"""Effective movement on made-up parameter trajectories."""

import pytest
import torch

from profl_strategy.methods.profl.movement import (
    CANDIDATES,
    CandidateRecorder,
    ConvergenceDetector,
    effective_movement,
    sampling_noise,
)


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


def sampled_rounds(drift: float, rounds: int, seed: int = 0) -> tuple[list, list]:
    """A block trained by 4 sampled nodes a round: global snapshots and sampling noise.

    Each node's update is the common drift plus a node-specific pull (non-IID
    data, heavy: std 1 per coordinate against a drift of ``drift``).
    """
    g = torch.Generator().manual_seed(seed)
    d, n = 2000, 4
    w = torch.zeros(d, dtype=torch.float64)
    snaps, noise = [w.clone()], []
    direction = torch.ones(d, dtype=torch.float64) / d**0.5
    for _ in range(rounds):
        updates = [
            w + drift * direction * d**0.5 + torch.randn(d, generator=g, dtype=torch.float64)
            for _ in range(n)
        ]
        noise.append(sampling_noise(updates, [1.0] * n))
        w = torch.stack(updates).mean(0)
        snaps.append(w.clone())
    return snaps, noise


def test_sampling_noise_estimates_the_variance_of_the_mean() -> None:
    g = torch.Generator().manual_seed(1)
    d, n, sigma = 20_000, 4, 0.5
    updates = [3.0 + sigma * torch.randn(d, generator=g) for _ in range(n)]
    assert sampling_noise(updates, [1.0] * n) == pytest.approx(d * sigma**2 / n, rel=0.05)
    assert sampling_noise(updates[:1], [1.0]) == 0.0  # one node: nothing to see
    # weights: a node with all the weight leaves no sampling noise... of the others
    assert sampling_noise(updates, [1.0, 0.0, 0.0, 0.0]) == pytest.approx(0.0, abs=1e-9)
    with pytest.raises(ValueError, match="weights"):
        sampling_noise(updates, [1.0])


def test_denoised_em_tells_drift_under_sampling_noise_from_convergence() -> None:
    # Per round, the drift is half the sampling noise of the mean step.
    learning, learning_noise = sampled_rounds(drift=0.25, rounds=4)
    converged, converged_noise = sampled_rounds(drift=0.0, rounds=4)
    # Plain EM barely tells them apart: 0.63 against a random walk's ~1/sqrt(4).
    plain = effective_movement(learning), effective_movement(converged)
    assert plain[0] - plain[1] < 0.2
    assert effective_movement(learning, "denoised", learning_noise) > 0.65
    assert effective_movement(converged, "denoised", converged_noise) < 0.3


def test_detector_feeds_noise_and_checkpoints_it() -> None:
    snaps, noise = sampled_rounds(drift=0.0, rounds=6)
    det = ConvergenceDetector(window=4, threshold=0.5, patience=2, variant="denoised")
    det.reset(snaps[0])
    ems = [det.update(w, s) for w, s in zip(snaps[1:], noise, strict=True)]
    assert ems[:3] == [None] * 3 and all(e is not None and e < 0.5 for e in ems[3:])
    assert det.converged
    copy = ConvergenceDetector(window=4, threshold=0.5, patience=2, variant="denoised")
    copy.load_state_dict(det.state_dict())
    assert list(copy.noise) == list(det.noise) and len(copy.noise) == 4


def test_l1_norm_form_of_the_authors_code() -> None:
    # two steps: +1 on one coordinate, then +1 on another: L1 net 2 / path 2 = 1,
    # L2 net sqrt(2) / path 2
    w = [torch.zeros(2), torch.tensor([1.0, 0.0]), torch.tensor([1.0, 1.0])]
    assert effective_movement(w, norm="l1") == pytest.approx(1.0)
    assert effective_movement(w, norm="l2") == pytest.approx(2**0.5 / 2)
    with pytest.raises(ValueError, match="norm"):
        effective_movement(w, norm="l3")


def test_detector_watches_a_fixed_sample_of_the_parameters() -> None:
    det = ConvergenceDetector(window=2, threshold=0.5, patience=1, norm="l1", sample=10)
    start = torch.zeros(1000)
    det.reset(start)
    assert det.index is not None and len(det.index) == 10
    first = det.index.clone()
    det.reset(start)  # the same block size draws the same sample
    assert torch.equal(first, det.index)
    # a move outside the sample is invisible; inside it counts
    outside = torch.ones(1000)
    outside[first] = 0.0
    assert det.update(outside) is None and det.update(outside) == 0.0
    restored = ConvergenceDetector(window=2, threshold=0.5, patience=1, norm="l1", sample=10)
    restored.load_state_dict(det.state_dict())
    assert torch.equal(restored.index, det.index)


def test_candidate_recorder_logs_each_form_as_its_own_detector_would() -> None:
    g = torch.Generator().manual_seed(0)
    walk = [torch.zeros(20_000)]
    for _ in range(10):
        walk.append(walk[-1] + 0.1 + torch.randn(20_000, generator=g))
    recorder = CandidateRecorder()
    recorder.reset(walk[0])
    logged = [recorder.update(w, noise=50.0) for w in walk[1:]]
    for name, (window, variant, norm, sample) in CANDIDATES.items():
        assert all(row[name] is None for row in logged[: window - 1]), name
        assert all(row[name] is not None for row in logged[window - 1 :]), name
        if sample:
            continue  # a sampled form watches a random subset: checked by its detector's tests
        snaps = walk[-window - 1 :]
        expected = effective_movement(snaps, variant, [50.0] * window, norm)
        assert logged[-1][name] == pytest.approx(expected), name


def test_candidate_recorder_resumes_from_its_checkpoint() -> None:
    """A resumed run logs the values an uninterrupted one would have."""
    g = torch.Generator().manual_seed(1)
    walk = [torch.zeros(20_000)]
    for _ in range(12):
        walk.append(walk[-1] + 0.1 + torch.randn(20_000, generator=g))
    whole, first = CandidateRecorder(), CandidateRecorder()
    whole.reset(walk[0])
    first.reset(walk[0])
    expected = [whole.update(w, noise=5.0) for w in walk[1:]]
    for w in walk[1:7]:
        first.update(w, noise=5.0)
    resumed = CandidateRecorder()
    resumed.reset(torch.zeros(20_000))
    resumed.load_state_dict(first.state_dict())
    assert [resumed.update(w, noise=5.0) for w in walk[7:]] == expected[6:]
