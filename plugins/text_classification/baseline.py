"""The baseline a user would try first on a text task: TF-IDF of words and word pairs, logistic regression."""

from __future__ import annotations

import time
import warnings
from typing import Any, Sequence

import numpy as np

METHOD = "TF-IDF (1-2 grams) + logistic regression"


def tfidf_baseline(train_texts: Sequence[str], train_labels: Sequence[str], val_texts: Sequence[str],
                   val_labels: Sequence[str], seed: int = 0) -> dict[str, Any]:
    """Fits scikit-learn's TF-IDF (1-2 grams, sublinear term frequency) and a logistic regression whose C is
    chosen by 3-fold cross-validation on the training texts; returns its validation accuracy and macro F1.

    Example:

    ```python
    tfidf_baseline(["good film", "bad film", ...], ["pos", "neg", ...], ["fine film"], ["pos"])
    # {"method": "TF-IDF (1-2 grams) + logistic regression", "metrics": {"accuracy": 1.0, ...}, ...}
    ```
    """
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression, LogisticRegressionCV
    from sklearn.metrics import accuracy_score, f1_score

    started = time.perf_counter()
    vectorizer = TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True, min_df=2 if len(train_texts) >= 1000 else 1,
                                 max_features=200_000)
    features = vectorizer.fit_transform(train_texts)
    smallest = int(np.min(np.unique(train_labels, return_counts=True)[1]))
    if smallest >= 3:  # cross-validation needs three examples of every class
        model = LogisticRegressionCV(Cs=[0.3, 1.0, 3.0, 10.0, 30.0, 100.0], cv=3, max_iter=2000, random_state=seed,
                                     scoring="accuracy")
    else:
        model = LogisticRegression(C=10.0, max_iter=2000, random_state=seed)
    with warnings.catch_warnings():  # scikit-learn's notices of future defaults; the choices here are explicit
        warnings.simplefilter("ignore", FutureWarning)
        model.fit(features, train_labels)
    predicted = model.predict(vectorizer.transform(val_texts))
    chosen_c = float(np.ravel(model.C_)[0]) if hasattr(model, "C_") else 10.0
    return {
        "method": METHOD,
        "metrics": {"accuracy": float(accuracy_score(val_labels, predicted)),
                    "macro_f1": float(f1_score(val_labels, predicted, average="macro", zero_division=0))},
        "settings": {"C": chosen_c, "vocabulary": len(vectorizer.vocabulary_)},
        "num_train": len(train_texts),
        "num_val": len(val_texts),
        "seconds": round(time.perf_counter() - started, 2),
    }
