"""AnchorNet patch pipeline: pick cells, cut full-resolution patches, classify with early exits.

* :mod:`~agripatch.pipeline.config`: the one cascade config (recipe section, pipeline argument, model file entry);
* :mod:`~agripatch.pipeline.select`: cell scores, greedy IoU selection, box mapping, cropping;
* :mod:`~agripatch.pipeline.cascade`: the glance + patches cascade (live inference; the selection path);
* :mod:`~agripatch.pipeline.exits`: offline exit replay, sweeps and the one threshold chooser;
* :mod:`~agripatch.pipeline.macs`: the project's only multiply-accumulate counter;
* :mod:`~agripatch.pipeline.bundle`: the self-describing model file.

Import from the submodules: this package imports nothing itself, so reading a recipe (which uses the
config) does not load torch.
"""
