"""The end-to-end fit: runcard -> likelihood -> five-step sampler -> results folder.

:func:`run_fit` builds the combined likelihood, runs the sampler (checkpointing into a hidden
work folder ``.<output>.partial-work`` next to the results folder), turns the sampler output
into a :class:`~smeft_pyhf.results.results_file.FitResult` and writes the results folder
atomically: ``results.json``, the plots and a copy of the runcard appear together or not at
all. A run that is killed leaves no results folder; running it again resumes from the work
folder (the finished sampler result is cached there, and the sampler resumes from its own
checkpoints), which is deleted once the results folder is in place.

For fits that are linear in the coefficients with Gaussian uncertainties the analytic solution
(:func:`smeft_pyhf.likelihood.combined.linear_gaussian_solution`) is computed as well and
stored under ``analytic`` (``analytic: auto`` does this for ``linear_only`` fits).

Example:
    >>> from smeft_pyhf._resources import examples_dir
    >>> from smeft_pyhf.fit.runcard import load_runcard
    >>> rc = load_runcard(examples_dir() / "default_runcard.yaml")
    >>> rc.name
    'example_top'
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import json
import logging
import math
import os
import shutil
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, NamedTuple

import numpy as np

from .. import __version__
from .._io import (
    atomic_directory,
    atomic_write_text,
    check_replaceable_folder,
    load_tensors,
    output_lock,
    save_tensors,
    sha256_file,
)
from ..cluster import TaskRunner, open_runner
from ..exceptions import ConfigError, DataError, InputError, SmeftPyhfError
from ..formats.intervals import Interval, Level
from ..results.diagnostics import Diagnostics, marginal_ess
from ..results.results_file import (
    RESULTS_FILENAME,
    AnalyticSolution,
    FitResult,
    Histogram1D,
    Histogram2D,
    WeightHistogram,
    make_fit_result,
    write_results,
)
from .runcard import Runcard, build_sampler_config, load_runcard

if TYPE_CHECKING:
    from ..sampler.pipeline import SamplerConfig, SamplerResult
    from ..sampler.sampling import SampleResult

log = logging.getLogger(__name__)

__all__ = [
    "FitTarget",
    "analytic_solution",
    "build_fit_likelihood",
    "fit_target",
    "from_sampler_result",
    "resolve_device",
    "run_fit",
    "sampler_diagnostics",
    "work_dir",
]

PlotFormat = Literal["pdf", "png"]


def resolve_device(device: str | None) -> str:
    """``"auto"`` -> ``"cuda"`` when available, else ``"cpu"``; other names unchanged.

    Raises:
        ConfigError: CUDA asked for but not available.

    Example:
        >>> resolve_device("cpu")
        'cpu'
    """
    import torch

    device = device or "cpu"
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(
            f"device '{device}' asked for, but torch sees no CUDA GPU",
            where="device",
            hint="use --device cpu (or auto), or install a CUDA build of torch",
        )
    return device


def work_dir(output: str | os.PathLike[str]) -> Path:
    """Hidden work folder (checkpoints) of a results folder: ``.<name>.partial-work``."""
    output = Path(output)
    return output.parent / f".{output.name}.partial-work"


def build_fit_likelihood(runcard: Runcard) -> Any:
    """The combined likelihood of a runcard (float64, CPU), via ``build_likelihood``."""
    from ..likelihood.combined import build_likelihood

    datasets = tuple((d.name, d.order or runcard.order) for d in runcard.smefit_datasets)
    coefficients = {c.name: c for c in runcard.coefficients}
    t0 = time.perf_counter()
    likelihood = build_likelihood(
        database=runcard.database,
        datasets=datasets,
        cards=tuple(runcard.cards),
        coefficients=coefficients,
        order=runcard.order,
        linear_only=runcard.linear_only,
        rho=runcard.rho,
        theory_mode=runcard.theory,
        scale_theory=runcard.scale_theory,
        use_t0=runcard.use_t0,
        use_theory_cov=runcard.use_theory_cov,
    )
    names = tuple(getattr(likelihood, "coefficient_names", likelihood.names))
    if set(names) != set(runcard.free_names):
        raise ConfigError(
            f"the likelihood fits {', '.join(names)} but the runcard frees "
            f"{', '.join(runcard.free_names)}",
            where=str(runcard.source or "runcard"),
            hint="check the fixed and constrained coefficients",
        )
    log.info(
        "likelihood: %d coefficients, %d inputs, built in %.2f s",
        len(names),
        len(runcard.datasets),
        time.perf_counter() - t0,
    )
    return likelihood


def analytic_solution(likelihood: Any, names: tuple[str, ...]) -> AnalyticSolution:
    """Linear-Gaussian best fit, covariance and Gaussian 68/95% intervals."""
    from ..likelihood.combined import linear_gaussian_solution

    solution = linear_gaussian_solution(likelihood)
    best = np.asarray(_numpy(solution.best_fit), dtype=float).reshape(-1)
    cov = np.asarray(_numpy(solution.covariance), dtype=float)
    lik_names = tuple(getattr(solution, "names", likelihood.names))
    order = [lik_names.index(n) for n in names]
    best = best[order]
    cov = cov[np.ix_(order, order)]
    intervals: dict[str, dict[Level, Interval]] = {}
    z_values: dict[Level, float] = {"68": 1.0, "95": 1.959963984540054}
    for i, name in enumerate(names):
        sigma = math.sqrt(max(cov[i, i], 0.0))
        intervals[name] = {
            lv: Interval(lv, ((best[i] - z * sigma, best[i] + z * sigma),))
            for lv, z in z_values.items()
        }
    return AnalyticSolution({n: float(best[i]) for i, n in enumerate(names)}, cov, intervals)


def _numpy(x: Any) -> np.ndarray:
    if hasattr(x, "detach"):
        return x.detach().cpu().double().numpy()
    return np.asarray(x, dtype=float)


def _log_density_to_delta(values: np.ndarray, *, log: bool) -> np.ndarray:
    values = np.asarray(values, dtype=float)
    if log:
        lp = np.where(np.isfinite(values), values, -np.inf)
    else:
        with np.errstate(divide="ignore"):
            lp = np.where(values > 0, np.log(np.clip(values, 1e-300, None)), -np.inf)
    top = lp[np.isfinite(lp)].max() if np.any(np.isfinite(lp)) else 0.0
    return np.where(np.isfinite(lp), -2.0 * (lp - top), np.inf)


def _reduce_best(values: np.ndarray, ndim: int) -> np.ndarray:
    """Profile arrays may carry trailing ``n_best`` axes: keep the best value per bin."""
    values = np.asarray(values, dtype=float)
    while values.ndim > ndim:
        values = np.nanmax(values, axis=-1)
    return values


def _histograms_1d(values: Any, names: tuple[str, ...],
                   ranges: Mapping[str, tuple[float, float]], *, log: bool) -> dict[str, Histogram1D]:
    """``(d, bins)`` probabilities (``log=False``) or ``log p`` values as Δχ² histograms."""
    out: dict[str, Histogram1D] = {}
    for name, hist in zip(names, values, strict=True):
        vals = _reduce_best(_numpy(hist), 1)
        edges = np.linspace(*ranges[name], vals.shape[0] + 1)
        out[name] = Histogram1D(edges, _log_density_to_delta(vals, log=log))
    return out


def _histograms_2d(values: Any, pairs: list[tuple[str, str]],
                   ranges: Mapping[str, tuple[float, float]], *,
                   log: bool) -> dict[tuple[str, str], Histogram2D]:
    """``(P, bins, bins)`` arrays of the coefficient ``pairs`` as Δχ² histograms."""
    out: dict[tuple[str, str], Histogram2D] = {}
    for (x, y), hist in zip(pairs, values, strict=True):
        vals = _reduce_best(_numpy(hist), 2)
        xe = np.linspace(*ranges[x], vals.shape[0] + 1)
        ye = np.linspace(*ranges[y], vals.shape[1] + 1)
        out[(x, y)] = Histogram2D(xe, ye, _log_density_to_delta(vals, log=log))
    return out


def _weight_histogram(sample: SampleResult) -> WeightHistogram:
    """The histogram of the sample's weights, without its under- and overflow bins."""
    counts = _numpy(sample.weight_histogram)
    edges = _numpy(sample.weight_edges)
    if counts.shape[0] == edges.shape[0] + 1:
        counts = counts[1:-1]
    return WeightHistogram(edges, counts.astype(np.int64))


