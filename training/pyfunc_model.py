"""The registered model: raw images or videos in, top-k class names with probabilities out.

`mlflow.pyfunc.load_model("models:/NAME@ALIAS").predict(...)` and `mlflow models serve` call
`RawInputClassifier.predict`; `attnlab predict` and `attnlab evaluate` use its parts directly.

Input: a pandas DataFrame (or a dict of lists), one row per input, with one of the columns
    content  encoded bytes: PNG/JPEG for an image model, a video file for a video model; a uint8
             array (H, W[, C]) also works for an image model from Python. Over HTTP: base64 strings
             (the signature types the column as binary, and MLflow's server decodes it).
    path     a file on the machine that runs the model
params: `top_k` (default 5, capped at the number of classes).
Output: a DataFrame, one row per input: input, label and probability (top 1), classes and
probabilities (top k, best first).

Preprocessing is the training's test pipeline itself (datamodules.raw_inputs), and video scores
average the clips' softmax as the test step does (modules.probabilities), so a file gets the same
probabilities here as from the trained LightningModule. The network is the plain tensor model
(mlflow.pytorch, the run's `model`), kept as this model's `network` artifact. This file defines the
model with MLflow's pyfunc API; logging and loading it are MLflow calls in training.tracking.
"""

from __future__ import annotations

import json
import numbers
from pathlib import Path
from typing import Any

import mlflow.pyfunc

from training.model_card import DEFAULT_TOP_K

COLUMNS = ("content", "path")


