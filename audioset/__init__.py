"""AudioSet: datasets (:mod:`audioset.dataset`) and the HDF5 preparation scripts (:mod:`audioset.prepare_scripts`)."""
