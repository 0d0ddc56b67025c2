"""The reference answers: what AutoGluon itself says for rows, laid out as the server answers them."""
from __future__ import annotations

import pandas as pd

SEED_KEYS = {"predictions", "probabilities", "model_info", "timestamp", "request_id"}


def expected_answers(predictor, frame: pd.DataFrame):
    """What AutoGluon itself says for these rows, in the server's JSON layout."""
    if predictor.problem_type in ("binary", "multiclass"):
        proba = predictor.predict_proba(frame)
        probabilities = [{str(k): v for k, v in row.items()} for row in
                         proba.astype("float64").to_dict("records")]
        return predictor.predict(frame).tolist(), probabilities
    result = predictor.predict(frame)
    if isinstance(result, pd.DataFrame):
        return [{str(k): v for k, v in row.items()} for row in result.astype("float64").to_dict("records")], None
    return result.astype("float64").tolist(), None
