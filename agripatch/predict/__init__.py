"""agripatch.predict: diagnose photos with a trained model and write a reviewable, resumable record of it.

Import from the submodules (``agripatch.predict.folder``, ``.predictor``, ``.records``): this package
imports nothing itself, so torch-free parts (records, outputs, overlays) stay torch-free.
"""