def from_sampler_result(result: SamplerResult) -> dict[str, Any]:
    """Histograms and diagnostics of a sampler result as :func:`make_fit_result` arguments.

    The 1D/2D marginals (probabilities per bin) and profiles (``log L`` per bin) of steps 4
    and 5 become Δχ² histograms over the sample's ranges; best fit, ESS, evidence, weight
    histogram, timings and :func:`sampler_diagnostics` are taken over.

    Example:
        >>> import torch
        >>> from smeft_pyhf.sampler.pipeline import SamplerConfig, run_sampler
        >>> res = run_sampler(lambda x: -0.5 * (x**2).sum(-1), names=["a", "b"],
        ...                   config=SamplerConfig.reduced(), seed=0, progress=False)
        >>> out = from_sampler_result(res)
        >>> sorted(out["profile2d"]), round(out["best_fit"]["a"], 3) + 0.0
        ([('a', 'b')], 0.0)
    """
    names = result.names
    sample, prof = result.sample_result, result.profile_result
    arr = _numpy(sample.ranges).reshape(len(names), 2)
    ranges = {n: (float(arr[i, 0]), float(arr[i, 1])) for i, n in enumerate(names)}
    pairs = [(names[int(i)], names[int(j)]) for i, j in _numpy(sample.pairs).astype(int)]
    best = _numpy(prof.best_fit).reshape(-1)
    return {
        "diagnostics": sampler_diagnostics(result),
        "ranges": ranges,
        "best_fit": {n: float(best[i]) for i, n in enumerate(names)},
        "best_log_likelihood": float(prof.best_log_prob),
        "marginal1d": _histograms_1d(sample.marginal1d, names, ranges, log=False),
        "marginal2d": _histograms_2d(sample.marginal2d, pairs, ranges, log=False),
        "profile1d": _histograms_1d(prof.profile1d, names, ranges, log=True),
        "profile2d": _histograms_2d(prof.profile2d, pairs, ranges, log=True),
        "weights": _weight_histogram(sample),
        "ess": sample.ess,
        "n_samples": sample.n_samples,
        "log_evidence": sample.log_evidence,
        "timings": {k: float(v) for k, v in result.timings.items()},
    }


