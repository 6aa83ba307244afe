"""The committed listing-quality model: its signature, its quality, and that the training
script rebuilds it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import pytest

from edgemart.scoring.features import (
    FEATURE_COUNT,
    INPUT_NAME,
    OUTPUT_NAME,
    Listing,
    heuristic_score,
)
from edgemart.scoring.model import feature_batch, run_model
from ml.train_listing_model import DEFAULT_OUT, synthetic_listings
from tests.unit.sample_listings import BAD, GOOD

COMMITTED = Path(__file__).resolve().parents[2] / "layers/edgemart/edgemart/scoring"
COMMITTED_MODEL = COMMITTED / "listing_quality.onnx"


def session(model: Path | bytes) -> Any:
    source = str(model) if isinstance(model, Path) else model
    return ort.InferenceSession(source, providers=["CPUExecutionProvider"])


def predict(model: Any, listings: list[Listing]) -> np.ndarray[Any, Any]:
    scores = run_model(model, feature_batch(listings))
    assert scores.dtype == np.float32 and scores.shape == (len(listings), 1)
    return np.asarray(scores[:, 0], dtype=np.float64)


def spearman(a: np.ndarray[Any, Any], b: np.ndarray[Any, Any]) -> float:
    def ranks(values: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
        # Average ranks for ties (labels clipped at 0 tie often).
        _, inverse, counts = np.unique(values, return_inverse=True, return_counts=True)
        average = np.cumsum(counts) - (counts - 1) / 2
        return np.asarray(average[inverse], dtype=np.float64)

    return float(np.corrcoef(ranks(a), ranks(b))[0, 1])


def fixed_batch() -> list[Listing]:
    listings, _ = synthetic_listings(seed=1234, samples=300)
    return [GOOD, BAD, *listings]


def test_committed_model_is_the_default_output() -> None:
    assert DEFAULT_OUT == COMMITTED_MODEL
    assert COMMITTED_MODEL.is_file()


def test_committed_model_signature() -> None:
    model = session(COMMITTED_MODEL)
    (features,) = model.get_inputs()
    assert (features.name, features.type) == (INPUT_NAME, "tensor(float)")
    assert len(features.shape) == 2 and features.shape[1] == FEATURE_COUNT
    (score,) = model.get_outputs()
    assert (score.name, score.type) == (OUTPUT_NAME, "tensor(float)")
    assert len(score.shape) == 2 and score.shape[1] == 1


def test_committed_model_scores_sensibly() -> None:
    scores = predict(session(COMMITTED_MODEL), fixed_batch())
    assert scores[0] > 70 > 30 > scores[1]
    assert np.all((scores > -10) & (scores < 110))


def test_committed_model_ranks_better_than_the_heuristic_on_fresh_data() -> None:
    listings, labels = synthetic_listings(seed=2024, samples=3_000)
    truth = np.asarray(labels)
    model = spearman(truth, predict(session(COMMITTED_MODEL), listings))
    heuristic = spearman(truth, np.asarray([heuristic_score(item) for item in listings]))
    assert model > heuristic + 0.05


@pytest.fixture(scope="module")
def trained() -> tuple[bytes, dict[str, Any]]:
    pytest.importorskip("sklearn")
    pytest.importorskip("skl2onnx")
    from ml.train_listing_model import train

    return train()


def test_training_reproduces_the_committed_model(trained: tuple[bytes, dict[str, Any]]) -> None:
    onnx_bytes, _ = trained
    batch = fixed_batch()
    committed = predict(session(COMMITTED_MODEL), batch)
    fresh = predict(session(onnx_bytes), batch)
    np.testing.assert_allclose(fresh, committed, rtol=0, atol=1e-3)


def test_held_out_metrics_beat_the_heuristic(trained: tuple[bytes, dict[str, Any]]) -> None:
    _, metrics = trained
    assert metrics["feature_count"] == FEATURE_COUNT
    assert metrics["model"]["spearman"] > metrics["heuristic"]["spearman"]
    assert metrics["model"]["mae"] < metrics["heuristic"]["mae"]
    assert metrics["onnx_vs_sklearn_max_abs_diff"] < 1e-3
