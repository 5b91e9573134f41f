"""Running trained networks on audio: tagging files and computing embeddings.

Imports only :mod:`models` and :mod:`helpers.data`, so the network and front end are exactly
those of training (no second copy to drift).

* :mod:`helpers.inference.model` - :class:`~helpers.inference.model.InferenceModel` (the eval-mode
  mel front end and network, its window geometry, device and precision) and the loaders: any model
  name of :mod:`models.registry` (a released architecture, an ensemble, ...), a checkpoint of this
  framework (its stored ``models`` config rebuilds the network and its class names travel with it);
* :mod:`helpers.inference.tagging` - long audio cut into overlapping windows, batched, scored per
  window and per file (mean and max over windows); files decoded in background workers, bad files
  reported and skipped;
* :mod:`helpers.inference.embeddings` - sliding-window embeddings as the HEAR 2021 wrapper
  computes them;
* :mod:`helpers.inference.outputs` - the terminal summary, CSV, JSON, plots and embedding files
  of the tagging command;
* :mod:`helpers.inference.hear` - the HEAR 2021 API (``load_model``, ``get_scene_embeddings``,
  ``get_timestamp_embeddings``) on top of them;
* :mod:`helpers.inference.export` - ONNX and torch.export files of a model;
* the commands (console scripts of ``pip install -e .``; ``inference.py``, ``export.py`` and
  ``app.py`` at the top of the repository run the same): :mod:`~helpers.inference.tag_command`
  (``passt-tag``), :mod:`~helpers.inference.export_command` (``passt-export``),
  :mod:`~helpers.inference.web_demo` (``passt-app``, Gradio), and what they share,
  :mod:`helpers.inference.cli` (model options, class names, errors).
"""
