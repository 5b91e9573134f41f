"""Turns the FSD50K release (Zenodo zips or their unpacked folders) into the three HDF5 files.

Entry point: ``python -m fsd50k.prepare_scripts.create_h5pymp3_dataset --help``.
"""
