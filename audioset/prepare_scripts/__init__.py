"""Scripts that turn downloaded AudioSet audio + the official CSVs into the HDF5 files the datasets read.

Entry point: ``python -m audioset.prepare_scripts.create_h5pymp3_dataset --help``.
"""
