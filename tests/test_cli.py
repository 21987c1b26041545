import re

import pytest

from pcscale import cli


def test_quick_demo_prints_a_per_layer_alignment_table(capsys):
    assert cli.main(["demo", "--quick", "--no-progress"]) == 0
    out = capsys.readouterr().out
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


def test_demo_solver_choice_is_passed_through_and_validated(capsys):
    assert cli.main(["demo", "--quick", "--no-progress", "--solver", "cg"]) == 0
    out = capsys.readouterr().out
    assert "inference: ConjugateGradient" in out and "all converged" in out
    with pytest.raises(SystemExit):
        cli.main(["demo", "--quick", "--solver", "bogus"])
    assert "invalid choice" in capsys.readouterr().err
