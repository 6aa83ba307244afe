"""The listing-quality model at run time: an onnxruntime session, checked at load.

Only `functions/score_listings` imports this module; onnxruntime and numpy are imported when a
model is loaded, so nothing else pays for them at cold start. A model is any ONNX file with
the signature in docs/scoring.md: one float input `features` of shape [batch, FEATURE_COUNT]
and one float output `score` of shape [batch, 1]. Anything else is refused at load with
`ModelSignatureError`, so a wrong model is a clear error when the scorer starts, never a
crash half way through a batch.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

from edgemart.errors import EdgemartError
from edgemart.scoring.features import (
    FEATURE_COUNT,
    INPUT_NAME,
    OUTPUT_NAME,
    Listing,
    heuristic_score,
    listing_features,
)

BUNDLED_MODEL_PATH = Path(__file__).with_name("listing_quality.onnx")
SCORE_RANGE = (0.0, 100.0)


class ModelLoadError(EdgemartError):
    """The model file is missing, unreadable or not a valid ONNX model."""


class ModelSignatureError(ModelLoadError):
    """The model loads but its inputs or outputs are not the listing-score signature."""


class ListingScorer(Protocol):
    """Scores listings in one batch; raises if the batch cannot be scored."""

    @property
    def source(self) -> str:
        """What made the scores: `model` or `heuristic` (stored in products.score_source)."""
        ...

    def score(self, listings: Sequence[Listing]) -> list[float]: ...


class HeuristicScorer:
    """The documented fallback (docs/scoring.md): no model, no dependencies."""

    source = "heuristic"

    def score(self, listings: Sequence[Listing]) -> list[float]:
        return [clip_score(heuristic_score(listing)) for listing in listings]


class OnnxListingScorer:
    """One onnxruntime session per process, reused by every batch."""

    source = "model"

    def __init__(self, session: Any, path: Path) -> None:
        self._session = session
        self.path = path

    def score(self, listings: Sequence[Listing]) -> list[float]:
        import numpy as np

        if not listings:
            return []
        scores = run_model(self._session, feature_batch(listings))
        values = [float(value) for value in np.asarray(scores).reshape(-1)]
        if len(values) != len(listings):
            raise ModelLoadError(f"model returned {len(values)} scores for {len(listings)} rows")
        return [checked_score(value) for value in values]


def feature_batch(listings: Sequence[Listing]) -> Any:
    """The model's input for `listings`: their features as float32, one row per listing."""
    import numpy as np

    return np.asarray([listing_features(listing) for listing in listings], dtype=np.float32)


def run_model(session: Any, batch: Any) -> Any:
    """An onnxruntime session's raw scores for a feature batch (float32, [rows, 1])."""
    (scores,) = session.run([OUTPUT_NAME], {INPUT_NAME: batch})
    return scores


def clip_score(value: float) -> float:
    low, high = SCORE_RANGE
    return min(max(value, low), high)


def checked_score(value: float) -> float:
    """A model score clipped into range; NaN or infinity means the row could not be scored."""
    if not math.isfinite(value):
        raise ValueError(f"model produced a non-finite score ({value})")
    return clip_score(value)


def load_onnx_scorer(path: Path) -> OnnxListingScorer:
    """Open `path` with onnxruntime (CPU) and check its signature; raises ModelLoadError."""
    try:
        import onnxruntime
    except ImportError as exc:  # the scoring extra is not installed
        raise ModelLoadError(f"onnxruntime is not installed: {exc}") from exc
    if not path.is_file():
        raise ModelLoadError(f"model file {path} does not exist")
    options = onnxruntime.SessionOptions()
    # Lambda and the gateway's scheduler share small machines: one thread per batch is enough
    # for a model this size and keeps scoring from taking every core.
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    try:
        session = onnxruntime.InferenceSession(
            str(path), sess_options=options, providers=["CPUExecutionProvider"]
        )
    except Exception as exc:  # onnxruntime raises its own exception types per failure
        raise ModelLoadError(f"model file {path} cannot be loaded: {exc}") from exc
    check_signature(session, path)
    return OnnxListingScorer(session, path)


def check_signature(session: Any, path: Path) -> None:
    inputs, outputs = session.get_inputs(), session.get_outputs()
    expected = (
        f"one input {INPUT_NAME!r} tensor(float) [batch, {FEATURE_COUNT}] and "
        f"one output {OUTPUT_NAME!r} tensor(float) [batch, 1]"
    )
    found = (
        "inputs "
        + ", ".join(f"{i.name!r} {i.type} {i.shape}" for i in inputs)
        + "; outputs "
        + ", ".join(f"{o.name!r} {o.type} {o.shape}" for o in outputs)
    )
    problem = None
    if len(inputs) != 1 or inputs[0].name != INPUT_NAME or inputs[0].type != "tensor(float)":
        problem = "wrong input"
    elif len(inputs[0].shape) != 2 or inputs[0].shape[1] != FEATURE_COUNT:
        problem = "wrong input shape"
    elif not any(o.name == OUTPUT_NAME and o.type == "tensor(float)" for o in outputs):
        problem = "no float output named score"
    if problem is not None:
        raise ModelSignatureError(
            f"model {path} has the wrong signature ({problem}): expected {expected}; found {found}"
        )


def score_isolating_failures(
    scorer: ListingScorer, listings: Sequence[Listing]
) -> list[float | None]:
    """Scores for `listings`, None where a listing cannot be scored.

    The whole batch runs at once; if that fails, each listing is scored alone so one bad
    listing costs only its own score (it is retried by a later run), not its batch's."""
    try:
        return list(scorer.score(listings))
    except Exception:  # a model or feature failure anywhere in the batch
        if len(listings) == 1:
            return [None]
    scores: list[float | None] = []
    for listing in listings:
        try:
            (score,) = scorer.score([listing])
        except Exception:  # this listing's own failure; counted and retried by the caller
            scores.append(None)
        else:
            scores.append(score)
    return scores
