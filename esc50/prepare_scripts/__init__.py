"""Turns ESC-50's GitHub release (44.1 kHz) into the layout the dataset reads (32 kHz wav).

Entry point: ``python -m esc50.prepare_scripts.download_preprocess --help``.
"""
