import re

import pytest

from pcscale import cli


def test_quick_demo_prints_a_per_layer_alignment_table(capsys):
    # One run serves both checks: the table, and the solver choice passed through
    # (auto_solver, the default, is tested in tests/test_solvers.py and docs/inference.md).
    assert cli.main(["demo", "--quick", "--no-progress", "--solver", "cg"]) == 0
    out = capsys.readouterr().out
    assert "inference: ConjugateGradient" in out
    rows = [line for line in out.splitlines() if re.match(r"\s+\d+\s", line)]
    assert len(rows) == 4  # one row per layer of the depth-4 network
    overall = next(line for line in out.splitlines() if line.startswith("all "))
    narrow_start, _, wide_start, _ = (float(v) for v in re.findall(r"-?\d\.\d{4}", overall))
    assert 0 < narrow_start < wide_start <= 1  # the wider network aligns better
    assert out.count("(all converged)") == 2 and "NOT all converged" not in out


def test_quick_cannot_silently_override_sizes(capsys):
    with pytest.raises(SystemExit):
        cli.main(["demo", "--quick", "--depth", "6"])
    assert "--quick sets the sizes itself; drop --depth" in capsys.readouterr().err


def test_bad_widths_are_rejected(capsys):
    with pytest.raises(SystemExit):
        cli.main(["demo", "--widths", "8,zero"])
    assert "comma-separated integers" in capsys.readouterr().err


def test_demo_solver_choice_is_validated(capsys):
    with pytest.raises(SystemExit):
        cli.main(["demo", "--quick", "--solver", "bogus"])
    assert "invalid choice" in capsys.readouterr().err


def test_run_prints_the_table_writes_results_and_resumes(tmp_path, capsys, data_root):
    out = tmp_path / "run"
    args = ["run", "toy", "--set", "widths=4,16", "--set", "skips=False", "--set", "steps=2", "--set", "seeds=0",
            "--out", str(out), "--no-progress", "--no-plot"]
    assert cli.main(args) == 0
    printed = capsys.readouterr().out
    assert "toy: linear MLPs on the toy task" in printed and f"results: {out}" in printed
    assert sorted(p.name for p in (out / "cells").glob("*.json")) == [
        "dmft-H4-g1-data0.json", "noskips-H4-g1-N16-seed0.json", "noskips-H4-g1-N4-seed0.json"]
    assert cli.main(args) == 0
    assert "3 finished cells reused" in capsys.readouterr().out
    assert cli.main(["show", str(out)]) == 0
    table = capsys.readouterr().out
    assert table.count("  no  4   1") == 2 and "DMFT" in table


def test_run_rejects_bad_input_with_a_message_and_exit_status_2(tmp_path, capsys):
    cases = [
        (["run", "nope"], "unknown experiment 'nope'"),
        (["run", "toy", "--preset", "huge"], "unknown preset 'huge'"),
        (["run", "toy", "--set", "widht=3"], "unknown key 'widht' for toy; valid keys: widths"),
        (["run", "toy", "--set", "steps=1.5"], "`steps` expects an integer, got '1.5'"),
        (["run", "toy", "--set", "dmft=nah"], "`dmft` expects a boolean"),
        (["show", str(tmp_path)], "not a pcscale run folder"),
    ]
    for argv, message in cases:
        with pytest.raises(SystemExit) as caught:
            cli.main(argv)
        assert caught.value.code == 2
        assert message in capsys.readouterr().err


def test_show_config_lists_keys_values_types_defaults_and_meanings(capsys):
    assert cli.main(["show-config", "residual-mlp", "--preset", "paper"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("residual-mlp --preset paper")
    assert "  hidden_layers = 31    (integer; default 7)" in lines
    assert "  widths = 8,16,32,64,128,256,512    (comma-separated integers; default 8,32,128)" in lines
    assert "  fallback = false    (boolean; default true)" in lines
    meaning = lines[lines.index("  hidden_layers = 31    (integer; default 7)") + 1]
    assert meaning == "      H: hidden layers (L = H + 1 weight layers)"
    assert any(line.startswith("  dataset = cifar10    (text; default mnist; one of mnist,") for line in lines)
