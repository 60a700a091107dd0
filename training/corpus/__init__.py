"""Corpus builder: mine doc-comment <-> function pairs and FIM samples from local source trees."""
