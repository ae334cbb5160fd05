"""ProFL ClientApp: reports its memory budget and trains only the step it is sent."""

from __future__ import annotations

from logging import ERROR, WARNING

import numpy as np
import torch
from flwr.app import ArrayRecord, ConfigRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp
from flwr.common import log
from torch.utils.data import DataLoader

from client_app.mods import pin_threads, skip_expired
from client_app.plan_train import train_with_plan
from client_app.train import train_step
from profl_strategy.budgets import NodeConfigError, node_budget_mb
from profl_strategy.memory import cuda_workspace_mb, estimate_step
from profl_strategy.plan_memory import estimate_plan
from profl_strategy.plans import Plan
from profl_strategy.protocol import model_key_of, profile_of, step_of
from profl_strategy.step_model import StepModel

app = ClientApp(mods=[skip_expired, pin_threads])


def _budget(context: Context, cfg: ConfigRecord) -> tuple[float, str]:
    """The MB the memory model's estimates may use on this node.

    A real cap (``memory-mb`` in the node config) on a CUDA device also has to
    hold PyTorch's cuBLAS workspaces, which the estimates leave out: they are
    taken off here, so the strategy and this node compare the same figures.
    Raises :class:`NodeConfigError` (naming this node) for a config the run
    cannot use, so no handler ever trains with a made-up budget.
    """
    mb, source = node_budget_mb(
        dict(context.node_config),
        profile_of(cfg),
        float(cfg["full-peak-mb"]),
        int(cfg["seed"]),
        node_id=context.node_id,
    )
    if source == "node-config" and torch.cuda.is_available():
        mb -= cuda_workspace_mb(torch.cuda.get_device_capability())
    return mb, source


def local_loader(cfg: ConfigRecord, context: Context) -> tuple[DataLoader, np.ndarray, int]:
    """This node's training loader (seeded per round), its labels, and the round seed.

    A ``data-dir`` in the node's own config (deployment) wins over the run's.
    """
    # Imported here: the data stack (datasets, pyarrow, pandas, flwr-datasets,
    # torchvision) takes seconds, and a deployed ClientApp starts a fresh
    # process for every message, budget queries included.
    from client_app.dataset import load_partition, make_loader, subsample_rows

    node = context.node_config
    pid, n = int(node["partition-id"]), int(node["num-partitions"])
    seed = int(cfg["seed"])
    images, labels = load_partition(
        str(cfg["dataset"]),
        pid,
        n,
        partitioner=str(cfg["partitioner"]),
        alpha=float(cfg["alpha"]),
        shards_per_partition=int(cfg["shards"]),
        seed=seed,
        data_dir=str(node.get("data-dir", cfg["data-dir"])),
    )
    share = float(cfg.get("subsample", 1.0))
    if share < 1:
        keep = subsample_rows(len(labels), share, seed=seed, partition_id=pid)
        images, labels = images[keep], labels[keep]
    round_seed = seed * 100_003 + int(cfg["server-round"]) * 1_009 + pid
    loader = make_loader(
        images,
        labels,
        str(cfg["dataset"]),
        batch_size=int(cfg["batch-size"]),
        train=True,
        seed=round_seed,
    )
    return loader, np.asarray(labels), round_seed


@app.query("budget")
def budget(msg: Message, context: Context) -> Message:
    """Tell the strategy how much memory this node can give to training.

    A node-config the run cannot use is answered with ``config-error`` (and
    logged here, on the node) instead of an exception: the strategy then leaves
    this node out and tells the user why, without a traceback.
    """
    try:
        mb, source = _budget(context, msg.content["config"])
    except NodeConfigError as err:
        log(ERROR, "%s", err)
        return Message(
            RecordDict({"config": ConfigRecord({"config-error": str(err)})}), reply_to=msg
        )
    metrics = MetricRecord({"memory-mb": mb})
    if "partition-id" in context.node_config:
        metrics["partition-id"] = int(context.node_config["partition-id"])
    content = RecordDict({"metrics": metrics, "config": ConfigRecord({"source": source})})
    return Message(content, reply_to=msg)


@app.train("step")
def train(msg: Message, context: Context) -> Message:
    """Train the active block (and its output module) on this node's partition.

    A ``plan`` in the config (strategy with plans on) says how: micro-batches,
    checkpointing, an offloaded prefix... (:mod:`profl_strategy.plans`). The
    node checks that plan's estimated peak against its own budget first.
    """
    cfg = msg.content["config"]
    key, step = model_key_of(cfg), step_of(cfg)
    batch_size = int(cfg["batch-size"])
    budget_mb, _ = _budget(context, cfg)
    plan = Plan.from_label(str(cfg["plan"])) if "plan" in cfg else None
    if plan is None:
        need_mb = estimate_step(key, step, batch_size).total_mb
    else:
        need_mb = estimate_plan(key, step, batch_size, plan).total_mb
    if bool(cfg.get("enforce-budget", True)) and need_mb > budget_mb:
        log(WARNING, "step %s needs %.1f MB > budget %.1f MB: refused", step, need_mb, budget_mb)
        refusal = MetricRecord({"refused": 1, "need-mb": need_mb, "memory-mb": budget_mb})
        return Message(RecordDict({"metrics": refusal}), reply_to=msg)

    loader, labels, round_seed = local_loader(cfg, context)
    torch.manual_seed(round_seed)
    model = StepModel(key.spec(), step, key.out_depth)
    model.load_state_dict(msg.content["arrays"].to_torch_state_dict())
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    hyper = {
        "epochs": int(cfg["local-epochs"]),
        "lr": float(cfg["lr"]),
        "momentum": float(cfg["momentum"]),
        "weight_decay": float(cfg["weight-decay"]),
        "proximal_mu": float(cfg["proximal-mu"]),
        "device": device,
    }
    if plan is None or plan == Plan():
        loss, seen = train_step(model, loader, **hyper)
    else:
        loss, seen = train_with_plan(model, loader, plan, **hyper)
    peak = torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else 0.0
    state = model.state_dict()
    trained = ArrayRecord({k: state[k].detach().cpu() for k in model.trainable_keys()})
    metrics = MetricRecord(
        {
            "num-examples": len(labels),
            "train-loss": loss,
            "need-mb": need_mb,
            "memory-mb": budget_mb,
            "peak-mb-measured": peak,
            "examples-seen": seen,
        }
    )
    used = ConfigRecord({"label": (plan or Plan()).label()})
    content = RecordDict({"arrays": trained, "metrics": metrics, "plan": used})
    return Message(content, reply_to=msg)


# Baseline handlers (train.width, train.depth) register on `app` when imported.
import client_app.baselines  # noqa: E402, F401
