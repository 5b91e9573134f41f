"""FSD50K: the dataset ingredient (:mod:`fsd50k.dataset`) and the prepare script (:mod:`fsd50k.prepare_scripts`)."""
