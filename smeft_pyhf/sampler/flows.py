r"""Normalizing flows for the sampler: rational-quadratic spline coupling blocks (zuko).

:func:`build_flow` stacks ``n_blocks`` coupling blocks built from
:class:`zuko.flows.coupling.GeneralCouplingTransform` with
:class:`zuko.transforms.MonotonicRQSTransform` (16 bins, subnets of 3 hidden layers of 64 nodes
by default, paper Table 5) on a standard normal base. Coupling blocks invert in one pass, so
sampling and density evaluation cost the same, unlike the autoregressive ``zuko.flows.NSF``.

Density evaluation and sampling run a fused path over the same modules: each block calls its
hyper-network once and evaluates the splines with :mod:`smeft_pyhf.sampler.splines`, which
inverts and returns the log-Jacobian in one pass (zuko's ``transform.inv.call_and_ladj`` runs the
inverse and then the whole forward flow again). Values and gradients equal zuko's to rounding
(tests); sampling costs 2.6 times less, density evaluation with gradients about 1.3 times less
(25 dims, 1024 points, one CPU core: 36 vs 94 ms and 113 vs 145 ms).

The flow is also a lazy zuko distribution: ``flow()`` returns a
:class:`torch.distributions.Distribution` with ``rsample``, ``log_prob`` and
``rsample_and_log_prob``. Those draw from torch's global generator; the sampler uses
:meth:`CouplingFlow.sample_and_log_prob` instead, which takes an explicit ``torch.Generator``.

Example:
    >>> import torch
    >>> from smeft_pyhf.sampler.flows import FlowConfig, build_flow
    >>> flow = build_flow(3, config=FlowConfig(n_blocks=2, hidden_features=16))
    >>> g = torch.Generator().manual_seed(0)
    >>> x, log_q = flow.sample_and_log_prob(5, generator=g)
    >>> x.shape, log_q.shape
    (torch.Size([5, 3]), torch.Size([5]))
    >>> torch.allclose(flow.log_prob(x), log_q, atol=1e-4)
    True
    >>> flow().rsample((2,)).shape
    torch.Size([2, 3])

References:
    | Five steps to happiness (arXiv:2411.00942), Sec. 2.2 and Table 5.
    | https://arxiv.org/abs/2411.00942
    | Neural Spline Flows (Durkan et al., 2019). https://arxiv.org/abs/1906.04032
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from functools import partial

import torch
from torch import Tensor, nn
from zuko.distributions import DiagNormal, NormalizingFlow
from zuko.flows.coupling import GeneralCouplingTransform
from zuko.lazy import Flow, UnconditionalDistribution
from zuko.nn import Linear as ZukoLinear
from zuko.transforms import MonotonicRQSTransform

from smeft_pyhf.sampler.config import FlowConfig
from smeft_pyhf.sampler.kernels.evaluation import map_chunks
from smeft_pyhf.sampler.splines import rqs_forward, rqs_inverse

__all__ = ["CouplingFlow", "FlowConfig", "build_flow", "coupling_masks"]

log = logging.getLogger(__name__)

_ACTIVATIONS: dict[str, Callable[[], nn.Module]] = {
    "relu": nn.ReLU,
    "elu": nn.ELU,
    "silu": nn.SiLU,
    "leaky_relu": nn.LeakyReLU,
}


def coupling_masks(dim: int, n_blocks: int, kind: str = "binary") -> list[Tensor]:
    """The coupling masks (``True``: conditioning half, passed through unchanged).

    ``"alternating"`` flips the even/odd split every block. ``"binary"`` uses bit ``k // 2`` of
    the dimension index for blocks ``k`` and ``k + 1`` (the second one flipped), cycling
    through the ``ceil(log2(dim))`` bits, so that every dimension is transformed in every pair
    of blocks and any two dimensions sit on opposite sides in some block.

    Example:
        >>> [m.int().tolist() for m in coupling_masks(4, 4)]
        [[0, 1, 0, 1], [1, 0, 1, 0], [0, 0, 1, 1], [1, 1, 0, 0]]
    """
    index = torch.arange(dim)
    bits = max(1, math.ceil(math.log2(dim))) if dim > 1 else 1
    masks = []
    for k in range(n_blocks):
        if kind == "alternating":
            mask = index % 2 == (k + 1) % 2
        elif kind == "binary":
            bit = (k // 2) % bits
            mask = ((index >> bit) & 1) == 1
            if k % 2:
                mask = ~mask
        else:
            raise ValueError(f"unknown mask kind {kind!r}")
        masks.append(mask)
    return masks


class CouplingFlow(Flow):
    r"""A stack of RQ-spline coupling blocks on a standard normal base (a lazy zuko flow).

    Calling the module returns a :class:`zuko.distributions.NormalizingFlow`. The extra
    methods take an explicit generator and are what the sampler uses.

    Args:
        dim: number of dimensions.
        config: a :class:`FlowConfig`.

    Example:
        >>> flow = CouplingFlow(2, FlowConfig(n_blocks=2, hidden_features=8))
        >>> flow.log_prob(torch.zeros(1, 2)).shape
        torch.Size([1])
    """

    def __init__(self, dim: int, config: FlowConfig) -> None:
        hidden = [config.hidden_features] * config.hidden_layers
        univariate = partial(MonotonicRQSTransform, bound=config.bound, slope=config.slope)
        shapes = [(config.bins,), (config.bins,), (config.bins - 1,)]
        masks = coupling_masks(dim, config.n_blocks, config.masks)
        blocks = [
            GeneralCouplingTransform(
                dim,
                mask=mask,
                univariate=univariate,
                shapes=shapes,
                hidden_features=hidden,
                activation=_ACTIVATIONS[config.activation],
            )
            for mask in masks
        ]
        base = UnconditionalDistribution(
            DiagNormal, loc=torch.zeros(dim), scale=torch.ones(dim), buffer=True
        )
        super().__init__(blocks, base)
        self.dim = dim
        self.config = config
        # the fused path (smeft_pyhf.sampler.splines) needs coupling blocks; a 1-dim flow is
        # one element-wise spline and keeps zuko's path
        self._fused = dim > 1
        for k, mask in enumerate(masks if self._fused else []):
            self.register_buffer(f"_idx_a{k}", mask.nonzero().squeeze(-1), persistent=False)
            self.register_buffer(f"_idx_b{k}", (~mask).nonzero().squeeze(-1), persistent=False)
        self._sample_fn = self._sample_from_noise
        self._log_prob_fn = self._log_prob
        if config.compile:
            self._sample_fn = torch.compile(self._sample_from_noise, dynamic=True)
            self._log_prob_fn = torch.compile(self._log_prob, dynamic=True)

    def _reference(self) -> Tensor:
        return next(self.parameters())

    def set_bound(self, bound: float) -> None:
        """Change the spline domain to ``[-bound, bound]`` (the weights are unchanged).

        Example:
            >>> flow = build_flow(3, config=FlowConfig(n_blocks=2, hidden_features=8))
            >>> flow.set_bound(8.0)
            >>> flow.config.bound
            8.0
        """
        self.config = self.config.replace(bound=float(bound))
        univariate = partial(MonotonicRQSTransform, bound=self.config.bound,
                             slope=self.config.slope)
        for block in self.transform.transforms:
            if isinstance(block, GeneralCouplingTransform):
                block.univariate = univariate

    def _blocks(self) -> list[tuple[nn.Module, Tensor, Tensor]]:
        """``(hyper-network, conditioning indices, transformed indices)`` of every block."""
        return [(block.hyper, getattr(self, f"_idx_a{k}"), getattr(self, f"_idx_b{k}"))
                for k, block in enumerate(self.transform.transforms)]

    def _spline_params(self, hyper: nn.Module, cond: Tensor) -> Tensor:
        return hyper(cond).unflatten(-1, (-1, 3 * self.config.bins - 1))

    def _sample_from_noise(self, z: Tensor) -> tuple[Tensor, Tensor]:
        if not self._fused:
            dist: NormalizingFlow = self()
            x, ladj = dist.transform.inv.call_and_ladj(z)
            return x, dist.base.log_prob(z) - ladj
        # blocks in reverse order, each inverted with its log-Jacobian in one pass
        log_q = self.base().log_prob(z)
        x = z
        for hyper, idx_a, idx_b in reversed(self._blocks()):
            params = self._spline_params(hyper, x[:, idx_a])
            x_b, ladj = rqs_inverse(x[:, idx_b], params, bound=self.config.bound,
                                    slope=self.config.slope)
            x = x.index_copy(1, idx_b, x_b)
            log_q = log_q - ladj.sum(-1)
        return x, log_q

    def _log_prob(self, x: Tensor) -> Tensor:
        if not self._fused:
            return self().log_prob(x)
        ladj_sum = x.new_zeros(x.shape[:-1])
        for hyper, idx_a, idx_b in self._blocks():
            params = self._spline_params(hyper, x[:, idx_a])
            y_b, ladj = rqs_forward(x[:, idx_b], params, bound=self.config.bound,
                                    slope=self.config.slope)
            x = x.index_copy(1, idx_b, y_b)
            ladj_sum = ladj_sum + ladj.sum(-1)
        return self.base().log_prob(x) + ladj_sum

    def _chunk_size(self, z: Tensor) -> int | None:
        """``config.cpu_chunk`` for an evaluation without gradients on the CPU, else None."""
        if z.device.type == "cpu" and not torch.is_grad_enabled():
            return self.config.cpu_chunk
        return None

    def _sample_chunks(self, z: Tensor) -> tuple[Tensor, Tensor]:
        return map_chunks(self._sample_fn, z, self._chunk_size(z))

    def sample_and_log_prob(self, n: int, *, generator: torch.Generator) -> tuple[Tensor, Tensor]:
        """Draw ``n`` points and their log-density (differentiable, reparametrised).

        Args:
            n: number of points.
            generator: random number generator on the flow's device.

        Returns:
            ``(x, log_q)`` of shapes ``(n, dim)`` and ``(n,)`` on the flow's device and dtype.
        """
        ref = self._reference()
        z = torch.randn((n, self.dim), generator=generator, device=ref.device, dtype=ref.dtype)
        return self._sample_chunks(z)

    def sample_from_noise(self, z: Tensor) -> tuple[Tensor, Tensor]:
        """Map standard normal noise ``z`` ``(n, dim)`` to ``(x, log_q)``."""
        return self._sample_chunks(z)

    def log_prob(self, x: Tensor) -> Tensor:
        """The flow density ``log g(x)`` ``(n,)`` for ``x`` of shape ``(n, dim)``."""
        return map_chunks(self._log_prob_fn, x, self._chunk_size(x))

    def draw(
        self, n: int, *, generator: torch.Generator, batch_size: int | None = None
    ) -> tuple[Tensor, Tensor]:
        """Draw ``n`` points without gradients, in batches of at most ``batch_size``.

        Example:
            >>> flow = build_flow(2, config=FlowConfig(n_blocks=2, hidden_features=8))
            >>> x, log_q = flow.draw(10, generator=torch.Generator().manual_seed(0), batch_size=4)
            >>> x.shape
            torch.Size([10, 2])
        """
        with torch.no_grad():
            if batch_size is None or n <= batch_size:
                return self.sample_and_log_prob(n, generator=generator)
            # one noise draw for all points, so the result does not depend on batch_size
            ref = self._reference()
            z = torch.randn((n, self.dim), generator=generator, device=ref.device, dtype=ref.dtype)
            return map_chunks(self._sample_chunks, z, batch_size)


def _initialise(flow: CouplingFlow, generator: torch.Generator | None) -> None:
    """Re-draw the subnet weights (torch's default ranges) from ``generator`` and, with
    ``identity_init``, zero the last layer of every subnet."""
    with torch.no_grad():
        for block in flow.transform.transforms:
            linears = [m for m in block.modules() if isinstance(m, (nn.Linear, ZukoLinear))]
            if generator is not None:
                for layer in linears:
                    bound = 1.0 / math.sqrt(layer.weight.shape[-1])
                    layer.weight.uniform_(-bound, bound, generator=generator)
                    if layer.bias is not None:
                        layer.bias.uniform_(-bound, bound, generator=generator)
            if flow.config.identity_init and linears:
                linears[-1].weight.zero_()
                if linears[-1].bias is not None:
                    linears[-1].bias.zero_()
            elif flow.config.identity_init:
                # one dimension: zuko's coupling block is an element-wise spline whose
                # parameters are plain tensors (no subnet); zero is the identity there too
                for param in block.parameters():
                    param.zero_()


def build_flow(
    dim: int, *, config: FlowConfig, generator: torch.Generator | None = None
) -> CouplingFlow:
    """Build the sampler's RQ-spline coupling flow for ``dim`` dimensions.

    The flow is created on the CPU in the default dtype; move it with ``.to(device, dtype)``.
    The subnet weights are drawn from ``generator`` (torch's default ranges) when given, from
    torch's global generator otherwise. With ``config.identity_init`` (default) the last layer
    of every subnet is zero, so the untrained flow is the standard normal.

    Args:
        dim: number of dimensions (>= 1).
        config: a :class:`FlowConfig`.
        generator: a CPU generator for the initial weights (``None``: torch's global one).

    Returns:
        A :class:`CouplingFlow`; ``flow()`` is a distribution with ``rsample``, ``log_prob`` and
        ``rsample_and_log_prob``.

    Example:
        >>> flow = build_flow(4, config=FlowConfig())
        >>> sum(p.numel() for p in flow.parameters()) > 0
        True
    """
    if dim < 1:
        raise ValueError(f"dim must be >= 1, got {dim}")
    flow = CouplingFlow(dim, config)
    _initialise(flow, generator)
    log.debug(
        "flow: %d dims, %d coupling blocks, %d bins, %d x %d subnets, %d parameters",
        dim,
        config.n_blocks,
        config.bins,
        config.hidden_layers,
        config.hidden_features,
        sum(p.numel() for p in flow.parameters()),
    )
    return flow
