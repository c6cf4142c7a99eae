"""gvseg: one unified GvSeg model for VIS, VSS, VPS and EVS, trained and swept on Ray, tracked in MLflow.

The core (config, model, losses, data formats, metrics, engine) is pure PyTorch/NumPy and never imports
ray or mlflow; only ``gvseg.runtime`` does.
"""

__version__ = "0.1.0"
