"""`smeft-pyhf ingest` through click's CliRunner: the table, --json, and exit code 2 errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from smeft_pyhf._resources import shipped_dir
from smeft_pyhf.cli import cli

EXAMPLE = str(shipped_dir("workspaces") / "example_ttZ_like.json")
MAPPING = shipped_dir("mappings") / "example_ttZ_like.yaml"
FAST = ["--n-impacts", "2", "--n-scans", "1"]


def _run(args: list[str]):
    return CliRunner().invoke(cli, ["ingest", *args], catch_exceptions=False)


def test_table_and_card(tmp_path: Path) -> None:
    out = tmp_path / "card.yaml"
    result = _run([EXAMPLE, "--mapping", str(MAPPING), "--output", str(out), *FAST])
    assert result.exit_code == 0, result.output
    assert "Reproduced [%]" in result.output and "SFitter category" in result.output
    assert out.is_file()
    # plots are on by default with a card file, listed after it
    listed = result.output.split("plots written (")[1].splitlines()[1:]
    paths = [Path(line.strip()) for line in listed if line.startswith("  ")]
    assert len(paths) == 9 and all(p.parent == tmp_path and p.is_file() for p in paths)
    assert all(p.read_bytes().startswith(b"%PDF-") for p in paths)
    assert {p.name for p in paths} >= {"card.pulls.pdf", "card.ranking.pdf", "card.breakdown.pdf"}


def test_stat_convention_and_no_plots(tmp_path: Path) -> None:
    out = tmp_path / "card.yaml"
    result = _run([EXAMPLE, "--mapping", str(MAPPING), "-o", str(out), "--no-plots",
                   "--stat-convention", "all-fixed", "--json", *FAST])
    assert result.exit_code == 0, result.output
    document = json.loads(result.stdout)
    assert document["plots"] == [] and sorted(p.name for p in tmp_path.iterdir()) == ["card.yaml"]
    assert document["decomposition"]["stat_convention"] == "all-fixed"
    assert document["decomposition"]["stat_convention_from"] == "option"
    assert document["decomposition"]["closure"] == pytest.approx(1.0, abs=1e-6)
    refused = CliRunner().invoke(cli, ["ingest", EXAMPLE, "--mapping", str(MAPPING),
                                       "--no-write", "--plots", *FAST])
    assert refused.exit_code == 2 and "--no-write" in refused.output
    wrong = CliRunner().invoke(cli, ["ingest", EXAMPLE, "--stat-convention", "fixed"])
    assert wrong.exit_code == 2 and "all-fixed" in wrong.output


def test_json(tmp_path: Path) -> None:
    out = tmp_path / "card.yaml"
    result = _run([EXAMPLE, "--mapping", str(MAPPING), "-o", str(out), "--json", *FAST])
    assert result.exit_code == 0
    document = json.loads(result.stdout)
    assert document["observable"]["poi"] == "mu_ttZ"


def _bad_mapping(tmp_path: Path, old: str, new: str) -> str:
    path = tmp_path / "m.yaml"
    path.write_text(MAPPING.read_text().replace(old, new))
    return str(path)


@pytest.mark.parametrize(
    ("case", "message"),
    [
        ("malformed", "line 1, column"),
        ("schema", "fails the pyhf workspace schema"),
        ("poi", "candidate normfactors"),
        ("regex", "rules[0]"),
        ("category", "Showr"),
        ("unmapped", "PRW_DATASF"),
        ("output", "does not exist"),
    ],
)
def test_errors_exit_2(tmp_path: Path, case: str, message: str) -> None:
    ws, mapping, out = EXAMPLE, str(MAPPING), tmp_path / "card.yaml"
    extra: list[str] = []
    if case == "malformed":
        ws = str(tmp_path / "bad.json")
        Path(ws).write_text("{,}")
    elif case == "schema":
        spec = json.loads(Path(EXAMPLE).read_text())
        spec["channels"][0]["samples"][0]["data"] = "x"
        ws = str(tmp_path / "ws.json")
        Path(ws).write_text(json.dumps(spec))
    elif case == "poi":
        extra = ["--poi", "mu_nope"]
    elif case == "regex":
        mapping = _bad_mapping(tmp_path, "pattern: 'ttZ_Shower'", "pattern: 'ttZ_(Shower'")
    elif case == "category":
        mapping = _bad_mapping(tmp_path, "category: partonShower", "category: partonShowr")
    elif case == "unmapped":
        mapping = _bad_mapping(tmp_path, "  - {pattern: 'PRW_.*', category: Pileup, group: Pile-up}\n", "")
    elif case == "output":
        out = tmp_path / "missing" / "card.yaml"
    result = CliRunner().invoke(cli, ["ingest", ws, "--mapping", mapping, "-o", str(out), *FAST, *extra])
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    assert message.lower() in result.output.lower().replace("\n", " ")
    assert not out.exists()


@pytest.mark.shared_data
@pytest.mark.slow
def test_ttz_3l_end_to_end(shared_data: Path, tmp_path: Path) -> None:
    """The one real end-to-end ingest of the suite (PROVENANCE 6: mu 1.166, Hesse 0.134)."""
    out = tmp_path / "ttZ.yaml"
    result = _run([
        str(shared_data / "atlas_top_ttZ_13TeV" / "3L_workspace.json"), "--mapping", "atlas_ttZ_3L",
        "-o", str(out), "--n-impacts", "1", "--n-scans", "0", "--no-prefit", "--json",
    ])
    assert result.exit_code == 0, result.output
    card = json.loads(result.stdout)
    assert card["measurement"]["best_fit"] == pytest.approx(1.166, abs=0.003)
    assert card["measurement"]["total"]["symmetric"] == pytest.approx(0.134, abs=0.002)
    assert card["diagnostics"]["hesse_valid"] is False
    assert any("Hesse" in w for w in card["diagnostics"]["warnings"])
    assert card["measurement"]["stat"]["relative"] == pytest.approx(0.058, abs=0.003)


@pytest.mark.shared_data
def test_old_pyhf_fixture_with_channels_as_dict_is_a_clean_error(
    shared_data: Path, tmp_path: Path
) -> None:
    """pyhf's old validation fixtures hold `channels` as a dict: exit 2, the schema message."""
    out = tmp_path / "card.yaml"
    source = shared_data / "pyhf_validation" / "validation" / "data" / "2bin_2channel_couplednorm.json"
    result = _run([str(source), "--mapping", "generic_atlas", "-o", str(out), *FAST])
    assert result.exit_code == 2
    assert "Traceback" not in result.output
    assert "fails the pyhf workspace schema at channels" in result.output.replace("\n", " ")
    assert not out.exists()


