"""Packs: the on-disk format (manifests, verification, load/save) and the local store that installs them.

- :mod:`~mole_lsp.packs.format`: the pack format; writes, reads, verifies and loads packs onto a base model;
- :mod:`~mole_lsp.packs.store`: :class:`~mole_lsp.packs.store.PackStore`, which hands out verified packs;
- :mod:`~mole_lsp.packs.cache`, :mod:`~mole_lsp.packs.hub`, :mod:`~mole_lsp.packs.folder_install`,
  :mod:`~mole_lsp.packs.errors`: its local cache, Hub downloads, folder installs and errors.
"""
