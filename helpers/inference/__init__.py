"""Running trained networks on audio: tagging files and computing embeddings.

Imports only :mod:`models` and :mod:`helpers.data`, so the network and front end are exactly
those of training (no second copy to drift).

* :mod:`helpers.inference.model` - :class:`~helpers.inference.model.InferenceModel` (the eval-mode
  mel front end and network, its window geometry, device and precision) and the loaders: a
  released architecture, an ensemble, a checkpoint of this framework (its stored ``models`` config
  rebuilds the network and its class names travel with it);
* :mod:`helpers.inference.tagging` - long audio cut into overlapping windows, batched, scored per
  window and per file (mean and max over windows); files decoded in background workers, bad files
  reported and skipped;
* :mod:`helpers.inference.embeddings` - sliding-window embeddings as the HEAR 2021 wrapper
  computes them;
* :mod:`helpers.inference.outputs` - the terminal summary, CSV, JSON, plots and embedding files
  of ``inference.py``;
* :mod:`helpers.inference.hear` - the HEAR 2021 API (``load_model``, ``get_scene_embeddings``,
  ``get_timestamp_embeddings``) on top of them.
"""
