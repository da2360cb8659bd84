"""QuadraticPredictions against plain numpy evaluations of the SMEFiT convention."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from smeft_pyhf.exceptions import ConfigError, DataError
from smeft_pyhf.formats.coefficients import coefficient_name, operator_name
from smeft_pyhf.likelihood.predictions import QuadraticPredictions

OPS = ["OtG", "OtW", "OtZ", "OQt8"]
NAMES = [coefficient_name(o) for o in OPS]


def _tables(n_obs: int = 5, seed: int = 0) -> tuple[np.ndarray, dict, dict]:
    rng = np.random.default_rng(seed)
    sm = rng.uniform(1, 2, n_obs)
    linear = {o: rng.normal(size=n_obs) for o in OPS}
    quadratic = {}
    for a, oa in enumerate(OPS):
        for ob in OPS[a:]:
            if rng.uniform() < 0.7:
                quadratic[f"{oa}*{ob}"] = rng.normal(size=n_obs)
    return sm, linear, quadratic


def _numpy_prediction(sm, linear, quadratic, names, c):
    index = {n: k for k, n in enumerate(names)}
    out = np.tile(sm, (c.shape[0], 1)).astype(float)
    for key, vals in linear.items():
        out += np.outer(c[:, index[coefficient_name(key)]], vals)
    for key, vals in quadratic.items():
        a, b = (index[coefficient_name(p)] for p in key.split("*"))
        out += np.outer(c[:, a] * c[:, b], vals)  # Oa*Ob multiplies c_a c_b once
    return out


def test_names():
    assert coefficient_name("OtG") == "ctG" and operator_name("ctG") == "OtG"
    assert coefficient_name("ctG") == "ctG"
    assert coefficient_name("O") == "O" and operator_name("c") == "c"  # a bare prefix is no name


def test_forward_matches_numpy(device, dtype):
    sm, lin, quad = _tables()
    pred = QuadraticPredictions.from_tables(sm, lin, quad, NAMES).to(device=device, dtype=dtype)
    c = np.random.default_rng(1).normal(size=(7, len(NAMES)))
    got = pred(torch.as_tensor(c, dtype=dtype, device=device)).cpu().double().numpy()
    tol = 1e-12 if dtype == torch.float64 else 1e-5
    np.testing.assert_allclose(got, _numpy_prediction(sm, lin, quad, NAMES, c), rtol=tol,
                               atol=tol)
    assert pred.sm.dtype == dtype and pred.sm.device.type == torch.device(device).type
    # any leading batch shape
    c3 = torch.as_tensor(c, dtype=dtype, device=device).reshape(7, 1, -1)
    assert pred(c3).shape == (7, 1, 5)
    # one point as a vector
    np.testing.assert_allclose(pred(torch.as_tensor(c[0], dtype=dtype, device=device)).cpu(),
                               got[0], rtol=tol, atol=tol)


def test_linear_only_and_dense_block():
    sm, lin, quad = _tables()
    pred = QuadraticPredictions.from_tables(sm, lin, quad, NAMES, linear_only=True)
    c = np.random.default_rng(2).normal(size=(3, len(NAMES)))
    np.testing.assert_allclose(pred(torch.as_tensor(c)).numpy(),
                               _numpy_prediction(sm, lin, {}, NAMES, c), rtol=1e-12)
    dense = pred.quadratic.numpy()
    assert np.allclose(np.tril(dense[0], -1), 0.0)  # upper triangular
    assert pred.n_pairs == len(quad)


def test_symmetric_input_is_folded():
    q = torch.tensor([[[1.0, 2.0], [2.0, 3.0]]], dtype=torch.float64)  # symmetric: c^T Q c
    pred = QuadraticPredictions(torch.zeros(1), torch.zeros(1, 2), q, ["ca", "cb"])
    c = torch.tensor([[0.5, -1.5]], dtype=torch.float64)
    expected = (c @ q[0] @ c.T).item()
    assert pred(c).item() == pytest.approx(expected)


def test_terms_of_unselected_coefficients_are_dropped():
    sm, lin, quad = _tables()
    pred = QuadraticPredictions.from_tables(sm, lin, quad, ["ctG"])
    c = np.array([[0.7]])
    lin_sel = {"OtG": lin["OtG"]}
    quad_sel = {k: v for k, v in quad.items() if k == "OtG*OtG"}
    np.testing.assert_allclose(pred(torch.as_tensor(c)).numpy(),
                               _numpy_prediction(sm, lin_sel, quad_sel, ["ctG"], c))


def test_stack_row_transform_normalise_select():
    sm, lin, quad = _tables()
    p1 = QuadraticPredictions.from_tables(sm, lin, quad, NAMES)
    p2 = QuadraticPredictions.from_tables(sm[:2] * 3, {}, {}, NAMES)
    both = QuadraticPredictions.stack([p1, p2])
    c = torch.as_tensor(np.random.default_rng(3).normal(size=(4, len(NAMES))))
    assert both(c).shape == (4, 7)
    torch.testing.assert_close(both(c)[:, :5], p1(c))
    total = p1.sum_rows()
    torch.testing.assert_close(total(c)[:, 0], p1(c).sum(-1))
    mu = p1.sum_rows().normalised()
    torch.testing.assert_close(mu(torch.zeros(1, len(NAMES), dtype=torch.float64)),
                               torch.ones(1, 1, dtype=torch.float64))
    torch.testing.assert_close(mu(c)[:, 0], p1(c).sum(-1) / float(sm.sum()))
    rev = p1.select([*NAMES[::-1], "cnew"])
    torch.testing.assert_close(rev(torch.cat([c.flip(-1), torch.ones(4, 1, dtype=c.dtype)], -1)),
                               p1(c))
    with pytest.raises(ConfigError, match="same coefficient names"):
        QuadraticPredictions.stack([p1, rev])


def test_substitute_matches_direct_evaluation():
    sm, lin, quad = _tables()
    pred = QuadraticPredictions.from_tables(sm, lin, quad, NAMES)
    rng = np.random.default_rng(4)
    a = rng.normal(size=(len(NAMES), 2))
    b = rng.normal(size=len(NAMES))
    new = pred.substitute(torch.as_tensor(a), torch.as_tensor(b), ["cx", "cy"])
    c_new = rng.normal(size=(6, 2))
    c_old = c_new @ a.T + b
    torch.testing.assert_close(new(torch.as_tensor(c_new)), pred(torch.as_tensor(c_old)))


def test_scaled_multiplicative():
    sm, lin, quad = _tables()
    pred = QuadraticPredictions.from_tables(sm, lin, quad, NAMES)
    f = np.linspace(0.5, 1.5, 5)
    c = torch.as_tensor(np.random.default_rng(5).normal(size=(2, len(NAMES))))
    scaled = pred.scaled(f)
    torch.testing.assert_close(scaled(c) - scaled.sm, (pred(c) - pred.sm) * torch.as_tensor(f))


def test_gradient_is_exact():
    sm, lin, quad = _tables(n_obs=3)
    pred = QuadraticPredictions.from_tables(sm, lin, quad, NAMES)
    c = torch.randn(2, len(NAMES), dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(pred, (c,))


def test_bad_tables():
    with pytest.raises(DataError, match=r"OtW.*3 entries"):
        QuadraticPredictions.from_tables([1.0, 2.0], {"OtW": [1.0, 2.0, 3.0]}, {}, ["ctW"],
                                         where="t.json")
    with pytest.raises(DataError, match="NaN"):
        QuadraticPredictions.from_tables([1.0], {"OtW": [float("nan")]}, {}, ["ctW"])
    with pytest.raises(DataError, match="not of the form"):
        QuadraticPredictions.from_tables([1.0], {}, {"OtW*OtG*OtZ": [1.0]}, ["ctW"])
    with pytest.raises(ConfigError, match="duplicated"):
        QuadraticPredictions(torch.zeros(1), torch.zeros(1, 2), None, ["ca", "ca"])