def sampler_diagnostics(result: SamplerResult) -> Diagnostics:
    """The convergence figures of a sampler result (see :mod:`smeft_pyhf.results.diagnostics`).

    Example:
        >>> import torch
        >>> from smeft_pyhf.sampler.pipeline import SamplerConfig, run_sampler
        >>> res = run_sampler(lambda x: -0.5 * (x**2).sum(-1), names=["a"],
        ...                   config=SamplerConfig.reduced(), seed=0, progress=False)
        >>> sampler_diagnostics(res).ess_fraction > 0.9
        True
    """
    from ..sampler.mean_force import sample_heavy_weights

    sample = result.sample_result
    n_s = float(sample.n_samples)
    per_coefficient = marginal_ess(_numpy(sample.marginal1d), _numpy(sample.marginal1d_error))
    # where the heaviest weights sit, in the widths of the weighted marginals (as the sampler
    # judged them when it chose the tails to replace)
    weighted = (sample if result.mean_force is None
                else sample._replace(marginal1d=result.mean_force.weighted_marginal1d))
    return Diagnostics(
        ess_fraction=float(sample.ess) / n_s if n_s else None,
        max_weight_share=(
            math.exp(float(sample.max_log_weight) - float(sample.log_evidence)) / n_s
            if n_s > 0 and math.isfinite(float(sample.log_evidence)) else math.nan
        ),
        outside_fraction=float(sample.outside_fraction),
        marginal_ess={n: float(v) for n, v in zip(result.names, per_coefficient, strict=True)},
        profile_converged_fraction=float(result.profile_result.converged_fraction),
        profile_gaps=tuple(g.to_dict() for g in result.gaps),
        chain_check={} if result.chain_check is None else result.chain_check.to_dict(),
        heavy_weights=sample_heavy_weights(weighted, result.names),
        mean_force={} if result.mean_force is None else result.mean_force.to_dict(result.names),
    )


