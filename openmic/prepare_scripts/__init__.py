"""Turns the OpenMIC-2018 archive (ogg audio, openmic-2018.npz, split CSVs) into the two HDF5 files.

Entry point: ``python -m openmic.prepare_scripts.download_preprocess --help``.
"""
