"""Your own data: a folder of audio files and a CSV of labels (:mod:`folder.dataset`), used by ``ex_folder.py``."""
