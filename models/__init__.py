"""The networks and what builds them (imports nothing of ``helpers``).

* :mod:`models.registry` - every model name (architectures, aliases, short names, ensembles), the
  settings and label sets of the released models, and the one resolver of names;
* :mod:`models.passt` - the PaSST network; :mod:`models.ensemble` - the mean of several;
* :mod:`models.build` - ``get_model`` and ``get_ensemble_model`` (registry name to network), and the
  network and mel front end of a ``models`` config;
* :mod:`models.preprocess` - the mel front end;
* :mod:`models.passt_weights` - PaSST's checkpoint adaptation; :mod:`models.checkpoints`,
  :mod:`models.checkpoint_types`, :mod:`models.safetensors_file` - reading checkpoint files safely;
  :mod:`models.hub_cache` - release files in torch.hub's cache;
* :mod:`models.labels` - reading and fetching the class names of the label sets;
* :mod:`models.attention_paths` - which attention path was measured faster; :mod:`models.precision`
  - the one precision decision.
"""
