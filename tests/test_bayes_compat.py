"""Tests of pulse_lib.bayes_compat on the installed Bayesian stack (ArviZ 0.2x or 1.x, PyMC 5
or 6). ``benchmarks/compat.py`` runs this file again in a Python 3.12 environment with the newest
releases, so both code paths are exercised."""

from __future__ import annotations

import logging

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pytest
import xarray as xr

from pulse_lib import bayes_compat as bc
from pulse_lib.errors import ConfigError, SchemaError

logging.getLogger("pymc").setLevel(logging.ERROR)
CHANNELS = ["display", "search", "social"]


def _data(seed: int = 0, chains: int = 4, draws: int = 400):
    rng = np.random.default_rng(seed)
    return bc.from_dict(
        posterior={"x": rng.normal(size=(chains, draws, 3)) + np.array([0.0, 5.0, -2.0]),
                   "y": rng.gamma(2.0, size=(chains, draws))},
        sample_stats={"diverging": np.zeros((chains, draws), dtype=bool),
                      "energy": np.cumsum(rng.normal(size=(chains, draws)), axis=1)},
        coords={"channel": CHANNELS}, dims={"x": ["channel"]},
    )


def test_the_flags_follow_the_installed_versions():
    assert bc.ARVIZ_1 == (bc.major_version("arviz") >= 1)
    assert bc.PYMC_6 == (bc.major_version("pymc") >= 6)
    assert bc.major_version("surely-not-installed-pkg") is None
    found = bc.versions()
    assert found["arviz"] and found["pymc"] and set(found) == set(bc.PACKAGES)


def test_containers_have_the_same_groups_on_both_stacks():
    data = _data()
    assert bc.group_names(data) == ["posterior", "sample_stats"]
    assert bc.has_group(data, "posterior") and not bc.has_group(data, "constant_data")
    post = bc.get_group(data, "posterior")
    assert isinstance(post, xr.Dataset)
    assert post["x"].dims == ("chain", "draw", "channel")
    assert list(post["channel"].values) == CHANNELS
    with pytest.raises(SchemaError, match="constant_data"):
        bc.get_group(data, "constant_data")
    with pytest.raises(SchemaError, match="at least one group"):
        bc.from_dict()
    with pytest.raises(SchemaError, match="InferenceData or xarray.DataTree"):
        bc.group_names({"posterior": post})


def test_set_group_adds_and_replaces():
    data = _data()
    const = xr.Dataset({"total": ("channel", [1, 2, 3])}, coords={"channel": CHANNELS})
    bc.set_group(data, "constant_data", const)
    assert bc.has_group(data, "constant_data")
    np.testing.assert_array_equal(bc.get_group(data, "constant_data")["total"].values, [1, 2, 3])
    post = bc.get_group(data, "posterior")
    trimmed = post.drop_vars("y")
    trimmed.attrs["note"] = "kept"
    bc.set_group(data, "posterior", trimmed)
    again = bc.get_group(data, "posterior")
    assert list(again.data_vars) == ["x"] and again.attrs["note"] == "kept"
    with pytest.raises(SchemaError, match="xarray.Dataset"):
        bc.set_group(data, "posterior", {"x": 1})


@pytest.mark.parametrize("kind", ["all", "stats", "diagnostics"])
def test_summary_columns_and_values(kind):
    data = _data()
    frame = bc.summary(data, var_names=["x"], kind=kind)
    expected = [c.format(lo="hdi_3%", hi="hdi_97%") for c in bc.SUMMARY_COLUMNS[kind]]
    assert list(frame.columns) == expected
    assert list(frame.index) == [f"x[{c}]" for c in CHANNELS]
    values = bc.get_group(data, "posterior")["x"].values.reshape(-1, 3)
    if "mean" in frame:
        np.testing.assert_allclose(frame["mean"], values.mean(0), rtol=1e-9)
        np.testing.assert_allclose(frame["sd"], values.std(0, ddof=1), rtol=1e-3)
        for j in range(3):  # ArviZ's HDI and ours agree to one draw's spacing
            lo, hi = bc.hdi(values[:, j], 0.94)
            assert frame["hdi_3%"].iloc[j] == pytest.approx(lo, abs=0.05)
            assert frame["hdi_97%"].iloc[j] == pytest.approx(hi, abs=0.05)
    if "r_hat" in frame:  # independent draws: R-hat near 1, ESS near the number of draws
        assert frame["r_hat"].max() < 1.02
        assert 800 < frame["ess_bulk"].min() < 3000
        np.testing.assert_allclose(frame["mcse_mean"], values.std(0) / np.sqrt(frame["ess_bulk"]), rtol=0.1)


