"""MLflow's models-from-code entry of the registered classifier: loading a model runs this file.

Logged as the model's code (no pickle): the class itself is imported from the installed project,
so a model loads wherever attnlab is installed.
"""

from mlflow.models import set_model

from training.pyfunc_model import RawInputClassifier

set_model(RawInputClassifier())