# ------------------------------------------------------------------ inputs refused before any fit
def _edited(tmp_path: Path, edit) -> str:
    spec = json.loads(Path(EXAMPLE).read_text())
    edit(spec)
    path = tmp_path / "edited.json"
    path.write_text(json.dumps(spec))
    return str(path)


def _shapesys_nan(spec: dict) -> None:
    spec["channels"][0]["samples"][1]["modifiers"].append(
        {"name": "WZ_shape", "type": "shapesys", "data": [2.0, float("nan")]}
    )


@pytest.mark.parametrize(
    ("case", "edit", "words"),
    [
        ("nan observation", lambda s: s["observations"][1]["data"].__setitem__(1, float("nan")),
         ["channel 'SR_3l_1b4j'", "observations", "bin 2 of 2", "NaN"]),
        ("inf sample", lambda s: s["channels"][2]["samples"][0]["data"].__setitem__(0, float("inf")),
         ["channel 'CR_WZ'", "sample 'ttZ'", "bin 1 of 2", "inf"]),
        ("negative observation", lambda s: s["observations"][0]["data"].__setitem__(0, -1.0),
         ["channel 'SR_3l_2b3j'", "observations", "bin 1 of 2", "negative"]),
        ("nan shapesys", _shapesys_nan,
         ["channel 'SR_3l_2b3j'", "sample 'WZ'", "shapesys 'WZ_shape'", "bin 2", "NaN"]),
        ("observation count", lambda s: s["observations"][2]["data"].append(7.0),
         ["channel 'CR_WZ' has 3 observed bin(s)"]),
    ],
)  # fmt: skip
def test_bad_inputs_exit_2_naming_the_place(tmp_path: Path, case: str, edit, words: list[str]) -> None:
    ws = _edited(tmp_path, edit)
    out = tmp_path / "card.yaml"
    result = CliRunner().invoke(cli, ["ingest", ws, "--mapping", str(MAPPING), "-o", str(out), *FAST])
    assert result.exit_code == 2, result.output
    text = result.output.replace("\n", " ")
    assert "Traceback" not in text and "ERROR" not in text
    assert text.startswith(f"Error (WorkspaceError): {ws}:"), text
    for word in words:
        assert word in text, (case, word, text)
    assert "best fit" not in text  # stopped at load time
    assert not out.exists()


