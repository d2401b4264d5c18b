"""Offline agents for PulseRL: d3rlpy wrappers and a plain-PyTorch (QR-)CQL.

The paper's learner is CQL(H) on a quantile-regression DQN (QR-DQN, 200 quantiles,
penalty weight 4, Adam 5e-5, batch 256). d3rlpy's ``DiscreteCQL`` accepts a
``QRQFunctionFactory``; the plain version here shows the whole update on one screen. At
200 quantiles both spend almost all their time in the pairwise quantile Huber loss (a
batch x 200 x 200 tensor); :func:`quantile_huber_loss` computes the same loss and
gradient exactly from sorted targets and prefix sums, which makes the paper's size
trainable on a CPU (``benchmarks/pulserl_cql_speed.py`` records the speed against
d3rlpy). :func:`quantile_huber_loss_pairwise` is the readable reference.
"""

from __future__ import annotations

import copy
import logging
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from pulse_lib.errors import ConfigError, SchemaError
from pulse_lib.pulserl.features import N_FEATURES
from pulse_lib.validation import check_fields, check_layer_widths


def quiet_d3rlpy() -> None:
    """Silence d3rlpy's per-epoch structlog lines (keeps warnings)."""
    import structlog

    structlog.configure(
        wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING)
    )


def fit_d3rlpy(
    algo: Any, dataset: Any, n_steps: int, n_steps_per_epoch: int | None = None
) -> Any:
    """``algo.fit`` without logs on disk or progress bars; returns ``algo``."""
    from pulse_lib.book import quiet_imports

    quiet_imports()  # d3rlpy imports legacy gym, which prints an 'unmaintained' notice
    import d3rlpy

    algo.fit(
        dataset,
        n_steps=n_steps,
        n_steps_per_epoch=n_steps_per_epoch or n_steps,
        logger_adapter=d3rlpy.logging.NoopAdapterFactory(),
        show_progress=False,
    )
    return algo


def greedy_policy(q_values: Any) -> Any:
    """Turn a function ``obs -> (n, 2) Q-values`` into a policy ``obs -> P(send)``
    (greedy)."""

    def policy(obs: np.ndarray) -> np.ndarray:
        q = np.asarray(q_values(obs))
        return (q[:, 1] > q[:, 0]).astype(float)

    return policy


def d3rlpy_q_values(algo: Any, obs: np.ndarray, batch: int = 65_536) -> np.ndarray:
    """``(n, 2)`` Q-values (mean over quantiles) of a trained d3rlpy discrete
    algorithm."""
    obs = np.asarray(obs, dtype=np.float32)
    out = np.empty((obs.shape[0], 2), np.float32)
    for start in range(0, obs.shape[0], batch):
        part = obs[start : start + batch]
        for a in (0, 1):
            out[start : start + batch, a] = algo.predict_value(
                part, np.full(part.shape[0], a)
            )
    return out


@dataclass(frozen=True)
class CQLConfig:
    """Settings of :class:`TorchCQL`.

    Defaults follow the authors' released configuration (``dlb-rl/pulse-rl``:
    ``src/train_model/batch_rl/fixed_replay/configs/quantile.gin`` and
    ``models/CQL_model.yaml``): gamma 0.99, Adam with learning rate 5e-5 and epsilon
    3.125e-4, target network copied every 2,000 gradient steps (8,000 agent steps at one
    update per 4), batch 256, CQL(H) weight 4. Two exceptions, both ours:
    ``n_quantiles`` defaults to 1 (an ordinary mean Q-network; the paper's QR-DQN has
    200, see :meth:`paper`) and the hidden sizes (256, 256) are not taken from the
    release. Chapters' ``ci`` profiles override the learning rate, target interval,
    width and quantiles to train in minutes on a CPU, and say so.
    """

    n_quantiles: int = 1  #: 1 = an ordinary (mean) Q-network; the paper uses 200
    #: weight of the CQL(H) penalty (``minq_weight``); 0 gives (double) DQN
    alpha: float = 4.0
    gamma: float = 0.99  #: discount (released gin config)
    learning_rate: float = 5e-5  #: Adam learning rate (released gin config)
    adam_epsilon: float = 3.125e-4  #: Adam epsilon (released gin config)
    batch_size: int = 256  #: minibatch size (released gin config)
    #: MLP widths (ours; not in the released config)
    hidden: tuple[int, ...] = (256, 256)
    #: gradient steps between target copies (released)
    target_update_interval: int = 2_000
    huber_kappa: float = 1.0  #: quantile Huber threshold (QR-DQN's default)

    @classmethod
    def paper(cls, **overrides: object) -> CQLConfig:
        """The released learner: QR-DQN with 200 quantiles + CQL(H) at weight 4."""
        return cls(**{"n_quantiles": 200, **overrides})  # type: ignore[arg-type]

    def __post_init__(self) -> None:
        counts = ("n_quantiles", "batch_size", "target_update_interval")
        check_fields(
            self,
            integer=counts,
            positive=(*counts, "learning_rate", "adam_epsilon", "huber_kappa"),
            non_negative=("alpha",),
            ranges={"gamma": (0.0, 1.0, "(]")},
        )
        check_layer_widths("CQLConfig.hidden", self.hidden)