class RawInputClassifier(mlflow.pyfunc.PythonModel):
    def load_context(self, context) -> None:
        import mlflow.pytorch

        contract = json.loads(Path(context.artifacts["contract"]).read_text())
        self.setup(contract, mlflow.pytorch.load_model(context.artifacts["network"], map_location="cpu"))

    def setup(self, contract: dict[str, Any], network) -> RawInputClassifier:
        from datamodules.raw_inputs import raw_inputs_for

        try:
            network.eval()  # a pickled network (torch.export refused it) may have been saved in train mode
        except NotImplementedError:  # torch.export'ed networks are fixed in eval mode and refuse .eval()
            pass
        self.contract, self.network = contract, network
        self.classes = list(contract["classes"])
        self.inputs = raw_inputs_for(contract["preprocessing"])
        self.input_dims = 1 + len(contract["input"]["shape"])  # with the batch: 4 images, 5 video clips
        return self

    # ---- MLflow's entry point -------------------------------------------------------------------

    def predict(self, context, model_input, params: dict[str, Any] | None = None):
        import pandas as pd
        from mlflow.exceptions import MlflowException
        from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE

        from datamodules.raw_inputs import ContractError

        try:
            top_k = self.top_k_of(params)
            items, names = input_rows(model_input)
            rows = self.classify(items, top_k, names)
        except ContractError as error:
            raise MlflowException(f"{error} [model: {self.describe()}]", INVALID_PARAMETER_VALUE) from None
        return pd.DataFrame(rows, columns=["input", "label", "probability", "classes", "probabilities"])

    # ---- parts ----------------------------------------------------------------------------------

    def describe(self) -> str:
        from training.model_card import summary

        return summary(self.contract)

    def top_k_of(self, params: dict[str, Any] | None) -> int:
        from datamodules.raw_inputs import ContractError

        value = (params or {}).get("top_k", DEFAULT_TOP_K)
        if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
            raise ContractError(f"params.top_k must be a whole number >= 1, got {value!r}")
        return min(int(value), len(self.classes))

    def classify(self, items: list, top_k: int = DEFAULT_TOP_K, names: list[str] | None = None) -> list[dict]:
        """Raw inputs -> one row per input: input, label, probability, classes, probabilities (top k)."""
        names = names or [_display(item, index) for index, item in enumerate(items)]
        return self.rows(self.probabilities(items), top_k, names)

    def rows(self, probabilities, top_k: int, names: list[str]) -> list[dict]:
        """(N, classes) probabilities -> the top-k rows, best first."""
        values, indices = probabilities.topk(min(top_k, len(self.classes)), dim=-1)
        rows = []
        for name, top_values, top_indices in zip(names, values.tolist(), indices.tolist()):
            classes = [self.classes[i] for i in top_indices]
            rows.append({"input": name, "label": classes[0], "probability": top_values[0], "classes": classes,
                         "probabilities": top_values})
        return rows

    def probabilities(self, items: list, batch_size: int = 32):
        """Raw inputs -> float (N, classes) probabilities, in input order; `batch_size` images or clips
        go through the network at once."""
        import torch

        if not items:
            return torch.empty(0, len(self.classes))
        if self.inputs.kind == "image":
            return torch.cat([self.tensor_probabilities(self.inputs.batch(items[start:start + batch_size], start))
                              for start in range(0, len(items), batch_size)])
        p = self.contract["preprocessing"]
        videos_per_batch = max(1, batch_size // (p["test_clips"] * p["test_crops"]))
        with self.inputs.files(items) as paths:
            dataset = self.inputs.dataset(paths)
            chunks = [range(start, min(start + videos_per_batch, len(paths)))
                      for start in range(0, len(paths), videos_per_batch)]
            # (B, K, C, T, S, S): K clips x crops of each video, averaged by the test step's rule
            return torch.cat([self.tensor_probabilities(torch.stack([self.inputs.views(dataset, i) for i in chunk]))
                              for chunk in chunks])

    def tensor_probabilities(self, x):
        """Preprocessed (B, C, [T,] H, W) or multi-clip (B, K, C, [T,] H, W) -> (B, classes)."""
        import torch

        from modules.probabilities import class_probabilities

        with torch.inference_mode():
            return class_probabilities(self.network, x, self.input_dims)


def input_rows(model_input) -> tuple[list, list[str]]:
    """(items, display names) of a DataFrame / dict with a `content` or `path` column, or of a list."""
    import pandas as pd

    from datamodules.raw_inputs import ContractError

    if isinstance(model_input, dict):
        model_input = pd.DataFrame(model_input)
    if not isinstance(model_input, pd.DataFrame):
        items = list(model_input) if isinstance(model_input, (list, tuple)) else [model_input]
        return items, [_display(item, i) for i, item in enumerate(items)]
    present = [column for column in COLUMNS if column in model_input.columns]
    if not present:
        raise ContractError(f"the input needs a 'content' (encoded bytes or uint8 arrays) or 'path' column; "
                            f"got columns {list(model_input.columns)}")
    items, names = [], []
    for index, row in enumerate(model_input[present].itertuples(index=False)):
        given = [(column, value) for column, value in zip(present, row) if _given(value)]
        if len(given) != 1:
            raise ContractError(f"input row {index}: give exactly one of 'content' or 'path' "
                                f"({'both' if given else 'neither'} given)")
        column, value = given[0]
        # MLflow's schema enforcement turns a dict of lists into one row holding the lists
        for item in value if isinstance(value, (list, tuple)) else [value]:
            if column == "content" and isinstance(item, str):
                raise ContractError(f"input row {index}: 'content' holds text; give the file's bytes (base64 only "
                                    "over HTTP, where MLflow decodes it) or use the 'path' column")
            items.append(item)
            names.append(str(item) if column == "path" else f"content[{len(names)}]")
    return items, names


def _display(item: Any, index: int) -> str:
    return str(item) if isinstance(item, (str, Path)) else f"input {index}"


def _given(value: Any) -> bool:
    """False for a missing cell (None, NaN, pd.NA); arrays, bytes and lists are values."""
    import pandas as pd

    if isinstance(value, (bytes, bytearray, memoryview, list, tuple)) or hasattr(value, "shape"):
        return True
    return not pd.isna(value)


def load_classifier(model_uri: str, tracking_uri: str) -> RawInputClassifier:
    """The raw-input classifier of a model URI; `ContractMissing` (saying what is missing) for a model
    logged without a contract, which still loads but only takes preprocessed tensors; `NotFound` for
    no such model."""
    from training import tracking
    from training.model_card import ContractMissing, contract_of_metadata, missing_contract_message

    model = tracking.load_pyfunc(tracking_uri, model_uri)
    if contract_of_metadata(model.metadata.metadata) is None:
        schema = model.metadata.get_input_schema()
        shape = None
        if schema is not None and schema.is_tensor_spec():
            shape = "(" + ", ".join("B" if size == -1 else str(size) for size in schema.inputs[0].shape) + ")"
        raise ContractMissing(missing_contract_message(model_uri, shape))
    return model.unwrap_python_model()


def load_network(model_uri: str, tracking_uri: str):
    """The bare network behind a model URI: a registered classifier's `network`, or a plain
    mlflow.pytorch model (`runs:/<run>/model`, versions registered before classifiers existed)."""
    from training import tracking

    if "pytorch" in tracking.model_info(tracking_uri, model_uri).flavors:
        return tracking.load_pytorch_model(tracking_uri, model_uri)
    return load_classifier(model_uri, tracking_uri).network
