"""Languages: the registry (packs/languages.toml), the fence parser, token labels, the detector, plugins."""