class FitTarget(NamedTuple):
    """What the sampler needs of a fit: the target and where to look.

    Attributes:
        log_prob: ``log L`` with the flat prior box (:func:`box_prior`), batched ``(B, d)``.
        names: its coordinates.
        ranges: ``(d, 2)`` the prior box, also the histogram ranges.
        init_mean: ``(d,)`` where the pre-scaling starts (the analytic best fit when known,
            else the box centre).
        init_scale: ``(d,)`` its initial width (a quarter of the box).
    """

    log_prob: Callable[[Any], Any]
    names: tuple[str, ...]
    ranges: Any
    init_mean: Any
    init_scale: Any


def fit_target(
    likelihood: Any,
    ranges: Mapping[str, tuple[float, float]],
    *,
    device: str = "cpu",
    dtype: Any = None,
    analytic: AnalyticSolution | None = None,
) -> FitTarget:
    """The sampler's target of a fit: a frozen copy of ``likelihood`` on ``device``/``dtype``
    with the flat prior of ``ranges``.

    Example:
        >>> from smeft_pyhf._resources import examples_dir
        >>> rc = load_runcard(examples_dir() / "default_runcard.yaml")
        >>> t = fit_target(build_fit_likelihood(rc), rc.ranges)
        >>> t.names, tuple(t.ranges.shape)
        (('ctG', 'ctZ', 'ctW', 'cpQM', 'c8qt'), (5, 2))
    """
    import torch

    dtype = dtype or torch.float32
    names = tuple(likelihood.names)
    model = copy.deepcopy(likelihood).to(device=device, dtype=dtype)
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    low = torch.tensor([ranges[n][0] for n in names], dtype=dtype, device=device)
    high = torch.tensor([ranges[n][1] for n in names], dtype=dtype, device=device)
    init_mean = 0.5 * (low + high)
    if analytic is not None:
        init_mean = torch.tensor(
            [analytic.best_fit.get(n, float(init_mean[i])) for i, n in enumerate(names)],
            dtype=dtype,
            device=device,
        )
    return FitTarget(box_prior(model.log_prob, low, high), names, torch.stack([low, high], 1),
                     init_mean, (high - low) / 4.0)


def box_prior(
    log_prob: Callable[[Any], Any], low: Any, high: Any, *, wall: float = 1e-2
) -> Callable[[Any], Any]:
    """The target with the flat prior of the fit ranges: a steep Gaussian wall outside.

    Inside ``[low, high]`` the target is unchanged; outside it falls off as a Gaussian of width
    ``wall * (high - low)`` (differentiable, so MCMC steps, flow training and L-BFGS stay
    well-defined, while points outside carry negligible weight).

    Example:
        >>> import torch
        >>> f = box_prior(lambda c: torch.zeros(c.shape[0]), torch.tensor([-1.0]), torch.tensor([1.0]))
        >>> [round(v, 4) for v in f(torch.tensor([[0.5], [1.02]])).tolist()]
        [0.0, -0.5]
    """
    width = wall * (high - low)

    def bounded(c: Any) -> Any:
        excess = (c - torch_clamp(c, low, high)) / width
        return log_prob(c) - 0.5 * (excess * excess).sum(-1)

    return bounded


