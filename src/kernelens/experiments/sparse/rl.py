"""Sparse Kernels in reinforcement learning: DQN on CartPole with an SK Q-head vs an MLP Q-head.

Both agents share everything (double DQN, replay, epsilon schedule, optimiser, trunk
architecture) except the readout that maps trunk features to Q-values: a linear layer, or a
Sparse Kernel layer whose evaluation points (centers, in state space), target values (the
Q-values attached to the centers) and bandwidth are all learned, with the trunk as its
feature module.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import gymnasium as gym
import matplotlib.pyplot as plt
import numpy as np
import torch
from torch import nn

from ..._progress import progress
from ...sparse import SparseKernelLayer, median_neighbor_distance
from ..registry import register
from ..result import Result, Table

__all__ = ["DQNConfig", "DQNRun", "run_dqn", "sparse_dqn"]

#: Scale of CartPole's observations (cart position, velocity, pole angle, angular velocity).
_OBS_SCALE = torch.tensor([2.4, 3.0, 0.21, 3.5])


def _trunk() -> nn.Sequential:
    return nn.Sequential(nn.Linear(4, 64), nn.ReLU(), nn.Linear(64, 64), nn.ReLU())


class MLPQNet(nn.Module):
    """Trunk (two 64-unit ReLU layers) and a linear Q-head ``[B, 4] -> [B, 2]``."""

    def __init__(self) -> None:
        super().__init__()
        self.trunk = _trunk()
        self.head = nn.Linear(64, 2)

    def forward(self, s: torch.Tensor) -> torch.Tensor:
        return self.head(self.trunk(s))


class SKQNet(nn.Module):
    """The same trunk with a Sparse Kernel Q-head: centers ``[m, 4]`` in (scaled) state space,
    Q-value targets ``[m, 2]`` (initialised to 0), all learned, k neighbours per query."""

    def __init__(self, centers: torch.Tensor, *, k: int) -> None:
        super().__init__()
        self.trunk = _trunk()
        with torch.no_grad():
            bw = median_neighbor_distance(self.trunk(centers), k)
        self.sk = SparseKernelLayer(
            centers,
            torch.zeros(len(centers), 2),
            k=k,
            bandwidth=bw,
            reg=1e-3,
            features=self.trunk,
            learn_centers=True,
            learn_targets=True,
            learn_bandwidth=True,
        )

    def forward(self, s: torch.Tensor) -> torch.Tensor:
        return self.sk(s)


@dataclass
class DQNConfig:
    """Hyper-parameters shared by both heads."""

    steps: int = 50_000
    warmup: int = 500
    batch_size: int = 64
    gamma: float = 0.99
    lr: float = 1e-3
    #: learning rate of the SK head's targets (Q-values of order 1 / (1 - gamma) must be
    #: reachable in a few thousand updates)
    target_values_lr: float = 3e-2
    sync_every: int = 500
    eps_end: float = 0.05
    eps_decay_steps: int = 10_000
    n_centers: int = 64
    k: int = 16
    eval_episodes: int = 5


@dataclass
class DQNRun:
    """One training run: returns of the training episodes and a final greedy evaluation."""

    head: str
    seed: int
    episode_end_steps: list[int] = field(default_factory=list)
    episode_returns: list[float] = field(default_factory=list)
    eval_return: float = 0.0
    seconds: float = 0.0


def _make_net(head: str, warmup_states: torch.Tensor, cfg: DQNConfig, seed: int) -> nn.Module:
    torch.manual_seed(seed)
    if head == "mlp":
        return MLPQNet()
    gen = torch.Generator().manual_seed(seed)
    pick = torch.randperm(len(warmup_states), generator=gen)[: cfg.n_centers]
    return SKQNet(warmup_states[pick], k=cfg.k)


def _greedy(net: nn.Module, s: torch.Tensor) -> int:
    with torch.no_grad():
        return int(net(s[None]).argmax(dim=1))


def run_dqn(head: str, seed: int, cfg: DQNConfig) -> DQNRun:
    """Train double DQN with the ``"mlp"`` or ``"sk"`` Q-head on CartPole-v1."""
    env = gym.make("CartPole-v1")
    rng = np.random.default_rng(seed)
    obs, _ = env.reset(seed=seed)
    S = torch.zeros(cfg.steps, 4)
    A = torch.zeros(cfg.steps, dtype=torch.int64)
    R = torch.zeros(cfg.steps)
    S2 = torch.zeros(cfg.steps, 4)
    done_buf = torch.zeros(cfg.steps)
    run = DQNRun(head, seed)
    net: nn.Module | None = None
    target: nn.Module | None = None
    opt: torch.optim.Optimizer | None = None
    ep_return = 0.0
    t0 = time.perf_counter()
    for t in progress(range(cfg.steps), desc=f"DQN {head} seed {seed}"):
        s = torch.as_tensor(obs, dtype=torch.float32) / _OBS_SCALE
        eps = max(cfg.eps_end, 1.0 - (1.0 - cfg.eps_end) * t / cfg.eps_decay_steps)
        explore = net is None or rng.random() < eps
        a = int(rng.integers(2)) if explore else _greedy(net, s)
        obs, r, terminated, truncated, _ = env.step(a)
        S[t], A[t], R[t], done_buf[t] = s, a, float(r), float(terminated)
        S2[t] = torch.as_tensor(obs, dtype=torch.float32) / _OBS_SCALE
        ep_return += float(r)
        if terminated or truncated:
            run.episode_end_steps.append(t + 1)
            run.episode_returns.append(ep_return)
            ep_return = 0.0
            obs, _ = env.reset()
        if t + 1 == cfg.warmup:
            net, target, opt = _start_learning(head, S[: cfg.warmup], cfg, seed)
        if net is not None and target is not None and opt is not None:
            _update(net, target, opt, (S, A, R, S2, done_buf), t + 1, rng, cfg)
            if (t + 1) % cfg.sync_every == 0:
                target.load_state_dict(net.state_dict())
    assert net is not None
    run.seconds = time.perf_counter() - t0
    run.eval_return = _evaluate(net, cfg.eval_episodes, seed)
    env.close()
    return run


def _start_learning(
    head: str, warmup_states: torch.Tensor, cfg: DQNConfig, seed: int
) -> tuple[nn.Module, nn.Module, torch.optim.Optimizer]:
    net = _make_net(head, warmup_states, cfg, seed)
    target = _make_net(head, warmup_states, cfg, seed)
    target.load_state_dict(net.state_dict())
    for p in target.parameters():
        p.requires_grad_(False)
    values = [p for n, p in net.named_parameters() if n == "sk.targets"]
    rest = [p for n, p in net.named_parameters() if n != "sk.targets"]
    groups = [{"params": rest, "lr": cfg.lr}]
    if values:
        groups.append({"params": values, "lr": cfg.target_values_lr})
    return net, target, torch.optim.Adam(groups)


def _update(
    net: nn.Module,
    target: nn.Module,
    opt: torch.optim.Optimizer,
    buffers: tuple[torch.Tensor, ...],
    filled: int,
    rng: np.random.Generator,
    cfg: DQNConfig,
) -> None:
    """One double-DQN step on a minibatch drawn from the first ``filled`` transitions of
    ``buffers = (states, actions, rewards, next states, terminated)``."""
    S, A, R, S2, D = buffers
    b = torch.from_numpy(rng.integers(filled, size=cfg.batch_size))
    with torch.no_grad():
        a2 = net(S2[b]).argmax(dim=1, keepdim=True)  # double DQN: online net picks the action
        q2 = target(S2[b]).gather(1, a2)[:, 0]
        y = R[b] + cfg.gamma * (1.0 - D[b]) * q2
    q = net(S[b]).gather(1, A[b, None])[:, 0]
    loss = nn.functional.smooth_l1_loss(q, y)
    opt.zero_grad()
    loss.backward()
    nn.utils.clip_grad_norm_(net.parameters(), 10.0)
    opt.step()


def _evaluate(net: nn.Module, episodes: int, seed: int) -> float:
    """Mean return of greedy episodes, run in lockstep so each step is one batched forward."""
    envs = [gym.make("CartPole-v1") for _ in range(episodes)]
    obs = [env.reset(seed=10_000 + seed * 100 + e)[0] for e, env in enumerate(envs)]
    active = list(range(episodes))
    total = 0.0
    while active:
        states = torch.as_tensor(np.stack([obs[e] for e in active]), dtype=torch.float32)
        with torch.no_grad():
            actions = net(states / _OBS_SCALE).argmax(dim=1).tolist()
        still = []
        for e, a in zip(active, actions):
            obs[e], r, terminated, truncated, _ = envs[e].step(a)
            total += float(r)
            if not (terminated or truncated):
                still.append(e)
        active = still
    for env in envs:
        env.close()
    return total / episodes


def _curve(run: DQNRun, grid: np.ndarray, window: int) -> np.ndarray:
    """Mean return of the training episodes that ended in the ``window`` steps before each
    grid point (NaN where none ended)."""
    ends = np.asarray(run.episode_end_steps)
    rets = np.asarray(run.episode_returns)
    out = np.full(len(grid), np.nan)
    for i, g in enumerate(grid):
        sel = (ends <= g) & (ends > g - window)
        if sel.any():
            out[i] = rets[sel].mean()
    return out


@register(
    "sparse_dqn",
    title="Sparse Kernels in RL: DQN on CartPole with an SK Q-head vs an MLP Q-head",
    area="sparse",
)
def sparse_dqn(quick: bool = True) -> Result:
    """Training returns vs environment steps over several seeds, and a greedy evaluation."""
    if quick:
        cfg = DQNConfig(
            steps=1500, warmup=250, sync_every=250, eps_decay_steps=1000, eval_episodes=5
        )
        seeds = [0, 1]
    else:
        cfg = DQNConfig()
        seeds = [0, 1, 2, 3, 4]
    runs = {head: [run_dqn(head, s, cfg) for s in seeds] for head in ("mlp", "sk")}
    window = max(cfg.steps // 10, 250)
    grid = np.linspace(window, cfg.steps, 10).astype(int)
    fig, ax = plt.subplots(figsize=(6, 4))
    rows: list[list[object]] = []
    metrics: dict[str, float] = {}
    label = {"mlp": "MLP Q-head", "sk": f"SK Q-head (m={cfg.n_centers}, k={cfg.k})"}
    for head, rs in runs.items():
        curves = np.stack([_curve(r, grid, window) for r in rs])
        mean = np.nanmean(curves, axis=0)
        ax.plot(grid, mean, marker="o", label=label[head])
        lo, hi = np.nanmin(curves, axis=0), np.nanmax(curves, axis=0)
        ax.fill_between(grid, lo, hi, alpha=0.2)
        evals = [r.eval_return for r in rs]
        last = [float(np.mean(r.episode_returns[-10:])) for r in rs]
        secs = [r.seconds for r in rs]
        rows.append(
            [
                label[head],
                len(rs),
                float(np.mean(last)),
                float(np.std(last)),
                float(np.mean(evals)),
                float(np.std(evals)),
                float(np.mean(secs)),
            ]
        )
        metrics[f"{head} eval return"] = float(np.mean(evals))
        metrics[f"{head} last-10 return"] = float(np.mean(last))
        metrics[f"{head} seconds per run"] = float(np.mean(secs))
    ax.set_xlabel("environment steps")
    ax.set_ylabel(f"mean training return (last {window} steps)")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    ratio = metrics["sk seconds per run"] / metrics["mlp seconds per run"]
    summary = (
        f"Double DQN on CartPole-v1, {cfg.steps} environment steps, {len(seeds)} seeds per "
        f"head; the SK head has {cfg.n_centers} learned centers (initialised from warm-up "
        f"states), learned Q-value targets and bandwidth, k = {cfg.k}, on the same trunk as "
        f"the MLP head. Greedy evaluation over {cfg.eval_episodes} episodes after training: "
        f"MLP {metrics['mlp eval return']:.1f} +- {rows[0][5]:.1f}, SK "
        f"{metrics['sk eval return']:.1f} +- {rows[1][5]:.1f} (maximum 500). The SK head costs "
        f"{ratio:.1f}x the MLP head's wall time per run."
        + (
            f" Quick mode ({cfg.steps} steps, {len(seeds)} seeds) is a smoke-sized run: "
            "CartPole returns vary strongly between seeds this early, so no ranking of the "
            "heads should be read from it; the full version (50,000 steps, 5 seeds) is the "
            "comparison."
            if quick
            else ""
        )
    )
    return Result(
        "sparse_dqn",
        "DQN on CartPole: SK Q-head vs MLP Q-head",
        summary,
        [
            Table(
                "Returns",
                [
                    "head",
                    "seeds",
                    "last-10 train return",
                    "std",
                    "greedy eval return",
                    "std",
                    "seconds / run",
                ],
                rows,
            )
        ],
        [("Training return vs steps (mean over seeds; band = min..max)", fig)],
        metrics,
    )
