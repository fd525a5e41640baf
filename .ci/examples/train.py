"""A model repository's training script, as .ci/examples/github-actions.yml runs it.

    python train.py MODEL_FILE REFERENCE_CSV [--seed N]

Trains a small classifier, pickles it (joblib) to MODEL_FILE and writes a reference sample
(features plus the `label` column) to REFERENCE_CSV: `mlops register` takes the signature from
it, the monitor compares traffic with it, the redeploy gate holds part of it out. Replace it with
your own training; the workflow needs only those two outputs (an MLflow model directory or a
`runs:/` URI works as the model too).
"""

from __future__ import annotations

import argparse

import joblib
from sklearn.datasets import load_iris
from sklearn.linear_model import LogisticRegression


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model_file")
    parser.add_argument("reference_csv")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    data = load_iris(as_frame=True)
    features = data.data.set_axis(
        ["sepal_length", "sepal_width", "petal_length", "petal_width"], axis=1
    )
    model = LogisticRegression(max_iter=500, random_state=args.seed).fit(features, data.target)
    joblib.dump(model, args.model_file)
    features.assign(label=data.target).sample(frac=1.0, random_state=args.seed).to_csv(
        args.reference_csv, index=False
    )


if __name__ == "__main__":
    main()