class QuantileQNetwork(nn.Module):
    """MLP from 63 features to ``(actions, quantiles)`` return quantiles."""

    def __init__(
        self,
        n_features: int = N_FEATURES,
        n_actions: int = 2,
        n_quantiles: int = 1,
        hidden: tuple[int, ...] = (256, 256),
    ) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        width = n_features
        for h in hidden:
            layers += [nn.Linear(width, h), nn.ReLU()]
            width = h
        layers.append(nn.Linear(width, n_actions * n_quantiles))
        self.body = nn.Sequential(*layers)
        self.n_actions, self.n_quantiles = n_actions, n_quantiles

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        return self.body(obs).view(-1, self.n_actions, self.n_quantiles)

    def features(self, obs: torch.Tensor) -> torch.Tensor:
        """The last hidden layer's activations ``(B, H)`` (everything but the output
        layer)."""
        for layer in self.body[:-1]:
            obs = layer(obs)
        return obs

    def mean_q(self, features: torch.Tensor) -> torch.Tensor:
        """``(B, actions)`` mean over quantiles, from :meth:`features`.

        The mean of a linear layer's outputs is the linear layer with averaged rows, so
        this is one ``H x actions`` product instead of ``H x (actions * quantiles)``
        followed by a mean (equal to rounding).
        """
        head = self.body[-1]
        weight = head.weight.view(self.n_actions, self.n_quantiles, -1).mean(dim=1)
        bias = head.bias.view(self.n_actions, self.n_quantiles).mean(dim=1)
        return torch.addmm(bias, features, weight.t())

    def action_quantiles(
        self, features: torch.Tensor, counts: list[int]
    ) -> torch.Tensor:
        """``(B, quantiles)`` of one action per row, rows grouped by action.

        ``counts[a]`` consecutive rows take action ``a`` (rows sorted by action): each
        group needs only its action's ``quantiles`` outputs, half the output layer's
        work for two actions.
        """
        head = self.body[-1]
        weight = head.weight.view(self.n_actions, self.n_quantiles, -1)
        bias = head.bias.view(self.n_actions, self.n_quantiles)
        if len(counts) != self.n_actions or sum(counts) != features.shape[0]:
            raise SchemaError(
                f"counts {counts} do not split {features.shape[0]} rows "
                "into "
                f"{self.n_actions} actions"
            )
        parts, start = [], 0
        for action, count in enumerate(counts):
            if count:
                parts.append(
                    torch.addmm(
                        bias[action],
                        features[start : start + count],
                        weight[action].t(),
                    )
                )
            start += count
        return parts[0] if len(parts) == 1 else torch.cat(parts)


def quantile_huber_loss_pairwise(
    pred: torch.Tensor, target: torch.Tensor, kappa: float = 1.0
) -> torch.Tensor:
    """QR-DQN loss between predicted quantiles ``(B, N)`` and target samples ``(B,
    N')``.

    The readable reference (Dabney et al. 2017, eq. 10; the released PulseRL code's
    form): every quantile against every target sample, a ``B x N x N'`` tensor. At the
    paper's 200 quantiles and batch 256 that is ten million elements per step, about 0.9
    s forward and backward on one CPU thread: why 200 quantiles were slow.
    :func:`quantile_huber_loss` gives the same numbers without that tensor. With ``N =
    1`` this is half the Huber loss, minimised by the median: the quantile idea
    degenerates gracefully to a robust regression.
    """
    n = pred.shape[1]
    taus = (torch.arange(n, dtype=pred.dtype, device=pred.device) + 0.5) / n
    diff = target.unsqueeze(1) - pred.unsqueeze(2)  # (B, N, N')
    huber = torch.where(
        diff.abs() <= kappa, 0.5 * diff.pow(2), kappa * (diff.abs() - 0.5 * kappa)
    )
    weight = (taus.view(1, -1, 1) - (diff.detach() < 0).to(pred.dtype)).abs()
    return (weight * huber / kappa).sum(dim=1).mean(dim=1).mean()