def test_summary_hdi_names_follow_the_probability_and_rounding_is_asked_for():
    data = _data()
    frame = bc.summary(data, var_names=["y"], kind="stats", hdi_prob=0.9)
    assert list(frame.columns) == ["mean", "sd", "hdi_5%", "hdi_95%"]
    raw = float(frame["mean"].iloc[0])
    assert raw != round(raw, 2)  # not rounded by default
    assert bc.summary(data, var_names=["y"], kind="stats", round_to=2)["mean"].iloc[0] == round(raw, 2)
    with pytest.raises(ConfigError, match="kind"):
        bc.summary(data, kind="everything")
    with pytest.raises(ConfigError, match="hdi_prob"):
        bc.summary(data, hdi_prob=1.5)


def test_rhat_flags_chains_that_disagree():
    rng = np.random.default_rng(1)
    good = rng.normal(size=(4, 300))
    bad = good + np.array([0.0, 0.0, 0.0, 3.0])[:, None]  # one chain elsewhere
    data = bc.from_dict(posterior={"good": good, "bad": bad})
    result = bc.rhat(data)
    assert isinstance(result, xr.Dataset)
    assert float(result["good"]) < 1.02 and float(result["bad"]) > 1.3
    assert list(bc.rhat(data, var_names=["good"]).data_vars) == ["good"]


def test_ess_and_a_netcdf_round_trip(tmp_path):
    data = _data()
    bulk, tail = bc.ess(data, var_names=["x"]), bc.ess(data, var_names=["x"], method="tail")
    assert isinstance(bulk, xr.Dataset) and bulk["x"].dims == ("channel",)
    frame = bc.summary(data, var_names=["x"], kind="diagnostics")
    np.testing.assert_allclose(bulk["x"].values, frame["ess_bulk"], rtol=1e-6)
    np.testing.assert_allclose(tail["x"].values, frame["ess_tail"], rtol=1e-6)
    with pytest.raises(ConfigError, match="ESS method"):
        bc.ess(data, method="median")
    path = tmp_path / "fit.nc"
    bc.set_group(data, "constant_data", xr.Dataset({"total": ("channel", [1, 2, 3])}, coords={"channel": CHANNELS}))
    bc.get_group(data, "posterior")  # attrs survive the trip
    data["posterior"].attrs["pulse_backend"] = "cmdstan"
    bc.to_netcdf(data, path)
    back = bc.from_netcdf(path)
    path.unlink()  # loaded into memory: the file is no longer needed
    assert bc.group_names(back) == bc.group_names(data)
    np.testing.assert_array_equal(bc.get_group(back, "posterior")["x"].values,
                                  bc.get_group(data, "posterior")["x"].values)
    assert back["posterior"].attrs["pulse_backend"] == "cmdstan"


def test_bfmi_is_one_number_per_chain_and_matches_its_formula():
    data = _data()
    energy = bc.get_group(data, "sample_stats")["energy"].values
    # E-BFMI = sum of squared energy jumps / sum of squared deviations from the mean
    want = np.square(np.diff(energy, axis=1)).sum(1) / np.square(energy - energy.mean(1, keepdims=True)).sum(1)
    got = bc.bfmi(data)
    assert isinstance(got, np.ndarray) and got.shape == (4,)
    np.testing.assert_allclose(got, want, rtol=1e-6)


