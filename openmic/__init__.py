"""OpenMIC-2018: the dataset ingredient (:mod:`openmic.dataset`) and the prepare script (:mod:`openmic.prepare_scripts`)."""
