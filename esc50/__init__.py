"""ESC-50: the dataset ingredient (:mod:`esc50.dataset`) and the prepare script (:mod:`esc50.prepare_scripts`)."""