def _prefix(x: torch.Tensor) -> torch.Tensor:
    """Zero-led running sums along dim 1: ``out[:, k]`` is the sum of the first ``k``
    values."""
    return torch.cat([x.new_zeros(x.shape[0], 1), x.cumsum(dim=1)], dim=1)


def _sorted_loss_and_pred_grad(
    p: torch.Tensor, ts: torch.Tensor, taus: torch.Tensor, kappa: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-quantile loss sums and their derivative in ``p``, from row-sorted targets
    ``ts``.

    For quantile ``theta`` (level ``tau``) the targets split, by ``d = t - theta``, into
    A: ``d < -kappa`` (weight ``1 - tau``, linear), B: ``-kappa <= d < 0`` (``1 - tau``,
    quadratic), C: ``0 <= d <= kappa`` (``tau``, quadratic), D: ``d > kappa`` (``tau``,
    linear).
    Each region is a run of the sorted targets between two binary-search positions; its
    count, sum and sum of squares are differences of prefix sums. (A target exactly on a
    boundary may fall on either side: the Huber function and its slope are continuous at
    ``|d| = kappa`` and contribute nothing at ``d = 0``, so one left-sided search serves
    all.)
    """
    n = p.shape[1]
    m = ts.shape[1]
    # first t >= query
    pos = torch.searchsorted(ts, torch.cat([p - kappa, p, p + kappa], dim=1))
    # sums of t below each query
    s_lo, s_mid, s_hi = _prefix(ts).gather(1, pos).split(n, dim=1)
    # sums of t^2 below
    q_lo, q_mid, q_hi = _prefix(ts * ts).gather(1, pos).split(n, dim=1)
    c_lo, c_mid, c_hi = pos.to(p.dtype).split(n, dim=1)  # counts below
    total = ts.sum(dim=1, keepdim=True)
    sum_b, sum_c = s_mid - s_lo, s_hi - s_mid
    u = sum_b - (c_mid - c_lo) * p  # sum over region B of (t - theta)
    v = sum_c - (c_hi - c_mid) * p  # sum over region C of (t - theta)
    n_d = m - c_hi
    # d loss / d theta = -sum_j weight * clamp(t_j - theta, -kappa, kappa)
    #                  = -[(1 - tau)(u - kappa n_a) + tau (v + kappa n_d)]
    grad = (u - kappa * c_lo).add_(taus * (v - u + kappa * (n_d + c_lo))).neg_()
    # sum over a quadratic region of (t - theta)^2 = sum t^2 - theta (sum t + sum (t -
    # theta))
    below = kappa * (c_lo * (p - 0.5 * kappa) - s_lo) + 0.5 * (
        (q_mid - q_lo) - p * (sum_b + u)
    )
    above = 0.5 * ((q_hi - q_mid) - p * (sum_c + v)) + kappa * (
        total - s_hi - n_d * (p + 0.5 * kappa)
    )
    loss = below.add_(taus * (above - below))
    return loss, grad


def _sorted_target_grad(
    p: torch.Tensor, t: torch.Tensor, taus: torch.Tensor, kappa: float
) -> torch.Tensor:
    """Derivative of the summed loss in each target sample (same regions, seen from a
    target).

    For target ``t`` the quantiles split, by ``d = t - theta``, into ``d > kappa``
    (slope ``kappa tau``), ``0 <= d <= kappa`` (``tau d``), ``-kappa <= d < 0`` (``(1 -
    tau) d``) and ``d < -kappa`` (``-kappa (1 - tau)``): runs of the row-sorted
    quantiles, summed with prefix sums of ``tau``, ``theta`` and ``tau theta``.
    """
    n = p.shape[1]
    ps, order = p.sort(dim=1)
    tau_s = taus.expand_as(p).gather(1, order)
    c_tau, c_p, c_tp = _prefix(tau_s), _prefix(ps), _prefix(tau_s * ps)
    m = t.shape[1]
    pos = torch.searchsorted(ps, torch.cat([t - kappa, t, t + kappa], dim=1))
    # quantiles below t - kappa | below t | below t + kappa
    a, b, c = pos.split(m, dim=1)

    def window(table: torch.Tensor, lo: torch.Tensor, hi: torch.Tensor) -> torch.Tensor:
        return table.gather(1, hi) - table.gather(1, lo)

    tau_ab, tp_ab = window(c_tau, a, b), window(c_tp, a, b)
    tau_bc, tp_bc, p_bc = window(c_tau, b, c), window(c_tp, b, c), window(c_p, b, c)
    tau_far = c_tau.gather(1, a)
    one_minus_tau_beyond = (n - c).to(p.dtype) - (
        c_tau[:, n : n + 1] - c_tau.gather(1, c)
    )
    return (
        kappa * tau_far
        + (t * tau_ab - tp_ab)
        + (t * ((c - b).to(p.dtype) - tau_bc) - (p_bc - tp_bc))
        - kappa * one_minus_tau_beyond
    )


def _sort_rows(x: torch.Tensor) -> torch.Tensor:
    """Each row sorted ascending (NumPy's sort on a CPU: several times faster than
    torch's here)."""
    if x.device.type == "cpu":
        return torch.from_numpy(np.sort(x.numpy(), axis=1))
    return x.sort(dim=1).values


def _argsort_rows(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Each row sorted ascending, and the permutation that sorts it."""
    if x.device.type == "cpu":
        a = x.numpy()
        order = np.argsort(a, axis=1)
        return torch.from_numpy(np.take_along_axis(a, order, axis=1)), torch.from_numpy(
            order
        )
    values, order = x.sort(dim=1)
    return values, order


class _SortedQuantileHuber(torch.autograd.Function):
    """The quantile Huber loss from sorted targets and prefix sums, with its exact
    gradient."""

    @staticmethod
    def forward(
        ctx: Any, pred: torch.Tensor, target: torch.Tensor, kappa: float
    ) -> torch.Tensor:
        batch, n = pred.shape
        m = target.shape[1]
        ts = _sort_rows(target.detach().to(torch.float64))
        # centre each row on its median target: prefix sums of t and t^2 stay small, so
        # the
        # windows' differences of prefix sums do not cancel catastrophically at large
        # scales
        centre = ts[:, m // 2 : m // 2 + 1].clone()
        ts -= centre
        p = pred.detach().to(torch.float64) - centre
        # quantiles in increasing order: the binary searches then walk memory in order
        ps, order = _argsort_rows(p)
        taus = (order.to(torch.float64) + 0.5).div_(n)
        loss, grad_sorted = _sorted_loss_and_pred_grad(ps, ts, taus, kappa)
        scale = 1.0 / (batch * m * kappa)
        grad_p = torch.empty_like(grad_sorted).scatter_(
            1, order, grad_sorted.mul_(scale)
        )
        ctx.save_for_backward(grad_p)
        ctx.target_grad = None
        if ctx.needs_input_grad[1]:
            t = target.detach().to(torch.float64) - centre
            all_taus = (
                (torch.arange(n, dtype=torch.float64, device=p.device) + 0.5)
                .div_(n)
                .view(1, n)
            )
            ctx.target_grad = _sorted_target_grad(p, t, all_taus, kappa) * scale
        ctx.dtypes = (pred.dtype, target.dtype)
        out_dtype = torch.promote_types(pred.dtype, target.dtype)
        return (loss.sum() * scale).to(out_dtype)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx: Any, grad_out: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        (grad_p,) = ctx.saved_tensors
        g = grad_out.to(torch.float64)
        grad_pred = (grad_p * g).to(ctx.dtypes[0]) if ctx.needs_input_grad[0] else None
        grad_target = None
        if ctx.target_grad is not None:
            grad_target = (ctx.target_grad * g).to(ctx.dtypes[1])
        return grad_pred, grad_target, None


def _check_loss_inputs(pred: torch.Tensor, target: torch.Tensor, kappa: float) -> None:
    if pred.ndim != 2 or target.ndim != 2:
        raise SchemaError(
            f"pred and target must be 2-D (batch, quantiles), got shapes "
            f"{tuple(pred.shape)} and {tuple(target.shape)}"
        )
    if pred.shape[0] != target.shape[0]:
        raise SchemaError(
            f"pred has batch size {pred.shape[0]}, target has {target.shape[0]}"
        )
    if pred.shape[0] == 0 or pred.shape[1] == 0 or target.shape[1] == 0:
        raise SchemaError(
            f"empty input: pred {tuple(pred.shape)}, target {tuple(target.shape)}"
        )
    if not kappa > 0:
        raise ConfigError(f"kappa must be > 0, got {kappa}")


def quantile_huber_loss_sorted(
    pred: torch.Tensor, target: torch.Tensor, kappa: float = 1.0
) -> torch.Tensor:
    """:func:`quantile_huber_loss_pairwise`, exactly, in ``O(N' log N' + N log N')`` per
    row.

    For one row the loss of quantile ``theta_i`` is a sum over the target samples of a
    piecewise function of ``t - theta_i`` (linear beyond ``kappa``, quadratic inside,
    weighted ``tau_i`` above ``theta_i`` and ``1 - tau_i`` below). The targets are
    sorted once per row; three binary searches (``torch.searchsorted``) per quantile
    find the four regions, and prefix sums of the targets and of their squares give each
    region's contribution and the gradient. Computed in float64 with each row centred on
    its median target, the result is cast back to the inputs' dtype. The backward pass
    is written by hand (no ``B x N x N'`` tensor either way); the gradient in ``target``
    is computed only when ``target`` requires it (TD targets normally do not), as the
    pairwise form would give it. Not twice differentiable. Works on any device.
    """
    _check_loss_inputs(pred, target, kappa)
    return _SortedQuantileHuber.apply(pred, target, float(kappa))


def quantile_huber_loss(
    pred: torch.Tensor, target: torch.Tensor, kappa: float = 1.0
) -> torch.Tensor:
    """QR-DQN loss between predicted quantiles ``(B, N)`` and target samples ``(B,
    N')``.

    Equal (values and gradients, to rounding) to :func:`quantile_huber_loss_pairwise`,
    the
    readable reference. On a CPU it uses :func:`quantile_huber_loss_sorted` (sorted
    targets,
    prefix sums, binary search: no ``B x N x N'`` tensor;
    ``benchmarks/pulserl_cql_speed.py``
    records both forms' time at batch 256 x 200 quantiles). On CUDA it uses the pairwise
    form: there the ``B x N x N'`` tensor is a few fused elementwise kernels and float64
    (which the sorted form uses internally) is slow on most GPUs; this choice is not
    measured here (no GPU). When the
    fast form's result is not finite (NaN or infinity in the inputs, overflow), the
    pairwise
    form is computed instead, so non-finite values propagate exactly as they always did.
    """
    _check_loss_inputs(pred, target, kappa)
    if pred.device.type == "cuda":
        return quantile_huber_loss_pairwise(pred, target, kappa)
    loss = _SortedQuantileHuber.apply(pred, target, float(kappa))
    # NaN/inf inputs or overflow: the reference's own result
    if not bool(torch.isfinite(loss)):
        return quantile_huber_loss_pairwise(pred, target, kappa)
    return loss


class TorchCQL:
    """Discrete CQL(H) on a (quantile) Q-network, in plain PyTorch.

    Loss = TD loss (quantile Huber against double-DQN targets) + ``alpha`` *
    ``E_s[logsumexp_a Q(s, a) - Q(s, a_logged)]`` with ``Q`` the mean over quantiles.
    The next action is chosen by the online network (double DQN, as d3rlpy's
    ``DiscreteCQL``); the released PulseRL code (a Dopamine QR-DQN agent) lets the
    target network choose it.
    """

    def __init__(
        self, config: CQLConfig | None = None, device: str = "cpu", seed: int = 0
    ) -> None:
        self.config = config or CQLConfig()
        torch.manual_seed(seed)
        self.device = device
        c = self.config
        self.net = QuantileQNetwork(n_quantiles=c.n_quantiles, hidden=c.hidden).to(
            device
        )
        self.target = copy.deepcopy(self.net)
        self.optim = torch.optim.Adam(
            self.net.parameters(), lr=c.learning_rate, eps=c.adam_epsilon
        )
        self.steps = 0
        self._rng = np.random.default_rng(seed)

    def update(
        self,
        obs: torch.Tensor,
        act: torch.Tensor,
        rew: torch.Tensor,
        next_obs: torch.Tensor,
        done: torch.Tensor,
    ) -> dict[str, float]:
        """One gradient step on a batch of tensors; returns the losses.

        The step does only the work the loss needs (profiled at 200 quantiles): the rows
        are grouped by logged action so the output layer computes the logged action's
        quantiles only; the online network's choice of next action (double DQN) and the
        CQL term use the mean-over-quantiles head (:meth:`QuantileQNetwork.mean_q`); the
        target network computes the chosen action's quantiles only, without autograd;
        the quantile Huber loss is the exact sorted form (:func:`quantile_huber_loss`).
        """
        c = self.config
        net, n_actions = self.net, self.net.n_actions
        order = torch.argsort(act, stable=True)  # rows grouped by logged action
        obs, act, rew, next_obs, done = (
            x.index_select(0, order) for x in (obs, act, rew, next_obs, done)
        )
        features = net.features(obs)
        # (B, N)
        taken = net.action_quantiles(
            features, torch.bincount(act, minlength=n_actions).tolist()
        )
        q_mean = net.mean_q(features)  # (B, A)
        with torch.no_grad():
            # double DQN: online picks
            next_action = net.mean_q(net.features(next_obs)).argmax(dim=1)
            next_order = torch.argsort(next_action, stable=True)
            next_counts = torch.bincount(next_action, minlength=n_actions).tolist()
            grouped = self.target.action_quantiles(
                self.target.features(next_obs.index_select(0, next_order)),
                # target values of the chosen action
                next_counts,
            )
            next_q = torch.empty_like(grouped).index_copy_(0, next_order, grouped)
            target = rew.unsqueeze(1) + c.gamma * (1.0 - done.unsqueeze(1)) * next_q
        td_loss = quantile_huber_loss(taken, target, c.huber_kappa)
        logged_q = q_mean.gather(1, act.unsqueeze(1)).squeeze(1)
        conservative = (torch.logsumexp(q_mean, dim=1) - logged_q).mean()
        loss = td_loss + c.alpha * conservative
        self.optim.zero_grad(set_to_none=True)
        loss.backward()
        self.optim.step()
        self.steps += 1
        if self.steps % c.target_update_interval == 0:
            self.target.load_state_dict(self.net.state_dict())
        return {
            "loss": loss.item(),
            "td_loss": td_loss.item(),
            "conservative_loss": conservative.item(),
        }

    def fit(
        self,
        obs: np.ndarray,
        actions: np.ndarray,
        rewards: np.ndarray,
        next_obs: np.ndarray,
        dones: np.ndarray,
        n_steps: int,
        progress: bool = False,
    ) -> list[dict[str, float]]:
        """Train for ``n_steps`` minibatch updates sampled uniformly from the arrays."""
        n = _check_transitions(obs, actions, rewards, next_obs, dones)

        def as_t(x: np.ndarray, dtype: torch.dtype) -> torch.Tensor:
            return torch.as_tensor(np.array(x), dtype=dtype, device=self.device)

        o, o2 = as_t(obs, torch.float32), as_t(next_obs, torch.float32)
        a, r, d = (
            as_t(actions, torch.int64),
            as_t(rewards, torch.float32),
            as_t(dones, torch.float32),
        )
        history = []
        steps = range(n_steps)
        if progress:
            from tqdm.auto import tqdm

            steps = tqdm(
                steps,
                desc=f"CQL a={self.config.alpha} N={self.config.n_quantiles}",
                leave=False,
            )
        for _ in steps:
            idx = torch.as_tensor(
                self._rng.integers(0, n, self.config.batch_size), device=self.device
            )
            history.append(self.update(o[idx], a[idx], r[idx], o2[idx], d[idx]))
        return history

    @torch.no_grad()
    def q_values(self, obs: np.ndarray, batch: int | None = None) -> np.ndarray:
        """``(n, 2)`` mean Q-values, scored in chunks of ``batch`` rows.

        ``batch`` defaults to :data:`SCORING_CHUNK`, the chunk measured fastest on a CPU
        core (``benchmarks/pulserl_scoring.py``): small enough that a chunk's
        activations stay in cache. The mean over quantiles uses
        :meth:`QuantileQNetwork.mean_q`.
        """
        return score_mean_q(self.net, obs, batch=batch, device=self.device)

    def policy(self, obs: np.ndarray) -> np.ndarray:
        """Greedy policy: probability of sending (0 or 1)."""
        q = self.q_values(obs)
        return (q[:, 1] > q[:, 0]).astype(float)


#: Rows per chunk when scoring users (:func:`score_mean_q`, :meth:`TorchCQL.q_values`,
#: policies):
#: the size measured fastest for the 63 -> 256 -> 256 -> 2 network on one CPU core by
#: ``benchmarks/pulserl_scoring.py`` (its results file records the whole sweep and this
#: choice).
SCORING_CHUNK = 1_024


@torch.inference_mode()
def score_mean_q(
    net: QuantileQNetwork,
    obs: np.ndarray,
    batch: int | None = None,
    device: str = "cpu",
) -> np.ndarray:
    """``(n, actions)`` mean-over-quantiles Q-values of ``net`` for every row of
    ``obs``.

    Scores in chunks of ``batch`` rows (default :data:`SCORING_CHUNK`): a chunk's
    activations stay in cache, which on a CPU core is worth more than large matrix
    products. Each layer writes into a buffer reused across chunks; the output layer is
    the mean-over-quantiles head (:meth:`QuantileQNetwork.mean_q`), so 200 quantiles
    cost no more to score than one.
    """
    obs = np.ascontiguousarray(obs, dtype=np.float32)
    linears = [layer for layer in net.body if isinstance(layer, nn.Linear)]
    if obs.ndim != 2 or obs.shape[1] != linears[0].in_features:
        raise SchemaError(
            f"obs must have shape (n, {linears[0].in_features}), got {obs.shape}"
        )
    chunk = SCORING_CHUNK if batch is None else int(batch)
    if chunk < 1:
        raise ConfigError(f"batch must be >= 1, got {batch}")
    n = obs.shape[0]
    out = np.empty((n, net.n_actions), np.float32)
    head = linears[-1]
    w_mean = (
        head.weight.view(net.n_actions, net.n_quantiles, -1)
        .mean(dim=1)
        .t()
        .contiguous()
    )
    b_mean = head.bias.view(net.n_actions, net.n_quantiles).mean(dim=1)
    hidden = [(layer.weight.t().contiguous(), layer.bias) for layer in linears[:-1]]
    rows = min(chunk, n)
    buffers = [torch.empty(rows, w.shape[1], device=device) for w, _ in hidden]
    on_cpu = torch.device(device).type == "cpu"
    for start in range(0, n, chunk):
        stop = min(start + chunk, n)
        x = torch.from_numpy(obs[start:stop]).to(device)
        for (weight, bias), buffer in zip(hidden, buffers):
            x = torch.addmm(bias, x, weight, out=buffer[: stop - start]).relu_()
        if on_cpu:
            torch.addmm(b_mean, x, w_mean, out=torch.from_numpy(out[start:stop]))
        else:
            out[start:stop] = torch.addmm(b_mean, x, w_mean).cpu().numpy()
    return out


def _check_transitions(
    obs: np.ndarray,
    actions: np.ndarray,
    rewards: np.ndarray,
    next_obs: np.ndarray,
    dones: np.ndarray,
) -> int:
    obs, next_obs = np.asarray(obs), np.asarray(next_obs)
    if obs.ndim != 2 or obs.shape[1] != N_FEATURES:
        raise SchemaError(f"obs must have shape (n, {N_FEATURES}), got {obs.shape}")
    n = obs.shape[0]
    if next_obs.shape != obs.shape:
        raise SchemaError(f"next_obs has shape {next_obs.shape}, obs has {obs.shape}")
    for name, arr in (("actions", actions), ("rewards", rewards), ("dones", dones)):
        if np.asarray(arr).shape != (n,):
            raise SchemaError(
                f"{name} must have shape ({n},), got {np.asarray(arr).shape}"
            )
    if not np.isin(actions, (0, 1)).all():
        raise SchemaError("actions must be 0 or 1")
    if not np.isfinite(rewards).all():
        raise SchemaError(
            "rewards has a non-finite value at row "
            f"{int(np.flatnonzero(~np.isfinite(rewards))[0])}"
        )
    return n
