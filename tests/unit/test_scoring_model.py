"""Loading and running the listing model: signature checks, clear errors, batch isolation."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import onnx
import pytest
from onnx import TensorProto, helper

from edgemart.scoring.features import FEATURE_COUNT, Listing
from edgemart.scoring.model import (
    BUNDLED_MODEL_PATH,
    HeuristicScorer,
    ModelLoadError,
    ModelSignatureError,
    checked_score,
    load_onnx_scorer,
    score_isolating_failures,
)
from tests.unit.sample_listings import GOOD


def identity_model(path: Path, *, input_name: str, width: int, output_name: str) -> Path:
    """A one-node ONNX model (ReduceMean over the features) with the given signature."""
    graph = helper.make_graph(
        [helper.make_node("ReduceMean", [input_name], [output_name], axes=[1], keepdims=1)],
        "test",
        [helper.make_tensor_value_info(input_name, TensorProto.FLOAT, [None, width])],
        [helper.make_tensor_value_info(output_name, TensorProto.FLOAT, [None, 1])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.save(model, path)
    return path


def test_bundled_model_scores_in_range() -> None:
    scorer = load_onnx_scorer(BUNDLED_MODEL_PATH)
    scores = scorer.score([GOOD] * 3)
    assert len(scores) == 3 and all(0 <= s <= 100 for s in scores)
    assert scores[0] == scores[1] == scores[2]
    assert scorer.score([]) == []


@pytest.mark.parametrize(
    ("input_name", "width", "output_name", "problem"),
    [
        ("pixels", FEATURE_COUNT, "score", "wrong input"),
        ("features", FEATURE_COUNT + 1, "score", "wrong input shape"),
        ("features", FEATURE_COUNT, "label", "no float output named score"),
    ],
)
def test_wrong_signature_is_refused_at_load_with_a_clear_message(
    tmp_path: Path, input_name: str, width: int, output_name: str, problem: str
) -> None:
    path = identity_model(
        tmp_path / "m.onnx", input_name=input_name, width=width, output_name=output_name
    )
    with pytest.raises(ModelSignatureError) as raised:
        load_onnx_scorer(path)
    message = str(raised.value)
    assert problem in message and str(path) in message
    assert f"[batch, {FEATURE_COUNT}]" in message  # says what was expected


def test_a_model_with_the_right_signature_is_accepted(tmp_path: Path) -> None:
    path = identity_model(
        tmp_path / "m.onnx", input_name="features", width=FEATURE_COUNT, output_name="score"
    )
    assert len(load_onnx_scorer(path).score([GOOD, GOOD])) == 2


def test_missing_and_corrupt_files_are_load_errors(tmp_path: Path) -> None:
    with pytest.raises(ModelLoadError, match="does not exist"):
        load_onnx_scorer(tmp_path / "absent.onnx")
    corrupt = tmp_path / "corrupt.onnx"
    corrupt.write_bytes(b"not a model")
    with pytest.raises(ModelLoadError, match="cannot be loaded"):
        load_onnx_scorer(corrupt)


class FlakyScorer:
    source = "model"

    def __init__(self) -> None:
        self.calls = 0

    def score(self, listings: Sequence[Listing]) -> list[float]:
        self.calls += 1
        if any(listing.stock < 0 for listing in listings):
            raise ValueError("bad listing")
        return [10.0] * len(listings)


def test_one_bad_listing_costs_only_its_own_score() -> None:
    bad = Listing("x", "", 100, None, -1, None)
    scorer = FlakyScorer()
    assert score_isolating_failures(scorer, [GOOD, bad, GOOD]) == [10.0, None, 10.0]
    assert scorer.calls == 4  # the batch, then each listing alone


def test_non_finite_model_output_is_a_failure_not_a_score() -> None:
    with pytest.raises(ValueError, match="non-finite"):
        checked_score(math.nan)
    assert checked_score(140.0) == 100.0 and checked_score(-3.0) == 0.0


def test_heuristic_scorer_stays_in_range() -> None:
    assert all(0 <= s <= 100 for s in HeuristicScorer().score([GOOD]))