def test_combine_with_itself_exit_2(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        cli, ["ingest", EXAMPLE, "--combine", EXAMPLE, "--mapping", str(MAPPING), "--no-write"]
    )
    assert result.exit_code == 2
    assert "is the same file as" in result.output.replace("\n", " ")


def test_default_output_path_checked_before_the_fit(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "example_ttZ_like.card.yaml").mkdir()
    result = CliRunner().invoke(cli, ["ingest", EXAMPLE, "--mapping", str(MAPPING), *FAST])
    assert result.exit_code == 2
    assert "example_ttZ_like.card.yaml: is a folder" in result.output
    assert "best fit" not in result.output
    (tmp_path / "example_ttZ_like.card.yaml").rmdir()
    result = CliRunner().invoke(cli, ["ingest", EXAMPLE, "--mapping", str(MAPPING), *FAST])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "example_ttZ_like.card.yaml").is_file()
    assert "card written to example_ttZ_like.card.yaml" in result.output


@pytest.mark.shared_data
def test_xml_inputs(shared_data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    base = shared_data / "pyhf_validation" / "validation" / "xmlimport_input"
    monkeypatch.chdir(tmp_path)
    mapping = tmp_path / "all.yaml"
    mapping.write_text(
        "mapping_version: 1\nanalysis: all\nrules: [{pattern: '.*', category: 'Background:x'}]\n"
    )
    xml = base / "config" / "examples" / "example_ShapeSys.xml"
    args = ["ingest", str(xml), "--mapping", str(mapping), "--no-write", *FAST]
    good = CliRunner().invoke(cli, [*args, "--rootdir", str(base)])
    assert good.exit_code == 0, good.output
    wrong = CliRunner().invoke(cli, [*args, "--rootdir", str(tmp_path)])
    # the message is wrapped to the terminal: compare with the line breaks taken out
    assert wrong.exit_code == 2 and "do not exist under --rootdir" in " ".join(wrong.output.split())
    flat = CliRunner().invoke(cli, ["ingest", str(xml).replace("ShapeSys", "ShapeSys2D"),
                                    "--mapping", str(mapping), "--no-write"])
    assert flat.exit_code == 2
    text = flat.output.replace("\n", " ")
    assert "Traceback" not in text and "one-dimensional histograms only" in text


def test_several_workspaces_in_parallel_equal_one_by_one(tmp_path: Path) -> None:
    pytest.importorskip("distributed")
    import shutil

    a, b = tmp_path / "A.json", tmp_path / "B.json.gz"
    shutil.copyfile(EXAMPLE, a)
    import gzip

    b.write_bytes(gzip.compress(Path(EXAMPLE).read_bytes()))
    args = [str(a), str(b), "--mapping", str(MAPPING), "--no-plots", "--n-impacts", "0",
            "--n-scans", "0", "--no-prefit", "--starts", "1"]
    serial = _run([*args, "-o", str(tmp_path / "serial")])
    assert serial.exit_code == 0, serial.output
    parallel = _run([*args, "-o", str(tmp_path / "parallel"), "--workers", "2", "--json"])
    assert parallel.exit_code == 0, parallel.output
    documents = json.loads(parallel.stdout)
    assert [d["observable"]["poi"] for d in documents] == ["mu_ttZ", "mu_ttZ"]
    def without_timings(value):
        if isinstance(value, dict):
            return {k: without_timings(v) for k, v in value.items()
                    if k not in ("timings", "seconds", "created")}
        return [without_timings(v) for v in value] if isinstance(value, list) else value

    for name in ("A.card.yaml", "B.card.yaml"):
        one, two = (yaml.safe_load((tmp_path / folder / name).read_text())
                    for folder in ("serial", "parallel"))
        assert without_timings(one) == without_timings(two), name
        assert one["observable"]["poi"] == "mu_ttZ"
    assert "== " + str(a) in serial.output and "card written to" in serial.output
    refused = CliRunner().invoke(cli, ["ingest", str(a), str(b), "--name", "x"])
    assert refused.exit_code == 2 and "describes one workspace" in refused.output
