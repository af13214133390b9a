"""The size arguments every verb shares: one spelling, one refusal message."""

from __future__ import annotations

import argparse

import pytest

from seg_perception.cli import arg_types, build_parser


@pytest.mark.parametrize(("text", "want"), [("480x352", (480, 352)), (" 640X480 ", (640, 480)),
                                            ("16384x1", (16384, 1))])
def test_size_reads_width_by_height(text: str, want: tuple[int, int]) -> None:
    assert arg_types.size(text) == want


@pytest.mark.parametrize("text", ["352", "480x", "x352", "4x3x2", "axb", "0x352", "-4x3",
                                  "16385x10", ""])
def test_size_refuses_what_is_not_a_positive_wxh(text: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError, match=r"WxH|positive|exceeds"):
        arg_types.size(text)


def test_size_or_square_also_reads_one_side() -> None:
    assert arg_types.size_or_square("352") == (352, 352)
    assert arg_types.size_or_square("480x352") == (480, 352)
    for bad in ("0", "352x", "1x2x3", "20000"):
        with pytest.raises(argparse.ArgumentTypeError):
            arg_types.size_or_square(bad)


@pytest.mark.parametrize(("argv", "dest"), [
    (["bench", "--camera", "WxH"], "camera"),
    (["eval", "--input-size", "12"], "input_size"),
    (["distill-cache", "--input-size", "0x5"], "input_size"),
    (["train", "--crop", "x"], "crop")])
def test_every_verb_refuses_a_bad_size_with_one_line(
        argv: list[str], dest: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        build_parser().parse_args(argv)
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert "--" + dest.replace("_", "-") in err and "Traceback" not in err
