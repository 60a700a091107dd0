"""Packs: the on-disk format (manifests, verification, load/save) and the local store that installs them."""