def torch_clamp(c: Any, low: Any, high: Any) -> Any:
    """``clamp`` with tensor bounds, broadcast over the batch."""
    import torch

    return torch.maximum(torch.minimum(c, high.to(c.dtype)), low.to(c.dtype))


def _input_files(runcard: Runcard) -> list[Path]:
    """Every file the fit reads: runcard, tables, cards and the tables each card predicts from."""
    from ..likelihood.cards import read_card

    files: list[Path] = []
    if runcard.source is not None:
        files.append(runcard.source)
    datasets = [spec.name for spec in runcard.smefit_datasets]
    for card in runcard.cards:
        files.append(card)
        with contextlib.suppress(SmeftPyhfError):  # reported when the likelihood is built
            datasets.append(read_card(card).smefit_dataset)
    if runcard.database is not None:
        for name in dict.fromkeys(datasets):
            for sub, ext in (("commondata", "yaml"), ("theory", "json")):
                files.append(runcard.database / sub / f"{name}.{ext}")
    return files


def _input_hashes(runcard: Runcard) -> dict[str, str]:
    """sha256 of every input file that exists (see :func:`_input_files`)."""
    return {str(path): sha256_file(path) for path in _input_files(runcard) if path.is_file()}


def _code_digest() -> str:
    """sha256 over the package's own source files: results of other code are not reused."""
    digest = hashlib.sha256(__version__.encode())
    root = Path(__file__).resolve().parents[1]
    for path in sorted(root.rglob("*.py")):
        digest.update(str(path.relative_to(root)).encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()


def _fingerprint(
    runcard: Runcard, sampler_config: Any, hashes: Mapping[str, str], *, device: str
) -> str:
    """What a cached sampler result depends on: runcard (seed included), sampler settings,
    input files, device, and the versions of smeft-pyhf (its code) and torch; not where the
    tasks ran (workers, scheduler), so a run resumes on another cluster or in-process."""
    import torch

    payload = {
        "runcard": {k: v for k, v in runcard.to_dict().items()
                    if k not in ("output", "device", "workers", "scheduler")},
        "sampler": repr(sampler_config),
        "inputs": dict(sorted(hashes.items())),
        "device": device,
        "smeft_pyhf": __version__,
        "code": _code_digest(),
        "torch": torch.__version__,
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()


def _prepare_work(work: Path, fingerprint: str) -> None:
    stamp = work / "fingerprint.txt"
    if work.is_dir():
        old = stamp.read_text().strip() if stamp.is_file() else ""
        if old != fingerprint:
            log.warning(
                "discarding the work folder %s of an earlier run: its runcard, inputs, seed, "
                "device or smeft-pyhf version differ; starting afresh", work,
            )
            shutil.rmtree(work)
        else:
            log.info("resuming from work folder %s", work)
    work.mkdir(parents=True, exist_ok=True)
    (work / "checkpoints").mkdir(exist_ok=True)
    atomic_write_text(stamp, fingerprint + "\n")


_CACHE_TYPES = {
    cls.__name__: cls for cls in (Histogram1D, Histogram2D, WeightHistogram, Diagnostics)
}


def _load_cached(path: Path) -> dict[str, Any] | None:
    """The cached sampler conversion of an interrupted run, or None (missing or unreadable)."""
    if not path.is_file():
        return None
    try:
        cached = load_tensors(path, types=_CACHE_TYPES)
    except ValueError as err:
        log.warning("ignoring the unreadable cached sampler result %s (%s)", path, err)
        return None
    if not isinstance(cached, dict) or "marginal1d" not in cached:
        log.warning("ignoring the cached sampler result %s: not written by this fit", path)
        return None
    return cached


def run_fit(
    runcard: Runcard | str | os.PathLike[str],
    *,
    output: str | os.PathLike[str] | None = None,
    device: str | None = None,
    overwrite: bool = False,
    progress: bool = True,
    scale_theory: float | None = None,
    plots: bool = True,
    plot_format: PlotFormat = "pdf",
    sampler_config: SamplerConfig | None = None,
    on_sampled: Callable[[FitResult], None] | None = None,
    workers: int | None = None,
    scheduler: str | None = None,
) -> FitResult:
    """Run a fit described by a runcard and write its results folder.

    Args:
        runcard: a :class:`~smeft_pyhf.fit.runcard.Runcard` or the path of a runcard YAML.
        output: results folder (default: the runcard's ``output``).
        device: torch device overriding the runcard (``cpu``, ``cuda``, ``auto``).
        overwrite: replace an existing results folder.
        progress: log progress of the long steps.
        scale_theory: override the runcard's ``scale_theory`` (0.5: theory halved).
        plots: also draw the triangle, summary and weight plots into the folder.
        plot_format: file format of the plots.
        sampler_config: a ready ``SamplerConfig`` (default: paper defaults + runcard overrides).
        on_sampled: called with the :class:`FitResult` before the folder is written (hook for
            tests and progress displays; an exception there aborts without a results folder).
        workers: run steps 4 and 5 on a local Dask cluster of this many processes (overrides
            the runcard's ``workers``); see :func:`smeft_pyhf.cluster.open_runner`.
        scheduler: run them on the Dask cluster at this scheduler address instead (overrides
            the runcard's ``scheduler``). The results do not depend on either.

    Returns:
        The :class:`FitResult`; ``result.provenance["results_dir"]`` is the folder written.

    Raises:
        ConfigError: invalid runcard or settings.
        InputError: the results folder exists (without ``overwrite``) or cannot be written.

    Example:
        >>> result = run_fit("my_runcard.yaml", output="results", device="auto")  # doctest: +SKIP
        >>> result.interval("ctG", method="profiled", level="95")  # doctest: +SKIP
    """
    rc = runcard if isinstance(runcard, Runcard) else load_runcard(runcard)
    if scale_theory is not None:
        rc = rc.replace(scale_theory=float(scale_theory))
    out = _absolute_output(Path(output) if output is not None else rc.output)
    _check_output(out, overwrite=overwrite)
    if workers is None and scheduler is None:
        workers, scheduler = rc.workers, rc.scheduler
    with output_lock(out), open_runner(workers=workers, scheduler=scheduler,
                                       device=resolve_device(device or rc.device)) as runner:
        _check_output(out, overwrite=overwrite)  # it may have changed while we waited
        return _run_locked(
            rc,
            out=out,
            device=device,
            overwrite=overwrite,
            progress=progress,
            plots=plots,
            plot_format=plot_format,
            sampler_config=sampler_config,
            on_sampled=on_sampled,
            runner=runner,
        )


def _absolute_output(path: Path) -> Path:
    """The absolute output path; its last component is kept as given (a link is not followed)."""
    path = Path(os.path.abspath(path))
    return path.parent.resolve() / path.name if path.name else path


def _check_output(out: Path, *, overwrite: bool) -> None:
    """Refuse an output path before any work: existing (without overwrite), not replaceable."""
    if not out.parent.is_dir():
        raise InputError(
            f"cannot write results: folder '{out.parent}' does not exist",
            where=str(out),
            hint="create it first or choose another --output",
        )
    if os.path.lexists(out):
        if not overwrite:
            raise InputError(
                "output folder already exists",
                where=str(out),
                hint="remove it, choose another --output, or pass --overwrite",
            )
        check_replaceable_folder(out)


def _run_locked(
    rc: Runcard,
    *,
    out: Path,
    device: str | None,
    overwrite: bool,
    progress: bool,
    plots: bool,
    plot_format: PlotFormat,
    sampler_config: SamplerConfig | None,
    on_sampled: Callable[[FitResult], None] | None,
    runner: TaskRunner | None = None,
) -> FitResult:
    """:func:`run_fit` once the output's lock is held."""
    dev = resolve_device(device or rc.device)
    where = str(rc.source or "runcard")
    cfg = sampler_config or build_sampler_config(rc.sampler, where=f"{where}: sampler")
    if cfg.dtype != rc.dtype:
        cfg = cfg.replace(dtype=rc.dtype)
    hashes = _input_hashes(rc)
    work = work_dir(out)
    _prepare_work(work, _fingerprint(rc, cfg, hashes, device=dev))
    try:
        fit = _sample(rc, out=out, dev=dev, cfg=cfg, hashes=hashes, work=work, progress=progress,
                      runner=runner)
        if on_sampled is not None:
            on_sampled(fit)
        with atomic_directory(out, overwrite=overwrite) as tmp:
            write_results(fit, tmp / RESULTS_FILENAME)
            if rc.source is not None and rc.source.is_file():
                shutil.copyfile(rc.source, tmp / f"runcard{rc.source.suffix or '.yaml'}")
            if plots:
                from ..results.plots import draw_all

                draw_all(fit, tmp, file_format=plot_format)
    except SmeftPyhfError:
        # an error in the inputs or settings: the same run would fail again, so its work
        # folder cannot be resumed (a changed input starts afresh anyway)
        shutil.rmtree(work, ignore_errors=True)
        raise
    shutil.rmtree(work, ignore_errors=True)
    log.info("results written to %s", out)
    return fit


def _sample(
    rc: Runcard,
    *,
    out: Path,
    dev: str,
    cfg: SamplerConfig,
    hashes: Mapping[str, str],
    work: Path,
    progress: bool,
    runner: TaskRunner | None = None,
) -> FitResult:
    """Likelihood, analytic solution and the five steps (or their cached result)."""
    where = str(rc.source or "runcard")
    t_start = time.perf_counter()
    likelihood = build_fit_likelihood(rc)
    names, ranges = _fit_ranges(rc, likelihood)
    timings: dict[str, float] = {"likelihood": time.perf_counter() - t_start}
    from ..sampler.config import check_sampler_costs

    check_sampler_costs(cfg, dim=len(names), n_data=max(len(getattr(likelihood, "observables", ())), 1),
                        dtype_bytes=8 if rc.dtype == "float64" else 4, where=f"{where}: sampler")
    analytic = _analytic_if_asked(rc, likelihood, timings)
    converted = _sampled(rc, likelihood, names=names, ranges=ranges, analytic=analytic, cfg=cfg,
                         dev=dev, work=work, progress=progress, timings=timings, runner=runner)
    step_timings = {**timings, **converted.pop("timings", {})}
    fit = make_fit_result(
        names=names,
        analytic=analytic,
        fixed={c.name: c.value for c in rc.coefficients if c.value is not None},
        config=rc.to_dict(),
        provenance={
            "inputs": dict(hashes),
            "seed": rc.seed,
            "device": dev,
            "dtype": rc.dtype,
            "smeft_pyhf": __version__,
            "results_dir": str(out),
            "runcard": str(rc.source) if rc.source else None,
        },
        timings=step_timings,
        **converted,
    )
    _log_summary(fit)
    for warning in fit.warnings():
        if warning.figure == "at_prior_edge":  # a property of the posterior, not of the sampling
            log.info("note: %s", warning.message())
        else:
            log.warning("not converged: %s", warning.message())
    log.info("five steps and histograms done in %.1f s", time.perf_counter() - t_start)
    return fit


def _fit_ranges(rc: Runcard, likelihood: Any) -> tuple[tuple[str, ...],
                                                       dict[str, tuple[float, float]]]:
    """The sampled names (coefficients, then theory nuisances with ``theory: nuisance``) and
    their ranges: the runcard's, else the likelihood's bounds."""
    names = tuple(likelihood.names)
    bounds = np.asarray(getattr(likelihood, "bounds", np.zeros((len(names), 2))), dtype=float)
    ranges = {
        n: rc.ranges[n] if n in rc.ranges else (float(bounds[i, 0]), float(bounds[i, 1]))
        for i, n in enumerate(names)
    }
    return names, ranges


def _analytic_if_asked(rc: Runcard, likelihood: Any,
                       timings: dict[str, float]) -> AnalyticSolution | None:
    """The linear-Gaussian solution when the runcard asks for it (``analytic: always``, or
    ``auto`` with ``linear_only``); ``auto`` logs and skips a likelihood without one."""
    if not (rc.analytic == "always" or (rc.analytic == "auto" and rc.linear_only)):
        return None
    coefficient_names = tuple(getattr(likelihood, "coefficient_names", likelihood.names))
    t0 = time.perf_counter()
    analytic = None
    try:
        analytic = analytic_solution(likelihood, coefficient_names)
    except (ConfigError, DataError) as err:
        if rc.analytic == "always":
            raise ConfigError(
                f"the analytic linear-Gaussian solution is not available: {err}",
                where=f"{rc.source or 'runcard'}: analytic",
                hint="use analytic: auto or never",
            ) from err
        log.warning("analytic solution skipped: %s", err)
    timings["analytic"] = time.perf_counter() - t0
    if analytic is not None:
        log.info(
            "analytic linear-Gaussian solution: %s",
            ", ".join(
                f"{n} = {analytic.best_fit[n]:.4g} +- {analytic.std[n]:.3g}"
                for n in coefficient_names
            ),
        )
    return analytic


def _sampled(rc: Runcard, likelihood: Any, *, names: tuple[str, ...],
             ranges: Mapping[str, tuple[float, float]], analytic: AnalyticSolution | None,
             cfg: SamplerConfig, dev: str, work: Path, progress: bool,
             timings: dict[str, float], runner: TaskRunner | None = None) -> dict[str, Any]:
    """The sampler's histograms as :func:`make_fit_result` arguments: from the work folder's
    cache when an interrupted run left them, else from :func:`run_sampler` (then cached)."""
    import torch

    from ..sampler.pipeline import run_sampler

    cache = work / "sampler_result.pt"
    converted = _load_cached(cache)
    if converted is not None:
        log.info("sampler result found in %s: skipping the five steps", work)
        return converted
    target = fit_target(likelihood, ranges, device=dev, dtype=getattr(torch, rc.dtype),
                        analytic=analytic)
    log.info("sampling %d coefficients on %s (%s), seed %d: %s", len(names), dev, rc.dtype,
             rc.seed, ", ".join(names))
    t0 = time.perf_counter()
    result = run_sampler(
        target.log_prob,
        names=names,
        ranges=target.ranges,
        config=cfg,
        seed=rc.seed,
        checkpoint_dir=work / "checkpoints",
        progress=progress,
        init_scale=target.init_scale,
        init_mean=target.init_mean,
        support=target.ranges,
        runner=runner,
    )
    timings["sampler"] = time.perf_counter() - t0
    converted = from_sampler_result(result)
    save_tensors(cache, converted)
    return converted


def _log_summary(fit: FitResult) -> None:
    for name in fit.names:
        entry = fit.intervals.get(name, {})
        parts = []
        for method in ("profiled", "marginalised"):
            iv = entry.get(method, {}).get("95")
            if iv is not None and iv.segments:
                parts.append(
                    f"{method} 95%: "
                    + " U ".join(f"[{a:.3g}, {b:.3g}]" for a, b in iv.segments)
                )
        log.info("%s: %s", name, "; ".join(parts) or "no interval")