def test_hdi_is_the_shortest_interval():
    x = np.arange(100.0)  # uniform: every 90-draw window has the same width, the first wins
    assert bc.hdi(x, 0.9) == (0.0, 90.0)
    skewed = np.concatenate([np.zeros(90), np.linspace(1, 100, 10)])
    assert bc.hdi(skewed, 0.8) == (0.0, 0.0)
    assert bc.hdi([1.0, 2.0], 0.4) == (1.0, 2.0)
    with pytest.raises(ConfigError):
        bc.hdi(x, 0.0)
    with pytest.raises(SchemaError, match="finite"):
        bc.hdi([np.nan, 1.0])


def test_plot_forest_draws_every_coordinate_of_every_model():
    fig, ax = plt.subplots()
    models = {"A": _data(0), "B": _data(1)}
    bc.plot_forest(models, var_names=["x", "y"], ax=ax, hdi_prob=0.9)
    labels = [t.get_text() for t in ax.get_yticklabels()]
    assert labels == [f"x[{c}]" for c in CHANNELS] + ["y"]
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["A", "B"]
    means = ax.lines[0].get_xdata()
    np.testing.assert_allclose(means[:3], [0.0, 5.0, -2.0], atol=0.1)
    with pytest.raises(SchemaError, match="lacks"):
        bc.plot_forest(models, var_names=["z"], ax=ax)
    plt.close(fig)


def test_arviz_plots_take_the_figure_size():
    data = _data(draws=100)
    for draw in (lambda: bc.plot_energy(data, figsize=(6, 3.5)),
                 lambda: bc.plot_trace(data, var_names=["x"], figsize=(10, 4))):
        plt.close("all")
        draw()
        assert plt.get_fignums(), "no figure drawn"
        assert tuple(plt.gcf().get_size_inches()) in ((6, 3.5), (10, 4))
    plt.close("all")


# --- PyMC (compiles a tiny model: a few seconds warm) ---------------------------------------------


def _poisson_model(y):
    import pymc as pm

    with pm.Model(coords={"row": np.arange(len(y))}) as model:
        log_rate = pm.Normal("log_rate", 0.0, 10.0)
        pm.Poisson("y", mu=pm.math.exp(log_rate), observed=y, dims="row")
    return model


def test_pymc_sample_uses_pymc_nuts_and_adds_the_log_likelihood():
    y = np.random.default_rng(0).poisson(4.0, size=30)
    model = _poisson_model(y)
    data = bc.pymc_sample(draws=200, tune=200, chains=2, seed=3, log_likelihood=True, model=model)
    assert {"posterior", "sample_stats", "log_likelihood"} <= set(bc.group_names(data))
    post = bc.get_group(data, "posterior")
    assert post.sizes["chain"] == 2 and post.sizes["draw"] == 200
    assert abs(float(np.exp(post["log_rate"]).mean()) - y.mean()) < 0.5
    # PyMC's NUTS records its step-size adaptation; nutpie (PyMC 6's default) does not.
    assert "step_size_bar" in bc.get_group(data, "sample_stats")
    ll = bc.get_group(data, "log_likelihood")["y"]
    assert ll.dims == ("chain", "draw", "row")
    again = bc.pymc_sample(draws=200, tune=200, chains=2, seed=3, model=model)
    np.testing.assert_array_equal(bc.get_group(again, "posterior")["log_rate"].values, post["log_rate"].values)
    assert not bc.has_group(again, "log_likelihood")


def test_find_map_returns_the_closed_form_maximum():
    import pymc as pm

    y = np.array([3, 5, 4, 6, 2, 4])
    with pm.Model() as model:
        log_rate = pm.Flat("log_rate")
        pm.Poisson("y", mu=pm.math.exp(log_rate), observed=y)
    estimate = bc.find_map(seed=0, model=model)
    assert isinstance(estimate, dict)
    assert float(estimate["log_rate"]) == pytest.approx(np.log(y.mean()), abs=1e-4)
