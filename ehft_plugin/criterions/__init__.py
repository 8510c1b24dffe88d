from . import sentence_prediction_ehft  # noqa: F401  (registers the criterion)
