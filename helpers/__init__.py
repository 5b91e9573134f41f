"""The shared machinery of every experiment, in layers; imports point down only.

* :mod:`helpers.experiment` - how a run is put together: sacred config and commands, the config
  check, DDP launching, loggers (imports the two below);
* :mod:`helpers.training` - what happens in a step: the Lightning module, tasks and metrics, mixup,
  schedules, SWA, the optimizer (imports :mod:`helpers.data` and :mod:`models`);
* :mod:`helpers.inference` - running a trained network on audio files: tagging with sliding
  windows, embeddings, the HEAR 2021 API, exports, and the commands ``passt-tag``,
  ``passt-export``, ``passt-app`` (imports :mod:`helpers.data` and :mod:`models`);
* :mod:`helpers.data` - how a clip is decoded, stored, augmented and sampled (imports nothing of ours).
"""
