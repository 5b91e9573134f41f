"""How a clip is decoded, stored (HDF5), augmented and sampled, and how loaders are made."""
